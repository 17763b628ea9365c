#!/usr/bin/env bash
# soak.sh - the full reliability suites, one after the other. CI runs the
# small versions (meson test --suite crash); this runs them at full size
# and takes hours. Each suite prints its figures in its last line; this
# script prints every last line again at the end and exits non-zero if any
# suite failed.
#
#   tools/soak.sh [--quick]     (--quick: a tenth of every size)
#
# Needs root (tmpfs mounts, drop_caches), and the builds that
# tools/quickstart test makes (build, build-crash, build-fiu); it makes
# build-asan for the sanitizer run.
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
scale=1
[ "${1:-}" = --quick ] && scale=10

export JOBFS_BIN=$here/build/jobfs
export JOBFS_TESTWORKER=$here/build/tools/jobfs-testworker
export JOBFS_WAVWORKER=$here/build/tools/jobfs-wavworker
export JOBFS_CHECK=$here/build/tools/jobfs-check

for b in build build-crash build-fiu; do
	[ -f $b/build.ninja ] || { echo "soak: no $b: run tools/quickstart test first"; exit 2; }
	ninja -C $b >/dev/null || exit 2
done

log=$(mktemp -d /tmp/jobfs-soak.XXXXXX)
status=0
lines=()
run() { # name command...
	local name=$1
	shift
	echo "soak: $name: $*"
	"$@" > "$log/$name.log" 2>&1
	local rc=$?
	lines+=("$(tail -n 1 "$log/$name.log")  [exit $rc]")
	[ $rc -eq 0 ] || status=1
	tail -n 1 "$log/$name.log"
}

run kill9 python3 tests/crash/kill9.py --kills $((1000 / scale))
run crashpoints python3 tests/crash/crashpoints.py --max-k $((scale == 1 ? 5 : 2))
run persist-audit python3 tests/crash/persist_audit.py --mutants --chunks 200
run powerloss python3 tests/crash/powerloss.py --cycles $((300 / scale)) \
	--mutants --coverage --crash-build build-crash
run faults python3 tests/crash/faults.py --runs $((300 / scale))
run fulldisk python3 tests/crash/fulldisk.py --map-chunks $((20000 / scale))
run integrity python3 tests/crash/integrity.py --rounds $((200 / scale))
run supervise python3 tests/crash/supervise.py $([ $scale = 1 ] || echo --small)

# sanitizers: the unit and integration suites under ASan+UBSan, and the
# unit tests under valgrind
[ -f build-asan/build.ninja ] || meson setup build-asan \
	-Db_sanitize=address,undefined -Db_lundef=false >/dev/null
ninja -C build-asan >/dev/null || exit 2
run asan env ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 JOBFS_TEST_DEADLINE=900 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	meson test -C build-asan --suite unit --suite integration \
	--print-errorlogs
run valgrind meson test -C build --suite unit \
	--wrapper 'valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite -q'

echo
echo "soak: logs in $log"
printf 'soak: %s\n' "${lines[@]}"
exit $status
