#!/usr/bin/python3
"""run_peers.py - runs loadgen's matrix against moonsocket and its peers,
each server pinned to CPU 0 and the load generator to CPU 1, and reports
the median of the repeats as ratios to Node's ws (results.md).

    run_peers.py [--servers a,b] [--repeat N] [--duration S] [--quick]
                 [--results FILE] [--budget S]
    run_peers.py --callgrind    instructions per echo inside moonsocket

Each repeat starts every server afresh and measures its RSS first; then
each row of the matrix runs against the servers one after the other.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import report
from report import median, table_head, table_row

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
LOADGEN = os.path.join(BENCH, "loadgen")
SERVER_BIN = os.path.join(ROOT, "build", "moonsocket")
LUA_PATH = f"{ROOT}/lua/?.lua;{ROOT}/lua/?/init.lua;;"
PYTHON = "/usr/bin/python3"    # Debian's, which has python3-websockets
BASELINE = "ws"                # the ratios' denominator, when it ran

# ----------------------------------------------------------------------
# The servers
# ----------------------------------------------------------------------


def moonsocket_cmd(app):
    def make(port, tmp):
        return ([SERVER_BIN, os.path.join(BENCH, "apps", app)],
                {"LUA_PATH": LUA_PATH, "PORT": str(port)})
    return make


def nginx_cmd(port, tmp):
    with open(os.path.join(BENCH, "peers", "nginx.conf")) as f:
        conf = f.read().replace("@PREFIX@", tmp).replace("@PORT@", str(port))
    with open(os.path.join(tmp, "nginx.conf"), "w") as f:
        f.write(conf)
    return (["nginx", "-p", tmp, "-c", os.path.join(tmp, "nginx.conf"),
             "-e", os.path.join(tmp, "error.log")], {})


def node_cmd(port, tmp):
    return (["node", os.path.join(BENCH, "peers", "ws_echo.js")],
            {"PORT": str(port)})


def websockets_cmd(port, tmp):
    return ([PYTHON, os.path.join(BENCH, "peers", "websockets_echo.py")],
            {"PORT": str(port)})


def missing_nginx():
    if not shutil.which("nginx"):
        return "nginx is not installed (make -C bench deps)"
    if not os.path.exists("/usr/lib/nginx/modules/ngx_http_lua_module.so"):
        return "libnginx-mod-http-lua is not installed"
    if not os.path.exists("/usr/share/lua/5.1/nginx/websocket/server.lua"):
        return "lua-nginx-websocket is not installed"
    return None


def missing_node():
    if not shutil.which("node"):
        return "node is not on PATH"
    if not os.path.isdir(os.path.join(BENCH, "node_modules", "ws")):
        return "bench/node_modules/ws is missing (make -C bench deps)"
    return None


def missing_websockets():
    rc = subprocess.run([PYTHON, "-c", "import websockets"],
                        capture_output=True).returncode
    return None if rc == 0 else "python3-websockets is not installed"


def uws_cmd(port, tmp):
    return ([os.environ["UWS_ECHO"], str(port)], {})


def missing_uws():
    path = os.environ.get("UWS_ECHO")
    if not path:
        return ("UWS_ECHO is not set: build uWebSockets' EchoServer with "
                "bench/build_uws.sh and set UWS_ECHO=/path/to/it")
    if not os.access(path, os.X_OK):
        return f"UWS_ECHO={path} is not an executable file"
    return None


def missing_moonsocket():
    return None if os.access(SERVER_BIN, os.X_OK) else \
        "build/moonsocket is not built (make build)"


SERVERS = {
    "moonsocket": (moonsocket_cmd("echo.lua"), missing_moonsocket),
    "moonsocket-coroutine": (moonsocket_cmd("echo_coroutine.lua"),
                             missing_moonsocket),
    "nginx-lua": (nginx_cmd, missing_nginx),
    "ws": (node_cmd, missing_node),
    "websockets": (websockets_cmd, missing_websockets),
    # optional: uWebSockets' examples/EchoServer.cpp, built outside the
    # repository by build_uws.sh, when UWS_ECHO names it
    "uWebSockets": (uws_cmd, missing_uws),
}

# ----------------------------------------------------------------------
# The matrix: (name, loadgen arguments).  Adversarial payloads are 16
# bytes (two equal 8-byte halves), so they go with the 16-byte rows.
# ----------------------------------------------------------------------

ECHO_SHAPES = [(100, 1, 16), (100, 16, 16), (100, 16, 1024), (100, 1, 65536)]


def matrix(args):
    rows = [("rss", ["rss", "-c", str(args.rss_conns)])]
    timing = ["-w", str(args.warmup), "-T", str(args.duration)]
    for c, d, s in ECHO_SHAPES:
        kinds = ["random", "zero", "repeat"]
        if s == 16:
            kinds.append("adversarial")
        for k in kinds:
            rows.append((f"echo C={c} D={d} S={s} {k}",
                         ["echo", "-c", str(c), "-d", str(d), "-s", str(s),
                          "-k", k] + timing))
    rows.append(("echo C=100 D=16 S=1024 random text",
                 ["echo", "-c", "100", "-d", "16", "-s", "1024", "-x"]
                 + timing))
    rows.append(("latency C=1 D=1 S=16 random", ["latency"] + timing))
    rows.append((f"handshake P={args.handshake_parallel}",
                 ["handshake", "-c", str(args.handshake_parallel)] + timing))
    return rows


# What each test's table shows: (key, unit, lower is better)
FIGURES = {
    "echo": [("msgs_per_s", "msg/s", False)],
    "latency": [("p50_us", "µs p50", True), ("p99_us", "µs p99", True),
                ("p999_us", "µs p99.9", True)],
    "handshake": [("hs_per_s", "handshakes/s", False)],
    "rss": [("bytes_per_conn", "bytes/conn", True)],
}

# ----------------------------------------------------------------------
# Running things
# ----------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu, argv):
    return (["taskset", "-c", str(cpu)] + argv) if PIN else argv


class Server:
    """A server process, pinned to CPU 0, stopped with SIGTERM."""

    def __init__(self, name, wrap=None):
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix=f"bench-{name}-")
        self.port = free_port()
        argv, env = SERVERS[name][0](self.port, self.tmp)
        self.log = open(os.path.join(self.tmp, "stderr.log"), "w+")
        argv = wrap(argv) if wrap else pinned(0, argv)
        self.proc = subprocess.Popen(argv, env={**os.environ, **env},
                                     cwd=self.tmp, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.pid = self.proc.pid   # taskset execs: the same process

    def wait_ready(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.output()}")
            try:
                socket.create_connection(("127.0.0.1", self.port),
                                         timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen in {seconds} s")

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-2000:]

    def stop(self, seconds=10):
        """Returns the exit status; self.tail keeps the last output."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(seconds)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.tail = self.output()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return self.proc.returncode


def machine_busy():
    """CPU seconds the whole machine has been busy, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = v
    return (user + nice + system + irq + softirq + steal) / \
        os.sysconf("SC_CLK_TCK")


def wait_quiet(threshold, limit):
    """Wait until the machine is nearly idle (others' builds and tests
    share it): busy under threshold percent of one core over 0.3 s, or
    limit seconds.  Returns the seconds waited."""
    start = time.monotonic()
    while True:
        b0, t0 = machine_busy(), time.monotonic()
        time.sleep(0.3)
        pct = 100 * (machine_busy() - b0) / (time.monotonic() - t0)
        waited = time.monotonic() - start
        if pct < threshold or waited >= limit:
            return waited


def parse_kv(line):
    out = {}
    for field in line.split():
        k, _, v = field.partition("=")
        try:
            out[k] = float(v)
        except ValueError:
            out[k] = v
    return out


def loadgen(server, label, argv, timeout):
    cmd = pinned(1, [LOADGEN, "-P", str(server.port), "-p",
                     str(server.pid), "-l", label, "-q"] + argv)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "loadgen exceeded its time limit"
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("test=")]
    if not lines:
        return None, (p.stderr.strip() or f"exit {p.returncode}")[-500:]
    return parse_kv(lines[-1]), p.stderr.strip()[-500:]

# ----------------------------------------------------------------------
# The peers run
# ----------------------------------------------------------------------


def run_matrix(args):
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    for n in names:
        if n not in SERVERS:
            sys.exit(f"run_peers: unknown server {n}; "
                     f"known: {', '.join(SERVERS)}")
    skipped = {}
    for n in names:
        why = SERVERS[n][1]()
        if why:
            skipped[n] = why
            print(f"run_peers: skipping {n}: {why}", file=sys.stderr)
    names = [n for n in names if n not in skipped]
    if not names:
        sys.exit("run_peers: no server to measure")
    args.baseline = BASELINE if BASELINE in names else names[0]
    rows = matrix(args)
    results = {}     # (server, row) -> [kv, ...]
    problems = []
    started = time.monotonic()
    raw = open(args.raw, "a") if args.raw else None
    waited = [0.0]

    def measure(server, row, argv, rep):
        limit = (args.rss_timeout if argv[0] == "rss"
                 else args.warmup + args.duration + 60)
        kv, err = loadgen(server, server.name, argv + ["-t", str(limit)],
                          limit + 20)
        if kv is None:
            problems.append(f"{server.name}, {row}, run {rep + 1}: {err}")
            print(f"   {server.name}: FAILED: {err}", file=sys.stderr)
            return
        if kv.get("errors", 0):
            problems.append(f"{server.name}, {row}, run {rep + 1}: "
                            f"{int(kv['errors'])} errors: {err}")
        results.setdefault((server.name, row), []).append(kv)
        if raw:
            raw.write(json.dumps({"server": server.name, "row": row,
                                  "run": rep + 1, **kv}) + "\n")
        print(f"   {server.name}: {headline(kv)}", file=sys.stderr,
              flush=True)

    # Every server runs at once (idle ones cost nothing) and each row
    # measures them one after the other, so that the machine's changing
    # background load falls on all of them alike.
    for rep in range(args.repeat):
        if time.monotonic() - started > args.budget:
            problems.append(f"the run stopped at its budget of "
                            f"{args.budget:.0f} s: runs {rep + 1} to "
                            f"{args.repeat} are missing")
            break
        servers = []
        try:
            for name in names:
                server = Server(name)
                try:
                    server.wait_ready(20)
                    servers.append(server)
                except RuntimeError as e:
                    problems.append(f"{name}, run {rep + 1}: {e}")
                    print(f"run_peers: {e}", file=sys.stderr)
                    server.stop()
            k = rep % max(len(servers), 1)
            order = servers[k:] + servers[:k]
            for row, argv in rows:
                if time.monotonic() - started > args.budget:
                    problems.append(f"run {rep + 1} stopped at the budget "
                                    f"of {args.budget:.0f} s before {row}")
                    break
                waited[0] += wait_quiet(args.quiet_threshold,
                                        args.quiet_wait)
                print(f"== run {rep + 1} of {args.repeat}: {row}",
                      file=sys.stderr, flush=True)
                for server in order:
                    measure(server, row, argv, rep)
        finally:
            for server in servers:
                rc = server.stop()
                if rc not in (0, -signal.SIGTERM):
                    problems.append(f"{server.name}: exited with {rc} on "
                                    f"SIGTERM: {server.tail[-300:]}")
    if raw:
        raw.close()
    elapsed = time.monotonic() - started
    args.waited = waited[0]
    report = render(args, names, skipped, rows, results, problems, elapsed)
    print(report)
    if args.results:
        with open(args.results, "w") as f:
            f.write(report)
        print(f"run_peers: wrote {args.results}", file=sys.stderr)
    return 1 if problems else 0


def headline(kv):
    t = kv["test"]
    cpu = f"(CPU: server {kv['server_cpu']:.0f}%, loadgen " \
          f"{kv['client_cpu']:.0f}%, others {kv['other_cpu']:.0f}%)"
    err = f" errors={int(kv['errors'])}" if kv.get("errors") else ""
    if t == "echo":
        return f"{kv['msgs_per_s']:,.0f} msg/s {kv['mb_per_s']:.1f} MB/s " \
               f"{cpu}{err}"
    if t == "latency":
        return f"p50 {kv['p50_us']:.1f} µs p99 {kv['p99_us']:.1f} µs " \
               f"p99.9 {kv['p999_us']:.1f} µs {cpu}{err}"
    if t == "handshake":
        return f"{kv['hs_per_s']:,.0f}/s {cpu}{err}"
    return f"{kv['bytes_per_conn']:,.0f} bytes/conn, " \
           f"{int(kv['open'])} open {err}"

# ----------------------------------------------------------------------
# results.md
# ----------------------------------------------------------------------


def fmt(v, key):
    return report.fmt(v, key, small_keys={"mb_per_s"})


def versions():
    out = report.output
    v = {}
    v["moonsocket"] = out(["git", "-C", ROOT, "describe", "--always",
                           "--dirty"])
    nv = subprocess.run(["nginx", "-v"], capture_output=True, text=True) \
        if shutil.which("nginx") else None
    v["nginx"] = nv.stderr.strip().split("/")[-1] if nv else "?"
    v["lua-nginx-websocket"] = out(["dpkg-query", "-W", "-f",
                                    "${Version}", "lua-nginx-websocket"])
    v["node"] = out(["node", "--version"]) if shutil.which("node") else "?"
    try:
        with open(os.path.join(BENCH, "node_modules", "ws",
                               "package.json")) as f:
            v["ws"] = json.load(f)["version"]
    except OSError:
        v["ws"] = "?"
    v["websockets"] = out([PYTHON, "-c", "import websockets, sys; "
                           "print(websockets.__version__, sys.version.split()"
                           "[0])"])
    if not missing_uws():
        v["uWebSockets"] = "EchoServer sha256 " + report.output(
            ["sha256sum", os.environ["UWS_ECHO"]])[:12]
    return v


def render(args, names, skipped, rows, results, problems, elapsed):
    v = versions()
    cols = names
    out = []
    w = out.append

    def runs(name, row):
        return results.get((name, row), [])

    w("# moonsocket benchmark results\n")
    w(report.date_line(elapsed))
    w(report.machine_line())
    w(f"- servers pinned to CPU 0, the load generator to CPU 1"
      f"{report.not_pinned(PIN)}")
    w(f"- each figure is the median of {args.repeat} runs, each "
      f"{args.duration:g} s measured after {args.warmup:g} s of warm-up; "
      f"RSS with {args.rss_conns} idle connections on a fresh process")
    w(report.quiet_line(args))
    w(report.command_line(args))
    w("- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
    w("- payloads: binary frames unless the row says text; `random` "
      "varies per message, `adversarial` is 8 random bytes twice (equal "
      "halves, a hash-collision case for OpenResty's LuaJIT); every echo "
      "was checked byte for byte")
    for n, why in skipped.items():
        w(f"- **{n} skipped**: {why}")
    w("")

    # Ratios to the baseline
    base_name = args.baseline
    w(f"## Ratios to `{base_name}`\n")
    w(f"Each server's median divided by {base_name}'s median: above 1 is "
      "more "
      "for rates; for the rows marked *lower is better* (latency, memory) "
      "below 1 is better.\n")
    out += table_head(cols)
    for row, argv in rows:
        test = row.split()[0]
        for key, unit, lower in FIGURES[test]:
            label = f"{row} ({unit}{', lower is better' if lower else ''})"
            base = median(runs(base_name, row), key)
            cells = [report.ratio(median(runs(n, row), key), base)
                     for n in cols]
            w(table_row(label, cells))
    w("")

    # Raw medians
    w("## Medians\n")
    out += table_head(cols)
    for row, argv in rows:
        test = row.split()[0]
        keys = FIGURES[test] + ([("mb_per_s", "MB/s", False)]
                                if test == "echo" else [])
        for key, unit, lower in keys:
            cells = [fmt(median(runs(n, row), key), key) for n in cols]
            w(table_row(f"{row} ({unit})", cells))
    w("")

    # CPU beside each figure
    w("## CPU use during the measurement\n")
    w("Server / load generator / rest of the machine, percent of one "
      "core (medians over the measured seconds).  A load generator near "
      "100% means the figure may be its limit, not the server's; a large "
      "third figure means other work (or softirq time charged to no "
      "process) shared the two CPUs.\n")
    out += table_head(cols)
    for row, argv in rows:
        w(table_row(row, [report.cpu(runs(n, row)) for n in cols]))
    w("")

    out += report.problems_section(
        problems, "None: every connection opened, every echo matched, "
        "every close handshake completed.")
    return "\n".join(out)

# ----------------------------------------------------------------------
# callgrind: where moonsocket spends its instructions per echo
# ----------------------------------------------------------------------


def callgrind_run(messages, outdir, conns, size, text, name="moonsocket",
                  kind="random"):
    out = os.path.join(outdir, f"callgrind.out.{name}.{kind}.{messages}")

    def wrap(argv):
        return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                "--dump-instr=no"] + argv
    server = Server(name, wrap=wrap)
    try:
        server.wait_ready(60)
        kv, err = loadgen(server, f"{name}-callgrind",
                          ["echo", "-c", str(conns), "-s", str(size),
                           "-k", kind, "-n", str(messages), "-t", "600"]
                          + (["-x"] if text else []), 620)
    finally:
        server.stop(60)
    if kv is None or kv.get("errors"):
        sys.exit(f"run_peers: callgrind workload failed: {err}")
    return out


def total_ir(path):
    with open(path) as f:
        for line in f:
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


ANNOTATE_LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S.*?)"
                           r"(?:\s+\[(.*)\])?$")


def annotate(path, inclusive):
    """{function: (Ir, object)} from callgrind_annotate, every function."""
    out = subprocess.run(["callgrind_annotate", "--threshold=100",
                          "--auto=no", "--tree=none",
                          f"--inclusive={'yes' if inclusive else 'no'}",
                          path], capture_output=True, text=True).stdout
    funcs = {}
    for line in out.splitlines():
        m = ANNOTATE_LINE.match(line)
        if m and "PROGRAM TOTALS" not in line and \
                not m.group(2).startswith(("=>", "events ")):
            funcs[m.group(2)] = (int(m.group(1).replace(",", "")),
                                 os.path.basename(m.group(3) or "?"))
    return funcs


def per_echo(big, small, n):
    """Instructions per echo of each function: the difference of two
    runs, so that start-up and handshakes cancel."""
    rows = []
    for fn, (ir, obj) in big.items():
        d = (ir - small.get(fn, (0, obj))[0]) / n
        rows.append((d, fn, obj))
    rows.sort(reverse=True)
    return rows


def run_callgrind(args):
    if not shutil.which("valgrind"):
        sys.exit("run_peers: valgrind is not installed (make -C bench deps)")
    outdir = tempfile.mkdtemp(prefix="bench-callgrind-")
    small, big = args.cg_messages // 10, args.cg_messages
    n = big - small
    kind = "text" if args.cg_text else "binary"
    print(f"callgrind: {small} then {big} {kind} echoes of {args.cg_size} "
          f"B on {args.cg_conns} connections, moonsocket callback form",
          file=sys.stderr)
    f_small = callgrind_run(small, outdir, args.cg_conns, args.cg_size,
                            args.cg_text)
    f_big = callgrind_run(big, outdir, args.cg_conns, args.cg_size,
                          args.cg_text)
    ir_small, ir_big = total_ir(f_small), total_ir(f_big)
    print(f"instructions (user space): {ir_small:,} for {small} echoes, "
          f"{ir_big:,} for {big}")
    print(f"per echoed message: {(ir_big - ir_small) / n:,.0f} "
          f"(the difference over {n} echoes: start-up and handshakes "
          f"cancel); the {big}-echo run's average: {ir_big / big:,.0f}")

    excl = per_echo(annotate(f_big, False), annotate(f_small, False), n)
    by_obj = {}
    for d, fn, obj in excl:
        by_obj[obj] = by_obj.get(obj, 0) + d
    print("\nper echo, by object file:")
    for obj, d in sorted(by_obj.items(), key=lambda kv: -kv[1]):
        if abs(d) >= 1:
            print(f"  {d:8,.0f}  {obj}")

    incl_big = annotate(f_big, True)
    print(f"\ntop {args.cg_top} functions by inclusive cost "
          f"(callgrind_annotate --inclusive=yes, the {big}-echo run):")
    for fn, (ir, obj) in sorted(incl_big.items(),
                                key=lambda kv: -kv[1][0])[:args.cg_top]:
        print(f"  {ir:13,}  {100 * ir / ir_big:5.1f}%  {fn}  [{obj}]")
    # Below the loop's dispatch: main, ev_run and the like include all;
    # a name with ' is a recursion level, counted twice.
    incl = per_echo(incl_big, annotate(f_small, True), n)
    top = max((d for d, fn, obj in incl if fn.endswith(":conn_io_cb")),
              default=None)
    incl = [r for r in incl if "'" not in r[1] and (top is None
                                                    or r[0] <= top)]
    print(f"\ntop {2 * args.cg_top} functions by inclusive instructions "
          f"per echo, from the socket callback (conn_io_cb) down:")
    for d, fn, obj in incl[:2 * args.cg_top]:
        print(f"  {d:8,.0f}  {fn}  [{obj}]")
    print(f"\ntop {2 * args.cg_top} functions by their own (exclusive) "
          f"instructions per echo:")
    for d, fn, obj in excl[:2 * args.cg_top]:
        print(f"  {d:8,.0f}  {fn}  [{obj}]")
    print(f"\nfiles: {f_small} {f_big}")
    return 0

# ----------------------------------------------------------------------


def main():
    global PIN
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--duration", type=float, default=1.5)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--rss-conns", type=int, default=10000)
    ap.add_argument("--rss-timeout", type=float, default=120)
    ap.add_argument("--handshake-parallel", type=int, default=8)
    ap.add_argument("--budget", type=float, default=840,
                    help="seconds: no new measurement starts after this")
    ap.add_argument("--quiet-threshold", type=float, default=30,
                    help="percent of a core: wait for the machine to be "
                    "this idle before each measurement")
    ap.add_argument("--quiet-wait", type=float, default=3,
                    help="seconds: the longest such wait")
    ap.add_argument("--quick", action="store_true",
                    help="one run of 1 s per measurement, 2000 for RSS")
    ap.add_argument("--results", help="write the report here (markdown)")
    ap.add_argument("--raw", help="append every key=value result as JSON")
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--cg-messages", type=int, default=20000)
    ap.add_argument("--cg-conns", type=int, default=10)
    ap.add_argument("--cg-size", type=int, default=16)
    ap.add_argument("--cg-top", type=int, default=10)
    ap.add_argument("--cg-text", action="store_true",
                    help="text frames (UTF-8 checked) instead of binary")
    args = ap.parse_args()
    if args.quick:
        args.repeat, args.duration, args.warmup = 1, 1.0, 0.3
        args.rss_conns, args.quiet_wait = 2000, 2
    args.command = " ".join(["bench/run_peers.py"] + sys.argv[1:])
    PIN = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    if not os.access(LOADGEN, os.X_OK):
        sys.exit("run_peers: build bench/loadgen first (make -C bench "
                 "loadgen)")
    # SIGTERM unwinds like ^C, so that the servers are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.callgrind:
        return run_callgrind(args)
    return run_matrix(args)


PIN = True

if __name__ == "__main__":
    sys.exit(main())
