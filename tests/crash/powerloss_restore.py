#!/usr/bin/env python3
"""powerloss_restore.py - the restore step of the power-loss suite.

    tests/crash/powerloss_restore.py ROOT DIR [--dry-run] [--verbose]

Reads the journal that the fault layer (tests/crash/powerloss.c, loaded
into the jobfs daemon with POWERLOSS_ROOT=ROOT and POWERLOSS_DIR=DIR) wrote,
and takes back, newest first, every change under ROOT that was not durable
when the daemon was killed: the store is left as a power loss at that
instant could have left it. Run it only once the daemon and every process
it started are gone, and only once per journal.

The model is the layer's (M1-M4 in powerloss.c, docs/reliability.md):

  R1  content, per file (inode): the changes recorded after the last
      fsync/fdatasync of that file (or sync/syncfs) that returned are
      undone newest first, each by writing back the old bytes and size it
      recorded; a write through an O_DSYNC descriptor stays, and the bytes
      it wrote are never overwritten by the undo of an older change. A file
      created in the journal and never fsynced since is cut to length 0
      (its writers, the workers, were not watched). So is a file a worker
      made in a directory created in the journal, renamed out of it by the
      daemon (JOBFS_OUTPUT) and never fsynced.
  R2  names, newest first: a create, mkdir, rmdir, unlink or link that has
      no fsync of its directory after it (after its DONE record) is undone;
      a rename is undone unless its destination directory was fsynced
      after it. Undoing a mkdir takes the directory away with everything
      still in it, even entries whose own change was durable (they are
      reported: that is how a missing fsync of a parent shows).
  R3  the source side of a rename: a rename made durable by an fsync of
      its destination directory is durable as a whole (the old name is
      gone too). POSIX says nothing about it; ext4, XFS and btrfs commit a
      rename as one journal transaction, so the file is never lost, but a
      stricter model could keep the old name as a second link when the
      source directory was not fsynced. Every rename jobfs makes starts in
      tmp/ or scratch/, which a daemon empties before anything else at
      start, so such a second link could not change what is checked; the
      restore does not make it.
  R4  a change with no DONE record (the kill fell inside the call) is
      judged by what is on disk: it happened if its result is there. It
      cannot be durable: no sync of its directory came after it.
  R5  a name change whose names are all in tmp/ or scratch/ (a worker's
      output renamed beside its stdout file, a temp file made, pooled or
      removed) is left as it is: a daemon empties both before it reads
      anything there, and jobfs-check only counts them. Its content is
      still undone through the inode (R1), and a rename out of tmp/ into
      objects/ is a name change like any other. The names there are
      reused (pooled scratch directories and stdout files), and the
      workers' own creates are not watched, so undoing them in order
      would meet names the journal cannot account for.

Content is restored through the inode: each file is found by walking ROOT
and DIR/links (the unlinked victims saved there), so undoing bytes does
not depend on where the names are. Names are then undone in reverse
order. Files and directories taken away go to DIR/lost/ for inspection.

The last line reads
  restore: records=N undone=N kept=N cascades=N conflicts=N notes=N
           torn_tail=0|1
and the exit status is 1 if the journal holds a NOTE (a call the model
cannot follow) or an undo met a conflict (something else in its way); 0
otherwise.
"""

import argparse
import bisect
import collections
import os
import stat
import struct
import sys

sys.dont_write_bytecode = True

MAGIC = 0x314c5750
HDR = struct.Struct("<IIHHiQiI" + "QQ" * 4 + "qQqq" + "IIII")
assert HDR.size == 144

(START, WRITE, TRUNC, SYNC, SYNCALL, CREATE, MKDIR, RMDIR, UNLINK, RENAME,
 LINK, DONE, NOTE) = range(1, 14)
NAMES = {START: "start", WRITE: "write", TRUNC: "truncate", SYNC: "sync",
         SYNCALL: "syncall", CREATE: "create", MKDIR: "mkdir",
         RMDIR: "rmdir", UNLINK: "unlink", RENAME: "rename", LINK: "link",
         DONE: "done", NOTE: "note"}
F_DSYNC, F_DIR, F_DATA, F_SAVED, F_VICTIM, F_VICTIM_DIR, F_APPEND, \
    F_SYMLINK = 1, 2, 4, 8, 16, 32, 64, 128
IGNORED = ("lock", "db/lock.mdb")  # not watched (powerloss.c)
TEMP_DIRS = ("tmp", "scratch")  # emptied by every start (R5)
NAME_OPS = (CREATE, MKDIR, RMDIR, UNLINK, RENAME, LINK)
# a synthetic content record: "the content of this file is lost until it
# is fsynced" (R1), placed where the file was created or renamed out of a
# worker's directory
LOSE = 100


class Rec:
    __slots__ = ("idx", "type", "flags", "tid", "id", "err", "mode", "obj",
                 "parent", "parent2", "victim", "off", "count", "oldsize",
                 "newsize", "p1", "p2", "p3", "data", "done", "pos",
                 "happened", "result", "why")

    def __repr__(self):
        return "<%s #%d %s>" % (NAMES.get(self.type, self.type), self.idx,
                                self.p1)


def parse(path):
    """The records of a journal, and whether it ends in a torn record."""
    with open(path, "rb") as f:
        buf = f.read()
    recs, at, torn = [], 0, False
    while at < len(buf):
        if len(buf) - at < HDR.size:
            torn = True
            break
        (magic, size, typ, flags, tid, rid, err, mode, od, oi, pd, pi, qd,
         qi, vd, vi, off, count, oldsize, newsize, l1, l2, l3,
         dl) = HDR.unpack_from(buf, at)
        if magic != MAGIC or size < HDR.size or at + size > len(buf) or \
                HDR.size + l1 + l2 + l3 + dl > size:
            torn = True
            break
        r = Rec()
        r.idx, r.type, r.flags, r.tid, r.id = len(recs), typ, flags, tid, rid
        r.err, r.mode = err, mode
        r.obj, r.parent, r.parent2, r.victim = (od, oi), (pd, pi), \
            (qd, qi), (vd, vi)
        r.off, r.count, r.oldsize, r.newsize = off, count, oldsize, newsize
        p = at + HDR.size
        r.p1 = buf[p:p + l1].decode(errors="surrogateescape")
        p += l1
        r.p2 = buf[p:p + l2].decode(errors="surrogateescape")
        p += l2
        r.p3 = buf[p:p + l3].decode(errors="surrogateescape")
        p += l3
        r.data = buf[p:p + dl]
        r.done = None
        r.pos = r.idx
        r.happened = None
        r.result = None
        r.why = ""
        recs.append(r)
        at += size
    return recs, torn


def ident(st):
    return (st.st_dev, st.st_ino)


def lstat_ident(path):
    try:
        return ident(os.lstat(path))
    except OSError:
        return None


def uncovered(a, b, covered):
    """The parts of [a, b) outside every (s, e) in covered."""
    parts = [(a, b)]
    for s, e in covered:
        nxt = []
        for x, y in parts:
            if e <= x or s >= y:
                nxt.append((x, y))
                continue
            if x < s:
                nxt.append((x, s))
            if e < y:
                nxt.append((e, y))
        parts = nxt
    return parts


class Restore:
    """One journal, analysed, then applied to the filesystem."""

    def __init__(self, root, pldir, dry_run=False, log=None):
        self.root = os.path.realpath(root)
        self.dir = os.path.realpath(pldir)
        self.dry = dry_run
        self.log = log or (lambda s: None)
        self.recs, self.torn = parse(os.path.join(self.dir, "journal"))
        self.undone = collections.Counter()
        self.kept = collections.Counter()
        self.cascades = []      # durable entries lost with their directory
        self.conflicts = []
        self.notes = []
        self.actions = []       # (kind, relative path, text)
        self.lost_n = 0
        self.same = {}          # inode of a directory an undone rmdir
                                # made again -> the inode it had
        self.kept_paths = set()  # names whose change was durable

    def rel(self, path):
        if path == self.root:
            return "."
        if path.startswith(self.root + "/"):
            return path[len(self.root) + 1:]
        return path

    def act(self, kind, path, text):
        self.actions.append((kind, self.rel(path), text))
        self.log("restore: %s %s: %s" % (kind, self.rel(path), text))

    # -- analysis --

    def analyse(self):
        recs = self.recs
        byid = {}
        self.syncs = collections.defaultdict(list)
        self.syncall = []
        self.rmdirs = collections.defaultdict(list)
        for r in recs:
            if r.type in NAME_OPS:
                byid[r.id] = r
            elif r.type == DONE and r.id in byid:
                op = byid[r.id]
                op.done = r
                op.pos = r.idx
            elif r.type == SYNC:
                self.syncs[r.obj].append(r.idx)
            elif r.type == SYNCALL:
                self.syncall.append(r.idx)
            elif r.type == NOTE:
                self.notes.append("%s: %s" % (self.rel(r.p1), r.p2))
        for r in recs:
            if r.type not in NAME_OPS:
                continue
            if r.done is not None:
                r.happened = r.done.err == 0
                r.result = r.done.obj if r.done.obj != (0, 0) else r.obj
            else:
                r.happened, r.result = self.infer(r)
            if r.happened and r.type == RMDIR:
                self.rmdirs[r.obj].append(r.pos)

    def infer(self, r):
        """R4: did a change cut by the kill happen? (and its inode)"""
        now = lstat_ident(r.p1)
        if r.type in (CREATE, MKDIR):
            return now is not None, now
        if r.type == LINK:
            ok = now is not None and (r.flags & F_SYMLINK or now == r.obj)
            return ok, now
        if r.type == UNLINK:
            return now != r.obj, r.obj
        if r.type == RMDIR:
            return now is None, r.obj
        if r.type == RENAME:
            dst = lstat_ident(r.p2)
            return dst == r.obj and now != r.obj, r.obj
        return False, None

    def synced_after(self, obj, pos, is_dir=False):
        """Did an fsync of obj (or a sync) return after record pos? For a
        directory, one removed in between is not the same directory."""
        i = bisect.bisect_right(self.syncall, pos)
        if i < len(self.syncall):
            return True
        lst = self.syncs.get(obj, ())
        i = bisect.bisect_right(lst, pos)
        if i >= len(lst):
            return False
        if is_dir:
            gone = [p for p in self.rmdirs.get(obj, ()) if p > pos]
            return not gone or lst[i] < min(gone)
        return True

    def name_durable(self, r):
        if r.done is None:
            return False
        parent = r.parent2 if r.type == RENAME else r.parent
        return self.synced_after(parent, r.pos, True)

    # -- R1: content --

    def content_records(self):
        """Per inode, its content records in journal order, with the
        synthetic LOSE records of R1."""
        per = collections.defaultdict(list)
        made_dirs = set()
        created = set()
        for r in self.recs:
            if r.type in (WRITE, TRUNC):
                per[r.obj].append(r)
            elif r.type == MKDIR and r.happened and r.result:
                made_dirs.add(r.result)
            elif r.type == CREATE and r.happened and r.result:
                created.add(r.result)
                per[r.result].append(self.lose(r, r.result,
                                               "created as %s" %
                                               self.rel(r.p1)))
            elif r.type == RENAME and r.happened and \
                    r.parent in made_dirs and r.obj not in created:
                # a worker's JOBFS_OUTPUT file, made where nothing watched
                created.add(r.obj)
                per[r.obj].append(self.lose(r, r.obj,
                                            "written by a worker as %s" %
                                            self.rel(r.p1)))
        return per

    def lose(self, r, obj, why):
        x = Rec()
        x.idx, x.pos, x.type, x.flags, x.obj = r.idx, r.pos, LOSE, 0, obj
        x.why = why
        x.off = x.count = x.oldsize = x.newsize = 0
        x.data = b""
        return x

    def inode_paths(self):
        found = {}
        for top in (self.root, os.path.join(self.dir, "links")):
            for d, dirs, files in os.walk(top):
                for name in files:
                    p = os.path.join(d, name)
                    try:
                        st = os.lstat(p)
                    except OSError:
                        continue
                    if stat.S_ISREG(st.st_mode):
                        found.setdefault(ident(st), p)
        return found

    def undo_content(self):
        per = self.content_records()
        paths = self.inode_paths()
        for obj, recs in per.items():
            path = paths.get(obj)
            durable_ranges = []
            todo = []
            for r in reversed(recs):
                if r.type == WRITE and r.flags & F_DSYNC:
                    durable_ranges.append((r.off, r.off + r.count))
                    self.kept["write"] += 1
                    continue
                if self.synced_after(obj, r.pos):
                    break  # this one and all before it are durable
                todo.append((r, list(durable_ranges)))
            if todo and path is not None:
                # (with no name left, nothing can see its bytes again)
                self.apply_content(path, todo)

    def apply_content(self, path, todo):
        """Undo the changes in todo (newest first) on the file at path."""
        fd = -1 if self.dry else os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        writes = truncs = 0
        try:
            for r, cover in todo:
                dur_end = max((e for s, e in cover), default=0)
                if r.type == WRITE:
                    self.undone["write"] += 1
                    writes += 1
                    for a, b in uncovered(r.off, r.off + len(r.data), cover):
                        if fd >= 0:
                            os.pwrite(fd, r.data[a - r.off:b - r.off], a)
                    if r.off + r.count > r.oldsize:
                        self.cut(fd, max(r.oldsize, dur_end))
                elif r.type == TRUNC:
                    self.undone["truncate"] += 1
                    truncs += 1
                    if r.newsize < r.oldsize:
                        if fd >= 0:
                            os.ftruncate(fd, r.oldsize)
                        for a, b in uncovered(r.off, r.off + len(r.data),
                                              cover):
                            if fd >= 0:
                                os.pwrite(fd, r.data[a - r.off:b - r.off],
                                          a)
                    else:
                        self.cut(fd, max(r.oldsize, dur_end))
                else:  # LOSE
                    self.undone["content lost"] += 1
                    size = os.fstat(fd).st_size if fd >= 0 else -1
                    self.cut(fd, dur_end)
                    for a, b in uncovered(0, dur_end, cover):
                        if fd >= 0:
                            os.pwrite(fd, bytes(b - a), a)
                    self.act("content-lost", path,
                             "%s bytes not durable (%s, never fsynced)" %
                             (size if size >= 0 else "all", r.why))
        finally:
            if fd >= 0:
                os.close(fd)
        if writes or truncs:
            self.act("writes-undone", path, "%d writes and %d size changes "
                     "(no fsync of the file after them)" % (writes, truncs))

    def cut(self, fd, size):
        if fd >= 0 and os.fstat(fd).st_size > size:
            os.ftruncate(fd, size)

    # -- R2: names --

    def undo_names(self):
        ops = [r for r in self.recs if r.type in NAME_OPS and r.happened]
        ops.sort(key=lambda r: r.pos, reverse=True)
        for r in ops:
            kind = NAMES[r.type]
            if self.temp_only(r):
                self.kept["temp name"] += 1
                continue
            if self.name_durable(r):
                self.kept[kind] += 1
                self.kept_paths.add(r.p2 if r.type == RENAME else r.p1)
                continue
            self.undone[kind] += 1
            getattr(self, "undo_" + kind)(r)

    def temp_only(self, r):
        """R5: every name the change touched is in tmp/ or scratch/."""
        names = (r.p1, r.p2) if r.type in (RENAME, LINK) else (r.p1,)
        return all(len(self.rel(p).split("/")) > 1 and
                   self.rel(p).split("/")[0] in TEMP_DIRS for p in names)

    def conflict(self, r, text):
        msg = "%s %s: %s" % (NAMES[r.type], self.rel(r.p1), text)
        self.conflicts.append(msg)
        self.log("restore: CONFLICT " + msg)

    def why_parent(self, r):
        parent = r.p2 if r.type == RENAME else r.p1
        return "%s not fsynced after it" % self.rel(os.path.dirname(parent))

    def undo_create(self, r):
        now = lstat_ident(r.p1)
        if now is None:
            return  # renamed or removed since (those were undone or kept)
        if now != r.result:
            return self.conflict(r, "another file has the name")
        self.act("create-undone", r.p1, self.why_parent(r))
        if not self.dry:
            os.unlink(r.p1)

    undo_link = undo_create

    def undo_mkdir(self, r):
        now = lstat_ident(r.p1)
        if now is None:
            return
        if self.same.get(now, now) != r.result:
            return self.conflict(r, "another directory has the name")
        inside, durable = [], []
        for d, dirs, files in os.walk(r.p1):
            for x in dirs + files:
                p = os.path.join(d, x)
                if self.rel(p) in IGNORED:
                    continue
                inside.append(self.rel(p))
                if p in self.kept_paths:
                    durable.append(self.rel(p))
        self.act("mkdir-undone", r.p1, "%s%s" % (
            self.why_parent(r), "; lost with it: %s" % ", ".join(
                inside[:8]) + (" ..." if len(inside) > 8 else "")
            if inside else ""))
        if durable:
            # entries whose own change was durable, lost all the same:
            # the directory's own name was not
            self.cascades.append("%s (mkdir not durable: %s) took %d "
                                 "durable entries with it: %s" %
                                 (self.rel(r.p1), self.why_parent(r),
                                  len(durable), ", ".join(durable[:8])))
        if not self.dry:
            lost = os.path.join(self.dir, "lost")
            os.makedirs(lost, exist_ok=True)
            self.lost_n += 1
            os.rename(r.p1, os.path.join(lost, "%d-%s" % (
                self.lost_n, os.path.basename(r.p1))))

    def undo_rmdir(self, r):
        if os.path.lexists(r.p1):
            return self.conflict(r, "the name is taken")
        if not os.path.isdir(os.path.dirname(r.p1)):
            return  # its parent went too (an undone mkdir)
        self.act("rmdir-undone", r.p1, self.why_parent(r))
        if not self.dry:
            os.mkdir(r.p1, (r.mode & 0o7777) or 0o700)
            self.same[lstat_ident(r.p1)] = r.obj

    def undo_unlink(self, r):
        if os.path.lexists(r.p1):
            return self.conflict(r, "the name is taken")
        if not os.path.isdir(os.path.dirname(r.p1)):
            return
        if not r.flags & F_SAVED:
            return self.conflict(r, "the victim was not saved")
        self.act("unlink-undone", r.p1, self.why_parent(r))
        if not self.dry:
            os.link(os.path.join(self.dir, r.p3), r.p1)

    def undo_rename(self, r):
        now = lstat_ident(r.p2)
        if now is None:
            # a later rename that was kept moved the file on (tmp/ to
            # objects/ after scratch/ to tmp/): only the victim returns
            return self.put_back_victim(r)
        if self.same.get(now, now) != r.obj:
            return self.conflict(r, "%s is not the renamed file" %
                                 self.rel(r.p2))
        if os.path.lexists(r.p1):
            return self.conflict(r, "the old name is taken")
        if not os.path.isdir(os.path.dirname(r.p1)):
            return self.conflict(r, "the old directory is gone")
        self.act("rename-undone", r.p2, "back to %s (%s)" %
                 (self.rel(r.p1), self.why_parent(r)))
        if not self.dry:
            os.rename(r.p2, r.p1)
        self.put_back_victim(r)

    def put_back_victim(self, r):
        """The file a rename replaced gets its name back."""
        if not r.flags & F_VICTIM or self.dry:
            return
        if os.path.lexists(r.p2):
            return self.conflict(r, "the replaced file's name is taken")
        if r.flags & F_SAVED:
            os.link(os.path.join(self.dir, r.p3), r.p2)
        elif r.flags & F_VICTIM_DIR:
            os.mkdir(r.p2, (r.mode & 0o7777) or 0o700)
        else:
            self.conflict(r, "the replaced file was not saved")

    # -- all --

    def run(self):
        self.analyse()
        self.undo_content()
        self.undo_names()
        return self

    def ok(self):
        """No call the model cannot follow, no undo that found something
        in its way. (A torn last record is allowed: a kill can cut a long
        write(2) of the journal short; the call it announced had not
        started.)"""
        return not self.notes and not self.conflicts

    def summary(self):
        undone = sum(self.undone.values())
        kept = sum(self.kept.values())
        return ("restore: records=%d undone=%d kept=%d cascades=%d "
                "conflicts=%d notes=%d torn_tail=%d" %
                (len(self.recs), undone, kept, len(self.cascades),
                 len(self.conflicts), len(self.notes), int(self.torn)))

    def details(self):
        return ("restore: undone %s; kept %s" % (
            ", ".join("%s=%d" % kv for kv in sorted(self.undone.items()))
            or "nothing",
            ", ".join("%s=%d" % kv for kv in sorted(self.kept.items()))
            or "nothing"))


def main():
    ap = argparse.ArgumentParser(description="roll a store back to what a "
                                 "power loss could have left")
    ap.add_argument("root", help="POWERLOSS_ROOT (the store)")
    ap.add_argument("dir", help="POWERLOSS_DIR (journal, links)")
    ap.add_argument("--dry-run", action="store_true",
                    help="say what would be undone, change nothing")
    ap.add_argument("--verbose", "-v", action="store_true")
    ap.add_argument("--dump", action="store_true",
                    help="print the journal's records and stop")
    a = ap.parse_args()
    if a.dump:
        recs, torn = parse(os.path.join(a.dir, "journal"))
        for r in recs:
            print("%5d %-8s tid=%d id=%x flags=%#x err=%d obj=%s off=%d "
                  "count=%d old=%d new=%d data=%d %s%s%s" % (
                      r.idx, NAMES.get(r.type, r.type), r.tid, r.id,
                      r.flags, r.err, r.obj[1], r.off, r.count, r.oldsize,
                      r.newsize, len(r.data), r.p1,
                      " -> " + r.p2 if r.p2 else "",
                      " [" + r.p3 + "]" if r.p3 else ""))
        print("torn tail" if torn else "end")
        return 0
    r = Restore(a.root, a.dir, a.dry_run,
                log=print if a.verbose else None).run()
    for x in r.notes:
        print("restore: NOTE (not modelled): " + x)
    for x in r.cascades:
        print("restore: cascade: " + x)
    print(r.details())
    print(r.summary())
    return 0 if r.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
