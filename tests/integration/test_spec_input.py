#!/usr/bin/env python3
"""test_spec_input.py - spec and input writes: bad specs are refused and
leave the old one in force, writes while running are refused, job names
are checked, and a re-plan reuses exactly the chunks whose identity (text,
command, params) is unchanged."""

import errno
import json
import os
import re
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

GOOD = {"command": "tr a-z A-Z", "attempts": 2}


class Spec(h.JobfsTestCase):

    def spec_refused(self, job, text, reason, pieces=None):
        """Write text as the whole spec: it must fail with EINVAL at a
        write or at close, the old spec must stay in force, and status
        must give reason."""
        d = self.d
        old = h.read_bytes(d.path(job, "spec"))
        rc = h.write_file(d.path(job, "spec"), text, pieces=pieces)
        self.assertErrno(rc, errno.EINVAL, "for spec %r" % text)
        self.assertEqual(h.read_bytes(d.path(job, "spec")), old)
        self.assertEqual(os.stat(d.path(job, "spec")).st_size, len(old))
        self.assertEqual(d.manifest(job)["command"], GOOD["command"])
        status = d.status(job)
        self.assertRegex(status, r"(?m)^rejected .*%s" % reason_re(reason))
        self.assertIn(reason, d.sj(job)["last_rejected"]["reason"])

    def test_bad_specs_keep_the_old_one(self):
        d = self.d
        d.mkjob("s", GOOD, h.paragraphs(3))
        self.spec_refused("s", '{"command": "x", "atempts": 3}\n',
                          "unknown key 'atempts' (did you mean "
                          "'attempts'?)")
        self.spec_refused("s", '{"command": "x", "parallel": "2"}\n',
                          "'parallel'")
        self.spec_refused("s", '{"command": "x", "attempts": [3]}',
                          "'attempts'")
        self.spec_refused("s", '{"command": 42}', "'command'")
        self.spec_refused("s", '{"command": "x",\n "parallel": 2,,}\n',
                          "line 2")
        self.spec_refused("s", '{"command": "x"', "spec")
        self.spec_refused("s", "\n", "spec")
        self.spec_refused("s", "[1, 2]", "spec")
        # a bad spec sent in small writes: refused all the same
        self.spec_refused("s", '{"command": "x", "atempts": 3}\n',
                          "unknown key 'atempts'", pieces=5)
        # and the job still runs with the old spec
        d.run_job("s")
        self.assertEqual(h.read_text(d.path("s", "output.out")),
                         h.paragraphs(3).upper())

    def test_empty_spec_keeps_the_old_one(self):
        # ": > spec" opens with O_TRUNC and writes nothing: no write(2) can
        # fail, and close may not be able to report it either; the old
        # spec must stay and status must say why.
        d = self.d
        d.mkjob("e", GOOD, h.paragraphs(2))
        old = h.read_bytes(d.path("e", "spec"))
        subprocess.run(["sh", "-c", ": > e/spec"], cwd=d.mnt,
                       stderr=subprocess.DEVNULL)
        self.assertEqual(h.read_bytes(d.path("e", "spec")), old)
        self.assertEqual(d.manifest("e")["command"], GOOD["command"])
        self.assertRegex(d.status("e"), r"(?m)^rejected .*spec")
        # truncate(2) on the path: nothing is open, so it can fail
        self.assertErrno(h.errno_of(os.truncate, d.path("e", "spec"), 0),
                         errno.EINVAL)
        self.assertEqual(h.read_bytes(d.path("e", "spec")), old)

    def test_good_spec_replaces_and_clears_rejection(self):
        d = self.d
        d.mkjob("g", GOOD, h.paragraphs(2))
        self.spec_refused("g", '{"atempts": 1}', "unknown key")
        new = {"command": "tr a-z A-Z", "parallel": 2}
        self.assertEqual(h.write_file(d.path("g", "spec"),
                                      json.dumps(new)), 0)
        self.assertEqual(json.loads(h.read_bytes(d.path("g", "spec"))), new)
        self.assertIsNone(d.sj("g")["last_rejected"])
        self.assertNotRegex(d.status("g"), r"(?m)^rejected")

    def test_writes_refused_while_running(self):
        d = self.d
        d.mkjob("r", h.tw_spec({"TW_HANG": 1}), h.paragraphs(3))
        d.do("r", "resume")
        d.wait_until(lambda: d.sj("r")["chunks"]["running"] == 1, 5,
                     "a running chunk")
        spec0 = h.read_bytes(d.path("r", "spec"))
        input0 = h.read_bytes(d.path("r", "input"))
        self.assertErrno(h.write_file(d.path("r", "spec"),
                                      json.dumps(GOOD)), errno.EBUSY)
        self.assertIn("spec refused", d.reason("r"))
        self.assertErrno(h.write_file(d.path("r", "input"), "other\n"),
                         errno.EBUSY)
        self.assertIn("input refused", d.reason("r"))
        self.assertErrno(h.write_file(d.path("r", "input"), "more\n",
                                      flags=os.O_WRONLY | os.O_APPEND),
                         errno.EBUSY)
        self.assertErrno(h.errno_of(os.truncate, d.path("r", "input"), 0),
                         errno.EBUSY)
        self.assertRegex(d.status("r"), r"(?m)^rejected .*refused")
        self.assertEqual(h.read_bytes(d.path("r", "spec")), spec0)
        self.assertEqual(h.read_bytes(d.path("r", "input")), input0)
        self.assertEqual(d.sj("r")["state"], "running")
        d.do("r", "cancel")
        d.wait_for("r", "stopped", 5)
        # stopped: writes are allowed again
        self.assertEqual(h.write_file(d.path("r", "input"), "other\n"), 0)
        self.assertEqual(h.read_bytes(d.path("r", "input")), b"other\n")

    def test_oversized_spec_is_refused_with_its_reason(self):
        d = self.d
        d.mkjob("big", GOOD, h.paragraphs(2))
        old = h.read_bytes(d.path("big", "spec"))
        text = json.dumps({"command": "x", "env": {"PAD": "x" * 70000}})
        rc = h.write_file(d.path("big", "spec"), text)
        self.assertErrno(rc, (errno.EFBIG, errno.EINVAL))
        self.assertEqual(h.read_bytes(d.path("big", "spec")), old)
        # the reason names the limit, not some later, unrelated check
        self.assertIn("65536", d.reason("big"))

    def test_empty_input_by_open_truncate(self):
        # ": > input" and cp /dev/null input: open(O_TRUNC), close
        d = self.d
        d.mkjob("ei", GOOD, h.paragraphs(3))
        self.assertEqual(h.write_file(d.path("ei", "input"), b""), 0)
        self.check_empty_input("ei")

    def test_empty_input_by_truncate(self):
        d = self.d
        d.mkjob("et", GOOD, h.paragraphs(3))
        self.assertEqual(h.errno_of(os.truncate, d.path("et", "input"), 0),
                         0)
        self.check_empty_input("et")

    def check_empty_input(self, job):
        """The job's input is now empty, everywhere, and stays so across a
        remount; a new input then works."""
        d = self.d
        empty_sha = ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495"
                     "991b7852b855")
        time.sleep(0.3)  # release, which commits it, runs after close
        rc = h.errno_of(h.read_bytes, d.path(job, "input"))
        self.assertEqual(rc, 0, "cat input fails with %s after emptying "
                         "it; manifest input: %s" %
                         (h.errname(rc), d.manifest(job)["input"]))
        self.assertEqual(h.read_bytes(d.path(job, "input")), b"")
        self.assertEqual(os.stat(d.path(job, "input")).st_size, 0)
        m = d.manifest(job)
        self.assertEqual(m["input"]["sha256"], empty_sha)
        self.assertEqual(m["chunk_count"], 0)
        self.assertEqual(d.sj(job)["chunks"]["total"], 0)
        # what the store holds agrees, after a remount too
        d.stop(keep_dirs=True)
        d2 = self.new_daemon(store=d.store, mnt=d.mnt)
        self.assertEqual(h.read_bytes(d2.path(job, "input")), b"")
        self.assertEqual(d2.sj(job)["chunks"]["total"], 0)
        d2.set_input(job, "fresh text.\n")
        d2.run_job(job)
        self.assertEqual(h.read_text(d2.path(job, "output.out")),
                         "FRESH TEXT.\n")

    def test_job_names(self):
        d = self.d
        bad = [".hidden", "..x", ".jobfs", "a" * 65, "with space",
               "caf\u00e9", "tab\there", "new\nline", "cr\rx", "esc\x1b[0m",
               "del\x7f", "nul\x01", "semi;colon", "star*", "a:b", "q?",
               "back\\slash", "-dash", "-", "--rf", "-n"]
        for name in bad:
            self.assertErrno(h.errno_of(os.mkdir, d.path(name)),
                             errno.EINVAL, "for mkdir %r" % name)
        # bytes that are not UTF-8
        for name in (b"\xff", b"ok\xc3", b"\xc0\xaf", b"a\xed\xa0\x80"):
            path = os.fsencode(d.mnt) + b"/" + name
            self.assertErrno(h.errno_of(os.mkdir, path), errno.EINVAL,
                             "for mkdir %r" % name)
        # long names, past NAME_MAX and FUSE's 1024 too, reach jobfs's
        # lookup and get its EINVAL
        for n in (255, 256, 1024, 1025, 3000):
            self.assertErrno(h.errno_of(os.mkdir, d.path("b" * n)),
                             errno.EINVAL, "for a %d-byte name" % n)
        # a '/' makes a path: its first part is not a job
        self.assertErrno(h.errno_of(os.mkdir, d.path("x/y")), errno.ENOENT)
        # "." and ".." never reach the filesystem: the kernel answers
        for name in (".", ".."):
            self.assertErrno(h.errno_of(os.mkdir, d.path(name)),
                             (errno.EEXIST, errno.EINVAL),
                             "for mkdir %r" % name)
        self.assertEqual(os.listdir(d.mnt), [])
        good = ["a", "A-Z_0.9", "x" * 64, "ch1", "v1.2", "dash-", "_u",
                "9", "a..b"]
        for name in good:
            os.mkdir(d.path(name))
        self.assertEqual(sorted(os.listdir(d.mnt)), sorted(good))
        self.assertErrno(h.errno_of(os.mkdir, d.path("a")), errno.EEXIST)
        self.assertErrno(h.errno_of(os.mkdir, d.path("a", "sub")),
                         (errno.EPERM, errno.EACCES))
        # nothing refused reached the store: a new daemon lists the same
        d.stop(keep_dirs=True)
        d2 = self.new_daemon(store=d.store, mnt=d.mnt)
        self.assertEqual(sorted(os.listdir(d2.mnt)), sorted(good))


class InputLimit(h.JobfsTestCase):
    daemon_args = ("--max-input=1000",)

    def refused_input(self, pieces):
        d = self.d
        text = h.paragraphs(3)
        d.mkjob("lim", GOOD, text)
        rc = h.write_file(d.path("lim", "input"), "x" * 2000,
                          pieces=pieces)
        self.assertErrno(rc, errno.EFBIG)
        time.sleep(0.3)  # release runs after close returns
        rc = h.errno_of(h.read_bytes, d.path("lim", "input"))
        self.assertEqual(rc, 0, "cat input fails with %s after a refused "
                         "write" % h.errname(rc))
        got = h.read_text(d.path("lim", "input"))
        self.assertEqual(got, text, "a refused input replaced the old one "
                         "with %d bytes" % len(got))
        self.assertEqual(d.manifest("lim")["input"]["length"], len(text))
        d.run_job("lim")
        self.assertEqual(h.read_text(d.path("lim", "output.out")),
                         text.upper())

    def test_input_refused_at_first_write_keeps_the_old_one(self):
        self.refused_input(None)

    def test_input_refused_at_a_later_write_keeps_the_old_one(self):
        self.refused_input(800)

    def test_input_at_the_limit(self):
        d = self.d
        d.mkjob("lim", GOOD, "x.\n")
        # exactly the limit is fine
        self.assertEqual(h.write_file(d.path("lim", "input"),
                                      "y" * 999 + "\n"), 0)
        self.assertEqual(os.stat(d.path("lim", "input")).st_size, 1000)


def reason_re(text):
    return re.escape(text)


class Replan(h.JobfsTestCase):
    N = 21

    def run_21(self, spec):
        d = self.d
        self.text = h.paragraphs(self.N)
        d.mkjob("re", spec, self.text)
        d.run_job("re", timeout=30)
        return d.events("re")

    def replan_and_run(self, spec=None, text=None):
        """Write a new spec and/or input; return (plan, status.json after
        the re-plan, events of the run that follows)."""
        d = self.d
        before = len(d.events("re"))
        if spec is not None:
            d.set_spec("re", spec)
        if text is not None:
            self.assertEqual(h.write_file(d.path("re", "input"), text), 0)
        sj = d.sj("re")
        planned = h.chunk_events(d.events("re")[before:], "planned")
        self.assertEqual(len(planned), 1)
        mid = len(d.events("re"))
        d.run_job("re", timeout=30)
        return planned[0], sj, d.events("re")[before:mid], \
            d.events("re")[mid:]

    def test_edit_one_paragraph_reruns_it_only(self):
        d = self.d
        self.run_21(h.tw_spec(parallel=3))
        paras = self.text.split("\n\n")
        paras[10] = "This paragraph was edited."
        text = "\n\n".join(paras)
        plan, sj, replan_evs, run_evs = self.replan_and_run(text=text)
        self.assertEqual((plan["chunks"], plan["reused"], plan["to_run"],
                          plan["new_text"], plan["changed"]),
                         (21, 20, 1, 1, 0))
        self.assertEqual(sj["plan"], {"chunks": 21, "reused": 20,
                                      "new_text": 1, "changed": 0})
        self.assertEqual(sj["chunks"]["done"], 20)
        self.assertEqual(sj["chunks"]["reused"], 20)
        self.assertIn("plan     21 chunks: 20 reused, 1 to run (1 new "
                      "text, 0 command or params changed)", d.status("re"))
        reused = sorted(e["chunk"] for e in
                        h.chunk_events(replan_evs, "reused"))
        self.assertEqual(reused, [n for n in range(1, 22) if n != 11])
        self.assertEqual([e["chunk"] for e in
                          h.chunk_events(run_evs, "started")], [11])
        self.assertEqual(h.read_text(d.path("re", "output.out")),
                         text.upper())
        m = d.manifest("re")
        self.assertEqual([c["reused"] for c in m["chunks"]],
                         [n != 11 for n in range(1, 22)])

    def test_command_change_reruns_all(self):
        d = self.d
        self.run_21(h.tw_spec(parallel=3))
        plan, sj, replan_evs, run_evs = self.replan_and_run(
            spec={"command": "tr a-z A-Z", "parallel": 3})
        self.assertEqual((plan["reused"], plan["to_run"], plan["changed"],
                          plan["new_text"]), (0, 21, 21, 0))
        self.assertEqual(sj["plan"]["changed"], 21)
        self.assertEqual(sj["chunks"]["done"], 0)
        self.assertIn("21 command or params changed", d.status("re"))
        self.assertEqual(h.chunk_events(replan_evs, "reused"), [])
        self.assertEqual(sorted(e["chunk"] for e in
                                h.chunk_events(run_evs, "started")),
                         list(range(1, 22)))
        self.assertEqual(h.read_text(d.path("re", "output.out")),
                         self.text.upper())

    def test_params_change_reruns_all(self):
        d = self.d
        self.run_21(h.tw_spec(parallel=3, params={"voice": "a"}))
        plan, sj, _, run_evs = self.replan_and_run(
            spec=h.tw_spec(parallel=3, params={"voice": "b"}))
        self.assertEqual((plan["reused"], plan["changed"]), (0, 21))
        self.assertEqual(len(h.chunk_events(run_evs, "started")), 21)
        # a spec change outside the identity (parallel, env) reuses all
        plan, sj, _, run_evs = self.replan_and_run(
            spec=h.tw_spec(parallel=2, params={"voice": "b"},
                           env={"UNRELATED": "1"}))
        self.assertEqual((plan["reused"], plan["to_run"]), (21, 0))
        self.assertEqual(h.chunk_events(run_evs, "started"), [])
        self.assertEqual(sj["state"], "done")


if __name__ == "__main__":
    h.main()
