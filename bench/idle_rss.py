"""Server RSS per idle WebSocket: open N upgraded connections to a running
server and compare its VmRSS before and after.

usage: idle_rss.py PID PORT [N]   (raise `ulimit -n` above N first)
"""
import base64
import os
import selectors
import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main():
    pid, port = int(sys.argv[1]), int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    warm = []
    for _ in range(100):            # let allocators reach a steady state
        warm.append(connect(port))
    for s in warm:
        s.close()
    time.sleep(0.5)
    before = rss_kib(pid)
    socks = [connect(port) for _ in range(n)]
    time.sleep(0.5)
    after = rss_kib(pid)
    per = (after - before) * 1024 / n
    print(f"connections={n} rss_before_kib={before} rss_after_kib={after} "
          f"bytes_per_connection={per:.0f}")
    for s in socks:
        s.close()


def connect(port):
    s = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("closed during handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head.decode(errors="replace"))
    return s


if __name__ == "__main__":
    main()
