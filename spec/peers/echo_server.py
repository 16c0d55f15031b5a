#!/usr/bin/python3
"""Stand-in echo server built on python-websockets.

It mimics the contract of spec/apps/echo.lua closely enough to validate the
raw client in spec/helper.lua before (and independently of) moonsocket:
echo on /ws (text as text, binary as binary), 404 elsewhere, env PORT
(0 = any), MAX_MESSAGE_SIZE (-> close 1009), SIGTERM closes every
connection with 1001 and exits 0.  Usage: echo_server.py [app-path]
(the app path is accepted and ignored, so MOONSOCKET_BIN can point here).
"""

import asyncio
import http
import os
import signal
import sys

import websockets


async def echo(ws, path=None):
    try:
        async for message in ws:
            await ws.send(message)
    except websockets.ConnectionClosed:
        pass


async def only_ws_path(path, request_headers):
    if path != "/ws":
        return http.HTTPStatus.NOT_FOUND, [], b"not found\n"
    return None


async def main():
    port = int(os.environ.get("PORT", "0"))
    max_size = int(os.environ.get("MAX_MESSAGE_SIZE", str(16 * 2**20 + 1024)))
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGTERM, stop.set_result, None)
    async with websockets.serve(
            echo, "127.0.0.1", port, max_size=max_size,
            process_request=only_ws_path, ping_interval=None,
            close_timeout=1, compression=None) as server:
        real_port = server.sockets[0].getsockname()[1]
        print(f"listening on 127.0.0.1:{real_port}", file=sys.stderr,
              flush=True)
        await stop
    # Leaving the block closes every connection with 1001 (going away).


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
