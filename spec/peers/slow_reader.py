"""A slow HTTP reader: GET a path with a small receive buffer, read it at
about RATE bytes per second, print the status and the body's length.

usage: slow_reader.py PORT PATH RATE
"""
import socket
import sys
import time


def main():
    port, path, rate = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n"
              "Connection: close\r\n\r\n".encode())
    step = rate // 20
    data = b""
    done = False
    while not done:
        time.sleep(0.05)
        got = 0
        while got < step:
            chunk = s.recv(step - got)
            if not chunk:
                done = True
                break
            data += chunk
            got += len(chunk)
    head, _, body = data.partition(b"\r\n\r\n")
    print(head.split(b"\r\n")[0].decode(), len(body))


if __name__ == "__main__":
    main()
