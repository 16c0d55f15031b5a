"""An independent TLS client for the TLS specs (Python ssl + websockets).

usage: tls_client.py PORT MODE [ARGS]
  echo                 wss echo of text and binary, 0 B to 16 MiB
  many N               N concurrent wss connections, each echoing
  subject [NAME]       the certificate's CN, with SNI NAME if given
  hold SECONDS         open a wss connection, echo, wait SECONDS, echo
                       again (prints "ok" twice)
  linger PID           open a wss connection, SIGTERM the server (PID),
                       read its close frame, answer it, read its
                       close_notify and its FIN, and keep the socket open
                       until the server has exited (10 s at most);
                       prints what came and how long the exit took
"""
import asyncio
import base64
import os
import signal
import socket
import ssl
import sys
import time

import websockets


def context():
    # one context for all connections: making one loads the CA store
    global CONTEXT
    if CONTEXT is None:
        CONTEXT = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        CONTEXT.check_hostname = False
        CONTEXT.verify_mode = ssl.CERT_NONE
    return CONTEXT


CONTEXT = None


def url(port):
    return f"wss://127.0.0.1:{port}/ws"


async def echo(port):
    async with websockets.connect(url(port), ssl=context(), max_size=None,
                                  compression=None) as ws:
        for size in (0, 1, 125, 126, 65535, 65536, 1 << 20, 16 << 20):
            for message in (os.urandom(size), "é" * (size // 2)):
                await ws.send(message)
                if await ws.recv() != message:
                    raise SystemExit(f"echo of {size} differs")
    print(f"ok {ws.close_code}")


async def many(port, n):
    async def one(i):
        async with websockets.connect(url(port), ssl=context(),
                                      compression=None,
                                      open_timeout=30) as ws:
            await ws.send(f"client {i}")
            if await ws.recv() != f"client {i}":
                raise SystemExit(f"client {i}: wrong echo")
    await asyncio.gather(*(one(i) for i in range(n)))
    print(f"ok {n}")


def subject(port, name):
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with context().wrap_socket(raw, server_hostname=name) as tls:
            der = tls.getpeercert(binary_form=True)
    from cryptography import x509
    cert = x509.load_der_x509_certificate(der)
    print(cert.subject.rfc4514_string())


async def hold(port, seconds):
    async with websockets.connect(url(port), ssl=context(),
                                  compression=None) as ws:
        await ws.send("first")
        print("ok" if await ws.recv() == "first" else "bad", flush=True)
        await asyncio.sleep(seconds)
        await ws.send("second")
        print("ok" if await ws.recv() == "second" else "bad", flush=True)


class RawTLS:
    """TLS over a raw socket through memory BIOs, so that the peer's
    close_notify and its FIN are told apart."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context().wrap_bio(self.incoming, self.outgoing)
        self.run(self.tls.do_handshake)

    def run(self, step, *args):
        while True:
            try:
                result = step(*args)
                self.sock.sendall(self.outgoing.read())
                return result
            except ssl.SSLWantReadError:
                self.sock.sendall(self.outgoing.read())
                data = self.sock.recv(65536)
                if not data:
                    raise SystemExit("FIN before close_notify")
                self.incoming.write(data)

    def send(self, data):
        self.run(self.tls.write, data)

    def recv(self, n):
        """n bytes; fewer only at the peer's close_notify (a FIN before
        it ends the script)"""
        data = b""
        while len(data) < n:
            got = self.run(self.tls.read, n - len(data))
            if not got:
                break
            data += got
        return data


def linger(port, pid):
    conn = RawTLS(port)
    key = base64.b64encode(os.urandom(16)).decode()
    conn.send((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = conn.recv(1)
        if not byte:
            raise SystemExit(f"closed during the handshake: {head!r}")
        head += byte
    if not head.startswith(b"HTTP/1.1 101 "):
        raise SystemExit(f"no upgrade: {head!r}")
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    first, length = conn.recv(2)
    if first != 0x88 or length > 125:
        raise SystemExit(f"not a close frame: {first:#x} {length}")
    payload = conn.recv(length)
    code = int.from_bytes(payload[:2], "big")
    mask = os.urandom(4)
    answer = payload[:2]
    conn.send(bytes([0x88, 0x80 | len(answer)]) + mask +
              bytes(b ^ mask[i % 4] for i, b in enumerate(answer)))
    if conn.recv(1) != b"":                     # close_notify
        raise SystemExit("data after the close frame")
    if conn.sock.recv(1) != b"":
        raise SystemExit("bytes after close_notify")
    print(f"close {code} {payload[2:].decode()}; close_notify; FIN",
          flush=True)
    while time.monotonic() - started < 10:     # the socket stays open
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.01)
    print(f"exited after {time.monotonic() - started:.2f} s")
    conn.sock.close()


def main():
    port, mode = int(sys.argv[1]), sys.argv[2]
    if mode == "echo":
        asyncio.run(echo(port))
    elif mode == "many":
        asyncio.run(many(port, int(sys.argv[3])))
    elif mode == "subject":
        subject(port, sys.argv[3] if len(sys.argv) > 3 else None)
    elif mode == "hold":
        asyncio.run(hold(port, float(sys.argv[3])))
    elif mode == "linger":
        linger(port, int(sys.argv[3]))


if __name__ == "__main__":
    main()
