#!/bin/sh
# run.sh - fuzz jobfs for a while (docs/fuzzing.md).
#
#   tests/fuzz/run.sh [SECONDS] [TARGET...]
#
# Sets up (once) a clang build in build-fuzz/ with libFuzzer, ASan and
# UBSan, builds the targets, and runs every TARGET (default: all six) for
# SECONDS (default 3600) at the same time, so the whole run takes SECONDS
# whatever the number of targets; they share the machine's cores. A target
# that stops on a crash is started again until its time is up, so one bug
# does not end the run. Ends with one line: per target the executions,
# executions per second, crashes (including out-of-memory), timeouts and
# leaks.
#
# What each target keeps:
#   build-fuzz/fuzz-corpus/TARGET/      the corpus it grew (seeds are read
#                                       from tests/fuzz/corpus/TARGET/)
#   build-fuzz/fuzz-runs/STAMP/TARGET/  logs, and artifacts/ with every
#                                       input that crashed, leaked or hung
#
# Environment: FUZZ_BUILD (build directory, default build-fuzz),
# FUZZ_JOBS (how many targets run at once, default all), FUZZ_TIMEOUT
# (seconds one input may take, default 25), FUZZ_RUNS (stop a target once
# it has run this many inputs, even before SECONDS; default no limit),
# FUZZ_PROCS (processes per target, each on the target's shared corpus,
# default 1; FUZZ_RUNS is then their total), FUZZ_LEAKS (after-input,
# the default: libFuzzer looks for leaks after every input that ends with
# more allocations than frees; exit: LeakSanitizer looks once, when each
# process ends, over everything its inputs left behind).
set -eu

all="fuzz_spec fuzz_chunker fuzz_control fuzz_verbs fuzz_wav fuzz_keys"
src=$(cd "$(dirname "$0")/../.." && pwd)
cd "$src"

seconds=3600
case ${1:-} in
'') ;;
*[!0-9]*) ;;
*) seconds=$1; shift ;;
esac
targets=${*:-$all}
for t in $targets; do
	case " $all " in
	*" $t "*) ;;
	*) echo "run.sh: unknown target '$t' (targets: $all)" >&2; exit 2 ;;
	esac
done

build=${FUZZ_BUILD:-build-fuzz}
per_input=${FUZZ_TIMEOUT:-25}
jobs=${FUZZ_JOBS:-0}
max_runs=${FUZZ_RUNS:-0}
procs=${FUZZ_PROCS:-1}
case $procs in
'' | *[!0-9]* | 0) echo "run.sh: FUZZ_PROCS must be a number above 0" >&2
	exit 2 ;;
esac
case ${FUZZ_LEAKS:-after-input} in
after-input) leak_flag= ;;
exit) leak_flag=-detect_leaks=0 ;;
*) echo "run.sh: FUZZ_LEAKS is after-input or exit" >&2; exit 2 ;;
esac

if ! command -v clang >/dev/null 2>&1; then
	echo "run.sh: clang is needed (apt-get install -y clang" \
		"libclang-rt-14-dev)" >&2
	exit 2
fi
if [ ! -f "$build/build.ninja" ]; then
	CC=clang meson setup "$build" -Dfuzz=true -Db_lundef=false \
		-Db_sanitize=address,undefined -Dbuildtype=debugoptimized \
		-Dc_args='-fsanitize=fuzzer-no-link -fno-sanitize-recover=all' \
		>"$build.setup.log" 2>&1 || {
		cat "$build.setup.log" >&2
		exit 2
	}
	rm -f "$build.setup.log"
fi
exes=
for t in $targets; do
	exes="$exes tests/fuzz/$t"
done
# shellcheck disable=SC2086  # one word per target
if ! ninja -C "$build" $exes >"$build/fuzz-build.log" 2>&1; then
	tail -n 40 "$build/fuzz-build.log" >&2
	if grep -q "unknown target" "$build/fuzz-build.log"; then
		echo "run.sh: the fuzz targets are not in the build: is" \
			"subdir('fuzz') in tests/meson.build, and" \
			"-Dfuzz=true set in $build?" >&2
	fi
	exit 2
fi

stamp=$(date +%Y%m%d-%H%M%S)
runs=$build/fuzz-runs/$stamp
mkdir -p "$runs"
UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
LSAN_OPTIONS=${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$src/tests/fuzz/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS LSAN_OPTIONS

# Fuzz one target in process slot P until its time is up (or it has run
# its share of FUZZ_RUNS); writes TARGET/totals.P:
# "executions seconds-run runs".
fuzz_one() {
	t=$1 p=$2
	dir=$runs/$t
	corpus=$build/fuzz-corpus/$t
	share=$(((max_runs + procs - 1) / procs))
	mkdir -p "$dir/artifacts" "$corpus"
	dict=
	[ -f "tests/fuzz/$t.dict" ] && dict=-dict=tests/fuzz/$t.dict
	end=$(($(date +%s) + seconds))
	execs=0 ran=0 n=0 quick=0
	while :; do
		now=$(date +%s)
		left=$((end - now))
		[ "$left" -ge 1 ] || break
		limit=
		if [ "$max_runs" -gt 0 ]; then
			[ "$execs" -lt "$share" ] || break
			limit=-runs=$((share - execs))
		fi
		n=$((n + 1))
		rc=0
		log=$dir/log.$p.$n
		# shellcheck disable=SC2086  # one word or none each
		"$build/tests/fuzz/$t" -max_total_time="$left" $limit \
			$leak_flag -timeout="$per_input" -print_final_stats=1 \
			-artifact_prefix="$dir/artifacts/" $dict \
			"$corpus" "tests/fuzz/corpus/$t" \
			>"$log" 2>&1 || rc=$?
		took=$(($(date +%s) - now))
		ran=$((ran + took))
		e=$(sed -n 's/^stat::number_of_executed_units: *//p' \
			"$log" | tail -n 1)
		execs=$((execs + ${e:-0}))
		[ "$rc" -eq 0 ] && continue
		# stopped on a finding: go on, unless it stops at once again
		# and again (a crash during start-up)
		if [ "$took" -lt 5 ]; then
			quick=$((quick + 1))
			if [ "$quick" -ge 3 ]; then
				echo "run.sh: $t keeps failing at start;" \
					"see $log" >&2
				break
			fi
		else
			quick=0
		fi
	done
	echo "$execs $ran $n" >"$dir/totals.$p"
}

echo "fuzzing $targets for $seconds s each; logs in $runs" >&2
running=0
for t in $targets; do
	p=1
	while [ "$p" -le "$procs" ]; do
		fuzz_one "$t" "$p" &
		p=$((p + 1))
	done
	running=$((running + 1))
	if [ "$jobs" -gt 0 ] && [ "$running" -ge "$jobs" ]; then
		wait
		running=0
	fi
done
wait

line=
found=0
for t in $targets; do
	dir=$runs/$t
	execs=0 ran=0
	for f in "$dir"/totals.*; do
		read -r e r _ <"$f" || e=0 r=0
		execs=$((execs + e))
		# the processes ran side by side: the run took the longest
		[ "$r" -gt "$ran" ] && ran=$r
	done
	rate=0
	[ "$ran" -gt 0 ] && rate=$((execs / ran))
	crashes=$(find "$dir/artifacts" -name 'crash-*' -o -name 'oom-*' |
		wc -l)
	timeouts=$(find "$dir/artifacts" -name 'timeout-*' | wc -l)
	# a leak found after an input leaves a leak-* file; one found at
	# exit (FUZZ_LEAKS=exit) only the report in the log
	leaks=$(grep -l 'ERROR: LeakSanitizer' "$dir"/log.* | wc -l)
	found=$((found + crashes + timeouts + leaks))
	line="$line${line:+ | }$t: $execs execs, $rate/s, $crashes crashes,"
	line="$line $timeouts timeouts, $leaks leaks"
done
if [ "$found" -gt 0 ]; then
	echo "inputs that failed are in $runs/*/artifacts/" >&2
fi
echo "$line"
[ "$found" -eq 0 ]
