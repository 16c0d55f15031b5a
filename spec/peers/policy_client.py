"""Python websockets against the policy app: subprotocols and keep-alive.

usage: policy_client.py PORT MODE
  subprotocol PATH OFFER...  prints the negotiated subprotocol or the
                             refusal status
  pings PATH SECONDS         pings every 0.1 s for SECONDS, answering the
                             server's pings itself; prints "open" or the
                             close code
"""
import asyncio
import sys

import websockets


async def subprotocol(port, path, offers):
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}{path}",
                                      subprotocols=offers or None,
                                      compression=None) as ws:
            await ws.send("protocol")
            echoed = await ws.recv()
            print(f"{ws.subprotocol} {echoed}")
    except websockets.exceptions.InvalidStatusCode as e:
        print(f"refused {e.status_code}")


async def pings(port, path, seconds):
    async with websockets.connect(f"ws://127.0.0.1:{port}{path}",
                                  ping_interval=0.1, ping_timeout=1,
                                  compression=None) as ws:
        try:
            await asyncio.wait_for(ws.wait_closed(), seconds)
            print(f"closed {ws.close_code}")
        except asyncio.TimeoutError:
            print("open")


def main():
    port, mode = int(sys.argv[1]), sys.argv[2]
    if mode == "subprotocol":
        asyncio.run(subprotocol(port, sys.argv[3], sys.argv[4:]))
    else:
        asyncio.run(pings(port, sys.argv[3], float(sys.argv[4])))


if __name__ == "__main__":
    main()
