/*
 * fsops.c - the FUSE operations: the tree of jobs and their files.
 *
 *   /                    jobs (mkdir, rmdir)
 *   /NAME/spec           rw   the job definition
 *   /NAME/input          rw   what to process
 *   /NAME/control        rw   one verb per write; reading lists them
 *   /NAME/status         r    human-readable progress
 *   /NAME/status.json    r
 *   /NAME/manifest.json  r
 *   /NAME/events         r    JSON lines
 *   /NAME/chunks/N.EXT   r    done chunks; unlink = redo
 *   /NAME/logs/N.log     r    worker stderr
 *   /NAME/output.EXT     r    done chunks joined (the prefix from 1)
 *
 * Every operation parses its path into a struct node and calls the engine.
 * Generated files are rendered at open into the handle and served with
 * direct_io, so every open sees fresh content; stat reports the size of a
 * fresh rendering, and fstat of an open one the size of what it reads.
 * Chunk files are served from their object with pread.
 */
#define FUSE_USE_VERSION 314
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crashpoint.h"
#include "engine.h"
#include "fsops.h"
#include "spec.h"

enum kind {
	K_ROOT,
	K_JOB,
	K_SPEC,
	K_INPUT,
	K_CONTROL,
	K_STATUS,
	K_STATUS_JSON,
	K_MANIFEST,
	K_EVENTS,
	K_CHUNKS,
	K_LOGS,
	K_OUTPUT,
	K_ENCODED,
	K_CHUNK,
	K_LOG,
};

static const struct {
	const char *name;
	enum kind kind;
} job_files[] = {
	{ "spec", K_SPEC },
	{ "input", K_INPUT },
	{ "control", K_CONTROL },
	{ "status", K_STATUS },
	{ "status.json", K_STATUS_JSON },
	{ "manifest.json", K_MANIFEST },
	{ "events", K_EVENTS },
	{ "chunks", K_CHUNKS },
	{ "logs", K_LOGS },
};

struct node {
	enum kind kind;
	char job[65];
	uint32_t n;
	struct job_info info;
};

struct handle {
	struct handle *prev, *next;   /* every open handle, for destroy */
	enum kind kind;
	char job[65];
	int fd;
	char *buf;            /* rendered content, or the spec being written */
	size_t len, cap;
	int writing;
	int dirty;            /* written since the last commit */
	int trunc_only;       /* opened with O_TRUNC, nothing written yet */
	int refused;          /* a write failed with this -errno: nothing
			       * of this handle is committed */
	struct input_tx *itx;
	int ifd;              /* the tx's descriptor, borrowed */
	struct output_view *ov;
	uint32_t n;               /* chunk files: the chunk */
	struct chunk_cache cc;    /* chunk files and output.EXT: what the
				   * open said of the page cache */
};

static struct engine *E(void)
{
	return fuse_get_context()->private_data;
}

/* Only the user who mounted jobfs may change anything: writing a spec or a
 * verb runs code as that user. The kernel enforces this too when others
 * are let in (allow_other adds default_permissions); this is the second
 * lock on the same door. */
static int owner(void)
{
	return fuse_get_context()->uid == getuid();
}

/* "0007.out" -> 7, checking the exact width and extension so that every
 * chunk has one name. */
static int parse_numbered(const char *s, unsigned width, const char *ext,
			  uint32_t *n)
{
	size_t digits = 0;
	uint64_t v = 0;

	while (s[digits] >= '0' && s[digits] <= '9') {
		v = v * 10 + (uint64_t)(s[digits] - '0');
		if (v > UINT32_MAX)
			return -ENOENT;
		digits++;
	}
	if (digits != width || s[digits] != '.' || strcmp(s + digits + 1, ext))
		return -ENOENT;
	*n = (uint32_t)v;
	return v ? 0 : -ENOENT;
}

static int parse_path(const char *path, struct node *nd)
{
	const char *p = path + 1, *slash;
	size_t len;
	int rc;

	memset(nd, 0, sizeof(*nd));
	if (!*p) {
		nd->kind = K_ROOT;
		return 0;
	}
	slash = strchr(p, '/');
	len = slash ? (size_t)(slash - p) : strlen(p);
	if (len >= sizeof(nd->job))
		return -ENOENT;
	memcpy(nd->job, p, len);
	nd->job[len] = '\0';
	rc = engine_job_info(E(), nd->job, &nd->info);
	if (rc)
		return rc;
	if (!slash) {
		nd->kind = K_JOB;
		return 0;
	}
	p = slash + 1;
	slash = strchr(p, '/');
	if (!slash) {
		char out[32];

		for (size_t i = 0; i < sizeof(job_files) / sizeof(job_files[0]);
		     i++) {
			if (!strcmp(p, job_files[i].name)) {
				nd->kind = job_files[i].kind;
				return 0;
			}
		}
		snprintf(out, sizeof(out), "output.%s", nd->info.ext);
		if (nd->info.has_output && !strcmp(p, out)) {
			nd->kind = K_OUTPUT;
			return 0;
		}
		if (nd->info.encoded) {
			snprintf(out, sizeof(out), "output.%s",
				 nd->info.encoded);
			if (!strcmp(p, out)) {
				nd->kind = K_ENCODED;
				return 0;
			}
		}
		return -ENOENT;
	}
	if (!strncmp(p, "chunks/", 7)) {
		nd->kind = K_CHUNK;
		return parse_numbered(p + 7, nd->info.width, nd->info.ext,
				      &nd->n);
	}
	if (!strncmp(p, "logs/", 5)) {
		nd->kind = K_LOG;
		return parse_numbered(p + 5, nd->info.width, "log", &nd->n);
	}
	return -ENOENT;
}

static void set_time(struct timespec *ts, int64_t ms)
{
	ts->tv_sec = (time_t)(ms / 1000);
	ts->tv_nsec = (long)(ms % 1000) * 1000000;
}

static int rendered_size(const struct node *nd, enum render_what w,
			 off_t *size)
{
	char *buf;
	size_t len;
	int rc = engine_render(E(), nd->job, w, &buf, &len);

	if (rc)
		return rc;
	free(buf);
	*size = (off_t)len;
	return 0;
}

/* The size of a generated file: for fstat of an open one, what that
 * handle reads (exact, and no rendering); else a fresh rendering's. */
static int generated_size(const struct node *nd, const struct handle *h,
			  enum render_what w, off_t *size)
{
	if (h && h->kind == nd->kind && !h->writing && h->buf) {
		*size = (off_t)h->len;
		return 0;
	}
	return rendered_size(nd, w, size);
}

static int fs_getattr(const char *path, struct stat *st,
		      struct fuse_file_info *fi)
{
	struct handle *h = fi ? (struct handle *)(uintptr_t)fi->fh : NULL;
	struct node nd;
	uint64_t size;
	int64_t mtime;
	int rc;

	rc = parse_path(path, &nd);
	if (rc)
		return rc;
	memset(st, 0, sizeof(*st));
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_nlink = 1;
	set_time(&st->st_mtim, nd.info.updated_ms);
	set_time(&st->st_ctim, nd.info.updated_ms);
	set_time(&st->st_atim, nd.info.updated_ms);
	switch (nd.kind) {
	case K_ROOT:
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
		clock_gettime(CLOCK_REALTIME, &st->st_mtim);
		st->st_ctim = st->st_atim = st->st_mtim;
		return 0;
	case K_JOB:
	case K_CHUNKS:
	case K_LOGS:
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
		return 0;
	case K_SPEC:
		st->st_mode = S_IFREG | 0644;
		st->st_size = (off_t)nd.info.spec_len;
		return 0;
	case K_INPUT:
		st->st_mode = S_IFREG | 0644;
		st->st_size = (off_t)nd.info.input_len;
		return 0;
	case K_CONTROL:
		st->st_mode = S_IFREG | 0644;
		return rendered_size(&nd, RENDER_CONTROL, &st->st_size);
	case K_STATUS:
		st->st_mode = S_IFREG | 0444;
		return generated_size(&nd, h, RENDER_STATUS, &st->st_size);
	case K_STATUS_JSON:
		st->st_mode = S_IFREG | 0444;
		return generated_size(&nd, h, RENDER_STATUS_JSON,
				      &st->st_size);
	case K_MANIFEST:
		st->st_mode = S_IFREG | 0444;
		return generated_size(&nd, h, RENDER_MANIFEST, &st->st_size);
	case K_EVENTS:
		st->st_mode = S_IFREG | 0444;
		st->st_size = (off_t)nd.info.events_len;
		return 0;
	case K_OUTPUT:
		st->st_mode = S_IFREG | 0444;
		rc = engine_output_stat(E(), nd.job, &size);
		st->st_size = (off_t)size;
		return rc;
	case K_ENCODED:
		st->st_mode = S_IFREG | 0444;
		rc = engine_encoded_stat(E(), nd.job, &size);
		st->st_size = (off_t)size;
		return rc;
	case K_CHUNK:
		st->st_mode = S_IFREG | 0444;
		rc = engine_chunk_stat(E(), nd.job, nd.n, &size, &mtime);
		st->st_size = (off_t)size;
		set_time(&st->st_mtim, mtime);
		st->st_ctim = st->st_mtim;
		return rc;
	case K_LOG:
		st->st_mode = S_IFREG | 0444;
		rc = engine_log_stat(E(), nd.job, nd.n, &size, &mtime);
		st->st_size = (off_t)size;
		set_time(&st->st_mtim, mtime);
		st->st_ctim = st->st_mtim;
		return rc;
	}
	return -ENOENT;
}

struct fill_ctx {
	void *buf;
	fuse_fill_dir_t filler;
	unsigned width;
	const char *ext;
	int offsets;
};

static int fill_job(void *arg, const char *name)
{
	struct fill_ctx *c = arg;

	return c->filler(c->buf, name, NULL, 0, 0) ? 1 : 0;
}

/* chunks/ is listed with offsets (libfuse then hands the kernel one
 * buffer at a time instead of building the whole listing): "." is 1, ".."
 * 2, chunk N is N + 2. logs/ is small and listed whole (offset 0). */
static int fill_chunk(void *arg, uint32_t n)
{
	struct fill_ctx *c = arg;
	char name[64];

	snprintf(name, sizeof(name), "%0*" PRIu32 ".%s", c->width, n, c->ext);
	return c->filler(c->buf, name, NULL, c->offsets ? (off_t)n + 2 : 0,
			 0) ? 1 : 0;
}

static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t filler,
		      off_t off, struct fuse_file_info *fi,
		      enum fuse_readdir_flags flags)
{
	struct fill_ctx c = { buf, filler, 0, NULL, 0 };
	struct node nd;
	int rc;

	(void)fi;
	(void)flags;
	rc = parse_path(path, &nd);
	if (rc)
		return rc;
	if (nd.kind == K_CHUNKS) {
		if (off < 1 && filler(buf, ".", NULL, 1, 0))
			return 0;
		if (off < 2 && filler(buf, "..", NULL, 2, 0))
			return 0;
	} else {
		filler(buf, ".", NULL, 0, 0);
		filler(buf, "..", NULL, 0, 0);
	}
	switch (nd.kind) {
	case K_ROOT:
		rc = engine_job_list(E(), fill_job, &c);
		return rc > 0 ? 0 : rc;
	case K_JOB:
		for (size_t i = 0; i < sizeof(job_files) / sizeof(job_files[0]);
		     i++)
			filler(buf, job_files[i].name, NULL, 0, 0);
		if (nd.info.has_output) {
			char out[32];
			uint64_t size;

			/* an audio output exists once chunk 1 is done and
			 * the chunks can be joined */
			snprintf(out, sizeof(out), "output.%s", nd.info.ext);
			if (!nd.info.audio ||
			    engine_output_stat(E(), nd.job, &size) == 0)
				filler(buf, out, NULL, 0, 0);
			if (nd.info.encoded &&
			    engine_encoded_stat(E(), nd.job, &size) == 0) {
				snprintf(out, sizeof(out), "output.%s",
					 nd.info.encoded);
				filler(buf, out, NULL, 0, 0);
			}
		}
		return 0;
	case K_CHUNKS:
		c.width = nd.info.width;
		c.ext = nd.info.ext;
		c.offsets = 1;
		rc = engine_chunk_list(E(), nd.job, 0, off > 2 ?
				       (uint32_t)(off - 2) + 1 : 1,
				       fill_chunk, &c);
		return rc > 0 ? 0 : rc;
	case K_LOGS:
		c.width = nd.info.width;
		c.ext = "log";
		rc = engine_chunk_list(E(), nd.job, 1, 0, fill_chunk, &c);
		return rc > 0 ? 0 : rc;
	default:
		return -ENOTDIR;
	}
}

static int fs_mkdir(const char *path, mode_t mode)
{
	const char *name = path + 1;

	(void)mode;
	if (!owner())
		return -EACCES;
	if (strchr(name, '/')) {
		/* inside a job: only the fixed tree exists */
		struct node nd;

		return parse_path(path, &nd) == 0 ? -EEXIST : -EPERM;
	}
	return engine_job_create(E(), name);
}

static int fs_rmdir(const char *path)
{
	struct node nd;
	int rc = parse_path(path, &nd);

	if (!owner())
		return -EACCES;
	if (rc)
		return rc;
	if (nd.kind != K_JOB)
		return nd.kind == K_ROOT ? -EBUSY : -EPERM;
	return engine_job_delete(E(), nd.job);
}

static int fs_unlink(const char *path)
{
	struct node nd;
	int rc = parse_path(path, &nd);

	if (!owner())
		return -EACCES;
	if (rc)
		return rc;
	if (nd.kind != K_CHUNK)
		return -EPERM;
	return engine_chunk_remove(E(), nd.job, nd.n);
}

/* Handles still open when the filesystem goes away are never released by
 * the kernel: they are kept on a list and freed at destroy. */
static struct handle *open_handles;
static pthread_mutex_t handles_lock = PTHREAD_MUTEX_INITIALIZER;

static struct handle *handle_new(const struct node *nd)
{
	struct handle *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	pthread_mutex_lock(&handles_lock);
	h->next = open_handles;
	if (open_handles)
		open_handles->prev = h;
	open_handles = h;
	pthread_mutex_unlock(&handles_lock);
	h->kind = nd->kind;
	h->fd = h->ifd = -1;
	snprintf(h->job, sizeof(h->job), "%s", nd->job);
	h->n = nd->n;
	return h;
}

static void handle_free(struct handle *h)
{
	pthread_mutex_lock(&handles_lock);
	if (h->prev)
		h->prev->next = h->next;
	else
		open_handles = h->next;
	if (h->next)
		h->next->prev = h->prev;
	pthread_mutex_unlock(&handles_lock);
	if (h->fd >= 0)
		close(h->fd);
	if (h->itx)
		engine_input_abort(E(), h->itx);
	if (h->ov)
		engine_output_close(h->ov);
	free(h->buf);
	free(h);
}

static int fs_open(const char *path, struct fuse_file_info *fi)
{
	int acc = fi->flags & O_ACCMODE, trunc = !!(fi->flags & O_TRUNC);
	struct handle *h;
	struct node nd;
	int rc;

	rc = parse_path(path, &nd);
	if (rc)
		return rc;
	if (acc != O_RDONLY && ((nd.kind != K_SPEC && nd.kind != K_INPUT &&
				 nd.kind != K_CONTROL) || !owner()))
		return -EACCES;
	h = handle_new(&nd);
	if (!h)
		return -ENOMEM;
	h->writing = acc != O_RDONLY;
	switch (nd.kind) {
	case K_SPEC:
		if (h->writing) {
			rc = engine_spec_writable(E(), nd.job);
			if (rc)
				break;
			h->trunc_only = trunc;
			if (trunc)
				break;
		}
		rc = engine_render(E(), nd.job, RENDER_SPEC, &h->buf, &h->len);
		h->cap = h->len;
		break;
	case K_INPUT:
		if (h->writing)
			rc = engine_input_begin(E(), nd.job, trunc, &h->itx,
						&h->ifd);
		else
			rc = engine_input_open(E(), nd.job, &h->fd);
		if (!rc && h->writing)
			h->trunc_only = trunc;
		break;
	case K_CONTROL:
		if (!h->writing)
			rc = engine_render(E(), nd.job, RENDER_CONTROL,
					   &h->buf, &h->len);
		break;
	case K_STATUS:
		rc = engine_render(E(), nd.job, RENDER_STATUS, &h->buf,
				   &h->len);
		break;
	case K_STATUS_JSON:
		rc = engine_render(E(), nd.job, RENDER_STATUS_JSON, &h->buf,
				   &h->len);
		break;
	case K_MANIFEST:
		rc = engine_render(E(), nd.job, RENDER_MANIFEST, &h->buf,
				   &h->len);
		break;
	case K_EVENTS:
		rc = engine_events_open(E(), nd.job, &h->fd);
		break;
	case K_CHUNK:
		if (nd.info.audio)
			rc = engine_chunk_view(E(), nd.job, nd.n, &h->ov,
					       &h->cc);
		else
			rc = engine_chunk_open(E(), nd.job, nd.n, &h->fd,
					       &h->cc);
		break;
	case K_LOG:
		rc = engine_log_open(E(), nd.job, nd.n, &h->fd);
		break;
	case K_OUTPUT:
		rc = engine_output_open_cached(E(), nd.job, &h->ov, &h->cc);
		break;
	case K_ENCODED:
		rc = engine_encoded_open(E(), nd.job, &h->fd);
		break;
	default:
		rc = -EISDIR;
		break;
	}
	if (rc) {
		handle_free(h);
		return rc;
	}
	/* Everything but finished outputs can change between opens: bypass
	 * the page cache for it. A chunk file's bytes are fixed while its
	 * done record is, output.EXT's while every chunk is done and the job
	 * unchanged: the engine says whether this open may use the cache and
	 * whether the pages the kernel may hold are of the same bytes
	 * (engine_chunk_open, engine_output_open_cached). */
	fi->direct_io = nd.kind != K_ENCODED && !h->cc.cached;
	fi->keep_cache = h->cc.keep;
	fi->fh = (uintptr_t)h;
	return 0;
}

static int fs_read(const char *path, char *buf, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	ssize_t n;

	(void)path;
	if (h->ov)
		return (int)engine_output_read(h->ov, buf, size, (uint64_t)off);
	if (h->kind == K_INPUT && h->writing) {
		n = pread(h->ifd, buf, size, off);
		return n < 0 ? -errno : (int)n;
	}
	if (h->fd >= 0) {
		n = pread(h->fd, buf, size, off);
		return n < 0 ? -errno : (int)n;
	}
	if (h->buf) {
		if ((size_t)off >= h->len)
			return 0;
		if (size > h->len - (size_t)off)
			size = h->len - (size_t)off;
		memcpy(buf, h->buf + off, size);
		return (int)size;
	}
	return 0;
}

static int buf_reserve(struct handle *h, size_t need)
{
	if (need <= h->cap)
		return 0;
	{
		size_t cap = need * 2 > 4096 ? need * 2 : 4096;
		char *p = realloc(h->buf, cap);

		if (!p)
			return -ENOMEM;
		h->buf = p;
		h->cap = cap;
	}
	return 0;
}

static int fs_write(const char *path, const char *buf, size_t size,
		    off_t off, struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	int rc;

	(void)path;
	switch (h->kind) {
	case K_CONTROL:
		rc = engine_control(E(), h->job, buf, size);
		return rc ? rc : (int)size;
	case K_SPEC:
		if (h->refused)
			return h->refused;
		if ((uint64_t)off + size > SPEC_MAX_BYTES) {
			engine_spec_check(E(), h->job, "", SPEC_MAX_BYTES + 1);
			return h->refused = -EFBIG;
		}
		rc = buf_reserve(h, (size_t)off + size);
		if (rc)
			return rc;
		if ((size_t)off > h->len)
			memset(h->buf + h->len, 0, (size_t)off - h->len);
		memcpy(h->buf + off, buf, size);
		if ((size_t)off + size > h->len)
			h->len = (size_t)off + size;
		h->dirty = 1;
		/* judge a complete document now, so the failing write(2)
		 * itself reports it */
		if (spec_is_complete(h->buf, h->len)) {
			rc = engine_spec_check(E(), h->job, h->buf, h->len);
			if (rc)
				return h->refused = rc;
		}
		return (int)size;
	case K_INPUT: {
		ssize_t n;

		if (h->refused)
			return h->refused;
		if ((uint64_t)off + size > engine_max_input(E())) {
			/* the whole write is void: a partial input must
			 * not replace the one in force */
			engine_input_refuse(E(), h->job, (uint64_t)off + size);
			return h->refused = -EFBIG;
		}
		if (!h->itx) {
			rc = engine_input_begin(E(), h->job, 0, &h->itx,
						&h->ifd);
			if (rc)
				return rc;
		}
		n = pwrite(h->ifd, buf, size, off);
		if (n < 0)
			return h->refused = -errno;
		crashpoint("mid-input");
		h->dirty = 1;
		return (int)n;
	}
	default:
		return -EBADF;
	}
}

static int fs_truncate(const char *path, off_t size,
		       struct fuse_file_info *fi)
{
	struct handle *h = fi ? (struct handle *)(uintptr_t)fi->fh : NULL;
	struct node nd;
	int rc;

	if (!owner())
		return -EACCES;
	if (h && h->writing && h->kind == K_SPEC) {
		rc = buf_reserve(h, (size_t)size);
		if (rc)
			return rc;
		if ((size_t)size > h->len)
			memset(h->buf + h->len, 0, (size_t)size - h->len);
		h->len = (size_t)size;
		h->dirty = 1;
		return 0;
	}
	if (h && h->writing && h->kind == K_INPUT) {
		if (!h->itx) {
			rc = engine_input_begin(E(), h->job, 0, &h->itx,
						&h->ifd);
			if (rc)
				return rc;
		}
		if ((uint64_t)size > engine_max_input(E()))
			return -EFBIG;
		if (ftruncate(h->ifd, size) < 0)
			return -errno;
		h->dirty = 1;
		return 0;
	}
	rc = parse_path(path, &nd);
	if (rc)
		return rc;
	if (nd.kind == K_CONTROL)
		return 0; /* "echo verb > control" truncates first */
	if (nd.kind == K_INPUT) {
		struct input_tx *tx;
		int fd;

		if ((uint64_t)size > engine_max_input(E()))
			return -EFBIG;
		rc = engine_input_begin(E(), nd.job, size == 0, &tx, &fd);
		if (rc)
			return rc;
		if (ftruncate(fd, size) < 0) {
			rc = -errno;
			engine_input_abort(E(), tx);
			return rc;
		}
		return engine_input_commit(E(), tx);
	}
	if (nd.kind == K_SPEC)
		return size == 0 ? engine_spec_set(E(), nd.job, "", 0) : -EINVAL;
	return -EACCES;
}

/*
 * Commit what a write handle holds. flush runs at every close(2) of a
 * descriptor, and a shell's "echo x > spec" closes one right after
 * open(O_TRUNC), before writing: so flush commits only what was written,
 * and a truncation with nothing written after it is committed at release,
 * where no error can be returned (status still says it).
 */
static int handle_commit(struct handle *h)
{
	int rc = 0;

	h->dirty = h->trunc_only = 0;
	if (h->kind == K_SPEC) {
		rc = engine_spec_set(E(), h->job, h->buf ? h->buf : "",
				     h->len);
	} else if (h->kind == K_INPUT && h->itx) {
		struct input_tx *tx = h->itx;

		h->itx = NULL;
		rc = engine_input_commit(E(), tx);
	}
	return rc;
}

static int fs_flush(const char *path, struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;

	(void)path;
	if (h->refused)
		return h->refused;
	if (!h->writing || !h->dirty)
		return 0;
	return handle_commit(h);
}

static int fs_release(const char *path, struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;

	(void)path;
	if (h->writing && !h->refused && (h->dirty || h->trunc_only))
		handle_commit(h);
	if (h->kind == K_CHUNK && h->cc.tag)
		engine_chunk_closed(E(), h->job, h->n, &h->cc);
	else if (h->kind == K_OUTPUT && h->cc.tag)
		engine_output_closed(E(), h->job, &h->cc);
	handle_free(h);
	return 0;
}

static int fs_utimens(const char *path, const struct timespec tv[2],
		      struct fuse_file_info *fi)
{
	struct node nd;

	(void)tv;
	(void)fi;
	return parse_path(path, &nd); /* accepted, not kept (touch works) */
}

static int fs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct node nd;
	int rc = parse_path(path, &nd);

	(void)mode;
	(void)fi;
	return rc ? rc : -EPERM;
}

static int fs_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct node nd;
	int rc = parse_path(path, &nd);

	(void)mode;
	if (rc == 0)
		return fs_open(path, fi);
	return -EACCES;
}

static int fs_rename(const char *from, const char *to, unsigned int flags)
{
	(void)from;
	(void)to;
	(void)flags;
	return -EPERM;
}

static void *fs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	struct engine *e = fuse_get_context()->private_data;

	/* O_TRUNC arrives with open, so "cp x input" is one transaction. */
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	/* Whether a chunk file's cached pages are still good is decided at
	 * open (fs_open). libfuse asks by default for the kernel to check
	 * the attributes before every read of a cached file instead, which
	 * costs a getattr round trip per read(2) (with attr_timeout 0): a
	 * re-read with 128 KiB reads ran at 0.4x tmpfs. */
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	/* No splice: measured, it did not make first reads faster here
	 * (docs/performance.md), and libfuse keeps a pipe per thread for it.
	 * libfuse asks for it by default where the kernel offers it. */
	conn->want &= ~(FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE |
			FUSE_CAP_SPLICE_READ);
	cfg->use_ino = 0;
	cfg->nullpath_ok = 0;
	cfg->hard_remove = 1;
	/* Sizes and listings change under the kernel's feet (a chunk
	 * commits, status grows): attributes are never cached, and a name
	 * that does not exist is asked for again every time. A name that
	 * exists is kept for a second, which spares a status reader the
	 * lookups of the job and of the file (each of which would render
	 * status). A name that goes away meanwhile (a chunk that a retry
	 * discards) answers ENOENT at its next stat or open, since both
	 * ask the daemon; reads of a kept chunk file check its attributes
	 * first (FUSE_CAP_AUTO_INVAL_DATA). */
	cfg->attr_timeout = 0;
	cfg->entry_timeout = 1;
	cfg->negative_timeout = 0;
	return e;
}

static void fs_destroy(void *private_data)
{
	(void)private_data;
	while (open_handles)
		handle_free(open_handles);
}

const struct fuse_operations jobfs_ops = {
	.init = fs_init,
	.destroy = fs_destroy,
	.getattr = fs_getattr,
	.readdir = fs_readdir,
	.mkdir = fs_mkdir,
	.rmdir = fs_rmdir,
	.unlink = fs_unlink,
	.open = fs_open,
	.create = fs_create,
	.read = fs_read,
	.write = fs_write,
	.truncate = fs_truncate,
	.flush = fs_flush,
	.release = fs_release,
	.utimens = fs_utimens,
	.chmod = fs_chmod,
	.rename = fs_rename,
};
