#!/usr/bin/env python3
"""test_cli.py - the command line and the scheduler's global rules:
--help and --version, option values as --opt=V or --opt V, the default store under $XDG_STATE_HOME, --no-resume,
SIGINT in the foreground, the global --max-running limit, priority across
jobs, every chunking mode through the mount, and startup recovery leaving
no temp files."""

import os
import shutil
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def parent_of(pid):
    """The parent pid of pid, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def started(events):
    """(job, chunk) of every 'started' event, in order."""
    return [e.get("chunk") for e in events if e["event"] == "started"]


class Cli(h.JobfsTestCase):

    def test_help_and_version(self):
        r = subprocess.run([h.JOBFS, "--help"], capture_output=True,
                           text=True, timeout=10)
        self.assertEqual(r.returncode, 0)
        for word in ("--store", "--max-running", "--grace", "--no-resume",
                     "MOUNTPOINT"):
            self.assertIn(word, r.stdout)
        r = subprocess.run([h.JOBFS, "--version"], capture_output=True,
                           text=True, timeout=10)
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^jobfs \d+\.\d+")
        r = subprocess.run([h.JOBFS], capture_output=True, text=True,
                           timeout=10)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("mountpoint", r.stderr)

    def test_option_values_in_either_form(self):
        # "--opt=VALUE" and "--opt VALUE" mean the same for every option
        # with a value
        for form in (["--inline-max=2000"], ["--inline-max", "2000"],
                     ["--max-running=x"], ["--max-running", "x"]):
            r = subprocess.run([h.JOBFS] + form + [self.d.mnt],
                               capture_output=True, text=True, timeout=10)
            self.assertEqual(r.returncode, 2, (form, r.stderr))
            self.assertRegex(r.stderr, "inline-max is at most 1984|"
                             "invalid parameter in option `--max-running=x'",
                             form)
        r = subprocess.run([h.JOBFS, self.d.mnt, "--store"],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 2)
        self.assertIn("option '--store' needs a value", r.stderr)
        # a value refused makes nothing: no store directory
        for bad in ("--inline-max=2000", "--grace=-1", "--max-chunks=0"):
            nostore = os.path.join(self.d.root, "nostore")
            r = subprocess.run([h.JOBFS, "--store", nostore, bad,
                                self.d.mnt], capture_output=True, text=True,
                               timeout=10)
            self.assertEqual(r.returncode, 2, (bad, r.stderr))
            self.assertFalse(os.path.exists(nostore), bad)
        # --store=DIR is DIR, not "=DIR" under the working directory
        cwd = os.path.join(self.d.root, "cwd")
        store = os.path.join(self.d.root, "eqstore")
        mnt = os.path.join(self.d.root, "mnt3")
        os.makedirs(cwd)
        os.makedirs(mnt)
        r = subprocess.run([h.JOBFS, "--store=" + store, "--grace=2",
                            "--max-running=1", mnt], cwd=cwd,
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        try:
            self.assertTrue(os.path.isdir(os.path.join(store, "db")))
            self.assertEqual(os.listdir(cwd), [])
            os.mkdir(os.path.join(mnt, "j"))
            self.assertIn("j", os.listdir(mnt))
        finally:
            with open(os.path.join(store, "lock")) as f:
                pid = int(f.readline())
            h.unmount(mnt)
            h.wait_pid_gone(pid, 10)

    def test_default_store_under_xdg_state_home(self):
        state = os.path.join(self.d.root, "state")
        mnt = os.path.join(self.d.root, "mnt2")
        os.makedirs(mnt)
        env = dict(os.environ, XDG_STATE_HOME=state)
        r = subprocess.run([h.JOBFS, mnt], env=env, capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        try:
            store = os.path.join(state, "jobfs")
            self.assertTrue(os.path.isdir(os.path.join(store, "db")))
            self.assertEqual(os.stat(store).st_mode & 0o777, 0o700)
            os.mkdir(os.path.join(mnt, "j"))
            self.assertIn("j", os.listdir(mnt))
        finally:
            with open(os.path.join(state, "jobfs", "lock")) as f:
                pid = int(f.readline())
            h.unmount(mnt)
            h.wait_pid_gone(pid, 10)

    def test_no_resume(self):
        d = self.d
        d.mkjob("j", h.tw_spec(env={"TW_SLEEP_MS": "300"}),
                h.paragraphs(6))
        d.do("j", "start")
        d.wait_until(lambda: len(d.chunk_names("j")) >= 1, 20,
                     "one chunk done")
        d.kill9()
        d2 = self.new_daemon(store=d.store, mnt=d.mnt, args=["--no-resume"])
        sj = d2.sj("j")
        self.assertEqual(sj["state"], "stopped")
        time.sleep(0.8)
        self.assertEqual(d2.sj("j")["chunks"]["running"], 0)
        evs = d2.events("j")
        self.assertEqual(evs[-1]["event"], "not-resumed")
        # and without the option it resumes on its own
        d2.stop(keep_dirs=True)
        d3 = self.new_daemon(store=d.store, mnt=d.mnt)
        self.assertEqual(d3.sj("j")["state"], "stopped")  # it was stopped
        d3.do("j", "resume")
        d3.wait_for("j", "done", 30)

    def test_sigint_in_foreground_exits_zero(self):
        d = self.new_daemon(foreground=True)
        d.mkjob("j", h.tw_spec(env={"TW_SLEEP_MS": "200"}),
                h.paragraphs(4))
        d.do("j", "start")
        d.wait_until(lambda: d.sj("j")["chunks"]["running"] >= 1, 10,
                     "a running chunk")
        d.proc.send_signal(signal.SIGINT)
        self.assertEqual(d.wait_exit(20), 0)
        self.assertFalse(h.is_mounted(d.mnt))

    def test_global_limit(self):
        # the truth is the worker processes alive at once: a copy of the
        # test worker under a name of its own, counted in /proc
        name = "tw-limit-%d" % os.getpid()
        worker = os.path.join(self.d.root, name)
        shutil.copy2(h.TESTWORKER, worker)
        d = self.new_daemon(args=["--max-running", "2"])
        for job in ("a", "b", "c"):
            d.mkjob(job, {"command": [worker], "parallel": 4,
                          "env": {"TW_SLEEP_MS": "150"}},
                    h.paragraphs(6, tag=job))
        for job in ("a", "b", "c"):
            d.do(job, "start")
        most = 0
        end = time.monotonic() + 30
        while time.monotonic() < end:
            # the daemon's own children only (a sanitizer build of the
            # worker clones a helper of the same name as it exits)
            most = max(most, sum(1 for p in h.pgrep(name)
                                 if parent_of(p) == d.pid))
            if all(d.sj(n)["state"] == "done" for n in ("a", "b", "c")):
                break
            time.sleep(0.01)
        self.assertTrue(all(d.sj(n)["state"] == "done"
                            for n in ("a", "b", "c")))
        self.assertLessEqual(most, 2)
        self.assertGreaterEqual(most, 2)  # the limit is used, not just obeyed

    def test_priority(self):
        d = self.new_daemon(args=["--max-running", "1"])
        d.mkjob("low", h.tw_spec(env={"TW_SLEEP_MS": "200"}),
                h.paragraphs(5, tag="low"))
        d.mkjob("high", h.tw_spec(priority=10, env={"TW_SLEEP_MS": "50"}),
                h.paragraphs(5, tag="high"))
        d.do("low", "start")
        d.wait_until(lambda: d.sj("low")["chunks"]["running"] == 1, 10,
                     "low's first chunk running")
        d.do("high", "start")
        d.wait_for("high", "done", 30)
        # with one slot, once high is started every chunk of high starts
        # before low's second chunk does
        d.wait_for("low", "done", 30)
        low_started = [e for e in d.events("low") if e["event"] == "started"]
        high_started = [e for e in d.events("high")
                        if e["event"] == "started"]
        self.assertEqual(len(high_started), 5)
        self.assertEqual(len(low_started), 5)
        self.assertLess(low_started[0]["time"], high_started[0]["time"])
        self.assertGreater(low_started[1]["time"], high_started[-1]["time"],
                           (low_started, high_started))

    def test_chunking_modes_through_the_mount(self):
        d = self.d
        text = ("One. Two! Three?\n\nFour five six.\n\nseven\n")
        cases = {
            "paragraph": (None, ["One. Two! Three?\n\n",
                                 "Four five six.\n\n", "seven\n"]),
            "sentence": (None, ["One. ", "Two! ", "Three?\n\n",
                                "Four five six.\n\n", "seven\n"]),
            "line": (None, ["One. Two! Three?\n\n", "Four five six.\n\n",
                            "seven\n"]),
            "bytes": (10, [text[i:i + 10] for i in range(0, len(text), 10)]),
            "whole": (None, [text]),
        }
        for by, (mx, want) in cases.items():
            with self.subTest(by=by):
                chunking = {"by": by}
                if mx:
                    chunking["max"] = mx
                d.mkjob(by, {"command": ["cat"], "chunking": chunking},
                        text)
                m = d.manifest(by)
                got = [text.encode()[c["start"]:c["end"]].decode()
                       for c in m["chunks"]]
                self.assertEqual(got, want)
                d.run_job(by)
                names = sorted(os.listdir(d.path(by, "chunks")))
                self.assertEqual([h.read_text(d.path(by, "chunks", n))
                                  for n in names], want)
                self.assertEqual(h.read_text(d.path(by, "output.out")), text)

    def test_recovery_leaves_no_temp_files(self):
        d = self.d
        d.mkjob("j", h.tw_spec(parallel=2, env={"TW_SLEEP_MS": "300"}),
                h.paragraphs(8))
        d.do("j", "start")
        d.wait_until(lambda: d.sj("j")["chunks"]["running"] >= 2, 10,
                     "two running chunks")
        self.assertTrue(os.listdir(os.path.join(d.store, "scratch")))
        d.kill9()
        time.sleep(0.5)
        d2 = self.new_daemon(store=d.store, mnt=d.mnt, args=["--no-resume"])
        self.assertEqual(os.listdir(os.path.join(d2.store, "tmp")), [])
        self.assertEqual(os.listdir(os.path.join(d2.store, "scratch")), [])
        d2.do("j", "resume")
        d2.wait_for("j", "done", 30)
        self.assertEqual(h.read_text(d2.path("j", "output.out")),
                         h.paragraphs(8).upper())


if __name__ == "__main__":
    h.main()
