#!/bin/sh
# spec/valgrind.sh - the busted suite with every server it starts under
# valgrind's memcheck (spec/helper.lua: MOONSOCKET_WRAPPER), its waits
# stretched (MOONSOCKET_TIMESCALE, 4 by default), one log per process
# in test-output/valgrind/.  Exits non-zero when a spec failed or when any
# log holds an error or a definitely lost block; prints those reports.
#   spec/valgrind.sh [busted arguments, e.g. spec/abuse_spec.lua]
set -u
cd "$(dirname "$0")/.."
bin=${MOONSOCKET_BIN:-build/moonsocket}
logs=test-output/valgrind
[ -x "$bin" ] || { echo "no $bin: make build"; exit 1; }
rm -rf "$logs"
mkdir -p "$logs"
# copies, so that a rebuild meanwhile changes nothing under test (the
# embedding spec finds examples/embed-host beside the runner)
cp "$bin" "$logs/moonsocket" || exit 1
host=$(dirname "$bin")/examples/embed-host
if [ -e "$host" ]; then
  mkdir -p "$logs/examples" && cp "$host" "$logs/examples/" || exit 1
fi

# Errors make the server exit 99, which the specs' teardown reports too.
wrapper="valgrind --error-exitcode=99 --leak-check=full \
--errors-for-leak-kinds=definite --show-leak-kinds=definite \
--num-callers=30 --log-file=$PWD/$logs/vg.%p.log"

echo "busted with $bin under valgrind (TAP in $logs/busted.tap)"
start=$(date +%s)
env MOONSOCKET_BIN="$logs/moonsocket" MOONSOCKET_WRAPPER="$wrapper" \
  MOONSOCKET_TIMESCALE="${MOONSOCKET_TIMESCALE:-4}" \
  LUA_PATH='lua/?.lua;lua/?/init.lua;spec/?.lua;;' \
  LUA_CPATH='build/lib/?.so;;' \
  lua5.4 /usr/bin/busted -o TAP "$@" > "$logs/busted.tap" 2>&1
status=$?
passed=$(grep -c '^ok ' "$logs/busted.tap")
failed=$(grep -c '^not ok ' "$logs/busted.tap")
awk '/^not ok/ { show = 1 } /^ok / { show = 0 } show' "$logs/busted.tap" |
  head -200

# Each process's summary; the reports of those with errors in full.  A
# process killed by SIGKILL (a spec kills a worker on purpose; stop()
# kills a server that would not exit, and that spec fails) leaves no
# summary: named, not counted.
processes=0 bad=0 killed=""
for log in "$logs"/vg.*.log; do
  [ -e "$log" ] || continue
  processes=$((processes + 1))
  if grep -q 'ERROR SUMMARY: [1-9]' "$log" ||
     grep -q 'definitely lost: [1-9]' "$log"; then
    bad=$((bad + 1))
    echo "== $log"
    cat "$log"
  elif ! grep -q 'ERROR SUMMARY: 0 errors' "$log"; then
    killed="$killed $(sed -n 's/^==[0-9]*== Command: //p' "$log" |
      head -1) ($log)"
  fi
done
[ -n "$killed" ] && echo "no summary (killed):$killed"
echo "valgrind: $processes server processes, $bad with errors or definite" \
  "leaks; specs $passed passed, $failed failed" \
  "($(( $(date +%s) - start )) s)"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ] && [ "$bad" -eq 0 ] &&
  [ "$processes" -gt 0 ]
