#!/usr/bin/env python3
"""crashpoints.py - the white-box crash suite.

A build configured with -Dcrashpoints=true dies by SIGKILL at the k-th pass
of a named point when JOBFS_CRASHPOINT=name:k is set (store/crashpoint.h).
For every point and k = 1, 2, ... (until the point is no longer reached, or
--max-k), this suite:

  1. runs a job (spec, input, start) on a fresh store with the crash build
     and the crash point set, until the daemon dies or the job is done;
  2. mounts the store again with the crash build and no crash point (for
     the point "recovery", first once more WITH it: a crash during recovery
     must recover too), checks the invariants, lets the job finish;
  3. compares the output with an uninterrupted run.

Invariants checked after each crash:
  I1  every chunk that had a "done" event before the crash is done after
      the remount, with the same output;
  I2  no such chunk is started again;
  I3  STORE/tmp and STORE/scratch are empty once the daemon has mounted;
  I4  the job completes and output.out is byte-identical to the reference;
  I5  tools/jobfs-check finds no missing, corrupt or miscounted
      object.

  tests/crash/crashpoints.py [--build build-crash] [--max-k 3] [--points a,b]

The last line reads
  crashpoints: points=N runs=N crashed=N violations=N
and the exit status is 1 when violations > 0 or a point was never reached.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness as h  # noqa: E402

TOP = os.path.normpath(os.path.join(HERE, "..", ".."))
POINTS = ["tmp-created", "mid-output", "file-fsync", "rename", "dir-fsync",
          "before-commit", "after-commit", "mid-input", "input-renamed",
          "spec-write", "gc", "recovery"]
TEXT = h.paragraphs(12, tag="cp")
# An input big enough to take several writes, so mid-input can fall
# inside it; and an edit afterwards, so that gc has objects to collect.
BIG = TEXT + ("filler line for a long input. " * 40 + "\n\n") * 40


def events_of(store):
    """Every event of every job in the store's event logs."""
    out = []
    d = os.path.join(store, "events")
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        with open(os.path.join(d, name), errors="replace") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass  # a torn last line: the crash's
    return out


def spec():
    return {"command": [h.TESTWORKER], "parallel": 2,
            "env": {"TW_SLEEP_MS": "20"}}


def drive(d, stage):
    """The scripted session; returns when done or when the daemon died.
    stage is a dict recording how far it got."""
    try:
        os.mkdir(d.path("j"))
        stage["mkdir"] = True
        h.write_file(d.path("j", "spec"), json.dumps(spec()))
        stage["spec"] = True
        # big input in several writes
        fd = os.open(d.path("j", "input"), os.O_WRONLY | os.O_TRUNC)
        data = BIG.encode()
        for i in range(0, len(data), 8192):
            os.write(fd, data[i:i + 8192])
        os.close(fd)
        stage["input"] = True
        h.write_file(d.path("j", "control"), "start\n")
        d.wait_until(lambda: d.sj("j")["state"] == "done" or not d.alive(),
                     60, "done or dead")
        if not d.alive():
            return
        stage["done1"] = True
        # edit: the old plan's outputs become garbage for gc
        h.write_file(d.path("j", "input"), TEXT)
        h.write_file(d.path("j", "spec"),
                     json.dumps(dict(spec(), params={"v": 2})))
        h.write_file(d.path("j", "control"), "start\n")
        d.wait_until(lambda: d.sj("j")["state"] == "done" or not d.alive(),
                     60, "done or dead")
        if d.alive():
            stage["done2"] = True
    except (OSError, RuntimeError) as e:
        stage["error"] = str(e)  # the daemon died under us


def reference(build):
    """The output of the same session without any crash."""
    d = h.Daemon(args=[], grace=2)
    d_bin = h.JOBFS
    try:
        h.JOBFS = os.path.join(build, "jobfs")
        d.start()
        stage = {}
        drive(d, stage)
        assert stage.get("done2"), "the reference run did not finish"
        return h.read_bytes(d.path("j", "output.out"))
    finally:
        h.JOBFS = d_bin
        d.stop()


def run_checker(store):
    chk = os.environ.get("JOBFS_CHECK") or os.path.join(
        TOP, "build", "tools", "jobfs-check")
    if not os.access(chk, os.X_OK):
        return 1, ["no checker at %s" % chk]
    r = subprocess.run([chk, "--store", store], capture_output=True,
                       text=True, timeout=120)
    return r.returncode, r.stdout.strip().splitlines()[-1:] or [""]


def one(build, point, k, want, violations):
    """One run; returns (reached, crashed)."""
    h.JOBFS = os.path.join(build, "jobfs")
    env = {"JOBFS_CRASHPOINT": "%s:%d" % (point, k)}
    d = h.Daemon(env=None if point == "recovery" else env, grace=2)
    crashed = False
    try:
        d.start()
        stage = {}
        if point == "recovery":
            # crash in the recovery of a store that has work to recover
            drive(d, stage)
            d.kill9()
            h.unmount(d.mnt)
            d2 = h.Daemon(store=d.store, mnt=d.mnt, env=env, grace=2)
            try:
                d2.start()
                return False, False  # recovery never reached k
            except RuntimeError:
                crashed = True
            finally:
                d2.stop(keep_dirs=True)
        else:
            drive(d, stage)
            if "error" in stage:
                # the mount failed under us: give a dying daemon the
                # moment it takes to be gone
                h.wait_pid_gone(d.pid, 5)
            crashed = not d.alive()
            if not crashed:
                if os.environ.get("CRASHPOINTS_DEBUG"):
                    print("debug: %s:%d not reached; stage %s" %
                          (point, k, stage), flush=True)
                return False, False
        before = events_of(d.store)
        h.unmount(d.mnt)
        d.stop(keep_dirs=True)
        done_before = {}
        for e in before:
            if e["event"] == "done":
                done_before[e["chunk"]] = e["time"]
            elif e["event"] in ("planned", "reset", "discarded"):
                done_before.clear()  # a new plan: earlier outputs go
        # --no-resume: look at the store before anything starts again
        d3 = h.Daemon(store=d.store, mnt=d.mnt, grace=2,
                      args=["--no-resume"])
        d3.start()
        try:
            left = os.listdir(os.path.join(d.store, "tmp")) + \
                os.listdir(os.path.join(d.store, "scratch"))
            if left:
                violations.append((point, k, "I3 temp files: %s" % left))
            if not os.path.isdir(d3.path("j")):
                stage2 = {}
                drive(d3, stage2)
            else:
                now = d3.manifest("j")
                for c in now["chunks"]:
                    n = c["chunk"]
                    if n in done_before and c["state"] != "done" and \
                            "done2" not in stage:
                        violations.append((point, k, "I1 chunk %d lost" % n))
                # finish the session from wherever it stopped
                finish(d3, stage)
            after = [e for e in events_of(d.store)[len(before):]]
            for e in after:
                if e["event"] == "started" and e.get("chunk") in \
                        done_before and not any(
                            x["event"] in ("planned", "discarded", "reset")
                            for x in after[:after.index(e)]):
                    violations.append((point, k, "I2 chunk %d redone" %
                                       e["chunk"]))
                    break
            got = h.read_bytes(d3.path("j", "output.out"))
            if got != want:
                violations.append((point, k, "I4 output differs (%d vs %d "
                                   "bytes)" % (len(got), len(want))))
            chk = run_checker(d.store)
            if chk and chk[0] != 0:
                violations.append((point, k, "I5 jobfs-check: %s" % chk[1]))
        finally:
            d3.stop()
        return True, crashed
    finally:
        d.stop()


def finish(d, stage):
    """Bring a remounted session to the same end as the reference."""
    sj = d.sj("j")
    spec_now = json.loads(h.read_text(d.path("j", "spec")) or "{}")
    if not spec_now:
        h.write_file(d.path("j", "spec"), json.dumps(spec()))
    if not stage.get("done1"):
        if h.read_text(d.path("j", "input")) != BIG:
            h.write_file(d.path("j", "input"), BIG)
        if sj["state"] != "done":
            h.write_file(d.path("j", "control"), "start\n")
        d.wait_for("j", "done", 60)
    if h.read_text(d.path("j", "input")) != TEXT:
        h.write_file(d.path("j", "input"), TEXT)
    spec2 = dict(spec(), params={"v": 2})
    if json.loads(h.read_text(d.path("j", "spec"))) != spec2:
        h.write_file(d.path("j", "spec"), json.dumps(spec2))
    if d.sj("j")["state"] != "done":
        h.write_file(d.path("j", "control"), "start\n")
    d.wait_for("j", "done", 60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(TOP, "build-crash"))
    ap.add_argument("--max-k", type=int, default=3)
    ap.add_argument("--points", default=",".join(POINTS))
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    if not os.access(os.path.join(build, "jobfs"), os.X_OK):
        print("crashpoints: no crash build at %s (meson setup %s "
              "-Dcrashpoints=true)" % (build, build))
        print("crashpoints: points=0 runs=0 crashed=0 violations=1")
        return 1
    want = reference(build)
    violations, runs, crashed, unreached = [], 0, 0, []
    points = [p for p in a.points.split(",") if p]
    for point in points:
        reached_any = False
        for k in range(1, a.max_k + 1):
            reached, died = one(build, point, k, want, violations)
            if not reached:
                break
            reached_any = True
            runs += 1
            crashed += died
        if not reached_any:
            unreached.append(point)
        print("crashpoints: %-14s %s" % (point, "ok" if reached_any and
              not any(v[0] == point for v in violations) else
              "NOT REACHED" if not reached_any else "VIOLATION"),
              flush=True)
    for v in violations:
        print("crashpoints: violation at %s:%d: %s" % v)
    for p in unreached:
        print("crashpoints: point %s was never reached" % p)
    print("crashpoints: points=%d runs=%d crashed=%d violations=%d" %
          (len(points), runs, crashed, len(violations) + len(unreached)))
    return 1 if violations or unreached else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        h.stop_all()
