#!/bin/sh
# fuzz/run.sh - fuzz each target for a while, then replay the inputs kept
# in regressions/<target>/; print one TAP line per target (and the guard
# test's lines with -g) and exit non-zero if anything failed.
#   run.sh [-b BUILD] [-t SECONDS] [-g] TARGET...
# -t 0 only replays.  FUZZ_KEEP_GOING=1 runs libFuzzer in fork mode past
# crashes, to collect every distinct one in BUILD/artifacts/<target>/.
set -u
cd "$(dirname "$0")" || exit 2
build=../build/fuzz
seconds=60
guard=0
while getopts b:t:g opt; do
  case $opt in
  b) build=$OPTARG ;;
  t) seconds=$OPTARG ;;
  g) guard=1 ;;
  *) echo "usage: run.sh [-b BUILD] [-t SECONDS] [-g] TARGET..." >&2
     exit 2 ;;
  esac
done
shift $((OPTIND - 1))

count=0
failed=0

# the lines of a libFuzzer log that say what went wrong, as TAP comments
explain() {
  grep -E 'check failed|^  [^ ]|ERROR: |SUMMARY: |Test unit written' "$1" |
    grep -v 'NEW_FUNC' | head -n 12 | sed 's/^/# /'
}

for target in "$@"; do
  count=$((count + 1))
  bin=$build/fuzz_$target
  logs=$build/logs
  mkdir -p "$build/corpus/$target" "$build/artifacts/$target" "$logs"
  log=$logs/$target.log
  ok=1
  line=""
  notes=""

  if [ "$seconds" -gt 0 ]; then
    dict=""
    [ -f "dict/$target.dict" ] && dict="-dict=dict/$target.dict"
    keep=""
    [ "${FUZZ_KEEP_GOING:-0}" = 1 ] && keep="-fork=1 -ignore_crashes=1"
    # new inputs go to BUILD/corpus; corpus/ holds the seeds, read-only
    # shellcheck disable=SC2086
    "$bin" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 \
      -rss_limit_mb=2048 -artifact_prefix="$build/artifacts/$target/" \
      $dict $keep "$build/corpus/$target" "corpus/$target" >"$log" 2>&1
    status=$?
    # the fork mode's lines are "#N: cov: C ...", the others' "#N ..."
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" |
      tail -n 1)
    [ -n "$execs" ] ||
      execs=$(sed -n 's/^#\([0-9]*\):* .*cov: .*/\1/p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(sed -n 's/.* cov: \([0-9]*\) .*/\1/p' "$log" | tail -n 1)
    crashes=$(sed -n 's|.*oom/timeout/crash: [0-9]*/[0-9]*/\([0-9]*\).*|\1|p' \
      "$log" | tail -n 1)
    line="${execs:-?} execs, ${cov:-?} coverage"
    [ -n "$rate" ] && line="$line, $rate execs/s"
    if [ -n "$keep" ] && [ "${crashes:-0}" -gt 0 ]; then
      ok=0
      line="$line, $crashes crashes (log: $log)"
      notes="# replay one to see its failure: $bin INPUT
# $(find "$build/artifacts/$target" -type f | wc -l) inputs in \
$build/artifacts/$target/"
    elif [ "$status" -ne 0 ]; then
      ok=0
      line="$line, crashed (log: $log)"
      notes=$(explain "$log")
    fi
  fi

  replayed=0
  again=0
  for input in "regressions/$target"/*; do
    [ -f "$input" ] || continue
    replayed=$((replayed + 1))
    if ! "$bin" "$input" >"$logs/$target.replay.log" 2>&1; then
      ok=0
      again=$((again + 1))
      notes="$notes
# regression $input fails again:
$(explain "$logs/$target.replay.log")"
    fi
  done
  [ "$replayed" -gt 0 ] &&
    line="${line:+$line, }$replayed regressions replayed"
  [ "$again" -gt 0 ] && line="$line, $again failing"
  [ -n "$line" ] || line="no regressions to replay"

  if [ "$ok" = 1 ]; then
    echo "ok $count - fuzz $target: $line"
  else
    failed=$((failed + 1))
    echo "not ok $count - fuzz $target: $line"
    [ -n "$notes" ] && printf '%s\n' "$notes" | sed '/^$/d'
  fi
done

if [ "$guard" = 1 ]; then
  out=$("$build/guard" corpus $((count + 1))) || failed=$((failed + 1))
  printf '%s\n' "$out"
  count=$((count + $(printf '%s\n' "$out" | grep -c '^\(not \)\{0,1\}ok ')))
fi
echo "1..$count"
[ "$failed" -eq 0 ]
