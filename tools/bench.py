#!/usr/bin/env python3
"""bench.py - jobfs next to a peer doing the same work, in the same run.

A benchmark, not a test: it prints figures and never fails on a time. It
fails (exit 1) only when a run is broken: a mount that does not come up, a
job that fails, an output that is wrong, a peer command that exits non-zero.

    tools/bench.py                  every row at full size; writes the table
                                    to docs/performance.md
    tools/bench.py --smoke          a very small version of every row (CI);
                                    writes nothing unless --write
    tools/bench.py --only P1,P4     some rows
    tools/bench.py --scale 0.1      chunk counts and byte sizes times 0.1
    tools/bench.py --perf DIR       also record `perf record -a -g` while the
                                    jobfs side of each row runs (perturbs the
                                    figures); DIR/ROW-PART.txt gets the top
                                    symbols

Rows (docs/performance.md says what each measures and why that peer):

    P1  10,000 one-line chunks, worker `cat` (argv), parallel 2, start->done
        vs xargs -P2 and GNU parallel -j2 --joblog over the same lines
    P2  first (cold) read of a 1 GiB chunk file and a 1 GiB output.wav
        vs the same bytes from tmpfs and from cold ext4; dd bs=1M and cat
    P3  re-read of the same (page cache) vs tmpfs
    P4  open+read+close of status.json while a 10,000-chunk job runs at
        full speed vs the same of a tmpfs file; p50/p99
    P5  a 1,000,000-chunk job: mount -> first dispatch, `ls chunks` vs an
        ext4 directory, daemon VmHWM, LMDB bytes per chunk
    P6  last chunk done -> output.wav complete and readable, 10 min and
        10 h of audio in 10 s chunks
    P7  remount after kill -9 at 99 % done of 100,000 chunks: time to
        finish vs a fresh job of the remaining chunks

Programs come from the environment, else the build directory next to this
file: JOBFS_BIN, JOBFS_TESTWORKER, JOBFS_WAVWORKER. They are copied at
start, so a rebuild during a long run does not change what is measured.
Every daemon started here is unmounted and, if it lingers, killed by its
pid; the temporary directories are removed (--keep leaves them, unmounted).
Cold figures need root (they drop the page cache); without it they are
reported as skipped. Only the standard library is used.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.normpath(os.path.join(HERE, ".."))
BUILD = os.path.join(TOP, "build")
DOC = os.path.join(TOP, "docs", "performance.md")
BEGIN = "<!-- bench:table:begin -->"
END = "<!-- bench:table:end -->"

MiB = 1 << 20
GiB = 1 << 30

# Full sizes; --scale multiplies them, --smoke replaces them.
FULL = {
    "p1_chunks": 10000,
    "p2_bytes": GiB,
    "p4_chunks": 10000,
    "p4_reads": 1000,
    "p5_chunks": 1000000,
    "p5_budget": 600.0,  # seconds of running at full speed, see P5
    "p6_short": 60,      # 10 s chunks: 10 minutes
    "p6_long": 3600,     # 10 hours
    "p6_secs": 10,
    "p7_chunks": 100000,
}
SMOKE = {
    "p1_chunks": 200,
    "p2_bytes": 8 * MiB,
    "p4_chunks": 300,
    "p4_reads": 100,
    "p5_chunks": 3000,
    "p5_budget": 2.0,
    "p6_short": 4,
    "p6_long": 12,
    "p6_secs": 1,
    "p7_chunks": 1000,
}
ROWS = ["P1", "P2", "P3", "P4", "P5", "P6", "P7"]


class BrokenRun(Exception):
    """A run that did not do its work: the benchmark fails on this."""


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------
# formatting

def fmt_secs(s):
    if s is None:
        return "-"
    if s >= 100:
        return "%.0f s" % s
    if s >= 1:
        return "%.2f s" % s
    if s >= 0.001:
        return "%.1f ms" % (s * 1e3)
    return "%.0f µs" % (s * 1e6)


def fmt_speed(nbytes, secs):
    return "%.0f MB/s" % (nbytes / secs / 1e6)


def fmt_bytes(n):
    if n >= GiB:
        return "%.2f GiB" % (n / GiB)
    if n >= MiB:
        return "%.1f MiB" % (n / MiB)
    return "%d B" % n


def fmt_count(n):
    return "{:,}".format(n)


def median(xs):
    return statistics.median(xs)


def samples(label, xs):
    """Log every sample behind a median, for the reader of the log."""
    log("  %s: %s" % (label, ", ".join(fmt_secs(x) for x in xs)))


def pct(xs, p):
    """The p-th percentile (nearest rank) of xs."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


# ---------------------------------------------------------------------
# processes, mounts, files

def pid_alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].split()[0] not in ("Z", "X")


def wait_gone(pid, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not pid_alive(pid):
            return True
        time.sleep(0.02)
    return not pid_alive(pid)


def children(pid):
    out = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def is_mounted(path):
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f
                   if len(line.split()) > 1)


def proc_status(pid, key):
    """A kB figure from /proc/PID/status, in bytes (None if gone)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def write_file(path, data):
    """open/write/close as a shell redirection does; large data in 1 MiB
    pieces. Errors raise."""
    if isinstance(data, str):
        data = data.encode()
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while len(view):
            n = os.write(fd, view[:MiB])
            view = view[n:]
    finally:
        os.close(fd)


def read_bytes(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        parts = []
        while True:
            b = os.read(fd, 1 << 16)
            if not b:
                break
            parts.append(b)
    finally:
        os.close(fd)
    return b"".join(parts)


def read_json(path):
    return json.loads(read_bytes(path))


def run(argv, **kw):
    """Run a command that must succeed; its time in seconds."""
    t0 = time.monotonic()
    r = subprocess.run(argv, **kw)
    t = time.monotonic() - t0
    if r.returncode != 0:
        raise BrokenRun("%s exited %d" % (" ".join(argv[:3]), r.returncode))
    return t


def drop_caches():
    """Drop the page cache (root only). False when not allowed."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def iso_to_epoch(s):
    return datetime.datetime.fromisoformat(
        s.replace("Z", "+00:00")).timestamp()


def lines_input(n, tag):
    return "".join("%s line %d\n" % (tag, i) for i in range(1, n + 1))


# ---------------------------------------------------------------------
# a jobfs daemon

LIVE = []


class Daemon:
    """One jobfs daemon on STORE at MNT, started the way a user starts it
    (it daemonizes). stop() always leaves the mountpoint unmounted and the
    daemon and its watchdog gone, killing them by pid if they linger."""

    def __init__(self, bench, store, mnt, extra=()):
        self.b = bench
        self.store = store
        self.mnt = mnt
        self.extra = list(extra)
        self.pid = None
        self.kids = []
        self.mount_secs = None
        try:
            os.mkdir(mnt)
        except FileExistsError:  # also a dead mount, which jobfs clears
            pass

    def start(self):
        argv = [self.b.jobfs, "--store", self.store, "--grace", "5"]
        t0 = self.t0_mono = time.monotonic()
        self.t0_wall = time.time()
        r = subprocess.run(argv + self.extra + [self.mnt],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=600)
        self.mount_secs = time.monotonic() - t0
        if r.returncode != 0:
            raise BrokenRun("jobfs did not mount %s: %s" %
                            (self.mnt, r.stderr.decode().strip()))
        with open(os.path.join(self.store, "lock")) as f:
            self.pid = int(f.readline())
        LIVE.append(self)
        self.kids = children(self.pid)
        os.stat(self.mnt)
        return self

    def hwm(self):
        return proc_status(self.pid, "VmHWM")

    def state(self):
        """Words on what became of this daemon and its mount, for an
        error message."""
        try:
            names = sorted(os.listdir(self.mnt))[:5]
        except OSError as e:
            names = e.strerror
        return "daemon %d %s, %s %s, its root lists %s" % (
            self.pid, "alive" if pid_alive(self.pid) else "gone",
            self.mnt, "mounted" if is_mounted(self.mnt) else "NOT mounted",
            names)

    def _reap(self, timeout):
        if self.pid and not wait_gone(self.pid, timeout):
            log("daemon %d did not exit: SIGTERM" % self.pid)
            os.kill(self.pid, signal.SIGTERM)
            if not wait_gone(self.pid, 5):
                log("daemon %d did not exit: SIGKILL" % self.pid)
                os.kill(self.pid, signal.SIGKILL)
                wait_gone(self.pid, 5)
        for k in self.kids:
            if not wait_gone(k, 5):
                try:
                    os.kill(k, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                wait_gone(k, 5)

    def stop(self):
        for _ in range(20):
            if not is_mounted(self.mnt):
                break
            r = subprocess.run(["fusermount3", "-u", self.mnt],
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
            if r.returncode == 0:
                break
            time.sleep(0.1)
        if is_mounted(self.mnt):
            subprocess.run(["fusermount3", "-uz", self.mnt],
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        self._reap(60)
        if self in LIVE:
            LIVE.remove(self)

    def kill9(self):
        """kill -9 the daemon; its mount stays behind, dead, for the next
        start to clear (as after a real crash)."""
        os.kill(self.pid, signal.SIGKILL)
        self._reap(10)
        if self in LIVE:
            LIVE.remove(self)
        LIVE.append(_DeadMount(self.mnt))


class _DeadMount:
    """A mount left by a killed daemon: cleared at exit if still there."""

    def __init__(self, mnt):
        self.mnt = mnt

    def stop(self):
        if is_mounted(self.mnt):
            subprocess.run(["fusermount3", "-uz", self.mnt],
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)


def stop_all():
    while LIVE:
        d = LIVE.pop()
        try:
            d.stop()
        except Exception as e:  # keep clearing the others
            log("cleanup: %s" % e)


class Job:
    """A job directory in a mount, and its event log in the store."""

    def __init__(self, d, name):
        self.d = d
        self.name = name
        self.dir = os.path.join(d.mnt, name)
        self.events_path = None

    @classmethod
    def create(cls, d, name, spec, data):
        j = cls(d, name)
        evdir = os.path.join(d.store, "events")
        before = set(os.listdir(evdir)) if os.path.isdir(evdir) else set()
        os.mkdir(j.dir)
        write_file(j.path("spec"), json.dumps(spec) + "\n")
        after = set(os.listdir(evdir))
        new = sorted(after - before)
        if len(new) != 1:
            raise BrokenRun("cannot tell the event log of job %s" % name)
        j.events_path = os.path.join(evdir, new[0])
        write_file(j.path("input"), data)
        return j

    def path(self, *p):
        return os.path.join(self.dir, *p)

    def control(self, verb):
        write_file(self.path("control"), verb + "\n")

    def status(self):
        try:
            return read_json(self.path("status.json"))
        except OSError as e:
            raise BrokenRun("cannot read %s: %s (%s)" % (
                self.path("status.json"), e.strerror, self.d.state()))

    def wait(self, states=("done",), timeout=7200, poll=0.02):
        """Poll status.json until the state is one of states; the status
        and the monotonic time it was seen. A failed job is broken."""
        end = time.monotonic() + timeout
        while True:
            st = self.status()
            if st["state"] in states:
                return st, time.monotonic()
            if st["state"] == "failed" or st["chunks"]["failed"]:
                raise BrokenRun("job %s failed: %s" %
                                (self.name, json.dumps(st["failed"])[:300]))
            if time.monotonic() > end:
                raise BrokenRun("job %s still %s after %d s" %
                                (self.name, st["state"], timeout))
            time.sleep(poll)

    def events(self):
        with open(self.events_path, "rb") as f:
            return [json.loads(x) for x in f.read().splitlines() if x]


class EventTail:
    """Reads what a job's event log gains, without going through the
    mount (so watching does not load the daemon)."""

    def __init__(self, path, offset=None):
        self.path = path
        self.off = os.path.getsize(path) if offset is None else offset
        self.part = b""

    def poll(self):
        with open(self.path, "rb") as f:
            f.seek(self.off)
            data = f.read()
        self.off += len(data)
        data = self.part + data
        lines = data.split(b"\n")
        self.part = lines.pop()
        return [json.loads(x) for x in lines if x]


# ---------------------------------------------------------------------
# the benchmark

class Bench:
    def __init__(self, args):
        self.a = args
        self.sz = dict(SMOKE if args.smoke else FULL)
        if not args.smoke:
            for k in self.sz:
                if k.endswith(("_chunks", "_bytes", "_short", "_long")):
                    self.sz[k] = max(4, int(self.sz[k] * args.scale))
        if args.p5_budget is not None:
            self.sz["p5_budget"] = args.p5_budget
        self.reps = args.reps or 3
        self.results = []
        self.root = tempfile.mkdtemp(prefix="bench-jobfs-", dir=args.dir)
        self.shm = tempfile.mkdtemp(prefix="bench-jobfs-", dir="/dev/shm")
        bindir = os.path.join(self.root, "bin")
        os.mkdir(bindir)
        self.jobfs = self._copy("JOBFS_BIN", os.path.join(BUILD, "jobfs"),
                                bindir)
        self.testworker = self._copy(
            "JOBFS_TESTWORKER",
            os.path.join(BUILD, "tools", "jobfs-testworker"), bindir)
        self.wavworker = self._copy(
            "JOBFS_WAVWORKER",
            os.path.join(BUILD, "tools", "jobfs-wavworker"), bindir)
        self.cat = shutil.which("cat")
        self.root_ok = os.geteuid() == 0
        self.nmount = 0
        self.perf_dir = args.perf
        self.commit = commit_of_tree()
        self.run_id = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        if self.commit:
            self.run_id += " " + self.commit

    @staticmethod
    def _copy(var, fallback, bindir):
        src = os.path.abspath(os.environ.get(var) or fallback)
        if not os.access(src, os.X_OK):
            raise BrokenRun("%s not found (build with ninja -C build, or "
                            "set %s)" % (src, var))
        dst = os.path.join(bindir, os.path.basename(src))
        shutil.copy2(src, dst)
        return dst

    def close(self):
        stop_all()
        if self.a.keep:
            log("kept %s and %s" % (self.root, self.shm))
            return
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.shm, ignore_errors=True)

    def mount(self, store=None, extra=()):
        self.nmount += 1
        base = os.path.join(self.root, "m%d" % self.nmount)
        d = Daemon(self, store or base + "-store", base + "-mnt", extra)
        return d.start()

    def add(self, row, figure, jobfs, peer="", peer_value="", ratio="",
            goal="", met=None):
        r = {"row": row, "figure": figure, "jobfs": jobfs, "peer": peer,
             "peer_value": peer_value, "ratio": ratio, "goal": goal,
             "met": met, "run": self.run_tag()}
        self.results.append(r)
        log("%s %s: jobfs %s | %s %s | %s | goal %s | %s" %
            (row, figure, jobfs, peer, peer_value, ratio, goal,
             {True: "met", False: "MISSED", None: "-"}[met]))

    def run_tag(self):
        """The `run` column: when the run started, the commit, and the
        size when it is not the full one."""
        if self.a.smoke:
            return self.run_id + " smoke"
        return self.run_id + ("" if self.a.scale == 1 else
                              " ×%g" % self.a.scale)

    # -- perf ----------------------------------------------------------

    class _Perf:
        def __init__(self, bench, name):
            self.b = bench
            self.name = name
            self.p = None

        def __enter__(self):
            if not self.b.perf_dir:
                return self
            os.makedirs(self.b.perf_dir, exist_ok=True)
            self.data = os.path.join(self.b.perf_dir, self.name + ".data")
            self.p = subprocess.Popen(
                ["perf", "record", "-a", "-g", "-F", "999", "-o", self.data],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            return self

        def __exit__(self, *exc):
            if not self.p:
                return False
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(60)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
            txt = os.path.join(self.b.perf_dir, self.name + ".txt")
            with open(txt, "w") as f:
                subprocess.run(
                    ["perf", "report", "-i", self.data, "--stdio",
                     "--no-children", "-g", "none", "--percent-limit", "0.5",
                     "--sort", "comm,dso,sym"],
                    stdout=f, stderr=subprocess.DEVNULL)
            log("perf: %s" % txt)
            return False

    def profiled(self, name):
        return Bench._Perf(self, name)

    # -- P1 ------------------------------------------------------------

    def p1(self):
        n = self.sz["p1_chunks"]
        data = lines_input(n, "p1")
        lines = os.path.join(self.root, "p1-lines")
        write_file(lines, data)
        spec = {"command": ["cat"], "chunking": {"by": "line"},
                "parallel": 2}
        jt, xt, pt = [], [], []
        have_parallel = shutil.which("parallel") is not None
        for rep in range(self.reps):
            d = self.mount()
            try:
                j = Job.create(d, "p1", spec, data)
                with self.profiled("P1-jobfs-%d" % rep):
                    t0 = time.monotonic()
                    j.control("start")
                    _, t1 = j.wait()
                jt.append(t1 - t0)
                if read_bytes(j.path("output.out")) != data.encode():
                    raise BrokenRun("P1: output.out is not the input")
            finally:
                d.stop()
            out = os.path.join(self.root, "p1-out")
            with open(lines) as fin, open(out, "w") as fout:
                xt.append(run(["xargs", "-d", "\n", "-n", "1", "-P", "2",
                               "echo"], stdin=fin, stdout=fout))
            if os.path.getsize(out) != len(data):
                raise BrokenRun("P1: xargs wrote %d bytes" %
                                os.path.getsize(out))
            if have_parallel:
                joblog = os.path.join(self.root, "p1-joblog")
                with open(lines) as fin, open(out, "w") as fout:
                    pt.append(run(["parallel", "--will-cite", "-j", "2",
                                   "--joblog", joblog, "echo"],
                                  stdin=fin, stdout=fout,
                                  stderr=subprocess.DEVNULL))
                if os.path.getsize(out) != len(data):
                    raise BrokenRun("P1: parallel wrote %d bytes" %
                                    os.path.getsize(out))
                os.unlink(joblog)
        samples("P1 jobfs", jt)
        samples("P1 xargs", xt)
        if pt:
            samples("P1 parallel", pt)
        j_ = median(jt)
        fig = "%s one-line chunks, start -> done" % fmt_count(n)
        x_ = median(xt)
        self.add("P1", fig, "%s (%.0f chunks/s)" % (fmt_secs(j_), n / j_),
                 "xargs -P2 -n1 echo", fmt_secs(x_),
                 "%.2f× time" % (j_ / x_), "≤ 1.5×", j_ / x_ <= 1.5)
        if have_parallel:
            p_ = median(pt)
            self.add("P1", fig, fmt_secs(j_), "parallel -j2 --joblog",
                     fmt_secs(p_), "%.2f× time" % (j_ / p_), "≤ 0.33×",
                     j_ / p_ <= 0.33)
        else:
            self.add("P1", fig, fmt_secs(j_), "parallel -j2 --joblog",
                     "not installed", "", "≤ 0.33×", None)

    # -- P2, P3 --------------------------------------------------------

    def _readers(self):
        return {
            "dd bs=1M": lambda f: run(["dd", "if=" + f, "of=/dev/null",
                                       "bs=1M"], stderr=subprocess.DEVNULL),
            "cat": lambda f: run(["cat", f], stdout=subprocess.DEVNULL),
        }

    def p2p3(self, rows):
        size = self.sz["p2_bytes"]
        wav_chunks = 8
        frames = max(1, size // 2 // wav_chunks)  # 16-bit mono
        d = self.mount()
        try:
            log("P2: making a %s chunk and a %s output.wav" %
                (fmt_bytes(size), fmt_bytes(44 + frames * 2 * wav_chunks)))
            big = Job.create(d, "big", {
                "command": [self.testworker], "chunking": {"by": "whole"},
                "env": {"TW_SIZE": str(size)}}, "p2\n")
            wav = Job.create(d, "wav", {
                "command": [self.wavworker], "output": "wav",
                "chunking": {"by": "line"}, "parallel": 2,
                "env": {"WW_FRAMES": str(frames)}},
                lines_input(wav_chunks, "p2"))
            big.control("start")
            wav.control("start")
            big.wait(poll=0.2)
            wav.wait(poll=0.2)
            files = {"chunk file": big.path("chunks", "0001.out"),
                     "output.wav": wav.path("output.wav")}
            copies = {}
            for name, f in files.items():
                tag = name.split()[0].replace(".", "")
                e = os.path.join(self.root, "p2-" + tag)
                s = os.path.join(self.shm, "p2-" + tag)
                shutil.copyfile(f, e)
                shutil.copyfile(f, s)
                want = size if name == "chunk file" else \
                    44 + frames * 2 * wav_chunks
                if os.path.getsize(e) != want:
                    raise BrokenRun("P2: %s is %d bytes, not %d" %
                                    (name, os.path.getsize(e), want))
                copies[name] = (e, s, want)
            for name, f in files.items():
                e, s, nbytes = copies[name]
                for rname, reader in self._readers().items():
                    self._p2p3_one(rows, name, f, e, s, nbytes, rname,
                                   reader)
        finally:
            d.stop()
            for name in ("p2-chunk", "p2-outputwav"):
                for base in (self.root, self.shm):
                    try:
                        os.unlink(os.path.join(base, name))
                    except FileNotFoundError:
                        pass

    def _p2p3_one(self, rows, name, f, e, s, nbytes, rname, reader):
        tm = [reader(s) for _ in range(self.reps)]
        tmpfs = median(tm)
        if "P2" in rows:
            if not drop_caches():
                self.add("P2", "first read, %s, %s" % (name, rname),
                         "skipped (not root: cannot drop caches)")
            else:
                jc, ec = [], []
                with self.profiled("P2-%s-%s" % (name.split()[0],
                                                 rname.split()[0])):
                    for _ in range(self.reps):
                        drop_caches()
                        jc.append(reader(f))
                for _ in range(self.reps):
                    drop_caches()
                    ec.append(reader(e))
                samples("P2 %s %s jobfs" % (name, rname), jc)
                samples("P2 %s %s ext4" % (name, rname), ec)
                samples("P2 %s %s tmpfs" % (name, rname), tm)
                j_, e_ = median(jc), median(ec)
                fig = "first read, %s %s, %s" % (fmt_bytes(nbytes), name,
                                                 rname)
                self.add("P2", fig, fmt_speed(nbytes, j_), "tmpfs",
                         fmt_speed(nbytes, tmpfs),
                         "%.2f× speed" % (tmpfs / j_), "≥ 0.45×",
                         tmpfs / j_ >= 0.45)
                self.add("P2", fig, fmt_speed(nbytes, j_), "ext4, cold",
                         fmt_speed(nbytes, e_),
                         "%.2f× speed" % (e_ / j_), "≥ 0.95×",
                         e_ / j_ >= 0.95)
        if "P3" in rows:
            reader(f)
            with self.profiled("P3-%s-%s" % (name.split()[0],
                                             rname.split()[0])):
                jw = [reader(f) for _ in range(self.reps)]
            samples("P3 %s %s jobfs" % (name, rname), jw)
            j_ = median(jw)
            fig = "re-read (cached), %s %s, %s" % (fmt_bytes(nbytes), name,
                                                   rname)
            self.add("P3", fig, fmt_speed(nbytes, j_), "tmpfs",
                     fmt_speed(nbytes, tmpfs), "%.2f× speed" % (tmpfs / j_),
                     "≥ 0.9×", tmpfs / j_ >= 0.9)

    # -- P4 ------------------------------------------------------------

    def p4(self):
        n = self.sz["p4_chunks"]
        want = self.sz["p4_reads"]
        d = self.mount()
        try:
            j = Job.create(d, "p4", {"command": ["cat"],
                                     "chunking": {"by": "line"},
                                     "parallel": 2}, lines_input(n, "p4"))
            sj = j.path("status.json")
            peer = os.path.join(self.shm, "status.json")
            write_file(peer, read_bytes(sj))
            jl, pl, jc, pc = [], [], [], []
            j.control("start")
            state = "running"
            i = 0
            with self.profiled("P4-jobfs"):
                while state != "done" or not jl:
                    t0 = time.perf_counter()
                    data = read_bytes(sj)
                    t1 = time.perf_counter()
                    read_bytes(peer)
                    t2 = time.perf_counter()
                    if state == "running" or not jl:
                        jl.append(t1 - t0)
                        pl.append(t2 - t1)
                    st = json.loads(data)
                    state = st["state"]
                    if state == "failed":
                        raise BrokenRun("P4: job failed")
                    if i % 10 == 0 and state == "running":
                        t0 = time.perf_counter()
                        run(["cat", sj], stdout=subprocess.DEVNULL)
                        t1 = time.perf_counter()
                        run(["cat", peer], stdout=subprocess.DEVNULL)
                        t2 = time.perf_counter()
                        jc.append(t1 - t0)
                        pc.append(t2 - t1)
                    i += 1
                    time.sleep(0.002)
            # The same reads with the job done and the daemon idle, beside
            # as many CPU-bound processes (each in a session of its own,
            # as jobfs starts workers) as there are CPUs: what a saturated
            # machine alone does to a read through any FUSE daemon.
            hogs = [subprocess.Popen(["setsid", "sh", "-c",
                                      "while :; do :; done"])
                    for _ in range(os.cpu_count() or 1)]
            hl, hp = [], []
            try:
                time.sleep(0.2)
                while len(hl) < max(len(jl), 100):
                    t0 = time.perf_counter()
                    read_bytes(sj)
                    t1 = time.perf_counter()
                    read_bytes(peer)
                    t2 = time.perf_counter()
                    hl.append(t1 - t0)
                    hp.append(t2 - t1)
                    time.sleep(0.002)
            finally:
                for h in hogs:
                    h.kill()
                    h.wait()
        finally:
            d.stop()
        os.unlink(peer)
        note = "" if len(jl) >= want else \
            " (only %d: the job ended; raise --scale)" % len(jl)
        fig = "status.json open+read+close during a %s-chunk run, " \
            "%s reads%s" % (fmt_count(n), fmt_count(len(jl)), note)
        for p in (50, 99):
            a, b = pct(jl, p), pct(pl, p)
            self.add("P4", fig + ", p%d" % p, fmt_secs(a), "tmpfs file",
                     fmt_secs(b), "%.1f× time" % (a / b),
                     "p99 ≤ 1 ms" if p == 99 else "",
                     a <= 0.001 if p == 99 else None)
        a, b = pct(hl, 99), pct(hp, 99)
        self.add("P4", "the same reads with the job done (daemon idle) "
                 "beside %d CPU-bound processes, %s reads, p99" %
                 (os.cpu_count() or 1, fmt_count(len(hl))), fmt_secs(a),
                 "tmpfs file", fmt_secs(b), "%.1f× time" % (a / b))
        if jc:
            fig = "`cat status.json` as a process (fork+exec included), " \
                "%d runs, p99" % len(jc)
            self.add("P4", fig, fmt_secs(pct(jc, 99)), "cat tmpfs file",
                     fmt_secs(pct(pc, 99)),
                     "%.1f× time" % (pct(jc, 99) / pct(pc, 99)))

    # -- P5 ------------------------------------------------------------

    def _ls(self, path):
        run(["ls", path], stdout=subprocess.DEVNULL)  # warm
        return median([run(["ls", path], stdout=subprocess.DEVNULL)
                       for _ in range(max(3, self.reps))])

    def p5(self):
        n = self.sz["p5_chunks"]
        budget = self.sz["p5_budget"]
        width = max(4, len(str(n)))
        data = lines_input(n, "p5")
        store = os.path.join(self.root, "p5-store")
        d = self.mount(store)
        try:
            t0 = time.monotonic()
            j = Job.create(d, "p5", {"command": ["cat"],
                                     "chunking": {"by": "line"},
                                     "parallel": 2}, data)
            plan = time.monotonic() - t0
            total = j.status()["chunks"]["total"]
            if total != n:
                raise BrokenRun("P5: planned %d chunks, not %d" % (total, n))
            log("P5: %s chunks planned in %s" % (fmt_count(n),
                                                  fmt_secs(plan)))
            j.control("start")
            j.wait(("running", "done"))
        finally:
            d.stop()
        mdb = os.path.join(store, "db", "data.mdb")
        planned_bytes = os.path.getsize(mdb)

        # mount -> first dispatch, the job in mode run
        disp, ready, hwm0 = [], [], 0
        for rep in range(self.reps):
            tail = EventTail(j.events_path)
            d = Daemon(self, store, d.mnt)
            with self.profiled("P5-dispatch-%d" % rep):
                d.start()
                end = time.monotonic() + 600
                seen = None
                while seen is None and time.monotonic() < end:
                    for ev in tail.poll():
                        if ev["event"] == "started":
                            seen = ev
                            break
                    else:
                        time.sleep(0.001)
            if seen is None:
                d.stop()
                raise BrokenRun("P5: no chunk started after the mount")
            disp.append(iso_to_epoch(seen["time"]) - d.t0_wall)
            ready.append(d.mount_secs)
            hwm0 = max(hwm0, d.hwm() or 0)
            if rep < self.reps - 1:
                d.stop()
        j.d = d
        try:
            # run at full speed for the budget, with a stop half-way for a
            # first `ls`, so that ls can be extrapolated from two points
            points = []
            t_run = time.monotonic()
            with self.profiled("P5-run"):
                for part in (0.5, 1.0):
                    while True:
                        st = j.status()
                        if st["state"] == "done":
                            break
                        if time.monotonic() - t_run >= budget * part:
                            break
                        time.sleep(0.5)
                    if st["state"] != "done":
                        j.control("pause")
                        st, _ = j.wait(("paused", "done"))
                        while st["chunks"]["running"]:
                            time.sleep(0.05)
                            st = j.status()
                    k = st["chunks"]["done"]
                    names = os.listdir(j.path("chunks"))
                    if len(names) != k:
                        raise BrokenRun("P5: ls shows %d chunks, %d done" %
                                        (len(names), k))
                    with self.profiled("P5-ls-%g" % part):
                        points.append((k, self._ls(j.path("chunks"))))
                    if st["state"] == "done":
                        break
                    if part < 1.0:
                        j.control("resume")
            rate = k / (time.monotonic() - t_run)
            hwm = max(hwm0, d.hwm() or 0)
            anon = proc_status(d.pid, "RssAnon")
            rssfile = proc_status(d.pid, "RssFile")
        finally:
            d.stop()
        mdb_bytes = os.path.getsize(mdb)
        used = None
        if shutil.which("mdb_stat"):
            r = subprocess.run(["mdb_stat", "-e", os.path.dirname(mdb)],
                               stdout=subprocess.PIPE, text=True)
            m = re.search(r"Page size: (\d+).*?Number of pages used: (\d+)",
                          r.stdout, re.S)
            if m:
                used = int(m.group(1)) * int(m.group(2))

        # the peer: an ext4 directory with the same names
        k = points[-1][0]
        ext = os.path.join(self.root, "p5-ext4")
        os.mkdir(ext)
        for i in range(1, k + 1):
            os.close(os.open(os.path.join(ext, "%0*d.out" % (width, i)),
                             os.O_CREAT | os.O_WRONLY, 0o644))
        e_k = self._ls(ext)
        for i in range(k + 1, n + 1):
            os.close(os.open(os.path.join(ext, "%0*d.out" % (width, i)),
                             os.O_CREAT | os.O_WRONLY, 0o644))
        e_n = self._ls(ext) if k < n else e_k
        shutil.rmtree(ext)

        samples("P5 dispatch", disp)
        self.add("P5", "mount -> first dispatch, %s chunks planned "
                 "(mounted after %s)" % (fmt_count(n),
                                        fmt_secs(median(ready))),
                 fmt_secs(median(disp)), "", "", "", "≤ 1 s",
                 median(disp) <= 1.0)
        j_k = points[-1][1]
        self.add("P5", "`ls chunks`, %s done of %s" %
                 (fmt_count(k), fmt_count(n)), fmt_secs(j_k),
                 "ext4 dir, %s files" % fmt_count(k), fmt_secs(e_k),
                 "%.2f× time" % (j_k / e_k), "≤ 2×", j_k / e_k <= 2)
        if k < n:
            # a line through the two measured points
            (k1, t1), (k2, t2) = points[0], points[-1]
            # (proportional when the two points are too close to tell)
            slope = (t2 - t1) / (k2 - k1) if k2 >= 1.5 * k1 else t2 / k2
            est = max(t2, t2 + slope * (n - k2))
            self.add("P5", "`ls chunks`, %s done: EXTRAPOLATED from %s "
                     "and %s done (%.0f chunks/s: all would take %s)" %
                     (fmt_count(n), fmt_count(k1), fmt_count(k2), rate,
                      fmt_secs(n / rate)),
                     "~" + fmt_secs(est) + " (est.)",
                     "ext4 dir, %s files" % fmt_count(n), fmt_secs(e_n),
                     "~%.2f× time (est.)" % (est / e_n), "≤ 2×",
                     est / e_n <= 2)
        self.add("P5", "daemon VmHWM, %s chunks (RssAnon %s, RssFile %s "
                 "at the end)" % (fmt_count(n), fmt_bytes(anon or 0),
                                  fmt_bytes(rssfile or 0)),
                 fmt_bytes(hwm), "", "", "", "≤ 64 MiB", hwm <= 64 * MiB)
        self.add("P5", "LMDB data.mdb bytes per chunk, %s chunks (%s; "
                 "%.0f B/chunk when only planned%s)" %
                 (fmt_count(n), fmt_bytes(mdb_bytes), planned_bytes / n,
                  "" if used is None else
                  "; pages in use %.0f B/chunk" % (used / n)),
                 "%.0f B" % (mdb_bytes / n), "", "", "", "≤ 300 B",
                 mdb_bytes / n <= 300)

    # -- P6 ------------------------------------------------------------

    def p6(self):
        secs = self.sz["p6_secs"]
        frames = secs * 22050
        d = self.mount()
        try:
            for label, n in (("short", self.sz["p6_short"]),
                             ("long", self.sz["p6_long"])):
                lat, peer = [], []
                for rep in range(self.reps):
                    name = "p6%s%d" % (label, rep)
                    lt, pt = self._p6_one(d, name, n, frames)
                    lat.append(lt)
                    peer.append(pt)
                    os.rmdir(os.path.join(d.mnt, name))
                t = n * secs
                dur = "%d s" % t if t < 60 else "%.0f min" % (t / 60) \
                    if t < 3600 else "%.0f h" % (t / 3600)
                size = 44 + n * frames * 2
                fig = "last chunk done -> output.wav complete and read " \
                    "(header + last 4 KiB), %s of audio, %s chunks of %d s, " \
                    "%s" % (dur, fmt_count(n), secs, fmt_bytes(size))
                samples("P6 %s" % label, lat)
                m = median(lat)
                self.add("P6", fig, fmt_secs(m),
                         "cat of the chunk files into one file",
                         fmt_secs(median(peer)),
                         "%.3f× time" % (m / median(peer)), "≤ 50 ms",
                         m <= 0.050)
        finally:
            d.stop()

    def _p6_one(self, d, name, n, frames):
        j = Job.create(d, name, {
            "command": [self.wavworker], "output": "wav",
            "chunking": {"by": "line"}, "parallel": 2,
            "env": {"WW_FRAMES": str(frames)}}, lines_input(n, name))
        tail = EventTail(j.events_path)
        out = j.path("output.wav")
        expect = 44 + n * frames * 2
        j.control("start")
        done, last = 0, None
        end = time.monotonic() + 7200
        while done < n:
            for ev in tail.poll():
                if ev["event"] == "done":
                    done += 1
                    last = ev["time"]
                elif ev["event"] in ("failed", "run-failed"):
                    raise BrokenRun("P6: %s" % json.dumps(ev))
            if time.monotonic() > end:
                raise BrokenRun("P6: job %s did not finish" % name)
            time.sleep(0.001)
        with self.profiled("P6-%s" % name):
            while True:
                try:
                    st = os.stat(out)
                except FileNotFoundError:
                    st = None
                if st and st.st_size == expect:
                    with open(out, "rb") as f:
                        head = f.read(44)
                        f.seek(expect - 4096)
                        tail_bytes = f.read()
                    if int.from_bytes(head[40:44], "little") == \
                            expect - 44 and len(tail_bytes) == 4096:
                        t = time.time()
                        break
                time.sleep(0.0005)
        latency = t - iso_to_epoch(last)
        # the peer: join the chunks' bytes into one file after the fact
        man = read_json(j.path("manifest.json"))
        objs = [os.path.join(d.store, "objects", c["output_sha256"][:2],
                             c["output_sha256"]) for c in man["chunks"]]
        joined = os.path.join(self.root, "p6-joined.wav")
        with open(joined, "wb") as f:
            peer = run(["cat"] + objs, stdout=f)
        if os.path.getsize(joined) != expect - 44:
            raise BrokenRun("P6: the chunk objects hold %d bytes, not %d" %
                            (os.path.getsize(joined), expect - 44))
        os.unlink(joined)
        return latency, peer

    # -- P7 ------------------------------------------------------------

    def p7(self):
        n = self.sz["p7_chunks"]
        cut = n - max(1, n // 100)
        data = lines_input(n, "p7")
        text = data.splitlines(keepends=True)
        spec = {"command": ["cat"], "chunking": {"by": "line"},
                "parallel": 2}
        store = os.path.join(self.root, "p7-store")
        d = self.mount(store)
        resumes, fresh, left = [], [], []
        try:
            j = Job.create(d, "p7", spec, data)
            j.control("start")
            log("P7: running %s chunks to 99 %%" % fmt_count(n))
            while True:
                st = j.status()
                if st["chunks"]["done"] >= cut or st["state"] == "done":
                    break
                time.sleep(0.005)
            rep = tries = 0
            while rep < self.reps:
                if rep > 0 or tries > 0:
                    # the first kill hit a run at full speed; later ones
                    # make the same state quicker: the last 1 % retried
                    # (discarded and queued) and killed at once
                    j.control("retry %d-%d" % (cut + 1, n))
                tail = EventTail(j.events_path)
                d.kill9()
                mnt = d.mnt
                d = Daemon(self, store, mnt)
                with self.profiled("P7-resume-%d" % rep):
                    d.start()
                    j.d = d
                    _, t1 = j.wait(poll=0.005)
                t = t1 - d.t0_mono
                evs = tail.poll()
                k = [i for i, e in enumerate(evs)
                     if e["event"] == "resumed"]
                ran = sorted(e["chunk"] for e in evs[k[-1]:]
                             if e["event"] == "done") if k else []
                tries += 1
                if not ran:
                    # the job finished between the last look and the
                    # kill (small sizes run fast): no resume to measure
                    if tries > 5:
                        raise BrokenRun("P7: nothing ran after 5 remounts")
                    log("P7: the job had finished before the kill; again")
                    continue
                resumes.append(t)
                left.append(len(ran))
                fresh.append(self._p7_fresh(spec,
                                            "".join(text[c - 1]
                                                    for c in ran)))
                rep += 1
            if read_bytes(j.path("output.out")) != data.encode():
                raise BrokenRun("P7: output.out is not the input")
        finally:
            d.stop()
        samples("P7 resume", resumes)
        samples("P7 fresh", fresh)
        over = [r - f for r, f in zip(resumes, fresh)]
        fig = "kill -9 at 99 %% of %s chunks, remount -> done " \
            "(%s left), vs mount + a fresh job of those chunks" % \
            (fmt_count(n), "/".join(fmt_count(x) for x in left))
        o = median(over)
        self.add("P7", fig, fmt_secs(median(resumes)), "fresh job",
                 fmt_secs(median(fresh)),
                 "overhead %s%s" % ("+" if o >= 0 else "-",
                                    fmt_secs(abs(o))),
                 "overhead ≤ 1 s", o <= 1.0)

    def _p7_fresh(self, spec, data):
        d = self.mount()
        try:
            t_mount = d.mount_secs
            j = Job.create(d, "fresh", spec, data)
            t0 = time.monotonic()
            j.control("start")
            _, t1 = j.wait(poll=0.005)
        finally:
            d.stop()
        return t_mount + (t1 - t0)

    # -- the whole -----------------------------------------------------

    def run_rows(self, rows):
        t_all = time.monotonic()
        for r in rows:
            if r == "P3" and "P2" in rows:
                continue
            t0 = time.monotonic()
            log("%s ..." % r)
            if r in ("P2", "P3"):
                self.p2p3([x for x in ("P2", "P3") if x in rows])
            else:
                getattr(self, r.lower())()
            log("%s took %s" % (r, fmt_secs(time.monotonic() - t0)))
        log("all rows took %s" % fmt_secs(time.monotonic() - t_all))


# ---------------------------------------------------------------------
# the machine and the table

def machine(where="/tmp"):
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = proc_meminfo("MemTotal")
    fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE,OPTIONS",
                         "-T", where], stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL, text=True).stdout.split()
    kind = fs[0] if fs else "?"
    if kind == "ext4" and len(fs) > 1:
        # jbd2 lists the journal of every ext4 that has one
        dev = os.path.basename(fs[1])
        jbd = os.listdir("/proc/fs/jbd2") if os.path.isdir(
            "/proc/fs/jbd2") else []
        if not any(x.startswith(dev + "-") for x in jbd):
            kind += " without a journal"
    return ("%s, %d cores, %.1f GiB memory, Linux %s, %s on %s (%s, %s)" %
            (cpu, os.cpu_count(), (mem or 0) / GiB, platform.release(),
             where, kind, fs[1] if len(fs) > 1 else "?",
             fs[2] if len(fs) > 2 else "?"))


def commit_of_tree():
    """The checkout's commit, "+" when fs/, store/ or tools/ have
    uncommitted changes (the binaries are built from the work tree);
    empty outside git. Read-only git commands."""
    try:
        head = subprocess.run(["git", "-C", TOP, "rev-parse", "--short",
                               "HEAD"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL,
                              text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", TOP, "status", "--porcelain",
                                "--", "fs", "store", "tools/testworker.c",
                                "tools/wavworker.c"],
                               stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL,
                               text=True).stdout.strip()
    except OSError:
        return ""
    return head + ("+" if head and dirty else "")


def pressure():
    """(cpu, io) "some" stall totals in µs from /proc/pressure, or None."""
    out = []
    for what in ("cpu", "io"):
        try:
            with open("/proc/pressure/" + what) as f:
                line = f.readline()
        except OSError:
            return None
        out.append(int(line.rsplit("total=", 1)[1]))
    return out


def proc_meminfo(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return None


HEAD = ("| row | figure | jobfs | peer | peer figure | ratio | goal | met "
        "| run |")
SEP = "|---|---|---|---|---|---|---|---|---|"


def table(results):
    out = [HEAD, SEP]
    for r in results:
        met = {True: "met", False: "**missed**", None: ""}[r["met"]]
        cells = [r["row"], r["figure"], r["jobfs"], r["peer"],
                 r["peer_value"], r["ratio"], r["goal"], met, r["run"]]
        out.append("| " + " | ".join(c.replace("|", "\\|")
                                     for c in cells) + " |")
    return out


def write_doc(path, results, rows, info, run_id, conditions):
    """Put the table between the markers of path, keeping the rows of
    groups not run this time (and the line on the conditions of the run
    they come from) and everything outside the markers."""
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    else:
        text = "# jobfs performance\n\n%s\n%s\n" % (BEGIN, END)
    if BEGIN not in text or END not in text:
        raise BrokenRun("%s has no %s ... %s block" % (path, BEGIN, END))
    pre, rest = text.split(BEGIN, 1)
    old, post = rest.split(END, 1)
    kept = [line for line in old.splitlines()
            if line.startswith("| P") and line.split("|")[1].strip()
            not in rows]
    kept_runs = set(line.split("|")[-2].strip() for line in kept)
    runs = [line for line in old.splitlines()
            if line.startswith("- run `") and
            any(r.startswith(line.split("`")[1]) for r in kept_runs)]
    runs.append("- run `%s` (%s): %s" % (run_id, ",".join(rows),
                                          conditions))
    new = table(results)[2:]
    order = {r: i for i, r in enumerate(ROWS)}
    body = sorted(kept + new, key=lambda line: order.get(
        line.split("|")[1].strip(), 99))
    # a stable sort keeps each group's rows in the order they were made
    block = [BEGIN, "", "Machine: " + info, "",
             "Conditions of each run in the `run` column (the load and "
             "pressure come from other work on the machine):", ""] + \
        runs + ["", HEAD, SEP] + body + ["", END]
    with open(path + ".tmp", "w") as f:
        f.write(pre + "\n".join(block) + post)
    os.replace(path + ".tmp", path)


def main():
    ap = argparse.ArgumentParser(
        description="jobfs benchmarks next to a peer (docs/performance.md)")
    ap.add_argument("--smoke", action="store_true",
                    help="a very small version of every row (CI)")
    ap.add_argument("--only", default=",".join(ROWS),
                    help="rows to run, e.g. P1,P4 (default all)")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply chunk counts and sizes (default 1)")
    ap.add_argument("--reps", type=int, default=0,
                    help="repetitions per timing (default 3)")
    ap.add_argument("--p5-budget", type=float, default=None,
                    help="P5: seconds of running before `ls chunks` "
                    "(default 600; the rest is extrapolated)")
    ap.add_argument("--perf", metavar="DIR",
                    help="perf record -a -g the jobfs side of each row")
    ap.add_argument("--write", action="store_true",
                    help="write docs/performance.md even with --smoke")
    ap.add_argument("--dir", default="/tmp",
                    help="where stores, mounts and ext4 peer files live "
                    "(default /tmp); another one writes nothing unless "
                    "--write")
    ap.add_argument("--no-write", action="store_true",
                    help="do not write docs/performance.md")
    ap.add_argument("--doc", default=DOC, help=argparse.SUPPRESS)
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directories (unmounted)")
    a = ap.parse_args()
    rows = [r.strip().upper() for r in a.only.split(",") if r.strip()]
    bad = [r for r in rows if r not in ROWS]
    if bad:
        ap.error("unknown row '%s' (rows are %s)" % (bad[0], ",".join(ROWS)))
    rows = [r for r in ROWS if r in rows]
    if a.perf and not shutil.which("perf"):
        ap.error("--perf needs perf (apt-get install linux-perf)")

    def on_signal(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    info = machine(a.dir)
    log(info)
    b = None
    rc = 0
    cond = "interrupted"
    try:
        b = Bench(a)
        load0, psi0, t0 = os.getloadavg(), pressure(), time.monotonic()
        b.run_rows(rows)
        load1, psi1, t1 = os.getloadavg(), pressure(), time.monotonic()
        cond = "load average %.1f at start, %.1f at end" % (load0[0],
                                                            load1[0])
        if psi0 and psi1:
            # share of the run's wall time some task waited for a CPU
            # (for I/O): other work on the machine shows here
            cond += "; pressure during the run: cpu %.0f %%, io %.0f %%" % (
                (psi1[0] - psi0[0]) / ((t1 - t0) * 1e4),
                (psi1[1] - psi0[1]) / ((t1 - t0) * 1e4))
    except BrokenRun as e:
        log("BROKEN: %s" % e)
        rc = 1
    except KeyboardInterrupt:
        log("interrupted")
        rc = 130
    finally:
        if b:
            b.close()
        else:
            stop_all()
    if b and b.results:
        print("Machine: %s; %s" % (info, cond))
        print("\n".join(table(b.results)))
        if rc == 0 and (a.write or not (a.smoke or a.no_write or
                                         a.dir != "/tmp")):
            write_doc(a.doc, b.results, rows, info, b.run_id, cond)
            log("wrote %s" % a.doc)
    return rc


if __name__ == "__main__":
    sys.exit(main())
