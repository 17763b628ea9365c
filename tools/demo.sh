#!/usr/bin/env bash
# demo.sh - a whole jobfs session on the default store: mount, a job that
# turns a 15-paragraph text into speech with espeak-ng, one chunk that fails
# once and is retried, output.wav copied out, unmount. Run through
# tools/quickstart demo.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
jobfs=${JOBFS:-$here/build/jobfs}
mnt=$(mktemp -d /tmp/jobfs-demo.XXXXXX)
out=${DEMO_OUT:-$PWD/jobfs-demo-output.wav}
job=demo-$(date +%Y%m%d-%H%M%S)

cleanup() {
	cd /
	if grep -q " $mnt " /proc/self/mounts; then
		fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt"
	fi
	rmdir "$mnt" 2>/dev/null || true
}
trap cleanup EXIT

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

say "jobfs $mnt"
"$jobfs" "$mnt"
for _ in $(seq 50); do grep -q " $mnt " /proc/self/mounts && break; sleep 0.1; done

say "mkdir $mnt/$job"
mkdir "$mnt/$job"

spec=$(printf '{"command": ["%s", "espeak-ng", "--stdin", "--stdout"], "output": "wav", "join": {"gap_ms": 300}, "parallel": 2, "backoff": {"initial": 1}}' \
	"$here/tools/demo/flaky")
say "echo '$spec' > $mnt/$job/spec"
echo "$spec" > "$mnt/$job/spec"

say "cp tools/demo/chapter.txt $mnt/$job/input"
cp "$here/tools/demo/chapter.txt" "$mnt/$job/input"
cat "$mnt/$job/status"

say "echo resume > $mnt/$job/control"
echo resume > "$mnt/$job/control"

shown=0
for _ in $(seq 300); do
	state=$(sed -n 's/^state *//p' "$mnt/$job/status")
	if [ "$shown" = 0 ] && grep -q '"retry-scheduled"' "$mnt/$job/events"; then
		say "cat $mnt/$job/status     # chunk 3 failed once and waits for its retry"
		cat "$mnt/$job/status"
		say "cat $mnt/$job/logs/0003.log"
		cat "$mnt/$job/logs/0003.log"
		shown=1
	fi
	case $state in done|failed) break ;; esac
	sleep 0.1
done

say "cat $mnt/$job/status"
cat "$mnt/$job/status"
say "ls $mnt/$job/chunks"
ls "$mnt/$job/chunks"
say "grep -c . $mnt/$job/events"
grep -c . "$mnt/$job/events"

say "soxi $mnt/$job/output.wav"
soxi "$mnt/$job/output.wav"
cp "$mnt/$job/output.wav" "$out"
say "fusermount3 -u $mnt"
fusermount3 -u "$mnt"
echo
echo "demo: job '$job' is $state"
echo "demo: output.wav copied to $out, $(soxi -D "$out") seconds"
echo "demo: the job stays in the default store; mount it again to see it"
[ "$state" = done ]
