#!/usr/bin/python3
"""payloads.py - does payload content change echo throughput?

For each server (moonsocket's callback and coroutine forms, and
uWebSockets when UWS_ECHO names its EchoServer) and each echo shape,
one server process runs every payload kind of loadgen (random, zero,
repeat, adversarial) in turn, ROUNDS rounds, the order rotated each
round: a shared machine's drift falls on every kind alike, which
running one kind after another (run_peers.py's rows) does not promise.
Prints the median messages/s of each kind and its ratio to random's.

    payloads.py [--rounds 5] [--duration 1.5] [--servers a,b]
"""
import argparse
import os
import statistics
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
import run_peers  # noqa: E402

SHAPES = [("16 B, 1 in flight", 100, 1, 16),
          ("16 B, 16 in flight", 100, 16, 16),
          ("1 KiB, 16 in flight", 100, 16, 1024),
          ("64 KiB, 1 in flight", 100, 1, 65536)]
KINDS = ["random", "zero", "repeat", "adversarial"]
WARMUP = 0.5


def one(server, shape, kind, args):
    _, c, d, s = shape
    kv, err = run_peers.loadgen(
        server, f"{server.name}-{kind}",
        ["echo", "-c", str(c), "-d", str(d), "-s", str(s), "-k", kind,
         "-w", str(WARMUP), "-T", str(args.duration),
         "-t", str(args.duration + 60)], args.duration + 90)
    if kv is None or kv.get("errors"):
        sys.exit(f"payloads: {server.name}, {shape[0]}, {kind}: {err}")
    return kv["msgs_per_s"]


def run_server(name, args):
    got = {}                                     # (shape, kind) -> [rate]
    for shape in SHAPES:
        server = run_peers.Server(name)
        try:
            server.wait_ready(30)
            one(server, shape, "random", args)    # warm-up, not counted
            for r in range(args.rounds):
                order = KINDS[r % len(KINDS):] + KINDS[:r % len(KINDS)]
                for kind in order:
                    rate = one(server, shape, kind, args)
                    got.setdefault((shape[0], kind), []).append(rate)
                    print(f"{name}, {shape[0]}, round {r + 1}, {kind}: "
                          f"{rate:,.0f} msg/s", file=sys.stderr, flush=True)
        finally:
            server.stop(10)
    return got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=1.5)
    ap.add_argument("--servers",
                    default="moonsocket,moonsocket-coroutine,uWebSockets")
    args = ap.parse_args()
    names = []
    for name in args.servers.split(","):
        why = run_peers.SERVERS[name][1]()
        if why:
            print(f"skipped {name}: {why}", file=sys.stderr)
        else:
            names.append(name)
    start = time.monotonic()
    results = {name: run_server(name, args) for name in names}
    v = run_peers.versions()
    print("# Echo throughput by payload kind\n")
    print(f"- date: {time.strftime('%Y-%m-%d %H:%M')}; the run took "
          f"{(time.monotonic() - start) / 60:.1f} min; servers on CPU 0, "
          "loadgen on CPU 1, 100 connections, binary frames")
    print(f"- command: `bench/payloads.py --rounds {args.rounds} "
          f"--duration {args.duration}` (`make -C bench payloads`)")
    print("- versions: " + ", ".join(f"{k} {v[k]}" for k in
                                     ["moonsocket", "uWebSockets"] if k in v))
    print("- kinds: `random` varies per message, `zero` is zeros, `repeat` "
          "one byte repeated, `adversarial` 8 random bytes repeated; every "
          "echo was checked byte for byte\n")
    print(f"Median messages/s of {args.rounds} interleaved rounds "
          f"({args.duration} s each), and the ratio to random's.\n")
    print("| server | echo | " + " | ".join(KINDS) + " | worst |")
    print("|---|---|" + "---:|" * (len(KINDS) + 1))
    for name in names:
        for shape in SHAPES:
            med = {k: statistics.median(results[name][(shape[0], k)])
                   for k in KINDS}
            cells = [f"{med['random']:,.0f}"] + \
                [f"{med[k] / med['random']:.3f}" for k in KINDS[1:]]
            worst = min(med[k] / med["random"] for k in KINDS[1:])
            print(f"| {name} | {shape[0]} | " + " | ".join(cells)
                  + f" | {worst:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
