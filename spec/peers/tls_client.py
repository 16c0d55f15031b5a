"""An independent TLS client for the TLS specs (Python ssl + websockets).

usage: tls_client.py PORT MODE [ARGS]
  echo                 wss echo of text and binary, 0 B to 16 MiB
  many N               N concurrent wss connections, each echoing
  subject [NAME]       the certificate's CN, with SNI NAME if given
  hold SECONDS         open a wss connection, echo, wait SECONDS, echo
                       again (prints "ok" twice)
"""
import asyncio
import os
import ssl
import sys

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
    import socket
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


if __name__ == "__main__":
    main()
