#!/usr/bin/python3
"""callgrind_uws.py - user-space instructions per echoed message in
uWebSockets' EchoServer against moonsocket, as callgrind_guard.py
measures them.

    UWS_ECHO=/path/EchoServer callgrind_uws.py [--functions N]
        [--servers uWebSockets,moonsocket,moonsocket-coroutine]
        [--sizes 16,1024,65536]

For each size (binary frames), each server runs under valgrind
--tool=callgrind twice, SMALL then BIG echoes on one connection with one
message in flight, and the difference over BIG - SMALL echoes is the
cost of one echo (start-up and the handshake cancel).  The counts come
from run_peers.callgrind_run, the same as the guard's, and do not move
with the machine's load.  Prints a markdown table with each server's
ratio to the first; --functions N adds each server's N costliest
functions per echo (exclusive).  UWS_ECHO names the binary that
build_uws.sh makes; without it uWebSockets is skipped.
"""

import argparse
import os
import shutil
import sys
import tempfile

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
import callgrind_guard  # noqa: E402
import run_peers  # noqa: E402


def echoes(size):
    """The guard's counts: 64 KiB echoes run a tenth as many."""
    return (200, 2000) if size >= 65536 else \
        (callgrind_guard.SMALL, callgrind_guard.BIG)


def measure(name, size, functions):
    """(instructions per echo, [(per echo, function, object), ...])."""
    n_small, n_big = echoes(size)
    outdir = tempfile.mkdtemp(prefix="callgrind-uws-")
    try:
        small = run_peers.callgrind_run(n_small, outdir, 1, size, False,
                                        name)
        big = run_peers.callgrind_run(n_big, outdir, 1, size, False, name)
        n = n_big - n_small
        ir = (run_peers.total_ir(big) - run_peers.total_ir(small)) / n
        top = []
        if functions:
            top = run_peers.per_echo(run_peers.annotate(big, False),
                                     run_peers.annotate(small, False),
                                     n)[:functions]
        return ir, top
    finally:
        shutil.rmtree(outdir, ignore_errors=True)


def size_label(size):
    return f"{size // 1024} KiB" if size >= 1024 else f"{size} B"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--servers",
                    default="uWebSockets,moonsocket,moonsocket-coroutine")
    ap.add_argument("--sizes", default="16,1024,65536")
    ap.add_argument("--functions", type=int, default=0, metavar="N")
    args = ap.parse_args()
    run_peers.PIN = False
    if not shutil.which("valgrind"):
        sys.exit("callgrind_uws: valgrind is not installed "
                 "(make -C bench deps)")
    if not os.access(run_peers.LOADGEN, os.X_OK):
        sys.exit("callgrind_uws: build bench/loadgen first")
    names = []
    for name in args.servers.split(","):
        if name not in run_peers.SERVERS:
            sys.exit(f"callgrind_uws: unknown server {name}")
        why = run_peers.SERVERS[name][1]()
        if why:
            print(f"callgrind_uws: skipping {name}: {why}", file=sys.stderr)
        else:
            names.append(name)
    if not names:
        sys.exit("callgrind_uws: no server to measure")
    sizes = [int(s) for s in args.sizes.split(",")]

    table, tops = {}, {}
    for size in sizes:
        for name in names:
            ir, top = measure(name, size, args.functions)
            table[size, name] = ir
            tops[size, name] = top
            print(f"{name}, {size_label(size)} binary: {ir:,.0f} "
                  "instructions per echo", file=sys.stderr, flush=True)

    first = names[0]
    head = ["payload", names[0]]
    for name in names[1:]:
        head += [name, "ratio"]
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 1))
    for size in sizes:
        cells = [f"{size_label(size)} binary", f"{table[size, first]:,.0f}"]
        for name in names[1:]:
            cells += [f"{table[size, name]:,.0f}",
                      f"{table[size, name] / table[size, first]:.2f}"]
        print("| " + " | ".join(cells) + " |")
    for size in sizes:
        for name in names:
            if tops[size, name]:
                print(f"\n{name}, {size_label(size)} binary, the "
                      f"{args.functions} costliest functions (exclusive "
                      "instructions per echo):")
                for d, fn, obj in tops[size, name]:
                    if len(fn) > 100:    # C++ lambdas' names
                        fn = fn[:97] + "..."
                    print(f"  {d:9,.0f}  {fn}  [{obj}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
