#!/usr/bin/env python3
"""persist_audit.py - the persistence-order audit.

Runs a whole job under `strace -f -y` (daemon and workers) and checks the
order of the calls that make outputs durable:

  A1  every output file is fsynced after its last write and before it is
      renamed into objects/;
  A2  after the rename, objects/xx/ is fsynced before the next LMDB commit
      (the first sync of data.mdb that follows);
  A3  nothing writes to a file under objects/ (a published object never
      changes);
  A4  the LMDB environment keeps its synchronous commits: data.mdb is
      fdatasync'ed (no MDB_NOSYNC), its meta page is written through an
      O_DSYNC descriptor (no MDB_NOMETASYNC), and it is never mapped
      writable (no MDB_WRITEMAP).

  tests/crash/persist_audit.py [--build DIR] [--chunks N]
  tests/crash/persist_audit.py --mutants   # also build the two broken
                                           # builds and show both flagged

The last line reads
  persist-audit: renames=N commits=N violations=N [mutants_flagged=N/2]
and the exit status is 1 when the real build has a violation or a mutant
goes unflagged.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness as h  # noqa: E402

TOP = os.path.normpath(os.path.join(HERE, "..", ".."))
CALLS = ("openat,write,pwrite64,writev,pwritev,fsync,fdatasync,renameat,"
         "renameat2,rename,mmap,msync,sync_file_range")
LINE = re.compile(r"^(\d+)\s+(\w+)\((.*)$")
FDPATH = re.compile(r"^(-?\d+)<([^>]*)>")


def trace_job(jobfs, chunks, root):
    """Run one job under strace; return the trace lines."""
    store, mnt = os.path.join(root, "store"), os.path.join(root, "mnt")
    os.makedirs(mnt)
    out = os.path.join(root, "trace")
    p = subprocess.Popen(["strace", "-f", "-y", "-qq", "-e", "trace=" + CALLS,
                          "-o", out, jobfs, "-f", "--store", store, mnt],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 20
        while not h.mounted_fuse(mnt):
            if time.monotonic() > end or p.poll() is not None:
                raise RuntimeError("jobfs did not mount under strace")
            time.sleep(0.05)
        job = os.path.join(mnt, "j")
        os.mkdir(job)
        h.write_file(os.path.join(job, "spec"), json.dumps(
            {"command": [h.TESTWORKER], "parallel": 2,
             "env": {"TW_SIZE": "20000"}}))
        h.write_file(os.path.join(job, "input"), h.paragraphs(chunks))
        h.write_file(os.path.join(job, "control"), "start\n")
        end = time.monotonic() + 120
        while True:
            st = json.loads(h.read_text(os.path.join(job, "status.json")))
            if st["state"] == "done":
                break
            if time.monotonic() > end:
                raise RuntimeError("the job did not finish: %s" % st)
            time.sleep(0.05)
    finally:
        h.unmount(mnt)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    with open(out, errors="replace") as f:
        return f.read().splitlines()


def calls(lines):
    """(index, pid, name, args) of each call, in the order they started
    (an unfinished call counts where it began)."""
    out = []
    for i, line in enumerate(lines):
        if "resumed>" in line:
            continue
        m = LINE.match(line)
        if m:
            out.append((i, int(m.group(1)), m.group(2), m.group(3)))
    return out


def first_fd_path(args):
    m = FDPATH.match(args)
    return m.group(2) if m else None


def audit(lines):
    """Return (renames, commits, [violations])."""
    v = []
    cs = calls(lines)
    renames, commits = 0, 0
    last_write = {}    # path -> index of the last write to it
    last_fsync = {}    # path -> index of the last fsync of it
    dsync_meta = False
    pending = []       # (index, objdir, name) renamed, dir not yet synced
    dir_synced = {}    # objdir -> index of its last fsync
    data_synced = []   # indexes of data.mdb syncs
    for i, pid, name, args in cs:
        path = first_fd_path(args)
        if name in ("write", "pwrite64", "writev", "pwritev") and path:
            last_write[path] = i
            if "/objects/" in path:
                v.append("A3 write to a published object: %s" % path)
            if path.endswith("/db/data.mdb") and re.search(
                    r"O_DSYNC|O_SYNC", args):
                pass
        elif name in ("fsync", "fdatasync") and path:
            last_fsync[path] = i
            if path.endswith("/db/data.mdb"):
                commits += 1
                data_synced.append(i)
                # A2: every object renamed before this commit must have
                # had its directory synced in between
                for (ri, objdir, obj) in pending:
                    if dir_synced.get(objdir, -1) < ri:
                        v.append("A2 %s renamed, its directory not synced "
                                 "before the LMDB commit" % obj)
                pending = []
            elif "/objects/" in path:
                dir_synced[path] = i
        elif name == "openat" and "data.mdb" in args:
            if "O_DSYNC" in args or "O_SYNC" in args:
                dsync_meta = True
        elif name == "mmap" and "data.mdb" in args and "PROT_WRITE" in args:
            v.append("A4 data.mdb mapped writable (MDB_WRITEMAP)")
        elif name in ("renameat", "renameat2"):
            m = re.match(r"-?\d+<([^>]*)>, \"([^\"]*)\", -?\d+<([^>]*)>, "
                         r"\"([^\"]*)\"", args)
            if not m or "/objects/" not in m.group(3) + "/":
                continue
            src = m.group(1) + "/" + m.group(2)
            renames += 1
            if last_fsync.get(src, -1) < 0:
                v.append("A1 %s renamed into objects/ without an fsync" %
                         src)
            elif last_write.get(src, -1) > last_fsync[src]:
                v.append("A1 %s written after its fsync" % src)
            pending.append((i, m.group(3), m.group(4)))
    # renames still pending must at least be followed by a commit: a job
    # that finished committed them all
    for (ri, objdir, obj) in pending:
        v.append("A2 %s renamed, no LMDB commit (fdatasync of data.mdb) "
                 "follows" % obj)
    if not data_synced:
        v.append("A4 data.mdb is never fdatasync'ed (MDB_NOSYNC?)")
    if not dsync_meta:
        v.append("A4 data.mdb has no O_DSYNC descriptor for its meta page "
                 "(MDB_NOMETASYNC?)")
    return renames, commits, v


def run(build, chunks):
    root = tempfile.mkdtemp(prefix="jobfs-audit-", dir="/tmp")
    try:
        lines = trace_job(os.path.join(build, "jobfs"), chunks, root)
        return audit(lines)
    finally:
        shutil.rmtree(root, True)


def mutant_build(name):
    d = os.path.join(TOP, "build-mutant-" + name)
    if not os.path.exists(os.path.join(d, "build.ninja")):
        subprocess.run(["meson", "setup", d, "-Dmutants=" + name],
                       cwd=TOP, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["ninja", "-C", d, "jobfs"], check=True,
                   stdout=subprocess.DEVNULL)
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(TOP, "build"))
    ap.add_argument("--chunks", type=int, default=20)
    ap.add_argument("--mutants", action="store_true")
    a = ap.parse_args()
    if not shutil.which("strace"):
        print("persist-audit: strace is not installed")
        print("persist-audit: renames=0 commits=0 violations=1")
        return 1
    renames, commits, v = run(a.build, a.chunks)
    for x in v[:20]:
        print("persist-audit: violation: %s" % x)
    tail = ""
    flagged = 0
    if a.mutants:
        for name in ("no_output_fsync", "nosync"):
            _, _, mv = run(mutant_build(name), min(a.chunks, 8))
            print("persist-audit: mutant %s: %d violations%s" %
                  (name, len(mv), (" (first: %s)" % mv[0]) if mv else ""))
            flagged += bool(mv)
        tail = " mutants_flagged=%d/2" % flagged
    ok = not v and renames >= a.chunks and (not a.mutants or flagged == 2)
    print("persist-audit: renames=%d commits=%d violations=%d%s" %
          (renames, commits, len(v), tail))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
