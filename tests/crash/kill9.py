#!/usr/bin/env python3
"""kill9.py - the black-box random kill -9 suite for jobfs.

    tests/crash/kill9.py --kills N [--chunks 300] [--seed S]
                         [--max-size 20M] [--keep]

One job of --chunks chunks (line chunking, parallel 2) whose lines say how
many bytes each chunk outputs (log-uniform, 1 kB to --max-size) and how
long its worker sleeps first; every 25th line repeats an earlier one, so
that two chunks share one content-addressed object. The worker is a small
/bin/sh wrapper around a copy of jobfs-testworker, both named with a
marker no other process has, so `pgrep -f MARKER` finds exactly this
suite's workers. A chunk's output is a deterministic function of its line.

Each round:

  1. the daemon is up, started with --no-resume; if this is a restart, the
     entries in STORE/tmp and STORE/scratch are counted (they must be 0:
     the new daemon cleared them before mounting, and nothing has started);
  2. if the current job is done, its output.out is compared (SHA-256) with
     an uninterrupted run of the same job in another store, and a new job
     with the same spec and input replaces it (the old one is removed with
     rmdir right after the new one resumes, so that releases and their
     unlinks race with publishes of the same objects);
  3. echo resume > control; wait a seeded random time (mostly < 0.4 s,
     sometimes up to 4 s, long enough to finish chunks);
  4. kill -9 the daemon;
  5. within 2 s no process of the marker (and no jobfs-watchdog of this
     store) may be alive;
  6. jobfs-check --json --list on the store must pass; every chunk that was
     done before must still be done with the same object, and each job's
     done count must not go down;
  7. a new daemon (--no-resume) on the same store and the same, dead,
     mountpoint: jobfs must clear the dead mount itself.

After the last kill the current job runs to the end and is compared; the
daemon is unmounted cleanly, started once more (temp files counted again)
and stopped, and a full jobfs-check (no cache) runs on the store at rest.

The last line is always printed:

  kill9: kills=N lost_done=N corrupt=N missing=N done_went_down=N
         tmp_after_restart=N survivors=N identical=yes|no

(one line). corrupt counts jobfs-check's corrupt + badsize + badrefs (and
a check that could not read the store); survivors counts workers and
watchdogs alive 2 s after a kill. The exit status is 0 only if every
figure is 0 and identical=yes, and nothing in the "details" line (chunks
done twice, a deleted job that came back, a job that did not finish)
went wrong.

Programs: JOBFS_BIN, JOBFS_TESTWORKER (see tests/integration/harness.py)
and JOBFS_CHECK (default build/tools/jobfs-check). Run as root. Only the
standard library is used.
"""

import argparse
import hashlib
import json
import math
import os
import random
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

CHECK = os.path.abspath(os.environ.get("JOBFS_CHECK") or
                        os.path.join(h.BUILD, "tools", "jobfs-check"))

WRAPPER = """#!/bin/sh
# kill9.py worker: the chunk's line is "SIZE SLEEP_MS TEXT"; output SIZE
# bytes generated from the line (same line, same bytes).
IFS=' ' read -r size sleep rest
printf '%%s %%s %%s\\n' "$size" "$sleep" "$rest" |
	TW_SIZE="$size" TW_SLEEP_MS="$sleep" exec "%s"
"""


def parse_size(s):
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    s = s.strip().lower().rstrip("b")
    u = s[-1:] if s[-1:] in units and s[-1:] else ""
    try:
        v = float(s[:-1] if u else s)
    except ValueError:
        raise argparse.ArgumentTypeError("bad size '%s'" % s)
    if v <= 0:
        raise argparse.ArgumentTypeError("bad size '%s'" % s)
    return int(v * units[u])


def make_input(rng, chunks, max_size):
    """The job's input: one line per chunk, "SIZE SLEEP_MS TEXT"."""
    lo = min(1024, max_size)
    lines = []
    for i in range(1, chunks + 1):
        if i % 25 == 0 and len(lines) > 3:
            lines.append(lines[rng.randrange(len(lines))])  # shared object
            continue
        size = int(math.exp(rng.uniform(math.log(lo), math.log(max_size))))
        sleep = rng.choice([0, 0, 0, 10, 50, 200])
        lines.append("%d %d line %d of the kill9 suite %08x" %
                     (size, sleep, i, rng.getrandbits(32)))
    return "".join(line + "\n" for line in lines)


def file_sha256(path):
    hs = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            hs.update(b)
    return hs.hexdigest()


def count_temps(store):
    n = 0
    for sub in ("tmp", "scratch"):
        try:
            n += len(os.listdir(os.path.join(store, sub)))
        except FileNotFoundError:
            pass
    return n


watchdogs_of = h.watchdogs_of
kill_pids = h.kill_pids


class Suite:

    def __init__(self, args):
        self.a = args
        self.rng = random.Random(args.seed)
        self.root = tempfile.mkdtemp(prefix="jobfs-kill9-", dir="/tmp")
        self.marker = "k9w" + uuid.uuid4().hex[:12]
        assert self.marker not in self.root
        self.store = os.path.join(self.root, "store")
        self.mnt = os.path.join(self.root, "mnt")
        self.cache = os.path.join(self.root, "check-cache")
        self.daemons = []       # every daemon started, for teardown
        self.d = None
        self.fig = dict(kills=0, lost_done=0, corrupt=0, missing=0,
                        done_went_down=0, tmp_after_restart=0, survivors=0)
        self.identical = None   # None: nothing compared yet
        self.details = dict(jobs_finished=0, redone=0, resurrected=0,
                            unfinished=0, orphans_at_rest=0,
                            tmp_at_rest=0, kills_mid_chunk=0)
        self.problems = []
        self.done = {}          # job -> {chunk: object sha}
        self.deleted = set()    # jobs removed with rmdir
        self.jobno = 0
        self.job = None
        self.ref_sha = None
        self.lock = threading.Lock()

    # -- reporting --

    def problem(self, text):
        self.problems.append(text)
        print("kill9: PROBLEM: " + text, flush=True)

    def final_line(self):
        f = self.fig
        ident = "yes" if self.identical else "no"
        return ("kill9: kills=%d lost_done=%d corrupt=%d missing=%d "
                "done_went_down=%d tmp_after_restart=%d survivors=%d "
                "identical=%s" % (f["kills"], f["lost_done"], f["corrupt"],
                                  f["missing"], f["done_went_down"],
                                  f["tmp_after_restart"], f["survivors"],
                                  ident))

    def ok(self):
        d = self.details
        return (all(self.fig[k] == 0 for k in self.fig if k != "kills") and
                self.identical is True and d["redone"] == 0 and
                d["resurrected"] == 0 and d["unfinished"] == 0)

    # -- setup --

    def prepare(self):
        tw = os.path.join(self.root, self.marker + "-tw")
        shutil.copy2(h.TESTWORKER, tw)
        self.wrapper = os.path.join(self.root, self.marker + "-sh")
        with open(self.wrapper, "w") as f:
            f.write(WRAPPER % tw)
        os.chmod(self.wrapper, 0o755)
        self.input = make_input(self.rng, self.a.chunks, self.a.max_size)
        self.spec = {"command": [self.wrapper],
                     "chunking": {"by": "line"},
                     "parallel": self.a.parallel, "attempts": 5,
                     "backoff": {"initial": 0.1, "factor": 2, "max": 1}}
        self.total = sum(int(line.split()[0])
                         for line in self.input.splitlines())

    def new_daemon(self, store, mnt, args=()):
        d = h.Daemon(store=store, mnt=mnt, args=list(args),
                     max_running=max(4, self.a.parallel), grace=2)
        with self.lock:
            self.daemons.append(d)
            self.d = d
        d.start()
        return d

    def forget(self, d):
        """A daemon killed and seen gone: teardown must not signal its
        pid again (over a thousand kills, pids are reused)."""
        with self.lock:
            if d in self.daemons:
                self.daemons.remove(d)
        d.pid = None

    def job_timeout(self):
        # generous: ~20 MB/s for generating, hashing and fsyncing
        return 60 + self.total / (20 << 20) + self.a.chunks * 0.05

    def reference(self):
        """The same job, uninterrupted, in its own store."""
        t0 = time.monotonic()
        d = self.new_daemon(os.path.join(self.root, "ref-store"),
                            os.path.join(self.root, "ref-mnt"))
        try:
            d.mkjob("ref", self.spec, self.input)
            sj = d.run_job("ref", timeout=self.job_timeout(),
                           state=("done", "failed"))
            if sj["state"] != "done":
                raise RuntimeError("the reference run failed: %s" %
                                   json.dumps(sj.get("failed")))
            self.ref_sha = file_sha256(d.path("ref", "output.out"))
        finally:
            d.stop(keep_dirs=True)
        shutil.rmtree(os.path.join(self.root, "ref-store"),
                      ignore_errors=True)
        print("kill9: reference run: %d chunks, %.1f MB, %.1f s, output "
              "sha256 %s" % (self.a.chunks, self.total / 1e6,
                             time.monotonic() - t0, self.ref_sha[:16]),
              flush=True)

    # -- the loop --

    def check(self, cache=True):
        """Run jobfs-check; fold its figures in; return its JSON (or
        None if it could not read the store)."""
        cmd = [CHECK, "--store", self.store, "--json", "--list"]
        if cache:
            cmd += ["--cache", self.cache]
        r = subprocess.run(cmd, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=600)
        try:
            res = json.loads(r.stdout)
        except ValueError:
            res = None
        if r.returncode not in (0, 1) or res is None:
            self.fig["corrupt"] += 1
            self.problem("jobfs-check exited %d: %s" %
                         (r.returncode, r.stderr.decode(errors="replace")))
            return None
        bad = res["corrupt"] + res["badsize"] + res["badrefs"]
        self.fig["corrupt"] += bad
        self.fig["missing"] += res["missing"]
        if r.returncode:
            for line in r.stderr.decode(errors="replace").splitlines():
                if line.split(":")[0] in ("missing", "corrupt", "badsize",
                                          "badrefs"):
                    self.problem("after kill %d: %s" %
                                 (self.fig["kills"], line))
        return res

    def track_done(self, res):
        now = {}
        for job, n, sha, _size, _inline in res["done_chunks"]:
            now.setdefault(job, {})[n] = sha
        for job in now:
            if job in self.deleted:
                self.details["resurrected"] += 1
                self.problem("job %s was removed but has chunk records "
                             "after kill %d" % (job, self.fig["kills"]))
        for job, before in self.done.items():
            after = now.get(job, {})
            lost = [n for n, sha in before.items() if after.get(n) != sha]
            if lost:
                self.fig["lost_done"] += len(lost)
                self.problem("job %s: chunks %s were done and are not "
                             "(or changed) after kill %d" %
                             (job, lost[:20], self.fig["kills"]))
            if len(after) < len(before):
                self.fig["done_went_down"] += 1
                self.problem("job %s: done went down from %d to %d after "
                             "kill %d" % (job, len(before), len(after),
                                          self.fig["kills"]))
        for job, after in now.items():
            if job not in self.deleted:
                self.done[job] = after

    def job_finished(self, res):
        pj = res["per_job"].get(self.job) if res else None
        return pj is not None and pj["chunks"] > 0 and \
            pj["done"] == pj["chunks"]

    def compare(self, d, job):
        """Compare a finished job's output with the reference and look
        for chunks that were done twice."""
        sha = file_sha256(d.path(job, "output.out"))
        same = sha == self.ref_sha
        if not same:
            self.problem("job %s: output.out sha256 %s, the uninterrupted "
                         "run's %s" % (job, sha, self.ref_sha))
        self.identical = same if self.identical is None else \
            (self.identical and same)
        dones = {}
        for ev in d.events(job):
            if ev.get("event") == "done":
                dones[ev["chunk"]] = dones.get(ev["chunk"], 0) + 1
        twice = sorted(n for n, c in dones.items() if c > 1)
        if twice:
            self.details["redone"] += len(twice)
            self.problem("job %s: chunks done more than once: %s" %
                         (job, twice[:20]))
        self.details["jobs_finished"] += 1

    def next_job(self, d):
        self.jobno += 1
        name = "job%d" % self.jobno
        d.mkjob(name, self.spec, self.input)
        old, self.job = self.job, name
        return old

    def survivors_after_kill(self):
        end = time.monotonic() + 2.0
        while True:
            left = h.pgrep(self.marker) + watchdogs_of(self.store)
            if not left or time.monotonic() >= end:
                break
            time.sleep(0.05)
        if left:
            self.fig["survivors"] += len(left)
            self.problem("after kill %d: %d processes alive 2 s later: %s"
                         % (self.fig["kills"], len(left), left))
            kill_pids(left)

    def delay(self):
        x = self.rng.random()
        if x < 0.7:
            return self.rng.uniform(0.0, 0.4)
        if x < 0.9:
            return self.rng.uniform(0.4, 1.5)
        return self.rng.uniform(1.5, 4.0)

    def run(self):
        self.reference()
        d = self.new_daemon(self.store, self.mnt, ["--no-resume"])
        self.next_job(d)
        res = None
        t0 = time.monotonic()
        for k in range(self.a.kills):
            old = None
            if self.job_finished(res):
                self.compare(d, self.job)
                old = self.next_job(d)
            d.do(self.job, "resume")
            if old:
                os.rmdir(d.path(old))
                self.deleted.add(old)
                self.done.pop(old, None)
            time.sleep(self.delay())
            if h.pgrep(self.marker):
                self.details["kills_mid_chunk"] += 1
            d.kill9()
            self.forget(d)
            self.fig["kills"] += 1
            self.survivors_after_kill()
            res = self.check()
            if res:
                self.track_done(res)
            d = self.new_daemon(self.store, self.mnt, ["--no-resume"])
            n = count_temps(self.store)
            if n:
                self.fig["tmp_after_restart"] += n
                self.problem("after restart %d: %d entries in tmp/ and "
                             "scratch/: %s" % (k + 1, n, self.temps()))
            if (k + 1) % 50 == 0 or k + 1 == self.a.kills:
                print("kill9: %d kills, %.0f s, job %s done %s, %d problems"
                      % (k + 1, time.monotonic() - t0, self.job,
                         len(self.done.get(self.job, {})),
                         len(self.problems)), flush=True)

        # the current job, to the end, without interruption
        sj = d.run_job(self.job, timeout=self.job_timeout(),
                       state=("done", "failed"))
        if sj["state"] != "done":
            self.details["unfinished"] += 1
            self.problem("job %s ended %s: %s" % (self.job, sj["state"],
                                                  json.dumps(sj["failed"])))
        else:
            self.compare(d, self.job)

        # at rest: a clean stop, one more start (temps counted), a stop,
        # and a full check
        d.stop(keep_dirs=True)
        d = self.new_daemon(self.store, self.mnt, ["--no-resume"])
        n = count_temps(self.store)
        if n:
            self.fig["tmp_after_restart"] += n
            self.problem("after the clean restart: %d entries in tmp/ and "
                         "scratch/" % n)
        d.stop(keep_dirs=True)
        res = self.check(cache=False)
        if res:
            self.track_done(res)
            self.details["orphans_at_rest"] = res["orphans"]
            self.details["tmp_at_rest"] = res["tmpfiles"]
            if res["orphans"] or res["tmpfiles"]:
                self.problem("at rest after a clean restart: orphans=%d "
                             "tmpfiles=%d" % (res["orphans"],
                                              res["tmpfiles"]))
                self.details["unfinished"] += 1  # fails the run

    def temps(self):
        out = []
        for sub in ("tmp", "scratch"):
            try:
                out += [sub + "/" + x
                        for x in os.listdir(os.path.join(self.store, sub))]
            except OSError:
                pass
        return out[:10]

    def teardown(self):
        with self.lock:
            daemons = list(self.daemons)
        for d in daemons:
            d.stop(keep_dirs=True)
        h.unmount(self.mnt)
        h.unmount(os.path.join(self.root, "ref-mnt"))
        kill_pids(h.pgrep(self.marker) + watchdogs_of(self.store))
        if not self.a.keep and not h.is_mounted(self.mnt) and \
                not h.is_mounted(os.path.join(self.root, "ref-mnt")):
            shutil.rmtree(self.root, ignore_errors=True)
        elif self.a.keep:
            print("kill9: kept %s" % self.root, flush=True)

    def emergency(self):
        with self.lock:
            daemons = list(self.daemons)
        for d in daemons:
            d.emergency()


def main():
    ap = argparse.ArgumentParser(description="random kill -9 of the jobfs "
                                 "daemon, checked with jobfs-check")
    ap.add_argument("--kills", type=int, required=True)
    ap.add_argument("--chunks", type=int, default=300)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--max-size", type=parse_size, default=parse_size("20M"))
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--keep", action="store_true",
                    help="keep the store and logs in /tmp")
    ap.add_argument("--deadline", type=float, default=None,
                    help="seconds before the run is abandoned (default: "
                    "from --kills and the job's size)")
    a = ap.parse_args()
    if a.seed is None:
        a.seed = int.from_bytes(os.urandom(4), "little")
    if os.geteuid() != 0:
        print("kill9: must run as root (FUSE mounts, /proc of workers)")
        print("kill9: kills=0 lost_done=0 corrupt=0 missing=0 "
              "done_went_down=0 tmp_after_restart=0 survivors=0 "
              "identical=no")
        return 2
    for prog in (h.JOBFS, h.TESTWORKER, CHECK):
        if not os.access(prog, os.X_OK):
            print("kill9: no program at %s (set JOBFS_BIN, "
                  "JOBFS_TESTWORKER, JOBFS_CHECK)" % prog)
            print("kill9: kills=0 lost_done=0 corrupt=0 missing=0 "
                  "done_went_down=0 tmp_after_restart=0 survivors=0 "
                  "identical=no")
            return 2

    s = Suite(a)
    s.prepare()
    deadline = a.deadline or 300 + a.kills * 15 + 3 * s.job_timeout()
    print("kill9: seed %d, %d kills, %d chunks, max size %d, root %s" %
          (a.seed, a.kills, a.chunks, a.max_size, s.root), flush=True)

    def watchdog():
        time.sleep(deadline)
        print("kill9: PROBLEM: deadline of %.0f s passed: abandoning the "
              "run (a daemon that hangs?)" % deadline, flush=True)
        s.emergency()
        time.sleep(20)
        print(s.final_line(), flush=True)
        os._exit(3)

    def on_term(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, on_term)
    threading.Thread(target=watchdog, daemon=True).start()
    t0 = time.monotonic()
    try:
        s.run()
    except BaseException as e:  # the final line is always printed
        s.problem("the run stopped: %r" % (e,))
        s.details["unfinished"] += 1
    finally:
        s.teardown()
    d = s.details
    print("kill9: details: seed=%d runtime=%.0fs jobs_finished=%d "
          "kills_mid_chunk=%d redone=%d resurrected=%d unfinished=%d "
          "orphans_at_rest=%d" % (a.seed, time.monotonic() - t0,
                                  d["jobs_finished"], d["kills_mid_chunk"],
                                  d["redone"], d["resurrected"],
                                  d["unfinished"], d["orphans_at_rest"]),
          flush=True)
    print(s.final_line(), flush=True)
    return 0 if s.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
