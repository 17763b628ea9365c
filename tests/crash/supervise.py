#!/usr/bin/env python3
"""supervise.py - figures for how jobfs supervises its workers.

    tests/crash/supervise.py [--small] [--keep]

Each part runs against its own daemon (tests/integration/harness.py) and
yields figures; the last line, always printed, is

  supervise: tree_survivors=N kill9_survivors=N leaked_fds=N bad_env=N
             zombies=N fd_delta=N thread_delta=N deadlocks=N max_rss_mb=N
             cap_ok=yes|no

(one line), and the exit status is non-zero when a figure misses: any
count above 0, max_rss_mb of 64 or more, or cap_ok=no.

 a. tree kill: chunks whose command is sh -c 'sleep 1000 | cat & sleep
    1000' (a pipeline in the background, a sleep in the foreground), each
    process marked by an environment variable from spec.env. 100 of them
    (--small: 10) end by a 0.2 s timeout; another 100 (10) are cancelled
    once their tree is up. tree_survivors counts marked processes still
    alive 2 s after their chunk ended.
 b. kill -9 of the daemon while 4 such trees run (5 times, --small 2):
    kill9_survivors counts marked processes and jobfs-watchdogs alive 2 s
    later.
 c. a daemon started with SECRET_TOKEN=x and LD_LIBRARY_PATH=/nonexistent
    in its environment and descriptors 7 and 8 open without close-on-exec:
    a worker runs `env` and another lists its own descriptors
    (jobfs-testworker TW_FDS=1). leaked_fds counts descriptors other than
    0-2; bad_env counts variables outside the documented allow-list (PATH,
    HOME, LANG, LC_*, TZ, TMPDIR, USER, LOGNAME, spec.env, JOBFS_*).
 d. 10,000 attempts of `true` (--small 1,000), 8 at a time: afterwards
    zombies counts the daemon's children in state Z, fd_delta and
    thread_delta are the daemon's descriptor and thread counts minus a
    baseline taken with the job created and planned.
 e. at once: a worker that writes 1 GiB to stdout (--small 200 MB), one
    that reads 1 GiB of stdin (a bytes-chunked input of that size; --small
    100 MB) and one that never reads a 100 MB stdin. deadlocks counts jobs
    not done within a bound; max_rss_mb is the daemon's VmHWM at the end
    (MiB, rounded up), with its peak RssAnon and RssFile sampled on the
    side for the details line.
 f. max_output: `yes` with max_output 1 MB must fail with the output-cap
    reason ("output larger than max_output"): cap_ok.

Programs: JOBFS_BIN and JOBFS_TESTWORKER (see harness.py). Run as root.
Only the standard library is used.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness as h  # noqa: E402

TREE_CMD = ["sh", "-c", "sleep 1000 | cat & sleep 1000"]
ALLOWED_ENV = {"PATH", "HOME", "LANG", "TZ", "TMPDIR", "USER", "LOGNAME"}
RSS_LIMIT_MB = 64

FIGURES = ("tree_survivors", "kill9_survivors", "leaked_fds", "bad_env",
           "zombies", "fd_delta", "thread_delta", "deadlocks", "max_rss_mb")


# ---------------------------------------------------------------------
# /proc

def proc_status(pid):
    """The fields of /proc/PID/status as a dict of strings."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def kb(field):
    """'1234 kB' -> 1234."""
    return int(field.split()[0]) if field else 0


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def children(pid):
    """(pid, state) of every process whose parent is pid."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2:].split()
        if int(rest[1]) == pid:
            out.append((int(name), rest[0]))
    return out


watchdogs_of = h.watchdogs_of
kill_pids = h.kill_pids


def survivors_within(find, seconds):
    """Poll find() until it returns nothing or seconds pass; the pids
    still alive then (which are killed, so they are counted once)."""
    end = time.monotonic() + seconds
    while True:
        left = find()
        if not left or time.monotonic() >= end:
            break
        time.sleep(0.05)
    kill_pids(left)
    return left


class FdDaemon(h.Daemon):
    """A daemon started with descriptors 7 and 8 open and inheritable, as
    a careless parent would leave them."""

    def command(self):
        return (["/bin/sh", "-c", 'exec 7</dev/null 8>>/dev/null; '
                 'exec "$@"', "sh"] + super().command())


# ---------------------------------------------------------------------

class Suite:

    def __init__(self, small, keep):
        self.small = small
        self.keep = keep
        self.root = tempfile.mkdtemp(prefix="jobfs-supervise-", dir="/tmp")
        self.fig = {k: 0 for k in FIGURES}
        self.cap_ok = False
        self.details = {}
        self.problems = []
        self.daemons = []
        self.lock = threading.Lock()
        self.n = 0

    def problem(self, text):
        self.problems.append(text)
        print("supervise: PROBLEM: " + text, flush=True)

    def note(self, text):
        print("supervise: " + text, flush=True)

    def daemon(self, cls=h.Daemon, **kw):
        self.n += 1
        kw.setdefault("store", os.path.join(self.root, "s%d" % self.n))
        kw.setdefault("mnt", os.path.join(self.root, "m%d" % self.n))
        d = cls(**kw)
        with self.lock:
            self.daemons.append(d)
        d.start()
        return d

    def final_line(self):
        f = self.fig
        return ("supervise: " + " ".join("%s=%d" % (k, f[k])
                                         for k in FIGURES) +
                " cap_ok=%s" % ("yes" if self.cap_ok else "no"))

    def ok(self):
        f = self.fig
        return (all(f[k] <= 0 for k in FIGURES if k != "max_rss_mb") and
                f["max_rss_mb"] < RSS_LIMIT_MB and self.cap_ok and
                not self.problems)

    # -- a: timeout and cancel kill the whole tree --

    def part_a(self):
        runs = 10 if self.small else 100
        d = self.daemon(max_running=8)
        try:
            # timeout: runs chunks, 4 at a time, one attempt each
            mark = "SV_TREE=" + uuid.uuid4().hex
            key, val = mark.split("=")
            d.mkjob("t", {"command": TREE_CMD, "chunking": {"by": "line"},
                          "timeout": 0.2, "attempts": 1, "parallel": 4,
                          "env": {key: val}},
                    "".join("tree %d\n" % i for i in range(runs)))
            t0 = time.monotonic()
            sj = d.run_job("t", timeout=30 + runs * 0.5, state="failed")
            if sj["chunks"]["failed"] != runs:
                self.problem("timeout: %d of %d chunks failed" %
                             (sj["chunks"]["failed"], runs))
            errs = {f["error"] for f in sj["failed"]}
            if errs - {"timeout after 0.2 s"}:
                self.problem("timeout: unexpected reasons %s" % errs)
            time.sleep(2)
            left = h.procs_with_env(mark.encode())
            kill_pids(left)
            self.fig["tree_survivors"] += len(left)
            if left:
                self.problem("timeout: %d processes of the trees alive 2 s "
                             "after the last timeout" % len(left))
            self.note("a. timeout: %d chunks in %.1f s, %d survivors" %
                      (runs, time.monotonic() - t0, len(left)))

            # cancel: one chunk, started and cancelled runs times
            mark = "SV_CANCEL=" + uuid.uuid4().hex
            key, val = mark.split("=")
            d.mkjob("c", {"command": TREE_CMD, "attempts": 1,
                          "env": {key: val}}, "cancel me.\n")
            t0 = time.monotonic()
            cancel_left = 0
            for i in range(runs):
                d.do("c", "resume")
                # the whole tree up: sh, the pipeline's sleep and cat,
                # the foreground sleep
                d.wait_until(lambda: len(h.procs_with_env(
                    mark.encode())) >= 3, 10, "the tree of run %d" % i)
                d.do("c", "cancel")
                left = survivors_within(
                    lambda: h.procs_with_env(mark.encode()), 2.0)
                cancel_left += len(left)
                d.wait_for("c", "stopped", 10)
            self.fig["tree_survivors"] += cancel_left
            if cancel_left:
                self.problem("cancel: %d processes alive 2 s after their "
                             "cancel" % cancel_left)
            self.note("a. cancel: %d runs in %.1f s, %d survivors" %
                      (runs, time.monotonic() - t0, cancel_left))
        finally:
            d.stop()

    # -- b: kill -9 of the daemon --

    def part_b(self):
        rounds = 2 if self.small else 5
        for r in range(rounds):
            mark = "SV_K9=" + uuid.uuid4().hex
            key, val = mark.split("=")
            d = self.daemon(max_running=4)
            try:
                d.mkjob("k", {"command": TREE_CMD, "parallel": 4,
                              "chunking": {"by": "line"},
                              "env": {key: val}},
                        "".join("k %d\n" % i for i in range(8)))
                d.do("k", "resume")
                d.wait_until(lambda: len(h.procs_with_env(
                    mark.encode())) >= 12, 10, "4 trees")
                store = d.store
                d.kill9()
                d.pid = None  # gone: stop() only unmounts the dead mount
                left = survivors_within(
                    lambda: h.procs_with_env(mark.encode()) +
                    watchdogs_of(store), 2.0)
                self.fig["kill9_survivors"] += len(left)
                if left:
                    self.problem("kill -9 round %d: %d processes alive 2 s "
                                 "later" % (r + 1, len(left)))
            finally:
                d.stop()
        self.note("b. kill -9: %d rounds of 4 trees, %d survivors" %
                  (rounds, self.fig["kill9_survivors"]))

    # -- c: descriptors and environment --

    def part_c(self):
        env = {"SECRET_TOKEN": "x", "LD_LIBRARY_PATH": "/nonexistent"}
        d = self.daemon(cls=FdDaemon, env=env)
        try:
            pid = d.pid
            have = set(os.listdir("/proc/%d/fd" % pid))
            if not {"7", "8"} <= have:
                self.problem("c: the daemon did not inherit fds 7 and 8 "
                             "(has %s): the fd test proves less" %
                             sorted(have, key=int))
            d.mkjob("env", {"command": ["env"],
                            "env": {"SV_SPEC_VAR": "1"}}, "env.\n")
            d.mkjob("fds", h.tw_spec({"TW_FDS": 1}), "fds.\n")
            d.mkjob("shfds", {"command": "ls /proc/$$/fd"}, "sh.\n")
            for job in ("env", "fds", "shfds"):
                d.run_job(job, timeout=20)
            bad = []
            for line in h.read_text(d.path("env", "output.out")).splitlines():
                name = line.partition("=")[0]
                if not (name in ALLOWED_ENV or name.startswith("LC_") or
                        name.startswith("JOBFS_") or name == "SV_SPEC_VAR"):
                    bad.append(name)
            self.fig["bad_env"] = len(bad)
            if bad:
                self.problem("c: worker environment has %s" % bad)
            out = h.read_text(d.path("fds", "output.out"))
            fds = out.rsplit("fds:", 1)[1].split() if "fds:" in out else []
            shfds = h.read_text(d.path("shfds", "output.out")).split()
            leaked = sorted({x for x in fds + shfds
                             if x not in ("0", "1", "2")}, key=int)
            self.fig["leaked_fds"] = len(leaked)
            if leaked or not fds:
                self.problem("c: worker descriptors %s (testworker) and %s "
                             "(sh)" % (fds, shfds))
                self.fig["leaked_fds"] = max(1, len(leaked))
            self.note("c. env: %d variables outside the allow-list; fds "
                      "seen by the worker: %s / %s" %
                      (len(bad), " ".join(fds), " ".join(shfds)))
        finally:
            d.stop()

    # -- d: many attempts leave nothing behind --

    def fuse_pool_warm(self, d, job):
        """Keep 16 readers of status.json busy at once for a while: libfuse
        starts a worker thread whenever none is idle, up to its max_threads
        (10 by default), and keeps idle ones; a baseline taken before the
        pool is full would count its growth as a leak."""
        path = d.path(job, "status.json")

        def reader():
            for _ in range(200):
                h.read_bytes(path)
        ts = [threading.Thread(target=reader) for _ in range(16)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    def part_d(self):
        runs = 1000 if self.small else 10000
        d = self.daemon(max_running=8)
        try:
            pid = d.pid
            # warm up every thread and lazy descriptor with a small job
            # and a burst of concurrent reads, then create and plan the
            # big job before the baseline
            d.mkjob("warm", {"command": ["true"], "parallel": 8,
                             "chunking": {"by": "line"}},
                    "".join("w %d\n" % i for i in range(50)))
            d.run_job("warm", timeout=60)
            d.mkjob("many", {"command": ["true"], "parallel": 8,
                             "chunking": {"by": "line"}},
                    "".join("t %d\n" % i for i in range(runs)))
            self.fuse_pool_warm(d, "many")
            time.sleep(0.5)
            fd0 = fd_count(pid)
            th0 = int(proc_status(pid)["Threads"])
            t0 = time.monotonic()
            d.run_job("many", timeout=60 + runs * 0.05)
            took = time.monotonic() - t0
            time.sleep(1.0)
            fd1 = fd_count(pid)
            th1 = int(proc_status(pid)["Threads"])
            zombies = [p for p, st in children(pid) if st == "Z"]
            self.fig["zombies"] = len(zombies)
            self.fig["fd_delta"] = fd1 - fd0
            self.fig["thread_delta"] = th1 - th0
            if zombies or fd1 != fd0 or th1 != th0:
                self.problem("d: zombies %s, fds %d -> %d, threads %d -> %d"
                             % (zombies, fd0, fd1, th0, th1))
            self.note("d. %d attempts of true in %.1f s (%.0f/s): fds "
                      "%d -> %d, threads %d -> %d, %d zombies" %
                      (runs, took, runs / took, fd0, fd1, th0, th1,
                       len(zombies)))
        finally:
            d.stop()

    # -- e: big streams, no deadlock, bounded memory --

    def part_e(self):
        out_n = (200 if self.small else 1024) << 20
        in_n = (100 if self.small else 1024) << 20
        noread_n = 100 << 20
        d = self.daemon(max_running=4)
        # peak RssAnon and RssFile (kB) while the inputs are written and
        # while the jobs run
        peak = {"write": [0, 0], "run": [0, 0]}
        phase = ["write"]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                try:
                    st = proc_status(d.pid)
                except OSError:
                    return
                p = peak[phase[0]]
                p[0] = max(p[0], kb(st.get("RssAnon")))
                p[1] = max(p[1], kb(st.get("RssFile")))
                stop.wait(0.02)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            t0 = time.monotonic()
            d.mkjob("out", {"command": ["head", "-c", str(out_n),
                                        "/dev/zero"]}, "one.\n")
            big = os.path.join(self.root, "big-input")
            with open(big, "wb") as f:
                block = bytes(range(256)) * 4096   # 1 MiB
                for _ in range(in_n >> 20):
                    f.write(block)
            d.mkjob("in", {"command": ["wc", "-c"],
                           "chunking": {"by": "bytes", "max": in_n}})
            shutil.copyfile(big, d.path("in", "input"))
            d.mkjob("noread", {"command": ["sh", "-c", "sleep 1; echo ok"],
                               "chunking": {"by": "bytes",
                                            "max": noread_n}})
            with open(big, "rb") as src, \
                    open(d.path("noread", "input"), "wb") as dst:
                left = noread_n
                while left:
                    b = src.read(min(left, 1 << 20))
                    dst.write(b)
                    left -= len(b)
            os.unlink(big)
            time.sleep(0.1)
            phase[0] = "run"
            t1 = time.monotonic()
            for job in ("out", "in", "noread"):
                d.do(job, "resume")
            bound = 60 if self.small else 240
            stuck = []
            for job in ("out", "in", "noread"):
                left = max(1.0, bound - (time.monotonic() - t1))
                try:
                    d.wait_for(job, ("done", "failed"), left)
                except AssertionError as e:
                    stuck.append(job)
                    self.problem("e: %s" % e)
            took = time.monotonic() - t1
            self.fig["deadlocks"] = len(stuck)
            m = {j: d.manifest(j)["chunks"] for j in ("out", "in", "noread")
                 if j not in stuck}
            if "out" in m and m["out"][0].get("size") != out_n:
                self.problem("e: out produced %s bytes, not %d" %
                             (m["out"][0].get("size"), out_n))
            if "in" in m:
                if len(m["in"]) != 1:
                    self.problem("e: the %d-byte input made %d chunks" %
                                 (in_n, len(m["in"])))
                got = h.read_text(d.path("in", "output.out")).strip()
                if got != str(in_n):
                    self.problem("e: the reader saw %r bytes, not %d" %
                                 (got, in_n))
            if "noread" in m and h.read_text(
                    d.path("noread", "output.out")) != "ok\n":
                self.problem("e: the worker that never reads did not end "
                             "done with its output")
            for job in m:
                st = d.sj(job)["state"]
                if st != "done":
                    self.problem("e: job %s ended %s: %s" %
                                 (job, st, d.sj(job)["failed"]))
            hwm = kb(proc_status(d.pid).get("VmHWM"))
            self.fig["max_rss_mb"] = (hwm + 1023) // 1024
            self.note("e. stdout %d MiB, stdin %d MiB, never-read %d MiB: "
                      "writing the inputs %.1f s, jobs %.1f s, %d stuck; "
                      "daemon VmHWM %d MiB; peak RssAnon/RssFile %d/%d MiB "
                      "while the inputs were written, %d/%d MiB while the "
                      "jobs ran" % (out_n >> 20, in_n >> 20, noread_n >> 20,
                                    t1 - t0, took, len(stuck),
                                    self.fig["max_rss_mb"],
                                    peak["write"][0] >> 10,
                                    peak["write"][1] >> 10,
                                    peak["run"][0] >> 10,
                                    peak["run"][1] >> 10))
        finally:
            stop.set()
            d.stop()

    # -- f: max_output --

    def part_f(self):
        d = self.daemon()
        try:
            d.mkjob("yes", {"command": ["yes"], "max_output": 1 << 20,
                            "attempts": 1}, "y.\n")
            sj = d.run_job("yes", timeout=30, state=("failed", "done"))
            err = sj["failed"][0]["error"] if sj["failed"] else ""
            self.cap_ok = (sj["state"] == "failed" and
                           "larger than max_output" in err)
            if not self.cap_ok:
                self.problem("f: yes with max_output 1 MiB ended %s (%r)"
                             % (sj["state"], err))
            self.note("f. max_output: state %s, reason %r" %
                      (sj["state"], err))
        finally:
            d.stop()

    def teardown(self):
        with self.lock:
            daemons = list(self.daemons)
        for d in daemons:
            d.stop(keep_dirs=True)
        if not self.keep and not any(h.is_mounted(d.mnt) for d in daemons):
            shutil.rmtree(self.root, ignore_errors=True)
        elif self.keep:
            self.note("kept %s" % self.root)

    def emergency(self):
        with self.lock:
            daemons = list(self.daemons)
        for d in daemons:
            d.emergency()


def main():
    ap = argparse.ArgumentParser(description="figures for jobfs's child "
                                 "supervision")
    ap.add_argument("--small", action="store_true",
                    help="the quick version (about a minute)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--only", default="abcdef",
                    help="the parts to run (default abcdef)")
    ap.add_argument("--deadline", type=float, default=None)
    a = ap.parse_args()
    s = Suite(a.small, a.keep)
    if os.geteuid() != 0:
        s.problem("must run as root")
        print(s.final_line())
        return 2
    for prog in (h.JOBFS, h.TESTWORKER):
        if not os.access(prog, os.X_OK):
            s.problem("no program at %s (set JOBFS_BIN, JOBFS_TESTWORKER)"
                      % prog)
            print(s.final_line())
            return 2
    deadline = a.deadline or (240 if a.small else 1800)

    def watchdog():
        time.sleep(deadline)
        print("supervise: PROBLEM: deadline of %.0f s passed: abandoning "
              "the run (a daemon that hangs?)" % deadline, flush=True)
        s.emergency()
        time.sleep(20)
        print(s.final_line(), flush=True)
        os._exit(3)

    def on_term(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, on_term)
    threading.Thread(target=watchdog, daemon=True).start()
    t0 = time.monotonic()
    parts = {"a": s.part_a, "b": s.part_b, "c": s.part_c, "d": s.part_d,
             "e": s.part_e, "f": s.part_f}
    try:
        for p in a.only:
            t = time.monotonic()
            try:
                parts[p]()
            except Exception as e:
                s.problem("part %s stopped: %r" % (p, e))
            s.note("part %s took %.1f s" % (p, time.monotonic() - t))
    except KeyboardInterrupt as e:
        s.problem("interrupted: %s" % e)
    finally:
        s.teardown()
    s.note("details: runtime=%.0fs problems=%d" %
           (time.monotonic() - t0, len(s.problems)))
    print(s.final_line(), flush=True)
    return 0 if s.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
