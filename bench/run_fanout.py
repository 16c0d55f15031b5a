#!/usr/bin/python3
"""run_fanout.py - one publisher to many subscribers through moonsocket's
topics (apps/fanout.lua, loadgen fanout), in each configuration of the
server; the medians of the repeats go to results-fanout.md.

    run_fanout.py [--repeat N] [--duration S] [--quick] [--results FILE]
                  [--workers auto|N] [--redis] [--subscribers C]
                  [--depths 1,16] [--sizes 16,1024] [--server BIN]

The configurations: "1 worker" always; with --workers W also "workers =
W" (env WORKERS=W: app:listen{ workers = W }); with --redis also "Redis
backplane" (a redis-server started on a free port, env REDIS_URL: the
app calls app:use_backplane{ redis = REDIS_URL }; with WORKERS too when
--workers is given).  A configuration is one entry of configurations()
below: its name, the server's environment, whether the server is pinned,
and what else must run beside it.  The single worker is pinned to CPU 0
and loadgen to CPU 1; several workers are not pinned (they would share
one CPU), and loadgen still is.
"""
import argparse
import hashlib
import json
import os
import resource
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

APP = "fanout.lua"
MAX_PIDS = 8                   # loadgen --pid takes at most this many

# ----------------------------------------------------------------------
# Configurations and rows
# ----------------------------------------------------------------------


class Config:
    """name: the report's column; env: the server's variables beyond
    LUA_PATH and PORT; pin: pin the server to CPU 0; redis: start a
    redis-server first and pass its address as REDIS_URL."""

    def __init__(self, name, env=None, pin=True, redis=False):
        self.name, self.env, self.pin, self.redis = \
            name, env or {}, pin, redis


def configurations(args):
    configs = [Config("1 worker")]
    workers = {"WORKERS": args.workers} if args.workers else {}
    multi = args.workers not in (None, "1")
    if args.workers:
        configs.append(Config(f"workers = {args.workers}", workers,
                              pin=not multi))
    if args.redis:
        name = "Redis backplane" + \
            (f", workers = {args.workers}" if args.workers else "")
        configs.append(Config(name, workers, pin=not multi, redis=True))
    return configs


def rows(args):
    """(name, loadgen arguments) for each depth and size."""
    out = []
    for size in args.sizes:
        for depth in args.depths:
            out.append((f"C={args.subscribers} D={depth} S={size}",
                        ["fanout", "-c", str(args.subscribers),
                         "-d", str(depth), "-s", str(size)]))
    return out

# ----------------------------------------------------------------------
# The server and what runs beside it
# ----------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds, proc, what):
    deadline = time.monotonic() + seconds
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen in {seconds} s")
            time.sleep(0.05)


def stop_process(proc, seconds=10):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class Redis:
    """A throw-away redis-server on a free port, without persistence."""

    def __init__(self, tmp):
        if not shutil.which("redis-server"):
            raise RuntimeError("redis-server is not installed")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.log = open(os.path.join(tmp, "redis.log"), "w")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind",
             "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=tmp, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_port(self.port, 10, self.proc, "redis-server")
        except RuntimeError:
            self.stop()
            raise

    def stop(self):
        stop_process(self.proc)
        self.log.close()


def children(pid):
    """The processes whose parent is pid (a master's workers)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the command may hold spaces and parentheses: after the last ')'
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry))
    return sorted(out)


class Server:
    """moonsocket on apps/fanout.lua in one configuration."""

    def __init__(self, args, config):
        self.tmp = tempfile.mkdtemp(prefix="bench-fanout-")
        self.redis = Redis(self.tmp) if config.redis else None
        self.port = free_port()
        env = dict(os.environ)
        for name in ("WORKERS", "REDIS_URL"):   # only what config says
            env.pop(name, None)
        env.update({"LUA_PATH": args.lua_path, "PORT": str(self.port),
                    **config.env})
        if self.redis:
            env["REDIS_URL"] = self.redis.url
        self.log = open(os.path.join(self.tmp, "stderr.log"), "w+")
        argv = [args.server_copy, os.path.join(BENCH, "apps", APP)]
        if config.pin:
            argv = run_peers.pinned(0, argv)
        self.proc = subprocess.Popen(argv, env=env, cwd=self.tmp,
                                     stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.pid = self.proc.pid      # taskset execs: the same process
        self.pids = [self.pid]

    def wait_ready(self, seconds):
        try:
            wait_port(self.port, seconds, self.proc, "the server")
        except RuntimeError as e:
            raise RuntimeError(f"{e}: {self.output()[-300:]}")
        time.sleep(0.3)               # workers, if any, have forked
        self.pids = ([self.pid] + children(self.pid))[:MAX_PIDS]

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-2000:]

    def stop(self):
        """The exit status; a clean one is 0 or -SIGTERM."""
        rc = stop_process(self.proc)
        self.tail = self.output()
        self.log.close()
        if self.redis:
            self.redis.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return rc


def run_loadgen(server, label, argv, timeout):
    cmd = run_peers.pinned(1, [LOADGEN, "-P", str(server.port), "-p",
                               ",".join(map(str, server.pids)), "-l",
                               label, "-q"] + argv)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "loadgen exceeded its time limit"
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("test=")]
    if not lines:
        return None, (p.stderr.strip() or f"exit {p.returncode}")[-500:]
    kv = parse_kv(lines[-1])
    # CPU time per delivery, µs, of each side: which one is the limit
    rate = kv.get("deliveries_per_s")
    for side in ("server", "client"):
        if rate and kv.get(f"{side}_cpu", -1) >= 0:
            kv[f"{side}_us"] = kv[f"{side}_cpu"] * 1e4 / rate
    return kv, p.stderr.strip()[-500:]


def headline(kv):
    err = f" errors={int(kv['errors'])}" if kv.get("errors") else ""
    return (f"{kv['deliveries_per_s']:,.0f} deliveries/s "
            f"({kv['publishes_per_s']:,.1f} publishes/s; CPU: server "
            f"{kv['server_cpu']:.0f}%, loadgen {kv['client_cpu']:.0f}%, "
            f"others {kv['other_cpu']:.0f}%){err}")

# ----------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------


def run(args, configs, matrix):
    results = {}                    # (row, config) -> [kv, ...]
    problems = []
    started = time.monotonic()
    raw = open(args.raw, "a") if args.raw else None
    waited = 0.0
    timing = ["-w", str(args.warmup), "-T", str(args.duration)]
    limit = args.warmup + args.duration + 120

    def measure(server, row, argv, config, rep):
        kv, err = run_loadgen(server, config.name,
                              argv + timing + ["-t", str(limit)],
                              limit + 20)
        if kv is None:
            problems.append(f"{row}, {config.name}, run {rep + 1}: {err}")
            print(f"   {config.name}: FAILED: {err}", file=sys.stderr)
            return
        if kv.get("errors", 0):
            problems.append(f"{row}, {config.name}, run {rep + 1}: "
                            f"{int(kv['errors'])} errors: {err}")
        results.setdefault((row, config.name), []).append(kv)
        if raw:
            raw.write(json.dumps({"row": row, "config": config.name,
                                  "run": rep + 1, **kv}) + "\n")
        print(f"   {config.name}: {headline(kv)}", file=sys.stderr,
              flush=True)

    for rep in range(args.repeat):
        # the configurations' order rotates per repeat, so that the
        # machine's changing load falls on each alike
        k = rep % len(configs)
        for config in configs[k:] + configs[:k]:
            if time.monotonic() - started > args.budget:
                problems.append(f"stopped at the budget of "
                                f"{args.budget:.0f} s before "
                                f"{config.name}, run {rep + 1}")
                break
            try:
                server = Server(args, config)
            except RuntimeError as e:
                problems.append(f"{config.name}, run {rep + 1}: {e}")
                print(f"run_fanout: {e}", file=sys.stderr)
                continue
            try:
                server.wait_ready(20)
                for row, argv in matrix:
                    waited += wait_quiet(args.quiet_threshold,
                                         args.quiet_wait)
                    print(f"== run {rep + 1} of {args.repeat}: {row}",
                          file=sys.stderr, flush=True)
                    measure(server, row, argv, config, rep)
            except RuntimeError as e:
                problems.append(f"{config.name}, run {rep + 1}: {e}")
                print(f"run_fanout: {e}", file=sys.stderr)
            finally:
                rc = server.stop()
                if rc not in (0, -signal.SIGTERM):
                    problems.append(f"{config.name}: the server exited "
                                    f"with {rc} on SIGTERM: "
                                    f"{server.tail[-300:]}")
    if raw:
        raw.close()
    args.elapsed = time.monotonic() - started
    args.waited = waited
    return results, problems

# ----------------------------------------------------------------------
# results-fanout.md
# ----------------------------------------------------------------------

# What the tables show: (key, unit)
FIGURES = [("deliveries_per_s", "deliveries/s"),
           ("publishes_per_s", "publishes/s"),
           ("mb_per_s", "MB/s delivered"),
           ("p50_us", "µs p50, publish to delivery"),
           ("p99_us", "µs p99, publish to delivery")]


def render(args, configs, matrix, results, problems):
    names = [c.name for c in configs]
    base = names[0]
    out = []
    w = out.append

    def median(row, config, key):
        return report.median(results.get((row, config), []), key)

    w("# moonsocket: fan-out through topics\n")
    w(report.date_line(args.elapsed))
    w(report.machine_line())
    w(f"- commit: {report.commit(ROOT)}; server binary {args.server} "
      f"(sha256 {args.server_sha})")
    w(f"- `bench/apps/{APP}`: one worker pinned to CPU 0, loadgen to CPU "
      f"1{report.not_pinned(run_peers.PIN)}; several workers are not "
      "pinned (they share both CPUs with loadgen)")
    w(f"- each figure is the median of {args.repeat} runs without errors, "
      f"each {args.duration:g} s measured after {args.warmup:g} s of "
      "warm-up, on a fresh server per configuration and run (the "
      "configurations' order rotating per run)")
    w(report.quiet_line(args))
    w(report.command_line(args))
    w(f"- the test: {args.subscribers} subscribers of one topic and one "
      "publisher connection (`loadgen fanout`); the app publishes each "
      "message the publisher sends with `ws:publish`; D is the number of "
      "publishes in flight: the next is sent when the oldest has reached "
      "every subscriber.  Payloads: binary, a sequence number then "
      "random bytes; every delivery is checked byte for byte, and each "
      "subscriber must receive every publish once and in order")
    w("- *deliveries/s*: messages received by subscribers per second; "
      "*publishes/s*: publishes that reached every subscriber per "
      "second; latency: from queueing the publish to a subscriber "
      "having checked it, over every delivery")
    w("")

    w("## Medians\n")
    ratios = len(names) > 1
    head = names + ([f"{n} / {base}" for n in names[1:]] if ratios else [])
    out += table_head(head)
    for row, _ in matrix:
        for key, unit in FIGURES:
            meds = {n: median(row, n, key) for n in names}
            cells = [fmt(meds[n], key) for n in names]
            if ratios:
                cells += [report.ratio(meds[n], meds[base])
                          for n in names[1:]]
            w(table_row(f"{row} ({unit})", cells))
    w("")

    w("## CPU use beside each figure\n")
    w("Server / loadgen / rest of the machine, percent of one core over "
      "the measured window (medians; the server's is the sum of its "
      "processes), then each side's CPU µs per delivery.  A side near "
      "100% is the limit; a large third figure means the kernel's "
      "loopback work or others' load shared the CPUs.\n")
    out += table_head(names)
    for row, _ in matrix:
        cells = []
        for n in names:
            cell = report.cpu(results.get((row, n), []))
            if cell != DASH:
                cell += (f"; {fmt(median(row, n, 'server_us'), 'server_us')}"
                         f" / {fmt(median(row, n, 'client_us'), 'client_us')}"
                         " µs")
            cells.append(cell)
        w(table_row(row, cells))
    w("")

    w("## Every run\n")
    w("Deliveries/s of each run, in order, with the rest of the "
      "machine's CPU in that run: the runs others disturbed least are "
      "those with the smallest.\n")
    out += table_head(names, align="---")
    for row, _ in matrix:
        cells = [", ".join(report.run_figure(kv, "deliveries_per_s")
                           + f" ({kv.get('other_cpu', -1):.0f}%)"
                           for kv in results.get((row, n), [])) or DASH
                 for n in names]
        w(table_row(row, cells))
    w(report.EVERY_RUN_NOTE)

    out += report.problems_section(
        problems, "None: every subscriber subscribed, every publish "
        "reached every subscriber once and in order, every close "
        "handshake completed.")
    return "\n".join(out)

# ----------------------------------------------------------------------


def int_list(s):
    return [int(x) for x in s.split(",") if x.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--subscribers", type=int, default=10000)
    ap.add_argument("--depths", type=int_list, default=[1, 16],
                    help="publishes in flight, a comma list (1,16)")
    ap.add_argument("--sizes", type=int_list, default=[16, 1024],
                    help="message bytes, a comma list (16,1024)")
    ap.add_argument("--workers", help="also with WORKERS set to this "
                    "(auto, or a number)")
    ap.add_argument("--redis", action="store_true",
                    help="also through the Redis backplane (starts a "
                    "redis-server)")
    ap.add_argument("--budget", type=float, default=900,
                    help="seconds: no new configuration starts after this")
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
    args = ap.parse_args()
    if args.quick:
        args.repeat, args.duration, args.warmup = 1, 1.0, 0.5
        args.quiet_wait = 2
    args.command = " ".join(["bench/run_fanout.py"] + sys.argv[1:])
    args.server = os.path.abspath(args.server)
    args.lua_path = f"{args.lua_dir}/?.lua;{args.lua_dir}/?/init.lua;;"
    run_peers.PIN = shutil.which("taskset") is not None and \
        (os.cpu_count() or 1) >= 2
    if not os.access(LOADGEN, os.X_OK):
        sys.exit("run_fanout: build bench/loadgen first (make -C bench "
                 "loadgen)")
    if not os.access(args.server, os.X_OK):
        sys.exit(f"run_fanout: {args.server} is not built (make build)")
    # every subscriber is a socket on each side: the server and loadgen
    # inherit the hard limit
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < args.subscribers + 100:
        print(f"run_fanout: RLIMIT_NOFILE is {hard}: expect errors with "
              f"{args.subscribers} subscribers", file=sys.stderr)
    # SIGTERM unwinds like ^C, so that the servers are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    configs = configurations(args)
    matrix = rows(args)
    # a copy, so that a rebuild during the run changes nothing
    with tempfile.TemporaryDirectory(prefix="bench-fanout-bin-") as d:
        args.server_copy = os.path.join(d, "moonsocket")
        shutil.copy2(args.server, args.server_copy)
        with open(args.server_copy, "rb") as f:
            args.server_sha = hashlib.sha256(f.read()).hexdigest()[:12]
        results, problems = run(args, configs, matrix)
    report = render(args, configs, matrix, results, problems)
    print(report)
    if args.results:
        with open(args.results, "w") as f:
            f.write(report)
        print(f"run_fanout: wrote {args.results}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
