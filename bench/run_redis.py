#!/usr/bin/python3
"""run_redis.py - a WebSocket handler doing one Redis GET per message,
moonsocket against nginx + lua-resty-websocket, the same lua-redis on
both (moonsocket.socket and ngx.socket.tcp), into results-redis.md.

    run_redis.py [--repeat 3] [--duration 3] [--patterns pool,conn]
                 [--depths 1,16] [--results FILE] [--raw FILE]

Every message is the key (loadgen's "repeat" payload: S bytes of "a",
text frames) and Redis holds that key with the same bytes as its value,
so loadgen's check of every echo checks every answer.  The servers are
pinned to CPU 0 and loadgen to CPU 1 (as in run_peers.py); redis-server
shares CPU 1 with loadgen, so the server's core does only the server's
work (the report gives each side's CPU: when CPU 1 is near 100% the
figure is its limit, not the server's).  Each repeat starts both
servers afresh and measures them one after the other for each row, the
order rotating, so that the machine's background load falls on both.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402
import run_peers  # noqa: E402
from report import median  # noqa: E402

BENCH = run_peers.BENCH
ROOT = run_peers.ROOT
REDIS_CPU = 1          # beside loadgen: the server's core stays its own
LUA_REDIS_53 = "/usr/share/lua/5.3/redis.lua"
LUA_REDIS_51 = "/usr/share/lua/5.1/redis.lua"

PATTERNS = {
    "pool": "a connection from the keep-alive pool per message "
            "(connect, GET, setkeepalive)",
    "conn": "one Redis connection per WebSocket",
}

# ----------------------------------------------------------------------
# The servers: entries of run_peers.SERVERS, so that run_peers.Server
# starts, pins and stops them
# ----------------------------------------------------------------------


def moonsocket_cmd(redis_port, pattern):
    def make(port, tmp):
        return ([run_peers.SERVER_BIN,
                 os.path.join(BENCH, "apps", "redis_get.lua")],
                {"LUA_PATH": run_peers.LUA_PATH, "PORT": str(port),
                 "REDIS_PORT": str(redis_port), "PATTERN": pattern})
    return make


def nginx_cmd(redis_port, pattern):
    def make(port, tmp):
        with open(os.path.join(BENCH, "peers", "nginx_redis.conf")) as f:
            conf = (f.read().replace("@PREFIX@", tmp)
                    .replace("@PORT@", str(port))
                    .replace("@REDIS_PORT@", str(redis_port))
                    .replace("@PATTERN@", pattern))
        with open(os.path.join(tmp, "nginx.conf"), "w") as f:
            f.write(conf)
        return (["nginx", "-p", tmp, "-c", os.path.join(tmp, "nginx.conf"),
                 "-e", os.path.join(tmp, "error.log")], {})
    return make


def missing_lua_redis(path):
    def check():
        return None if os.path.exists(path) else \
            f"lua-redis is not installed ({path}; make -C bench deps)"
    return check


def first(*checks):
    def check():
        for c in checks:
            why = c()
            if why:
                return why
        return None
    return check


def register(redis_port, pattern):
    """The two servers of a pattern, named as in the report."""
    names = (f"moonsocket-{pattern}", f"nginx-lua-{pattern}")
    run_peers.SERVERS[names[0]] = (
        moonsocket_cmd(redis_port, pattern),
        first(run_peers.missing_moonsocket, missing_lua_redis(LUA_REDIS_53)))
    run_peers.SERVERS[names[1]] = (
        nginx_cmd(redis_port, pattern),
        first(run_peers.missing_nginx, missing_lua_redis(LUA_REDIS_51)))
    return names

# ----------------------------------------------------------------------
# Redis
# ----------------------------------------------------------------------


class Redis:
    """redis-server on a free port, no persistence, pinned to REDIS_CPU,
    holding the key with itself as its value."""

    def __init__(self, key):
        self.port = run_peers.free_port()
        argv = ["redis-server", "--port", str(self.port), "--bind",
                "127.0.0.1", "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--loglevel", "warning",
                "--maxclients", "10000"]
        self.proc = subprocess.Popen(run_peers.pinned(REDIS_CPU, argv),
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            p = subprocess.run(["redis-cli", "-p", str(self.port), "SET",
                                key, key], capture_output=True, text=True)
            if p.stdout.strip() == "OK":
                break
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / \
            os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

# ----------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------


def missing_redis():
    for prog in ("redis-server", "redis-cli"):
        if not shutil.which(prog):
            return f"{prog} is not installed (make -C bench deps)"
    return None


def run(args):
    why = missing_redis()
    if why:
        sys.exit(f"run_redis: {why}")
    key = "a" * args.size
    redis = Redis(key)
    patterns = [p for p in args.patterns.split(",") if p]
    for p in patterns:
        if p not in PATTERNS:
            sys.exit(f"run_redis: unknown pattern {p}; "
                     f"known: {', '.join(PATTERNS)}")
    depths = [int(d) for d in args.depths.split(",")]
    servers, skipped = [], {}
    for p in patterns:
        for name in register(redis.port, p):
            why = run_peers.SERVERS[name][1]()
            if why:
                skipped[name] = why
                print(f"run_redis: skipping {name}: {why}",
                      file=sys.stderr)
            else:
                servers.append(name)
    results, problems = {}, []
    raw = open(args.raw, "a") if args.raw else None
    started = time.monotonic()
    waited = 0.0
    try:
        for rep in range(args.repeat):
            for p in patterns:
                names = [n for n in servers if n.endswith("-" + p)]
                running = []
                try:
                    for name in names:
                        s = run_peers.Server(name)
                        try:
                            s.wait_ready(20)
                            running.append(s)
                        except RuntimeError as e:
                            problems.append(f"{name}, run {rep + 1}: {e}")
                            s.stop()
                    k = rep % max(len(running), 1)
                    order = running[k:] + running[:k]
                    for d in depths:
                        row = (f"{p}, C={args.conns} D={d} S={args.size}")
                        waited += run_peers.wait_quiet(args.quiet_threshold,
                                                       args.quiet_wait)
                        print(f"== run {rep + 1} of {args.repeat}: {row}",
                              file=sys.stderr, flush=True)
                        for s in order:
                            kv = measure(args, redis, s, d, rep, row,
                                         problems)
                            if kv is None:
                                continue
                            kv["run"] = rep + 1
                            results.setdefault((s.name, d), []).append(kv)
                            if raw:
                                raw.write(json.dumps(
                                    {"server": s.name, "depth": d,
                                     "run": rep + 1, **kv}) + "\n")
                finally:
                    for s in running:
                        rc = s.stop()
                        if rc not in (0, -signal.SIGTERM):
                            problems.append(f"{s.name}: exited with {rc} "
                                            f"on SIGTERM: {s.tail[-300:]}")
    finally:
        redis.stop()
        if raw:
            raw.close()
    args.waited = waited
    text = render(args, patterns, depths, servers, skipped, results,
                  problems, time.monotonic() - started)
    print(text)
    if args.results:
        with open(args.results, "w") as f:
            f.write(text)
        print(f"run_redis: wrote {args.results}", file=sys.stderr)
    return 1 if problems or not results else 0


def measure(args, redis, server, depth, rep, row, problems):
    argv = ["echo", "-c", str(args.conns), "-d", str(depth), "-s",
            str(args.size), "-k", "repeat", "-x", "-w", str(args.warmup),
            "-T", str(args.duration)]
    limit = args.warmup + args.duration + 60
    r0, t0 = redis.cpu_seconds(), time.monotonic()
    kv, err = run_peers.loadgen(server, server.name,
                                argv + ["-t", str(limit)], limit + 20)
    # Redis's CPU over the whole loadgen run (the window and the
    # warm-up, whose rates are alike), in percent of one core
    kv_redis = 100 * (redis.cpu_seconds() - r0) / (time.monotonic() - t0)
    if kv is None:
        problems.append(f"{server.name}, {row}, run {rep + 1}: {err}")
        print(f"   {server.name}: FAILED: {err}", file=sys.stderr)
        return None
    kv["redis_cpu"] = kv_redis
    if kv.get("server_cpu", -1) >= 0 and kv.get("msgs_per_s"):
        kv["server_us_per_msg"] = \
            1e4 * kv["server_cpu"] / kv["msgs_per_s"]
    if kv.get("errors", 0):
        problems.append(f"{server.name}, {row}, run {rep + 1}: "
                        f"{int(kv['errors'])} errors: {err}")
    print(f"   {server.name}: {run_peers.headline(kv)} redis "
          f"{kv_redis:.0f}%", file=sys.stderr, flush=True)
    return kv

# ----------------------------------------------------------------------
# results-redis.md
# ----------------------------------------------------------------------


def cell(kvs, key, digits=0):
    v = median(kvs, key) if kvs else None
    return report.DASH if v is None else f"{v:,.{digits}f}"


def render(args, patterns, depths, servers, skipped, results, problems,
           elapsed):
    out = ["# One Redis GET per WebSocket message: moonsocket and "
           "nginx + lua-resty-websocket", ""]
    out.append("Written by `bench/run_redis.py` (`make -C bench redis`). "
               "Each message (16 bytes of `a`, a text frame) is a key; "
               "the handler answers with its value from one `GET` "
               "through Debian's lua-redis (redis-lua 2.0.5), on "
               "`moonsocket.socket` in moonsocket "
               "(`bench/apps/redis_get.lua`) and on `ngx.socket.tcp` in "
               "nginx (`bench/peers/nginx_redis.conf`); the value is the "
               "key, so loadgen checks every answer.  Medians of "
               f"{args.repeat} runs of {args.duration:g} s (after "
               f"{args.warmup:g} s of warm-up), the servers measured in "
               "turn within each run.")
    out.append("")
    out.append(report.date_line(elapsed))
    out.append(report.machine_line())
    out.append("- pinning: each server on CPU 0; loadgen and redis-server "
               "on CPU 1" + report.not_pinned(run_peers.PIN))
    out.append(f"- moonsocket: {report.commit(ROOT)}")
    nginx = subprocess.run(["nginx", "-v"], capture_output=True,
                           text=True).stderr.strip().split("/")[-1] \
        if shutil.which("nginx") else "?"
    out.append("- nginx " + nginx +
               ", lua-nginx-websocket " + report.output(
                   ["dpkg-query", "-W", "-f", "${Version}",
                    "lua-nginx-websocket"]) +
               ", lua-redis " + report.output(
                   ["dpkg-query", "-W", "-f", "${Version}", "lua-redis"]) +
               ", redis-server " + report.output(
                   ["dpkg-query", "-W", "-f", "${Version}",
                    "redis-server"]))
    out.append(report.quiet_line(args))
    out.append(report.command_line(args))
    out.append("")
    out.append("| pattern | C x D | moonsocket msg/s | nginx msg/s | "
               "ratio | ratio of each run | server CPU µs/msg: "
               "moonsocket, nginx | CPU % moonsocket: server / loadgen / "
               "redis / others (redis included) | CPU % nginx: the same |")
    out.append("| --- | --- | ---: | ---: | ---: | --- | ---: | --- | --- |")
    for p in patterns:
        for d in depths:
            m = results.get((f"moonsocket-{p}", d), [])
            n = results.get((f"nginx-lua-{p}", d), [])
            mv, nv = median(m, "msgs_per_s"), median(n, "msgs_per_s")
            out.append(f"| {p} | {args.conns} x {d} | "
                       f"{cell(m, 'msgs_per_s')} | {cell(n, 'msgs_per_s')} "
                       f"| {report.ratio(mv, nv)} | {paired(m, n)} | "
                       f"{cell(m, 'server_us_per_msg', 1)}, "
                       f"{cell(n, 'server_us_per_msg', 1)} | "
                       f"{cpus(m)} | {cpus(n)} |")
    out.append("")
    out.append("Patterns: " + "; ".join(f"`{p}`: {PATTERNS[p]}"
                                        for p in patterns) + ".")
    out.append("")
    out.append("*ratio* is moonsocket's median over nginx's; *ratio of each "
               "run* the same within each run, where the two were measured "
               "one after the other.  The server's CPU time per message "
               "(its CPU over the window divided by the messages) moves "
               "least with the machine's other load: a server that gets "
               "less of its core answers fewer messages at much the same "
               "cost each.")
    out.append("")
    out.append("## Every run (msg/s)")
    out.append("")
    for p in patterns:
        for d in depths:
            for prefix in ("moonsocket", "nginx-lua"):
                kvs = results.get((f"{prefix}-{p}", d), [])
                runs = ", ".join(report.run_figure(kv, "msgs_per_s")
                                 for kv in kvs) or report.DASH
                out.append(f"- {prefix}, {p}, {args.conns} x {d}: {runs}")
    out.append(report.EVERY_RUN_NOTE)
    if skipped:
        out.append("## Skipped")
        out.append("")
        for name, why in skipped.items():
            out.append(f"- {name}: {why}")
        out.append("")
    out += report.problems_section(problems, "None: every answer was "
                                   "checked and correct.")
    return "\n".join(out) + "\n"


def paired(m, n):
    """moonsocket / nginx within each run (measured one after the other,
    so under much the same background load), runs with errors left
    out."""
    by_run = {kv["run"]: kv for kv in n if not kv.get("errors")}
    ratios = [kv["msgs_per_s"] / by_run[kv["run"]]["msgs_per_s"]
              for kv in m if not kv.get("errors") and kv["run"] in by_run
              and by_run[kv["run"]]["msgs_per_s"]]
    return ", ".join(f"{r:.2f}" for r in ratios) or report.DASH


def cpus(kvs):
    if not kvs:
        return report.DASH
    return " / ".join(cell(kvs, k) for k in
                      ("server_cpu", "client_cpu", "redis_cpu", "other_cpu"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--duration", type=float, default=3)
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--depths", default="1,16",
                    help="messages in flight per WebSocket, a list")
    ap.add_argument("--size", type=int, default=16,
                    help="bytes of the key (and of its value)")
    ap.add_argument("--patterns", default="pool,conn")
    ap.add_argument("--quiet-threshold", type=float, default=30)
    ap.add_argument("--quiet-wait", type=float, default=3)
    ap.add_argument("--quick", action="store_true",
                    help="one run of 1 s per measurement")
    ap.add_argument("--results", help="write the report here (markdown)")
    ap.add_argument("--raw", help="append every key=value result as JSON")
    args = ap.parse_args()
    if args.quick:
        args.repeat, args.duration, args.warmup = 1, 1.0, 0.3
    args.command = " ".join(["bench/run_redis.py"] + sys.argv[1:])
    run_peers.PIN = shutil.which("taskset") is not None and \
        (os.cpu_count() or 1) >= 2
    if not os.access(run_peers.LOADGEN, os.X_OK):
        sys.exit("run_redis: build bench/loadgen first (make -C bench "
                 "loadgen)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
