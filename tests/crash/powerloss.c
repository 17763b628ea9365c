/*
 * powerloss.c - the fault layer of the power-loss suite (suite 3).
 *
 * An LD_PRELOAD library for the jobfs daemon. It never changes what a call
 * does: it writes down, around each call that changes a file or a name
 * under POWERLOSS_ROOT, what the call changed and what is needed to take
 * the change back. After the daemon is killed, the restore step of
 * tests/crash/powerloss.py reads that journal and takes back, newest
 * first, every change that was not durable yet, leaving the store as a
 * power loss at that instant could have left it. kill -9 alone cannot do
 * this: the page cache survives it, so a missing fsync goes unnoticed.
 *
 *   POWERLOSS_ROOT  the store, an absolute path (the directory itself is
 *                   the caller's; what is inside it is watched)
 *   POWERLOSS_DIR   outside the store, on the same filesystem (victims
 *                   of unlink and rename are hard-linked into it):
 *                   DIR/journal, DIR/links/
 *
 * Without POWERLOSS_ROOT the library does nothing but pass calls on.
 *
 * The model, pessimistic POSIX (docs/reliability.md, suite 3):
 *
 *   M1  a file's bytes and size are durable only once an fsync or
 *       fdatasync of that file returned after they were written; a write
 *       through an O_DSYNC or O_SYNC descriptor (or with RWF_DSYNC) is
 *       durable at once, for its own range only;
 *   M2  a file created here has no durable content until it is fsynced
 *       (the worker writes its stdout file through a descriptor the
 *       daemon created: those writes are not seen and need not be);
 *   M3  a directory entry change (create, mkdir, rmdir, unlink, link,
 *       symlink) is durable only once an fsync of that directory returned
 *       after it; a rename once an fsync of the destination directory did,
 *       and then as a whole (the restore step explains the source side);
 *   M4  sync() and syncfs() make everything before them durable.
 *
 * How calls are written down (numbered, the restore step relies on it):
 *
 *   J1  every record is one O_APPEND write(2) of the journal, opened and
 *       closed for that record with raw system calls: records of the
 *       daemon's threads and of its forked children never interleave, and
 *       the layer never calls what it interposes;
 *   J2  a content change (write, truncate, fallocate, copy) is recorded
 *       BEFORE the call, with the old size and the old bytes of the range
 *       it may change: undoing a change that did not happen (or happened
 *       in part) writes back what is already there;
 *   J3  a name change is recorded before the call (with the victim of an
 *       unlink or of a rename onto an existing file hard-linked into
 *       DIR/links first) and again after it, as a DONE record with the
 *       result: a change with no DONE was cut by the kill;
 *   J4  a sync is recorded AFTER it returned: a sync still running at the
 *       kill made nothing durable;
 *   J5  a call the model cannot follow (a writable shared mapping,
 *       O_TMPFILE, RENAME_EXCHANGE, a rename across the root) is recorded
 *       as a NOTE, and the restore step refuses to vouch for the run.
 *
 * Files ignored: ROOT/lock (jobfs's flock) and ROOT/db/lock.mdb (LMDB's
 * reader table); neither holds anything that must survive a power loss.
 *
 * Everything here is async-signal-safe (no malloc, no stdio, no locks):
 * the daemon's worker children run this code between clone and execve.
 * Records of threads that race on the same file are ordered by the
 * journal, not by the filesystem (an fsync in one thread "covers" a write
 * recorded before it in another); jobfs and LMDB write and sync each file
 * from one thread at a time.
 */
#undef _FILE_OFFSET_BITS /* we define open and open64 both, by hand */
#undef _FORTIFY_SOURCE   /* and __open_2: no inline wrappers wanted */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

/* ---- the journal's records (tests/crash/powerloss.py reads them) ---- */

#define PL_MAGIC 0x314c5750u /* "PWL1" */

enum pl_type {
	PL_START = 1,  /* a process loaded the layer: tid = pid */
	PL_WRITE,      /* obj, path1, off, count, oldsize; data = old bytes */
	PL_TRUNC,      /* obj, path1, oldsize, newsize; data = old tail */
	PL_SYNC,       /* obj (flags DIR, DATA) */
	PL_SYNCALL,    /* sync() or syncfs() */
	PL_CREATE,     /* path1 in parent; DONE carries the new inode */
	PL_MKDIR,      /* path1 in parent, mode; DONE carries the inode */
	PL_RMDIR,      /* path1 in parent; obj and mode of the directory */
	PL_UNLINK,     /* path1 in parent; obj; path3 = saved link */
	PL_RENAME,     /* path1 in parent -> path2 in parent2; obj moved;
			* victim (and path3 = its saved link, or mode) */
	PL_LINK,       /* path1 (new name) in parent; obj (flag SYMLINK:
			* a symlink, DONE carries its inode) */
	PL_DONE,       /* id of a name change; err; obj for create/mkdir */
	PL_NOTE,       /* path1, path2 = what the model cannot follow */
};

enum pl_flag {
	PLF_DSYNC = 1,      /* WRITE: durable at once */
	PLF_DIR = 2,        /* SYNC: of a directory */
	PLF_DATA = 4,       /* SYNC: fdatasync */
	PLF_SAVED = 8,      /* UNLINK, RENAME: the victim is in path3 */
	PLF_VICTIM = 16,    /* RENAME: the destination existed */
	PLF_VICTIM_DIR = 32, /* RENAME: ... and was a directory (mode) */
	PLF_APPEND = 64,    /* WRITE: at the end of the file */
	PLF_SYMLINK = 128,  /* LINK: a new symlink */
};

struct pl_ident {
	uint64_t dev, ino;
};

struct pl_rec {
	uint32_t magic;
	uint32_t size;          /* of the whole record, 8-byte aligned */
	uint16_t type;
	uint16_t flags;
	int32_t tid;
	uint64_t id;            /* ties a DONE to its name change */
	int32_t err;            /* DONE: 0 or the call's errno */
	uint32_t mode;
	struct pl_ident obj, parent, parent2, victim;
	int64_t off;
	uint64_t count;
	int64_t oldsize, newsize;
	uint32_t len1, len2, len3, dlen; /* path1, path2, path3, data */
};
_Static_assert(sizeof(struct pl_rec) == 144, "record header layout");

/* ---- state ---- */

static int pl_on;
static char pl_root[PATH_MAX];
static size_t pl_rootlen;
static char pl_journal[PATH_MAX];
static char pl_links[PATH_MAX];
static uint32_t pl_seq;

/* ---- the real functions ---- */

extern int __open_2(const char *, int);
extern int __open64_2(const char *, int);
extern int __openat_2(int, const char *, int);
extern int __openat64_2(int, const char *, int);

/* The next definition of name (libc's), looked up once: the constructor
 * looks every one up before the daemon has threads or children. */
static void *pl_real(void **slot, const char *name)
{
	void *p = __atomic_load_n(slot, __ATOMIC_ACQUIRE);

	if (!p) {
		p = dlsym(RTLD_NEXT, name);
		__atomic_store_n(slot, p, __ATOMIC_RELEASE);
	}
	return p;
}

#define REAL(fn) static __typeof__(&fn) real_##fn
#define CALL(fn) ((__typeof__(real_##fn))pl_real((void **)&real_##fn, #fn))

REAL(open); REAL(open64); REAL(openat); REAL(openat64);
REAL(__open_2); REAL(__open64_2); REAL(__openat_2); REAL(__openat64_2);
REAL(creat); REAL(creat64);
REAL(write); REAL(pwrite); REAL(pwrite64); REAL(writev);
REAL(pwritev); REAL(pwritev64); REAL(pwritev2); REAL(pwritev64v2);
REAL(ftruncate); REAL(ftruncate64); REAL(truncate); REAL(truncate64);
REAL(fallocate); REAL(fallocate64);
REAL(posix_fallocate); REAL(posix_fallocate64);
REAL(copy_file_range); REAL(sendfile); REAL(sendfile64); REAL(splice);
REAL(fsync); REAL(fdatasync); REAL(sync); REAL(syncfs);
REAL(rename); REAL(renameat); REAL(renameat2);
REAL(unlink); REAL(unlinkat); REAL(rmdir); REAL(remove);
REAL(mkdir); REAL(mkdirat);
REAL(link); REAL(linkat); REAL(symlink); REAL(symlinkat);
REAL(mmap); REAL(mmap64);

/* ---- raw helpers (async-signal-safe; errno is the caller's to keep) --- */

static long pl_tid(void)
{
	return syscall(SYS_gettid);
}

static void pl_die(const char *what)
{
	static const char pre[] = "powerloss: ";
	static const char post[] = ": the journal cannot be trusted\n";

	syscall(SYS_write, 2, pre, sizeof(pre) - 1);
	syscall(SYS_write, 2, what, strlen(what));
	syscall(SYS_write, 2, post, sizeof(post) - 1);
	syscall(SYS_kill, syscall(SYS_getpid), SIGABRT);
	syscall(SYS_exit_group, 134);
}

static int pl_statx(int dirfd, const char *path, int flags, struct statx *st)
{
	return (int)syscall(SYS_statx, dirfd, path, flags,
			    STATX_TYPE | STATX_MODE | STATX_INO | STATX_SIZE,
			    st);
}

static struct pl_ident pl_ident_of(const struct statx *st)
{
	struct pl_ident id = {
		gnu_dev_makedev(st->stx_dev_major, st->stx_dev_minor),
		st->stx_ino,
	};
	return id;
}

/* The absolute path of fd, " (deleted)" dropped; -1 if it has none. */
static int pl_fd_path(int fd, char *out)
{
	char link[40] = "/proc/self/fd/";
	char digits[16];
	size_t n = 0, at = strlen(link);
	unsigned v = (unsigned)fd;
	long r;

	if (fd == AT_FDCWD) {
		memcpy(link, "/proc/self/cwd", 15);
	} else {
		if (fd < 0)
			return -1;
		do {
			digits[n++] = (char)('0' + v % 10);
			v /= 10;
		} while (v);
		while (n)
			link[at++] = digits[--n];
		link[at] = '\0';
	}
	r = syscall(SYS_readlinkat, AT_FDCWD, link, out, PATH_MAX - 1);
	if (r <= 0 || out[0] != '/')
		return -1;
	out[r] = '\0';
	if (r > 10 && !strcmp(out + r - 10, " (deleted)"))
		out[r - 10] = '\0';
	return 0;
}

/* out = base + "/" + name, with "." and ".." resolved by name and "//"
 * squeezed; name alone if it is absolute. -1 if it does not fit. */
static int pl_join(const char *base, const char *name, char *out)
{
	const char *parts[2] = { name[0] == '/' ? "" : base, name };
	size_t len = 0;

	out[0] = '\0';
	for (int p = 0; p < 2; p++) {
		const char *s = parts[p];

		while (*s) {
			const char *e;
			size_t n;

			while (*s == '/')
				s++;
			if (!*s)
				break;
			for (e = s; *e && *e != '/'; e++)
				;
			n = (size_t)(e - s);
			if (n == 1 && s[0] == '.') {
				/* nothing */
			} else if (n == 2 && s[0] == '.' && s[1] == '.') {
				while (len > 0 && out[len - 1] != '/')
					len--;
				if (len > 0)
					len--;
			} else {
				if (len + 1 + n + 1 > PATH_MAX)
					return -1;
				out[len++] = '/';
				memcpy(out + len, s, n);
				len += n;
			}
			s = e;
		}
	}
	if (len == 0)
		out[len++] = '/';
	out[len] = '\0';
	return 0;
}

static int pl_at_path(int dirfd, const char *name, char *out)
{
	char base[PATH_MAX];

	if (!name)
		return -1;
	if (name[0] == '/')
		return pl_join("/", name, out);
	if (pl_fd_path(dirfd, base))
		return -1;
	return pl_join(base, name, out);
}

static int pl_ignored(const char *abs)
{
	const char *rel = abs + pl_rootlen;

	return !strcmp(rel, "/lock") || !strcmp(rel, "/db/lock.mdb");
}

/* Is abs the root or inside it (and not an ignored file)? */
static int pl_tracked(const char *abs)
{
	if (!pl_on || strncmp(abs, pl_root, pl_rootlen))
		return 0;
	if (abs[pl_rootlen] == '\0')
		return 1;
	return abs[pl_rootlen] == '/' && !pl_ignored(abs);
}

/* Strictly inside the root: a name whose change is watched. */
static int pl_inside(const char *abs)
{
	return pl_tracked(abs) && abs[pl_rootlen] == '/';
}

static struct pl_ident pl_parent(const char *abs)
{
	char dir[PATH_MAX];
	struct statx st;
	struct pl_ident none = { 0, 0 };
	size_t n = strlen(abs);

	memcpy(dir, abs, n + 1);
	while (n > 1 && dir[n - 1] != '/')
		n--;
	dir[n > 1 ? n - 1 : 1] = '\0';
	if (pl_statx(AT_FDCWD, dir, 0, &st))
		return none;
	return pl_ident_of(&st);
}

/* ---- records ---- */

struct pl_buf {
	char *p;
	size_t cap, len;
	int mapped;
	char stack[8192];
};

static int pl_buf_init(struct pl_buf *b, size_t need)
{
	need = (need + 7) & ~(size_t)7;
	b->len = 0;
	b->mapped = 0;
	b->cap = sizeof(b->stack);
	b->p = b->stack;
	if (need > b->cap) {
		void *m = (void *)syscall(SYS_mmap, NULL, need,
					   PROT_READ | PROT_WRITE,
					   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (m == MAP_FAILED)
			return -1;
		b->p = m;
		b->cap = need;
		b->mapped = 1;
	}
	return 0;
}

static void pl_buf_free(struct pl_buf *b)
{
	if (b->mapped)
		syscall(SYS_munmap, b->p, b->cap);
}

static size_t pl_slen(const char *s)
{
	return s ? strlen(s) : 0;
}

static uint64_t pl_next_id(void)
{
	uint32_t seq = __atomic_add_fetch(&pl_seq, 1, __ATOMIC_RELAXED);

	return ((uint64_t)(uint32_t)pl_tid() << 32) | seq;
}

/* Fill the header and the strings of r into b (the caller has put the
 * data, r->dlen bytes, where the strings end) and append the record
 * (J1). */
static void pl_emit(struct pl_buf *b, struct pl_rec *r, const char *p1,
		    const char *p2, const char *p3)
{
	size_t l1 = pl_slen(p1), l2 = pl_slen(p2), l3 = pl_slen(p3);
	size_t total = sizeof(*r) + l1 + l2 + l3 + r->dlen;
	size_t padded = (total + 7) & ~(size_t)7;
	char *at = b->p + sizeof(*r);
	long fd, w;

	r->magic = PL_MAGIC;
	r->size = (uint32_t)padded;
	r->tid = (int32_t)pl_tid();
	r->len1 = (uint32_t)l1;
	r->len2 = (uint32_t)l2;
	r->len3 = (uint32_t)l3;
	memcpy(b->p, r, sizeof(*r));
	if (l1)
		memcpy(at, p1, l1);
	at += l1;
	if (l2)
		memcpy(at, p2, l2);
	at += l2;
	if (l3)
		memcpy(at, p3, l3);
	memset(b->p + total, 0, padded - total);
	fd = syscall(SYS_openat, AT_FDCWD, pl_journal,
		     O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		pl_die("cannot open the journal");
	w = syscall(SYS_write, fd, b->p, padded);
	syscall(SYS_close, fd);
	if (w != (long)padded)
		pl_die("a short write to the journal");
}

/* A record with no data. */
static void pl_record(struct pl_rec *r, const char *p1, const char *p2,
		      const char *p3)
{
	struct pl_buf b;

	r->dlen = 0;
	if (pl_buf_init(&b, sizeof(*r) + pl_slen(p1) + pl_slen(p2) +
			pl_slen(p3)))
		pl_die("no memory for a record");
	pl_emit(&b, r, p1, p2, p3);
	pl_buf_free(&b);
}

static void pl_note(const char *path, const char *what)
{
	struct pl_rec r = { .type = PL_NOTE };

	pl_record(&r, path, what, NULL);
}

/* Read [off, off+len) of the file into dst: through fd if it can be
 * read, else through a read-only descriptor of the same file (fd's
 * /proc/self/fd link, which works for a deleted file too, or abs when
 * there is no fd). What lies past the end of the file reads as zeros. */
static int pl_read_old(int fd, const char *abs, char *dst, uint64_t len,
		       int64_t off)
{
	long rfd = fd, own = -1;
	uint64_t got = 0;

	while (got < len) {
		long n = rfd < 0 ? -1 :
			syscall(SYS_pread64, rfd, dst + got, len - got,
				off + (int64_t)got);

		if (n < 0 && own < 0 &&
		    (rfd < 0 || errno == EBADF || errno == EINVAL)) {
			char proc[40] = "/proc/self/fd/";
			const char *src = abs;

			if (fd >= 0) {
				char digits[16];
				size_t k = 0, at = strlen(proc);
				unsigned v = (unsigned)fd;

				do {
					digits[k++] = (char)('0' + v % 10);
					v /= 10;
				} while (v);
				while (k)
					proc[at++] = digits[--k];
				proc[at] = '\0';
				src = proc;
			}
			own = rfd = syscall(SYS_openat, AT_FDCWD, src,
					    O_RDONLY | O_CLOEXEC);
			if (own < 0)
				return -1;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (uint64_t)n;
	}
	if (got < len)
		memset(dst + got, 0, len - got);
	if (own >= 0)
		syscall(SYS_close, own);
	return 0;
}

/*
 * A change of bytes (J2): count bytes at off (-1: the descriptor's
 * position) through fd, or a truncation to newsize (trunc). The old bytes
 * of what may change, and the old size, go into the record.
 */
static void pl_content(int fd, const char *path_or_null, int64_t off,
		       uint64_t count, int trunc, int64_t newsize,
		       int extra_flags)
{
	char abs[PATH_MAX];
	struct statx st;
	struct pl_rec r = { 0 };
	struct pl_buf b;
	uint64_t dlen = 0;
	int64_t doff = 0;
	long fl = 0;

	if (path_or_null) {
		if (pl_join("/", path_or_null, abs) || !pl_inside(abs) ||
		    pl_statx(AT_FDCWD, abs, AT_SYMLINK_NOFOLLOW, &st))
			return;
	} else {
		if (pl_fd_path(fd, abs) || !pl_inside(abs) ||
		    pl_statx(fd, "", AT_EMPTY_PATH, &st))
			return;
		fl = syscall(SYS_fcntl, fd, F_GETFL);
		if (fl < 0)
			return;
	}
	if (!S_ISREG(st.stx_mode))
		return;
	r.obj = pl_ident_of(&st);
	r.oldsize = (int64_t)st.stx_size;
	r.flags = (uint16_t)extra_flags;
	if (trunc) {
		r.type = PL_TRUNC;
		r.newsize = newsize;
		if (newsize < r.oldsize) {
			doff = newsize;
			dlen = (uint64_t)(r.oldsize - newsize);
		}
	} else {
		r.type = PL_WRITE;
		if ((fl & O_APPEND) || (extra_flags & PLF_APPEND)) {
			off = r.oldsize;
			r.flags |= PLF_APPEND;
		} else if (off < 0) {
			off = syscall(SYS_lseek, fd, 0L, SEEK_CUR);
			if (off < 0)
				return;
		}
		if (fl & O_DSYNC)
			r.flags |= PLF_DSYNC;
		r.off = off;
		r.count = count;
		if (!(r.flags & PLF_DSYNC) && off < r.oldsize) {
			doff = off;
			dlen = (uint64_t)(r.oldsize - off);
			if (dlen > count)
				dlen = count;
		}
	}
	if (dlen > ((uint64_t)1 << 30))
		pl_die("a change of more than 1 GiB of old bytes");
	if (pl_buf_init(&b, sizeof(r) + strlen(abs) + dlen))
		pl_die("no memory for the old bytes of a change");
	/* the data goes after path1 (no path2 or path3 here) */
	if (dlen && pl_read_old(path_or_null ? -1 : fd, abs,
				b.p + sizeof(r) + strlen(abs), dlen, doff))
		pl_die("cannot read the old bytes of a change");
	r.dlen = (uint32_t)dlen;
	if (r.type == PL_TRUNC)
		r.off = doff;
	pl_emit(&b, &r, abs, NULL, NULL);
	pl_buf_free(&b);
}

/* ---- name changes (J3) ---- */

struct pl_pend {
	uint64_t id;        /* 0: nothing recorded, no DONE */
	int type;
	char path[PATH_MAX];
};

static void pl_done(struct pl_pend *p, int rc, int err, int fd)
{
	struct pl_rec r = { .type = PL_DONE };
	struct statx st;

	if (!p->id)
		return;
	r.id = p->id;
	r.err = rc < 0 ? err : 0;
	if (rc >= 0) {
		int ok = -1;

		if (p->type == PL_CREATE && fd >= 0)
			ok = pl_statx(fd, "", AT_EMPTY_PATH, &st);
		else if (p->type == PL_MKDIR || p->type == PL_LINK ||
			 p->type == PL_CREATE)
			ok = pl_statx(AT_FDCWD, p->path, AT_SYMLINK_NOFOLLOW,
				      &st);
		if (ok == 0)
			r.obj = pl_ident_of(&st);
	}
	pl_record(&r, NULL, NULL, NULL);
}

/* Hard-link the file at abs into DIR/links; its name there, or "" if it
 * could not be linked (not there, or a directory). */
static void pl_save(const char *abs, uint64_t id, char *name)
{
	static const char hex[] = "0123456789abcdef";
	char dst[PATH_MAX];
	size_t n = strlen(pl_links);

	memcpy(name, "links/", 6);
	for (int i = 0; i < 16; i++)
		name[6 + i] = hex[(id >> (60 - 4 * i)) & 15];
	name[22] = '\0';
	memcpy(dst, pl_links, n);
	memcpy(dst + n, name + 5, 18);
	if (syscall(SYS_linkat, AT_FDCWD, abs, AT_FDCWD, dst, 0) < 0)
		name[0] = '\0';
}

/* Record a create, mkdir, unlink or rmdir of p->path (absolute, inside
 * the root). */
static void pl_name_op_abs(struct pl_pend *p, int type, unsigned mode)
{
	struct pl_rec r = { 0 };
	struct statx st;
	char saved[32] = "";

	p->type = type;
	p->id = pl_next_id();
	r.type = (uint16_t)type;
	r.id = p->id;
	r.mode = mode;
	r.parent = pl_parent(p->path);
	if (type == PL_UNLINK || type == PL_RMDIR) {
		if (pl_statx(AT_FDCWD, p->path, AT_SYMLINK_NOFOLLOW, &st) == 0) {
			r.obj = pl_ident_of(&st);
			r.mode = st.stx_mode;
			if (type == PL_UNLINK && !S_ISDIR(st.stx_mode)) {
				pl_save(p->path, p->id, saved);
				if (saved[0])
					r.flags |= PLF_SAVED;
			}
		}
	}
	pl_record(&r, p->path, NULL, saved[0] ? saved : NULL);
}

static void pl_name_op(struct pl_pend *p, int type, int dirfd,
		       const char *name, unsigned mode)
{
	p->id = 0;
	if (pl_on && pl_at_path(dirfd, name, p->path) == 0 &&
	    pl_inside(p->path))
		pl_name_op_abs(p, type, mode);
}

/* open with O_CREAT or O_TRUNC: a create if the name was free, else a
 * truncation to 0 of what was there (as a content change). */
static void pl_open_pre(struct pl_pend *p, int dirfd, const char *name,
			int flags, unsigned mode)
{
	struct statx st;

	p->id = 0;
	if (!pl_on || !(flags & (O_CREAT | O_TRUNC | __O_TMPFILE)))
		return;
	if (pl_at_path(dirfd, name, p->path) || !pl_tracked(p->path))
		return;
	if ((flags & __O_TMPFILE) == __O_TMPFILE) {
		pl_note(p->path, "O_TMPFILE");
		return;
	}
	if (!pl_inside(p->path))
		return;
	if (pl_statx(AT_FDCWD, p->path, AT_SYMLINK_NOFOLLOW, &st) < 0) {
		if (errno == ENOENT && (flags & O_CREAT))
			pl_name_op_abs(p, PL_CREATE, mode);
		return;
	}
	if ((flags & O_TRUNC) && S_ISREG(st.stx_mode) && st.stx_size > 0)
		pl_content(-1, p->path, 0, 0, 1, 0, 0);
}

/* ---- the interposed calls ---- */

#define KEEP_ERRNO(stmt) do { int e_ = errno; stmt; errno = e_; } while (0)

static int pl_openat_common(int dirfd, const char *path, int flags,
			    unsigned mode, int fd_of_call(void *), void *arg)
{
	struct pl_pend p;
	int fd, e;

	p.id = 0;
	KEEP_ERRNO(pl_open_pre(&p, dirfd, path, flags, mode));
	fd = fd_of_call(arg);
	e = errno;
	pl_done(&p, fd, e, fd);
	errno = e;
	return fd;
}

struct open_args {
	int which, dirfd, flags;
	const char *path;
	mode_t mode;
};

static int do_open(void *v)
{
	struct open_args *a = v;

	switch (a->which) {
	case 0: return CALL(open)(a->path, a->flags, a->mode);
	case 1: return CALL(open64)(a->path, a->flags, a->mode);
	case 2: return CALL(openat)(a->dirfd, a->path, a->flags, a->mode);
	case 3: return CALL(openat64)(a->dirfd, a->path, a->flags, a->mode);
	case 4: return CALL(__open_2)(a->path, a->flags);
	case 5: return CALL(__open64_2)(a->path, a->flags);
	case 6: return CALL(__openat_2)(a->dirfd, a->path, a->flags);
	case 7: return CALL(__openat64_2)(a->dirfd, a->path, a->flags);
	case 8: return CALL(creat)(a->path, a->mode);
	default: return CALL(creat64)(a->path, a->mode);
	}
}

static int pl_open_any(int which, int dirfd, const char *path, int flags,
		       mode_t mode)
{
	struct open_args a = { which, dirfd, flags, path, mode };

	return pl_openat_common(dirfd, path, flags, mode, do_open, &a);
}

#define OPEN_MODE(flags, mode) do { \
	if ((flags) & (O_CREAT | __O_TMPFILE)) { \
		va_list ap; \
		va_start(ap, flags); \
		mode = (mode_t)va_arg(ap, int); \
		va_end(ap); \
	} } while (0)

int open(const char *path, int flags, ...)
{
	mode_t mode = 0;

	OPEN_MODE(flags, mode);
	return pl_open_any(0, AT_FDCWD, path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
	mode_t mode = 0;

	OPEN_MODE(flags, mode);
	return pl_open_any(1, AT_FDCWD, path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...)
{
	mode_t mode = 0;

	OPEN_MODE(flags, mode);
	return pl_open_any(2, dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	mode_t mode = 0;

	OPEN_MODE(flags, mode);
	return pl_open_any(3, dirfd, path, flags, mode);
}

int __open_2(const char *path, int flags)
{
	return pl_open_any(4, AT_FDCWD, path, flags, 0);
}

int __open64_2(const char *path, int flags)
{
	return pl_open_any(5, AT_FDCWD, path, flags, 0);
}

int __openat_2(int dirfd, const char *path, int flags)
{
	return pl_open_any(6, dirfd, path, flags, 0);
}

int __openat64_2(int dirfd, const char *path, int flags)
{
	return pl_open_any(7, dirfd, path, flags, 0);
}

int creat(const char *path, mode_t mode)
{
	return pl_open_any(8, AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC,
			   mode);
}

int creat64(const char *path, mode_t mode)
{
	return pl_open_any(9, AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC,
			   mode);
}

static void pl_write_pre(int fd, int64_t off, uint64_t count, int flags)
{
	if (pl_on && count)
		KEEP_ERRNO(pl_content(fd, NULL, off, count, 0, 0, flags));
}

static uint64_t iov_total(const struct iovec *iov, int n)
{
	uint64_t t = 0;

	for (int i = 0; iov && i < n; i++)
		t += iov[i].iov_len;
	return t;
}

ssize_t write(int fd, const void *buf, size_t n)
{
	pl_write_pre(fd, -1, n, 0);
	return CALL(write)(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	pl_write_pre(fd, off, n, 0);
	return CALL(pwrite)(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
	pl_write_pre(fd, off, n, 0);
	return CALL(pwrite64)(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int n)
{
	pl_write_pre(fd, -1, iov_total(iov, n), 0);
	return CALL(writev)(fd, iov, n);
}

ssize_t pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
	pl_write_pre(fd, off, iov_total(iov, n), 0);
	return CALL(pwritev)(fd, iov, n, off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int n, off64_t off)
{
	pl_write_pre(fd, off, iov_total(iov, n), 0);
	return CALL(pwritev64)(fd, iov, n, off);
}

static int rwf_flags(int flags)
{
	return ((flags & (RWF_DSYNC | RWF_SYNC)) ? PLF_DSYNC : 0) |
	       ((flags & RWF_APPEND) ? PLF_APPEND : 0);
}

ssize_t pwritev2(int fd, const struct iovec *iov, int n, off_t off,
		 int flags)
{
	pl_write_pre(fd, off, iov_total(iov, n), rwf_flags(flags));
	return CALL(pwritev2)(fd, iov, n, off, flags);
}

ssize_t pwritev64v2(int fd, const struct iovec *iov, int n, off64_t off,
		    int flags)
{
	pl_write_pre(fd, off, iov_total(iov, n), rwf_flags(flags));
	return CALL(pwritev64v2)(fd, iov, n, off, flags);
}

static void pl_trunc_pre(int fd, const char *path, int64_t len)
{
	if (pl_on && len >= 0)
		KEEP_ERRNO(pl_content(fd, path, 0, 0, 1, len, 0));
}

int ftruncate(int fd, off_t len)
{
	pl_trunc_pre(fd, NULL, len);
	return CALL(ftruncate)(fd, len);
}

int ftruncate64(int fd, off64_t len)
{
	pl_trunc_pre(fd, NULL, len);
	return CALL(ftruncate64)(fd, len);
}

static void pl_trunc_path(const char *path, int64_t len)
{
	char abs[PATH_MAX];

	if (pl_on && pl_at_path(AT_FDCWD, path, abs) == 0)
		pl_trunc_pre(-1, abs, len);
}

int truncate(const char *path, off_t len)
{
	KEEP_ERRNO(pl_trunc_path(path, len));
	return CALL(truncate)(path, len);
}

int truncate64(const char *path, off64_t len)
{
	KEEP_ERRNO(pl_trunc_path(path, len));
	return CALL(truncate64)(path, len);
}

/* fallocate: growing the size is a truncation upwards; punching or
 * zeroing a range is a write of that range; shifting data around
 * (collapse, insert) is beyond the model. */
static void pl_fallocate_pre(int fd, int mode, int64_t off, int64_t len)
{
	struct statx st;
	char abs[PATH_MAX];
	int errno_saved = errno;

	if (!pl_on || pl_fd_path(fd, abs) || !pl_inside(abs))
		goto out;
	if (mode & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE)) {
		pl_note(abs, "fallocate collapse or insert");
	} else if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
		pl_content(fd, NULL, off, (uint64_t)len, 0, 0, 0);
		if (!(mode & FALLOC_FL_KEEP_SIZE) &&
		    pl_statx(fd, "", AT_EMPTY_PATH, &st) == 0 &&
		    (int64_t)st.stx_size < off + len)
			pl_content(fd, NULL, 0, 0, 1, off + len, 0);
	} else if (!(mode & FALLOC_FL_KEEP_SIZE) &&
		   pl_statx(fd, "", AT_EMPTY_PATH, &st) == 0 &&
		   (int64_t)st.stx_size < off + len) {
		pl_content(fd, NULL, 0, 0, 1, off + len, 0);
	}
out:
	errno = errno_saved;
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
	pl_fallocate_pre(fd, mode, off, len);
	return CALL(fallocate)(fd, mode, off, len);
}

int fallocate64(int fd, int mode, off64_t off, off64_t len)
{
	pl_fallocate_pre(fd, mode, off, len);
	return CALL(fallocate64)(fd, mode, off, len);
}

int posix_fallocate(int fd, off_t off, off_t len)
{
	pl_fallocate_pre(fd, 0, off, len);
	return CALL(posix_fallocate)(fd, off, len);
}

int posix_fallocate64(int fd, off64_t off, off64_t len)
{
	pl_fallocate_pre(fd, 0, off, len);
	return CALL(posix_fallocate64)(fd, off, len);
}

ssize_t copy_file_range(int in, off64_t *in_off, int out, off64_t *out_off,
			size_t len, unsigned flags)
{
	pl_write_pre(out, out_off ? *out_off : -1, len, 0);
	return CALL(copy_file_range)(in, in_off, out, out_off, len, flags);
}

ssize_t sendfile(int out, int in, off_t *off, size_t count)
{
	pl_write_pre(out, -1, count, 0);
	return CALL(sendfile)(out, in, off, count);
}

ssize_t sendfile64(int out, int in, off64_t *off, size_t count)
{
	pl_write_pre(out, -1, count, 0);
	return CALL(sendfile64)(out, in, off, count);
}

ssize_t splice(int in, off64_t *in_off, int out, off64_t *out_off,
	       size_t len, unsigned flags)
{
	pl_write_pre(out, out_off ? *out_off : -1, len, 0);
	return CALL(splice)(in, in_off, out, out_off, len, flags);
}

/* J4: after the sync returned, and only if it succeeded. */
static void pl_sync_post(int fd, int data)
{
	char abs[PATH_MAX];
	struct statx st;
	struct pl_rec r = { .type = PL_SYNC };

	if (!pl_on || pl_fd_path(fd, abs) || !pl_tracked(abs) ||
	    pl_statx(fd, "", AT_EMPTY_PATH, &st))
		return;
	r.obj = pl_ident_of(&st);
	r.flags = (uint16_t)((S_ISDIR(st.stx_mode) ? PLF_DIR : 0) |
			     (data ? PLF_DATA : 0));
	pl_record(&r, abs, NULL, NULL);
}

int fsync(int fd)
{
	int rc = CALL(fsync)(fd);

	if (rc == 0)
		KEEP_ERRNO(pl_sync_post(fd, 0));
	return rc;
}

int fdatasync(int fd)
{
	int rc = CALL(fdatasync)(fd);

	if (rc == 0)
		KEEP_ERRNO(pl_sync_post(fd, 1));
	return rc;
}

static void pl_syncall(void)
{
	struct pl_rec r = { .type = PL_SYNCALL };

	if (pl_on)
		pl_record(&r, NULL, NULL, NULL);
}

void sync(void)
{
	CALL(sync)();
	KEEP_ERRNO(pl_syncall());
}

int syncfs(int fd)
{
	int rc = CALL(syncfs)(fd);

	if (rc == 0)
		KEEP_ERRNO(pl_syncall());
	return rc;
}

/* A rename: both names inside the root, or a NOTE (J5). */
static void pl_rename_pre(struct pl_pend *p, int od, const char *on, int nd,
			  const char *nn, unsigned flags)
{
	char src[PATH_MAX];
	struct pl_rec r = { .type = PL_RENAME };
	struct statx st;
	char saved[32] = "";
	int in_src, in_dst;

	p->id = 0;
	if (!pl_on || pl_at_path(od, on, src) || pl_at_path(nd, nn, p->path))
		return;
	in_src = pl_inside(src);
	in_dst = pl_inside(p->path);
	if (!in_src && !in_dst)
		return;
	if (in_src != in_dst) {
		pl_note(in_src ? src : p->path, "rename across the root");
		return;
	}
	if (flags & (RENAME_EXCHANGE | RENAME_WHITEOUT)) {
		pl_note(src, "renameat2 with RENAME_EXCHANGE or WHITEOUT");
		return;
	}
	p->type = PL_RENAME;
	p->id = pl_next_id();
	r.id = p->id;
	r.parent = pl_parent(src);
	r.parent2 = pl_parent(p->path);
	if (pl_statx(AT_FDCWD, src, AT_SYMLINK_NOFOLLOW, &st) == 0)
		r.obj = pl_ident_of(&st);
	if (!strcmp(src, p->path)) {
		/* same name: nothing changes */
	} else if (pl_statx(AT_FDCWD, p->path, AT_SYMLINK_NOFOLLOW, &st) == 0) {
		r.flags |= PLF_VICTIM;
		r.victim = pl_ident_of(&st);
		r.mode = st.stx_mode;
		if (S_ISDIR(st.stx_mode)) {
			r.flags |= PLF_VICTIM_DIR;
		} else if (!(flags & RENAME_NOREPLACE)) {
			pl_save(p->path, p->id, saved);
			if (saved[0])
				r.flags |= PLF_SAVED;
		}
	}
	pl_record(&r, src, p->path, saved[0] ? saved : NULL);
}

static int pl_rename_any(int which, int od, const char *on, int nd,
			 const char *nn, unsigned flags)
{
	struct pl_pend p;
	int rc, e;

	KEEP_ERRNO(pl_rename_pre(&p, od, on, nd, nn, flags));
	if (which == 0)
		rc = CALL(rename)(on, nn);
	else if (which == 1)
		rc = CALL(renameat)(od, on, nd, nn);
	else
		rc = CALL(renameat2)(od, on, nd, nn, flags);
	e = errno;
	pl_done(&p, rc, e, -1);
	errno = e;
	return rc;
}

int rename(const char *on, const char *nn)
{
	return pl_rename_any(0, AT_FDCWD, on, AT_FDCWD, nn, 0);
}

int renameat(int od, const char *on, int nd, const char *nn)
{
	return pl_rename_any(1, od, on, nd, nn, 0);
}

int renameat2(int od, const char *on, int nd, const char *nn, unsigned flags)
{
	return pl_rename_any(2, od, on, nd, nn, flags);
}

/* unlink, unlinkat, rmdir, remove; which picks the real call. */
static int pl_unlink_any(int which, int dirfd, const char *path, int flags)
{
	struct pl_pend p;
	int rc, e, type = PL_UNLINK;

	if (which == 2 || (which == 1 && (flags & AT_REMOVEDIR)))
		type = PL_RMDIR;
	if (which == 3) { /* remove: unlink, or rmdir of a directory */
		struct statx st;

		KEEP_ERRNO(if (pl_statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW,
					&st) == 0 && S_ISDIR(st.stx_mode))
				   type = PL_RMDIR);
	}
	KEEP_ERRNO(pl_name_op(&p, type, dirfd, path, 0));
	switch (which) {
	case 0: rc = CALL(unlink)(path); break;
	case 1: rc = CALL(unlinkat)(dirfd, path, flags); break;
	case 2: rc = CALL(rmdir)(path); break;
	default: rc = CALL(remove)(path); break;
	}
	e = errno;
	pl_done(&p, rc, e, -1);
	errno = e;
	return rc;
}

int unlink(const char *path)
{
	return pl_unlink_any(0, AT_FDCWD, path, 0);
}

int unlinkat(int dirfd, const char *path, int flags)
{
	return pl_unlink_any(1, dirfd, path, flags);
}

int rmdir(const char *path)
{
	return pl_unlink_any(2, AT_FDCWD, path, AT_REMOVEDIR);
}

int remove(const char *path)
{
	return pl_unlink_any(3, AT_FDCWD, path, 0);
}

static int pl_mkdir_any(int which, int dirfd, const char *path, mode_t mode)
{
	struct pl_pend p;
	int rc, e;

	KEEP_ERRNO(pl_name_op(&p, PL_MKDIR, dirfd, path, mode));
	rc = which ? CALL(mkdirat)(dirfd, path, mode) : CALL(mkdir)(path, mode);
	e = errno;
	pl_done(&p, rc, e, -1);
	errno = e;
	return rc;
}

int mkdir(const char *path, mode_t mode)
{
	return pl_mkdir_any(0, AT_FDCWD, path, mode);
}

int mkdirat(int dirfd, const char *path, mode_t mode)
{
	return pl_mkdir_any(1, dirfd, path, mode);
}

/* link, linkat, symlink, symlinkat: a new name (the inode of a link is
 * that of its source; of a symlink, known after the call). */
static void pl_link_pre(struct pl_pend *p, int od, const char *on, int nd,
			const char *nn, int lflags, int symlink)
{
	struct pl_rec r = { .type = PL_LINK };
	struct statx st;

	p->id = 0;
	if (!pl_on || pl_at_path(nd, nn, p->path) || !pl_inside(p->path))
		return;
	p->type = PL_LINK;
	p->id = pl_next_id();
	r.id = p->id;
	r.parent = pl_parent(p->path);
	if (symlink)
		r.flags |= PLF_SYMLINK;
	else if (pl_statx(od, on, (lflags & AT_SYMLINK_FOLLOW) ? 0 :
			  AT_SYMLINK_NOFOLLOW, &st) == 0)
		r.obj = pl_ident_of(&st);
	pl_record(&r, p->path, NULL, NULL);
}

static int pl_link_any(int which, int od, const char *on, int nd,
		       const char *nn, int flags)
{
	struct pl_pend p;
	int rc, e;

	KEEP_ERRNO(pl_link_pre(&p, od, on, nd, nn, flags, which >= 2));
	switch (which) {
	case 0: rc = CALL(link)(on, nn); break;
	case 1: rc = CALL(linkat)(od, on, nd, nn, flags); break;
	case 2: rc = CALL(symlink)(on, nn); break;
	default: rc = CALL(symlinkat)(on, nd, nn); break;
	}
	e = errno;
	pl_done(&p, rc, e, -1);
	errno = e;
	return rc;
}

int link(const char *on, const char *nn)
{
	return pl_link_any(0, AT_FDCWD, on, AT_FDCWD, nn, 0);
}

int linkat(int od, const char *on, int nd, const char *nn, int flags)
{
	return pl_link_any(1, od, on, nd, nn, flags);
}

int symlink(const char *target, const char *nn)
{
	return pl_link_any(2, AT_FDCWD, target, AT_FDCWD, nn, 0);
}

int symlinkat(const char *target, int nd, const char *nn)
{
	return pl_link_any(3, AT_FDCWD, target, nd, nn, 0);
}

/* Writes through a shared writable mapping are invisible to the layer. */
static void pl_mmap_pre(int prot, int flags, int fd)
{
	char abs[PATH_MAX];

	if (pl_on && fd >= 0 && (prot & PROT_WRITE) && (flags & MAP_SHARED) &&
	    pl_fd_path(fd, abs) == 0 && pl_inside(abs))
		pl_note(abs, "a writable shared mapping");
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	KEEP_ERRNO(pl_mmap_pre(prot, flags, fd));
	return CALL(mmap)(addr, len, prot, flags, fd, off);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd,
	     off64_t off)
{
	KEEP_ERRNO(pl_mmap_pre(prot, flags, fd));
	return CALL(mmap64)(addr, len, prot, flags, fd, off);
}

/* ---- start ---- */

__attribute__((constructor)) static void pl_init(void)
{
	const char *root = getenv("POWERLOSS_ROOT");
	const char *dir = getenv("POWERLOSS_DIR");
	size_t rl, dl;
	struct pl_rec r = { .type = PL_START };

	/* resolve every real function now, before threads and children */
	CALL(open); CALL(open64); CALL(openat); CALL(openat64);
	CALL(__open_2); CALL(__open64_2); CALL(__openat_2);
	CALL(__openat64_2); CALL(creat); CALL(creat64);
	CALL(write); CALL(pwrite); CALL(pwrite64); CALL(writev);
	CALL(pwritev); CALL(pwritev64); CALL(pwritev2); CALL(pwritev64v2);
	CALL(ftruncate); CALL(ftruncate64); CALL(truncate); CALL(truncate64);
	CALL(fallocate); CALL(fallocate64); CALL(posix_fallocate);
	CALL(posix_fallocate64); CALL(copy_file_range); CALL(sendfile);
	CALL(sendfile64); CALL(splice); CALL(fsync); CALL(fdatasync);
	CALL(sync); CALL(syncfs); CALL(rename); CALL(renameat);
	CALL(renameat2); CALL(unlink); CALL(unlinkat); CALL(rmdir);
	CALL(remove); CALL(mkdir); CALL(mkdirat); CALL(link); CALL(linkat);
	CALL(symlink); CALL(symlinkat); CALL(mmap); CALL(mmap64);

	if (!root || !dir || root[0] != '/' || dir[0] != '/')
		return;
	rl = strlen(root);
	dl = strlen(dir);
	if (rl + 1 >= sizeof(pl_root) || dl + 16 >= sizeof(pl_journal))
		pl_die("POWERLOSS_ROOT or POWERLOSS_DIR too long");
	if (pl_join("/", root, pl_root))
		pl_die("POWERLOSS_ROOT");
	pl_rootlen = strlen(pl_root);
	memcpy(pl_journal, dir, dl);
	memcpy(pl_journal + dl, "/journal", 9);
	memcpy(pl_links, dir, dl);
	memcpy(pl_links + dl, "/links", 7);
	if (syscall(SYS_mkdirat, AT_FDCWD, pl_links, 0700) < 0 &&
	    errno != EEXIST)
		pl_die("cannot create POWERLOSS_DIR/links");
	pl_on = 1;
	pl_record(&r, pl_root, NULL, NULL);
}
