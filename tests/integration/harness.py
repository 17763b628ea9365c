"""harness.py - run a real jobfs daemon on a temporary mount for a test.

Each test gets its own store and mountpoint under /tmp, a daemon started
the way a user starts it (daemonized unless asked otherwise), and a
teardown that always runs and never leaves a mount behind:

    fusermount3 -u MOUNT, else fusermount3 -uz MOUNT
    the daemon's pid (first line of STORE/lock): SIGTERM, SIGKILL after 5 s
    the temporary directories removed

Paths of the programs under test come from the environment, with a
fallback to a build directory next to the checkout:

    JOBFS_BIN         the daemon            (../../build/jobfs)
    JOBFS_TESTWORKER  jobfs-testworker      (../../build/tools/jobfs-testworker)

A watchdog thread bounds every test file (JOBFS_TEST_DEADLINE seconds,
default 170): a daemon that deadlocks would otherwise leave the test
blocked in a FUSE call forever. When the deadline passes it lazily
unmounts and kills every daemon, which makes the blocked call fail, and
the test fails with it.

Only the standard library is used.
"""

import errno
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.normpath(os.path.join(HERE, "..", "..", "build"))


def _program(var, fallback):
    path = os.environ.get(var) or fallback
    return os.path.abspath(path)


JOBFS = _program("JOBFS_BIN", os.path.join(BUILD, "jobfs"))
TESTWORKER = _program("JOBFS_TESTWORKER",
                      os.path.join(BUILD, "tools", "jobfs-testworker"))

MOUNT_TIMEOUT = 10.0
KILL_AFTER = 5.0

# every daemon started and not yet torn down, for the watchdog and main()
_live = []
_live_lock = threading.Lock()


# ---------------------------------------------------------------------
# processes and mounts

def is_mounted(path):
    """True if path is a mountpoint in /proc/self/mounts."""
    with open("/proc/self/mounts", "rb") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 2:
                mp = fields[1].decode().replace("\\040", " ")
                if mp == path:
                    return True
    return False


def pid_alive(pid):
    """True if pid exists and is not a zombie (the daemon is not our child
    once it has daemonized, so nobody here reaps it)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat[stat.rfind(")") + 2:].split()[0]
    return state not in ("Z", "X")


def wait_pid_gone(pid, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


def wait_store_free(store, timeout=20):
    """Wait until no process holds STORE/lock (a daemon's last thread can
    outlive the zombie its main thread already is); True if it is free."""
    end = time.monotonic() + timeout
    while True:
        fd = os.open(os.path.join(store, "lock"), os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > end:
                return False
        finally:
            os.close(fd)
        time.sleep(0.02)


def procs_with_env(marker):
    """Pids of live processes whose environment holds the bytes marker
    (e.g. b"TW_MARK=abc"): the way to find a job's workers and their
    grandchildren, whatever their names."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open("/proc/%s/environ" % name, "rb") as f:
                env = f.read()
        except OSError:
            continue
        if marker in env.split(b"\0") and pid_alive(int(name)):
            found.append(int(name))
    return found


def pgrep(pattern):
    """Pids whose full command line matches pattern (pgrep -f)."""
    r = subprocess.run(["pgrep", "-f", pattern], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL)
    pids = [int(x) for x in r.stdout.split()]
    return [p for p in pids if p != os.getpid() and pid_alive(p)]


def unmount(mnt):
    """Unmount mnt if it is mounted: -u first, -uz if that fails."""
    if not is_mounted(mnt):
        return
    r = subprocess.run(["fusermount3", "-u", mnt], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    if r.returncode != 0 or is_mounted(mnt):
        subprocess.run(["fusermount3", "-uz", mnt],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def mounted_fuse(mnt):
    """True if mnt is a live mount: listed and answering."""
    if not is_mounted(mnt):
        return False
    try:
        os.stat(mnt)
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------
# files

def write_file(path, data, flags=os.O_WRONLY | os.O_TRUNC | os.O_CREAT,
               pieces=None):
    """Write data (bytes or str) to path with open/write/close, as a shell
    redirection does. Returns 0, or the errno of the first step that
    failed (open, a write, or close)."""
    if isinstance(data, str):
        data = data.encode()
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        return e.errno
    err = 0
    try:
        if pieces:
            parts = [data[i:i + pieces] for i in range(0, len(data), pieces)]
        else:
            parts = [data]
        for part in parts:
            view = memoryview(part)
            while len(view):
                n = os.write(fd, view)
                view = view[n:]
    except OSError as e:
        err = e.errno
    try:
        os.close(fd)
    except OSError as e:
        err = err or e.errno
    return err


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def read_text(path):
    return read_bytes(path).decode()


def read_json(path):
    return json.loads(read_bytes(path))


def errno_of(fn, *args, **kw):
    """Run fn and return 0, or the errno of the OSError it raised."""
    try:
        fn(*args, **kw)
    except OSError as e:
        return e.errno
    return 0


def errname(code):
    return errno.errorcode.get(code, str(code)) if code else "0"


def tw_spec(env=None, **kw):
    """A spec running the testworker in argv form, with TW_* knobs in env
    (values turned into strings)."""
    spec = {"command": [TESTWORKER]}
    if env:
        spec["env"] = {k: str(v) for k, v in env.items()}
    spec.update(kw)
    return spec


def paragraphs(n, tag="p"):
    """n distinct paragraphs separated by blank lines (one chunk each
    under the default chunking)."""
    return "".join("Paragraph %s%d: the quick brown fox number %d jumps "
                   "over the lazy dog.\n\n" % (tag, i, i * 7919)
                   for i in range(1, n + 1))


# ---------------------------------------------------------------------
# the daemon

def pids_cgroup_usable():
    """Can this process make a pids cgroup (what jobfs will try)?"""
    with open("/proc/self/mountinfo") as f:
        mountinfo = f.read().splitlines()
    with open("/proc/self/cgroup") as f:
        cgroups = f.read().splitlines()
    for line in mountinfo:
        parts = line.split(" - ")
        if len(parts) != 2:
            continue
        fstype, _, opts = parts[1].split()[:3]
        mp = parts[0].split()[4]
        if fstype == "cgroup" and "pids" in opts.split(","):
            path = [x.split(":", 2)[2].strip() for x in cgroups
                    if "pids" in x.split(":")[1].split(",")]
            if path:
                d = mp + path[0].rstrip("/") + "/jobfs-test-probe"
                try:
                    os.mkdir(d)
                    ok = os.path.exists(d + "/pids.max")
                    os.rmdir(d)
                    return ok
                except OSError:
                    return False
    return False


class Daemon:
    """One jobfs daemon on a fresh store and mountpoint (or on given ones,
    to restart on the same store). start() returns when the mount answers;
    stop() is safe to call any number of times and always unmounts."""

    def __init__(self, store=None, mnt=None, args=(), env=None,
                 foreground=False, grace=2, max_running=4, root=None):
        self.own_root = None
        if root is None and (store is None or mnt is None):
            root = tempfile.mkdtemp(prefix="jobfs-it-", dir="/tmp")
            self.own_root = root
        self.root = root
        self.store = store or os.path.join(root, "store")
        self.mnt = mnt or os.path.join(root, "mnt")
        if not is_mounted(self.mnt):  # a dead mount is jobfs's to clear
            os.makedirs(self.mnt, exist_ok=True)
        self.args = list(args)
        if grace is not None and not any(a.startswith("--grace")
                                         for a in self.args):
            self.args += ["--grace", str(grace)]
        if max_running and not any(a.startswith("--max-running")
                                   for a in self.args):
            self.args += ["--max-running", str(max_running)]
        self.env = dict(os.environ)
        if env:
            self.env.update(env)
        self.foreground = foreground
        self.proc = None      # the Popen (foreground) or the launcher
        self.pid = None
        self.launch_output = ""

    # -- lifecycle --

    def command(self):
        cmd = [JOBFS, "--store", self.store] + self.args
        if self.foreground:
            cmd.append("-f")
        return cmd + [self.mnt]

    def start(self):
        with _live_lock:
            _live.append(self)
        cmd = self.command()
        if self.foreground:
            self.log_path = os.path.join(self.root or "/tmp",
                                         "daemon-%d.log" % time.time_ns())
            self.log = open(self.log_path, "wb")
            self.proc = subprocess.Popen(cmd, env=self.env,
                                         stdin=subprocess.DEVNULL,
                                         stdout=self.log, stderr=self.log)
        else:
            self.proc = subprocess.run(cmd, env=self.env,
                                       stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT,
                                       timeout=30)
            self.launch_output = self.proc.stdout.decode(errors="replace")
            if self.proc.returncode != 0:
                raise RuntimeError("jobfs exited %d: %s" %
                                   (self.proc.returncode,
                                    self.launch_output))
        end = time.monotonic() + MOUNT_TIMEOUT
        while time.monotonic() < end:
            if mounted_fuse(self.mnt):
                break
            if self.foreground and self.proc.poll() is not None:
                raise RuntimeError("jobfs -f exited %d before mounting: %s"
                                   % (self.proc.returncode,
                                      read_bytes(self.log_path).decode(
                                          errors="replace")))
            time.sleep(0.02)
        else:
            raise RuntimeError("jobfs did not mount %s in %g s" %
                               (self.mnt, MOUNT_TIMEOUT))
        self.pid = self.lock_pid()
        if self.foreground and self.pid != self.proc.pid:
            raise RuntimeError("STORE/lock names pid %s, the daemon is %d"
                               % (self.pid, self.proc.pid))
        return self

    def lock_pid(self):
        """The pid in the first line of STORE/lock."""
        with open(os.path.join(self.store, "lock")) as f:
            return int(f.readline().strip())

    def alive(self):
        if self.foreground:
            return self.proc.poll() is None
        return self.pid is not None and pid_alive(self.pid)

    def kill9(self):
        """kill -9 the daemon, as a crash would (the mount stays, dead)."""
        os.kill(self.pid, signal.SIGKILL)
        if self.foreground:
            self.proc.wait(timeout=10)
        else:
            wait_pid_gone(self.pid, 10)

    def wait_exit(self, timeout):
        """Foreground only: wait for the daemon to exit; its status."""
        return self.proc.wait(timeout=timeout)

    def stop(self, keep_dirs=False):
        """Unmount, make sure the daemon is gone, remove our directories.
        Never raises."""
        try:
            unmount(self.mnt)
            if self.pid and self.alive():
                # the unmount started its shutdown; if the unmount
                # failed, this does
                try:
                    os.kill(self.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                end = time.monotonic() + KILL_AFTER
                while time.monotonic() < end and self.alive():
                    time.sleep(0.05)
                if self.alive():
                    try:
                        os.kill(self.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    wait_pid_gone(self.pid, 5)
            if self.foreground and self.proc is not None:
                if self.proc.poll() is None:
                    self.proc.kill()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
                self.log.close()
            unmount(self.mnt)  # a kill may have left it dead
        except Exception as e:  # teardown must go on
            sys.stderr.write("harness: teardown of %s: %r\n" % (self.mnt, e))
        finally:
            with _live_lock:
                if self in _live:
                    _live.remove(self)
            if not keep_dirs and self.own_root and not is_mounted(self.mnt):
                shutil.rmtree(self.own_root, ignore_errors=True)

    def emergency(self):
        """Watchdog path: lazy unmount and SIGKILL, nothing that can
        block on the mount."""
        subprocess.run(["fusermount3", "-uz", self.mnt],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for pid in (self.pid, getattr(self.proc, "pid", None)):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    # -- the tree --

    def path(self, *parts):
        return os.path.join(self.mnt, *parts)

    def mkjob(self, name, spec=None, data=None):
        """mkdir a job, then write its spec (a dict or text) and input."""
        os.mkdir(self.path(name))
        if spec is not None:
            self.set_spec(name, spec)
        if data is not None:
            self.set_input(name, data)
        return name

    def set_spec(self, job, spec):
        text = spec if isinstance(spec, str) else json.dumps(spec)
        rc = write_file(self.path(job, "spec"), text + "\n")
        if rc:
            raise OSError(rc, "writing spec of %s: %s (%s)" %
                          (job, errname(rc), self.reason(job)))

    def set_input(self, job, data):
        rc = write_file(self.path(job, "input"), data)
        if rc:
            raise OSError(rc, "writing input of %s: %s" % (job, errname(rc)))

    def control(self, job, verb):
        """Write one verb (with a newline, as echo does); the errno."""
        return write_file(self.path(job, "control"), verb + "\n")

    def do(self, job, verb):
        rc = self.control(job, verb)
        if rc:
            raise OSError(rc, "control %r on %s: %s (%s)" %
                          (verb, job, errname(rc), self.reason(job)))

    def status(self, job):
        return read_text(self.path(job, "status"))

    def sj(self, job):
        return read_json(self.path(job, "status.json"))

    def manifest(self, job):
        return read_json(self.path(job, "manifest.json"))

    def events(self, job):
        text = read_text(self.path(job, "events"))
        return [json.loads(line) for line in text.splitlines() if line]

    def reason(self, job):
        """The last rejection's reason, or ''."""
        try:
            lr = self.sj(job).get("last_rejected")
        except OSError:
            return ""
        return lr["reason"] if lr else ""

    def chunk_names(self, job):
        return sorted(os.listdir(self.path(job, "chunks")))

    def wait_until(self, pred, timeout=20, what="condition", interval=0.02):
        """Poll pred() until it returns a true value, which is returned;
        fail with an AssertionError after timeout seconds."""
        end = time.monotonic() + timeout
        while True:
            v = pred()
            if v:
                return v
            if time.monotonic() > end:
                raise AssertionError("timed out after %g s waiting for %s"
                                     % (timeout, what))
            time.sleep(interval)

    def wait_for(self, job, state, timeout=20):
        """Wait until status.json says state (a string or a tuple of
        them); returns the status.json."""
        states = (state,) if isinstance(state, str) else tuple(state)
        last = {}

        def check():
            last["sj"] = self.sj(job)
            return last["sj"] if last["sj"]["state"] in states else None
        try:
            return self.wait_until(check, timeout, "state %s" % (states,))
        except AssertionError:
            raise AssertionError("job %s never reached %s in %g s; last "
                                 "status.json: %s" % (job, states, timeout,
                                                      json.dumps(
                                                          last.get("sj"))))

    def wait_event(self, job, pred, timeout=20, what="event", since=0):
        """Wait for an event matching pred among the events from index
        since on; returns it."""
        def check():
            for ev in self.events(job)[since:]:
                if pred(ev):
                    return ev
            return None
        return self.wait_until(check, timeout, what)

    def run_job(self, job, timeout=30, state=("done",)):
        """resume and wait until state; returns status.json."""
        self.do(job, "resume")
        return self.wait_for(job, state, timeout)


def chunk_events(events, name, chunk=None):
    return [e for e in events if e.get("event") == name and
            (chunk is None or e.get("chunk") == chunk)]


def events_after(events, pred):
    """The events after the last one matching pred."""
    idx = -1
    for i, ev in enumerate(events):
        if pred(ev):
            idx = i
    return events[idx + 1:]


# ---------------------------------------------------------------------
# test cases

class JobfsTestCase(unittest.TestCase):
    """A test case whose setUp starts a daemon (self.d) with daemon_args /
    daemon_env; teardown is registered before anything can fail."""

    daemon_args = ()
    daemon_env = None

    def setUp(self):
        self.assertTrue(os.access(JOBFS, os.X_OK), "no daemon at %s "
                        "(set JOBFS_BIN)" % JOBFS)
        self.assertTrue(os.access(TESTWORKER, os.X_OK), "no test worker "
                        "at %s (set JOBFS_TESTWORKER)" % TESTWORKER)
        self.d = self.new_daemon(args=self.daemon_args, env=self.daemon_env)

    def new_daemon(self, **kw):
        d = Daemon(**kw)
        self.addCleanup(d.stop)
        d.start()
        return d

    def assertErrno(self, got, want, msg=""):
        wants = want if isinstance(want, tuple) else (want,)
        if got not in wants:
            self.fail("errno %s, expected %s %s" %
                      (errname(got), "/".join(errname(w) for w in wants),
                       msg))


def watchdogs_of(store):
    """Pids of jobfs-watchdog processes whose command line names store
    (the watchdog is a fork of the daemon, so it keeps its argv)."""
    found = []
    want = os.path.abspath(store).encode()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % name, "rb") as f:
                comm = f.read().strip()
            with open("/proc/%s/cmdline" % name, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if comm == b"jobfs-watchdog" and want in argv and \
                pid_alive(int(name)):
            found.append(int(name))
    return found


def kill_pids(pids):
    """SIGKILL each pid that still exists."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def stop_all():
    """Tear down every daemon still alive (for scripts that end without
    main(): the crash suites)."""
    with _live_lock:
        daemons = list(_live)
    for d in daemons:
        d.stop()


def _watchdog(deadline):
    time.sleep(deadline)
    sys.stderr.write("harness: deadline of %g s passed: killing every "
                     "daemon\n" % deadline)
    with _live_lock:
        daemons = list(_live)
    for d in daemons:
        d.emergency()
    time.sleep(20)
    sys.stderr.write("harness: still stuck 20 s later: exiting\n")
    os._exit(3)


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def main():
    """Run the calling module's tests; exit non-zero on any failure.
    Daemons still alive at exit (an interrupt) are torn down."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    deadline = float(os.environ.get("JOBFS_TEST_DEADLINE", "170"))
    threading.Thread(target=_watchdog, args=(deadline,), daemon=True).start()
    try:
        prog = unittest.main(module="__main__", exit=False, verbosity=2)
        ok = prog.result.wasSuccessful()
    finally:
        with _live_lock:
            daemons = list(_live)
        for d in daemons:
            d.stop()
    sys.exit(0 if ok else 1)
