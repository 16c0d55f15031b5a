#!/usr/bin/python3
"""An HTTP/1.1 upstream for the HTTP client's specs (Python's
http.server, threaded).  Prints "listening on 127.0.0.1:PORT".

  /hello            200 "hello\\n", Content-Length
  /chunked          200, chunked in three pieces, a trailer field
  /close            200, HTTP/1.0 style: no length, ends at close
  /slow?s=S         waits S seconds, then 200 "slow\\n"
  /big?n=N          N bytes of "x"
  /redirect?to=P    302 to P (303 with code=303)
  /status?code=C    status C, empty body
  /conns            how many connections it has accepted so far
  /echo             the method, the body and some headers, as text
  /drop-keepalive   answers, then closes the connection without saying so
"""

import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

accepted = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        global accepted
        accepted += 1
        super().setup()

    def log_message(self, *args):
        pass

    def answer(self, status, body, headers=()):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def route(self):
        url = urllib.parse.urlsplit(self.path)
        args = dict(urllib.parse.parse_qsl(url.query))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if url.path == "/hello":
            self.answer(200, b"hello\n", [("Content-Type", "text/plain")])
        elif url.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b"first ", b"second ", b"third\n"):
                self.wfile.write(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\nX-Trailer: t\r\n\r\n")
        elif url.path == "/close":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"until the end\n" * 1000)
            self.close_connection = True
        elif url.path == "/slow":
            time.sleep(float(args.get("s", "1")))
            self.answer(200, b"slow\n")
        elif url.path == "/big":
            self.answer(200, b"x" * int(args.get("n", "0")))
        elif url.path == "/redirect":
            self.answer(int(args.get("code", "302")), b"",
                        [("Location", args.get("to", "/hello"))])
        elif url.path == "/status":
            self.answer(int(args.get("code", "200")), b"")
        elif url.path == "/conns":
            self.answer(200, b"%d\n" % accepted)
        elif url.path == "/echo":
            text = "%s %s ua=%s x=%s\n" % (
                self.command, body.decode("latin-1"),
                self.headers.get("User-Agent"), self.headers.get("X-Test"))
            self.answer(200, text.encode("latin-1"))
        elif url.path == "/drop-keepalive":
            self.answer(200, b"dropping\n")
            self.close_connection = True
        else:
            self.answer(404, b"no such path\n")

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = route


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256      # a hundred clients connect at once


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = Server(("127.0.0.1", port), Handler)
    print("listening on 127.0.0.1:%d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
