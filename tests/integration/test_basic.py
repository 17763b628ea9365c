#!/usr/bin/env python3
"""test_basic.py - the README session on a real mount, and the truth of
what the tree shows: sizes, copies, fresh status, the manifest, events and
chunk file names."""

import errno
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

TEXT = h.paragraphs(7)


def sh(cmd, cwd):
    """Run a shell command line as a user would; returns stdout bytes,
    raising with stderr if it fails."""
    r = subprocess.run(["sh", "-c", cmd], cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    if r.returncode != 0:
        raise AssertionError("%r exited %d: %s" %
                             (cmd, r.returncode, r.stderr.decode()))
    return r.stdout


def sha(data):
    return hashlib.sha256(data).hexdigest()


class Basic(h.JobfsTestCase):

    def readme_session(self, spec_json, text=TEXT):
        """mkdir, spec, cp input, echo resume, status, ls chunks: with the
        shell tools the README shows. Returns the job directory."""
        src = os.path.join(self.d.root, "chapter.txt")
        with open(src, "w") as f:
            f.write(text)
        mnt = self.d.mnt
        sh("mkdir ch1", mnt)
        sh("echo '%s' > ch1/spec" % spec_json, mnt)
        sh("cp %s ch1/input" % src, mnt)
        sh("echo resume > ch1/control", mnt)
        self.d.wait_for("ch1", "done")
        status = sh("cat ch1/status", mnt).decode()
        self.assertRegex(status, r"(?m)^state +done$")
        n = text.count("\n\n")
        self.assertIn("%d/%d 100.0%%" % (n, n), status)
        names = sh("ls ch1/chunks", mnt).decode().split()
        self.assertEqual(names, ["%04d.out" % i for i in range(1, n + 1)])
        return self.d.path("ch1")

    def check_output(self, job_dir, want):
        chunks = b"".join(h.read_bytes(os.path.join(job_dir, "chunks", c))
                          for c in sorted(os.listdir(
                              os.path.join(job_dir, "chunks"))))
        out = h.read_bytes(os.path.join(job_dir, "output.out"))
        self.assertEqual(out, chunks, "output.out is not the chunks joined")
        self.assertEqual(out, want)

    def test_readme_session_tr(self):
        job = self.readme_session('{"command": "tr a-z A-Z"}')
        self.check_output(job, TEXT.upper().encode())

    def test_readme_session_testworker(self):
        job = self.readme_session('{"command": ["%s"], "parallel": 3}'
                                  % h.TESTWORKER)
        self.check_output(job, TEXT.upper().encode())

    def test_testworker_sized_output(self):
        # paragraphs 2 and 4 have the same text, so the same bytes
        text = ("alpha one.\n\nsame text.\n\ngamma three.\n\n"
                "same text.\n\n")
        d = self.d
        d.mkjob("sz", h.tw_spec({"TW_SIZE": 1000}, parallel=2), text)
        d.run_job("sz")
        parts = [h.read_bytes(d.path("sz", "chunks", "%04d.out" % i))
                 for i in range(1, 5)]
        self.assertEqual([len(p) for p in parts], [1000] * 4)
        self.assertEqual(parts[1], parts[3])
        self.assertNotEqual(parts[0], parts[1])
        self.assertNotEqual(parts[0], parts[2])
        self.assertEqual(h.read_bytes(d.path("sz", "output.out")),
                         b"".join(parts))

    def test_sizes_and_copies(self):
        d = self.d
        # binary outputs, and logs with content
        d.mkjob("cp1", h.tw_spec({"TW_SIZE": 5000, "TW_STDERR": 300},
                                 parallel=2), h.paragraphs(6))
        d.run_job("cp1")
        d.control("cp1", "no-such-verb")  # a rejected line in status
        job = d.path("cp1")
        files = []
        for dirpath, dirnames, filenames in os.walk(job):
            for name in filenames:
                files.append(os.path.join(dirpath, name))
        rel = sorted(os.path.relpath(f, job) for f in files)
        for want in ("spec", "input", "control", "status", "status.json",
                     "manifest.json", "events", "output.out",
                     "chunks/0001.out", "logs/0001.log"):
            self.assertIn(want, rel)
        self.assertEqual(len([r for r in rel if r.startswith("chunks/")]),
                         6)
        content = {}
        for f in files:
            data = h.read_bytes(f)
            content[os.path.relpath(f, job)] = data
            self.assertEqual(os.stat(f).st_size, len(data),
                             "st_size of %s is not its length" % f)
        self.assertEqual(len(content["logs/0001.log"]), 300)
        out = tempfile.mkdtemp(dir=d.root)
        for r, data in content.items():
            dst = os.path.join(out, r.replace("/", "_"))
            subprocess.run(["cp", os.path.join(job, r), dst], check=True)
            self.assertEqual(h.read_bytes(dst), data, "cp of %s" % r)
            dst2 = dst + ".py"
            shutil.copyfile(os.path.join(job, r), dst2)
            self.assertEqual(h.read_bytes(dst2), data, "copyfile of %s" % r)
        tar_dir = os.path.join(out, "tar")
        os.mkdir(tar_dir)
        tar = subprocess.run("tar -C %s -cf - cp1 | tar -C %s -xf -"
                             % (d.mnt, tar_dir), shell=True,
                             stderr=subprocess.PIPE)
        self.assertEqual(tar.returncode, 0, tar.stderr.decode())
        self.assertEqual(tar.stderr, b"")
        for r, data in content.items():
            self.assertEqual(h.read_bytes(os.path.join(tar_dir, "cp1", r)),
                             data, "tar of %s" % r)

    def test_status_fresh_on_every_read(self):
        d = self.d
        d.mkjob("fr", h.tw_spec({"TW_SLEEP_MS": 150}), h.paragraphs(6))
        self.assertEqual(d.sj("fr")["state"], "ready")
        self.assertRegex(d.status("fr"), r"(?m)^state +ready$")
        ev0 = h.read_bytes(d.path("fr", "events"))
        d.do("fr", "resume")
        seen_done, seen_state, ev_sizes = set(), set(), []
        while True:
            sj = d.sj("fr")
            st = d.status("fr")
            seen_done.add(sj["chunks"]["done"])
            seen_state.add(sj["state"])
            # read after status.json: the same state or a later one
            self.assertRegex(st, r"(?m)^state +(running|done)$")
            ev_sizes.append(len(h.read_bytes(d.path("fr", "events"))))
            if sj["state"] == "done":
                break
            self.assertEqual(sj["state"], "running")
            self.assertLess(len(ev_sizes), 2000, "never done")
        # one open per read: every intermediate count was visible
        self.assertGreaterEqual(len(seen_done), 5, seen_done)
        self.assertEqual(sorted(ev_sizes), ev_sizes)
        self.assertGreater(ev_sizes[-1], len(ev0))
        self.assertEqual(os.stat(d.path("fr", "events")).st_size,
                         ev_sizes[-1])
        self.assertRegex(d.status("fr"), r"(?m)^state +done$")

    def test_output_is_the_done_prefix_while_running(self):
        d = self.d
        text = h.paragraphs(5)
        paras = [p + "\n\n" for p in text.split("\n\n")[:5]]
        d.mkjob("px", h.tw_spec({"TW_HANG": 1, "TW_CHUNKS": 2},
                                parallel=3), text)
        d.do("px", "resume")
        d.wait_until(lambda: d.sj("px")["chunks"]["done"] == 4, 10,
                     "chunks 1, 3, 4, 5 done")
        self.assertEqual(d.chunk_names("px"),
                         ["0001.out", "0003.out", "0004.out", "0005.out"])
        out = h.read_text(d.path("px", "output.out"))
        self.assertEqual(out, paras[0].upper())
        self.assertEqual(os.stat(d.path("px", "output.out")).st_size,
                         len(out))
        d.do("px", "cancel")

    def test_output_read_by_threads_at_once(self):
        """One open output.out read from several threads at once (the
        kernel sends a single reader's readahead the same way): every
        read gets the bytes of its own range. Pieces alternate between
        outputs kept in LMDB and files, so most reads cross pieces."""
        d = self.d
        n = 120
        size = "head -c $(( JOBFS_CHUNK % 4 * 1700 + 300 )) /dev/urandom"
        jobs = {"rd": size,  # not finished: served past the page cache
                "rc": size}  # finished: through the page cache
        jobs["rd"] = '[ "$JOBFS_CHUNK" -eq %d ] && exit 3; %s' % (n, size)
        for job, cmd in jobs.items():
            d.mkjob(job, {"command": cmd, "parallel": 2, "attempts": 1},
                    h.paragraphs(n))
            sj = d.run_job(job, timeout=60, state=("done", "failed"))
            self.assertEqual(sj["chunks"]["done"],
                             n - 1 if job == "rd" else n)
            want = b"".join(h.read_bytes(d.path(job, "chunks", c))
                            for c in d.chunk_names(job))
            self.assertGreater(len(want), 100000)
            bad = []
            fd = os.open(d.path(job, "output.out"), os.O_RDONLY)

            def reader(seed):
                rng = random.Random(seed)
                for k in range(400):
                    if job == "rc" and k % 40 == 0:
                        os.posix_fadvise(fd, 0, 0,
                                         os.POSIX_FADV_DONTNEED)
                    off = rng.randrange(len(want))
                    try:
                        got = os.pread(fd, rng.randrange(1, 30000), off)
                    except OSError as e:
                        bad.append((off, h.errname(e.errno)))
                        continue
                    if got != want[off:off + len(got)] or not got:
                        bad.append((off, len(got)))
            try:
                threads = [threading.Thread(target=reader, args=(i,))
                           for i in range(4)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            finally:
                os.close(fd)
            self.assertEqual(bad[:5], [], "%s: %d of 1600 reads got "
                             "other bytes" % (job, len(bad)))
            self.assertEqual(h.read_bytes(d.path(job, "output.out")), want)

    def test_events_can_be_followed(self):
        # tail -f: one open descriptor keeps seeing new lines
        d = self.d
        d.mkjob("tf", h.tw_spec(), h.paragraphs(2))
        with open(d.path("tf", "events"), "rb") as f:
            first = f.read()
            self.assertTrue(first.endswith(b"\n"))
            d.run_job("tf")
            more = f.read()
        self.assertIn(b'"event":"started"', more)
        self.assertIn(b'"event":"run-done"', more)
        self.assertEqual(first + more, h.read_bytes(d.path("tf", "events")))

    def test_manifest_dry_run_and_after(self):
        d = self.d
        text = h.paragraphs(9)
        data = text.encode()
        d.mkjob("mf", h.tw_spec(parallel=3), text)
        m = d.manifest("mf")
        self.assertEqual(m["chunk_count"], 9)
        self.assertEqual(m["input"], {"length": len(data),
                                      "sha256": sha(data)})
        self.assertEqual(m["command"], [h.TESTWORKER])
        self.assertEqual(len(m["chunks"]), 9)
        pos = 0
        for i, c in enumerate(m["chunks"], 1):
            self.assertEqual(c["chunk"], i)
            self.assertEqual(c["start"], pos)
            self.assertGreater(c["end"], c["start"])
            self.assertEqual(c["sha256"], sha(data[c["start"]:c["end"]]),
                             "sha256 of chunk %d" % i)
            self.assertEqual(c["state"], "pending")
            self.assertIsNone(c["output"])
            pos = c["end"]
        self.assertEqual(pos, len(data))
        self.assertEqual(d.sj("mf")["chunks"]["done"], 0)  # a dry run
        self.assertEqual(os.listdir(d.path("mf", "chunks")), [])

        d.run_job("mf")
        m2 = d.manifest("mf")
        total = 0
        for i, c in enumerate(m2["chunks"], 1):
            body = h.read_bytes(d.path("mf", "chunks", "%04d.out" % i))
            self.assertEqual(c["state"], "done")
            self.assertEqual(c["output"], "chunks/%04d.out" % i)
            self.assertEqual(c["output_sha256"], sha(body))
            self.assertEqual(c["size"], len(body))
            self.assertEqual(c["attempts"], 1)
            self.assertIs(c["reused"], False)
            self.assertEqual(body, data[c["start"]:c["end"]].upper())
            total += len(body)
        self.assertEqual(os.stat(d.path("mf", "output.out")).st_size, total)

    def test_events_json_lines(self):
        d = self.d
        d.mkjob("ev", h.tw_spec(parallel=2), h.paragraphs(4))
        d.run_job("ev")
        raw = h.read_bytes(d.path("ev", "events"))
        self.assertTrue(raw.endswith(b"\n"))
        evs = d.events("ev")
        self.assertEqual(len(evs), raw.count(b"\n"))
        for ev in evs:
            self.assertIsInstance(ev, dict)
            self.assertEqual(ev["job"], "ev")
            self.assertRegex(ev["time"],
                             r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        names = [e["event"] for e in evs]
        self.assertEqual(names[0], "created")
        planned = [e for e in evs if e["event"] == "planned"]
        self.assertEqual(planned[-1]["chunks"], 4)
        self.assertEqual(planned[-1]["to_run"], 4)
        for n in range(1, 5):
            started = h.chunk_events(evs, "started", n)
            done = h.chunk_events(evs, "done", n)
            self.assertEqual(len(started), 1, "chunk %d started" % n)
            self.assertEqual(len(done), 1, "chunk %d done" % n)
            self.assertEqual(started[0]["attempt"], 1)
            self.assertEqual(done[0]["exit"], 0)
            self.assertGreaterEqual(done[0]["duration"], 0)
            self.assertLess(evs.index(started[0]), evs.index(done[0]))
        self.assertEqual(names[-1], "run-done")

    def width_job(self, name, lines, run):
        d = self.d
        text = "".join("line number %d\n" % i for i in range(1, lines + 1))
        # a line on stderr, so that every chunk that ran has a log
        d.mkjob(name, {"command": "cat; echo log >&2",
                       "chunking": {"by": "line"}, "output": "none"}, text)
        self.assertEqual(d.manifest(name)["chunk_count"], lines)
        self.assertNotIn("output.out", os.listdir(d.path(name)))
        d.do(name, "retry " + ",".join(str(n) for n in run))
        for n in run:
            d.wait_event(name, lambda e, n=n: e["event"] == "done" and
                         e.get("chunk") == n, what="chunk %d done" % n)
        return d.path(name)

    def test_chunk_names_four_digits(self):
        job = self.width_job("w4", 9999, [1, 9999])
        self.assertEqual(sorted(os.listdir(os.path.join(job, "chunks"))),
                         ["0001.out", "9999.out"])
        self.assertEqual(h.read_bytes(os.path.join(job, "chunks",
                                                   "9999.out")),
                         b"line number 9999\n")
        self.assertEqual(sorted(os.listdir(os.path.join(job, "logs"))),
                         ["0001.log", "9999.log"])

    def test_chunk_names_wider_past_9999(self):
        job = self.width_job("w5", 10001, [1, 10001])
        self.assertEqual(sorted(os.listdir(os.path.join(job, "chunks"))),
                         ["00001.out", "10001.out"])
        self.assertEqual(h.read_bytes(os.path.join(job, "chunks",
                                                   "00001.out")),
                         b"line number 1\n")
        self.assertEqual(h.read_bytes(os.path.join(job, "chunks",
                                                   "10001.out")),
                         b"line number 10001\n")
        # one name per chunk: the 4-digit spelling does not exist
        self.assertErrno(h.errno_of(os.stat, os.path.join(job, "chunks",
                                                          "0001.out")),
                         errno.ENOENT)
        m = self.d.manifest("w5")
        self.assertEqual(m["chunks"][0]["output"], "chunks/00001.out")
        self.assertEqual(m["chunks"][10000]["output"], "chunks/10001.out")
        self.assertIsNone(m["chunks"][1]["output"])
        self.assertEqual(sorted(os.listdir(os.path.join(job, "logs"))),
                         ["00001.log", "10001.log"])


    @unittest.skipIf(os.environ.get("JOBFS_TEST_QUICK"),
                     "JOBFS_TEST_QUICK: no full 10001-chunk run")
    def test_10001_chunks_all_run(self):
        # about 35 s on a 2-CPU VM: one process and one fsync per chunk
        d = self.d
        n = 10001
        text = "".join("row %d\n" % i for i in range(1, n + 1))
        d.mkjob("all", {"command": ["cat"], "chunking": {"by": "line"},
                        "parallel": 2, "output": "none"}, text)
        # the file's watchdog (JOBFS_TEST_DEADLINE) bounds it anyway;
        # sanitizer runs raise that, and this wait follows
        d.run_job("all", timeout=max(150, float(os.environ.get(
            "JOBFS_TEST_DEADLINE", "170")) - 20))
        names = os.listdir(d.path("all", "chunks"))
        self.assertEqual(sorted(names),
                         ["%05d.out" % i for i in range(1, n + 1)])
        for i in (1, 9999, 10000, n):
            self.assertEqual(h.read_text(d.path("all", "chunks",
                                                "%05d.out" % i)),
                             "row %d\n" % i)
        self.assertNotIn("output.out", os.listdir(d.path("all")))
        self.assertEqual(d.sj("all")["chunks"]["done"], n)

if __name__ == "__main__":
    h.main()
