"""Python `websockets` (asyncio) echo at /ws, a peer for the benchmark:
no compression, large messages, no ping timer."""
import asyncio
import os
import signal
import sys

import websockets


async def echo(ws, path=None):
    async for message in ws:
        await ws.send(message)


async def main():
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGTERM, stop.set_result, None)
    async with websockets.serve(
            echo, os.environ.get("HOST", "127.0.0.1"),
            int(os.environ.get("PORT", "0")), backlog=511,
            max_size=16 * 1024 * 1024, compression=None,
            ping_interval=None, ping_timeout=None) as server:
        host, port = server.sockets[0].getsockname()[:2]
        print(f"websockets: listening on {host}:{port}", file=sys.stderr,
              flush=True)
        await stop


if __name__ == "__main__":
    asyncio.run(main())
