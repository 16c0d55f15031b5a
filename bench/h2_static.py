#!/usr/bin/env python3
"""Static files over HTTP/2 with h2load: moonsocket against nginx.

Both serve the same files from a temporary directory over TLS 1.3 with
a self-signed ECDSA P-256 certificate the script makes with openssl;
nginx is configured by the script there (one worker, HTTP/2 on its TLS
listener, sendfile, no access log).  Each server is pinned to one core
and h2load to the other (taskset), with the same h2load settings for
both; the servers alternate, ROUNDS times each, and the medians are
compared within the run.  Prints a Markdown table (and writes it to
--results when given).

    h2_static.py [--server ../build/moonsocket] [--rounds 3]
                 [--duration 8] [--clients 16] [--streams 32]
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

from procs import cpu_seconds, free_port, pin, stop, wait_port

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
SIZES = (("1 KiB", 1024), ("64 KiB", 65536))

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log error;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  http2_max_requests 1000000;
  types {{ application/octet-stream bin; }}
  default_type application/octet-stream;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  server {{
    # nginx 1.22 (Debian 12) turns HTTP/2 on in the listen line; from
    # 1.25.1 the same is "http2 on;"
    listen 127.0.0.1:{port} ssl http2;
    ssl_certificate {tmp}/cert.pem;
    ssl_certificate_key {tmp}/key.pem;
    ssl_protocols TLSv1.3;
    root {tmp}/www;
  }}
}}
"""


class Server:
    def __init__(self, name, argv, env, port, tmp):
        self.name, self.port = name, port
        self.log = open(os.path.join(tmp, name + ".log"), "w")
        self.proc = subprocess.Popen(pin(1) + argv, env=env,
                                     stdout=self.log, stderr=self.log)
        wait_port(port, self.proc)
        self.pid = self.worker()

    def worker(self):
        """nginx's worker, the process that serves; else the process."""
        try:
            out = subprocess.run(["pgrep", "-P", str(self.proc.pid)],
                                 capture_output=True, text=True).stdout
            kids = [int(x) for x in out.split()]
        except OSError:
            kids = []
        return kids[0] if kids else self.proc.pid

    def stop(self):
        stop(self.proc)
        self.log.close()


def h2load(port, path, args, requests_expected=None):
    argv = pin(0) + [
        "h2load", "-c", str(args.clients), "-m", str(args.streams),
        "-t", "1", "-D", str(args.duration),
        "https://127.0.0.1:%d%s" % (port, path)]
    out = subprocess.run(argv, capture_output=True, text=True,
                         timeout=args.duration + 60).stdout
    rps = re.search(r"finished in [^,]+, ([\d.]+) req/s", out)
    done = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, "
                     r"(\d+) succeeded, (\d+) failed, (\d+) errored", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, "
                      r"(\d+) 5xx", out)
    if not rps or not done or not codes:
        raise RuntimeError("h2load said:\n" + out)
    failed = int(done.group(5)) + int(done.group(6)) + \
        sum(int(codes.group(i)) for i in (2, 3, 4))
    if failed or not int(codes.group(1)):
        raise RuntimeError("h2load counted failures:\n" + out)
    return float(rps.group(1)), int(done.group(4))


def measure(server, path, args):
    before = cpu_seconds(server.pid)
    rps, n = h2load(server.port, path, args)
    used = cpu_seconds(server.pid) - before
    return rps, used * 1e6 / n if n else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default=os.path.join(ROOT, "build",
                                                     "moonsocket"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--streams", type=int, default=32)
    ap.add_argument("--results")
    args = ap.parse_args()
    for tool in ("h2load", "nginx", "openssl"):
        if not shutil.which(tool):
            sys.exit("%s is missing (make -C bench deps)" % tool)
    tmp = tempfile.mkdtemp(prefix="h2static.")
    os.chmod(tmp, 0o755)          # nginx's worker may run as nobody
    try:
        return run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args, tmp):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                    "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "2", "-subj", "/CN=localhost",
                    "-keyout", tmp + "/key.pem", "-out", tmp + "/cert.pem"],
                   check=True, capture_output=True)
    www = os.path.join(tmp, "www")
    os.mkdir(www)
    for label, size in SIZES:
        with open(os.path.join(www, "f%d.bin" % size), "wb") as f:
            f.write(os.urandom(size))
    ms_port, ng_port = free_port(), free_port()
    with open(os.path.join(tmp, "nginx.conf"), "w") as f:
        f.write(NGINX_CONF.format(tmp=tmp, port=ng_port))
    env = dict(os.environ, PORT=str(ms_port), STATIC_DIR=www,
               CERT=tmp + "/cert.pem", KEY=tmp + "/key.pem",
               LUA_PATH=ROOT + "/lua/?.lua;" + ROOT + "/lua/?/init.lua;;",
               LUA_CPATH=os.path.join(os.path.dirname(args.server), "lib",
                                      "?.so") + ";;")
    servers = {
        "moonsocket": ([args.server, os.path.join(BENCH, "apps",
                                                  "static_h2.lua")],
                       env, ms_port),
        "nginx": (["nginx", "-p", tmp, "-c", tmp + "/nginx.conf"],
                  dict(os.environ), ng_port),
    }
    results = {}
    for rnd in range(args.rounds):
        for name, (argv, senv, port) in servers.items():
            srv = Server(name, argv, senv, port, tmp)
            try:
                for label, size in SIZES:
                    r = measure(srv, "/f%d.bin" % size, args)
                    results.setdefault((name, label), []).append(r)
                    print("round %d %s %s: %.0f req/s, %.1f us CPU/req"
                          % (rnd + 1, name, label, r[0], r[1]),
                          file=sys.stderr)
            finally:
                srv.stop()
    lines = report(args, results)
    print("\n".join(lines))
    if args.results:
        with open(args.results, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


def report(args, results):
    ng = subprocess.run(["nginx", "-v"], capture_output=True,
                        text=True).stderr.strip().split("/")[-1]
    h2v = subprocess.run(["h2load", "--version"], capture_output=True,
                         text=True).stdout.strip().split()[-1]
    out = ["Static files over HTTP/2 and TLS 1.3, h2load %s -c %d -m %d -t 1 "
           "-D %d; each server on one core, h2load on the "
           "other; median of %d rounds; nginx %s." % (
               h2v, args.clients, args.streams, args.duration, args.rounds,
               ng), "",
           "| file | moonsocket req/s | nginx req/s | ratio | "
           "moonsocket CPU us/req | nginx CPU us/req |",
           "| --- | --- | --- | --- | --- | --- |"]
    for label, _ in SIZES:
        m = results[("moonsocket", label)]
        n = results[("nginx", label)]
        mr = statistics.median(r[0] for r in m)
        nr = statistics.median(r[0] for r in n)
        out.append("| %s | %.0f | %.0f | %.2f | %.1f | %.1f |" % (
            label, mr, nr, mr / nr, statistics.median(r[1] for r in m),
            statistics.median(r[1] for r in n)))
    return out


if __name__ == "__main__":
    sys.exit(main())
