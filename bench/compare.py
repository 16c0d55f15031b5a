#!/usr/bin/python3
"""compare.py - moonsocket against itself: TLS versus plain TCP, and
permessage-deflate on versus off, measured with loadgen; the medians of
the repeats and their ratios go to results-tls.md or results-deflate.md.

    compare.py tls|deflate [--repeat N] [--duration S] [--quick]
                           [--results FILE] [--raw FILE] [--server BIN]

tls: one process serves apps/echo_tls.lua on a plain and a TLS port;
each row of the matrix runs against both, one after the other.
deflate: one process serves apps/echo_deflate.lua; loadgen without
--deflate (off), with it on /ws (context takeover) and on /lean (no
context takeover).  RSS is measured on a fresh process per variant.
The server is pinned to CPU 0 and loadgen to CPU 1, as in run_peers.py.
"""
import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import report
import run_peers
from report import DASH, fmt, table_head, table_row
from run_peers import BENCH, LOADGEN, ROOT, parse_kv, wait_quiet

# ----------------------------------------------------------------------
# The two comparisons.  A variant is how loadgen talks to the one app:
# (name, port variable, extra loadgen arguments).  A row is (name,
# loadgen arguments); "rss" rows run on a fresh process per variant.
# ----------------------------------------------------------------------

TLS = {
    "title": "TLS versus plain TCP",
    "app": "echo_tls.lua",
    "ports": ["PORT", "TLS_PORT"],
    "variants": [("plain", "PORT", []), ("TLS", "TLS_PORT", ["--tls"])],
    "ratios": [("TLS / plain", "TLS", "plain")],
    "rows": lambda a: [
        ("echo C=100 D=16 S=16", ["echo", "-c", "100", "-d", "16",
                                  "-s", "16"]),
        ("echo C=100 D=16 S=1024", ["echo", "-c", "100", "-d", "16",
                                    "-s", "1024"]),
        ("echo C=100 D=1 S=65536", ["echo", "-c", "100", "-d", "1",
                                    "-s", "65536"]),
        ("latency C=1 D=1 S=16", ["latency"]),
        (f"handshake P={a.handshake_parallel}",
         ["handshake", "-c", str(a.handshake_parallel)]),
        (f"rss {a.rss_conns} idle", ["rss", "-c", str(a.rss_conns)]),
    ],
    "notes": [
        "payloads: random bytes in binary frames, every echo checked "
        "byte for byte",
        "TLS: loadgen is an OpenSSL client without certificate checks "
        "and without session resumption (every handshake is full); the "
        "server's certificate is a self-signed ECDSA P-256 one",
        "handshake: TCP connect, TLS handshake, upgrade (101 checked), "
        "close frames exchanged, the server's TCP close awaited; the "
        "percentiles are connect to verified 101",
        "rss: the server's VmRSS growth per idle upgraded connection, on "
        "a fresh process per variant",
    ],
}

DEFLATE = {
    "title": "permessage-deflate on versus off",
    "app": "echo_deflate.lua",
    "ports": ["PORT"],
    "variants": [("off", "PORT", []),
                 ("takeover", "PORT", ["--deflate"]),
                 ("no takeover", "PORT", ["--deflate", "-u", "/lean"])],
    "ratios": [("takeover / off", "takeover", "off"),
               ("no takeover / off", "no takeover", "off")],
    "rows": lambda a: [
        ("echo C=100 D=16 S=1024 text", ["echo", "-c", "100", "-d", "16",
                                         "-s", "1024", "-k", "text",
                                         "-x"]),
        ("echo C=100 D=16 S=1024 random", ["echo", "-c", "100", "-d",
                                           "16", "-s", "1024", "-k",
                                           "random"]),
        (f"rss {a.rss_conns} idle after one 1 KiB text message",
         ["rss", "-c", str(a.rss_conns), "-m", "1", "-s", "1024",
          "-k", "text", "-x"]),
    ],
    "notes": [
        "variants: off = loadgen does not offer the extension (the server "
        "sends plain frames); takeover = /ws, `compression = true` "
        "(15-bit windows, memLevel 8, level 6, threshold 1024); no "
        "takeover = /lean, server_ and client_no_context_takeover",
        "loadgen compresses every message it sends (zlib level 6, 15-bit "
        "window, one stream per connection unless the server asked for "
        "client_no_context_takeover) and inflates and checks every echo",
        "payloads: `text` is JSON-like records (`{\"user\":\"alice\","
        "\"seq\":12345,\"msg\":\"hello world\"},` with varying names, "
        "numbers and phrases) in text frames; `random` is random bytes "
        "in binary frames (incompressible)",
        "MB/s counts payload bytes (before compression), one way; "
        "`wire / payload` is the size of the compressed frames' "
        "payload over the messages' own size, server to client",
        "rss: each connection echoes one 1 KiB text message, then idles; "
        "a fresh process per variant",
    ],
}

COMPARISONS = {"tls": TLS, "deflate": DEFLATE}

# What each test's table shows: (key, unit).  "server_us" is derived:
# the server's CPU time per echo or handshake, which still compares the
# two sides when loadgen, not the server, is the limit.
FIGURES = {
    "echo": [("msgs_per_s", "msg/s"), ("mb_per_s", "MB/s"),
             ("server_us", "server CPU µs per echo")],
    "latency": [("p50_us", "µs p50"), ("p99_us", "µs p99")],
    "handshake": [("hs_per_s", "handshakes/s"),
                  ("server_us", "server CPU µs per handshake")],
    "rss": [("bytes_per_conn", "bytes per connection")],
}
LOWER_IS_BETTER = {"server_us", "p50_us", "p99_us", "bytes_per_conn",
                   "wire_ratio_received"}

# ----------------------------------------------------------------------
# The server
# ----------------------------------------------------------------------


def free_ports(n):
    """n distinct free ports (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class App:
    """One moonsocket process serving a bench app, pinned to CPU 0."""

    def __init__(self, args, comparison):
        self.tmp = tempfile.mkdtemp(prefix="bench-compare-")
        self.ports = dict(zip(comparison["ports"],
                              free_ports(len(comparison["ports"]))))
        env = {**os.environ, "LUA_PATH": args.lua_path,
               "CERT_DIR": os.path.join(BENCH, "certs"),
               **{k: str(v) for k, v in self.ports.items()}}
        self.log = open(os.path.join(self.tmp, "stderr.log"), "w+")
        argv = [args.server_copy, os.path.join(BENCH, "apps",
                                               comparison["app"])]
        self.proc = subprocess.Popen(run_peers.pinned(0, argv), env=env,
                                     cwd=self.tmp, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.pid = self.proc.pid      # taskset execs: the same process

    def wait_ready(self, seconds):
        deadline = time.monotonic() + seconds
        for port in self.ports.values():
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the server exited: "
                                       f"{self.output()}")
                try:
                    socket.create_connection(("127.0.0.1", port),
                                             timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the server did not listen "
                                           f"in {seconds} s")
                    time.sleep(0.05)

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-2000:]

    def stop(self):
        """The exit status; a clean one is 0 or -SIGTERM."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.tail = self.output()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return self.proc.returncode


def run_loadgen(app, port, label, argv, timeout):
    cmd = run_peers.pinned(1, [LOADGEN, "-P", str(port), "-p",
                               str(app.pid), "-l", label, "-q"] + argv)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "loadgen exceeded its time limit"
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("test=")]
    if not lines:
        return None, (p.stderr.strip() or f"exit {p.returncode}")[-500:]
    kv = parse_kv(lines[-1])
    # the server's CPU time per echo or handshake, in µs
    rate = kv.get("msgs_per_s") if kv["test"] == "echo" \
        else kv.get("hs_per_s") if kv["test"] == "handshake" else None
    if rate and kv.get("server_cpu", -1) >= 0:
        kv["server_us"] = kv["server_cpu"] * 1e4 / rate
    return kv, p.stderr.strip()[-500:]

# ----------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------


def run(args, comparison):
    rows = comparison["rows"](args)
    variants = comparison["variants"]
    results = {}                    # (row, variant) -> [kv, ...]
    problems = []
    started = time.monotonic()
    raw = open(args.raw, "a") if args.raw else None
    waited = 0.0
    timing = ["-w", str(args.warmup), "-T", str(args.duration)]

    def over_budget(what):
        if time.monotonic() - started <= args.budget:
            return False
        problems.append(f"stopped at the budget of {args.budget:.0f} s "
                        f"before {what}")
        return True

    def measure(app, row, argv, variant, rep):
        name, port_var, extra = variant
        rss = argv[0] == "rss"
        limit = args.rss_timeout if rss \
            else args.warmup + args.duration + 60
        full = extra + argv + ([] if rss else timing) + ["-t", str(limit)]
        kv, err = run_loadgen(app, app.ports[port_var], name, full,
                              limit + 20)
        if kv is None:
            problems.append(f"{row}, {name}, run {rep + 1}: {err}")
            print(f"   {name}: FAILED: {err}", file=sys.stderr)
            return
        if kv.get("errors", 0):
            problems.append(f"{row}, {name}, run {rep + 1}: "
                            f"{int(kv['errors'])} errors: {err}")
        results.setdefault((row, name), []).append(kv)
        if raw:
            raw.write(json.dumps({"comparison": args.which, "row": row,
                                  "variant": name, "run": rep + 1,
                                  **kv}) + "\n")
        print(f"   {name}: {run_peers.headline(kv)}", file=sys.stderr,
              flush=True)

    def start():
        app = App(args, comparison)
        try:
            app.wait_ready(20)
        except RuntimeError:
            app.stop()
            raise
        return app

    def stop(app):
        rc = app.stop()
        if rc not in (0, -signal.SIGTERM):
            problems.append(f"the server exited with {rc} on SIGTERM: "
                            f"{app.tail[-300:]}")

    for rep in range(args.repeat):
        # the order of the variants rotates per repeat, so that the
        # machine's changing load falls on each alike
        k = rep % len(variants)
        order = variants[k:] + variants[:k]
        try:
            for row, argv in rows:
                if argv[0] != "rss":
                    continue
                for variant in order:
                    if over_budget(f"{row}, {variant[0]}, run {rep + 1}"):
                        break
                    app = start()
                    try:
                        waited += wait_quiet(args.quiet_threshold,
                                             args.quiet_wait)
                        print(f"== run {rep + 1} of {args.repeat}: {row} "
                              f"(fresh server)", file=sys.stderr,
                              flush=True)
                        measure(app, row, argv, variant, rep)
                    finally:
                        stop(app)
            app = start()
            try:
                for row, argv in rows:
                    if argv[0] == "rss" or \
                            over_budget(f"{row}, run {rep + 1}"):
                        continue
                    waited += wait_quiet(args.quiet_threshold,
                                         args.quiet_wait)
                    print(f"== run {rep + 1} of {args.repeat}: {row}",
                          file=sys.stderr, flush=True)
                    for variant in order:
                        measure(app, row, argv, variant, rep)
            finally:
                stop(app)
        except RuntimeError as e:
            problems.append(f"run {rep + 1}: {e}")
            print(f"compare: {e}", file=sys.stderr)
    if raw:
        raw.close()
    args.elapsed = time.monotonic() - started
    args.waited = waited
    return rows, results, problems

# ----------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------


def first(results, key):
    """The first text value of key in any result (negotiated TLS, ...)."""
    for kvs in results.values():
        for kv in kvs:
            if isinstance(kv.get(key), str):
                return kv[key]
    return None


def versions(args):
    # another build (--revision): the tree says nothing of it
    commit = args.revision or report.commit(ROOT)
    zlib = report.output(["dpkg-query", "-W", "-f", "${Version}",
                          "zlib1g"])
    return commit, report.output(["openssl", "version"]), zlib


def render(args, comparison, rows, results, problems):
    commit, openssl, zlib = versions(args)
    names = [v[0] for v in comparison["variants"]]
    ratios = comparison["ratios"]
    out = []
    w = out.append

    def median(row, variant, key):
        return report.median(results.get((row, variant), []), key)

    w(f"# moonsocket: {comparison['title']}\n")
    w(report.date_line(args.elapsed))
    w(report.machine_line())
    w(f"- commit: {commit}; server binary {args.server} "
      f"(sha256 {args.server_sha}); {openssl}; zlib {zlib}")
    w(f"- server (`bench/apps/{comparison['app']}`) pinned to CPU 0, "
      f"loadgen to CPU 1{report.not_pinned(run_peers.PIN)}")
    w(f"- each figure is the median of {args.repeat} runs without errors, "
      f"each {args.duration:g} s measured after {args.warmup:g} s of "
      f"warm-up; RSS with {args.rss_conns} connections; the variants run "
      "one after the other on one process, their order rotating per run")
    w(report.quiet_line(args))
    w(report.command_line(args))
    tls, ext = first(results, "tls"), None
    if tls:
        w(f"- negotiated: {tls.replace(',', ' ')}")
    for n in names:
        e = first({k: v for k, v in results.items() if k[1] == n},
                  "deflate")
        if e:
            ext = True
            w(f"- {n}: `Sec-WebSocket-Extensions: "
              f"{e.replace(';', '; ')}`")
    for note in comparison["notes"]:
        w(f"- {note}")
    w("")

    def figures(row):
        test = row.split()[0]
        keys = list(FIGURES[test])
        if ext and test == "echo":
            keys.append(("wire_ratio_received", "wire / payload"))
        return keys

    w("## Medians and ratios\n")
    w("Ratios above 1 mean more of the figure; for µs, bytes and wire "
      "size less is better.  *server CPU µs* is the server's CPU time "
      "over the window divided by the echoes or handshakes done: where "
      "loadgen is the limit (its CPU near 100% below), it is the fairer "
      "comparison.\n")
    out += table_head(names + [r[0] for r in ratios])
    for row, argv in rows:
        for key, unit in figures(row):
            meds = {n: median(row, n, key) for n in names}
            cells = [fmt(meds[n], key) for n in names]
            cells += [report.ratio(meds[a], meds[b]) for _, a, b in ratios]
            w(table_row(f"{row} ({unit})", cells))
    w("")

    w("## CPU use beside each figure\n")
    w("Server / loadgen / rest of the machine, percent of one core over "
      "the measured window (medians).  Loadgen near 100% means the "
      "figure is its limit, not the server's; a large third figure means "
      "other work shared the two CPUs.  For RSS rows: while the "
      "connections opened.\n")
    out += table_head(names)
    for row, argv in rows:
        w(table_row(row, [report.cpu(results.get((row, n), []))
                          for n in names]))
    w("")

    w("## Every run\n")
    w("The figure of each run, in order (the first of the row's "
      "figures).\n")
    out += table_head(names, align="---")
    for row, argv in rows:
        key = figures(row)[0][0]
        cells = [", ".join(report.run_figure(kv, key)
                           for kv in results.get((row, n), [])) or DASH
                 for n in names]
        w(table_row(f"{row} ({key})", cells))
    w(report.EVERY_RUN_NOTE)

    out += report.problems_section(
        problems, "None: every connection opened, every echo matched, "
        "every close handshake completed.")
    return "\n".join(out)

# ----------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("which", choices=sorted(COMPARISONS))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--rss-conns", type=int, default=2000)
    ap.add_argument("--rss-timeout", type=float, default=120)
    ap.add_argument("--handshake-parallel", type=int, default=8)
    ap.add_argument("--budget", type=float, default=330,
                    help="seconds: no new measurement starts after this")
    ap.add_argument("--quiet-threshold", type=float, default=30)
    ap.add_argument("--quiet-wait", type=float, default=3)
    ap.add_argument("--quick", action="store_true",
                    help="one run of 1 s per measurement")
    ap.add_argument("--results", help="write the report here (markdown)")
    ap.add_argument("--raw", help="append every result as JSON lines")
    ap.add_argument("--server", default=run_peers.SERVER_BIN,
                    help="the moonsocket runner (build/moonsocket)")
    ap.add_argument("--lua-dir", default=os.path.join(ROOT, "lua"),
                    help="moonsocket's Lua modules (lua/)")
    ap.add_argument("--revision",
                    help="what to write as the commit (git describe)")
    args = ap.parse_args()
    if args.quick:
        args.repeat, args.duration, args.warmup = 1, 1.0, 0.3
        args.quiet_wait = 2
    args.command = " ".join(["bench/compare.py"] + sys.argv[1:])
    args.server = os.path.abspath(args.server)
    args.lua_path = (f"{args.lua_dir}/?.lua;{args.lua_dir}/?/init.lua;;")
    run_peers.PIN = shutil.which("taskset") is not None and \
        (os.cpu_count() or 1) >= 2
    if not os.access(LOADGEN, os.X_OK):
        sys.exit("compare: build bench/loadgen first (make -C bench "
                 "loadgen)")
    if not os.access(args.server, os.X_OK):
        sys.exit(f"compare: {args.server} is not built (make build)")
    # SIGTERM unwinds like ^C, so that the server is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # A copy, so that a rebuild during the run changes nothing
    with tempfile.TemporaryDirectory(prefix="bench-compare-bin-") as d:
        args.server_copy = os.path.join(d, "moonsocket")
        shutil.copy2(args.server, args.server_copy)
        with open(args.server_copy, "rb") as f:
            args.server_sha = hashlib.sha256(f.read()).hexdigest()[:12]
        comparison = COMPARISONS[args.which]
        rows, results, problems = run(args, comparison)
    report = render(args, comparison, rows, results, problems)
    print(report)
    if args.results:
        with open(args.results, "w") as f:
            f.write(report)
        print(f"compare: wrote {args.results}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
