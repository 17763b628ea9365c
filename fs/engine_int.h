/*
 * engine_int.h - the engine's internal structures, shared by engine.c (the
 * scheduler, attempts and commits), plan.c (spec, input and re-planning)
 * and render.c (status, status.json, manifest.json, events).
 *
 * Locking: one mutex, e->lock, guards every field below that is not marked
 * otherwise. An LMDB write transaction is only ever opened with e->lock
 * held, so the lock order is always e->lock -> LMDB's writer lock.
 */
#ifndef JOBFS_ENGINE_INT_H
#define JOBFS_ENGINE_INT_H

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>

#include "audio.h"
#include "db.h"
#include "engine.h"
#include "exec.h"
#include "objects.h"
#include "spec.h"

/*
 * In-memory chunk state, one byte per chunk. The durable state (db.h's
 * chunk_state) knows only pending, done and failed: a running chunk is
 * pending on disk, so a crash sends it back to pending without spending an
 * attempt.
 *
 *            start            exit 0           commit
 *   PENDING ------> RUNNING ---------> COMMIT --------> DONE
 *      ^  ^            |  |                |
 *      |  | backoff    |  | fail, budget   | store error
 *      |  +-- WAIT <---+  | left           v
 *      |                  | fail, none   (WAIT or FAILED)
 *      |                  v   left
 *      +--- resume --- FAILED
 *
 * cancel / shutdown: RUNNING -> PENDING (no attempt spent).
 * rm, retry N, verify mismatch: DONE -> PENDING.
 */
enum cs {
	CS_PENDING = 0,
	CS_DONE,
	CS_FAILED,
	CS_RUNNING,
	CS_WAIT,      /* failed, waiting out its backoff */
	CS_COMMIT,    /* exited 0, output being made durable */
};
#define CS_MASK 0x0f
#define CS_QUEUED 0x80   /* selected by retry / retry-failed / rm */
#define CS_LOG 0x40      /* has a stderr log */

enum kill_reason {
	KILL_NONE = 0,
	KILL_TIMEOUT,
	KILL_CANCEL,
	KILL_SHUTDOWN,
	KILL_OUTPUT,      /* output cap */
	KILL_FEED,        /* writing its stdin failed */
};

struct job;

struct attempt {
	struct attempt *next;        /* in e->attempts */
	struct job *job;
	uint32_t n;                  /* chunk number, from 1 */
	uint32_t number;             /* JOBFS_ATTEMPT */
	struct exec_attempt *ex;
	int ended;                   /* reaped */
	int in_fd;                   /* our end of the worker's stdin */
	uint64_t in_off, in_end;     /* input bytes read so far, end */
	char *inbuf;                 /* read, not yet written to the pipe */
	size_t inbuf_pos, inbuf_len;
	int feed_errno;
	int err_fd;                  /* our end of the worker's stderr */
	int log_fd, log_tried, logs_dir;
	uint64_t log_len, log_dropped;
	char *tail;                  /* ring of the last LOG_TAIL bytes */
	size_t tail_len, tail_pos;
	int out_fd;                  /* stdout temp file */
	char out_name[96];
	int out_moved;               /* out_fd is now the worker's
				      * JOBFS_OUTPUT file */
	char scratch[96];            /* name under scratch/ */
	int scratch_reused;          /* taken from the pool: it exists */
	char **env;                  /* the worker's, until it starts */
	struct attempt *start_next;  /* in e->startq */
	int64_t started_ms;
	double started_mono, deadline_mono;
	enum kill_reason kill;
	struct exec_result res;
	/* set by the committer */
	int commit_rc;
	char commit_err[160];
	uint8_t obj[SHA_LEN];
	uint64_t obj_size;
	char *inl;                   /* the output's bytes when it is kept
				      * in LMDB (up to inline_max) */
	struct audio_fmt fmt;        /* audio jobs: the samples' format */
};

struct job {
	char name[65];
	uint64_t id;
	struct job_rec rec;          /* as last committed */
	char *spec_text;             /* NULL if none */
	size_t spec_len;
	struct spec spec;            /* parsed spec_text */
	int has_spec;

	uint32_t nchunks;
	uint8_t *cs;                 /* nchunks bytes, enum cs | flags */
	uint32_t ndone, nfailed, nrunning, ncommit, nwait, nqueued;
	uint32_t nreused;            /* done chunks that were reused */
	uint32_t scan;               /* where the scheduler looks next */

	struct wait { uint32_t n; double when; } *waits;
	size_t nwaits, capwaits;

	int busy_writers;            /* open input write handles */
	int verifying;               /* a verify runs without the lock */
	int planning;                /* a new plan is being written to LMDB
				      * without the lock: the job, its spec,
				      * records and files stay as they are */
	uint64_t version;            /* bumped on every visible change */

	/* this run, for rate and ETA */
	double run_mono;             /* monotonic start of the run */
	double run_end_mono;         /* when it ended, 0 while it runs */
	uint32_t run_done;           /* chunks done in this run */
	uint64_t done_bytes;

	char last_reject[320];       /* last rejected spec, verb or write */
	int64_t last_reject_ms;
	char last_error[320];        /* last store error */
	char audio_problem[320];     /* why output.wav cannot be made */

	int events_fd;
	uint64_t events_len;

	int input_fd, input_open;    /* while chunks run */
	uint64_t input_size;

	/* output.flac / output.ogg (encode.c) */
	int encoding;                /* the encode thread works on it */
	uint64_t enc_total;
	volatile uint64_t enc_done;
	uint64_t enc_checked;        /* version + 1 when enc_ok was found */
	int enc_ok;
	uint8_t enc_failed_key[SHA_LEN];

	/* manifest cache */
	char *manifest;
	size_t manifest_len;
	uint64_t manifest_version;

	/* Per chunk, a tag of the done record whose file this mount last
	 * opened (0: never), nserved of them: see chunk_keep_cache(). */
	uint32_t *served;
	uint32_t nserved;
	uint64_t out_served;         /* the same for output.EXT: 1 + the
				      * version it was opened at, 0: never */

	int deleted;
};

#define SCRATCH_POOL_MAX 64           /* scratch directories kept */
#define OUT_POOL_MAX 64               /* stdout temp files kept */

struct engine {
	pthread_mutex_t lock;
	pthread_cond_t idle;          /* signalled when attempts end */
	struct engine_opts o;
	struct objstore os;
	struct db *db;
	struct executor *ex;

	struct job **jobs;
	size_t njobs, capjobs;

	struct attempt *attempts;     /* running or committing */
	unsigned nrunning;            /* global, running workers */

	/* the commit queue, for the commit thread */
	struct attempt **commitq;
	size_t ncommitq, capcommitq;
	uint8_t (*dead)[SHA_LEN];     /* objects that may have no refs left */
	size_t ndead, capdead;
	pthread_cond_t commit_cond;

	/* prepared attempts for the start thread (attempt_prepare); a
	 * queued or launching attempt is in no other list, and holds its
	 * slot in nrunning */
	struct attempt *startq, *startq_tail;
	unsigned nstarting;           /* queued or launching */
	int start_busy;               /* an attempt is being launched (by
				       * the start thread or the
				       * scheduler: one at a time) */
	pthread_cond_t start_cond;
	int stop_start;
	size_t committed_since_drop;  /* the commit thread's own */
	double last_commit_s;         /* and how long its last batch took */

	pthread_cond_t encode_cond;
	int encode_wanted, stop_encode;

	/* Scratch directories of attempts whose tree was contained and
	 * left them empty, and their emptied stdout temp files, kept for
	 * the next attempts (scratch_take(), out_take()). scratch_lock
	 * guards both pools. */
	pthread_mutex_t scratch_lock;
	char scratch_pool[SCRATCH_POOL_MAX][96];
	size_t nscratch_pool;
	char out_pool[OUT_POOL_MAX][96];
	size_t nout_pool;
	size_t inline_max;            /* outputs kept in LMDB up to this */

	int wake[2];                  /* self-pipe for the scheduler */
	pthread_t sched_thread, commit_thread, encode_thread, start_thread;
	int started, stopping, stop_commit, shut;
	volatile sig_atomic_t hurry;  /* engine_hurry(), from a signal */
	double stop_deadline;
};

/* engine.c */
/* A chunk's log, logs/ID/N.log, never through a symlink; log_open()
 * returns an fd (O_CREAT makes logs/ID too), all three a negative errno
 * on failure (log_unlink: 0 when there was none). */
int log_open(int logs, uint64_t job, uint32_t n, int flags);
int log_unlink(int logs, uint64_t job, uint32_t n);
int log_stat(int logs, uint64_t job, uint32_t n, struct stat *st);
/* An object's bytes: its file, or for an object kept in LMDB a sealed
 * memfd holding them. -ENOENT if it is gone. Called with e->lock held;
 * engine_obj_open_unlocked() takes it, for callers without it (the read
 * transaction it needs must not be open while the map is resized). */
int engine_obj_open(struct engine *e, const uint8_t sha[SHA_LEN],
		    int *fd_out);
int engine_obj_open_unlocked(struct engine *e, const uint8_t sha[SHA_LEN],
			     int *fd_out);
double mono_now(void);
int64_t wall_ms(void);
struct job *job_find(struct engine *e, const char *name);
void job_set_cs(struct job *j, uint32_t n, int state);
void job_bump(struct job *j);
int job_active(const struct job *j);
int job_busy(const struct job *j);
void text_clean(const char *in, char *out, size_t outlen);
void job_reject(struct job *j, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void job_event(struct job *j, uint32_t n, const char *event,
	       const char *fmt, ...);
void job_event_plan(struct job *j, uint32_t chunks, uint32_t reused,
		    uint32_t fresh, uint32_t changed);
void job_clear_waits(struct job *j);
/* A job in mode run (or running selected chunks) with nothing left to
 * run, running or committing goes idle (or back to its mode before the
 * selection), with a run-done or run-failed event. */
void job_check_finished(struct engine *e, struct job *j);
void engine_wake(struct engine *e);
void engine_mark_dead(struct engine *e, const uint8_t sha[SHA_LEN]);
int job_put_rec(struct engine *e, struct db_txn *t, struct job *j);
void job_unmap_input(struct job *j);
/* Free a job that is no longer in e->jobs, with everything it owns. */
void job_free(struct job *j);
unsigned job_width(const struct job *j);
const char *job_state_name(const struct job *j);
int job_runnable(const struct job *j, uint32_t n);

/* plan.c */

/* The chunks an input cuts into under a spec, each with the SHA-256 of
 * its text. Cutting reads and hashes the whole input, so it is done
 * without e->lock (plan_cut touches nothing shared); plan_job applies the
 * cut with the lock held. */
struct cut_item {
	uint64_t start, end;
	uint8_t text_sha[SHA_LEN];
};

struct plan_cut {
	struct cut_item *items;
	uint32_t n, cap;
};

/* Cut input[0, len) by sp (nothing when sp is NULL) into at most max
 * chunks: 0, -E2BIG when there would be more, -ENOMEM. */
int plan_cut(const uint8_t *input, size_t len, const struct spec *sp,
	     uint32_t max, struct plan_cut *out);
void plan_cut_free(struct plan_cut *c);

/* Replace j's plan with cut, the cut of the new input (input_len bytes,
 * input_sha) or, with input_sha NULL, of the input in force under the new
 * spec. Called with e->lock held and j not busy. */
int plan_job(struct engine *e, struct job *j, const char *new_spec,
	     size_t new_spec_len, const struct spec *new_parsed,
	     const struct plan_cut *cut, uint64_t input_len,
	     const uint8_t input_sha[SHA_LEN], int has_input);
/* Map j's committed input read-only (NULL, 0 when empty). */
int job_map_input_ro(struct engine *e, struct job *j, void **out,
		     size_t *len);
int job_input_name(const struct job *j, char *buf, size_t len);

/* api.c: views */
struct sha_ctx;
int view_new_locked(struct engine *e, struct job *j, struct output_view **out);
uint32_t view_pieces(const struct output_view *v);
void view_hash(const struct output_view *v, struct sha_ctx *c);
void view_format(const struct output_view *v, struct audio_fmt *fmt,
		 uint64_t *header_len);

/* encode.c */
void *encode_main(void *arg);
void engine_want_encode(struct engine *e);
int job_enc_valid(struct engine *e, struct job *j);

/* engine.c: cJSON allocations, watched. json_begin() clears this
 * thread's failure flag; json_failed() tells whether any cJSON allocation
 * failed since, so that a document missing parts is never served. */
void json_hooks_install(void);
void json_begin(void);
int json_failed(void);

/* render.c */
int render_status(struct engine *e, struct job *j, char **buf, size_t *len);
int render_status_json(struct engine *e, struct job *j, char **buf,
		       size_t *len);
int render_manifest(struct engine *e, struct job *j, char **buf,
		    size_t *len);
void iso_time(int64_t ms, char *buf, size_t len);

#endif
