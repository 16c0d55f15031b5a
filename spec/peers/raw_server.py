#!/usr/bin/python3
"""A raw WebSocket server for one client, to check what a client sends
and how it takes what servers must not send (RFC 6455 section 5.1).

Usage: raw_server.py MODE.  Prints "listening on 127.0.0.1:PORT", then
serves one connection:
  check   answers the handshake, reads frames until a close frame and
          checks every one is masked, each with another key; echoes text
          and binary frames unmasked; then closes with 1000.  Prints
          "summary: frames=N masked=N distinct_keys=N".
  masked  answers the handshake and sends a masked text frame; prints
          "client closed CODE" from the client's close frame.
  silent  accepts and never answers.
"""

import base64
import hashlib
import os
import socket
import struct
import sys

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def read_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def read_frame(conn):
    b0, b1 = read_exact(conn, 2)
    length = b1 & 0x7F
    if length == 126:
        length = struct.unpack("!H", read_exact(conn, 2))[0]
    elif length == 127:
        length = struct.unpack("!Q", read_exact(conn, 8))[0]
    key = read_exact(conn, 4) if b1 & 0x80 else None
    payload = read_exact(conn, length)
    if key:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return b0 & 0x0F, key, payload


def frame(opcode, payload, key=None):
    head = bytes([0x80 | opcode])
    mask = 0x80 if key else 0
    n = len(payload)
    if n < 126:
        head += bytes([mask | n])
    elif n < 65536:
        head += bytes([mask | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask | 127]) + struct.pack("!Q", n)
    if key:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    return head + payload


def handshake(conn):
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(4096)
        if not chunk:
            raise EOFError
        head += chunk
    key = None
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"sec-websocket-key:"):
            key = line.split(b":", 1)[1].strip()
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket"
                 b"\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
                 accept + b"\r\n\r\n")


def main():
    mode = sys.argv[1]
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    print("listening on 127.0.0.1:%d" % srv.getsockname()[1], flush=True)
    conn, _ = srv.accept()
    conn.settimeout(10)
    if mode == "silent":
        conn.recv(4096)
        conn.settimeout(30)
        try:
            conn.recv(4096)
        except OSError:
            pass
        return
    handshake(conn)
    if mode == "masked":
        conn.sendall(frame(0x1, b"masked", os.urandom(4)))
        while True:
            op, key, payload = read_frame(conn)
            if op == 0x8:
                print("client closed %d" % struct.unpack("!H", payload[:2]),
                      flush=True)
                return
    frames = masked = 0
    keys = set()
    while True:
        op, key, payload = read_frame(conn)
        frames += 1
        if key:
            masked += 1
            keys.add(key)
        if op == 0x8:
            break
        if op in (0x1, 0x2):
            conn.sendall(frame(op, payload))
    conn.sendall(frame(0x8, struct.pack("!H", 1000)))
    print("summary: frames=%d masked=%d distinct_keys=%d" %
          (frames, masked, len(keys)), flush=True)


main()
