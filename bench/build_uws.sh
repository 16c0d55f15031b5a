#!/bin/sh
# build_uws.sh - builds uWebSockets' examples/EchoServer.cpp as the
# optional peer of run_peers.py (UWS_ECHO) and callgrind_uws.py.
#
#     bench/build_uws.sh UWEBSOCKETS_DIR USOCKETS_DIR OUTPUT
#
# The sources are checkouts of github.com/uNetworking/uWebSockets and
# github.com/uNetworking/uSockets kept outside this repository; nothing
# of them is committed here.  The build follows upstream's (uSockets'
# Makefile, uWebSockets' build.c: -O3, LTO, C11 and C++2b, zlib) with
# three differences:
#   - plain ws:// only (LIBUS_NO_SSL) on uSockets' default epoll backend;
#   - no -march=native, so that valgrind can run the binary (-g added
#     for callgrind's function names; it does not change the code);
#   - a copy of the example listens on the port given as its first
#     argument (9001 without one) instead of a fixed 9001.
# The example's own settings stay: deflate offered (loadgen does not
# ask for it), 100 MiB messages, idleTimeout 16 s with automatic pings.
# It needs g++ and patch (`make -C bench deps` installs them).
set -eu

if [ $# -ne 3 ]; then
  echo "usage: $0 UWEBSOCKETS_DIR USOCKETS_DIR OUTPUT" >&2
  exit 2
fi
uws=$(cd "$1" && pwd)
us=$(cd "$2" && pwd)
out=$3
CC=${CC:-cc}
CXX=${CXX:-g++}
OPT="-O3 -g -flto=auto"

for f in "$uws/examples/EchoServer.cpp" "$uws/src/App.h" \
         "$us/src/libusockets.h" "$us/src/eventing/epoll_kqueue.c"; do
  [ -f "$f" ] || { echo "$0: $f is missing" >&2; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/build-uws.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# uSockets as its Makefile builds it, without TLS
(cd "$tmp" && $CC -DLIBUS_NO_SSL -std=c11 -I"$us/src" $OPT -c \
   "$us"/src/*.c "$us"/src/eventing/*.c "$us"/src/crypto/*.c)

# The example, its port taken from argv
sed -e 's/^int main() {$/int main(int argc, char **argv) {\
    int port = argc > 1 ? atoi(argv[1]) : 9001;/' \
    -e 's/\.listen(9001, \[\]/.listen(port, [port]/' \
    -e 's/<< 9001 <</<< port <</' \
    "$uws/examples/EchoServer.cpp" > "$tmp/EchoServer.cpp"
if ! grep -q 'atoi(argv\[1\])' "$tmp/EchoServer.cpp" ||
   ! grep -q 'listen(port, \[port\]' "$tmp/EchoServer.cpp"; then
  echo "$0: EchoServer.cpp changed upstream; the port patch did not" \
       "apply" >&2
  exit 1
fi

$CXX -std=c++2b $OPT -Wall -I"$uws/src" -I"$us/src" \
  "$tmp/EchoServer.cpp" "$tmp"/*.o -lz -o "$out"
echo "built $out"
