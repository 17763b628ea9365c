#!/usr/bin/env python3
"""test_access.py - nobody but the user who mounted jobfs can change
anything (writing a spec or a verb runs code as that user).

Each operation is tried as another uid (setpriv --reuid=65534
--regid=65534 --clear-groups): with the default mount, others cannot even
look; with -o allow_other they can read, and every mutating operation fails
with EACCES, while the owner's all succeed. The mount is always nosuid,
nodev."""

import os
import shutil
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def as_nobody(*cmd, stdin=None):
    """Run a shell command as uid 65534; its exit status and stderr."""
    r = subprocess.run(NOBODY + ["sh", "-c", " ".join(cmd)],
                       input=stdin, capture_output=True, text=True,
                       timeout=30)
    return r.returncode, r.stderr


class Access(h.JobfsTestCase):

    def setUp(self):
        self.assertTrue(shutil.which("setpriv"), "setpriv is not installed")
        self.assertEqual(os.getuid(), 0, "these tests switch uid: run as root")
        super().setUp()

    def open_up(self, d):
        # let uid 65534 reach the mountpoint at all (jobfs's root reports
        # mode 0755 itself)
        os.chmod(d.root, 0o755)

    def prepare(self, d):
        d.mkjob("j", {"command": ["cat"]}, h.paragraphs(3))
        d.run_job("j")

    def mutations(self, d):
        """Every mutating operation, as shell commands for another uid."""
        j = d.path("j")
        return {
            "mkdir": "mkdir %s" % d.path("new"),
            "rmdir": "rmdir %s" % j,
            "spec": "echo '{\"command\": \"id\"}' > %s/spec" % j,
            "input": "echo text > %s/input" % j,
            "truncate input": "truncate -s 0 %s/input" % j,
            "control": "echo reset > %s/control" % j,
            "rm chunk": "rm -f %s/chunks/0001.out" % j,
        }

    def test_mount_options(self):
        with open("/proc/self/mounts") as f:
            line = [l for l in f if (" %s " % self.d.mnt) in l][0]
        opts = line.split()[3].split(",")
        self.assertIn("nosuid", opts)
        self.assertIn("nodev", opts)

    def test_default_mount_shuts_others_out(self):
        d = self.d
        self.open_up(d)
        self.prepare(d)
        rc, err = as_nobody("ls", d.mnt)
        self.assertNotEqual(rc, 0)
        self.assertIn("Permission denied", err)
        rc, err = as_nobody("cat", d.path("j", "status"))
        self.assertNotEqual(rc, 0)
        done = 0
        for what, cmd in self.mutations(d).items():
            rc, err = as_nobody(cmd)
            done += rc == 0
        self.assertEqual(done, 0)
        # and nothing changed
        self.assertEqual(d.sj("j")["state"], "done")
        self.assertEqual(sorted(os.listdir(d.mnt)), ["j"])

    def test_allow_other_reads_but_never_writes(self):
        d = self.new_daemon(args=["-o", "allow_other"])
        self.open_up(d)
        self.prepare(d)
        with open("/proc/self/mounts") as f:
            line = [l for l in f if (" %s " % d.mnt) in l][0]
        self.assertIn("default_permissions", line.split()[3])
        for cmd in ("ls %s" % d.mnt, "cat %s/status" % d.path("j"),
                    "cat %s/output.out" % d.path("j")):
            rc, err = as_nobody(cmd)
            self.assertEqual(rc, 0, "%s: %s" % (cmd, err))
        succeeded = []
        for what, cmd in self.mutations(d).items():
            rc, err = as_nobody(cmd)
            if rc == 0:
                succeeded.append(what)
            else:
                self.assertIn("Permission denied", err, what)
        self.assertEqual(succeeded, [])
        self.assertEqual(d.sj("j")["state"], "done")
        self.assertEqual(len(os.listdir(d.path("j", "chunks"))), 3)
        # the owner's operations all succeed
        for what, cmd in self.mutations(d).items():
            if what == "rmdir":
                continue
            r = subprocess.run(["sh", "-c", cmd], capture_output=True,
                               text=True, timeout=30)
            self.assertEqual(r.returncode, 0, "%s: %s" % (what, r.stderr))
        r = subprocess.run(["rmdir", d.path("j")], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)


if __name__ == "__main__":
    h.main()
