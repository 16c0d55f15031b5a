#!/usr/bin/python3
"""callgrind_guard.py - the hot path's cost guard, independent of time.

For each workload in callgrind-budget, runs moonsocket under
valgrind --tool=callgrind twice (SMALL then BIG echoes on one
connection) and takes the difference over BIG - SMALL echoes, so that
start-up and the handshake cancel: user-space instructions per echoed
message.  Fails a workload whose cost exceeds its committed budget by
more than the tolerance (10 %).  Prints TAP.

    callgrind_guard.py            check every workload
    callgrind_guard.py --update   measure and rewrite the budget file

One connection, one message in flight: every echo takes the same path
(one read, one Lua call, one sendmsg, one loop iteration), which makes
the count stable to about 0.5 % between runs.  The budget belongs to a
toolchain (compiler, Debian's liblua5.4, libev, libc): after changing
one, run --update and commit the new figures with the reason.
"""

import argparse
import os
import shutil
import sys
import tempfile

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
import callgrind_http  # noqa: E402
import run_peers  # noqa: E402

BUDGET_FILE = os.path.join(BENCH, "callgrind-budget")
SMALL, BIG = 2000, 20000
TOLERANCE = 0.10

# Payload content must not matter: at each size, echoes of every payload
# kind of loadgen cost at most CONTENT_TOLERANCE more than random ones
# (short strings Lua interns may cost less: a repeated 16-byte message
# is found, not made).  Fewer echoes do: the counts are exact.
CONTENT_SIZES = (16, 1024)
CONTENT_KINDS = ("zero", "repeat", "adversarial")
CONTENT_SMALL, CONTENT_BIG = 500, 3000
CONTENT_TOLERANCE = 0.03

# name: (server, payload bytes, text frames[, small, big echoes]), or
# for the HTTP ones the workload of callgrind_http.py: per request, not
# per echo.  64 KiB echoes run a tenth as many: each costs ~30 small ones.
WORKLOADS = {
    "echo-16-binary": ("moonsocket", 16, False),
    "echo-16-binary-coroutine": ("moonsocket-coroutine", 16, False),
    "echo-1024-text": ("moonsocket", 1024, True),
    "echo-65536-binary": ("moonsocket", 65536, False, 200, 2000),
    "http-get": callgrind_http.http_gets,
    "http-post": callgrind_http.http_posts,
    "h2-get": callgrind_http.h2_gets,
    "upgrade": callgrind_http.upgrades,
}


def measure(name):
    outdir = tempfile.mkdtemp(prefix="callgrind-guard-")
    if callable(WORKLOADS[name]):         # an HTTP request, an upgrade
        binary = os.path.join(os.path.dirname(BENCH), "build/moonsocket")
        small, big = callgrind_http.SMALL, callgrind_http.BIG
        try:
            return (callgrind_http.run(binary, WORKLOADS[name], big, outdir)
                    - callgrind_http.run(binary, WORKLOADS[name], small,
                                         outdir)) / (big - small)
        finally:
            shutil.rmtree(outdir, ignore_errors=True)
    server, size, text, n_small, n_big = (WORKLOADS[name] + (SMALL, BIG))[:5]
    try:
        small = run_peers.callgrind_run(n_small, outdir, 1, size, text,
                                        server)
        big = run_peers.callgrind_run(n_big, outdir, 1, size, text, server)
        return (run_peers.total_ir(big) - run_peers.total_ir(small)) \
            / (n_big - n_small)
    finally:
        shutil.rmtree(outdir, ignore_errors=True)


def measure_kind(size, kind):
    outdir = tempfile.mkdtemp(prefix="callgrind-guard-")
    try:
        small, big = (run_peers.callgrind_run(n, outdir, 1, size, False,
                                              kind=kind)
                      for n in (CONTENT_SMALL, CONTENT_BIG))
        return (run_peers.total_ir(big) - run_peers.total_ir(small)) \
            / (CONTENT_BIG - CONTENT_SMALL)
    finally:
        shutil.rmtree(outdir, ignore_errors=True)


def content_check(size):
    """(ok, description): every kind against random, at size bytes."""
    base = measure_kind(size, "random")
    worst, parts = 0.0, [f"random {base:,.0f}"]
    for kind in CONTENT_KINDS:
        m = measure_kind(size, kind)
        worst = max(worst, m / base - 1)
        parts.append(f"{kind} {m:,.0f} ({m / base - 1:+.1%})")
    return worst <= CONTENT_TOLERANCE, \
        f"payload content, {size} B binary: {', '.join(parts)} " \
        f"(limit {CONTENT_TOLERANCE:+.0%} over random)"


def read_budget():
    budget = {}
    with open(BUDGET_FILE) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                name, value = line.split()
                budget[name] = int(value)
    return budget


def write_budget(measured):
    with open(BUDGET_FILE, "w") as f:
        f.write("# User-space instructions per echoed message (per request\n"
                "# for http-get, http-post, h2-get and upgrade), measured by\n"
                "# bench/callgrind_guard.py (make -C bench guard).  The\n"
                "# guard fails when a workload exceeds its budget by more\n"
                f"# than {TOLERANCE:.0%}.  Regenerate with --update and say "
                "why in the commit.\n")
        for name in WORKLOADS:
            f.write(f"{name} {round(measured[name])}\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--update", action="store_true",
                    help="measure and rewrite the budget file")
    args = ap.parse_args()
    run_peers.PIN = False
    if not shutil.which("valgrind"):
        print("1..0 # SKIP valgrind is not installed")
        return 1
    if not os.access(run_peers.LOADGEN, os.X_OK):
        sys.exit("callgrind_guard: build bench/loadgen first")
    budget = {} if args.update else read_budget()
    names = list(WORKLOADS)
    print(f"1..{len(names) + len(CONTENT_SIZES)}")
    measured, failed = {}, 0
    for i, name in enumerate(names, 1):
        try:
            measured[name] = m = measure(name)
        except (RuntimeError, SystemExit) as e:
            print(f"not ok {i} - {name}: the workload failed: {e}")
            failed += 1
            continue
        if args.update:
            print(f"ok {i} - {name}: {m:,.0f} instructions")
            continue
        limit = budget[name] * (1 + TOLERANCE)
        verdict = "ok" if m <= limit else "not ok"
        failed += verdict != "ok"
        unit = "request" if callable(WORKLOADS[name]) else "echo"
        print(f"{verdict} {i} - {name}: {m:,.0f} instructions per {unit} "
              f"(budget {budget[name]:,}, limit {limit:,.0f}, "
              f"{(m / budget[name] - 1):+.1%})")
    for i, size in enumerate(CONTENT_SIZES, len(names) + 1):
        try:
            ok, desc = content_check(size)
        except (RuntimeError, SystemExit) as e:
            ok, desc = False, f"payload content, {size} B: failed: {e}"
        failed += not ok
        print(f"{'ok' if ok else 'not ok'} {i} - {desc}", flush=True)
    if args.update and not failed:
        write_budget(measured)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
