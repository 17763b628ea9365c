/*
 * engine.h - the job engine: jobs, chunks, the scheduler and the commit
 * pipeline, behind the calls the FUSE layer makes.
 *
 * Every call names a job by its directory name and takes the engine lock
 * itself; none may be called with it held. Calls return 0 or a negative
 * errno: -ENOENT (no such job or chunk), -EINVAL (bad input: the reason is
 * recorded and shown in the job's status), -EBUSY (the job's state forbids
 * it: the reason likewise), -ENOMEM, -EIO, -ENOSPC.
 */
#ifndef JOBFS_ENGINE_H
#define JOBFS_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "exec.h"

struct engine;

struct engine_opts {
	const char *store;      /* store directory */
	unsigned max_running;   /* global limit on running chunks */
	double grace;           /* seconds running chunks get at shutdown */
	int no_resume;          /* do not resume running jobs at start */
	uint64_t max_input;     /* bytes; larger input writes get EFBIG */
	uint32_t max_chunks;    /* chunks per job */
	uint32_t max_jobs;
	uint64_t map_size;      /* initial LMDB map size, 0 = default */
	int inline_max;         /* outputs up to this many bytes are kept in
				 * LMDB, not as files: 0 = the default
				 * (ENGINE_INLINE_DEFAULT), < 0 = none; at
				 * most DB_INLINE_MAX (1984) */
};

#define ENGINE_INLINE_DEFAULT 1024

/*
 * Open the store's LMDB environment and run startup recovery: remove temp
 * files and worker scratch directories, clear stale readers, load every
 * job (chunks that were running go back to pending without spending an
 * attempt), collect objects nothing refers to. The store directory must
 * already be open and locked by the caller (main.c). Takes no ownership of
 * ex, which must outlive the engine. Sets SIGPIPE to ignored if it is at
 * its default: a write to a worker that has exited must fail with EPIPE.
 * Returns 0 and sets *out, or a negative errno with a message in err.
 */
int engine_open(const struct engine_opts *o, struct executor *ex,
		struct engine **out, char *err, size_t errlen);

/* Start the scheduler and commit threads; jobs that were running resume
 * unless o->no_resume. */
int engine_start(struct engine *e);

/*
 * Stop: start no new chunk, give running ones o->grace seconds to finish
 * and commit, kill the rest (they return to pending), wait for every
 * commit, stop the threads. Blocks until done. Idempotent.
 */
void engine_shutdown(struct engine *e);

/*
 * End the grace period of a shutdown now (or, called before it, let it
 * have none): running chunks are killed and return to pending, and the
 * shutdown goes on to its clean end. Async-signal-safe: called from the
 * handler of a second SIGTERM, SIGINT or SIGHUP.
 */
void engine_hurry(struct engine *e);

/* Free the engine after engine_shutdown(). */
void engine_close(struct engine *e);

/* ---- the tree ---- */

/* Valid job name: 1-64 bytes of [A-Za-z0-9._-], not starting with '.' or
 * '-'. */
int engine_name_ok(const char *name);

int engine_job_create(struct engine *e, const char *name);
int engine_job_delete(struct engine *e, const char *name);

typedef int (*engine_name_fn)(void *arg, const char *name);
int engine_job_list(struct engine *e, engine_name_fn fn, void *arg);

struct job_info {
	char ext[17];
	int has_output;          /* output.EXT exists */
	int audio;               /* chunk files are WAV views */
	const char *encoded;     /* "flac", "ogg": output.ENC when done */
	int64_t created_ms, updated_ms;
	uint32_t nchunks;
	unsigned width;          /* digits in chunk file names */
	uint64_t spec_len, input_len;
	uint64_t events_len;
};
int engine_job_info(struct engine *e, const char *name, struct job_info *out);

/* ---- job files ---- */

enum render_what {
	RENDER_STATUS,
	RENDER_STATUS_JSON,
	RENDER_MANIFEST,
	RENDER_CONTROL,     /* the list of verbs */
	RENDER_SPEC,        /* the spec text in force */
};

/* Render a job file; *buf is malloc'ed and owned by the caller. */
int engine_render(struct engine *e, const char *name, enum render_what w,
		  char **buf, size_t *len);

/* One control verb (a trailing newline is fine). */
int engine_control(struct engine *e, const char *name, const char *buf,
		   size_t len);

/*
 * The spec file. engine_spec_check() judges a complete text without
 * committing it (for write(2)); engine_spec_set() parses, commits and
 * re-plans. Both record a rejection in the job's status. -EBUSY while the
 * job runs.
 */
int engine_spec_check(struct engine *e, const char *name, const char *text,
		      size_t len);
int engine_spec_set(struct engine *e, const char *name, const char *text,
		    size_t len);
int engine_spec_writable(struct engine *e, const char *name);

/*
 * The input file. Writing goes to a temp file (engine_input_begin()
 * returns its descriptor, copied from the current input unless trunc);
 * engine_input_commit() makes it durable, re-cuts the job and re-plans,
 * reusing done outputs whose identity is unchanged; engine_input_abort()
 * drops it. engine_input_open() opens the committed input read-only.
 */
struct input_tx;
int engine_input_begin(struct engine *e, const char *name, int trunc,
		       struct input_tx **out, int *fd_out);
int engine_input_commit(struct engine *e, struct input_tx *tx);
void engine_input_abort(struct engine *e, struct input_tx *tx);
uint64_t engine_max_input(struct engine *e);
/* A write to input crossed the limit: record why in status. */
void engine_input_refuse(struct engine *e, const char *name, uint64_t size);
int engine_input_open(struct engine *e, const char *name, int *fd_out);

/* events: the open log for reading. */
int engine_events_open(struct engine *e, const char *name, int *fd_out);

/* ---- chunks/ and logs/ ---- */

typedef int (*engine_chunk_fn)(void *arg, uint32_t n);
/* Done chunks numbered from on, in order (chunks/), or chunks with a log
 * (logs/, every one, in no order), until fn returns non-zero (returned). */
int engine_chunk_list(struct engine *e, const char *name, int logs,
		      uint32_t from, engine_chunk_fn fn, void *arg);
/* Size and done time of a done chunk's output; -ENOENT if not done. */
int engine_chunk_stat(struct engine *e, const char *name, uint32_t n,
		      uint64_t *size, int64_t *mtime_ms);
/* What an open of a chunk file or of output.EXT tells the kernel about its
 * page cache: cached says whether this open may use the page cache at all
 * (a chunk file always; output.EXT only when every chunk is done, as it
 * changes while chunks join it), keep whether the kernel may keep what it
 * cached from an earlier open (only when that open served the same
 * bytes), and tag names what was served, for engine_chunk_closed() and
 * engine_output_closed(). */
struct chunk_cache {
	uint64_t tag;
	int keep;
	int cached;
};
int engine_chunk_open(struct engine *e, const char *name, uint32_t n,
		      int *fd_out, struct chunk_cache *cc);
/* A chunk file opened with cc is closed. If its chunk was redone since,
 * this open may have filled the cache with old bytes: the next open
 * starts afresh. */
void engine_chunk_closed(struct engine *e, const char *name, uint32_t n,
			 const struct chunk_cache *cc);
/* rm chunks/N: discard the output and run the chunk again. */
int engine_chunk_remove(struct engine *e, const char *name, uint32_t n);
int engine_log_open(struct engine *e, const char *name, uint32_t n,
		    int *fd_out);
int engine_log_stat(struct engine *e, const char *name, uint32_t n,
		    uint64_t *size, int64_t *mtime_ms);

/* ---- output.EXT ---- */

/* A snapshot of the joined output: the longest run of done chunks from
 * chunk 1, fixed at open. */
struct output_view;
int engine_output_open(struct engine *e, const char *name,
		       struct output_view **out);
/* The same, for a reader: cc as for a chunk file (engine_chunk_open). */
int engine_output_open_cached(struct engine *e, const char *name,
			      struct output_view **out,
			      struct chunk_cache *cc);
void engine_output_closed(struct engine *e, const char *name,
			  const struct chunk_cache *cc);
uint64_t engine_output_size(struct output_view *v);
ssize_t engine_output_read(struct output_view *v, char *buf, size_t size,
			   uint64_t off);
void engine_output_close(struct output_view *v);
int engine_output_stat(struct engine *e, const char *name, uint64_t *size);

/* output.flac / output.ogg once encoded; -ENOENT before, and whenever the
 * chunks changed since. */
int engine_encoded_stat(struct engine *e, const char *name, uint64_t *size);
int engine_encoded_open(struct engine *e, const char *name, int *fd_out);

/* Audio jobs: chunks/NNNN.wav is a view too (a header, then the chunk's
 * samples in place). */
int engine_chunk_view(struct engine *e, const char *name, uint32_t n,
		      struct output_view **out, struct chunk_cache *cc);

#endif
