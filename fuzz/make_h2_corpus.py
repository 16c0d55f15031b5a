#!/usr/bin/python3
"""Writes the seeds of fuzz_h2 into corpus/h2/ (run from fuzz/): client
byte streams of HTTP/2 with the input layout of fuzz_h2.c (4 seed bytes,
a flags byte, then the bytes).  HPACK by Python's hpack (Debian
python3-hpack); frames and RFC 6455 frames written here."""
import os
import struct

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST, SETTINGS, PING, GOAWAY, WINDOW, CONT = 0, 1, 3, 4, 6, \
    7, 8, 9
END_STREAM, END_HEADERS, ACK = 1, 4, 1


def frame(kind, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + \
        struct.pack(">I", sid) + payload


def headers(enc, sid, fields, end=True):
    return frame(HEADERS, END_HEADERS | (END_STREAM if end else 0), sid,
                 enc.encode(fields))


def get(path, method="GET"):
    return [(":method", method), (":scheme", "https"), (":path", path),
            (":authority", "example.test")]


def connect(path):
    return [(":method", "CONNECT"), (":protocol", "websocket"),
            (":scheme", "https"), (":path", path),
            (":authority", "example.test"), ("sec-websocket-version", "13")]


def ws(opcode, payload, fin=True):
    key = b"\x01\x02\x03\x04"
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    hdr = bytes([(0x80 if fin else 0) | opcode])
    hdr += bytes([0x80 | n]) if n < 126 else \
        bytes([0x80 | 126]) + struct.pack(">H", n)
    return hdr + key + masked


def start(with_preface=True):
    return (PREFACE + frame(SETTINGS, 0, 0)) if with_preface else b""


def seeds():
    e = hpack.Encoder()
    yield "preface-settings", start()
    yield "settings-ack-ping", start() + frame(SETTINGS, ACK, 0) + \
        frame(PING, 0, 0, b"12345678")
    e = hpack.Encoder()
    yield "get", start() + headers(e, 1, get("/"))
    e = hpack.Encoder()
    yield "get-file-head", start() + headers(e, 1, get("/file")) + \
        headers(e, 3, get("/file", "HEAD")) + frame(WINDOW, 0, 0,
                                                   struct.pack(">I", 1 << 20))
    e = hpack.Encoder()
    yield "post-body", start() + headers(e, 1, get("/body", "POST"),
                                         end=False) + \
        frame(DATA, 0, 1, b"x" * 100) + frame(DATA, END_STREAM, 1, b"y")
    e = hpack.Encoder()
    # readers: some at a time, and whole; one reset before its end
    yield "post-read", start() + headers(e, 1, get("/read", "POST"),
                                         end=False) + \
        headers(e, 3, get("/all", "POST"), end=False) + \
        headers(e, 5, get("/read", "POST"), end=False) + \
        frame(DATA, 0, 1, b"x" * 3000) + frame(DATA, 0, 3, b"z" * 1000) + \
        frame(DATA, 0, 5, b"w" * 100) + \
        frame(RST, 0, 5, struct.pack(">I", 8)) + \
        frame(DATA, END_STREAM, 1, b"y") + frame(DATA, END_STREAM, 3, b"")
    e = hpack.Encoder()
    yield "wait-rst", start() + headers(e, 1, get("/wait")) + \
        headers(e, 3, get("/wait")) + frame(RST, 0, 1, struct.pack(">I", 8))
    e = hpack.Encoder()
    yield "connect-echo-close", start() + headers(e, 1, connect("/ws"),
                                                  end=False) + \
        frame(DATA, 0, 1, ws(1, b"hello")) + \
        frame(DATA, 0, 1, ws(2, b"a" * 300, fin=False) + ws(0, b"b")) + \
        frame(DATA, 0, 1, ws(9, b"ping")) + \
        frame(DATA, END_STREAM, 1, ws(8, struct.pack(">H", 1000)))
    e = hpack.Encoder()
    yield "connect-sub-pub", start() + headers(e, 1, connect("/sub"),
                                               end=False) + \
        headers(e, 3, connect("/sub"), end=False) + \
        frame(DATA, 0, 1, ws(1, b"pub to all")) + \
        frame(DATA, 0, 3, ws(1, b"close"))
    e = hpack.Encoder()
    # a small window: the answers and echoes wait for WINDOW_UPDATE
    yield "small-window", start(False) + PREFACE + \
        frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 16)) + \
        headers(e, 1, connect("/ws"), end=False) + \
        frame(DATA, 0, 1, ws(1, b"x" * 100)) + \
        headers(e, 3, get("/file")) + \
        frame(WINDOW, 0, 1, struct.pack(">I", 50)) + \
        frame(WINDOW, 0, 3, struct.pack(">I", 1000))
    e = hpack.Encoder()
    yield "connect-refused", start() + headers(e, 1, [
        (":method", "CONNECT"), (":authority", "example.test:443")],
        end=False) + headers(e, 3, connect("/nothing"), end=False) + \
        frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0))


for name, data in seeds():
    flags = b"\x02" if name == "small-window" else b"\x00"
    with open(os.path.join("corpus", "h2", name), "wb") as f:
        f.write(b"\x00\x00\x00\x00" + flags + data)
