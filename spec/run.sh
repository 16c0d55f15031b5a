#!/bin/sh
# spec/run.sh - run every suite (busted and the browser test, over the
# plain build and over the ASan+UBSan build) and close with one line
# summing them all: "N passed, N failed[, N skipped]".  Exits non-zero if
# anything failed.
set -u
cd "$(dirname "$0")/.."
out=test-output
mkdir -p "$out"
passed=0 failed=0 skipped=0

# run_suite NAME COMMAND...: COMMAND prints TAP
run_suite() {
  name=$1
  shift
  echo "== $name"
  "$@" > "$out/$name.tap" 2>&1
  status=$?
  p=$(grep -c '^ok ' "$out/$name.tap" | tr -d ' ')
  s=$(grep -c '^ok .*# SKIP' "$out/$name.tap" | tr -d ' ')
  f=$(grep -c '^not ok ' "$out/$name.tap" | tr -d ' ')
  p=$((p - s))
  if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then
    f=1    # the runner itself failed: count it
  fi
  # each failure with the lines that explain it
  awk '/^not ok/ { show = 1 } /^ok / { show = 0 } show' "$out/$name.tap" |
    head -80
  echo "$name: $p passed, $f failed, $s skipped"
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
}

export LUA_PATH='lua/?.lua;lua/?/init.lua;spec/?.lua;;'

run_suite busted env MOONSOCKET_BIN=build/moonsocket \
  LUA_CPATH='build/lib/?.so;;' lua5.4 /usr/bin/busted -o TAP

asan_lib=$(${CC:-cc} -print-file-name=libasan.so)
ubsan_lib=$(${CC:-cc} -print-file-name=libubsan.so)
run_suite busted-asan env MOONSOCKET_BIN=build/asan/moonsocket \
  LUA_CPATH='build/asan/lib/?.so;;' LD_PRELOAD="$asan_lib $ubsan_lib" \
  ASAN_OPTIONS=detect_leaks=0 lua5.4 /usr/bin/busted -o TAP \
  --cpath='build/asan/lib/?.so'

# C unit tests of the core's pure modules (plain and ASan+UBSan)
run_suite c-units make --no-print-directory -C spec/c

# the hot path's instructions per echo against the committed budget
run_suite callgrind-guard make --no-print-directory -s -C bench guard

# 10,000 connections churning for 10 s (make soak: 300 s): no errors, and
# the heap and descriptors back once all are closed; RSS, noisier over
# so short a run, only within 50 %
run_suite soak env SOAK_SECONDS=10 SOAK_WARMUP=2 SOAK_REWARM=2 \
  make --no-print-directory -s -C bench soak \
  SOAK_FLAGS='--tolerance 0.5 --hold 1'

# every parser fuzzed for a short smoke, the regressions replayed, and
# each run on inputs that end at an unreadable page
run_suite fuzz-smoke make --no-print-directory -C fuzz smoke

# the sample page in headless Chromium, against each build
run_suite browser env MOONSOCKET_BIN=build/moonsocket \
  node --test --test-reporter=tap spec/browser/
run_suite browser-asan env MOONSOCKET_BIN=build/asan/moonsocket \
  node --test --test-reporter=tap spec/browser/
run_suite browser-tls-asan env MOONSOCKET_BIN=build/asan/moonsocket \
  BROWSER_TLS=1 node --test --test-reporter=tap spec/browser/

line="$passed passed, $failed failed"
[ "$skipped" -gt 0 ] && line="$line, $skipped skipped"
echo "$line"
[ "$failed" -eq 0 ]
