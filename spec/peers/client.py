#!/usr/bin/python3
"""Independent client for spec/python_spec.lua, built on python-websockets.

Usage: client.py PORT.  Echoes text and binary messages of several sizes
through ws://127.0.0.1:PORT/ws, sends a fragmented message, pings, and
closes with 1000.  Prints one "ok ..." line per check and a final
"summary: checks=N failures=M close_code=C" line; exits 1 on any mismatch.
"""

import asyncio
import sys

import websockets

SIZES = (0, 1, 125, 126, 65535, 65536, 2**20)
PATTERN = "h\u00e9llo w\u00f6rld \u20ac \U0001d11e; "


def text_of_size(n):
    """A str whose UTF-8 encoding is exactly n bytes (like helper.lua's)."""
    unit = len(PATTERN.encode())
    return PATTERN * (n // unit) + "a" * (n % unit)


def binary_of_size(n):
    unit = bytes(range(256)) * 2
    return (unit * (n // len(unit) + 1))[:n]


class Checker:
    def __init__(self):
        self.checks = 0
        self.failures = 0

    def check(self, ok, what):
        self.checks += 1
        if ok:
            print("ok", what)
        else:
            self.failures += 1
            print("FAIL", what)


async def run(port, checker):
    uri = f"ws://127.0.0.1:{port}/ws"
    async with websockets.connect(uri, max_size=None, ping_interval=None,
                                  open_timeout=10, close_timeout=10) as ws:
        print("extensions", [type(e).__name__ for e in ws.extensions])
        for size in SIZES:
            text = text_of_size(size)
            await ws.send(text)
            echoed = await asyncio.wait_for(ws.recv(), 10)
            checker.check(echoed == text, f"text {size}")
            data = binary_of_size(size)
            await ws.send(data)
            echoed = await asyncio.wait_for(ws.recv(), 10)
            checker.check(echoed == data, f"binary {size}")

        await ws.send(["frag", "men", "ted \u20ac"])
        echoed = await asyncio.wait_for(ws.recv(), 10)
        checker.check(echoed == "fragmented \u20ac", "fragmented text")

        pong = await ws.ping(b"moonsocket")
        await asyncio.wait_for(pong, 10)
        checker.check(True, "ping answered")

        await ws.close(1000, "done")
        checker.check(ws.close_code == 1000,
                      f"close code {ws.close_code} (want 1000)")
        return ws.close_code


def main():
    port = int(sys.argv[1])
    checker = Checker()
    close_code = None
    try:
        close_code = asyncio.run(asyncio.wait_for(run(port, checker), 120))
    except Exception as exc:
        checker.failures += 1
        print("FAIL exception", type(exc).__name__, exc)
    print(f"summary: checks={checker.checks} failures={checker.failures}"
          f" close_code={close_code}", flush=True)
    return 1 if checker.failures else 0


if __name__ == "__main__":
    sys.exit(main())
