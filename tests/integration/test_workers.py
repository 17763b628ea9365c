#!/usr/bin/env python3
"""test_workers.py - the worker contract with real processes: retries and
backoff, failure reasons in words, timeouts that kill the whole tree, the
output file, the environment, descriptors, bounded logs, stdin that is
never read, the scratch directory and the output cap."""

import datetime
import errno
import json
import os
import sys
import uuid

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

TEXT = h.paragraphs(5)


def ts(ev):
    return datetime.datetime.strptime(ev["time"], "%Y-%m-%dT%H:%M:%S.%fZ")


class Workers(h.JobfsTestCase):

    def job(self, name, env=None, text=TEXT, **kw):
        self.d.mkjob(name, h.tw_spec(env, **kw), text)
        return name

    def failed_entry(self, job, chunk):
        for f in self.d.sj(job)["failed"]:
            if f["chunk"] == chunk:
                return f
        self.fail("chunk %d is not in failed[]: %s" % (chunk,
                                                       self.d.sj(job)))

    def status_failed_line(self, job, chunk):
        for line in self.d.status(job).splitlines():
            if line.startswith("  chunk %d: " % chunk):
                return line
        self.fail("no failed line for chunk %d in status:\n%s" %
                  (chunk, self.d.status(job)))

    # -- retries ----------------------------------------------------------

    def test_retry_after_failed_first_attempt(self):
        d = self.d
        job = self.job("r", {"TW_CHUNKS": 3, "TW_FAIL_ATTEMPTS": 1,
                             "TW_EXIT": 3}, backoff={"initial": 0.1},
                       parallel=2)
        d.run_job(job)
        evs = [e for e in d.events(job) if e.get("chunk") == 3 and
               e["event"] in ("started", "failed", "retry-scheduled",
                              "done")]
        self.assertEqual([(e["event"], e["attempt"]) for e in evs],
                         [("started", 1), ("failed", 1),
                          ("retry-scheduled", 1), ("started", 2),
                          ("done", 2)])
        self.assertEqual(evs[1]["exit"], 3)
        self.assertEqual(evs[1]["error"], "exit 3")
        self.assertGreaterEqual(evs[2]["retry_in"], 0.08)
        self.assertLessEqual(evs[2]["retry_in"], 0.12)
        gap = (ts(evs[3]) - ts(evs[1])).total_seconds()
        self.assertGreaterEqual(gap, 0.075, "retried before its backoff")
        self.assertLess(gap, 1.0, "backoff of 0.1 s took %g s" % gap)
        for n in (1, 2, 4, 5):
            self.assertEqual(len(h.chunk_events(d.events(job), "started",
                                                n)), 1)
        self.assertEqual(d.manifest(job)["chunks"][2]["attempts"], 2)
        self.assertEqual(h.read_text(d.path(job, "output.out")),
                         TEXT.upper())

    def test_backoff_grows_and_is_capped(self):
        d = self.d
        job = self.job("b", {"TW_CHUNKS": 1, "TW_EXIT": 1}, text="one.\n",
                       attempts=4,
                       backoff={"initial": 0.1, "factor": 2, "max": 0.3})
        d.run_job(job, state="failed")
        delays = [e["retry_in"] for e in
                  h.chunk_events(d.events(job), "retry-scheduled", 1)]
        self.assertEqual(len(delays), 3)
        for got, want in zip(delays, (0.1, 0.2, 0.3)):
            self.assertGreaterEqual(got, want * 0.8 - 0.001, delays)
            self.assertLessEqual(got, want * 1.2 + 0.001, delays)

    def test_attempts_exhausted(self):
        d = self.d
        job = self.job("x", {"TW_CHUNKS": 3, "TW_EXIT": 3}, attempts=2,
                       backoff={"initial": 0.1}, parallel=2)
        sj = d.run_job(job, state="failed")
        self.assertEqual(sj["chunks"]["failed"], 1)
        self.assertEqual(sj["chunks"]["done"], 4)
        self.assertEqual(self.failed_entry(job, 3),
                         {"chunk": 3, "attempts": 2, "error": "exit 3"})
        self.assertEqual(self.status_failed_line(job, 3),
                         "  chunk 3: exit 3 (after 2 attempts)")
        self.assertIn("retry-failed", d.status(job))
        evs = d.events(job)
        self.assertEqual(len(h.chunk_events(evs, "started", 3)), 2)
        self.assertEqual(len(h.chunk_events(evs, "failed", 3)), 2)
        self.assertEqual(len(h.chunk_events(evs, "retry-scheduled", 3)), 1)
        self.assertEqual(evs[-1]["event"], "run-failed")
        m = d.manifest(job)["chunks"][2]
        self.assertEqual((m["state"], m["attempts"], m["error"]),
                         ("failed", 2, "exit 3"))
        # output.out holds the done prefix only: chunks 1 and 2
        self.assertEqual(h.read_text(d.path(job, "output.out")),
                         "".join(p + "\n\n" for p in
                                 TEXT.upper().split("\n\n")[:2]))

    def test_no_retry_fails_at_once(self):
        d = self.d
        job = self.job("n", {"TW_CHUNKS": 2, "TW_EXIT": 7}, attempts=5,
                       no_retry=[7], backoff={"initial": 0.1})
        d.run_job(job, state="failed")
        evs = d.events(job)
        self.assertEqual(len(h.chunk_events(evs, "started", 2)), 1)
        self.assertEqual(h.chunk_events(evs, "retry-scheduled"), [])
        self.assertEqual(self.failed_entry(job, 2)["attempts"], 1)
        self.assertEqual(self.failed_entry(job, 2)["error"], "exit 7")

    # -- reasons in words -------------------------------------------------

    def test_crash_is_killed_by_sigsegv(self):
        d = self.d
        job = self.job("c", {"TW_CHUNKS": 2, "TW_CRASH": 1}, attempts=1)
        d.run_job(job, state="failed")
        self.assertEqual(self.failed_entry(job, 2)["error"],
                         "killed by SIGSEGV")
        self.assertEqual(self.status_failed_line(job, 2),
                         "  chunk 2: killed by SIGSEGV (after 1 attempt)")
        failed = h.chunk_events(d.events(job), "failed", 2)
        self.assertEqual(failed[0].get("signal"), 11)
        # its output was written before the crash, and is not kept
        self.assertNotIn("0002.out", d.chunk_names(job))

    def test_command_not_found(self):
        d = self.d
        d.mkjob("sh", {"command": "espeek-ng -v en", "attempts": 1},
                "one.\n")
        d.mkjob("argv", {"command": ["espeek-ng", "-v", "en"],
                         "attempts": 1}, "one.\n")
        for job in ("sh", "argv"):
            d.run_job(job, state="failed")
            self.assertEqual(self.failed_entry(job, 1)["error"],
                             "command not found: espeek-ng", job)
            self.assertIn("command not found: espeek-ng",
                          self.status_failed_line(job, 1))

    def workers(self, mark):
        return h.procs_with_env(("TW_MARK=%s" % mark).encode())

    def timeout_case(self, knob, nprocs):
        d = self.d
        mark = uuid.uuid4().hex
        job = self.job("t", {knob: 1, "TW_MARK": mark}, text="one.\n",
                       timeout=1, attempts=1)
        d.do(job, "resume")
        d.wait_until(lambda: len(self.workers(mark)) == nprocs, 5,
                     "%d processes of the worker" % nprocs)
        d.wait_for(job, "failed", 10)
        self.assertEqual(self.failed_entry(job, 1)["error"],
                         "timeout after 1 s")
        self.assertIn("timeout after 1 s", self.status_failed_line(job, 1))
        timeouts = h.chunk_events(d.events(job), "timeout", 1)
        self.assertEqual(len(timeouts), 1)
        self.assertGreaterEqual(timeouts[0]["duration"], 0.95)
        self.assertLess(timeouts[0]["duration"], 3)
        d.wait_until(lambda: not self.workers(mark), 3,
                     "the worker's processes to be gone")

    def test_timeout_kills_the_worker(self):
        self.timeout_case("TW_HANG", 1)

    def test_timeout_kills_the_grandchild_too(self):
        self.timeout_case("TW_FORK_HANG", 2)

    # -- output, environment, descriptors ---------------------------------

    def test_output_file_preferred_over_stdout(self):
        d = self.d
        job = self.job("o", {"TW_TO_FILE": 1, "TW_STDOUT_JUNK": 1},
                       ext="txt")
        d.run_job(job)
        self.assertEqual(d.chunk_names(job),
                         ["%04d.txt" % i for i in range(1, 6)])
        self.assertEqual(h.read_text(d.path(job, "output.txt")),
                         TEXT.upper())
        self.assertNotIn("junk", h.read_text(d.path(job, "chunks",
                                                    "0001.txt")))

    def test_output_symlink_is_not_followed(self):
        d = self.d
        secret = os.path.join(d.root, "secret.txt")
        with open(secret, "w") as f:
            f.write("not for the job\n")
        d.mkjob("ln", {"command": 'ln -s %s "$JOBFS_OUTPUT"; echo from '
                       'stdout' % secret}, "one.\n")
        d.run_job("ln")
        self.assertEqual(h.read_text(d.path("ln", "chunks", "0001.out")),
                         "from stdout\n")
        self.assertEqual(h.read_text(secret), "not for the job\n")

    def test_background_process_of_a_finished_worker_is_killed(self):
        d = self.d
        mark = uuid.uuid4().hex
        d.mkjob("bg", {"command": "sleep 1000 & echo started",
                       "env": {"TW_MARK": mark}}, "one.\n")
        d.run_job("bg")
        self.assertEqual(h.read_text(d.path("bg", "output.out")),
                         "started\n")
        d.wait_until(lambda: not self.workers(mark), 3,
                     "the background sleep to be killed")

    def test_only_fds_0_1_2(self):
        d = self.d
        job = self.job("f", {"TW_FDS": 1}, text="a.\n\nb.\n\nc.\n",
                       parallel=3)
        d.run_job(job)
        for name in d.chunk_names(job):
            body = h.read_text(d.path(job, "chunks", name))
            self.assertTrue(body.endswith("fds: 0 1 2\n"), body)

    def test_stderr_is_bounded(self):
        d = self.d
        job = self.job("e", {"TW_STDERR": 5000000}, text="one.\n")
        d.run_job(job, timeout=30)
        log = h.read_bytes(d.path(job, "logs", "0001.log"))
        self.assertLessEqual(len(log), 70 * 1024)
        self.assertTrue(log.startswith(b"TW-STDERR-FIRST\n"))
        self.assertTrue(log.endswith(b"TW-STDERR-LAST\n"))
        marks = [ln for ln in log.split(b"\n")
                 if ln.startswith(b"[jobfs: ")]
        self.assertEqual(len(marks), 1, log[:200])
        skipped = int(marks[0].split()[1])
        kept = len(log) - len(marks[0]) - 2  # the mark and its newlines
        self.assertEqual(kept + skipped, 5000000)
        self.assertEqual(os.stat(d.path(job, "logs", "0001.log")).st_size,
                         len(log))
        self.assertTrue(d.alive())
        self.assertEqual(h.read_text(d.path(job, "output.out")), "ONE.\n")

    def test_worker_that_never_reads_stdin(self):
        d = self.d
        data = b"abcdefgh" * (12 * 1024 * 1024 // 8)  # 12 MiB
        job = self.job("s", {"TW_NO_STDIN": 1, "TW_SLEEP_MS": 100,
                             "TW_SIZE": 10}, text=data,
                       chunking={"by": "bytes", "max": 10 * 1024 * 1024})
        self.assertEqual(d.sj(job)["chunks"]["total"], 2)
        d.run_job(job, timeout=30)
        self.assertEqual(os.stat(d.path(job, "output.out")).st_size, 20)
        # and one that reads it all, for the bytes
        d.mkjob("s2", h.tw_spec(chunking={"by": "bytes",
                                          "max": 10 * 1024 * 1024}), data)
        d.run_job("s2", timeout=30)
        self.assertEqual(h.read_bytes(d.path("s2", "output.out")),
                         data.upper())

    def test_worker_cwd_is_private_scratch(self):
        d = self.d
        d.mkjob("cwd", {"command": 'pwd; echo "$JOBFS_OUTPUT"; ls -A; '
                        'touch left-behind', "parallel": 2},
                "a.\n\nb.\n")
        d.run_job("cwd")
        dirs = []
        for name in d.chunk_names("cwd"):
            lines = h.read_text(d.path("cwd", "chunks", name)).split("\n")
            cwd, out = lines[0], lines[1]
            self.assertTrue(os.path.isabs(cwd))
            self.assertFalse(cwd.startswith(d.mnt + "/") or cwd == d.mnt,
                             cwd)
            self.assertEqual(os.path.dirname(out), cwd)
            self.assertEqual(lines[2], "", "scratch was not empty: %r" %
                             lines[2:])
            dirs.append(cwd)
        self.assertEqual(len(set(dirs)), 2, "two chunks shared a cwd")
        for cwd in dirs:
            self.assertFalse(os.path.exists(cwd), "%s was left" % cwd)

    def test_scratch_reused_only_when_clean(self):
        """A scratch directory goes to the next attempt only if nothing of
        its attempt is left: every worker must find an empty cwd of mode
        0700, whatever the ones before it did there. The same for the
        stdout file of an output kept inline: every worker must find an
        empty file of mode 0600 with one link."""
        d = self.d
        n = 16
        cmd = ('test -z "$(ls -A)" || { echo "dirty: $(ls -A)" >&2; '
               'exit 9; }; '
               'test "$(stat -c %a .)" = 700 || { echo mode >&2; exit 8; }; '
               'exec 3>&1; '
               'o=$(stat -L -c %a:%h:%s /proc/self/fd/3); exec 3>&-; '
               'test "$o" = 600:1:0 || { echo "stdout $o" >&2; exit 7; }; '
               'pwd; '
               # long enough for the previous chunk's commit to hand its
               # directory back, so that each one is taken two chunks on
               'sleep 0.1; '
               'case $JOBFS_CHUNK in '
               '3|11) touch junk ;; '
               '4) chmod 644 /proc/self/fd/1 ;; '
               '5) mkdir -p deep/er && touch deep/er/x ;; '
               '6) ln -L /proc/self/fd/1 ../../stdout-link-$$ ;; '
               '7) chmod 500 . ;; '
               '9) (sleep 30 > bg.out &) ;; '
               '13) echo out > "$JOBFS_OUTPUT" ;; '
               'esac')
        d.mkjob("scr", {"command": cmd, "attempts": 1},
                "".join("p%d.\n\n" % i for i in range(n)))
        d.run_job("scr", timeout=60)
        sj = d.sj("scr")
        self.assertEqual(sj["chunks"]["done"], n, d.status("scr"))
        dirs = [h.read_text(d.path("scr", "chunks", name)).split("\n")[0]
                for name in d.chunk_names("scr") if name != "0013.out"]
        self.assertEqual(h.read_text(d.path("scr", "chunks", "0013.out")),
                         "out\n")
        if h.pids_cgroup_usable():
            # one attempt at a time: the clean ones hand their directory
            # on, the dirty ones (3, 5, 7, 9, 11) do not
            self.assertLess(len(set(dirs)), n - 1,
                            "no scratch directory was reused")
        else:
            self.assertEqual(len(set(dirs)), n - 1,
                             "reused without a pids cgroup")

    def test_reused_cgroup_gets_its_jobs_max_procs(self):
        """A pids cgroup kept from an attempt of one job and taken by an
        attempt of another has that job's pids.max."""
        if not h.pids_cgroup_usable():
            self.skipTest("no pids cgroup here")
        d = self.d
        # the worker prints its pids cgroup and that cgroup's pids.max,
        # with shell builtins only (max_procs 4 leaves no room to fork)
        cmd = ('c=; u=; while IFS=: read -r n ctl path; do '
               'case ",$ctl," in *,pids,*) c=$path ;; esac; '
               '[ "$n" = 0 ] && u=$path; done < /proc/self/cgroup; '
               'for f in /sys/fs/cgroup/pids$c/pids.max '
               '/sys/fs/cgroup$u/pids.max; do '
               'if [ -r "$f" ]; then read -r m < "$f"; '
               'echo "${c:-$u} $m"; exit 0; fi; done; exit 3')
        text = "".join("p%d.\n\n" % i for i in range(6))
        got = {}
        for job, procs in (("wide", 50), ("narrow", 4), ("wide2", 50)):
            d.mkjob(job, {"command": cmd, "max_procs": procs,
                          "attempts": 1}, text)
            d.run_job(job)
            got[job] = [h.read_text(d.path(job, "chunks", name)).split()
                        for name in d.chunk_names(job)]
            self.assertEqual({m for _, m in got[job]}, {str(procs)},
                             (job, got[job]))
        groups = [g for job in got for g, _ in got[job]]
        self.assertLess(len(set(groups)), len(groups),
                        "no cgroup was reused")
        # the narrow job ran in cgroups the wide one had used
        self.assertTrue({g for g, _ in got["narrow"]} &
                        {g for g, _ in got["wide"]}, got)

    def test_max_output_kills_the_worker(self):
        d = self.d
        self.job("m", {"TW_SIZE": 1000000}, text="one.\n",
                 max_output=1000, attempts=1)
        self.job("m2", {"TW_SIZE": 1000000, "TW_TO_FILE": 1},
                 text="one.\n", max_output=1000, attempts=1)
        self.job("ok", {"TW_SIZE": 1000}, text="one.\n", max_output=1000)
        for job in ("m", "m2"):
            d.run_job(job, state="failed")
            self.assertEqual(self.failed_entry(job, 1)["error"],
                             "output larger than max_output (1000 bytes)")
        d.run_job("ok")
        self.assertEqual(os.stat(d.path("ok", "chunks",
                                        "0001.out")).st_size, 1000)


class WorkerEnv(h.JobfsTestCase):
    daemon_env = {"SECRET_X": "1", "LD_LIBRARY_PATH": "/nonexistent",
                  "JOBFS_CHUNK": "999", "LANG": "C.UTF-8"}

    def test_environment(self):
        d = self.d
        # the spec cannot set what jobfs sets
        os.mkdir(d.path("envjob"))
        self.assertErrno(h.write_file(d.path("envjob", "spec"), json.dumps(
            {"command": ["env"], "env": {"JOBFS_CHUNK": "77"}})),
            errno.EINVAL)
        self.assertIn("JOBFS_CHUNK", d.reason("envjob"))
        d.set_spec("envjob", {"command": ["env"], "env": {"VOICE": "en"},
                              "params": {"model": "small", "n": 2},
                              "ext": "txt"})
        d.set_input("envjob", "a.\n\nb.\n\nc.\n")
        d.run_job("envjob")
        body = h.read_text(d.path("envjob", "chunks", "0002.txt"))
        env = dict(line.split("=", 1) for line in body.splitlines()
                   if "=" in line)
        self.assertEqual(env["JOBFS_JOB"], "envjob")
        self.assertEqual(env["JOBFS_CHUNK"], "2")
        self.assertEqual(env["JOBFS_CHUNKS"], "3")
        self.assertEqual(env["JOBFS_ATTEMPT"], "1")
        self.assertTrue(env["JOBFS_OUTPUT"].endswith("/output.txt"))
        self.assertFalse(env["JOBFS_OUTPUT"].startswith(d.mnt + "/"))
        self.assertEqual(json.loads(env["JOBFS_PARAMS"]),
                         {"model": "small", "n": 2})
        self.assertEqual(env["VOICE"], "en")
        self.assertIn("PATH", env)
        self.assertEqual(env.get("LANG"), "C.UTF-8")  # allow-listed
        self.assertNotIn("SECRET_X", env)
        self.assertNotIn("LD_LIBRARY_PATH", env)
        allowed = {"PATH", "HOME", "LANG", "TZ", "TMPDIR", "USER",
                   "LOGNAME", "VOICE"}
        for key in env:
            self.assertTrue(key in allowed or key.startswith("JOBFS_") or
                            key.startswith("LC_"), "unexpected %s" % key)


if __name__ == "__main__":
    h.main()
