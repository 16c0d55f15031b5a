#!/usr/bin/python3
"""A stream server that plays scripted peers for the socket spec.

Usage: stream_server.py [UNIX_PATH].  Listens on 127.0.0.1 (a free
port) and, with UNIX_PATH, on that Unix socket too; prints "listening on
127.0.0.1:PORT".  Each connection names its part in its first line:
  echo        echoes every line (with "\\n") until EOF; "id" is answered
              with this connection's number (1, 2, ...)
  echo-close  echoes one line, then closes 0.1 s later
  lines       sends "one\\r\\ntwo\\nthr\\ree\\r\\n", then "rest" without an
              end of line, then closes
  cut N       sends N bytes ("0123456789" repeated) and closes
  hold        sends "abc" and sends nothing more
  deaf        sends "abc" and reads nothing more (for 30 s)
  drip        sends "hel", "lo\\n", "wor", "ld\\n" 0.05 s apart and closes
  endless     sends "x" without an end of line until the client leaves
  full        answers the port of a listener that never accepts, its
              queue as short as the kernel allows: a connect beyond it
              waits until it times out
  sink        reads until EOF, then answers "got N FIRST" (the bytes
              read, and the first 64 of them) and closes
"""

import os
import socket
import sys
import threading
import time

counter = 0
counter_lock = threading.Lock()
full_port = 0


def read_line(conn, pending):
    while b"\n" not in pending:
        chunk = conn.recv(65536)
        if not chunk:
            return None, pending
        pending += chunk
    line, _, rest = pending.partition(b"\n")
    return line, rest


def serve(conn):
    global counter
    with counter_lock:
        counter += 1
        number = counter
    try:
        mode, pending = read_line(conn, b"")
        if mode is None:
            return
        words = mode.decode().split()
        part = words[0] if words else ""
        if part == "echo":
            while True:
                line, pending = read_line(conn, pending)
                if line is None:
                    return
                if line == b"id":
                    line = str(number).encode()
                conn.sendall(line + b"\n")
        elif part == "echo-close":
            line, pending = read_line(conn, pending)
            conn.sendall((line or b"") + b"\n")
            time.sleep(0.1)
        elif part == "lines":
            conn.sendall(b"one\r\ntwo\nthr\ree\r\n")
            time.sleep(0.05)
            conn.sendall(b"rest")
        elif part == "cut":
            n = int(words[1])
            conn.sendall((b"0123456789" * (n // 10 + 1))[:n])
        elif part == "hold":
            conn.sendall(b"abc")
            while conn.recv(65536):
                pass
        elif part == "full":
            conn.sendall(b"%d\n" % full_port)
        elif part == "deaf":
            conn.sendall(b"abc")
            time.sleep(30)
        elif part == "drip":
            for piece in (b"hel", b"lo\n", b"wor", b"ld\n"):
                conn.sendall(piece)
                time.sleep(0.05)
        elif part == "endless":
            block = b"x" * 65536
            while True:
                conn.sendall(block)
        elif part == "sink":
            data = bytearray(pending)
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            conn.sendall(b"got %d %s\n" % (len(data), bytes(data[:64])))
    except OSError:
        pass
    finally:
        conn.close()


def accept_loop(server):
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def main():
    global full_port
    full = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    full_port = full.getsockname()[1]
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(512)
    if len(sys.argv) > 1:
        path = sys.argv[1]
        if os.path.exists(path):
            os.unlink(path)
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.bind(path)
        unix.listen(64)
        threading.Thread(target=accept_loop, args=(unix,),
                         daemon=True).start()
    print("listening on 127.0.0.1:%d" % tcp.getsockname()[1], flush=True)
    accept_loop(tcp)


if __name__ == "__main__":
    main()
