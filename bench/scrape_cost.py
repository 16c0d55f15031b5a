#!/usr/bin/python3
"""scrape_cost.py - what one scrape of moonsocket.metrics costs, with no
WebSocket open and with N idle ones (10,000).

Starts build/moonsocket on bench/apps/metrics.lua, then for each count
of idle WebSockets (opened as idle_rss.py opens them: upgraded, then
left alone) makes SCRAPES scrapes, each on a new connection (GET
/metrics, Connection: close), one after another, and reports per scrape:
the body's bytes, the round trip seen by the client (median and 90th
percentile), and the server's CPU time (user + system, from
/proc/PID/stat over all the scrapes, divided by their number).  Raises
its own descriptor limit (and so the server's) to the hard limit first.

    scrape_cost.py [--connections 10000] [--scrapes 500]
                   [--server build/moonsocket]

Prints one line of key=value per count and a Markdown table.
"""

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import time

from procs import cpu_seconds, ws_upgrade

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)


def start(server):
    env = dict(os.environ, PORT="0", HOST="127.0.0.1",
               LUA_PATH="lua/?.lua;lua/?/init.lua;;")
    proc = subprocess.Popen([server, "bench/apps/metrics.lua"], cwd=ROOT,
                            env=env, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    if "listening on" not in line:
        proc.kill()
        sys.exit(f"scrape_cost: the server did not start: {line}")
    return proc, int(line.rsplit(":", 1)[1])


def scrape(port):
    """One scrape: the seconds it took and the body."""
    t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
              b"Connection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    took = time.perf_counter() - t0
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace"))
    return took, body


def measure(pid, port, scrapes):
    for _ in range(10):                       # warm: the module loaded
        scrape(port)
    times = []
    cpu0 = cpu_seconds(pid)
    for _ in range(scrapes):
        took, body = scrape(port)
        times.append(took)
    cpu = (cpu_seconds(pid) - cpu0) / scrapes
    times.sort()
    return {"bytes": len(body), "median_ms": statistics.median(times) * 1e3,
            "p90_ms": times[int(len(times) * 0.9)] * 1e3,
            "server_cpu_ms": cpu * 1e3, "body": body}


def figure(body, name):
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return int(line.split()[1])
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--scrapes", type=int, default=500)
    ap.add_argument("--server", default=os.path.join(ROOT, "build/moonsocket"))
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.connections + 100
    if hard != resource.RLIM_INFINITY and hard < need:
        sys.exit(f"scrape_cost: {args.connections} connections need {need} "
                 f"descriptors; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    proc, port = start(args.server)
    rows, socks = [], []
    try:
        for count in (0, args.connections):
            while len(socks) < count:
                socks.append(ws_upgrade(port))
            time.sleep(0.5)
            r = measure(proc.pid, port, args.scrapes)
            open_ws = figure(r["body"], 'moonsocket_connections{kind='
                             '"websocket",transport="tcp"}')
            if open_ws != count:
                raise RuntimeError(f"{open_ws} WebSockets counted, not {count}")
            print(f"websockets={count} scrapes={args.scrapes} "
                  f"bytes={r['bytes']} median_ms={r['median_ms']:.3f} "
                  f"p90_ms={r['p90_ms']:.3f} "
                  f"server_cpu_ms={r['server_cpu_ms']:.3f}", flush=True)
            rows.append((count, r))
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        proc.wait(timeout=30)
    print()
    print("| idle WebSockets | body bytes | round trip, median | p90 "
          "| server CPU per scrape |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for count, r in rows:
        print(f"| {count:,} | {r['bytes']:,} | {r['median_ms']:.2f} ms "
              f"| {r['p90_ms']:.2f} ms | {r['server_cpu_ms']:.2f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
