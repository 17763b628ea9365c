#!/usr/bin/env python3
"""fulldisk.py - a full disk and a full LMDB map.

Full disk: the store lives on a small tmpfs. A job whose outputs do not
fit must fail loudly (status names "No space left on device"), the daemon
must not crash (no SIGBUS, no SIGSEGV), every chunk already done must stay
intact (jobfs-check), and once the filesystem is made larger the job must
complete with output byte-identical to a run with room.

Full map: a daemon started with a tiny --map-size runs a job of thousands
of chunks: the map must grow and the job complete (or fail with a clear
error, never crash).

  tests/crash/fulldisk.py [--mb 6] [--chunks 12] [--map-chunks 3000]

Needs root (it mounts tmpfs). The last line reads
  fulldisk: enospc_reported=yes crashes=0 intact=yes completed=yes identical=yes map_completed=yes
and the exit status is 1 when a figure misses.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import shutil

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness as h  # noqa: E402

TOP = os.path.normpath(os.path.join(HERE, "..", ".."))


def checker(store):
    chk = os.environ.get("JOBFS_CHECK") or os.path.join(
        TOP, "build", "tools", "jobfs-check")
    r = subprocess.run([chk, "--store", store], capture_output=True,
                       text=True, timeout=300)
    return r.returncode == 0, (r.stdout.strip().splitlines() or [""])[-1]


def spec(size):
    return {"command": [h.TESTWORKER], "parallel": 2, "attempts": 2,
            "backoff": {"initial": 0.05},
            "env": {"TW_SIZE": str(size)}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=6)
    ap.add_argument("--chunks", type=int, default=12)
    ap.add_argument("--map-chunks", type=int, default=3000)
    a = ap.parse_args()
    fig = {"enospc_reported": "no", "crashes": 0, "intact": "no",
           "completed": "no", "identical": "no", "map_completed": "no"}
    text = h.paragraphs(a.chunks, tag="disk")
    size = 1 << 20
    root = tempfile.mkdtemp(prefix="jobfs-full-", dir="/tmp")
    fs = os.path.join(root, "fs")
    os.makedirs(fs)
    mounted = False
    try:
        # the reference, with room
        ref = h.Daemon(grace=2)
        ref.start()
        try:
            ref.mkjob("j", spec(size), text)
            ref.run_job("j", timeout=120)
            want = h.read_bytes(ref.path("j", "output.out"))
        finally:
            ref.stop()

        subprocess.run(["mount", "-t", "tmpfs", "-o",
                        "size=%dm,mode=0700" % a.mb, "tmpfs", fs],
                       check=True)
        mounted = True
        store = os.path.join(fs, "store")
        d = h.Daemon(store=store, mnt=os.path.join(root, "mnt"), grace=2)
        d.start()
        pid = d.pid
        try:
            d.mkjob("j", spec(size), text)
            d.do("j", "start")
            d.wait_for("j", ("done", "failed"), 120)
            st = h.read_text(d.path("j", "status"))
            sj = d.sj("j")
            if "No space left on device" in st:
                fig["enospc_reported"] = "yes"
            else:
                print("fulldisk: status does not name the full disk:\n" + st)
            if not h.pid_alive(pid):
                fig["crashes"] += 1
            ok, line = checker(store)
            fig["intact"] = "yes" if ok else "no"
            if not ok:
                print("fulldisk: jobfs-check: " + line)
            done_before = sj["chunks"]["done"]
            # room again: the same job completes, identically
            subprocess.run(["mount", "-o", "remount,size=%dm" % (a.mb * 8),
                            fs], check=True)
            d.do("j", "resume")
            d.wait_for("j", "done", 120)
            fig["completed"] = "yes"
            got = h.read_bytes(d.path("j", "output.out"))
            fig["identical"] = "yes" if got == want else "no"
            print("fulldisk: %d of %d chunks were done when the disk was "
                  "full" % (done_before, a.chunks))
        finally:
            d.stop(keep_dirs=True)
            if not h.wait_pid_gone(pid, 10):
                fig["crashes"] += 1

        # a tiny map
        m = h.Daemon(args=["--map-size=65536"], grace=2)
        m.start()
        try:
            m.mkjob("big", {"command": ["cat"], "parallel": 2,
                            "chunking": {"by": "line"}},
                    "".join("line %d\n" % i for i in range(a.map_chunks)))
            m.run_job("big", timeout=600)
            if h.read_bytes(m.path("big", "output.out")) == "".join(
                    "line %d\n" % i for i in range(a.map_chunks)).encode():
                fig["map_completed"] = "yes"
            ok, line = checker(m.store)
            if not ok:
                fig["map_completed"] = "no"
                print("fulldisk: jobfs-check after the map grew: " + line)
        finally:
            m.stop()
    finally:
        if mounted:
            h.unmount(os.path.join(root, "mnt"))
            subprocess.run(["umount", "-l", fs])
        shutil.rmtree(root, True)
    print("fulldisk: " + " ".join("%s=%s" % kv for kv in fig.items()))
    good = (fig["enospc_reported"] == "yes" and fig["crashes"] == 0 and
            all(fig[k] == "yes" for k in ("intact", "completed", "identical",
                                          "map_completed")))
    return 0 if good else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        h.stop_all()
