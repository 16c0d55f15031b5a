"""WebSockets over HTTP/2 (RFC 8441) for spec/http2_ws_spec.lua, with
Python h2 as an independent client and RFC 6455 frames written here.

usage: h2_ws_client.py PORT MODE [ARGS]   (PORT "tls:N": TLS, ALPN h2)
  settings             prints the server's SETTINGS_ENABLE_CONNECT_PROTOCOL
  echo PATH SIZE       a text echo, ws.http_version, a binary echo of SIZE
                       bytes, the closing handshake and its END_STREAM
  many PATH N          N WebSockets at once on one connection, two echoes
                       each, then closed
  status PATH [NAME=VALUE...]   the answer to an extended CONNECT: the
                       status and the sec-websocket-* fields
  connect [PROTOCOL]   CONNECT (with :protocol PROTOCOL): the status
  deflate              permessage-deflate negotiated, a compressed echo
  malformed CASE       a bad frame on one WebSocket: its close code and how
                       its stream ends; another one on the connection echoes
  rst                  RST_STREAM in the middle of a message; another
                       WebSocket on the connection echoes
  slow                 one WebSocket stops reading while the server floods
                       it; another one echoes; the slow one's end
  shutdown             the server shuts down: both WebSockets get 1001,
                       GOAWAY after them
  stall SECONDS        one WebSocket's window stays shut (no WINDOW_UPDATE
                       for its stream): reset after about SECONDS; another
                       one echoes meanwhile and after
  room                 three WebSockets on /room, two on one connection and
                       one on another: a publish reaches all three
  ping                 /ping pings every 0.2 s: one WebSocket answers with
                       pongs and stays, one does not and is closed
  drain                /drain fills its queue past the window: the app's
                       send says "queued", then "drain" once the window
                       opens
"""
import time
import os
import socket
import ssl
import struct
import sys
import zlib

import h2.config
import h2.connection
import h2.events
import h2.settings

CANCEL = 8


def frame(opcode, payload, fin=True, rsv1=False, mask=True, rsv2=False):
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | \
         (0x20 if rsv2 else 0) | opcode
    m = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        hdr = bytes([b0, m | n])
    elif n < 65536:
        hdr = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        hdr = bytes([b0, m | 127]) + struct.pack(">Q", n)
    if not mask:
        return hdr + payload
    key = os.urandom(4)
    pad = (key * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^
            int.from_bytes(pad, "big")).to_bytes(n, "big") if n else b""
    return hdr + key + body


class Client:
    def __init__(self, where):
        tls = where.startswith("tls:")
        port = int(where[4:] if tls else where)
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2", "http/1.1"])
            sock = ctx.wrap_socket(sock)
            assert sock.selected_alpn_protocol() == "h2"
        self.sock = sock
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8",
            validate_outbound_headers=False))
        self.conn.initiate_connection()
        self.flush()
        self.buf, self.total, self.used = {}, {}, {}
        self.response, self.ended, self.reset = {}, set(), {}
        self.slow = set()
        self.goaway = None
        self.goaway_at = None
        self.settings = {}
        self.eof = False
        while h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL \
                not in self.settings:
            if not self.pump():
                break

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def pump(self):
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            data = b""
        if not data:
            self.eof = True
            return False
        for ev in self.conn.receive_data(data):
            sid = getattr(ev, "stream_id", None)
            if isinstance(ev, h2.events.RemoteSettingsChanged):
                for code, change in ev.changed_settings.items():
                    self.settings[code] = change.new_value
            elif isinstance(ev, h2.events.ResponseReceived):
                self.response[sid] = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                self.buf[sid] = self.buf.get(sid, b"") + ev.data
                self.total[sid] = self.total.get(sid, 0) + len(ev.data)
                n = ev.flow_controlled_length
                if sid in self.slow:          # the connection's window only
                    self.conn.increment_flow_control_window(n)
                elif n:
                    try:
                        self.conn.acknowledge_received_data(n, sid)
                    except Exception:
                        pass
            elif isinstance(ev, h2.events.StreamEnded):
                self.ended.add(sid)
            elif isinstance(ev, h2.events.StreamReset):
                self.reset[sid] = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev.error_code
                self.goaway_at = dict(self.total)
        self.flush()
        return True

    def open(self, path, extra=(), protocol="websocket"):
        sid = self.conn.get_next_available_stream_id()
        headers = [(":method", "CONNECT"), (":protocol", protocol),
                   (":scheme", "https"), (":path", path),
                   (":authority", "example.test")]
        if not protocol:                  # to a host (RFC 9113 8.5)
            headers = [(":method", "CONNECT"),
                       (":authority", "example.test:443")]
        headers += [("sec-websocket-version", "13")] + list(extra)
        self.conn.send_headers(sid, headers)
        self.flush()
        return sid

    def status(self, sid):
        while sid not in self.response and sid not in self.reset:
            if not self.pump():
                break
        return self.response.get(sid, {}).get(":status")

    def send(self, sid, data, end=False):
        while data:
            window = min(self.conn.local_flow_control_window(sid),
                         self.conn.max_outbound_frame_size)
            if window <= 0:
                self.pump()
                continue
            self.conn.send_data(sid, data[:window])
            data = data[window:]
            self.flush()
        if end:
            self.conn.end_stream(sid)
            self.flush()

    def send_frame(self, sid, opcode, payload, **kw):
        self.send(sid, frame(opcode, payload, **kw))

    def over(self, sid):
        return sid in self.ended or sid in self.reset or self.eof

    def recv_frame(self, sid):
        """(fin, rsv1, opcode, payload, end offset), or None at the end."""
        while True:
            b = self.buf.get(sid, b"")
            n, i = (b[1] & 0x7F, 2) if len(b) >= 2 else (0, 99)
            if n == 126:
                n, i = (struct.unpack(">H", b[2:4])[0], 4) \
                    if len(b) >= 4 else (0, 99)
            elif n == 127:
                n, i = (struct.unpack(">Q", b[2:10])[0], 10) \
                    if len(b) >= 10 else (0, 99)
            if len(b) >= i + n:
                    self.buf[sid] = b[i + n:]
                    self.used[sid] = self.used.get(sid, 0) + i + n
                    return (b[0] >> 7, (b[0] >> 6) & 1, b[0] & 0x0F,
                            b[i:i + n], self.used[sid])
            if self.over(sid) or not self.pump():
                return None

    def message(self, sid):
        """The next data message (or close frame) as (opcode, payload)."""
        parts, first = [], None
        while True:
            f = self.recv_frame(sid)
            if f is None:
                return None, b""
            fin, _, op, payload, _ = f
            if op >= 8:
                if op == 8:
                    return op, payload
                continue
            if first is None:
                first = op
            parts.append(payload)
            if fin:
                return first, b"".join(parts)

    def close(self, sid, code=1000, reason=b""):
        """Our close frame; the server's answer; END_STREAM both ways."""
        self.send_frame(sid, 8, struct.pack(">H", code) + reason)
        op, payload = self.message(sid)
        while op is not None and op != 8:
            op, payload = self.message(sid)
        self.send(sid, b"", end=True)
        while not self.over(sid):
            self.pump()
        return close_text(op, payload), ending(self, sid)


def close_text(op, payload):
    if op != 8:
        return "no close frame"
    if len(payload) < 2:
        return "close"
    code = struct.unpack(">H", payload[:2])[0]
    return ("close %d %s" % (code, payload[2:].decode())).rstrip()


def ending(c, sid):
    if sid in c.reset:
        return "reset %d" % c.reset[sid]
    if sid in c.ended:
        return "ended"
    return "connection closed"


def echo_once(c, sid, text):
    c.send_frame(sid, 1, text.encode())
    op, payload = c.message(sid)
    return op == 1 and payload == text.encode()


def settings(where):
    c = Client(where)
    print("enable_connect_protocol %s" % c.settings.get(
        h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL))


def echo(where, path, size):
    c = Client(where)
    sid = c.open(path)
    print("status", c.status(sid))
    c.send_frame(sid, 1, b"hello")
    print("echo %r" % (c.message(sid),))
    c.send_frame(sid, 1, b"version")
    print("version %s" % c.message(sid)[1].decode())
    data = os.urandom(int(size))
    c.send_frame(sid, 2, data[:1000], fin=False)
    c.send_frame(sid, 0, data[1000:])
    op, payload = c.message(sid)
    print("binary %d %s" % (len(payload), op == 2 and payload == data))
    print(*c.close(sid, 1000, b"done"))


def many(where, path, n):
    c = Client(where)
    sids = [c.open(path) for _ in range(int(n))]
    ok = sum(1 for sid in sids if c.status(sid) == "200")
    for round in range(2):
        for sid in sids:
            c.send_frame(sid, 1, ("%d %d" % (sid, round)).encode())
    good = 0
    for sid in sids:
        good += all(c.message(sid) == (1, ("%d %d" % (sid, r)).encode())
                    for r in range(2))
    closes = [c.close(sid) for sid in sids]
    print("opened %d echoed %d" % (ok, good))
    print("closed %d" % sum(1 for x in closes if x == ("close 1000",
                                                       "ended")))


def status(where, path, *extra):
    c = Client(where)
    sid = c.open(path, [tuple(x.split("=", 1)) for x in extra])
    print(c.status(sid) or ending(c, sid))
    for k in sorted(c.response.get(sid, {})):
        if k.startswith("sec-websocket"):
            print("%s: %s" % (k, c.response[sid][k]))


def connect(where, protocol=None):
    c = Client(where)
    sid = c.open("/echo", protocol=protocol)
    print(c.status(sid) or ending(c, sid))


def deflate(where):
    c = Client(where)
    sid = c.open("/deflate", [("sec-websocket-extensions",
                               "permessage-deflate; client_max_window_bits")])
    print("status", c.status(sid))
    print("extensions", c.response[sid].get("sec-websocket-extensions"))
    text = b"compressible " * 200
    z = zlib.compressobj(wbits=-15)
    data = z.compress(text) + z.flush(zlib.Z_SYNC_FLUSH)
    c.send_frame(sid, 1, data[:-4], rsv1=True)
    f = c.recv_frame(sid)
    inflated = zlib.decompressobj(-15).decompress(f[3] + b"\x00\x00\xff\xff")
    print("rsv1 %d echo %s" % (f[1], inflated == text))
    print(*c.close(sid))


BAD = {
    "unmasked": lambda: frame(1, b"hi", mask=False),
    "rsv": lambda: frame(1, b"hi", rsv2=True),
    "opcode": lambda: frame(3, b"hi"),
    "utf8": lambda: frame(1, b"\xff\xfe"),
    "closecode": lambda: frame(8, struct.pack(">H", 999)),
    "control": lambda: frame(9, b"x" * 126),
}


def malformed(where, case):
    c = Client(where)
    bad, other = c.open("/echo"), c.open("/echo")
    assert c.status(bad) == "200" and c.status(other) == "200"
    c.send(bad, BAD[case]())
    op, payload = c.message(bad)
    print(close_text(op, payload))
    while not c.over(bad):
        c.pump()
    print(ending(c, bad))
    print("other", echo_once(c, other, "still here"))
    print("other", *c.close(other))


def rst(where):
    c = Client(where)
    victim, other = c.open("/echo"), c.open("/echo")
    assert c.status(victim) == "200" and c.status(other) == "200"
    c.send(victim, frame(2, b"x" * 1000)[:300])     # a frame begun
    c.conn.reset_stream(victim, CANCEL)
    c.flush()
    print("other", echo_once(c, other, "after the reset"))
    print("other", *c.close(other))


def slow(where):
    c = Client(where)
    victim, other = c.open("/slow"), c.open("/echo")
    assert c.status(victim) == "200" and c.status(other) == "200"
    c.slow.add(victim)
    c.send_frame(victim, 1, b"flood 200 16384")
    for i in range(20):
        if not echo_once(c, other, "echo %d" % i):
            print("other failed at", i)
            return
    print("other echoed 20")
    while not c.over(victim):
        c.pump()
    print("slow", ending(c, victim), "after %d bytes" % c.total[victim])
    print("other", echo_once(c, other, "still here"))
    print("other", *c.close(other))


def raw_frames(sock):
    """After GOAWAY h2 sends nothing more: what the server sends until it
    closes, as (type, flags, stream) of each frame."""
    out = b""
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            data = b""
        if not data:
            break
        out += data
    i, frames = 0, []
    while i + 9 <= len(out):
        length = int.from_bytes(out[i:i + 3], "big")
        frames.append((out[i + 3], out[i + 4],
                       int.from_bytes(out[i + 5:i + 9], "big") & 0x7FFFFFFF))
        i += 9 + length
    return frames


def shutdown(where):
    c = Client(where)
    a, b = c.open("/echo"), c.open("/co")
    assert c.status(a) == "200" and c.status(b) == "200"
    c.send_frame(a, 1, b"shutdown")
    print("a %r" % (c.message(a),))
    for name, sid in (("a", a), ("b", b)):
        op, payload = c.message(sid)
        before = c.goaway_at is None or \
            c.used[sid] <= c.goaway_at.get(sid, 0)
        print(name, close_text(op, payload),
              "before goaway" if before else "after goaway")
    while c.goaway is None and c.pump():
        pass
    print("goaway", c.goaway)
    # h2 sends nothing after GOAWAY: our close frames and END_STREAM as
    # raw DATA frames (flags 1: END_STREAM)
    for sid in (a, b):
        payload = frame(8, struct.pack(">H", 1001))
        c.sock.sendall(len(payload).to_bytes(3, "big") + bytes([0, 1]) +
                       sid.to_bytes(4, "big") + payload)
    ends = {sid: "open" for sid in (a, b)}
    for kind, flags, sid in raw_frames(c.sock):
        if sid in ends and kind == 0 and flags & 1:
            ends[sid] = "ended"
        elif sid in ends and kind == 3:
            ends[sid] = "reset"
    print("a", ends[a], "b", ends[b])


def stall(where, seconds):
    c = Client(where)
    victim, other = c.open("/echo"), c.open("/echo")
    assert c.status(victim) == "200" and c.status(other) == "200"
    c.slow.add(victim)
    c.send_frame(victim, 1, b"flood 10 16384")
    while c.total.get(victim, 0) < 65535:
        c.pump()
    shut = time.monotonic()
    print("victim got %d bytes, then its window is shut" % c.total[victim])
    echoes = 0
    while not c.over(victim):
        echoes += echo_once(c, other, "meanwhile %d" % echoes)
        time.sleep(0.05)
    waited = time.monotonic() - shut
    limit = float(seconds)
    print("victim", ending(c, victim),
          "in time" if limit * 0.9 <= waited <= limit + 2 else
          "after %.2f s" % waited)
    print("other echoed meanwhile", echoes > 5)
    print("other", echo_once(c, other, "after"))
    print("other", *c.close(other))


def room(where):
    c, d = Client(where), Client(where)
    a, b, e = c.open("/room"), c.open("/room"), d.open("/room")
    assert c.status(a) == c.status(b) == d.status(e) == "200"
    for cl, sid in ((c, a), (c, b), (d, e)):       # subscribed on open
        print("joined %r" % (cl.message(sid),))
    c.send_frame(a, 1, b"hello room")
    for name, cl, sid in (("a", c, a), ("b", c, b), ("e", d, e)):
        print(name, "%r" % (cl.message(sid),))
    d.send_frame(e, 2, b"\x00\x01binary")
    for name, cl, sid in (("a", c, a), ("b", c, b), ("e", d, e)):
        print(name, "%r" % (cl.message(sid),))
    print("a", *c.close(a))
    c.send_frame(b, 1, b"after a left")
    for name, cl, sid in (("b", c, b), ("e", d, e)):
        print(name, "%r" % (cl.message(sid),))
    print("b", *c.close(b))
    print("e", *d.close(e))


def ping(where):
    c = Client(where)
    live, mute = c.open("/ping"), c.open("/ping")
    assert c.status(live) == "200" and c.status(mute) == "200"
    pings, end = 0, time.monotonic() + 1.5
    while time.monotonic() < end:
        f = c.recv_frame(live)
        if f is None:
            break
        if f[2] == 9:
            pings += 1
            c.send_frame(live, 10, f[3])
    op, payload = None, b""
    while op != 8:
        f = c.recv_frame(mute)
        if f is None:
            break
        op, payload = f[2], f[3]
    print("live answered %s pings" % ("several" if pings >= 4 else pings))
    print("mute", close_text(op, payload))
    while not c.over(mute):
        c.pump()
    print("mute", ending(c, mute))
    print("live", echo_once(c, live, "still here"))
    print("live", *c.close(live))


def drain(where):
    c = Client(where)
    sid = c.open("/drain")
    assert c.status(sid) == "200"
    c.slow.add(sid)
    c.send_frame(sid, 1, b"fill 16384")
    while c.total.get(sid, 0) < 65535:
        c.pump()
    time.sleep(0.2)               # the window stays shut a while
    c.slow.discard(sid)
    c.conn.increment_flow_control_window(c.total[sid], stream_id=sid)
    c.flush()
    got = []
    while True:
        op, payload = c.message(sid)
        if op == 2:
            got.append(len(payload))
            continue
        print("binary %d x %s" % (len(got), set(got)))
        print("%r" % (payload.decode(),))
        if op != 1 or payload == b"drained":
            break
    print(*c.close(sid))


if __name__ == "__main__":
    where, mode, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    {"settings": settings, "echo": echo, "many": many, "status": status,
     "connect": connect, "deflate": deflate, "malformed": malformed,
     "rst": rst, "slow": slow, "shutdown": shutdown, "stall": stall,
     "room": room, "ping": ping, "drain": drain}[mode](where, *args)
