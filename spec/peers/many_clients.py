#!/usr/bin/python3
"""Opens many WebSocket connections at once, for spec/concurrency_spec.lua.

Usage: many_clients.py PORT [COUNT=1000].  Opens COUNT connections to
ws://127.0.0.1:PORT/ws and keeps them all open; then every client sends a
message of its own and checks the echo; then every client closes with 1000
and checks the server answered 1000.  Prints
"opened=N echoed=N closed_1000=N seconds=S" and exits 1 unless all COUNT
succeeded at every step.
"""

import asyncio
import resource
import sys
import time

import websockets

OPEN_AT_ONCE = 100      # handshakes in flight, to spare the listen backlog


def raise_fd_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


async def run(port, count):
    uri = f"ws://127.0.0.1:{port}/ws"
    gate = asyncio.Semaphore(OPEN_AT_ONCE)

    async def open_one(i):
        async with gate:
            try:
                return await websockets.connect(
                    uri, ping_interval=None, compression=None,
                    open_timeout=30, close_timeout=30)
            except Exception as exc:
                print(f"client {i}: open failed: {exc!r}")
                return None

    clients = await asyncio.gather(*(open_one(i) for i in range(count)))
    opened = sum(1 for ws in clients if ws is not None and ws.open)

    async def echo_one(i, ws):
        message = f"client {i} says hello " * (i % 7 + 1)
        try:
            await ws.send(message)
            return await asyncio.wait_for(ws.recv(), 30) == message
        except Exception as exc:
            print(f"client {i}: echo failed: {exc!r}")
            return False

    async def close_one(i, ws):
        try:
            await ws.close(1000)
        except Exception as exc:
            print(f"client {i}: close failed: {exc!r}")
        return ws.close_code == 1000

    live = [(i, ws) for i, ws in enumerate(clients) if ws is not None]
    echoed = sum(await asyncio.gather(*(echo_one(i, ws) for i, ws in live)))
    closed = sum(await asyncio.gather(*(close_one(i, ws) for i, ws in live)))
    return opened, echoed, closed


def main():
    port = int(sys.argv[1])
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    raise_fd_limit(count + 100)
    started = time.monotonic()
    opened, echoed, closed = asyncio.run(run(port, count))
    print(f"opened={opened} echoed={echoed} closed_1000={closed}"
          f" seconds={time.monotonic() - started:.2f}", flush=True)
    return 0 if opened == echoed == closed == count else 1


if __name__ == "__main__":
    sys.exit(main())
