#!/usr/bin/python3
"""callgrind_http.py - instructions per HTTP request and per upgrade.

Runs bench/apps/http.lua under valgrind --tool=callgrind twice (SMALL
then BIG requests) and prints the difference over BIG - SMALL: the
user-space instructions the server spends on one keep-alive GET answered
by a middleware ("http-get"), one keep-alive POST whose 256-byte body the
middleware reads ("http-post"), the same GET over HTTP/2 (h2c, h2load,
one stream at a time: "h2-get"), and on one WebSocket handshake on a new
connection, closed at once ("upgrade").

    callgrind_http.py [BIN]     BIN: the moonsocket runner (build/moonsocket); the Lua
                                modules are those of its tree
"""

import base64
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
SMALL, BIG = 200, 2000


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def read_head(sock, buf):
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("closed")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def http_gets(port, n):
    sock = socket.create_connection(("127.0.0.1", port))
    buf = b""
    for _ in range(n):
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        head, buf = read_head(sock, buf)
        assert head.startswith(b"HTTP/1.1 200"), head
        while len(buf) < 6:
            buf += sock.recv(65536)
        buf = buf[6:]
    sock.close()


POST_BODY = b"x" * 256


def http_posts(port, n):
    """Keep-alive POSTs of a 256-byte body, read by req:body()."""
    sock = socket.create_connection(("127.0.0.1", port))
    request = (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: "
               + str(len(POST_BODY)).encode() + b"\r\n\r\n" + POST_BODY)
    buf = b""
    for _ in range(n):
        sock.sendall(request)
        head, buf = read_head(sock, buf)
        assert head.startswith(b"HTTP/1.1 200"), head
        while len(buf) < 4:
            buf += sock.recv(65536)
        buf = buf[4:]
    sock.close()


def h2_gets(port, n):
    """GETs over HTTP/2 with prior knowledge (h2c), one stream at a time
    on one connection, by h2load (nghttp2-client)."""
    if not shutil.which("h2load"):
        raise RuntimeError("h2load is missing (make -C bench deps)")
    out = subprocess.run(
        ["h2load", "-n", str(n), "-c", "1", "-m", "1", "-p", "h2c",
         f"http://127.0.0.1:{port}/hello"],
        capture_output=True, text=True, timeout=600).stdout
    if f"{n} succeeded" not in out or f"status codes: {n} 2xx" not in out:
        raise RuntimeError("h2load said:\n" + out)


h2_gets.http2 = True      # the app listens with http2 = true


def upgrades(port, n):
    key = base64.b64encode(os.urandom(16))
    request = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key +
               b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(request)
        head, _ = read_head(sock, b"")
        assert head.startswith(b"HTTP/1.1 101"), head
        sock.close()


def run(binary, workload, n, outdir):
    port = free_port()
    out = os.path.join(outdir, f"callgrind.{workload.__name__}.{n}")
    # the Lua modules of the tree the runner was built in
    root = os.path.dirname(os.path.dirname(os.path.abspath(binary)))
    env = dict(os.environ, PORT=str(port),
               LUA_PATH=f"{root}/lua/?.lua;{root}/lua/?/init.lua;;")
    if getattr(workload, "http2", False):
        env["HTTP2"] = "on"
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
         "--dump-instr=no", binary, os.path.join(BENCH, "apps/http.lua")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the server did not start")
            time.sleep(0.1)
    workload(port, n)
    time.sleep(0.5)
    proc.terminate()
    proc.wait(60)
    with open(out) as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    raise RuntimeError("no totals")


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else \
        os.path.join(ROOT, "build/moonsocket")
    with tempfile.TemporaryDirectory() as outdir:
        for name, workload in (("http-get", http_gets),
                               ("http-post", http_posts),
                               ("h2-get", h2_gets),
                               ("upgrade", upgrades)):
            small = run(binary, workload, SMALL, outdir)
            big = run(binary, workload, BIG, outdir)
            print(f"{name}: {(big - small) / (BIG - SMALL):,.0f} "
                  "instructions per request")


if __name__ == "__main__":
    main()
