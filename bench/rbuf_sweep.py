#!/usr/bin/python3
"""rbuf_sweep.py - echo throughput by receive_buffer_size.

Runs bench/apps/echo.lua with RECEIVE_BUFFER_SIZE set to each size, for
16 B (100 connections, 1 in flight), 1 KiB (100 x 16) and 64 KiB
(100 x 1) binary echoes.  The sizes are interleaved within each round
(a shared machine's load drifts across them alike), ROUNDS rounds;
prints the median MB/s and messages/s of each size and its ratio to
the default's (64 KiB).

    rbuf_sweep.py [--rounds 3] [--duration 3] [--sizes 16,32,...]
"""
import argparse
import os
import statistics
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
import run_peers  # noqa: E402

SHAPES = [("16 B", 100, 1, 16), ("1 KiB", 100, 16, 1024),
          ("64 KiB", 100, 1, 65536)]
DEFAULT_KIB = 64


def one(kib, shape, args):
    os.environ["RECEIVE_BUFFER_SIZE"] = str(kib * 1024)
    server = run_peers.Server("moonsocket")
    try:
        server.wait_ready(30)
        _, c, d, s = shape
        kv, err = run_peers.loadgen(
            server, f"rbuf-{kib}k",
            ["echo", "-c", str(c), "-d", str(d), "-s", str(s),
             "-w", "1", "-T", str(args.duration),
             "-t", str(args.duration + 60)], args.duration + 90)
    finally:
        server.stop(10)
    if kv is None or kv.get("errors"):
        sys.exit(f"rbuf_sweep: {kib} KiB, {shape[0]}: {err}")
    return kv


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=3)
    ap.add_argument("--sizes", default="16,32,64,128,256,512",
                    help="KiB, comma-separated")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    got = {}                                  # (shape, kib) -> [kv]
    for r in range(args.rounds):
        for shape in SHAPES:
            order = sizes if r % 2 == 0 else sizes[::-1]
            for kib in order:
                kv = one(kib, shape, args)
                got.setdefault((shape[0], kib), []).append(kv)
                print(f"round {r + 1} {shape[0]} {kib} KiB: "
                      f"{kv['mb_per_s']:.1f} MB/s "
                      f"{kv['msgs_per_s']:.0f} msg/s", flush=True)
    print("\n| echo | receive_buffer_size | MB/s (median) | messages/s "
          f"| ratio to {DEFAULT_KIB} KiB |")
    print("|---|---|---|---|---|")
    for shape in SHAPES:
        base = statistics.median(kv["mb_per_s"] for kv in
                                 got.get((shape[0], DEFAULT_KIB), [])) \
            if DEFAULT_KIB in sizes else None
        for kib in sizes:
            mb = statistics.median(kv["mb_per_s"]
                                   for kv in got[(shape[0], kib)])
            ms = statistics.median(kv["msgs_per_s"]
                                   for kv in got[(shape[0], kib)])
            ratio = f"{mb / base:.2f}" if base else "-"
            print(f"| {shape[0]} | {kib} KiB | {mb:.1f} | {ms:.0f} "
                  f"| {ratio} |")


if __name__ == "__main__":
    sys.exit(main())
