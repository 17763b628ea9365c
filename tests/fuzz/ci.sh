#!/bin/sh
# ci.sh - the meson test of one fuzz target (tests/fuzz/meson.build):
# replay every seed, then fuzz for a short time.
#
#   ci.sh TARGET CORPUS OUTDIR SECONDS [DICT]
#
# The replay runs each file of CORPUS once, as a regression test: a seed
# that crashes, leaks or times out fails the test. The fuzzing step writes
# what it finds to OUTDIR/new (never into CORPUS) and any crashing input
# to OUTDIR/artifacts/, whose path it prints.
set -eu

target=$1 corpus=$2 out=$3 seconds=$4 dict=${5:-}

# halt on the first UBSan report too, with a stack; known LeakSanitizer
# noise is in lsan.supp
UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
LSAN_OPTIONS=${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$(cd "$(dirname "$0")" && pwd)/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS LSAN_OPTIONS

rm -rf "$out"
mkdir -p "$out/new" "$out/artifacts"

dict_arg=
if [ -n "$dict" ] && [ -f "$dict" ]; then
	dict_arg=-dict=$dict
fi

start=$(date +%s)
# shellcheck disable=SC2086  # the seeds' names have no blanks
"$target" -timeout=10 -artifact_prefix="$out/artifacts/" \
	"$corpus"/* >"$out/replay.log" 2>&1 || {
	tail -n 60 "$out/replay.log"
	echo "ci.sh: replaying $corpus failed (log: $out/replay.log)" >&2
	exit 1
}
replayed=$(find "$corpus" -type f | wc -l)
echo "replayed $replayed seeds in $(($(date +%s) - start)) s"

status=0
# shellcheck disable=SC2086  # dict_arg is one word or none
"$target" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
	-artifact_prefix="$out/artifacts/" $dict_arg \
	"$out/new" "$corpus" >"$out/fuzz.log" 2>&1 || status=$?
grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' \
	"$out/fuzz.log" || true
if [ "$status" -ne 0 ]; then
	tail -n 60 "$out/fuzz.log"
	echo "ci.sh: fuzzing failed with status $status; input saved in" \
		"$out/artifacts/ (log: $out/fuzz.log)" >&2
	exit 1
fi
