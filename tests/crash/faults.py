#!/usr/bin/env python3
"""faults.py - the fault-injection suite, with libfiu.

Each run starts the daemon of a -Dfiu=true build under fiu-run, with one
or more failure points enabled, either at random (a probability per call)
or from the Nth call on (enabled at run time with fiu-ctrl after a delay):

  posix/io/sync/fsync       posix/io/sync/fdatasync
  posix/io/rw/write         posix/io/rw/pwrite       (EIO, ENOSPC)
  posix/io/rw/write/reduce  posix/io/rw/pwrite/reduce (short writes)
  posix/mm/mmap             libc/mm/malloc
  jobfs/open                jobfs/rename              jobfs/fork

and drives a job through its whole session. Whatever fails is allowed to
fail, loudly: the daemon may refuse a write, fail chunks, report errors in
status. What is checked is what must hold anyway:

  F1  the daemon does not crash (it ends only when unmounted or killed);
  F2  the store stays consistent: jobfs-check finds nothing missing,
      corrupt or miscounted ;
  F3  after the faults are removed (a remount of the normal build), the
      job completes with an output byte-identical to a run without faults.

  tests/crash/faults.py [--runs 300] [--seed S] [--build build-fiu]

The last line reads
  faults: runs=N injected=N daemon_crashes=N check_failures=N mismatches=N violations=N
and the exit status is 1 when violations > 0.
"""

import argparse
import json
import os
import random
import signal
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
POINTS = [
    ("posix/io/sync/fsync", "EIO"), ("posix/io/sync/fdatasync", "EIO"),
    ("posix/io/rw/write", "EIO"), ("posix/io/rw/write", "ENOSPC"),
    ("posix/io/rw/pwrite", "EIO"), ("posix/io/rw/pwrite", "ENOSPC"),
    ("posix/io/rw/write/reduce", None), ("posix/io/rw/pwrite/reduce", None),
    ("posix/mm/mmap", "ENOMEM"), ("libc/mm/malloc", None),
    ("jobfs/open", None), ("jobfs/rename", None), ("jobfs/fork", None),
]
ERRNO = {"EIO": 5, "ENOSPC": 28, "ENOMEM": 12}
TEXT = h.paragraphs(10, tag="fault")


def spec():
    return {"command": [h.TESTWORKER], "parallel": 2,
            "attempts": 1000, "backoff": {"initial": 0.01, "max": 0.05},
            "env": {"TW_SIZE": "3000"}}


def session(mnt, deadline):
    """The job's whole session; errors are expected and ignored."""
    job = os.path.join(mnt, "j")
    for step in ("mkdir", "spec", "input", "start"):
        for _ in range(20):
            try:
                if step == "mkdir":
                    if not os.path.isdir(job):
                        os.mkdir(job)
                elif step == "spec":
                    h.write_file(os.path.join(job, "spec"),
                                 json.dumps(spec()))
                elif step == "input":
                    h.write_file(os.path.join(job, "input"), TEXT)
                else:
                    h.write_file(os.path.join(job, "control"), "start\n")
                break
            except OSError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.02)
    while time.monotonic() < deadline:
        try:
            st = json.loads(h.read_text(os.path.join(job, "status.json")))
            if st["state"] in ("done", "failed"):
                return
        except (OSError, ValueError, KeyError, TypeError):
            pass
        time.sleep(0.05)


def core_dumps():
    """In the daemon's child: allow a core file, for the backtrace."""
    import resource
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY,
                                              resource.RLIM_INFINITY))


def backtrace(root, exe):
    """Print the backtrace of a core the daemon left in root, if any."""
    cores = [f for f in os.listdir(root) if f.startswith("core")]
    if not cores or not shutil.which("gdb"):
        return
    r = subprocess.run(["gdb", "-batch", "-ex", "bt 25", exe,
                        os.path.join(root, cores[0])], capture_output=True,
                       text=True, timeout=60)
    for line in r.stdout.splitlines():
        if line.startswith("#"):
            print("faults:   " + line, flush=True)


def checker(store):
    chk = os.environ.get("JOBFS_CHECK") or os.path.join(
        TOP, "build", "tools", "jobfs-check")
    if not os.access(chk, os.X_OK):
        return False, "no checker at %s" % chk
    r = subprocess.run([chk, "--store", store], capture_output=True,
                       text=True, timeout=120)
    out = (r.stdout + r.stderr).strip().splitlines()
    return r.returncode == 0, " | ".join(out[-3:])


def one_run(fiubuild, rng, want, stats, verbose):
    root = tempfile.mkdtemp(prefix="jobfs-fault-", dir="/tmp")
    store, mnt = os.path.join(root, "store"), os.path.join(root, "mnt")
    os.makedirs(mnt)
    picks = rng.sample(POINTS, min(len(POINTS), rng.choice((1, 1, 2))))
    at_start, later = [], []
    for name, err in picks:
        p = rng.choice((0.01, 0.05, 0.2))
        cmd = "enable_random name=%s,probability=%g" % (name, p)
        if err:
            cmd += ",failnum=%d" % ERRNO[err]
        (later if rng.random() < 0.4 else at_start).append(cmd)
    args = ["fiu-run", "-x", "-f", os.path.join(root, "ctrl")]
    for c in at_start:
        args += ["-c", c]
    args += [os.path.join(fiubuild, "jobfs"), "-f", "--grace", "1",
             "--store", store, mnt]
    log = open(os.path.join(root, "log"), "wb")
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                         stderr=log, cwd=root, preexec_fn=core_dumps)
    crashed = False
    was_mounted = False
    try:
        end = time.monotonic() + 10
        while not h.mounted_fuse(mnt) and p.poll() is None and \
                time.monotonic() < end:
            time.sleep(0.02)
        if h.mounted_fuse(mnt):
            was_mounted = True
            if later:
                time.sleep(rng.uniform(0, 0.3))
                for c in later:
                    subprocess.run(["fiu-ctrl", "-f",
                                    os.path.join(root, "ctrl"), "-c", c,
                                    str(p.pid)], capture_output=True,
                                   timeout=10)
            session(mnt, time.monotonic() + rng.uniform(0.5, 3))
        stats["injected"] += len(picks)
        # fiu-run is a shell script with the daemon as its child: the
        # daemon's own pid is in the store's lock file
        try:
            with open(os.path.join(store, "lock")) as f:
                dpid = int(f.readline())
        except (OSError, ValueError):
            dpid = None
        h.unmount(mnt)
        try:
            code = p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            print("faults: daemon did not exit after unmount under %s" %
                  (picks,), flush=True)
            if dpid and shutil.which("gdb"):
                r = subprocess.run(["gdb", "/proc/%d/exe" % dpid, "-p",
                                    str(dpid), "-batch", "-ex",
                                    "thread apply all bt 8"],
                                   capture_output=True, text=True,
                                   timeout=60)
                for line in r.stdout.splitlines():
                    if line.startswith(("#", "Thread")) and \
                            "clone3" not in line:
                        print("faults:   " + line, flush=True)
            if dpid:
                os.kill(dpid, signal.SIGKILL)
                h.wait_pid_gone(dpid, 10)
            h.unmount(mnt)
            p.kill()
            code = p.wait()
            crashed = True
        # a refused start-up (exit 1, or 2 when even the options could
        # not be parsed for want of memory) is a clear error, not a crash
        if code < 0 or code > 2:
            crashed = True
        if crashed:
            stats["daemon_crashes"] += 1
            print("faults: daemon ended with %s under %s" % (code, picks),
                  flush=True)
            backtrace(root, os.path.join(fiubuild, "jobfs"))
        # a daemon that never mounted may have left an environment it
        # could not even initialise; the check is for stores it served
        ok, line = checker(store) if was_mounted else (True, "")
        if not ok:
            stats["check_failures"] += 1
            print("faults: jobfs-check after %s: %s" % (picks, line),
                  flush=True)
        # the faults go: a normal daemon must finish the job identically
        d = h.Daemon(store=store, mnt=mnt, grace=2)
        try:
            d.start()
            finish(d)
            got = h.read_bytes(d.path("j", "output.out"))
            if got != want:
                stats["mismatches"] += 1
                print("faults: output differs after %s" % (picks,),
                      flush=True)
        except Exception as e:  # noqa: BLE001 - any failure is a finding
            stats["mismatches"] += 1
            print("faults: could not finish after %s: %s" % (picks, e),
                  flush=True)
        finally:
            d.stop(keep_dirs=True)
        if verbose:
            print("faults: run ok: %s" % (picks,), flush=True)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        h.unmount(mnt)
        log.close()
        shutil.rmtree(root, True)


def finish(d):
    job = d.path("j")
    if not os.path.isdir(job):
        os.mkdir(job)
    cur = h.read_text(d.path("j", "spec"))
    if not cur or json.loads(cur) != spec():
        h.write_file(d.path("j", "spec"), json.dumps(spec()))
    if h.read_text(d.path("j", "input")) != TEXT:
        h.write_file(d.path("j", "input"), TEXT)
    st = d.sj("j")["state"]
    if st != "done":
        h.write_file(d.path("j", "control"), "start\n")
    d.wait_for("j", "done", 60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--build", default=os.path.join(TOP, "build-fiu"))
    ap.add_argument("-v", action="store_true")
    ap.add_argument("--only", default="",
                    help="comma list of failure point names to draw from")
    a = ap.parse_args()
    if not shutil.which("fiu-run"):
        print("faults: fiu-run is not installed (apt-get install fiu-utils)")
        print("faults: runs=0 injected=0 daemon_crashes=0 check_failures=0 "
              "mismatches=0 violations=1")
        return 1
    # A long run must not see a rebuild: run copies of the binaries.
    snap = tempfile.mkdtemp(prefix="jobfs-fault-bin-", dir="/tmp")
    fiubuild = os.path.join(snap, "fiu")
    os.mkdir(fiubuild)
    shutil.copy2(os.path.join(os.path.abspath(a.build), "jobfs"), fiubuild)
    chk = os.environ.get("JOBFS_CHECK") or os.path.join(
        TOP, "build", "tools", "jobfs-check")
    for var, path in (("JOBFS", h.JOBFS), ("TESTWORKER", h.TESTWORKER),
                      ("CHECK", chk)):
        copy = os.path.join(snap, var.lower())
        shutil.copy2(path, copy)
        if var == "CHECK":
            os.environ["JOBFS_CHECK"] = copy
        else:
            setattr(h, var, copy)
    try:
        return run_all(a, fiubuild)
    finally:
        shutil.rmtree(snap, ignore_errors=True)


def run_all(a, fiubuild):
    rng = random.Random(a.seed)
    if a.only:
        keep = a.only.split(",")
        POINTS[:] = [p for p in POINTS if p[0] in keep]
    print("faults: seed %d" % a.seed, flush=True)
    ref = h.Daemon(grace=2)
    ref.start()
    try:
        finish(ref)
        want = h.read_bytes(ref.path("j", "output.out"))
    finally:
        ref.stop()
    stats = {"injected": 0, "daemon_crashes": 0, "check_failures": 0,
             "mismatches": 0}
    for _ in range(a.runs):
        one_run(fiubuild, rng, want, stats, a.v)
    viol = stats["daemon_crashes"] + stats["check_failures"] + \
        stats["mismatches"]
    print("faults: runs=%d injected=%d daemon_crashes=%d check_failures=%d "
          "mismatches=%d violations=%d" % (a.runs, stats["injected"],
                                           stats["daemon_crashes"],
                                           stats["check_failures"],
                                           stats["mismatches"], viol))
    return 1 if viol else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        h.stop_all()
