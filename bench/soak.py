#!/usr/bin/python3
"""soak.py - connection churn against one moonsocket process, watching
its memory, file descriptors and output.  Prints TAP; exits 1 on a leak,
on any error of the load generator (a failed handshake, an echo that
differs from what was sent by one byte, a close not echoed), or when
the server does not exit cleanly.

    soak.py [--seconds S] [--conns N] [--warmup S] [--rewarm S] ...

`loadgen churn` keeps N connections (10,000) busy: each connects,
upgrades, echoes M masked messages (3), closes with the closing
handshake and is replaced at once, pausing --hold seconds (2) in all
along the way, so that nearly all N are open at any moment.  loadgen
reads the server's VmRSS once a second, and with all N open and held
at the baseline (after --rewarm) and at the end (after --seconds).

The server (bench/apps/soak.lua) runs two rounds of it.  The first,
--warmup seconds (20), grows every pool and table to what N
connections need; then everything is closed and measured.  The second
is the soak proper; then everything is closed and measured again.
"Measured" is: a full garbage collection (GET /memory answers the Lua
heap), the server's descriptors, and, through gdb, malloc_stats() (the
bytes malloc has in use) and malloc_trim(0).

The criteria, and why they are what they are:

- No error counted by loadgen, in either round.
- RSS at the end (N open) at most --tolerance (20 %) above the
  baseline (N open).  glibc keeps freed memory, so RSS follows the
  heap's high-water mark: it climbs to a plateau as the collector's
  peaks and bursts of output reach new highs (8 to 9 % over the
  baseline within the first two minutes in runs here, flat after),
  while a leak keeps climbing.  The trim after the first round lets
  the second start from what is in use rather than from the high-water
  mark of closing all N at once.
- All closed, after a full collection, the second round must leave
  the Lua heap within --lua-slack KiB (64) and malloc's bytes in use
  within --heap-slack KiB (512) of the first: a leak of a byte per
  connection shows over a million connections.  They are compared
  with the first round's, not the fresh server's, because N
  connections leave capacity behind that is no leak: about 260 KiB of
  Lua's registry (a reference per connection, its array never
  shrinks), the spare output chunks (64 of 16 KiB), libev's arrays
  indexed by descriptor.
- RSS after malloc_trim(0) within --trim-slack KiB (1024) of the first
  round's.  Without gdb the malloc figures are skipped and RSS, all
  closed, must only not exceed the baseline with N open.
- The Lua heap as it is, garbage included (GET /heap, 4 times a
  second through the measured churn), at most --heap-peak KiB per
  connection (1): the live heap with N open is about 450 bytes each,
  and a collector that keeps pace lets garbage grow to about as much
  again.  At Lua 5.4's default step multiplier it fell behind here,
  piling garbage up to ten times the live heap in bursts.
- The server's descriptors back to their number before.
- The server exits 0 on SIGTERM with no warning or error in its log.
"""
import argparse
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from procs import rss_kib

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
LOADGEN = os.path.join(BENCH, "loadgen")
LUA_PATH = f"{ROOT}/lua/?.lua;{ROOT}/lua/?/init.lua;;"


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def http_get(port, path):
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  "Connection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"GET {path}: {head[:80]!r}")
    return body.decode()


def lua_kib(port, path="/memory"):
    return float(re.search(r"lua_kib=([\d.]+)",
                           http_get(port, path)).group(1))


class HeapWatch(threading.Thread):
    """The Lua heap as it is (GET /heap), every 0.25 s until stopped:
    the highest reading and how many were taken."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.peak = 0.0
        self.samples = 0
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(0.25):
            try:
                kib = lua_kib(self.port, "/heap")
            except (OSError, RuntimeError, AttributeError):
                continue                # the listener's backlog was full
            self.peak = max(self.peak, kib)
            self.samples += 1

    def stop(self):
        self.done.set()
        self.join()


class Server:
    """build/moonsocket on bench/apps/soak.lua, copied first so that a
    rebuild meanwhile does not touch the process under test."""

    def __init__(self, binary):
        self.tmp = tempfile.mkdtemp(prefix="soak-")
        exe = os.path.join(self.tmp, "moonsocket")
        shutil.copy2(binary, exe)
        self.logpath = os.path.join(self.tmp, "server.log")
        self.log = open(self.logpath, "w")
        self.proc = subprocess.Popen(
            [exe, os.path.join(BENCH, "apps", "soak.lua")],
            env={**os.environ, "LUA_PATH": LUA_PATH, "PORT": "0"},
            cwd=self.tmp, stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 10
        while True:
            m = re.search(r"listening on \S*:(\d+)", self.output())
            if m:
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start:\n" + self.output())
            time.sleep(0.05)

    def output(self):
        with open(self.logpath, errors="replace") as f:
            return f.read()

    def malloc(self):
        """malloc_stats() (bytes in use, all arenas and mmap), then
        malloc_trim(0), through gdb; returns (in use, RSS after the
        trim in KiB), or None without gdb."""
        gdb = shutil.which("gdb")
        if not gdb:
            return None
        before = len(self.output())
        subprocess.run([gdb, "-q", "-nx", "-batch", "-p", str(self.pid),
                        "-ex", "call (void)malloc_stats()",
                        "-ex", "call (int)malloc_trim(0)",
                        "-ex", "detach"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       stdin=subprocess.DEVNULL, timeout=120)
        time.sleep(0.2)
        m = re.search(r"Total \(incl\. mmap\):\s*system bytes\s*=\s*\d+\s*"
                      r"in use bytes\s*=\s*(\d+)", self.output()[before:])
        if not m:
            return None
        return int(m.group(1)), rss_kib(self.pid)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        text = self.output()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return self.proc.returncode, text


def parse_kv(text):
    for line in text.splitlines():
        if line.startswith("test=churn "):
            return dict(f.split("=", 1) for f in line.split() if "=" in f)
    return {}


def main():
    env = os.environ.get
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float,
                    default=float(env("SOAK_SECONDS", "300")),
                    help="measured churn (SOAK_SECONDS, 300)")
    ap.add_argument("--warmup", type=float,
                    default=float(env("SOAK_WARMUP", "20")),
                    help="churn before closing everything the first time "
                    "(SOAK_WARMUP, 20)")
    ap.add_argument("--rewarm", type=float,
                    default=float(env("SOAK_REWARM", "60")),
                    help="churn after opening again, before the RSS "
                    "baseline (SOAK_REWARM, 60)")
    ap.add_argument("--conns", type=int,
                    default=int(env("SOAK_CONNS", "10000")),
                    help="connections kept busy (SOAK_CONNS, 10000)")
    ap.add_argument("--each", type=int, default=3,
                    help="echoes per connection (3)")
    ap.add_argument("--hold", type=float, default=2.0,
                    help="seconds each connection pauses in all (2)")
    ap.add_argument("--size", type=int, default=200,
                    help="message bytes (200: a 16-bit length)")
    ap.add_argument("--tolerance", type=float, default=0.20,
                    help="end over baseline RSS, N open (0.20)")
    ap.add_argument("--lua-slack", type=float, default=64,
                    help="Lua heap KiB, all closed, after the churn over "
                    "after the warm-up (64)")
    ap.add_argument("--heap-slack", type=float, default=512,
                    help="malloc in use KiB, likewise (512)")
    ap.add_argument("--heap-peak", type=float, default=1.0,
                    help="Lua heap KiB per connection, garbage included, "
                    "during the churn (1)")
    ap.add_argument("--trim-slack", type=float, default=1024,
                    help="RSS KiB after malloc_trim(0), likewise (1024)")
    ap.add_argument("--server", default=os.path.join(ROOT, "build",
                                                     "moonsocket"))
    ap.add_argument("--rss-log",
                    default=os.path.join(ROOT, "test-output",
                                         "soak-rss.log"),
                    help="loadgen's line per second (test-output/)")
    a = ap.parse_args()

    results = []

    def check(ok, what):
        results.append(ok)
        print(f"{'ok' if ok else 'not ok'} {len(results)} - {what}",
              flush=True)

    def skip(what, why):
        results.append(True)
        print(f"ok {len(results)} - {what} # SKIP {why}", flush=True)

    def note(text):
        for line in text.rstrip().splitlines():
            print("# " + line, flush=True)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = a.conns + 256
    if hard != resource.RLIM_INFINITY and hard < need:
        check(False, f"RLIMIT_NOFILE hard limit {hard} is below {need}")
        print(f"1..{len(results)}")
        return 1
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.makedirs(os.path.dirname(os.path.abspath(a.rss_log)), exist_ok=True)

    server = Server(a.server)

    def closed():
        """The server with every connection closed: RSS, then the Lua
        heap after a full collection, RSS again, its descriptors, and
        malloc's figures (None without gdb)."""
        time.sleep(0.5)
        rss = rss_kib(server.pid)
        lua = lua_kib(server.port)
        # idle for a couple of seconds, the runner's allocator gives
        # back the blocks it kept (csrc/alloc.c)
        time.sleep(2.5)
        return {"rss": rss, "lua": lua, "rss_gc": rss_kib(server.pid),
                "fds": fd_count(server.pid), "malloc": server.malloc()}

    def churn(warmup, seconds, log):
        argv = [LOADGEN, "-q", "-P", str(server.port), "-p", str(server.pid),
                "-c", str(a.conns), "-m", str(a.each), "-s", str(a.size),
                "--hold", str(a.hold), "-w", str(warmup), "-T", str(seconds),
                "--rss-log", log, "churn"]
        note(" ".join(argv))
        run = subprocess.run(argv, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True,
                             timeout=warmup + seconds + 600)
        note(run.stdout)
        return run.returncode, parse_kv(run.stdout)

    try:
        fresh = closed()
        warm_rc, warm = churn(a.warmup, 0, a.rss_log + ".warmup")
        after_warm = closed()
        watch = HeapWatch(server.port)
        watch.start()
        try:
            rc, kv = churn(a.rewarm, a.seconds, a.rss_log)
        finally:
            watch.stop()
        after = closed()
    finally:
        status, log = server.stop()

    def num(kv, key):
        return float(kv.get(key, "-1"))

    errors = int(num(warm, "errors"))
    check(warm_rc == 0 and errors == 0 and
          num(warm, "opened_total") > a.conns,
          f"warm-up: {num(warm, 'opened_total'):.0f} connections opened "
          f"in {a.warmup:.0f} s and more, {errors} errors")
    errors = int(num(kv, "errors"))
    cycles = int(num(kv, "cycles"))
    check(rc == 0 and errors == 0 and cycles > 0,
          f"churn: {cycles} connections in {num(kv, 'seconds'):.0f} s "
          f"({num(kv, 'cycles_per_s'):.0f}/s), {errors} errors: every "
          "handshake and close checked, every echo byte for byte")

    base, end = num(kv, "rss_base_kib"), num(kv, "rss_end_kib")
    limit = base * (1 + a.tolerance)
    check(base > 0 and 0 < end <= limit,
          f"RSS with {a.conns} open: {end:.0f} KiB after the churn, "
          f"{base:.0f} KiB before (limit {limit:.0f}, +{a.tolerance:.0%}); "
          f"peak {num(kv, 'rss_peak_kib'):.0f} KiB")

    heap_limit = a.heap_peak * a.conns
    check(watch.samples > 0 and watch.peak <= heap_limit,
          f"Lua heap during the churn, garbage included: at most "
          f"{watch.peak:.0f} KiB in {watch.samples} readings (limit "
          f"{heap_limit:.0f}: {a.heap_peak:g} KiB per connection)")

    lua0, lua1 = after_warm["lua"], after["lua"]
    check(lua1 <= lua0 + a.lua_slack,
          f"Lua heap, all closed, after a full collection: {lua1:.0f} KiB "
          f"after the churn, {lua0:.0f} KiB after the warm-up (slack "
          f"{a.lua_slack:.0f}); fresh {fresh['lua']:.0f} KiB")

    m0, m1 = after_warm["malloc"], after["malloc"]
    if m0 and m1:
        check(m1[0] <= m0[0] + a.heap_slack * 1024,
              f"malloc in use, all closed: {m1[0] // 1024} KiB after the "
              f"churn, {m0[0] // 1024} KiB after the warm-up (slack "
              f"{a.heap_slack:.0f}); fresh {fresh['malloc'][0] // 1024} KiB")
        check(m1[1] <= m0[1] + a.trim_slack,
              f"RSS after malloc_trim(0), all closed: {m1[1]} KiB after "
              f"the churn, {m0[1]} KiB after the warm-up (slack "
              f"{a.trim_slack:.0f}); fresh {fresh['malloc'][1]} KiB; "
              f"before the trim {after['rss_gc']} KiB")
    else:
        check(0 < after["rss_gc"] <= base,
              f"RSS, all closed: {after['rss_gc']} KiB, not above the "
              f"figure with {a.conns} open ({base:.0f} KiB)")
        skip("malloc in use and RSS after malloc_trim(0)", "no gdb")

    check(fresh["fds"] == after_warm["fds"] == after["fds"],
          f"server file descriptors, all closed: {after['fds']}; "
          f"{after_warm['fds']} after the warm-up, {fresh['fds']} fresh")

    bad = [line for line in log.splitlines()
           if re.match(r"moonsocket: (error|warn) ", line)]
    check(status == 0 and not bad,
          f"server exit status {status} on SIGTERM, "
          f"{len(bad)} warnings or errors logged")
    if bad:
        note("\n".join(bad[:20]))

    summary = {
        "conns": a.conns, "each": a.each, "hold": a.hold,
        "seconds": kv.get("seconds"), "cycles": cycles,
        "cycles_per_s": kv.get("cycles_per_s"),
        "opened_total": int(num(warm, "opened_total")
                            + num(kv, "opened_total")),
        "open_min": kv.get("open_min"), "open_avg": kv.get("open_avg"),
        "rss_fresh_kib": fresh["rss"],
        "rss_base_kib": kv.get("rss_base_kib"),
        "rss_peak_kib": kv.get("rss_peak_kib"),
        "rss_end_kib": kv.get("rss_end_kib"),
        "rss_closed_kib": after["rss_gc"],
        "lua_peak_kib": f"{watch.peak:.0f}",
        "lua_kib": f"{fresh['lua']}/{lua0}/{lua1}",
    }
    if m0 and m1:
        summary["malloc_kib"] = "/".join(
            str(x["malloc"][0] // 1024) for x in (fresh, after_warm, after))
        summary["rss_trimmed_kib"] = "/".join(
            str(x["malloc"][1]) for x in (fresh, after_warm, after))
    note(" ".join(f"{k}={v}" for k, v in summary.items()))
    print(f"1..{len(results)}")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
