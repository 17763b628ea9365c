#!/usr/bin/env bash
# bench-output-wav.sh - how soon output.wav is readable after the last chunk
# of a long audio job commits, and how fast it streams next to reading the
# chunk objects themselves. A benchmark, not a test: it prints figures.
#
#   tools/bench-output-wav.sh [CHUNKS] [SECONDS_PER_CHUNK]
#
# Defaults: 3600 chunks of 10 s (10 hours of 22050 Hz mono 16-bit audio,
# 1.6 GB). Needs root for dropping the page cache (cold figures); without
# it only warm figures are printed. Uses build/jobfs and
# build/tools/jobfs-wavworker.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
chunks=${1:-3600}
secs=${2:-10}
frames=$((secs * 22050))
root=$(mktemp -d /tmp/jobfs-bench-wav.XXXXXX)
store=$root/store
mnt=$root/mnt
mkdir -p "$mnt"

cleanup() {
	cd /
	grep -q " $mnt " /proc/self/mounts && fusermount3 -u "$mnt"
	rm -rf "$root"
}
trap cleanup EXIT

drop() {
	sync
	if [ -w /proc/sys/vm/drop_caches ]; then
		echo 3 > /proc/sys/vm/drop_caches
		return 0
	fi
	return 1
}

secs_of() { # command... -> elapsed seconds
	local t0 t1
	t0=$(date +%s.%N)
	"$@" > /dev/null 2>&1
	t1=$(date +%s.%N)
	echo "$t1 - $t0" | bc -l
}

"$here/build/jobfs" --store "$store" "$mnt"
job=$mnt/long
mkdir "$job"
printf '{"command": ["%s"], "output": "wav", "chunking": {"by": "line"}, "parallel": 2, "env": {"WW_FRAMES": "%d"}}\n' \
	"$here/build/tools/jobfs-wavworker" "$frames" > "$job/spec"
seq 1 "$chunks" | sed 's/^/line /' > "$root/input"
cp "$root/input" "$job/input"
echo "bench: rendering $chunks chunks of $secs s ..."
echo start > "$job/control"
until grep -q '^state *done' "$job/status"; do sleep 0.2; done

python3 - "$job" <<'EOF'
import json, os, sys, time, datetime
job = sys.argv[1]
done = [e for e in map(json.loads, open(job + "/events")) if e["event"] == "done"]
last = datetime.datetime.fromisoformat(done[-1]["time"].replace("Z", "+00:00"))
t0 = time.monotonic()
st = os.stat(job + "/output.wav")
with open(job + "/output.wav", "rb") as f:
    head = f.read(44)
    f.seek(st.st_size - 4096)
    tail = f.read()
t1 = time.monotonic()
print("bench: output.wav %d bytes; stat + open + header + last 4 KiB: %.1f ms"
      % (st.st_size, (t1 - t0) * 1000))
EOF

size=$(stat -c %s "$job/output.wav")
find "$store/objects" -type f | sort > "$root/objs"
read_wav() { dd if="$job/output.wav" of=/dev/null bs=1M 2>/dev/null; }
read_objs() { xargs cat < "$root/objs" > /dev/null; }
median3() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
report() { # mode wav-seconds objects-seconds
	printf 'bench: %s: output.wav %.3f s (%.0f MB/s), the chunk objects %.3f s (%.0f MB/s), output.wav/objects speed %.2f\n' \
		"$1" "$2" "$(echo "$size / $2 / 1000000" | bc -l)" "$3" \
		"$(echo "$size / $3 / 1000000" | bc -l)" "$(echo "$3 / $2" | bc -l)"
}
if drop; then
	a=(); b=()
	for _ in 1 2 3; do
		drop; a+=("$(secs_of read_wav)")
		drop; b+=("$(secs_of read_objs)")
	done
	report "cold (median of 3)" "$(median3 "${a[@]}")" "$(median3 "${b[@]}")"
else
	echo "bench: not root: no cold figures"
fi
read_wav; read_objs
a=(); b=()
for _ in 1 2 3; do
	a+=("$(secs_of read_wav)")
	b+=("$(secs_of read_objs)")
done
report "warm (median of 3)" "$(median3 "${a[@]}")" "$(median3 "${b[@]}")"
