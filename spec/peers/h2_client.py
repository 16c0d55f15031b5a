"""An independent HTTP/2 client for spec/http2_spec.lua (Python h2).

usage: h2_client.py PORT MODE [ARGS]   (PORT "tls:N" speaks TLS, ALPN h2)
  get PATH [NAME=VALUE...]   one request; prints the status, the fields
                             (sorted) and the body's length and sha256
  many PATH N                N requests at once on one connection; prints
                             "<status> <count>" per status, and
                             "reset <code> <count>" per stream reset
  flood N                    opens N streams and resets each at once;
                             prints "goaway <error code>" or "open"
  preface                    the preface and SETTINGS; prints the frames
                             the server answers with
  connect                    a CONNECT request; prints the status
  post PATH SIZE [started]   a POST of SIZE bytes; prints the status and
                             the body's length.  With "started", the body
                             follows the answer to a GET /hello sent
                             after the POST's HEADERS: the POST's
                             handler runs before its body comes
  open PATH [NAME=VALUE...]  a POST's HEADERS, the body never sent:
                             prints what "get" prints
  unread PATH N COUNT        N GETs of PATH at once on one connection,
                             whose windows it keeps shut (no
                             WINDOW_UPDATE) until some DATA came; then
                             prints the body of a GET of COUNT on
                             another connection, then opens the windows
                             and prints "<status> <count>" per status
  stall PATH SIZE            a POST's HEADERS and SIZE bytes of its body,
                             the rest never sent: prints the status
  early PATH SIZE            a POST's HEADERS and SIZE bytes of its
                             body, the rest never sent: prints the
                             status, the body's length, the events of
                             the stream after the answer's HEADERS
                             ("data", "end", "reset <code>"); then,
                             after 7 MiB of DATA on the reset stream,
                             the status of a GET /hello and of a POST of
                             3000 bytes to /echo on the same connection
  held SIZE                  a POST of SIZE bytes to /slow, which reads 1
                             KiB and waits for /go: prints "held N", the
                             bytes sent when the windows shut (and stayed
                             shut for a second), then the status of a GET
                             /hello on the same connection meanwhile, then
                             GETs /go and sends the rest: prints the
                             status and body of the POST
"""
import hashlib
import socket
import ssl
import sys

import h2.config
import h2.connection
import h2.events


def connect(where):
    tls = where.startswith("tls:")
    port = int(where[4:] if tls else where)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        sock = ctx.wrap_socket(sock)
        assert sock.selected_alpn_protocol() == "h2", \
            sock.selected_alpn_protocol()
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                  validate_outbound_headers=False))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def request_headers(method, path, extra=()):
    return [(":method", method), (":path", path), (":scheme", "https"),
            (":authority", "example.test")] + list(extra)


def pump(sock, conn, until):
    """Read and answer until until(event) is true for some event, or the
    connection ends; returns the events seen."""
    seen = []
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            data = b""
        if not data:
            return seen
        for ev in conn.receive_data(data):
            seen.append(ev)
            if isinstance(ev, h2.events.DataReceived):
                conn.acknowledge_received_data(ev.flow_controlled_length,
                                               ev.stream_id)
            if until(ev):
                sock.sendall(conn.data_to_send())
                return seen
        sock.sendall(conn.data_to_send())


def answer(seen, sid):
    status, fields, body = None, {}, b""
    for ev in seen:
        if getattr(ev, "stream_id", None) != sid:
            continue
        if isinstance(ev, h2.events.ResponseReceived):
            for k, v in ev.headers:
                if k == ":status":
                    status = v
                else:
                    fields[k] = v
        elif isinstance(ev, h2.events.DataReceived):
            body += ev.data
        elif isinstance(ev, h2.events.StreamReset):
            status = "reset %d" % ev.error_code
    return status, fields, body


def get(where, path, *extra, method="GET"):
    sock, conn = connect(where)
    pairs = [tuple(x.split("=", 1)) for x in extra]
    conn.send_headers(1, request_headers(method, path, pairs),
                      end_stream=method == "GET")
    sock.sendall(conn.data_to_send())
    seen = pump(sock, conn, lambda ev: getattr(ev, "stream_id", 0) == 1 and
                isinstance(ev, (h2.events.StreamEnded,
                                h2.events.StreamReset)))
    status, fields, body = answer(seen, 1)
    print(status)
    for k in sorted(fields):
        print("%s: %s" % (k, fields[k]))
    print("body %d %s" % (len(body), hashlib.sha256(body).hexdigest()))
    print(body.decode("utf-8", "replace") if len(body) < 512 else "")


def open_gets(sock, conn, path, n):
    """n GETs of path on new streams, sent; their ids.  Before the
    server's SETTINGS are read, h2 knows no stream limit."""
    ids = []
    for i in range(int(n)):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, request_headers("GET", path), end_stream=True)
        ids.append(sid)
    sock.sendall(conn.data_to_send())
    return ids


def count_answers(sock, conn, ids, seen):
    """Read until every stream of ids has ended (seen: the events read
    so far), then print each status with how many streams had it."""
    ended = (h2.events.StreamEnded, h2.events.StreamReset)
    done = set(ev.stream_id for ev in seen if isinstance(ev, ended))

    def until(ev):
        if isinstance(ev, ended):
            done.add(ev.stream_id)
        return len(done) == len(ids)
    if len(done) < len(ids):
        seen += pump(sock, conn, until)
    counts = {}
    for sid in ids:
        status = answer(seen, sid)[0]
        counts[status] = counts.get(status, 0) + 1
    for status in sorted(counts, key=str):
        print(status, counts[status])


def many(where, path, n):
    sock, conn = connect(where)
    count_answers(sock, conn, open_gets(sock, conn, path, n), [])


def open_post(where, path, *extra):
    get(where, path, *extra, method="POST")


def unread(where, path, n, count):
    sock, conn = connect(where)
    ids = open_gets(sock, conn, path, n)
    # the first DATA: the server has read every request; no window is
    # given back yet, so what it answered stays unsent
    seen = []
    while not any(isinstance(ev, h2.events.DataReceived) for ev in seen):
        data = sock.recv(65536)
        if not data:
            print("closed")
            return
        seen += conn.receive_data(data)
    sock.sendall(conn.data_to_send())
    get(where, count)
    for ev in seen:
        if isinstance(ev, h2.events.DataReceived):
            conn.acknowledge_received_data(ev.flow_controlled_length,
                                           ev.stream_id)
    sock.sendall(conn.data_to_send())
    count_answers(sock, conn, ids, seen)


def flood(where, n):
    sock, conn = connect(where)
    for i in range(int(n)):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, request_headers("GET", "/later"))
        conn.reset_stream(sid)
        if i % 50 == 49:
            try:
                sock.sendall(conn.data_to_send())
            except (BrokenPipeError, ConnectionResetError):
                break
    try:
        sock.sendall(conn.data_to_send())
    except (BrokenPipeError, ConnectionResetError):
        pass
    seen = pump(sock, conn, lambda ev: isinstance(
        ev, h2.events.ConnectionTerminated))
    for ev in seen:
        if isinstance(ev, h2.events.ConnectionTerminated):
            print("goaway %d" % ev.error_code)
            return
    print("open")


def preface(where):
    sock, _ = connect(where)
    out = b""
    while True:
        data = sock.recv(65536)
        if not data:
            break
        out += data
    # frames: length (3), type, flags, stream (4), payload
    i = 0
    while i + 9 <= len(out):
        length = int.from_bytes(out[i:i + 3], "big")
        kind = out[i + 3]
        payload = out[i + 9:i + 9 + length]
        if kind == 4:
            print("settings %d" % length)
        elif kind == 7:
            print("goaway %d" % int.from_bytes(payload[4:8], "big"))
        else:
            print("frame %d" % kind)
        i += 9 + length
    if i != len(out):
        print("trailing %r" % out[i:])


def connect_method(where):
    sock, conn = connect(where)
    conn.send_headers(1, [(":method", "CONNECT"),
                          (":authority", "example.test:443")])
    sock.sendall(conn.data_to_send())
    seen = pump(sock, conn, lambda ev: getattr(ev, "stream_id", 0) == 1 and
                isinstance(ev, (h2.events.ResponseReceived,
                                h2.events.StreamReset)))
    print(answer(seen, 1)[0])


def post(where, path, size, started=None):
    sock, conn = connect(where)
    body = b"x" * int(size)
    conn.send_headers(1, request_headers("POST", path))
    if started:
        # the server runs the requests of a read in order
        conn.send_headers(3, request_headers("GET", "/hello"),
                          end_stream=True)
        sock.sendall(conn.data_to_send())
        pump(sock, conn, ended(3))
    sent = 0
    while sent < len(body):
        window = min(conn.local_flow_control_window(1), 16384)
        if window == 0:
            pump(sock, conn, lambda ev: isinstance(
                ev, (h2.events.WindowUpdated, h2.events.StreamEnded)))
            continue
        chunk = body[sent:sent + window]
        conn.send_data(1, chunk)
        sent += len(chunk)
        sock.sendall(conn.data_to_send())
    conn.end_stream(1)
    sock.sendall(conn.data_to_send())
    seen = pump(sock, conn, lambda ev: getattr(ev, "stream_id", 0) == 1 and
                isinstance(ev, (h2.events.StreamEnded,
                                h2.events.StreamReset)))
    status, _, data = answer(seen, 1)
    print(status, len(data))


def wait_settings(sock, conn):
    """Until the server's SETTINGS and its connection window are in."""
    seen = {"settings": False, "window": False}

    def until(ev):
        if isinstance(ev, h2.events.RemoteSettingsChanged):
            seen["settings"] = True
        if isinstance(ev, h2.events.WindowUpdated) and ev.stream_id == 0:
            seen["window"] = True
        return seen["settings"] and seen["window"]
    pump(sock, conn, until)


def ended(sid):
    return lambda ev: getattr(ev, "stream_id", 0) == sid and \
        isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset))


def stall(where, path, size):
    sock, conn = connect(where)
    conn.send_headers(1, request_headers("POST", path))
    conn.send_data(1, b"s" * int(size))
    sock.sendall(conn.data_to_send())
    seen = pump(sock, conn, ended(1))
    print(answer(seen, 1)[0])


def early(where, path, size):
    sock, conn = connect(where)
    wait_settings(sock, conn)
    conn.send_headers(1, request_headers("POST", path))
    conn.send_data(1, b"e" * int(size))
    sock.sendall(conn.data_to_send())
    seen = pump(sock, conn, lambda ev: getattr(ev, "stream_id", 0) == 1 and
                isinstance(ev, h2.events.StreamReset))
    status, body, trail = None, b"", []
    for ev in seen:
        if getattr(ev, "stream_id", None) != 1:
            continue
        if isinstance(ev, h2.events.ResponseReceived):
            status = dict(ev.headers)[":status"]
        elif isinstance(ev, h2.events.DataReceived):
            body += ev.data
            if not trail or trail[-1] != "data":
                trail.append("data")
        elif isinstance(ev, h2.events.StreamEnded):
            trail.append("end")
        elif isinstance(ev, h2.events.StreamReset):
            trail.append("reset %d" % ev.error_code)
    print(status, len(body), " ".join(trail))
    # DATA a client had in flight when the reset came, written raw (h2
    # sends none on a closed stream): 7 MiB, past the connection's
    # window, which the server must not count against it
    frame = (16384).to_bytes(3, "big") + b"\x00\x00" + \
        (1).to_bytes(4, "big") + b"l" * 16384
    for _ in range(448):
        sock.sendall(frame)
    conn.send_headers(3, request_headers("GET", "/hello"), end_stream=True)
    sock.sendall(conn.data_to_send())
    print("get", answer(pump(sock, conn, ended(3)), 3)[0])
    conn.send_headers(5, request_headers("POST", "/echo"))
    conn.send_data(5, b"z" * 3000, end_stream=True)
    sock.sendall(conn.data_to_send())
    status, _, body = answer(pump(sock, conn, ended(5)), 5)
    print("post", status, len(body))


def held(where, size):
    sock, conn = connect(where)
    wait_settings(sock, conn)
    body = b"y" * int(size)
    conn.send_headers(1, request_headers("POST", "/slow"))
    sent = 0
    seen = []
    # send until the windows shut and stay shut for a second
    while sent < len(body):
        window = min(conn.local_flow_control_window(1), 16384)
        if window == 0:
            sock.settimeout(1)
            more = pump(sock, conn, lambda ev: isinstance(
                ev, (h2.events.WindowUpdated, h2.events.StreamEnded,
                     h2.events.StreamReset)))
            seen += more
            sock.settimeout(10)
            if not more or conn.local_flow_control_window(1) == 0:
                break
            continue
        chunk = body[sent:sent + window]
        conn.send_data(1, chunk)
        sent += len(chunk)
        sock.sendall(conn.data_to_send())
    print("held", sent)
    conn.send_headers(3, request_headers("GET", "/hello"), end_stream=True)
    sock.sendall(conn.data_to_send())
    seen += pump(sock, conn, ended(3))
    print("other", answer(seen, 3)[0])
    conn.send_headers(5, request_headers("GET", "/go"), end_stream=True)
    sock.sendall(conn.data_to_send())
    while sent < len(body):
        window = min(conn.local_flow_control_window(1), 16384,
                     len(body) - sent)
        if window == 0:
            seen += pump(sock, conn, lambda ev: isinstance(
                ev, (h2.events.WindowUpdated, h2.events.StreamEnded)))
            continue
        conn.send_data(1, body[sent:sent + window])
        sent += window
        sock.sendall(conn.data_to_send())
    conn.end_stream(1)
    sock.sendall(conn.data_to_send())
    seen += pump(sock, conn, ended(1))
    status, _, data = answer(seen, 1)
    print(status, data.decode())


if __name__ == "__main__":
    where, mode, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    {"get": get, "many": many, "flood": flood, "preface": preface,
     "connect": connect_method, "post": post, "held": held,
     "stall": stall, "early": early, "unread": unread, "open": open_post}[mode](where, *args)
