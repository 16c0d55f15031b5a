"""Server RSS per idle WebSocket: open N upgraded connections to a running
server and compare its VmRSS before and after.

usage: idle_rss.py PID PORT [N]   (raise `ulimit -n` above N first)
"""
import sys
import time

from procs import rss_kib, ws_upgrade


def main():
    pid, port = int(sys.argv[1]), int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    warm = []
    for _ in range(100):            # let allocators reach a steady state
        warm.append(ws_upgrade(port))
    for s in warm:
        s.close()
    time.sleep(0.5)
    before = rss_kib(pid)
    socks = [ws_upgrade(port) for _ in range(n)]
    time.sleep(0.5)
    after = rss_kib(pid)
    per = (after - before) * 1024 / n
    print(f"connections={n} rss_before_kib={before} rss_after_kib={after} "
          f"bytes_per_connection={per:.0f}")
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
