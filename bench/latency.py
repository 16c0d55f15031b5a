#!/usr/bin/python3
"""latency.py - round-trip latency at C=1, servers interleaved.

The tail of a one-connection round trip on this shared machine is
mostly the machine's noise, which changes from one second to the next:
a figure measured for one server a minute after another's says little.
This runs the servers in turn, ROUNDS times (moonsocket, ws, moonsocket,
ws, ...), each for SECONDS, and reports the median of each percentile
and its ratio to Node ws.  Pinned like run_peers.py: servers on CPU 0,
the load generator on CPU 1.

    latency.py [--rounds 5] [--seconds 4] [--servers moonsocket,ws]
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run_peers  # noqa: E402

KEYS = [("p50_us", "p50"), ("p99_us", "p99"), ("p999_us", "p99.9")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--servers", default="moonsocket,ws")
    args = ap.parse_args()
    import shutil
    run_peers.PIN = shutil.which("taskset") is not None and \
        (os.cpu_count() or 1) >= 2
    names = args.servers.split(",")
    for name in names:
        missing = run_peers.SERVERS[name][1]()
        if missing:
            sys.exit(f"latency: {name}: {missing}")
    results = {n: {k: [] for k, _ in KEYS} for n in names}
    for r in range(args.rounds):
        for name in names:
            server = run_peers.Server(name)
            try:
                server.wait_ready(30)
                kv, err = run_peers.loadgen(
                    server, name, ["-T", str(args.seconds), "latency"],
                    args.seconds + 30)
            finally:
                server.stop()
            if kv is None or kv.get("errors"):
                sys.exit(f"latency: {name} failed: {err}")
            for k, _ in KEYS:
                results[name][k].append(float(kv[k]))
            print(f"round {r + 1} {name}: " + " ".join(
                f"{label} {float(kv[k]):.0f}" for k, label in KEYS) + " µs",
                file=sys.stderr)
    base = "ws" if "ws" in names else names[0]
    print(f"| server | " + " | ".join(f"{label} (µs)" for _, label in KEYS)
          + f" | ratios to {base} |")
    print("|---|" + "---:|" * len(KEYS) + "---|")
    for name in names:
        med = {k: statistics.median(results[name][k]) for k, _ in KEYS}
        bmed = {k: statistics.median(results[base][k]) for k, _ in KEYS}
        print(f"| {name} | " + " | ".join(f"{med[k]:,.0f}" for k, _ in KEYS)
              + " | " + " / ".join(f"{med[k] / bmed[k]:.2f}"
                                   for k, _ in KEYS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
