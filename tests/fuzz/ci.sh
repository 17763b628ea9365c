#!/bin/sh
# ci.sh - the meson test of one fuzz target (tests/fuzz/meson.build):
# replay every seed, then fuzz a fixed number of inputs.
#
#   ci.sh TARGET CORPUS OUTDIR RUNS [DICT]
#
# The replay runs each file of CORPUS once, as a regression test: a seed
# that crashes, leaks or times out fails the test. The fuzzing step runs
# RUNS inputs from a fixed seed (FUZZ_SEED, default 1), so that every CI
# run of the same commit tries the same inputs: a finding fails the commit
# that brought it, not a later one by chance. It stops after FUZZ_CAP
# seconds (default 120) on a slow machine. It writes what it finds to
# OUTDIR/new (never into CORPUS) and any crashing input to
# OUTDIR/artifacts/, whose path it prints. Exploring with other seeds is
# what tests/fuzz/run.sh does.
set -eu

target=$1 corpus=$2 out=$3 runs=$4 dict=${5:-}
seed=${FUZZ_SEED:-1} cap=${FUZZ_CAP:-120}

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
"$target" -runs="$runs" -seed="$seed" -max_total_time="$cap" \
	-timeout=10 -print_final_stats=1 \
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
