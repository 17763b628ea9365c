#!/usr/bin/env python3
"""test_verbs.py - every control verb and every way a verb is refused,
on a real mount with real worker processes."""

import errno
import json
import os
import subprocess
import sys
import time
import uuid

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class Verbs(h.JobfsTestCase):

    def marker(self):
        """A TW_MARK value that tags this test's workers."""
        return "verbs-" + uuid.uuid4().hex

    def workers(self, mark):
        return h.procs_with_env(("TW_MARK=%s" % mark).encode())

    def ready_job(self, name="j", n=5, env=None, **kw):
        self.d.mkjob(name, h.tw_spec(env, **kw), h.paragraphs(n))
        return name

    def new_events(self, job, before):
        return self.d.events(job)[before:]

    def assertRejected(self, job, rc, want_errno, text):
        """rc is want_errno, and status / status.json / events give the
        reason containing text."""
        self.assertErrno(rc, want_errno)
        status = self.d.status(job)
        lines = [ln for ln in status.splitlines()
                 if ln.startswith("rejected")]
        self.assertEqual(len(lines), 1, status)
        self.assertIn(text, lines[0])
        self.assertIn(text, self.d.sj(job)["last_rejected"]["reason"])
        last = [e for e in self.d.events(job) if e["event"] == "rejected"]
        self.assertTrue(last and text in last[-1]["error"])

    # -- refusals ---------------------------------------------------------

    def test_unknown_verb(self):
        job = self.ready_job()
        self.assertRejected(job, self.d.control(job, "frobnicate"),
                            errno.EINVAL,
                            "unknown control verb 'frobnicate'")
        self.assertRejected(job, self.d.control(job, "resum"),
                            errno.EINVAL, "unknown control verb 'resum'")
        self.assertRejected(job, self.d.control(job, "pause now"),
                            errno.EINVAL, "pause takes no argument")
        self.assertRejected(job, h.write_file(self.d.path(job, "control"),
                                              "start\nstart\n"),
                            errno.EINVAL, "one verb per write")
        sj = self.d.sj(job)
        self.assertEqual(sj["state"], "ready")
        self.assertEqual(h.chunk_events(self.d.events(job), "started"), [])
        # reading control lists the verbs
        help_text = h.read_text(self.d.path(job, "control"))
        for verb in ("start", "resume", "pause", "cancel", "retry-failed",
                     "retry", "reset", "verify"):
            self.assertRegex(help_text, r"(?m)^%s " % verb)

    def test_retry_bad_arguments(self):
        job = self.ready_job(n=5)
        d = self.d
        self.assertRejected(job, d.control(job, "retry"), errno.EINVAL,
                            "retry needs chunk numbers")
        self.assertRejected(job, d.control(job, "retry 0"), errno.EINVAL,
                            "out of range 1-5")
        self.assertRejected(job, d.control(job, "retry 99"), errno.EINVAL,
                            "out of range 1-5")
        self.assertRejected(job, d.control(job, "retry 2-6"), errno.EINVAL,
                            "out of range 1-5")
        self.assertRejected(job, d.control(job, "retry 3-2"), errno.EINVAL,
                            "out of range")
        self.assertRejected(job, d.control(job, "retry x"), errno.EINVAL,
                            "bad chunk list 'x'")
        self.assertRejected(job, d.control(job, "retry 1;2"), errno.EINVAL,
                            "bad chunk list")
        self.assertEqual(d.sj(job)["state"], "ready")
        self.assertEqual(d.sj(job)["mode"], "idle")
        self.assertEqual(h.chunk_events(d.events(job), "started"), [])

    def test_start_without_spec_or_input(self):
        d = self.d
        os.mkdir(d.path("bare"))
        for verb in ("start", "resume"):
            self.assertRejected("bare", d.control("bare", verb),
                                errno.EBUSY, "no spec")
        d.set_spec("bare", h.tw_spec())
        for verb in ("start", "resume"):
            self.assertRejected("bare", d.control("bare", verb),
                                errno.EBUSY, "no input")
        self.assertEqual(d.sj("bare")["state"], "new")

    def test_pause_and_cancel_refused_when_not_running(self):
        job = self.ready_job()
        self.assertRejected(job, self.d.control(job, "pause"), errno.EBUSY,
                            "pause refused: the job is ready")
        self.assertRejected(job, self.d.control(job, "cancel"),
                            errno.EBUSY, "cancel refused")
        self.d.run_job(job)
        self.assertRejected(job, self.d.control(job, "pause"), errno.EBUSY,
                            "pause refused: the job is done")

    # -- pause, resume, cancel --------------------------------------------

    def test_pause_and_resume(self):
        d = self.d
        job = self.ready_job(n=8, env={"TW_SLEEP_MS": 300}, parallel=2)
        d.do(job, "resume")
        d.wait_until(lambda: d.sj(job)["chunks"]["done"] >= 2, 10,
                     "2 chunks done")
        d.do(job, "pause")
        self.assertEqual(d.sj(job)["state"], "paused")
        # running chunks finish and commit; nothing new starts
        d.wait_until(lambda: d.sj(job)["chunks"]["running"] == 0, 5,
                     "running chunks to finish")
        evs = d.events(job)
        started = {e["chunk"] for e in h.chunk_events(evs, "started")}
        done = {e["chunk"] for e in h.chunk_events(evs, "done")}
        self.assertEqual(started, done, "a chunk running at pause did not "
                         "commit")
        time.sleep(1.0)
        evs2 = d.events(job)
        self.assertEqual(len(h.chunk_events(evs2, "started")), len(started),
                         "a chunk started while paused")
        sj = d.sj(job)
        self.assertEqual(sj["state"], "paused")
        self.assertEqual(sj["mode"], "pause")
        self.assertEqual(sj["chunks"]["done"], len(done))
        self.assertLess(len(done), 8)
        d.do(job, "resume")
        d.wait_for(job, "done", 20)
        evs3 = d.events(job)
        for n in range(1, 9):
            self.assertEqual(len(h.chunk_events(evs3, "started", n)), 1,
                             "chunk %d started more than once" % n)
        self.assertEqual(h.read_text(d.path(job, "output.out")),
                         h.paragraphs(8).upper())

    def test_cancel_kills_running_chunks(self):
        d = self.d
        mark = self.marker()
        job = self.ready_job(n=4, env={"TW_HANG": 1, "TW_MARK": mark},
                             parallel=2)
        d.do(job, "resume")
        d.wait_until(lambda: d.sj(job)["chunks"]["running"] == 2, 10,
                     "2 running")
        d.wait_until(lambda: len(self.workers(mark)) == 2, 5, "2 workers")
        before = len(d.events(job))
        d.do(job, "cancel")
        d.wait_until(lambda: d.sj(job)["chunks"]["running"] == 0, 5,
                     "cancelled chunks to end")
        d.wait_until(lambda: not self.workers(mark), 5, "workers to die")
        sj = d.sj(job)
        self.assertEqual(sj["state"], "stopped")
        self.assertEqual(sj["mode"], "stop")
        self.assertEqual(sj["chunks"]["pending"], 4)
        self.assertEqual(sj["chunks"]["failed"], 0)
        cancelled = h.chunk_events(self.new_events(job, before), "cancelled")
        self.assertEqual(len(cancelled), 2)
        self.assertEqual(cancelled[0]["error"], "cancelled")
        for c in d.manifest(job)["chunks"]:
            self.assertEqual(c["state"], "pending")
            self.assertEqual(c["attempts"], 0, "cancel spent an attempt")
        time.sleep(0.3)
        self.assertEqual(len(h.chunk_events(self.new_events(job, before),
                                            "started")), 0)
        # the next run starts them as attempt 1 again
        before = len(d.events(job))
        d.do(job, "resume")
        ev = d.wait_event(job, lambda e: e["event"] == "started",
                          since=before)
        self.assertEqual(ev["attempt"], 1)
        d.do(job, "cancel")

    # -- retry-failed, retry N, rm -----------------------------------------

    def test_retry_failed_runs_only_failed(self):
        d = self.d
        job = self.ready_job(n=6, env={"TW_SLEEP_MS": 300, "TW_CHUNKS": 1,
                                       "TW_FAIL_ATTEMPTS": 1,
                                       "TW_EXIT": 3}, attempts=1)
        self.assertEqual(d.control(job, "retry-failed"), 0)  # none: no-op
        self.assertEqual(d.sj(job)["state"], "ready")
        d.do(job, "resume")
        d.wait_until(lambda: (lambda s: s["chunks"]["failed"] == 1 and
                              s["chunks"]["done"] >= 1)(d.sj(job)), 10,
                     "chunk 1 failed and one done")
        d.do(job, "cancel")
        d.wait_for(job, "stopped", 5)
        sj = d.sj(job)
        pending = sj["chunks"]["pending"]
        ndone = sj["chunks"]["done"]
        self.assertGreaterEqual(pending, 3)
        before = len(d.events(job))
        d.do(job, "retry-failed")
        d.wait_event(job, lambda e: e["event"] == "done" and
                     e.get("chunk") == 1, 10, "chunk 1 done")
        time.sleep(0.8)  # long enough for another chunk to start and end
        new = self.new_events(job, before)
        self.assertEqual({e["chunk"] for e in
                          h.chunk_events(new, "started")}, {1})
        sj = d.sj(job)
        self.assertEqual(sj["chunks"]["done"], ndone + 1)
        self.assertEqual(sj["chunks"]["pending"], pending)
        self.assertEqual(sj["chunks"]["failed"], 0)
        self.assertEqual(sj["state"], "stopped")
        self.assertEqual(h.read_text(d.path(job, "chunks", "0001.out")),
                         h.paragraphs(6).split("\n\n")[0].upper() + "\n\n")

    def test_retry_listed_chunks(self):
        d = self.d
        job = self.ready_job(n=4, parallel=2)
        d.run_job(job)
        out = h.read_bytes(d.path(job, "output.out"))
        before = len(d.events(job))
        d.do(job, "retry 2")
        d.wait_event(job, lambda e: e["event"] == "done" and
                     e.get("chunk") == 2, 10, "chunk 2 redone", since=before)
        d.wait_for(job, "done", 10)
        new = self.new_events(job, before)
        self.assertEqual([e["chunk"] for e in
                          h.chunk_events(new, "discarded")], [2])
        started = h.chunk_events(new, "started")
        self.assertEqual([e["chunk"] for e in started], [2])
        self.assertEqual(started[0]["attempt"], 2)
        self.assertEqual(h.read_bytes(d.path(job, "output.out")), out)

        before = len(d.events(job))
        d.do(job, "retry 1-2,3")
        d.wait_until(lambda: len(h.chunk_events(
            self.new_events(job, before), "done")) == 3, 10, "3 redone")
        d.wait_for(job, "done", 10)
        time.sleep(0.3)
        new = self.new_events(job, before)
        self.assertEqual(sorted(e["chunk"] for e in
                                h.chunk_events(new, "started")), [1, 2, 3])
        self.assertEqual(h.read_bytes(d.path(job, "output.out")), out)

    def test_redone_chunk_is_read_fresh(self):
        # same name, same size, new bytes: no stale page cache
        d = self.d
        d.mkjob("fresh", {"command": 'echo "attempt $JOBFS_ATTEMPT"'},
                "one.\n\ntwo.\n")
        d.run_job("fresh")
        path = d.path("fresh", "chunks", "0001.out")
        self.assertEqual(h.read_text(path), "attempt 1\n")
        # every chunk done: output.out is read through the page cache
        self.assertEqual(h.read_text(d.path("fresh", "output.out")),
                         "attempt 1\nattempt 1\n")
        with open(path, "rb") as held:  # an old reader keeps its file
            self.assertEqual(held.read(), b"attempt 1\n")
            before = len(d.events("fresh"))
            d.do("fresh", "retry 1")
            d.wait_event("fresh", lambda e: e["event"] == "done", 10,
                         "chunk 1 redone", since=before)
            d.wait_for("fresh", "done", 10)
            self.assertEqual(h.read_text(path), "attempt 2\n")
            self.assertEqual(h.read_text(d.path("fresh", "output.out")),
                             "attempt 2\nattempt 1\n")
        os.unlink(path)
        d.wait_for("fresh", "done", 10)
        d.wait_until(lambda: os.path.exists(path), 10, "chunk 1 again")
        self.assertEqual(h.read_text(path), "attempt 3\n")

    def test_old_reader_does_not_leave_stale_pages(self):
        # A reader that opened chunk 1 (or output.out, all of whose chunks
        # are done) before it was redone reads on after the redo: the
        # pages it brings into the kernel's cache hold the old bytes. An
        # open after that reader has closed must not be given them.
        self.old_reader("chunks/0001.out")
        self.old_reader("output.out")

    def old_reader(self, name):
        d = self.d
        size = 8 << 20
        job = "old-" + name.replace("/", "-")
        d.mkjob(job, {"command": 'yes "attempt $JOBFS_ATTEMPT" | '
                      'head -c %d' % size}, "one.\n")
        d.run_job(job)
        path = d.path(job, *name.split("/"))
        mid = size // 2
        with open(path, "rb", buffering=0) as old:
            self.assertTrue(os.pread(old.fileno(), 4096, 0)
                            .startswith(b"attempt 1\n"))
            before = len(d.events(job))
            d.do(job, "retry 1")
            d.wait_event(job, lambda e: e["event"] == "done", 10,
                         "chunk 1 redone", since=before)
            d.wait_for(job, "done", 10)
            with open(path, "rb", buffering=0) as new:  # opened, not read
                self.assertEqual(os.fstat(new.fileno()).st_size, size)
            tail = os.pread(old.fileno(), size - mid, mid)
            self.assertEqual(len(tail), size - mid)
        with open(path, "rb") as f:
            data = f.read()
        self.assertEqual(len(data), size)
        self.assertFalse(b"attempt 1" in data, "old bytes in " + name)
        self.assertIn(b"attempt 2", data[mid:mid + 64])

    def test_discarded_chunk_is_gone_at_once(self):
        # The kernel keeps names for a second (entry_timeout): a chunk
        # file it knows that a retry discards must still be gone for the
        # next stat and open, not a second later.
        d = self.d
        d.mkjob("gone", {"command": 'test "$JOBFS_ATTEMPT" = 1 && echo ok',
                         "attempts": 1}, "one.\n\ntwo.\n")
        d.run_job("gone")
        path = d.path("gone", "chunks", "0001.out")
        self.assertEqual(h.read_text(path), "ok\n")
        self.assertTrue(os.path.exists(path))
        d.do("gone", "retry 1")
        d.wait_for("gone", "failed", 10)
        self.assertFalse(os.path.exists(path))
        with self.assertRaises(FileNotFoundError):
            open(path, "rb")
        self.assertEqual(os.listdir(d.path("gone", "chunks")), ["0002.out"])

    def test_fstat_of_open_status_is_what_it_reads(self):
        d = self.d
        job = self.ready_job("fst", n=3)
        d.run_job(job)
        for name in ("status", "status.json", "manifest.json"):
            with open(d.path(job, name), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                data = f.read()
            self.assertEqual(size, len(data), name)
            self.assertGreater(size, 0, name)

    def test_retry_refused_while_chunk_runs(self):
        d = self.d
        job = self.ready_job(n=3, env={"TW_HANG": 1, "TW_CHUNKS": 1})
        d.do(job, "resume")
        d.wait_until(lambda: d.sj(job)["running"], 5, "chunk 1 running")
        self.assertRejected(job, d.control(job, "retry 1"), errno.EBUSY,
                            "chunk 1 is running")
        d.do(job, "cancel")

    def test_rm_chunk_reruns_it(self):
        d = self.d
        job = self.ready_job(n=4, parallel=2)
        d.run_job(job)
        body = h.read_bytes(d.path(job, "chunks", "0002.out"))
        before = len(d.events(job))
        os.unlink(d.path(job, "chunks", "0002.out"))
        d.wait_event(job, lambda e: e["event"] == "done" and
                     e.get("chunk") == 2, 10, "chunk 2 redone", since=before)
        d.wait_for(job, "done", 10)
        new = self.new_events(job, before)
        self.assertEqual([e["chunk"] for e in
                          h.chunk_events(new, "started")], [2])
        self.assertEqual(h.read_bytes(d.path(job, "chunks", "0002.out")),
                         body)
        self.assertErrno(h.errno_of(os.unlink,
                                    d.path(job, "chunks", "0009.out")),
                         errno.ENOENT)
        self.assertErrno(h.errno_of(os.unlink, d.path(job, "spec")),
                         errno.EPERM)

    # -- reset ------------------------------------------------------------

    def test_reset(self):
        d = self.d
        mark = self.marker()
        job = self.ready_job(n=4, env={"TW_HANG": 1, "TW_CHUNKS": "3-4",
                                       "TW_MARK": mark}, parallel=2)
        d.do(job, "resume")
        d.wait_until(lambda: (lambda s: s["chunks"]["done"] == 2 and
                              s["chunks"]["running"] == 2)(d.sj(job)), 10,
                     "2 done, 2 hanging")
        self.assertRejected(job, d.control(job, "reset"), errno.EBUSY,
                            "reset refused")
        self.assertEqual(d.sj(job)["chunks"]["done"], 2)
        d.do(job, "cancel")
        d.wait_for(job, "stopped", 5)
        self.assertEqual(len(d.chunk_names(job)), 2)
        d.do(job, "reset")
        sj = d.sj(job)
        self.assertEqual(sj["chunks"]["done"], 0)
        self.assertEqual(sj["chunks"]["pending"], 4)
        self.assertEqual(sj["state"], "ready")
        self.assertEqual(d.chunk_names(job), [])
        self.assertEqual(os.listdir(d.path(job, "logs")), [])
        self.assertEqual(os.stat(d.path(job, "output.out")).st_size, 0)
        for c in d.manifest(job)["chunks"]:
            self.assertEqual((c["state"], c["attempts"], c["output"]),
                             ("pending", 0, None))
        self.assertEqual(d.events(job)[-1]["event"], "reset")
        self.assertEqual(h.read_text(d.path(job, "input")),
                         h.paragraphs(4))  # spec and input kept

    def objects(self):
        return [f for _, _, files in os.walk(os.path.join(self.d.store,
                                                          "objects"))
                for f in files]

    def test_reset_of_done_job_runs_again(self):
        d = self.d
        # outputs over --inline-max are files in STORE/objects
        job = self.ready_job(n=3, env={"TW_SIZE": 4096})
        d.run_job(job)
        want = h.read_bytes(d.path(job, "output.out"))
        self.assertEqual(len(want), 3 * 4096)
        self.assertEqual(len(self.objects()), 3)
        d.do(job, "reset")
        d.wait_until(lambda: not self.objects(), 3,
                     "the released outputs to leave STORE/objects")
        self.assertEqual(d.chunk_names(job), [])
        before = len(d.events(job))
        d.run_job(job)
        self.assertEqual(len(h.chunk_events(self.new_events(job, before),
                                            "started")), 3)
        self.assertEqual(h.read_bytes(d.path(job, "output.out")), want)

    def test_resume_of_done_job_is_done_at_once(self):
        d = self.d
        job = self.ready_job(n=3)
        d.run_job(job)
        before = len(d.events(job))
        d.do(job, "resume")
        sj = d.sj(job)
        self.assertEqual((sj["state"], sj["mode"]), ("done", "idle"))
        names = [e["event"] for e in self.new_events(job, before)]
        self.assertEqual(names, ["resume", "run-done"])
        # a mount that does not resume shows it done, not stopped
        d.stop(keep_dirs=True)
        d2 = self.new_daemon(store=d.store, mnt=d.mnt, args=["--no-resume"])
        self.assertEqual(d2.sj(job)["state"], "done")

    # -- verify -----------------------------------------------------------

    def obj_path(self, sha):
        return os.path.join(self.d.store, "objects", sha[:2], sha)

    def test_verify_finds_corrupt_and_missing_outputs(self):
        d = self.d
        # outputs over --inline-max are files in STORE/objects
        job = self.ready_job(n=4, parallel=2, env={"TW_SIZE": 4096})
        d.run_job(job)
        want = h.read_bytes(d.path(job, "output.out"))
        before = len(d.events(job))
        d.do(job, "verify")
        new = self.new_events(job, before)
        self.assertEqual(h.chunk_events(new, "corrupt"), [])
        self.assertEqual([e["event"] for e in new], ["verified"])
        self.assertEqual(d.sj(job)["chunks"]["done"], 4)

        m = d.manifest(job)
        p2 = self.obj_path(m["chunks"][1]["output_sha256"])
        p3 = self.obj_path(m["chunks"][2]["output_sha256"])
        self.assertTrue(os.path.isfile(p2), p2)
        with open(p2, "r+b") as f:
            b = f.read(1)
            f.seek(0)
            f.write(bytes([b[0] ^ 0x01]))
        os.unlink(p3)
        before = len(d.events(job))
        d.do(job, "verify")
        new = self.new_events(job, before)
        corrupt = {e["chunk"]: e["error"]
                   for e in h.chunk_events(new, "corrupt")}
        self.assertEqual(sorted(corrupt), [2, 3])
        self.assertIn("SHA-256", corrupt[2])
        self.assertIn("missing", corrupt[3])
        self.assertIn("2 corrupt", [e for e in new
                                    if e["event"] == "verified"][0]["error"])
        sj = d.sj(job)
        self.assertEqual(sj["chunks"]["done"], 2)
        self.assertEqual(sj["chunks"]["pending"], 2)
        self.assertNotEqual(sj["state"], "done")
        self.assertEqual(d.chunk_names(job), ["0001.out", "0004.out"])
        states = [c["state"] for c in d.manifest(job)["chunks"]]
        self.assertEqual(states, ["done", "pending", "pending", "done"])
        self.assertFalse(os.path.exists(p2), "the corrupt object stayed")
        # they run again when the job runs
        before = len(d.events(job))
        d.run_job(job)
        self.assertEqual(sorted(e["chunk"] for e in h.chunk_events(
            self.new_events(job, before), "started")), [2, 3])
        self.assertEqual(h.read_bytes(d.path(job, "output.out")), want)

    def test_writes_right_after_cancel(self):
        """reset, a new spec and a new input written at once after cancel
        wait for the killed workers instead of failing with EBUSY."""
        d = self.d
        for what in ("reset", "spec", "input"):
            mark = self.marker()
            job = self.ready_job("c" + what, n=2,
                                 env={"TW_HANG": 1, "TW_MARK": mark})
            d.do(job, "resume")
            d.wait_until(lambda: self.workers(mark), 5, "a worker")
            d.do(job, "cancel")
            if what == "reset":
                d.do(job, "reset")
            elif what == "spec":
                d.set_spec(job, h.tw_spec({"TW_MARK": mark}))
            else:
                d.set_input(job, h.paragraphs(3))
            self.assertEqual(self.workers(mark), [])
            self.assertEqual(d.sj(job)["chunks"]["running"], 0)

    # -- rmdir ------------------------------------------------------------

    def test_verbs_and_restarts_while_workers_start(self):
        # Pauses, cancels and unmounts that come while the start thread is
        # creating workers: no chunk is lost, none is done twice, and no
        # attempt is spent on a chunk that was given back (with attempts
        # 1, a spent attempt would fail the chunk).
        import random
        d = self.d
        data = "".join("line %d\n" % i for i in range(1, 1201))
        spec = {"command": ["tr", "a-z", "A-Z"], "chunking": {"by": "line"},
                "parallel": 4, "attempts": 1}
        jobs = ("a", "b")
        for k in jobs:
            d.mkjob(k, spec, data)
        rnd = random.Random(7)
        for i in range(24):
            for k in jobs:
                self.assertIn(d.control(k, "resume"), (0, errno.EBUSY))
            time.sleep(rnd.uniform(0.005, 0.05))
            for k in jobs:
                # refused only when the job has just finished its run
                self.assertIn(d.control(k, rnd.choice(("pause", "cancel"))),
                              (0, errno.EINVAL))
            if i % 8 == 7:
                for k in jobs:
                    d.control(k, "resume")
                time.sleep(0.03)
                # an unmount, and the daemon's own shutdown to its end
                h.unmount(d.mnt)
                self.assertTrue(h.wait_store_free(d.store))
                self.assertEqual(os.listdir(os.path.join(d.store, "tmp")),
                                 [])
                d = self.new_daemon(store=d.store, mnt=d.mnt)
        for k in jobs:
            d.control(k, "resume")
        for k in jobs:
            d.wait_for(k, "done", 60)
            self.assertEqual(h.read_bytes(d.path(k, "output.out")),
                             data.upper().encode())
            ev = d.events(k)
            done = [e["chunk"] for e in ev if e["event"] == "done"]
            self.assertEqual(sorted(done), list(range(1, 1201)))
            # a chunk given back is cancelled, never failed
            self.assertEqual([e for e in ev if e["event"] in
                              ("failed", "timeout")], [])
            self.assertTrue(any(e["event"] == "cancelled" for e in ev))
            self.assertEqual(d.sj(k)["chunks"]["failed"], 0)
        h.unmount(d.mnt)
        self.assertTrue(h.wait_store_free(d.store))
        self.assertEqual(os.listdir(os.path.join(d.store, "tmp")), [])
        self.assertEqual(os.listdir(os.path.join(d.store, "scratch")), [])

    def test_rmdir(self):
        d = self.d
        mark = self.marker()
        job = self.ready_job(n=2, env={"TW_HANG": 1, "TW_MARK": mark})
        d.do(job, "resume")
        d.wait_until(lambda: self.workers(mark), 5, "a worker")
        self.assertRejected(job, h.errno_of(os.rmdir, d.path(job)),
                            errno.EBUSY, "rmdir refused")
        self.assertIn(job, os.listdir(d.mnt))
        # rmdir right after cancel: it waits for the killed workers to be
        # reaped instead of failing with EBUSY
        d.do(job, "cancel")
        os.rmdir(d.path(job))
        self.assertNotIn(job, os.listdir(d.mnt))
        self.assertEqual(self.workers(mark), [])
        # its data left the store: input, events, logs
        for sub in ("inputs", "events", "logs"):
            self.assertEqual(os.listdir(os.path.join(d.store, sub)), [],
                             "STORE/%s keeps files of a deleted job" % sub)
        self.assertErrno(h.errno_of(os.stat, d.path(job)), errno.ENOENT)
        # the name is free again, for a new, empty job
        os.mkdir(d.path(job))
        self.assertEqual(d.sj(job)["state"], "new")
        self.assertEqual(h.read_bytes(d.path(job, "input")), b"")
        self.assertEqual(d.events(job)[0]["event"], "created")
        self.assertEqual(len(d.events(job)), 1)


class Inline(h.JobfsTestCase):
    """Outputs up to --inline-max bytes live in their LMDB objects record,
    larger ones as files in STORE/objects; the two read, survive a
    remount, verify and release alike (docs/design.md, "Small outputs")."""
    daemon_args = ("--inline-max=64",)
    # "chunk N " and 51 + N x's: 60 bytes for chunk 1 ... 66 for chunk 7
    CMD = ('printf "chunk %s " "$JOBFS_CHUNK"; '
           'yes x | tr -d "\\n" | head -c $((51 + JOBFS_CHUNK))')
    N = 7

    def want(self, n):
        return ("chunk %d " % n + "x" * (51 + n)).encode()

    def check_store(self, store, args=(), env=None):
        out = subprocess.run(
            [os.path.join(os.path.dirname(h.JOBFS), "tools", "jobfs-check"),
             "--store", store, "--json"] + list(args),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False,
            env=dict(os.environ, **(env or {})))
        return out.returncode, json.loads(out.stdout), out.stderr.decode()

    def object_files(self, store):
        return sorted(f for _, _, files in os.walk(os.path.join(store,
                                                                "objects"))
                      for f in files)

    def lmdb_objects(self, store):
        """Entries of the objects database, as mdb_stat counts them."""
        out = subprocess.run(["mdb_stat", "-s", "objects",
                              os.path.join(store, "db")],
                             stdout=subprocess.PIPE, check=True).stdout
        for line in out.decode().splitlines():
            if line.strip().startswith("Entries:"):
                return int(line.split(":")[1])
        self.fail("mdb_stat printed no Entries: %r" % out)

    def run_sizes(self, job="s"):
        d = self.d
        d.mkjob(job, {"command": self.CMD},
                "".join("p%d.\n\n" % i for i in range(self.N)))
        d.run_job(job)
        return d.manifest(job)

    def test_small_outputs_are_kept_in_lmdb(self):
        d = self.d
        m = self.run_sizes()
        shas = [c["output_sha256"] for c in m["chunks"]]
        # 60-64 bytes inline, 65 and 66 as files
        self.assertEqual(self.object_files(d.store), sorted(shas[5:]))
        for n in range(1, self.N + 1):
            self.assertEqual(h.read_bytes(d.path("s", "chunks",
                                                 "%04d.out" % n)),
                             self.want(n))
        whole = b"".join(self.want(n) for n in range(1, self.N + 1))
        self.assertEqual(h.read_bytes(d.path("s", "output.out")), whole)
        rc, got, err = self.check_store(d.store)
        self.assertEqual((rc, got["inline"], got["missing"], got["corrupt"],
                          got["badsize"], got["badrefs"]),
                         (0, 5, 0, 0, 0, 0), err)
        # durable: a new daemon reads the same bytes
        d.stop(keep_dirs=True)
        d2 = self.new_daemon(store=d.store, mnt=d.mnt)
        self.assertEqual(h.read_bytes(d2.path("s", "output.out")), whole)
        self.assertEqual(h.read_bytes(d2.path("s", "chunks", "0003.out")),
                         self.want(3))
        before = len(d2.events("s"))
        d2.do("s", "verify")
        new = d2.events("s")[before:]
        self.assertEqual(h.chunk_events(new, "corrupt"), [])
        self.assertIn("7 outputs checked", d2.status("s"))

    def test_check_sees_damaged_files_beside_inline_outputs(self):
        """jobfs-check checks every file object, whatever its memory
        held before: glibc's MALLOC_PERTURB_ fills fresh allocations
        with a byte that must not read as "kept inline"."""
        d = self.d
        m = self.run_sizes()
        d.stop(keep_dirs=True)
        shas = [c["output_sha256"] for c in m["chunks"]]
        os.truncate(os.path.join(d.store, "objects", shas[5][:2],
                                 shas[5]), 10)
        for perturb in ("", "195", "255"):
            env = {"MALLOC_PERTURB_": perturb}
            rc, got, err = self.check_store(d.store, ["--list"], env)
            self.assertEqual((rc, got["inline"], got["badsize"]), (1, 5, 1),
                             "MALLOC_PERTURB_=%s: %s" % (perturb, err))
            self.assertEqual([c[1] for c in got["done_chunks"] if c[4]],
                             [1, 2, 3, 4, 5], perturb)

    def test_release_removes_inline_records(self):
        d = self.d
        self.run_sizes("a")
        self.run_sizes("b")   # the same outputs: shared records
        self.assertEqual(self.lmdb_objects(d.store), self.N)
        d.do("a", "reset")
        self.assertEqual(self.lmdb_objects(d.store), self.N)
        self.assertEqual(h.read_bytes(d.path("b", "chunks", "0002.out")),
                         self.want(2))
        os.rmdir(d.path("b"))
        d.wait_until(lambda: not self.object_files(d.store), 5,
                     "the released files to leave STORE/objects")
        self.assertEqual(self.lmdb_objects(d.store), 0)

    def test_edit_reuses_inline_outputs(self):
        """A new input releases every old chunk and takes back the ones
        it reuses, in one transaction: their inline bytes stay."""
        d = self.d
        self.run_sizes()
        text = "".join("p%d.\n\n" % i for i in range(self.N))
        d.set_input("s", text + "p7.\n\n")
        d.run_job("s")
        started = h.chunk_events(d.events("s"), "started")
        self.assertEqual(sum(1 for e in started if e["chunk"] == 1), 1)
        self.assertEqual(h.read_bytes(d.path("s", "chunks", "0001.out")),
                         self.want(1))
        rc, got, err = self.check_store(d.store)
        self.assertEqual((rc, got["done"], got["inline"]), (0, 8, 5), err)

    def test_verify_finds_corrupt_inline_bytes(self):
        d = self.d
        self.run_sizes()
        # flip one byte of chunk 3's output wherever data.mdb holds it
        # (the live record and any stale copy of its page)
        mdb = os.path.join(d.store, "db", "data.mdb")
        with open(mdb, "r+b") as f:
            data = f.read()
            hits = [i for i in range(len(data))
                    if data.startswith(self.want(3), i)]
            self.assertTrue(hits, "chunk 3's bytes are not in data.mdb")
            for i in hits:
                f.seek(i + 6)
                f.write(b"4")
        rc, got, err = self.check_store(d.store)
        self.assertEqual((rc, got["corrupt"]), (1, 1), err)
        before = len(d.events("s"))
        d.do("s", "verify")
        corrupt = h.chunk_events(d.events("s")[before:], "corrupt")
        self.assertEqual([e["chunk"] for e in corrupt], [3])
        self.assertEqual(d.sj("s")["chunks"]["pending"], 1)
        d.run_job("s")
        self.assertEqual(h.read_bytes(d.path("s", "chunks", "0003.out")),
                         self.want(3))
        rc, got, err = self.check_store(d.store)
        self.assertEqual((rc, got["corrupt"]), (0, 0), err)

    def test_inline_max_bounds(self):
        for bad in ("--inline-max=1985", "--inline-max=-1"):
            out = subprocess.run([h.JOBFS, "-f", "--store",
                                  os.path.join(self.d.root, "x"), bad,
                                  os.path.join(self.d.root, "m")],
                                 stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, timeout=10)
            self.assertEqual(out.returncode, 2, bad)
            self.assertTrue(out.stderr, bad)


if __name__ == "__main__":
    h.main()
