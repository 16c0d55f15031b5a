"""permessage-deflate against the deflate app, from Python.

usage: deflate_client.py PORT MODE [PATH]
  echo PATH      websockets (its own deflate) echoes text and binary of
                 many sizes; prints the negotiated parameters
  small PATH     the same with client_max_window_bits=9 offered
  raw PATH CASE  a raw socket sends one crafted compressed message and
                 prints the close code (or the echoed payload): CASE is
                 bomb, invalid, fragmented, badutf8, rsv-continuation,
                 rsv-ping, empty
"""
import asyncio
import base64
import os
import socket
import struct
import sys
import zlib

import websockets
from websockets.extensions.permessage_deflate import \
    ClientPerMessageDeflateFactory


MESSAGES = [b"", b"x", os.urandom(100), b"abc" * 10000, os.urandom(200000),
            "é" * 40000, "hello " * 3000, "z"]


async def echo(port, path, factory=None):
    kwargs = {"extensions": [factory]} if factory else {}
    async with websockets.connect(f"ws://127.0.0.1:{port}{path}",
                                  max_size=None, **kwargs) as ws:
        for m in MESSAGES * 2:
            await ws.send(m)
            if await ws.recv() != m:
                raise SystemExit(f"echo of {len(m)} differs")
        ext = ws.extensions[0] if ws.extensions else None
        print("none" if ext is None else
              f"takeover={str(not ext.remote_no_context_takeover).lower()},"
              f"{str(not ext.local_no_context_takeover).lower()} "
              f"bits={ext.remote_max_window_bits},"
              f"{ext.local_max_window_bits}")


def frame(opcode, payload, fin=True, rsv1=False):
    head = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        hdr = struct.pack("!BB", head, 0x80 | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", head, 0x80 | 126, n)
    else:
        hdr = struct.pack("!BBQ", head, 0x80 | 127, n)
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return hdr + key + masked


def compress(data):
    c = zlib.compressobj(wbits=-15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def read_frame(s):
    def exact(n):
        b = b""
        while len(b) < n:
            chunk = s.recv(n - len(b))
            if not chunk:
                raise EOFError
            b += chunk
        return b
    b0, b1 = exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", exact(8))[0]
    return b0, exact(n)


def raw(port, path, case):
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(5)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
               f"Sec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
              .encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    if b"permessage-deflate" not in head:
        print("not negotiated")
        return
    if case == "bomb":         # 10 MB of zeros in about 10 KB
        s.sendall(frame(2, compress(b"\0" * 10_000_000), rsv1=True))
    elif case == "invalid":
        s.sendall(frame(2, b"\xff\xff\xff\xff garbage", rsv1=True))
    elif case == "badutf8":
        s.sendall(frame(1, compress(b"ok \xff not utf-8"), rsv1=True))
    elif case == "fragmented":
        data = compress(b"fragmented and compressed " * 100)
        third = len(data) // 3
        s.sendall(frame(1, data[:third], fin=False, rsv1=True)
                  + frame(9, b"ping inside")
                  + frame(0, data[third:2 * third], fin=False)
                  + frame(0, data[2 * third:]))
    elif case == "rsv-continuation":
        s.sendall(frame(1, compress(b"a"), fin=False, rsv1=True)
                  + frame(0, compress(b"b"), rsv1=True))
    elif case == "rsv-ping":
        s.sendall(frame(9, b"", rsv1=True))
    elif case == "empty":
        s.sendall(frame(1, b"", rsv1=True))
    while True:
        try:
            b0, payload = read_frame(s)
        except (EOFError, socket.timeout):
            print("no close")
            return
        opcode = b0 & 0x0F
        if opcode == 8:
            print("close", struct.unpack("!H", payload[:2])[0])
            return
        if opcode in (1, 2):
            if b0 & 0x40:
                payload = zlib.decompressobj(wbits=-15).decompress(
                    payload + b"\x00\x00\xff\xff")
            print("echo", len(payload), payload[:25].decode())
            return


def main():
    port, mode = int(sys.argv[1]), sys.argv[2]
    if mode == "echo":
        asyncio.run(echo(port, sys.argv[3]))
    elif mode == "small":
        asyncio.run(echo(port, sys.argv[3], ClientPerMessageDeflateFactory(
            client_max_window_bits=9, server_max_window_bits=10)))
    else:
        raw(port, sys.argv[3], sys.argv[4])


if __name__ == "__main__":
    main()
