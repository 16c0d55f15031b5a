#!/usr/bin/python3
"""A DNS server over UDP for the resolver's tests (RFC 1035 section 4).

Usage: dns_server.py [--delay SECONDS] [--silent] NAME=ADDR[,ADDR...][/TTL]...

Binds a random port on 127.0.0.1 and prints "dns on 127.0.0.1:PORT".
Each query is printed as "query NAME TYPE" (A, AAAA or the number) and
answered after --delay seconds (1 by default), other queries being read
and answered meanwhile:
  a NAME given     its IPv4 addresses for A, its IPv6 ones for AAAA,
                   with TTL (300 by default); no record of the type
                   asked: NOERROR and no answer
  any other name   NXDOMAIN
--silent reads and prints the queries and never answers.
"""

import heapq
import ipaddress
import select
import socket
import struct
import sys
import time

TYPE_A, TYPE_AAAA, CLASS_IN = 1, 28, 1
RCODE_NXDOMAIN = 3


def parse_args(argv):
    delay, silent, names = 1.0, False, {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--delay":
            delay = float(args.pop(0))
        elif arg == "--silent":
            silent = True
        else:
            name, _, rest = arg.partition("=")
            rest, _, ttl = rest.partition("/")
            addrs = [ipaddress.ip_address(a) for a in rest.split(",") if a]
            names[name.lower()] = (addrs, int(ttl or 300))
    return delay, silent, names


def read_question(data):
    """(id, flags, name, qtype, end of the question) of a query."""
    qid, flags, qdcount = struct.unpack("!HHH", data[:6])
    if qdcount != 1:
        raise ValueError("one question expected")
    labels, pos = [], 12
    while data[pos]:
        n = data[pos]
        labels.append(data[pos + 1:pos + 1 + n].decode("ascii", "replace"))
        pos += 1 + n
    qtype, qclass = struct.unpack("!HH", data[pos + 1:pos + 5])
    return qid, flags, ".".join(labels), qtype, pos + 5


def reply(data, names):
    qid, flags, name, qtype, end = read_question(data)
    known = names.get(name.lower().rstrip("."))
    records = []
    if known:
        addrs, ttl = known
        version = 4 if qtype == TYPE_A else 6 if qtype == TYPE_AAAA else 0
        for addr in addrs:
            if addr.version == version:
                rdata = addr.packed
                # the name by pointer to the question (offset 12)
                records.append(struct.pack("!HHHIH", 0xC00C, qtype, CLASS_IN,
                                           ttl, len(rdata)) + rdata)
    rcode = 0 if known else RCODE_NXDOMAIN
    # QR, the query's RD, RA
    out_flags = 0x8000 | (flags & 0x0100) | 0x0080 | rcode
    header = struct.pack("!HHHHHH", qid, out_flags, 1, len(records), 0, 0)
    return name, qtype, header + data[12:end] + b"".join(records)


def main():
    delay, silent, names = parse_args(sys.argv[1:])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    print("dns on 127.0.0.1:%d" % sock.getsockname()[1], flush=True)
    due, seq = [], 0                   # (when, seq, answer, address)
    while True:
        wait = max(0.0, due[0][0] - time.monotonic()) if due else None
        readable, _, _ = select.select([sock], [], [], wait)
        if readable:
            data, peer = sock.recvfrom(4096)
            try:
                name, qtype, answer = reply(data, names)
            except (ValueError, IndexError, struct.error):
                continue
            kind = {TYPE_A: "A", TYPE_AAAA: "AAAA"}.get(qtype, str(qtype))
            print("query %s %s" % (name, kind), flush=True)
            if not silent:
                seq += 1
                heapq.heappush(due, (time.monotonic() + delay, seq, answer,
                                     peer))
        now = time.monotonic()
        while due and due[0][0] <= now:
            _, _, answer, peer = heapq.heappop(due)
            sock.sendto(answer, peer)


if __name__ == "__main__":
    main()
