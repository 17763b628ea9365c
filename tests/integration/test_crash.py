#!/usr/bin/env python3
"""test_crash.py - kill -9 of the daemon mid-job, a second daemon on the
same store, and clean shutdowns (SIGTERM, fusermount3 -u) with their grace
period: no finished chunk is ever lost or run again, no worker outlives
the daemon, and in-flight attempts are not counted."""

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

N = 40
TEXT = h.paragraphs(N, tag="crash")


def since_last(events, name):
    """The events after the last event called name (all if none)."""
    return h.events_after(events, lambda e: e["event"] == name)


class Crash(h.JobfsTestCase):

    def worker_copy(self):
        """A copy of the testworker under a name no other process has, so
        that pgrep -f finds exactly this test's workers."""
        name = "tw-crash-" + uuid.uuid4().hex[:12]
        path = os.path.join(self.d.root, name)
        shutil.copy2(h.TESTWORKER, path)
        return name, path

    def spec(self, worker, sleep_ms=50):
        return {"command": [worker], "parallel": 2,
                "env": {"TW_SLEEP_MS": str(sleep_ms)}}

    def test_kill9_mid_job_then_remount(self):
        name, worker = self.worker_copy()
        # the same job, uninterrupted, in another store
        ref = self.new_daemon()
        # slow enough that chunks are still running once 10 are done
        # (workers start fast: at 50 ms the job could end first)
        ref.mkjob("job", self.spec(worker, 150), TEXT)
        ref.run_job("job", timeout=30)
        want = h.read_bytes(ref.path("job", "output.out"))
        self.assertEqual(want, TEXT.upper().encode())

        d = self.d
        d.mkjob("job", self.spec(worker, 150), TEXT)
        d.do("job", "resume")
        d.wait_until(lambda: len(d.chunk_names("job")) >= 10, 20,
                     "10 chunks done")
        done_before = set(d.chunk_names("job"))
        d.wait_until(lambda: h.pgrep(name), 2, "a running worker")
        d.kill9()
        self.assertLess(len(done_before), N)

        # no worker outlives the daemon
        d.wait_until(lambda: not h.pgrep(name), 2,
                     "every worker to be killed: %s" % h.pgrep(name))
        # the mount is dead, not gone
        self.assertTrue(h.is_mounted(d.mnt))
        self.assertErrno(h.errno_of(os.stat, d.mnt), errno.ENOTCONN)

        # jobfs clears the dead mount itself and the job resumes alone
        d2 = self.new_daemon(store=d.store, mnt=d.mnt)
        self.assertIn("dead mount", d2.launch_output)
        d2.wait_for("job", "done", 30)
        self.assertEqual(h.read_bytes(d2.path("job", "output.out")), want)

        evs = d2.events("job")
        self.assertEqual(len(h.chunk_events(evs, "resumed")), 1)
        after = since_last(evs, "resumed")
        rerun = {e["chunk"] for e in h.chunk_events(after, "started")}
        self.assertTrue(rerun, "nothing was left to run after the kill")
        done_nums = {int(n.split(".")[0]) for n in done_before}
        self.assertEqual(rerun & done_nums, set(),
                         "chunks done before the kill ran again")
        for e in h.chunk_events(after, "started"):
            self.assertEqual(e["attempt"], 1, "an in-flight attempt was "
                             "counted: %s" % e)
        for c in d2.manifest("job")["chunks"]:
            self.assertEqual(c["attempts"], 1, c)
        for n in done_before:
            self.assertEqual(h.read_bytes(d2.path("job", "chunks", n)),
                             h.read_bytes(ref.path("job", "chunks", n)))

    def test_second_daemon_on_same_store(self):
        d = self.d
        other = os.path.join(d.root, "other-mnt")
        os.mkdir(other)
        self.addCleanup(h.unmount, other)  # should the second one mount
        r = subprocess.run([h.JOBFS, "--store", d.store, other],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=20)
        out = r.stdout.decode(errors="replace")
        self.assertNotEqual(r.returncode, 0, out)
        self.assertIn(str(d.pid), out)
        self.assertIn("in use", out)
        self.assertFalse(h.is_mounted(other))
        self.assertTrue(d.alive())
        self.assertEqual(os.listdir(d.mnt), [])
        # and the lock still names the first daemon
        self.assertEqual(d.lock_pid(), d.pid)


class Shutdown(h.JobfsTestCase):
    """A foreground daemon, so that its exit status can be seen."""

    def setUp(self):
        # no daemon from JobfsTestCase: each test starts its own
        self.assertTrue(os.access(h.JOBFS, os.X_OK))
        self.assertTrue(os.access(h.TESTWORKER, os.X_OK))

    def fg(self, grace, **kw):
        return self.new_daemon(foreground=True, grace=grace, **kw)

    def hanging_chunk(self, grace):
        """A foreground daemon whose job k runs one chunk that never ends;
        the daemon and the worker's TW_MARK."""
        mark = uuid.uuid4().hex
        d = self.fg(grace=grace)
        d.mkjob("k", h.tw_spec({"TW_HANG": 1, "TW_MARK": mark}),
                "hangs.\n")
        d.do("k", "resume")
        d.wait_until(lambda: h.procs_with_env(
            ("TW_MARK=" + mark).encode()), 5, "the worker")
        return d, mark

    def shutdown_commits_running_chunk(self, stop):
        d = self.fg(grace=5)
        d.mkjob("g", h.tw_spec({"TW_SLEEP_MS": 800}), "only chunk.\n")
        d.do("g", "resume")
        d.wait_event("g", lambda e: e["event"] == "started", 5)
        t0 = time.monotonic()
        stop(d)
        rc = d.wait_exit(15)
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, h.read_text(d.log_path))
        self.assertFalse(h.is_mounted(d.mnt))
        self.assertGreater(took, 0.2, "did not wait for the chunk")
        self.assertLess(took, 5, "waited past the chunk")

        d2 = self.new_daemon(store=d.store, mnt=d.mnt)
        self.assertEqual(d2.chunk_names("g"), ["0001.out"])
        self.assertEqual(h.read_text(d2.path("g", "chunks", "0001.out")),
                         "ONLY CHUNK.\n")
        self.assertEqual(d2.sj("g")["state"], "done")
        evs = d2.events("g")
        self.assertEqual(len(h.chunk_events(evs, "started", 1)), 1)
        self.assertEqual(len(h.chunk_events(evs, "done", 1)), 1)
        self.assertEqual(h.chunk_events(evs, "cancelled"), [])
        self.assertEqual(d2.manifest("g")["chunks"][0]["attempts"], 1)

    def test_sigterm_gives_grace_and_commits(self):
        self.shutdown_commits_running_chunk(
            lambda d: os.kill(d.pid, signal.SIGTERM))

    def test_unmount_gives_grace_and_commits(self):
        self.shutdown_commits_running_chunk(
            lambda d: subprocess.run(["fusermount3", "-u", d.mnt],
                                     check=True))

    def test_second_signal_ends_the_grace_cleanly(self):
        # A second SIGTERM (or the unmount's SIGTERM after fusermount3 -u)
        # during a long grace does not kill the daemon halfway: the grace
        # ends at once, the chunk goes back to pending, the daemon exits 0
        # and leaves no temp file.
        d, mark = self.hanging_chunk(grace=60)
        subprocess.run(["fusermount3", "-u", d.mnt], check=True)
        time.sleep(0.3)
        self.assertIsNone(d.proc.poll(), "exited before the grace ended")
        t0 = time.monotonic()
        os.kill(d.pid, signal.SIGTERM)
        rc = d.wait_exit(15)
        self.assertEqual(rc, 0, h.read_text(d.log_path))
        self.assertLess(time.monotonic() - t0, 5)
        self.assertEqual(h.procs_with_env(("TW_MARK=" + mark).encode()), [])
        self.assertEqual(os.listdir(os.path.join(d.store, "tmp")), [])

        d2 = self.new_daemon(store=d.store, mnt=d.mnt, args=["--no-resume"])
        cancelled = h.chunk_events(d2.events("k"), "cancelled", 1)
        self.assertEqual([c["error"] for c in cancelled], ["daemon stopping"])
        self.assertEqual(d2.sj("k")["chunks"]["pending"], 1)

    def test_grace_expires_chunk_back_to_pending(self):
        d, mark = self.hanging_chunk(grace=1)
        t0 = time.monotonic()
        os.kill(d.pid, signal.SIGTERM)
        rc = d.wait_exit(15)
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, h.read_text(d.log_path))
        self.assertGreater(took, 0.8, "grace was not given")
        self.assertLess(took, 6)
        self.assertFalse(h.is_mounted(d.mnt))
        self.assertEqual(h.procs_with_env(("TW_MARK=" + mark).encode()), [])

        d2 = self.new_daemon(store=d.store, mnt=d.mnt, args=["--no-resume"])
        evs = d2.events("k")
        cancelled = h.chunk_events(evs, "cancelled", 1)
        self.assertEqual(len(cancelled), 1)
        self.assertEqual(cancelled[0]["error"], "daemon stopping")
        self.assertEqual(evs[-1]["event"], "not-resumed")
        sj = d2.sj("k")
        self.assertEqual(sj["state"], "stopped")
        self.assertEqual(sj["chunks"]["pending"], 1)
        self.assertEqual(sj["running"], [])
        self.assertEqual(d2.manifest("k")["chunks"][0]["attempts"], 0)


if __name__ == "__main__":
    h.main()
