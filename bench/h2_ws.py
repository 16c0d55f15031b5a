#!/usr/bin/env python3
"""WebSockets over HTTP/2 (RFC 8441) against WebSockets on their own TLS
connections, on one moonsocket process (apps/echo_tls.lua, TLS 1.3,
HTTP/2 by ALPN on its TLS port): the time to open one, echo throughput
and server CPU per message, memory per idle WebSocket.

The HTTP/2 side is h2ws (h2ws.c, libnghttp2); the TLS-connection side of
echo and memory is loadgen --tls, with the same counts and sizes.  The
server is pinned to one core and the client to the other (taskset); a
fresh server for each memory measurement.  Prints a Markdown table
(and writes it to --results when given).

    h2_ws.py [--server ../build/moonsocket] [--rounds 3] [--seconds 5]
             [--opens 2000] [--idle 5000]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from procs import free_port, pin, stop, wait_port

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)


def fields(line):
    return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)


class Server:
    def __init__(self, args, tmp):
        self.port = free_port()
        env = dict(os.environ, TLS_PORT=str(self.port),
                   PORT=str(free_port()), CERT_DIR=tmp,
                   LUA_PATH=ROOT + "/lua/?.lua;" + ROOT + "/lua/?/init.lua;;",
                   LUA_CPATH=os.path.join(os.path.dirname(args.server),
                                          "lib", "?.so") + ";;")
        self.log = open(os.path.join(tmp, "server.log"), "a")
        self.proc = subprocess.Popen(
            pin(1) + ["sh", "-c", 'ulimit -n 65536 2>/dev/null; exec "$@"',
                      "sh", args.server,
                      os.path.join(BENCH, "apps", "echo_tls.lua")],
            env=env, stdout=self.log, stderr=self.log)
        wait_port(self.port, self.proc, 20)
        self.pid = self.proc.pid

    def stop(self):
        stop(self.proc)
        self.log.close()


def client(argv, timeout=120):
    out = subprocess.run(pin(0) + ["sh", "-c",
                                   'ulimit -n 65536 2>/dev/null; exec "$@"',
                                   "sh"] + argv,
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError("%s failed:\n%s%s" % (argv[0], out.stdout,
                                                 out.stderr))
    return [fields(line) for line in out.stdout.splitlines()
            if line.startswith("test=")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default=os.path.join(ROOT, "build",
                                                     "moonsocket"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--opens", type=int, default=2000)
    ap.add_argument("--idle", type=int, default=5000)
    ap.add_argument("--results")
    args = ap.parse_args()
    h2ws, loadgen = os.path.join(BENCH, "h2ws"), os.path.join(BENCH,
                                                              "loadgen")
    for tool in (h2ws, loadgen):
        if not os.access(tool, os.X_OK):
            sys.exit("%s is missing: make -C bench h2ws loadgen" % tool)
    tmp = tempfile.mkdtemp(prefix="h2ws.")
    try:
        res = measure(args, tmp, h2ws, loadgen)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines = report(args, res)
    print("\n".join(lines))
    if args.results:
        with open(args.results, "a") as f:
            f.write("\n".join(lines) + "\n")
    return 0


def measure(args, tmp, h2ws, loadgen):
    res = {}
    depths = (1, 8)
    for rnd in range(args.rounds):
        srv = Server(args, tmp)
        try:
            for t in client([h2ws, "-P", str(srv.port), "-p", str(srv.pid),
                             "open", "-n", str(args.opens)]):
                res.setdefault(("open", t["mode"]), []).append(t)
            for d in depths:
                echo = ["echo", "-c", "100", "-d", str(d), "-s", "16",
                        "-T", str(args.seconds)]
                t = client([h2ws, "-P", str(srv.port), "-p", str(srv.pid)]
                           + echo)[0]
                res.setdefault(("echo", "h2", d), []).append(t)
                t = client([loadgen, "-q", "--tls", "-P", str(srv.port),
                            "-p", str(srv.pid)] + echo)[0]
                t["server_us_per_msg"] = str(
                    float(t["server_cpu"]) / 100 * 1e6
                    / float(t["msgs_per_s"]))
                res.setdefault(("echo", "tls", d), []).append(t)
        finally:
            srv.stop()
        print("round %d done" % (rnd + 1), file=sys.stderr)
    for mode in ("h2", "tls"):
        srv = Server(args, tmp)
        try:
            if mode == "h2":
                t = client([h2ws, "-P", str(srv.port), "-p", str(srv.pid),
                            "rss", "-c", str(args.idle)])[0]
                res[("rss", mode)] = float(t["bytes_per_ws"])
            else:
                t = client([loadgen, "-q", "--tls", "-P", str(srv.port),
                            "-p", str(srv.pid), "rss", "-c",
                            str(args.idle)])[0]
                res[("rss", mode)] = float(t["bytes_per_conn"])
        finally:
            srv.stop()
    res["depths"] = depths
    return res


def med(rows, key):
    return statistics.median(float(r[key]) for r in rows)


def report(args, res):
    o2, o1 = res[("open", "h2-stream")], res[("open", "tls-connection")]
    p2, p1 = med(o2, "open_p50_us"), med(o1, "open_p50_us")
    out = ["", "WebSockets over HTTP/2 streams against their own TLS "
           "connections (TLS 1.3, one moonsocket process on one core, the "
           "client on the other; median of %d rounds)." % args.rounds, "",
           "| measure | on an HTTP/2 stream | on its own TLS connection "
           "| ratio |", "| --- | --- | --- | --- |",
           "| time to open, p50 (us) | %.1f | %.1f | %.0fx faster |" % (
               p2, p1, p1 / p2),
           "| time to open, p99 (us) | %.1f | %.1f | |" % (
               med(o2, "open_p99_us"), med(o1, "open_p99_us")),
           "| open + close cycles/s, one after another | %.0f | %.0f | "
           "%.1fx |" % (med(o2, "cycles_per_s"), med(o1, "cycles_per_s"),
                        med(o2, "cycles_per_s") / med(o1, "cycles_per_s"))]
    for d in res["depths"]:
        e2, e1 = res[("echo", "h2", d)], res[("echo", "tls", d)]
        out.append("| echo msgs/s, 100 x %d x 16 B | %.0f | %.0f | %.2f |" % (
            d, med(e2, "msgs_per_s"), med(e1, "msgs_per_s"),
            med(e2, "msgs_per_s") / med(e1, "msgs_per_s")))
        out.append("| server CPU per echo (us), 100 x %d | %.2f | %.2f | "
                   "%.2f |" % (d, med(e2, "server_us_per_msg"),
                               med(e1, "server_us_per_msg"),
                               med(e2, "server_us_per_msg")
                               / med(e1, "server_us_per_msg")))
    r2, r1 = res[("rss", "h2")], res[("rss", "tls")]
    out.append("| server memory per idle WebSocket, %d open (bytes) | "
               "%.0f | %.0f | %.2f |" % (args.idle, r2, r1, r2 / r1))
    return out


if __name__ == "__main__":
    sys.exit(main())
