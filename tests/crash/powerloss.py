#!/usr/bin/env python3
"""powerloss.py - suite 3: power loss, through an in-process fault layer.

    tests/crash/powerloss.py [--cycles 100] [--chunks 200] [--seed S]
                             [--max-size 4M] [--kill-only 0.25]
                             [--coverage] [--crash-build DIR]
                             [--mutants] [--mutant-cycles 4] [--keep]

kill -9 cannot find a missing fsync: the page cache survives it. Here the
daemon runs with tests/crash/powerloss.c preloaded (LD_PRELOAD, for the
daemon only; its workers get an allow-listed environment without it),
which journals every change the daemon and liblmdb make under the store
and what is needed to undo it. After a kill -9, the restore step
(tests/crash/powerloss_restore.py) takes back every change that was not
durable yet under a pessimistic POSIX model (file bytes need an fsync of
the file; a name change an fsync of its directory): the store is then what
a power loss at that instant could have left. The promise under test: a
chunk that was acknowledged (listed in chunks/) before the power loss is
still done afterwards, with its object intact.

The job: --chunks lines (line chunking, parallel 2), each "SIZE SLEEP_MS
TO_FILE TEXT"; a /bin/sh wrapper runs a copy of jobfs-testworker that
writes SIZE deterministic bytes (log-uniform, 1 kB to --max-size; one
line in eight 1 B to 1 kB, an output the daemon keeps inline in LMDB) on its
stdout, or with TO_FILE=1 (one line in four) in $JOBFS_OUTPUT, which jobfs
renames out of the worker's scratch directory. Every 25th line repeats an
earlier one, so two chunks share one object. First the same job runs
uninterrupted in another store (the reference).

  D. --coverage: one session (two jobs, an input rewrite, rm of a chunk,
     rmdir of a job) under strace -ff -y with the layer: every call of
     the daemon that changed something under the store (write, sync,
     truncate, create, mkdir, rename, unlink, rmdir, link) must have its
     record in the journal, or the layer is blind to it ("unseen").
  A. fresh store: the layer watches from the daemon's very first start
     (the store directory itself is made and synced by this script); the
     job runs until a chunk is acknowledged; power loss; the acknowledged
     chunks must survive. This is where a store whose own directories are
     never made durable shows.
  B. the loop, on a store made without the layer and synced (so that A's
     finding, if any, does not hide everything else): per cycle

       1. the daemon starts with the layer (--no-resume; the dead mount
          of the last cycle is jobfs's to clear); a finished job is
          compared with the reference and replaced by a new one with the
          same spec and input (the old one removed with rmdir after the
          new one resumes, so releases and unlinks race with publishes);
       2. echo resume > control; a seeded random wait, then until at least
          one more chunk is acknowledged (5 s at most);
       3. the acknowledged set: ls chunks/ and each file's size, and the
          SHA-256 of up to three chunks acknowledged in this cycle;
       4. kill -9 at once; the mount cleared (fusermount3 -uz); the
          watchdog and every worker must be gone;
       5. with probability 1 - --kill-only, a power loss: the restore
          step runs, and a new journal starts; otherwise the page cache
          "survives" and the journal goes on into the next cycle (so a
          kill -9 followed, later, by a power loss is covered too);
       6. jobfs-check (read-only) must pass, and every chunk acknowledged
          so far must be done, with the acknowledged size (and hash), its
          object file present with that size and SHA-256 (or, for an
          output kept in LMDB, its bytes in the record, which jobfs-check
          hashes).

     At the end the job runs to completion, the daemon is unmounted
     cleanly, one more power loss is applied (a clean unmount must leave
     nothing to lose), and the output is compared with the reference.
  P. --crash-build DIR (a -Dcrashpoints=true build): for each crash point
     on a chunk's way (tmp-created ... after-commit), a fresh job of three
     chunks with one shared output: the crash build dies at the point (a
     crash without power loss: the journal goes on), a daemon without the
     point finishes the job, then power is lost. Recovery must leave
     nothing a later power loss can take.
  C. --mutants: the loop of B (power losses only, --mutant-cycles at
     most) with the builds build-mutant-no_output_fsync (the output file
     is renamed without an fsync) and build-mutant-nosync (LMDB with
     MDB_NOSYNC), made as tests/crash/persist_audit.py makes them. Each
     must fail: an acknowledged chunk lost or corrupt, or jobfs-check
     failing. What caught it is printed.

The last line is always printed:

  powerloss: cycles=N powerlosses=N acked=N lost=N corrupt=N
             check_failures=N fresh_store_lost=N [points_lost=N]
             [unseen=N] identical=yes|no [mutants_failed=N/2]

(one line). cycles, powerlosses, acked, lost, corrupt and check_failures
are part B's: acked counts the distinct chunks that were acknowledged and
then checked after at least one power loss; lost those no longer done (or
whose object file is gone), corrupt those whose object has another size
or hash; check_failures the jobfs-check runs that did not pass.
fresh_store_lost and points_lost count acknowledged chunks lost (or
corrupt) in parts A and P; unseen the changes part D found without a
record. The exit status is 0 only when every count but cycles,
powerlosses and acked is 0, identical=yes, nothing in the "details" line
went wrong (a call the layer cannot model, an undo that met a conflict,
survivors, a job that did not finish), and with --mutants, both mutants
failed.

Programs: JOBFS_BIN, JOBFS_TESTWORKER (tests/integration/harness.py),
JOBFS_CHECK (default build/tools/jobfs-check), POWERLOSS_LIB (default
tests/powerloss.so next to JOBFS_BIN). Run as root. Only the standard
library is used.
"""

import argparse
import collections
import glob
import hashlib
import json
import math
import os
import random
import re
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
sys.path.insert(0, HERE)
import harness as h  # noqa: E402
from persist_audit import mutant_build  # noqa: E402
from powerloss_restore import DONE, NAMES, Restore, parse  # noqa: E402

TOP = os.path.normpath(os.path.join(HERE, "..", ".."))
CHECK = os.path.abspath(os.environ.get("JOBFS_CHECK") or
                        os.path.join(h.BUILD, "tools", "jobfs-check"))
LIB = os.path.abspath(os.environ.get("POWERLOSS_LIB") or
                      os.path.join(os.path.dirname(h.JOBFS), "tests",
                                   "powerloss.so"))
MUTANTS = ("no_output_fsync", "nosync")

WRAPPER = """#!/bin/sh
# powerloss.py worker: the chunk's line is "SIZE SLEEP_MS TO_FILE TEXT";
# SIZE bytes generated from the line, on stdout or in $JOBFS_OUTPUT.
IFS=' ' read -r size sleep tofile rest
printf '%%s %%s %%s %%s\\n' "$size" "$sleep" "$tofile" "$rest" |
	TW_SIZE="$size" TW_SLEEP_MS="$sleep" TW_TO_FILE="$tofile" exec "%s"
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
    """One line per chunk: "SIZE SLEEP_MS TO_FILE TEXT"."""
    lo = min(1024, max_size)
    lines = []
    for i in range(1, chunks + 1):
        if i % 25 == 0 and len(lines) > 3:
            lines.append(lines[rng.randrange(len(lines))])  # shared object
            continue
        if rng.random() < 0.125:
            size = rng.randint(1, lo)  # kept inline by the default
        else:
            size = int(math.exp(rng.uniform(math.log(lo),
                                            math.log(max_size))))
        sleep = rng.choice([0, 0, 10, 50, 100])
        tofile = 1 if rng.random() < 0.25 else 0
        lines.append("%d %d %d line %d of the power-loss suite %08x" %
                     (size, sleep, tofile, i, rng.getrandbits(32)))
    return "".join(line + "\n" for line in lines)


def chunk_digests(d, job):
    """{chunk number: (size, sha256)} of a job's chunks/ files."""
    out = {}
    top = d.path(job, "chunks")
    for name in os.listdir(top):
        p = os.path.join(top, name)
        out[int(name.split(".")[0])] = (os.stat(p).st_size, file_sha256(p))
    return out


def file_sha256(path):
    hs = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            hs.update(b)
    return hs.hexdigest()


class LayerDaemon(h.Daemon):
    """A foreground daemon of a given binary (the mutants are other
    builds); the layer comes through env."""

    def __init__(self, binary, **kw):
        self.binary = binary
        super().__init__(**kw)

    def command(self):
        cmd = super().command()
        cmd[0] = self.binary
        return cmd


class Suite:
    """What all runs share: the options, the job, the reference."""

    def __init__(self, args):
        self.a = args
        self.rng = random.Random(args.seed)
        self.root = tempfile.mkdtemp(prefix="jobfs-powerloss-", dir="/tmp")
        self.marker = "plw" + uuid.uuid4().hex[:12]
        self.lock = threading.Lock()
        self.daemons = []
        self.problems = []
        self.ref_sha = None
        self.ref_chunks = {}

    def problem(self, text):
        self.problems.append(text)
        print("powerloss: PROBLEM: " + text, flush=True)

    def say(self, text):
        print("powerloss: " + text, flush=True)

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
                     "parallel": 2, "attempts": 5,
                     "backoff": {"initial": 0.1, "factor": 2, "max": 1}}
        self.total = sum(int(line.split()[0])
                         for line in self.input.splitlines())

    def job_timeout(self):
        return 60 + self.total / (20 << 20) + self.a.chunks * 0.05

    def new_daemon(self, binary, store, mnt, layer_env=None, args=()):
        d = LayerDaemon(binary, store=store, mnt=mnt, args=list(args),
                        env=layer_env, foreground=True, grace=2,
                        max_running=4, root=os.path.dirname(store))
        with self.lock:
            self.daemons.append(d)
        d.start()
        return d

    def forget(self, d):
        with self.lock:
            if d in self.daemons:
                self.daemons.remove(d)

    def reference(self):
        t0 = time.monotonic()
        top = os.path.join(self.root, "ref")
        os.makedirs(top)
        d = self.new_daemon(h.JOBFS, os.path.join(top, "store"),
                            os.path.join(top, "mnt"))
        try:
            d.mkjob("ref", self.spec, self.input)
            sj = d.run_job("ref", timeout=self.job_timeout(),
                           state=("done", "failed"))
            if sj["state"] != "done":
                raise RuntimeError("the reference run failed: %s" %
                                   json.dumps(sj.get("failed")))
            self.ref_sha = file_sha256(d.path("ref", "output.out"))
            shutil.copy(d.path("ref", "output.out"),
                        os.path.join(self.root, "ref-output.out"))
            self.ref_chunks = chunk_digests(d, "ref")
        finally:
            d.stop(keep_dirs=True)
            self.forget(d)
        shutil.rmtree(top, ignore_errors=True)
        self.say("reference run: %d chunks, %.1f MB, %.1f s, output "
                 "sha256 %s" % (self.a.chunks, self.total / 1e6,
                                time.monotonic() - t0, self.ref_sha[:16]))

    def emergency(self):
        with self.lock:
            daemons = list(self.daemons)
        for d in daemons:
            d.emergency()

    def teardown(self):
        with self.lock:
            daemons = list(self.daemons)
        for d in daemons:
            d.stop(keep_dirs=True)
        h.kill_pids(h.pgrep(self.marker))
        mounted = False
        for name in os.listdir(self.root):
            p = os.path.join(self.root, name, "mnt")
            h.unmount(p)
            mounted = mounted or h.is_mounted(p)
        if self.a.keep or mounted:
            self.say("kept %s" % self.root)
        else:
            shutil.rmtree(self.root, ignore_errors=True)


class Run:
    """One store driven by one jobfs binary through kill -9 and power
    loss cycles."""

    def __init__(self, suite, name, binary, seed):
        self.s = suite
        self.name = name
        self.bin = binary
        self.rng = random.Random(seed)
        self.top = os.path.join(suite.root, name)
        os.makedirs(os.path.join(self.top, "mnt"))
        self.store = os.path.join(os.path.realpath(self.top), "store")
        self.mnt = os.path.join(self.top, "mnt")
        self.pl = os.path.join(os.path.realpath(self.top), "pl")
        self.fig = collections.Counter()
        self.acked = {}            # job -> {n: [size, sha or None]}
        self.checked = set()       # (job, n) checked after a power loss
        self.deleted = set()
        self.job = None
        self.jobno = 0
        self.d = None
        self.res = None            # the last jobfs-check result
        self.identical = None
        self.caught = []           # explanations of losses
        self.undone = collections.Counter()
        self.cascades = []
        self.journal_n = 0
        self.obj_cache = {}
        self.spec, self.input = suite.spec, suite.input
        self.quiet = False         # a mutant: losses are expected

    # -- the daemon --

    def layer_env(self):
        return {"LD_PRELOAD": LIB, "POWERLOSS_ROOT": self.store,
                "POWERLOSS_DIR": self.pl}

    def start(self, layer=True, env=None):
        e = dict(self.layer_env()) if layer else {}
        e.update(env or {})
        self.d = self.s.new_daemon(self.bin, self.store, self.mnt, e or None,
                                   ["--no-resume"])
        return self.d

    def new_journal(self):
        """A power loss happened (or none yet): what is on disk now is
        the durable state the next journal starts from."""
        if os.path.exists(self.pl):
            if self.s.a.keep:
                self.journal_n += 1
                os.rename(self.pl, "%s.%d" % (self.pl, self.journal_n))
            else:
                shutil.rmtree(self.pl)
        os.makedirs(self.pl)

    def kill(self):
        """kill -9, clear the dead mount, and see every worker and the
        watchdog gone (a worker still writing would race the restore)."""
        d, self.d = self.d, None
        d.kill9()
        d.stop(keep_dirs=True)  # fusermount3 -u, else -uz
        self.s.forget(d)
        end = time.monotonic() + 3.0
        while True:
            left = h.pgrep(self.s.marker) + h.watchdogs_of(self.store)
            if not left or time.monotonic() > end:
                break
            time.sleep(0.05)
        if left:
            self.fig["survivors"] += len(left)
            self.s.problem("%s: %d processes alive 3 s after the kill: %s"
                           % (self.name, len(left), left))
            h.kill_pids(left)
            time.sleep(0.2)

    # -- the job --

    def next_job(self):
        self.jobno += 1
        name = "job%d" % self.jobno
        self.d.mkjob(name, self.spec, self.input)
        old, self.job = self.job, name
        self.acked[name] = {}
        return old

    def job_finished(self):
        pj = self.res["per_job"].get(self.job) if self.res else None
        return pj is not None and pj["chunks"] > 0 and \
            pj["done"] == pj["chunks"]

    def compare(self, job):
        if self.s.ref_sha is None:
            return
        sha = file_sha256(self.d.path(job, "output.out"))
        same = sha == self.s.ref_sha
        if not same:
            self.s.problem("%s: job %s: output.out sha256 %s, the "
                           "uninterrupted run's %s" % (self.name, job, sha,
                                                       self.s.ref_sha))
            self.differences(job)
        self.identical = same if self.identical is None else \
            (self.identical and same)
        self.fig["jobs_finished"] += 1

    def differences(self, job):
        """Name the chunks that differ from the uninterrupted run's, and
        keep them with the job's events for a look afterwards."""
        got = chunk_digests(self.d, job)
        ref = self.s.ref_chunks
        keep = os.path.join(self.s.root, "evidence-%s-%s" % (self.name, job))
        os.makedirs(keep, exist_ok=True)
        lines = []
        bad = os.path.join(keep, "output.out")
        shutil.copy(self.d.path(job, "output.out"), bad)
        again = file_sha256(self.d.path(job, "output.out"))
        lines.append("output.out read again: %s" %
                     ("the same as the reference" if again ==
                      self.s.ref_sha else again))
        with open(bad, "rb") as f:
            b = f.read()
        with open(os.path.join(self.s.root, "ref-output.out"), "rb") as f:
            r = f.read()
        first = next((i for i in range(min(len(b), len(r)))
                      if b[i] != r[i]), min(len(b), len(r)))
        last = next((i for i in range(1, min(len(b), len(r)) + 1)
                     if b[-i] != r[-i]), None)
        lines.append("output.out: %d bytes, the reference's %d; first "
                     "difference at %d, last %s from the end" %
                     (len(b), len(r), first, last))
        off = 0
        for n in sorted(ref):
            if off <= first < off + ref[n][0]:
                lines.append("first difference is in chunk %d (offset %d "
                             "of %d)" % (n, first - off, ref[n][0]))
            off += ref[n][0]
        for n in sorted(set(got) | set(ref)):
            if got.get(n) == ref.get(n):
                continue
            lines.append("chunk %d: %s, the uninterrupted run's %s" %
                         (n, got.get(n), ref.get(n)))
            for name in os.listdir(self.d.path(job, "chunks")):
                if name.split(".")[0] == str(n):
                    shutil.copy(self.d.path(job, "chunks", name), keep)
        for name in ("events", "status.json", "manifest.json"):
            try:
                shutil.copy(self.d.path(job, name), keep)
            except OSError:
                pass
        for line in lines[:10] or ["no chunk differs: output.out does"]:
            self.s.problem("%s: job %s: %s" % (self.name, job, line))
        self.s.say("kept the evidence in %s" % keep)
        self.s.a.keep = True

    def read_acked(self, job, sample=3):
        """The acknowledged set: chunks/ and sizes; the hash of up to
        `sample` chunks not seen before."""
        d = self.d.path(job, "chunks")
        now = {}
        for name in os.listdir(d):
            n = int(name.split(".")[0])
            now[n] = [os.stat(os.path.join(d, name)).st_size, None]
        known = self.acked.setdefault(job, {})
        new = [n for n in now if n not in known]
        for n in self.rng.sample(new, min(sample, len(new))):
            names = [x for x in os.listdir(d) if x.split(".")[0] == str(n)]
            if names:
                now[n][1] = file_sha256(os.path.join(d, names[0]))
        return now

    def wait_acks(self, job, before, delay):
        """Sleep delay, then wait (5 s at most) until a chunk not in
        before is listed; the acknowledged set."""
        time.sleep(delay)
        end = time.monotonic() + 5.0
        d = self.d.path(job, "chunks")
        while time.monotonic() < end:
            names = os.listdir(d)
            if any(int(x.split(".")[0]) not in before for x in names):
                break
            time.sleep(0.05)
        return self.read_acked(job)

    def delay(self):
        x = self.rng.random()
        if x < 0.7:
            return self.rng.uniform(0.05, 0.8)
        if x < 0.9:
            return self.rng.uniform(0.8, 2.0)
        return self.rng.uniform(2.0, 4.0)

    # -- power loss and checks --

    def power_loss(self):
        r = Restore(self.store, self.pl).run()
        self.fig["powerlosses"] += 1
        for x in r.notes:
            self.fig["notes"] += 1
            self.s.problem("%s: the layer saw a call it cannot model: %s"
                           % (self.name, x))
        for x in r.conflicts:
            self.fig["conflicts"] += 1
            self.s.problem("%s: restore conflict: %s" % (self.name, x))
        self.cascades += r.cascades
        self.undone.update(r.undone)
        self.new_journal()
        return r

    def check(self):
        r = subprocess.run([CHECK, "--store", self.store, "--json",
                            "--list"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=600)
        try:
            res = json.loads(r.stdout)
        except ValueError:
            res = None
        if r.returncode != 0 or res is None:
            self.fig["check_failures"] += 1
            lines = r.stderr.decode(errors="replace").splitlines()
            (self.s.say if self.quiet else self.s.problem)(
                "%s: jobfs-check exited %d: %s" %
                (self.name, r.returncode,
                 "; ".join(lines[:3]) or "(nothing said)"))
        self.res = res
        return res

    def object_ok(self, sha, size):
        """Is STORE/objects/xx/sha there, with this size and hash?
        (None: missing; False: damaged.)"""
        p = os.path.join(self.store, "objects", sha[:2], sha)
        try:
            st = os.stat(p)
        except FileNotFoundError:
            return None
        if st.st_size != size:
            return False
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self.obj_cache.get(p) != key:
            if file_sha256(p) != sha:
                return False
            self.obj_cache[p] = key
        return True

    def verify(self, restore, after_power):
        """Every acknowledged chunk still done and intact."""
        done = {}
        for job, n, sha, size, inline in \
                (self.res or {}).get("done_chunks", []):
            done[(job, n)] = (sha, size, inline)
        for job, chunks in self.acked.items():
            if job in self.deleted:
                continue
            for n, (size, sha_read) in list(chunks.items()):
                rec = done.get((job, n))
                why = None
                if rec is None:
                    self.fig["lost"] += 1
                    why = "lost: not done any more"
                else:
                    # an output kept in LMDB has no file: jobfs-check
                    # hashed its bytes in the record (else it failed)
                    ok = True if rec[2] else self.object_ok(rec[0], rec[1])
                    if ok is None:
                        self.fig["lost"] += 1
                        why = "lost: object %s missing" % rec[0][:16]
                    elif not ok or rec[1] != size or \
                            (sha_read and sha_read != rec[0]):
                        self.fig["corrupt"] += 1
                        why = "corrupt: object %s (size %d, acknowledged " \
                              "%d)" % (rec[0][:16], rec[1], size)
                if why:
                    self.explain(job, n, why, rec, restore)
                    del chunks[n]  # counted once; it will be redone
                elif after_power:
                    self.checked.add((job, n))
        self.fig["acked"] = len(self.checked)

    def explain(self, job, n, why, rec, restore):
        text = "%s: job %s chunk %d %s" % (self.name, job, n, why)
        if restore is not None:
            sha = rec[0] if rec else None
            hits = [a for a in restore.actions
                    if (sha and sha in a[1]) or a[1] == "db/data.mdb" or
                    (sha and a[1] == "objects/" + sha[:2])]
            if hits:
                text += " <- " + "; ".join("%s %s: %s" % a
                                           for a in hits[:3])
        self.caught.append(text)
        if len(self.caught) <= 3:
            self.s.say(text)
        elif len(self.caught) == 4:
            self.s.say("%s: (more losses not shown)" % self.name)

    def failed(self):
        f = self.fig
        return f["lost"] + f["corrupt"] + f["check_failures"] > 0

    # -- the phases --

    def setup(self, layer):
        """The store and the first job; without the layer the store is
        then made durable by hand (unmount, sync)."""
        os.makedirs(self.store, mode=0o700)
        if layer:
            os.sync()
            self.new_journal()
        self.start(layer)
        self.next_job()
        if not layer:
            self.d.stop(keep_dirs=True)
            self.s.forget(self.d)
            self.d = None
            os.sync()
            self.new_journal()

    def cycle(self, kill_only):
        if self.d is None:
            self.start()
        old = None
        if self.job_finished():
            self.compare(self.job)
            old = self.next_job()
        self.d.do(self.job, "resume")
        if old:
            os.rmdir(self.d.path(old))
            self.deleted.add(old)
            self.acked.pop(old, None)
        before = set(self.acked[self.job])
        now = self.wait_acks(self.job, before, self.delay())
        self.kill()
        self.fig["cycles"] += 1
        for n, v in now.items():
            self.acked[self.job].setdefault(n, v)
        restore = None
        power = self.rng.random() >= kill_only
        if power:
            restore = self.power_loss()
        else:
            self.fig["kill_only"] += 1
        self.check()
        self.verify(restore, power)

    def finish(self):
        """Run the job to the end, unmount cleanly, lose power once more,
        and compare."""
        if self.d is None:
            self.start()
        sj = self.d.run_job(self.job, timeout=self.s.job_timeout(),
                            state=("done", "failed"))
        if sj["state"] != "done":
            self.fig["unfinished"] += 1
            self.s.problem("%s: job %s ended %s" % (self.name, self.job,
                                                    sj["state"]))
            return
        self.acked[self.job].update(self.read_acked(self.job, sample=0))
        self.d.stop(keep_dirs=True)
        self.s.forget(self.d)
        self.d = None
        restore = self.power_loss()
        self.check()
        self.verify(restore, True)
        self.start()
        try:
            # (not the state's name: a resume of a job already done
            # leaves its mode "run", and --no-resume shows it "stopped")
            pj = self.res["per_job"].get(self.job) if self.res else None
            if not pj or pj["done"] != pj["chunks"]:
                self.fig["unfinished"] += 1
                self.s.problem("%s: job %s is not done after the last "
                               "power loss: %s" % (self.name, self.job, pj))
            else:
                self.compare(self.job)
        finally:
            self.d.stop(keep_dirs=True)
            self.s.forget(self.d)
            self.d = None

    def fresh(self):
        """Part A: the layer from the first start of a new store."""
        self.setup(layer=True)
        self.d.do(self.job, "resume")
        deadline = time.monotonic() + 30
        while not os.listdir(self.d.path(self.job, "chunks")):
            if time.monotonic() > deadline:
                raise RuntimeError("no chunk acknowledged in 30 s")
            time.sleep(0.05)
        time.sleep(0.3)
        now = self.read_acked(self.job, sample=2)
        self.kill()
        self.fig["cycles"] += 1
        self.acked[self.job].update(now)
        restore = self.power_loss()
        self.check()
        self.verify(restore, True)
        return restore


def run_main(s, a):
    """Parts A and B with the real build; (figures, fresh figures)."""
    fresh = Run(s, "fresh", h.JOBFS, s.rng.getrandbits(32))
    try:
        r = fresh.fresh()
        lost = fresh.fig["lost"] + fresh.fig["corrupt"]
        s.say("A. fresh store: %d chunks acknowledged, %d lost; restore "
              "undid %s" %
              (len(fresh.checked) + lost, lost, ", ".join(
                  "%s=%d" % kv for kv in sorted(r.undone.items()))))
        for c in fresh.cascades:
            s.say("A. fresh store: cascade: %s" % c)
    except Exception as e:
        s.problem("fresh store: %r" % (e,))
        fresh.fig["unfinished"] += 1
    if fresh.d:
        fresh.d.stop(keep_dirs=True)
        s.forget(fresh.d)

    run = Run(s, "main", h.JOBFS, s.rng.getrandbits(32))
    run.setup(layer=False)
    t0 = time.monotonic()
    for k in range(a.cycles):
        run.cycle(a.kill_only)
        if (k + 1) % 25 == 0 or k + 1 == a.cycles:
            s.say("B. %d cycles, %.0f s, %d power losses, job %s: %d "
                  "acknowledged, %d problems" %
                  (k + 1, time.monotonic() - t0, run.fig["powerlosses"],
                   run.job, len(run.acked[run.job]), len(s.problems)))
    run.finish()
    for c in run.cascades[:5]:
        s.say("B. cascade: %s" % c)
    s.say("B. restore undid in all: %s" % ", ".join(
        "%s=%d" % kv for kv in sorted(run.undone.items())))
    return run, fresh


POINTS = ("tmp-created", "mid-output", "file-fsync", "rename", "dir-fsync",
          "before-commit", "after-commit")


def run_point(s, a, build, point):
    """Part P: the crash build dies at a crash point (a kill with no power
    loss: the journal goes on), a daemon without the point finishes the
    job, then power is lost. The job's chunks all have the same output,
    so everything lands in one objects/xx/ directory, which the crashed
    run may have created."""
    run = Run(s, "point-" + point, os.path.join(build, "jobfs"),
              s.rng.getrandbits(32))
    line = "%d 0 0 crash point %s\n" % (min(a.max_size, 50000), point)
    run.input = line * 3
    run.setup(layer=False)
    d = run.start(env={"JOBFS_CRASHPOINT": point + ":1"})
    try:
        d.do(run.job, "resume")
    except OSError:
        pass  # it may die before it answers
    end = time.monotonic() + 30
    while d.alive() and time.monotonic() < end:
        try:
            if d.sj(run.job)["state"] == "done":
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    crashed = not d.alive()
    if crashed:
        d.stop(keep_dirs=True)
        s.forget(d)
        run.d = None
    else:
        run.kill()
    # no power loss here: the page cache survives the crash
    run.start()
    sj = run.d.run_job(run.job, timeout=s.job_timeout(),
                       state=("done", "failed"))
    if sj["state"] == "done":
        run.acked[run.job].update(run.read_acked(run.job, sample=1))
    run.kill()
    run.fig["cycles"] += 2
    restore = run.power_loss()
    run.check()
    run.verify(restore, True)
    lost = run.fig["lost"] + run.fig["corrupt"]
    s.say("P. %s: %s, then power loss: %d of %d acknowledged chunks lost%s"
          % (point, "crashed there" if crashed else "NOT reached",
             lost, len(run.checked) + lost,
             ("; " + "; ".join(run.cascades[:2])) if run.cascades else ""))
    if not crashed:
        s.problem("crash point %s was not reached" % point)
    return run


STRACE_KINDS = {
    "write": "write", "pwrite64": "write", "writev": "write",
    "pwritev": "write", "pwritev2": "write", "copy_file_range": "write",
    "sendfile": "write", "splice": "write", "fallocate": "truncate",
    "ftruncate": "truncate", "truncate": "truncate", "fsync": "sync",
    "fdatasync": "sync", "mkdir": "mkdir", "mkdirat": "mkdir",
    "rename": "rename", "renameat": "rename", "renameat2": "rename",
    "unlink": "unlink", "unlinkat": "unlink", "rmdir": "rmdir",
    "link": "link", "linkat": "link", "symlink": "link",
    "symlinkat": "link", "openat": "create", "open": "create",
    "creat": "create",
}


def strace_changes(tracedir, store):
    """(kind, path) of every call of the daemon's threads (not of its
    workers: any process that executed something else) that changed
    something under the store, from strace -ff -y output."""
    line_re = re.compile(r"^(\w+)\((.*)\) += (-?\d+)")
    fd_re = re.compile(r"(-?\d+|AT_FDCWD)<([^>]*)>")
    out = collections.Counter()
    for f in glob.glob(os.path.join(tracedir, "trace.*")):
        with open(f, errors="replace") as fh:
            lines = fh.read().splitlines()
        if any(x.startswith("execve(") and "/jobfs\"" not in x
               for x in lines):
            continue  # a worker
        for x in lines:
            m = line_re.match(x)
            if not m or m.group(1) not in STRACE_KINDS or \
                    int(m.group(3)) < 0:
                continue
            name, args = m.group(1), m.group(2)
            kind = STRACE_KINDS[name]
            fds = fd_re.findall(args)
            strs = re.findall(r'"([^"]*)"', args)
            if kind in ("write", "sync", "truncate"):
                if name == "copy_file_range" or name == "splice":
                    fds = fds[1:]
                if not fds:
                    continue
                path = fds[0][1].replace(" (deleted)", "")
            elif kind == "create":
                if "O_CREAT" not in args or "O_EXCL" not in args:
                    continue  # only opens that surely created
                path = os.path.join(fds[0][1] if fds else "/", strs[0])
            elif kind == "link":
                # the new name: link(old, new), linkat(od, old, nd, new),
                # symlink(target, new), symlinkat(target, nd, new)
                base = fds[-1][1] if fds else "/"
                path = os.path.normpath(os.path.join(base, strs[1]))
            else:
                base = fds[0][1] if fds else "/"
                path = os.path.normpath(os.path.join(base, strs[0]))
                if kind == "unlink" and "AT_REMOVEDIR" in args:
                    kind = "rmdir"
            if path.startswith(store + "/") and not path.endswith(
                    ("/store/lock", "/db/lock.mdb")):
                out[(kind, path)] += 1
    return out


def journal_changes(pldir):
    recs, _ = parse(os.path.join(pldir, "journal"))
    done = {r.id: r for r in recs if r.type == DONE}
    out = collections.Counter()
    for r in recs:
        kind = NAMES[r.type]
        if kind in ("write", "truncate", "sync"):
            out[(kind, r.p1)] += 1
        elif kind in ("create", "mkdir", "rename", "unlink", "rmdir",
                      "link"):
            if done.get(r.id) is not None and done[r.id].err == 0:
                out[(kind, r.p1 if kind != "rename" else r.p1)] += 1
    return out


def run_coverage(s):
    """Part D: does the layer see every change the daemon makes? One
    session under strace -ff -y with the layer; every changing call of the
    daemon under the store must have its record."""
    if not shutil.which("strace"):
        s.problem("coverage: strace is not installed")
        return None
    run = Run(s, "coverage", h.JOBFS, s.rng.getrandbits(32))
    os.makedirs(run.store, mode=0o700)
    run.new_journal()
    trace = os.path.join(run.top, "trace")
    os.makedirs(trace)
    env = dict(os.environ, **run.layer_env())
    p = subprocess.Popen(["strace", "-ff", "-y", "-qq", "-o",
                          os.path.join(trace, "trace"), h.JOBFS, "-f",
                          "--store", run.store, "--max-running", "4",
                          run.mnt], env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        d = h.Daemon(store=run.store, mnt=run.mnt)  # for its helpers
        end = time.monotonic() + 20
        while not h.mounted_fuse(run.mnt):
            if time.monotonic() > end or p.poll() is not None:
                raise RuntimeError("jobfs did not mount under strace")
            time.sleep(0.05)
        for name, tofile in (("a", "1"), ("b", "0")):
            spec = dict(run.spec)
            d.mkjob(name, spec, "".join("%d 0 %s coverage %s %d\n" %
                                        (3000 + i, tofile, name, i)
                                        for i in range(6)))
            d.run_job(name, timeout=60, state=("done", "failed"))
        d.set_input("b", "".join("%d 0 0 coverage again %d\n" % (2000 + i, i)
                                 for i in range(5)))
        d.run_job("b", timeout=60, state=("done", "failed"))
        os.unlink(d.path("b", "chunks", sorted(
            os.listdir(d.path("b", "chunks")))[0]))
        d.run_job("b", timeout=60, state=("done", "failed"))
        os.rmdir(d.path("a"))
        time.sleep(0.5)
    finally:
        h.unmount(run.mnt)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    seen = strace_changes(trace, run.store)
    rec = journal_changes(run.pl)
    unseen = seen - rec
    kinds = collections.Counter()
    for (kind, _), n in seen.items():
        kinds[kind] += n
    s.say("D. coverage: the daemon changed the store %d times (%s); "
          "without a record: %d" % (
              sum(seen.values()), ", ".join("%s=%d" % kv for kv in
                                            sorted(kinds.items())),
              sum(unseen.values())))
    for (kind, path), n in sorted(unseen.items())[:5]:
        s.problem("coverage: %d %s of %s not seen by the layer" %
                  (n, kind, path))
    return sum(unseen.values())


def run_mutant(s, a, name):
    """Part C: one mutant build must fail the loop."""
    binary = os.path.join(mutant_build(name), "jobfs")
    run = Run(s, "mutant-" + name, binary, s.rng.getrandbits(32))
    run.quiet = True
    try:
        run.setup(layer=False)
        for _ in range(a.mutant_cycles):
            run.cycle(0.0)
            if run.failed():
                break
    except Exception as e:
        run.fig["daemon_failures"] += 1
        run.caught.append("%s: the run broke: %r" % (run.name, e))
    finally:
        if run.d:
            run.d.stop(keep_dirs=True)
            s.forget(run.d)
    f = run.fig
    caught = run.failed() or f["daemon_failures"] > 0
    s.say("C. mutant %s: %s after %d cycles: lost=%d corrupt=%d "
          "check_failures=%d%s" % (
              name, "FAILED the suite (caught)" if caught else
              "PASSED the suite (not caught)", f["cycles"], f["lost"],
              f["corrupt"], f["check_failures"],
              ("; first: " + run.caught[0]) if run.caught else ""))
    return caught


def final_line(s, st):
    run, fresh = st["run"], st["fresh"]
    f = run.fig if run else collections.Counter()
    fl = (fresh.fig["lost"] + fresh.fig["corrupt"]) if fresh else 0
    line = ("powerloss: cycles=%d powerlosses=%d acked=%d lost=%d "
            "corrupt=%d check_failures=%d fresh_store_lost=%d" %
            (f["cycles"], f["powerlosses"], f["acked"], f["lost"],
             f["corrupt"], f["check_failures"], fl))
    if st["points"] is not None:
        line += " points_lost=%d" % points_lost(st["points"])
    if st["coverage"] is not None or s.a.coverage:
        line += " unseen=%s" % ("-" if st["coverage"] is None
                                else st["coverage"])
    line += " identical=%s" % ("yes" if run and run.identical else "no")
    if st["mutants"] is not None:
        line += " mutants_failed=%d/%d" % (sum(st["mutants"].values()),
                                           len(MUTANTS))
    return line


def points_lost(points):
    return sum(r.fig["lost"] + r.fig["corrupt"] for r in points)


def main():
    ap = argparse.ArgumentParser(description="power loss under an "
                                 "in-process fault layer")
    ap.add_argument("--cycles", type=int, default=100)
    ap.add_argument("--chunks", type=int, default=200)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--max-size", type=parse_size, default=parse_size("4M"))
    ap.add_argument("--kill-only", type=float, default=0.25,
                    help="the share of kills with no power loss")
    ap.add_argument("--mutants", action="store_true")
    ap.add_argument("--mutant-cycles", type=int, default=4)
    ap.add_argument("--crash-build", default=None,
                    help="a -Dcrashpoints=true build: part P")
    ap.add_argument("--coverage", action="store_true",
                    help="part D: the layer's view checked with strace")
    ap.add_argument("--keep", action="store_true",
                    help="keep the stores, journals and logs in /tmp")
    ap.add_argument("--deadline", type=float, default=None)
    a = ap.parse_args()
    if a.seed is None:
        a.seed = int.from_bytes(os.urandom(4), "little")
    empty = ("powerloss: cycles=0 powerlosses=0 acked=0 lost=0 corrupt=0 "
             "check_failures=0 fresh_store_lost=0 identical=no")
    if os.geteuid() != 0:
        print("powerloss: must run as root (FUSE mounts, /proc of workers)")
        print(empty)
        return 2
    for prog in (h.JOBFS, h.TESTWORKER, CHECK, LIB):
        if not os.access(prog, os.R_OK):
            print("powerloss: no %s (set JOBFS_BIN, JOBFS_TESTWORKER, "
                  "JOBFS_CHECK, POWERLOSS_LIB)" % prog)
            print(empty)
            return 2

    s = Suite(a)
    s.prepare()
    deadline = a.deadline or (300 + a.cycles * 12 + 3 * s.job_timeout() +
                              (a.mutant_cycles * 40 if a.mutants else 0))
    s.say("seed %d, %d cycles, %d chunks, max size %d, kill-only %.2f, "
          "root %s" % (a.seed, a.cycles, a.chunks, a.max_size, a.kill_only,
                       s.root))
    state = {"run": None, "fresh": None, "mutants": None, "points": None,
             "coverage": None}

    def watchdog():
        time.sleep(deadline)
        s.problem("deadline of %.0f s passed: abandoning the run" %
                  deadline)
        s.emergency()
        time.sleep(20)
        print(final_line(s, state), flush=True)
        os._exit(3)

    def on_term(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, on_term)
    threading.Thread(target=watchdog, daemon=True).start()
    t0 = time.monotonic()
    unfinished = 0
    try:
        s.reference()
        if a.coverage:
            state["coverage"] = run_coverage(s)
        state["run"], state["fresh"] = run_main(s, a)
        if a.crash_build:
            build = os.path.abspath(a.crash_build)
            subprocess.run(["ninja", "-C", build, "jobfs"], check=True,
                           stdout=subprocess.DEVNULL)
            state["points"] = []
            for point in POINTS:
                state["points"].append(run_point(s, a, build, point))
        if a.mutants:
            state["mutants"] = {}
            for name in MUTANTS:
                state["mutants"][name] = run_mutant(s, a, name)
    except BaseException as e:  # the final line is always printed
        s.problem("the run stopped: %r" % (e,))
        unfinished += 1
    finally:
        s.teardown()
    run, fresh, mutants = state["run"], state["fresh"], state["mutants"]
    points = state["points"] or []
    f = run.fig if run else collections.Counter()
    ff = fresh.fig if fresh else collections.Counter()
    unfinished += f["unfinished"]
    print("powerloss: details: seed=%d runtime=%.0fs kill_only=%d "
          "jobs_finished=%d cascades=%d notes=%d conflicts=%d survivors=%d "
          "unfinished=%d" % (
              a.seed, time.monotonic() - t0, f["kill_only"],
              f["jobs_finished"], len(run.cascades) if run else 0,
              f["notes"] + ff["notes"], f["conflicts"] + ff["conflicts"],
              f["survivors"] + ff["survivors"], unfinished + ff["unfinished"]),
          flush=True)
    print(final_line(s, state), flush=True)
    ok = (run is not None and fresh is not None and not s.problems and
          f["lost"] + f["corrupt"] + f["check_failures"] == 0 and
          ff["lost"] + ff["corrupt"] + ff["check_failures"] == 0 and
          points_lost(points) == 0 and
          (not a.coverage or state["coverage"] == 0) and
          run.identical is True and
          (mutants is None or all(mutants.values())))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
