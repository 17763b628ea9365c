/*
 * engine.c - jobs, the scheduler thread and the commit thread.
 *
 * Reading order: recovery (engine_open), the scheduler loop
 * (sched_main: start attempts, feed stdin, collect stderr, reap), the end of
 * an attempt (attempt_ended), the commit thread (commit_main), then the
 * calls the FUSE layer makes (verbs, chunks, output).
 *
 * The commit protocol, for one chunk (see docs/design.md):
 *   1. the worker writes its output to a temp file in STORE/tmp (stdout)
 *      or to JOBFS_OUTPUT in its scratch directory;
 *   2. the commit thread hashes it, fsyncs it, renames it to
 *      objects/xx/HASH and fsyncs that directory (objstore_publish);
 *   3. one LMDB write transaction (synchronous) marks the chunk done and
 *      counts the reference;
 *   4. only then does the chunk show in chunks/, status and output.
 * A crash before 3 leaves at most an unreferenced object, which startup
 * recovery removes; a crash after 3 leaves a durable, complete output.
 *
 * Invariants (checked in engine_check_locked in debug builds):
 *   I1. j->ndone, nfailed, nrunning, ncommit, nwait count the chunks of j
 *       in each state; nqueued counts the chunks with CS_QUEUED.
 *   I2. a chunk in CS_RUNNING or CS_COMMIT has exactly one attempt in
 *       e->attempts; no other chunk has any.
 *   I3. an object file is renamed into objects/ and unlinked from it only
 *       by the commit thread, so no unlink can fall between a publish and
 *       the commit that references it.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "crashpoint.h"
#include "engine_int.h"

#define LOG_HEAD (32 * 1024)   /* first bytes of stderr kept */
#define LOG_TAIL (32 * 1024)   /* last bytes of stderr kept */
#define FEED_MAX (256 * 1024)  /* stdin bytes written per wakeup */
#define FEED_BUF (64 * 1024)   /* per attempt, between input and pipe */
#define COMMIT_LINGER_MAX 0.002 /* s a batch may wait for more chunks */
#define COMMIT_BATCH_WANT 256   /* chunks that end the wait at once */
#define STORE_RETRY 1.0        /* seconds before retrying after a store
				* error that could not be recorded */

/* ------------------------------------------------------------------ */
/* small helpers */

double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int engine_name_ok(const char *name)
{
	size_t n = strlen(name);

	/* '.' starts the names jobfs keeps for itself; '-' would read as an
	 * option in `rm -r NAME` and the like */
	if (n < 1 || n > 64 || name[0] == '.' || name[0] == '-')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		      c == '-'))
			return 0;
	}
	return 1;
}

struct job *job_find(struct engine *e, const char *name)
{
	for (size_t i = 0; i < e->njobs; i++) {
		if (!strcmp(e->jobs[i]->name, name))
			return e->jobs[i];
	}
	return NULL;
}

unsigned job_width(const struct job *j)
{
	unsigned w = 1;

	for (uint32_t n = j->nchunks; n >= 10; n /= 10)
		w++;
	return w < 4 ? 4 : w;
}

void job_bump(struct job *j)
{
	j->version++;
}

/* Move chunk n to a new state, keeping the counters (I1). The CS_QUEUED
 * flag is kept unless state carries its own flags. */
void job_set_cs(struct job *j, uint32_t n, int state)
{
	uint8_t *p = &j->cs[n - 1];
	int old = *p & CS_MASK;
	uint32_t *ctr[] = {
		[CS_PENDING] = NULL, [CS_DONE] = &j->ndone,
		[CS_FAILED] = &j->nfailed, [CS_RUNNING] = &j->nrunning,
		[CS_WAIT] = &j->nwait, [CS_COMMIT] = &j->ncommit,
	};
	int queued = *p & CS_QUEUED;

	if (ctr[old])
		(*ctr[old])--;
	if (ctr[state & CS_MASK])
		(*ctr[state & CS_MASK])++;
	if (state & CS_QUEUED)
		queued = CS_QUEUED;
	if ((state & CS_MASK) == CS_DONE || (state & CS_MASK) == CS_FAILED)
		queued = 0; /* a queued chunk that ended is no longer queued */
	if (queued && !(*p & CS_QUEUED))
		j->nqueued++;
	else if (!queued && (*p & CS_QUEUED))
		j->nqueued--;
	*p = (uint8_t)((state & CS_MASK) | queued);
	job_bump(j);
}

/* Chunks of j that are running or being committed. */
int job_active(const struct job *j)
{
	return j->nrunning + j->ncommit > 0;
}

static uint32_t job_pending(const struct job *j)
{
	return j->nchunks - j->ndone - j->nfailed - j->nrunning -
		j->ncommit - j->nwait;
}

/* The job is running, in the sense that spec, input, reset and rmdir are
 * refused: something runs, or will start without another verb. */
int job_busy(const struct job *j)
{
	if (job_active(j) || j->planning)
		return 1;
	if (j->rec.mode == JOB_MODE_RUN)
		return job_pending(j) + j->nwait > 0;
	if (j->rec.mode == JOB_MODE_SELECTED)
		return j->nqueued > 0;
	return 0;
}

int job_runnable(const struct job *j, uint32_t n)
{
	uint8_t c = j->cs[n - 1];

	if ((c & CS_MASK) != CS_PENDING)
		return 0;
	if (j->rec.mode == JOB_MODE_RUN)
		return 1;
	return j->rec.mode == JOB_MODE_SELECTED && (c & CS_QUEUED);
}

const char *job_state_name(const struct job *j)
{
	if (!j->has_spec || !j->rec.has_input)
		return "new";
	if (j->rec.mode == JOB_MODE_PAUSE)
		return "paused";
	if (j->rec.mode == JOB_MODE_STOP && !job_active(j))
		return "stopped";
	if (job_busy(j))
		return "running";
	if (j->nchunks > 0 && j->ndone == j->nchunks)
		return "done";
	if (j->nfailed > 0)
		return "failed";
	if (j->rec.mode == JOB_MODE_STOP)
		return "stopped";
	if (j->nchunks == 0 && j->rec.run_started_ms)
		return "done";
	return "ready";
}

/* Length of the valid UTF-8 sequence at p (n bytes available) that is
 * not a control character, or 0. */
static size_t utf8_ok(const unsigned char *p, size_t n)
{
	unsigned c = p[0], need, cp, min;

	if (c >= 0x20 && c < 0x7f)
		return 1;
	if (c < 0xc2 || c > 0xf4)
		return 0; /* ASCII controls, stray or overlong lead bytes */
	need = c < 0xe0 ? 1 : c < 0xf0 ? 2 : 3;
	if (need >= n)
		return 0;
	cp = c & (0x3f >> need);
	for (unsigned i = 1; i <= need; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	min = need == 1 ? 0x80 : need == 2 ? 0x800 : 0x10000;
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ||
	    (cp >= 0x80 && cp < 0xa0))
		return 0; /* overlong, out of range, surrogate, C1 control */
	return need + 1;
}

/*
 * Copy text a user wrote (a verb, a list) into a message safe to print on
 * a terminal and to put in JSON: valid UTF-8 stays, control characters
 * and invalid bytes become \xNN, and the copy never ends inside a
 * character.
 */
void text_clean(const char *in, char *out, size_t outlen)
{
	const unsigned char *p = (const unsigned char *)in;
	size_t n = strlen(in), o = 0;

	while (n && outlen) {
		size_t k = utf8_ok(p, n);

		if (k) {
			if (o + k >= outlen)
				break;
			memcpy(out + o, p, k);
		} else {
			if (o + 4 >= outlen)
				break;
			snprintf(out + o, 5, "\\x%02x", *p);
			k = 1;
			o += 3; /* +1 below */
		}
		o += k;
		p += k;
		n -= k;
	}
	if (outlen)
		out[o < outlen ? o : outlen - 1] = '\0';
}

void job_reject(struct job *j, const char *fmt, ...)
{
	char raw[sizeof(j->last_reject)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	text_clean(raw, j->last_reject, sizeof(j->last_reject));
	j->last_reject_ms = wall_ms();
	job_event(j, 0, "rejected", "%s", j->last_reject);
	job_bump(j);
}

void iso_time(int64_t ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		 tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

/*
 * Append one event to the job's log. fmt builds the "error" field when the
 * event carries one; extra fields come from the va_list as key/value
 * pairs only through job_event_x() below.
 */
static void event_write(struct job *j, cJSON *o)
{
	char *line = json_failed() ? NULL : cJSON_PrintUnformatted(o);
	size_t n;

	if (!line || json_failed()) {
		free(line);
		return; /* a line missing parts is not written at all */
	}
	n = strlen(line);
	line[n] = '\n'; /* replaces the NUL; we write n + 1 bytes */
	if (j->events_fd >= 0 && write(j->events_fd, line, n + 1) ==
	    (ssize_t)(n + 1))
		j->events_len += n + 1;
	free(line);
	job_bump(j);
}

static cJSON *event_new(struct job *j, uint32_t n, const char *event)
{
	cJSON *o;

	json_begin();
	o = cJSON_CreateObject();
	char t[40];

	iso_time(wall_ms(), t, sizeof(t));
	cJSON_AddStringToObject(o, "time", t);
	cJSON_AddStringToObject(o, "job", j->name);
	if (n)
		cJSON_AddNumberToObject(o, "chunk", n);
	cJSON_AddStringToObject(o, "event", event);
	return o;
}

void job_event(struct job *j, uint32_t n, const char *event,
	       const char *fmt, ...)
{
	cJSON *o = event_new(j, n, event);

	if (fmt && fmt[0]) {
		char raw[512], msg[512];
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(raw, sizeof(raw), fmt, ap);
		va_end(ap);
		text_clean(raw, msg, sizeof(msg));
		if (msg[0])
			cJSON_AddStringToObject(o, "error", msg);
	}
	event_write(j, o);
	cJSON_Delete(o);
}

void job_event_plan(struct job *j, uint32_t chunks, uint32_t reused,
		    uint32_t fresh, uint32_t changed)
{
	cJSON *o = event_new(j, 0, "planned");

	cJSON_AddNumberToObject(o, "chunks", chunks);
	cJSON_AddNumberToObject(o, "reused", reused);
	cJSON_AddNumberToObject(o, "to_run", chunks - reused);
	cJSON_AddNumberToObject(o, "new_text", fresh);
	cJSON_AddNumberToObject(o, "changed", changed);
	event_write(j, o);
	cJSON_Delete(o);
}

/* An attempt's event: started, done, failed, timeout, cancelled. */
static void attempt_event(struct job *j, const struct attempt *a,
			  const char *event, const char *error,
			  double retry_in)
{
	cJSON *o = event_new(j, a->n, event);

	cJSON_AddNumberToObject(o, "attempt", a->number);
	if (a->ended && !a->res.exec_errno) {
		if (a->res.signaled)
			cJSON_AddNumberToObject(o, "signal", a->res.code);
		else
			cJSON_AddNumberToObject(o, "exit", a->res.code);
	}
	if (a->ended)
		cJSON_AddNumberToObject(o, "duration",
					round((mono_now() - a->started_mono) *
					      1000) / 1000);
	if (error && error[0])
		cJSON_AddStringToObject(o, "error", error);
	if (retry_in >= 0)
		cJSON_AddNumberToObject(o, "retry_in",
					round(retry_in * 1000) / 1000);
	event_write(j, o);
	cJSON_Delete(o);
}

static __thread int json_alloc_failed;

static void *json_malloc(size_t n)
{
	void *p = malloc(n);

	if (!p)
		json_alloc_failed = 1;
	return p;
}

void json_hooks_install(void)
{
	cJSON_Hooks h = { json_malloc, free };

	cJSON_InitHooks(&h);
}

void json_begin(void)
{
	json_alloc_failed = 0;
}

int json_failed(void)
{
	return json_alloc_failed;
}

void engine_wake(struct engine *e)
{
	char c = 1;
	ssize_t rc = write(e->wake[1], &c, 1);

	(void)rc; /* full pipe: a wakeup is pending anyway */
}

void engine_hurry(struct engine *e)
{
	e->hurry = 1;
	engine_wake(e); /* write(2): async-signal-safe */
}

void engine_mark_dead(struct engine *e, const uint8_t sha[SHA_LEN])
{
	if (e->ndead == e->capdead) {
		size_t cap = e->capdead ? e->capdead * 2 : 64;
		void *p = realloc(e->dead, cap * SHA_LEN);

		if (!p)
			return; /* the next startup sweep collects it */
		e->dead = p;
		e->capdead = cap;
	}
	memcpy(e->dead[e->ndead++], sha, SHA_LEN);
	pthread_cond_signal(&e->commit_cond);
}

int job_put_rec(struct engine *e, struct db_txn *t, struct job *j)
{
	(void)e;
	j->rec.updated_ms = wall_ms();
	return db_job_put(t, j->name, &j->rec, j->spec_text, j->spec_len);
}

/* While chunks run, the job's input stays open; workers' stdin is fed
 * from it with pread through a small buffer per attempt, so the daemon's
 * memory does not grow with the input. */
void job_unmap_input(struct job *j)
{
	if (j->input_open)
		close(j->input_fd);
	j->input_open = 0;
	j->input_size = 0;
}

static int job_map_input(struct engine *e, struct job *j)
{
	char name[128];
	struct stat st;
	int fd;

	if (j->input_open)
		return 0;
	job_input_name(j, name, sizeof(name));
	fd = openat(e->os.inputs, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		int rc = -errno;

		close(fd);
		return rc;
	}
	j->input_fd = fd;
	j->input_size = (uint64_t)st.st_size;
	j->input_open = 1;
	return 0;
}

void job_free(struct job *j)
{
	if (!j)
		return;
	job_unmap_input(j);
	if (j->events_fd >= 0)
		close(j->events_fd);
	spec_release(&j->spec);
	free(j->spec_text);
	free(j->cs);
	free(j->waits);
	free(j->manifest);
	free(j->served);
	free(j);
}

static int engine_add_job(struct engine *e, struct job *j)
{
	if (e->njobs == e->capjobs) {
		size_t cap = e->capjobs ? e->capjobs * 2 : 16;
		void *p = realloc(e->jobs, cap * sizeof(*e->jobs));

		if (!p)
			return -ENOMEM;
		e->jobs = p;
		e->capjobs = cap;
	}
	e->jobs[e->njobs++] = j;
	return 0;
}

/* Open the job's event log for appending, dropping a torn last line that
 * a crash may have left. */
static int job_open_events(struct engine *e, struct job *j)
{
	char name[64], buf[4096];
	struct stat st;
	int fd;

	snprintf(name, sizeof(name), "%" PRIu64 ".jsonl", j->id);
	fd = openat(e->os.events, name, O_RDWR | O_CREAT | O_APPEND |
		    O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) == 0 && st.st_size > 0) {
		off_t end = st.st_size, keep = 0;

		while (end > 0) {
			off_t from = end > (off_t)sizeof(buf) ?
				end - (off_t)sizeof(buf) : 0;
			ssize_t n = pread(fd, buf, (size_t)(end - from), from);

			if (n <= 0)
				break;
			while (n > 0 && buf[n - 1] != '\n')
				n--;
			if (n > 0) {
				keep = from + n;
				break;
			}
			end = from;
		}
		if (keep != st.st_size && ftruncate(fd, keep) < 0) {
			close(fd);
			return -errno;
		}
		st.st_size = keep;
	}
	j->events_fd = fd;
	j->events_len = (uint64_t)st.st_size;
	return 0;
}

static struct job *job_new(const char *name)
{
	struct job *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
	snprintf(j->name, sizeof(j->name), "%s", name);
	j->events_fd = -1;
	return j;
}

/* ------------------------------------------------------------------ */
/* recovery */

struct load_ctx {
	struct engine *e;
	struct job *j;
	int rc;
};

static int load_chunk(void *arg, uint32_t n, const struct chunk_rec *r,
		      const char *err, size_t errlen)
{
	struct job *j = arg;

	(void)err;
	(void)errlen;
	if (n < 1 || n > j->nchunks)
		return 0; /* beyond the plan: ignored */
	switch (r->state) {
	case CHUNK_DONE:
		job_set_cs(j, n, CS_DONE);
		if (r->flags & CHUNK_F_REUSED)
			j->nreused++;
		break;
	case CHUNK_FAILED:
		job_set_cs(j, n, CS_FAILED);
		break;
	default:
		job_set_cs(j, n, (r->flags & CHUNK_F_QUEUED) ?
			   CS_PENDING | CS_QUEUED : CS_PENDING);
		break;
	}
	return 0;
}

static int load_job(void *arg, const char *name, const struct job_rec *r,
		    const char *spec, size_t speclen)
{
	struct load_ctx *c = arg;
	struct job *j;
	char err[256];
	int rc;

	j = job_new(name);
	if (!j)
		return -ENOMEM;
	j->rec = *r;
	j->id = r->id;
	if (speclen) {
		j->spec_text = malloc(speclen + 1);
		if (!j->spec_text) {
			job_free(j);
			return -ENOMEM;
		}
		memcpy(j->spec_text, spec, speclen);
		j->spec_text[speclen] = '\0';
		j->spec_len = speclen;
		if (spec_parse(spec, speclen, &j->spec, err, sizeof(err)) == 0)
			j->has_spec = 1;
		else
			snprintf(j->last_error, sizeof(j->last_error),
				 "stored spec no longer parses: %s", err);
	}
	j->nchunks = r->nchunks;
	j->cs = calloc(j->nchunks ? j->nchunks : 1, 1);
	if (!j->cs) {
		job_free(j);
		return -ENOMEM;
	}
	rc = engine_add_job(c->e, j);
	if (rc) {
		job_free(j);
		return rc;
	}
	c->j = j;
	return 0;
}

static int obj_live(void *arg, const uint8_t sha[SHA_LEN])
{
	struct db_txn *t = arg;
	struct obj_rec r;

	return db_obj_get(t, sha, &r) == 0;
}

/* Input files that no job refers to (a crash between writing a new input
 * and committing its plan) are removed. */
static void sweep_inputs(struct engine *e)
{
	int fd = openat(e->os.inputs, ".", O_RDONLY | O_DIRECTORY |
			O_CLOEXEC);
	DIR *d;
	struct dirent *de;

	if (fd < 0)
		return;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return;
	}
	while ((de = readdir(d))) {
		int live = 0;

		if (de->d_name[0] == '.')
			continue;
		for (size_t i = 0; i < e->njobs && !live; i++) {
			char name[128];

			job_input_name(e->jobs[i], name, sizeof(name));
			live = e->jobs[i]->rec.has_input &&
				!strcmp(name, de->d_name);
		}
		if (!live)
			unlinkat(e->os.inputs, de->d_name, 0);
	}
	closedir(d);
}

int engine_open(const struct engine_opts *o, struct executor *ex,
		struct engine **out, char *err, size_t errlen)
{
	struct engine *e;
	struct db_txn *t = NULL;
	char dbdir[4096];
	int rc;

	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	json_hooks_install();
	{
		/* A worker can exit before it reads its stdin: writing the
		 * chunk must then fail with EPIPE (feed_stdin), not kill the
		 * process. The daemon ignores SIGPIPE already; any other
		 * caller (a test, a fuzz target) gets the same. Workers get
		 * the default back before their exec. */
		struct sigaction sa;

		if (sigaction(SIGPIPE, NULL, &sa) == 0 &&
		    sa.sa_handler == SIG_DFL)
			signal(SIGPIPE, SIG_IGN);
	}
	e->o = *o;
	e->ex = ex;
	e->wake[0] = e->wake[1] = -1;
	e->inline_max = o->inline_max < 0 ? 0 : o->inline_max == 0 ?
		ENGINE_INLINE_DEFAULT : (size_t)o->inline_max;
	if (o->inline_max > DB_INLINE_MAX) {
		snprintf(err, errlen, "inline_max %d is over %d", o->inline_max,
			 DB_INLINE_MAX);
		free(e);
		return -EINVAL;
	}
	pthread_mutex_init(&e->lock, NULL);
	pthread_mutex_init(&e->scratch_lock, NULL);
	pthread_cond_init(&e->idle, NULL);
	{
		/* commit_main() waits on it with a monotonic deadline */
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&e->commit_cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	pthread_cond_init(&e->encode_cond, NULL);
	pthread_cond_init(&e->start_cond, NULL);

	rc = objstore_open(o->store, &e->os, err, errlen);
	if (rc)
		goto fail;
	/* Temp files and scratch directories belong to attempts that the
	 * crash ended: none of them was committed. */
	objstore_clear_temps(&e->os);
	crashpoint("recovery");

	snprintf(dbdir, sizeof(dbdir), "%s/db", e->os.path);
	rc = db_open(dbdir, 0, &e->db, err, errlen);
	if (rc)
		goto fail;
	if (o->map_size) {
		rc = db_set_mapsize(e->db, o->map_size);
		if (rc) {
			snprintf(err, errlen, "cannot set the map size to %"
				 PRIu64 " bytes: %s", o->map_size,
				 strerror(-rc));
			goto fail;
		}
	}

	rc = db_begin(e->db, 0, &t);
	if (rc)
		goto fail_db;
	{
		struct load_ctx c = { e, NULL, 0 };

		rc = db_job_iter(t, load_job, &c);
	}
	for (size_t i = 0; !rc && i < e->njobs; i++) {
		struct job *j = e->jobs[i];

		rc = db_chunk_iter(t, j->id, 1, load_chunk, j);
		if (!rc)
			rc = job_open_events(e, j);
		j->run_mono = mono_now();
	}
	if (!rc) {
		/* Objects nothing refers to: a crash between publish and
		 * commit, or between a release and its unlink. */
		objstore_sweep(&e->os, obj_live, t);
		crashpoint("recovery");
		sweep_inputs(e);
	}
	db_abort(t);
	t = NULL;
	if (rc)
		goto fail_db;

	if (pipe2(e->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
		rc = -errno;
		goto fail_db;
	}
	*out = e;
	return 0;

fail_db:
	snprintf(err, errlen, "cannot load the store: %s", strerror(-rc));
fail:
	engine_close(e);
	return rc;
}

/* ------------------------------------------------------------------ */
/* starting an attempt */

static void attempt_free(struct engine *e, struct attempt *a)
{
	if (a->ex)
		exec_free(e->ex, a->ex);
	if (a->in_fd >= 0)
		close(a->in_fd);
	if (a->err_fd >= 0)
		close(a->err_fd);
	if (a->log_fd >= 0)
		close(a->log_fd);
	if (a->out_fd >= 0)
		close(a->out_fd);
	if (a->out_name[0])
		unlinkat(e->os.tmp, a->out_name, 0);
	if (a->scratch[0])
		objstore_rmtree(e->os.scratch, a->scratch);
	exec_env_free(a->env);
	free(a->inl);
	free(a->tail);
	free(a->inbuf);
	free(a);
}

static void attempt_unlink(struct engine *e, struct attempt *a)
{
	for (struct attempt **p = &e->attempts; *p; p = &(*p)->next) {
		if (*p == a) {
			*p = a->next;
			return;
		}
	}
}

/*
 * Scratch directories are kept for reuse when that is safe: allocating a
 * directory inode and freeing it again is, with the output file, most of
 * what a tiny chunk costs the daemon (on ext4 each new inode is searched
 * for past the recently freed ones). A directory goes to the pool only
 * after a successful attempt whose tree the executor reports contained
 * (nothing of it left to write there), once the output has been moved
 * out, and only if it is still an empty directory of mode 0700 that is
 * ours (scratch_reusable). Everything else is removed as before. The
 * pool holds at most SCRATCH_POOL_MAX names; what is in it at close is
 * removed, and what a crash leaves is cleared at the next open with the
 * other temps.
 */
static int scratch_reusable(struct engine *e, const char *name)
{
	struct stat st;
	struct dirent *de;
	DIR *d;
	int fd, empty = 1;

	fd = openat(e->os.scratch, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
		    O_CLOEXEC);
	if (fd < 0)
		return 0;
	if (fstat(fd, &st) < 0 || !S_ISDIR(st.st_mode) ||
	    st.st_uid != geteuid() || (st.st_mode & 07777) != 0700) {
		close(fd);
		return 0;
	}
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return 0;
	}
	while (empty && (de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			empty = 0;
	closedir(d);
	return empty;
}

/* Put a's scratch directory in the pool, or remove it. Without the
 * engine lock. */
static void scratch_release(struct engine *e, struct attempt *a)
{
	int kept = 0;

	if (!a->scratch[0])
		return;
	if (a->res.contained && !a->res.exec_errno &&
	    scratch_reusable(e, a->scratch)) {
		pthread_mutex_lock(&e->scratch_lock);
		if (e->nscratch_pool < SCRATCH_POOL_MAX) {
			snprintf(e->scratch_pool[e->nscratch_pool++],
				 sizeof(e->scratch_pool[0]), "%s", a->scratch);
			kept = 1;
		}
		pthread_mutex_unlock(&e->scratch_lock);
	}
	if (!kept)
		objstore_rmtree(e->os.scratch, a->scratch);
	a->scratch[0] = '\0';
}

/* A pooled scratch directory's name into a->scratch: 1, or 0 when the
 * pool is empty. */
static int scratch_take(struct engine *e, struct attempt *a)
{
	int got = 0;

	pthread_mutex_lock(&e->scratch_lock);
	if (e->nscratch_pool) {
		e->nscratch_pool--;
		snprintf(a->scratch, sizeof(a->scratch), "%s",
			 e->scratch_pool[e->nscratch_pool]);
		got = 1;
	}
	pthread_mutex_unlock(&e->scratch_lock);
	return got;
}

static void scratch_pool_free(struct engine *e)
{
	for (size_t i = 0; i < e->nscratch_pool; i++)
		objstore_rmtree(e->os.scratch, e->scratch_pool[i]);
	e->nscratch_pool = 0;
}

/*
 * The stdout temp file of an attempt whose output was kept in LMDB is
 * emptied and kept for a next attempt, for the same reason and on the
 * same condition as its scratch directory: the tree was contained, so no
 * process is left that could write into it. The worker never holds our
 * descriptor: it gets its own open of the file (attempt_start), so what
 * it does to its descriptor (O_APPEND, O_DIRECT, the offset) ends with
 * it. The file must still be a regular file of mode 0600, ours, with one
 * link. The pool keeps names, not descriptors (the daemon holds none for
 * an idle pool). What is in it at close is removed; a crash leaves it in
 * tmp/, which the next open empties.
 */
/* The stdout file open as fd is still a regular file of ours, mode 0600,
 * with one link (and empty, when empty is set). */
static int out_ours(int fd, int empty)
{
	struct stat st;

	return fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
		st.st_nlink == 1 && st.st_uid == geteuid() &&
		(st.st_mode & 07777) == 0600 && (!empty || st.st_size == 0);
}

static void out_release(struct engine *e, struct attempt *a)
{
	int kept = 0;

	if (a->out_fd < 0 || !a->out_name[0] || a->out_moved ||
	    !a->res.contained || a->res.exec_errno)
		return;
	if (!out_ours(a->out_fd, 0) || ftruncate(a->out_fd, 0) < 0)
		return;
	pthread_mutex_lock(&e->scratch_lock);
	if (e->nout_pool < OUT_POOL_MAX) {
		snprintf(e->out_pool[e->nout_pool++], sizeof(e->out_pool[0]),
			 "%s", a->out_name);
		kept = 1;
	}
	pthread_mutex_unlock(&e->scratch_lock);
	if (kept) {
		close(a->out_fd);
		a->out_fd = -1;
		a->out_name[0] = '\0';
	}
}

/* A pooled stdout file into a->out_fd and a->out_name: 1, or 0 when the
 * pool is empty. */
static int out_take(struct engine *e, struct attempt *a)
{
	int got = 0;

	pthread_mutex_lock(&e->scratch_lock);
	if (e->nout_pool) {
		snprintf(a->out_name, sizeof(a->out_name), "%s",
			 e->out_pool[--e->nout_pool]);
		got = 1;
	}
	pthread_mutex_unlock(&e->scratch_lock);
	if (!got)
		return 0;
	/* still the empty file we left? (a worker of the same user can
	 * reach tmp/) */
	a->out_fd = openat(e->os.tmp, a->out_name, O_RDWR | O_NOFOLLOW |
			   O_CLOEXEC);
	if (a->out_fd >= 0 && out_ours(a->out_fd, 1))
		return 1;
	if (a->out_fd >= 0)
		close(a->out_fd);
	a->out_fd = -1;
	unlinkat(e->os.tmp, a->out_name, 0);
	a->out_name[0] = '\0';
	return 0;
}

static void out_pool_free(struct engine *e)
{
	for (size_t i = 0; i < e->nout_pool; i++)
		unlinkat(e->os.tmp, e->out_pool[i], 0);
	e->nout_pool = 0;
}

/*
 * logs/ID/N.log, reached through a descriptor of logs/ID opened with
 * O_NOFOLLOW (objstore_dir_open), so that a symlink planted as logs/ID
 * leads nowhere outside the store. log_at() opens the directory (making
 * it when create is set) and writes the file's name; the caller closes
 * the descriptor.
 */
static int log_at(int logs, uint64_t job, uint32_t n, int create,
		  char name[32])
{
	char dir[24];
	int fd, rc;

	snprintf(dir, sizeof(dir), "%" PRIu64, job);
	snprintf(name, 32, "%" PRIu32 ".log", n);
	rc = objstore_dir_open(logs, dir, create, &fd);
	return rc ? rc : fd;
}

int log_open(int logs, uint64_t job, uint32_t n, int flags)
{
	char name[32];
	int dfd = log_at(logs, job, n, (flags & O_CREAT) != 0, name), fd;

	if (dfd < 0)
		return dfd;
	fd = openat(dfd, name, flags | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		fd = -errno;
	close(dfd);
	return fd;
}

int log_unlink(int logs, uint64_t job, uint32_t n)
{
	char name[32];
	int dfd = log_at(logs, job, n, 0, name), rc;

	if (dfd < 0)
		return dfd == -ENOENT ? 0 : dfd;
	rc = unlinkat(dfd, name, 0) < 0 && errno != ENOENT ? -errno : 0;
	close(dfd);
	return rc;
}

int log_stat(int logs, uint64_t job, uint32_t n, struct stat *st)
{
	char name[32];
	int dfd = log_at(logs, job, n, 0, name), rc;

	if (dfd < 0)
		return dfd;
	rc = fstatat(dfd, name, st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
	close(dfd);
	return rc;
}

/* The log of a chunk is made on the first byte of stderr: most workers
 * print nothing, and a file create per chunk costs more than the rest of
 * starting it when the commit thread's fsyncs hold the journal. */
static void open_log(struct attempt *a)
{
	int fd;

	a->log_tried = 1;
	fd = log_open(a->logs_dir, a->job->id, a->n, O_WRONLY | O_CREAT |
		      O_TRUNC);
	if (fd >= 0)
		a->log_fd = fd;
}

static void feed_stdin(struct engine *e, struct attempt *a);
static void attempt_failed(struct engine *e, struct attempt *a,
			   const char *why, const char *event);

/*
 * Starting an attempt has three steps, so that the scheduler never waits
 * for a worker to be created:
 *
 *   attempt_prepare  the scheduler, with the lock: the chunk becomes this
 *                    attempt's (CS_RUNNING, a slot taken) and its
 *                    environment is built; the attempt goes on the start
 *                    queue;
 *   attempt_launch   the start thread, without the lock: scratch
 *                    directory, stdout file, pipes, the process, and the
 *                    chunk written into the stdin pipe;
 *   attempt_link     the start thread, with the lock: the attempt joins
 *                    e->attempts (or, if it could not start, the chunk
 *                    fails or goes back to pending) and the scheduler is
 *                    woken to poll it.
 *
 * The slow middle step is what the scheduler used to wait for: creating
 * the process returns only once the child has exec'd (CLONE_VFORK), and
 * on a busy machine that child first waits for a CPU. Meanwhile the
 * scheduler reaps the attempts that end. Between prepare and link the
 * attempt is in no list; the job is busy (no new plan, spec, reset or
 * rmdir), so the spec and names it uses stay.
 */

/* Step 1. Called with e->lock held, from the scheduler thread. On failure
 * the chunk is left as it was and a negative errno is returned. */
static int attempt_prepare(struct engine *e, struct job *j, uint32_t n,
			   struct attempt **out)
{
	struct attempt *a;
	struct chunk_rec r;
	struct db_txn *t = NULL;
	char outpath[4300], var[5][160];
	char *vars[8];
	char *pv;
	size_t plen;
	int rc;

	rc = db_begin(e->db, 0, &t);
	if (rc)
		return rc;
	rc = db_chunk_get(t, j->id, n, &r, NULL);
	db_abort(t);
	if (rc)
		return rc;
	rc = job_map_input(e, j);
	if (rc)
		return rc;

	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->in_fd = a->err_fd = a->log_fd = a->out_fd = -1;
	a->job = j;
	a->n = n;
	a->number = r.attempts + 1;
	a->in_off = r.start;
	a->in_end = r.end;
	if (r.end > j->input_size)
		a->in_off = a->in_end = 0;

	a->scratch_reused = scratch_take(e, a);
	if (!a->scratch_reused)
		snprintf(a->scratch, sizeof(a->scratch), "%" PRIu64 "-%"
			 PRIu32 "-%" PRIu32 "-%lx", j->id, n, a->number,
			 (unsigned long)(mono_now() * 1e6));
	snprintf(outpath, sizeof(outpath), "JOBFS_OUTPUT=%s/scratch/%s/"
		 "output.%s", e->os.path, a->scratch, j->spec.ext);
	snprintf(var[0], sizeof(var[0]), "JOBFS_JOB=%s", j->name);
	snprintf(var[1], sizeof(var[1]), "JOBFS_CHUNK=%" PRIu32, n);
	snprintf(var[2], sizeof(var[2]), "JOBFS_CHUNKS=%" PRIu32, j->nchunks);
	snprintf(var[3], sizeof(var[3]), "JOBFS_ATTEMPT=%" PRIu32, a->number);
	/* params can be long: give it its own allocation */
	plen = strlen(j->spec.params) + 16;
	pv = malloc(plen);
	if (pv) {
		snprintf(pv, plen, "JOBFS_PARAMS=%s", j->spec.params);
		vars[0] = var[0];
		vars[1] = var[1];
		vars[2] = var[2];
		vars[3] = var[3];
		vars[4] = outpath;
		vars[5] = pv;
		vars[6] = NULL;
		a->env = exec_env_build(j->spec.env, vars);
		free(pv);
	}
	if (!a->env) {
		attempt_free(e, a);
		return -ENOMEM;
	}
	a->logs_dir = e->os.logs;

	/* The chunk is this attempt's from here: the job is busy, and the
	 * slot is taken. */
	job_set_cs(j, n, CS_RUNNING);
	e->nrunning++;
	*out = a;
	return 0;
}

/* Step 2. Called without the lock, from the start thread: nobody else
 * sees the attempt. Returns 0 or a negative errno; on failure nothing of
 * the attempt is left running. */
static int attempt_launch(struct engine *e, struct attempt *a)
{
	struct job *j = a->job;
	struct exec_request req = { 0 };
	char cwd[4200];
	char *shargv[4];
	int inp[2] = { -1, -1 }, errp[2] = { -1, -1 }, wfd = -1;
	int rc = 0;

	snprintf(cwd, sizeof(cwd), "%s/scratch/%s", e->os.path, a->scratch);
	req.envp = a->env;
	req.cwd = cwd;
	req.max_output = j->spec.max_output;
	req.max_procs = j->spec.max_procs;
	if (j->spec.shell) {
		shargv[0] = "/bin/sh";
		shargv[1] = "-c";
		shargv[2] = j->spec.shell;
		shargv[3] = NULL;
		req.argv = shargv;
	} else {
		req.argv = j->spec.argv;
	}

	if (!a->scratch_reused && mkdirat(e->os.scratch, a->scratch, 0700) < 0) {
		rc = -errno;
		a->scratch[0] = '\0';
	}
	if (!rc && !out_take(e, a)) {
		rc = objstore_tmp_create(&e->os, "out", a->out_name,
					 sizeof(a->out_name), &a->out_fd);
		if (rc)
			a->out_name[0] = '\0';
	}
	/* the worker's stdout is an open of its own, so that nothing it
	 * does to that descriptor reaches ours (out_release) */
	if (!rc) {
		wfd = openat(e->os.tmp, a->out_name, O_WRONLY | O_NOFOLLOW |
			     O_CLOEXEC);
		if (wfd < 0)
			rc = -errno;
	}
	if (!rc) {
		crashpoint("tmp-created");
		/* the previous attempt's log goes; this one's comes with
		 * its first stderr byte */
		log_unlink(e->os.logs, j->id, a->n);
		if (pipe2(inp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0)
			rc = -errno;
	}
	if (!rc) {
		req.stdin_fd = inp[0];
		req.stdout_fd = wfd;
		req.stderr_fd = errp[1];
		rc = exec_start(e->ex, &req, &a->ex);
	}
	if (wfd >= 0)
		close(wfd);
	if (inp[0] >= 0)
		close(inp[0]);
	if (errp[1] >= 0)
		close(errp[1]);
	exec_env_free(a->env);
	a->env = NULL;
	if (rc) {
		if (inp[1] >= 0)
			close(inp[1]);
		if (errp[0] >= 0)
			close(errp[0]);
		return rc;
	}
	a->err_fd = errp[0];
	fcntl(a->err_fd, F_SETFL, O_NONBLOCK);
	/* Fill the pipe now, while the worker is still being loaded: a
	 * chunk that fits is waiting when it first reads, so it never
	 * sleeps on its stdin, and no round through the scheduler's poll
	 * is needed to give it. */
	a->in_fd = inp[1];
	fcntl(a->in_fd, F_SETFL, O_NONBLOCK);
	if (a->in_off == a->in_end) {
		close(a->in_fd);
		a->in_fd = -1;
	} else {
		feed_stdin(e, a);
	}
	a->started_ms = wall_ms();
	a->started_mono = mono_now();
	a->deadline_mono = j->spec.timeout > 0 ?
		a->started_mono + j->spec.timeout : 0;
	return 0;
}

/* The chunk could not even be started: count it as a failed attempt, so
 * that a store that keeps failing cannot make the scheduler spin. Called
 * with the lock held. */
static void start_failed(struct engine *e, struct job *j, uint32_t n,
			 int rc)
{
	struct attempt fake = { .job = j, .n = n };

	fake.res.exec_errno = -rc;
	snprintf(j->last_error, sizeof(j->last_error),
		 "cannot start chunk %" PRIu32 ": %s", n, strerror(-rc));
	fake.ended = 1;
	fake.started_mono = mono_now();
	attempt_failed(e, &fake, j->last_error, "failed");
	job_check_finished(e, j);
}

/* Step 3. Called with e->lock held, from the start thread, with what
 * attempt_launch returned. */
static void attempt_link(struct engine *e, struct attempt *a, int rc)
{
	struct job *j = a->job;

	if (rc) {
		uint32_t n = a->n;

		e->nrunning--;
		pthread_cond_broadcast(&e->idle);
		job_set_cs(j, n, CS_PENDING);
		attempt_free(e, a);
		start_failed(e, j, n, rc);
		return;
	}
	a->next = e->attempts;
	e->attempts = a;
	attempt_event(j, a, "started", NULL, -1);
	if (j->rec.mode == JOB_MODE_STOP || e->stopping) {
		/* cancelled (or the daemon told to stop) while it started */
		a->kill = e->stopping ? KILL_SHUTDOWN : KILL_CANCEL;
		exec_kill(e->ex, a->ex);
	}
}

/* Give back a prepared attempt that will not be launched: the daemon is
 * stopping. Called with e->lock held. */
static void attempt_unprepare(struct engine *e, struct attempt *a)
{
	e->nrunning--;
	pthread_cond_broadcast(&e->idle);
	job_set_cs(a->job, a->n, CS_PENDING);
	attempt_free(e, a);
}

/* The first queued start, taken off the queue (NULL if none). Called
 * with e->lock held. */
static struct attempt *startq_pop(struct engine *e)
{
	struct attempt *a = e->startq;

	if (a) {
		e->startq = a->start_next;
		if (!e->startq)
			e->startq_tail = NULL;
		a->start_next = NULL;
	}
	return a;
}

/* Launch a start taken off the queue, then link it: by the start thread,
 * or by the scheduler while the start thread is idle (start_here), one at
 * a time (start_busy: the executor has one vfork stack). Called and
 * returns with e->lock held; drops it meanwhile. */
static void start_one(struct engine *e, struct attempt *a)
{
	int rc;

	e->start_busy = 1;
	pthread_mutex_unlock(&e->lock);
	rc = attempt_launch(e, a);
	pthread_mutex_lock(&e->lock);
	attempt_link(e, a, rc);
	e->start_busy = 0;
	e->nstarting--;
}

static void *start_main(void *arg)
{
	struct engine *e = arg;

	pthread_mutex_lock(&e->lock);
	for (;;) {
		struct attempt *a;

		while ((!e->startq || e->start_busy) && !e->stop_start)
			pthread_cond_wait(&e->start_cond, &e->lock);
		a = startq_pop(e);
		if (!a)
			break;
		if (e->stopping) {
			attempt_unprepare(e, a);
			e->nstarting--;
		} else {
			start_one(e, a);
		}
		engine_wake(e);
	}
	pthread_mutex_unlock(&e->lock);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* the worker's stdin and stderr */

/* The attempt cannot be given its chunk: it fails rather than let the
 * worker see a chunk cut short, which it might call done. */
static void feed_failed(struct engine *e, struct attempt *a, int err)
{
	if (a->kill == KILL_NONE) {
		a->feed_errno = err;
		a->kill = KILL_FEED;
		exec_kill(e->ex, a->ex);
	}
	a->in_off = a->in_end;
	a->inbuf_pos = a->inbuf_len = 0;
}

static void feed_stdin(struct engine *e, struct attempt *a)
{
	size_t budget = FEED_MAX;

	while (budget > 0 && (a->in_off < a->in_end ||
			      a->inbuf_pos < a->inbuf_len)) {
		ssize_t n;

		if (a->inbuf_pos == a->inbuf_len) {
			size_t want = FEED_BUF;

			if (want > a->in_end - a->in_off)
				want = (size_t)(a->in_end - a->in_off);
			if (!a->inbuf && !(a->inbuf = malloc(FEED_BUF))) {
				feed_failed(e, a, ENOMEM);
				break;
			}
			n = pread(a->job->input_fd, a->inbuf, want,
				  (off_t)a->in_off);
			if (n <= 0) {
				if (n < 0 && errno == EINTR)
					continue;
				feed_failed(e, a, n < 0 ? errno : EIO);
				break;
			}
			a->in_off += (uint64_t)n;
			a->inbuf_pos = 0;
			a->inbuf_len = (size_t)n;
		}
		n = write(a->in_fd, a->inbuf + a->inbuf_pos,
			  a->inbuf_len - a->inbuf_pos);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return;
			if (errno != EPIPE) {
				feed_failed(e, a, errno);
				break;
			}
			/* EPIPE: the worker closed its stdin; that is its
			 * business, not a failure. */
			a->in_off = a->in_end;
			a->inbuf_pos = a->inbuf_len = 0;
			break;
		}
		a->inbuf_pos += (size_t)n;
		budget -= (size_t)n < budget ? (size_t)n : budget;
	}
	if (a->in_off >= a->in_end && a->inbuf_pos >= a->inbuf_len) {
		close(a->in_fd);
		a->in_fd = -1;
	}
}

/* Keep the first LOG_HEAD bytes of stderr in the log file and the last
 * LOG_TAIL in a ring, so the log stays bounded whatever the worker
 * prints. */
static void log_bytes(struct attempt *a, const char *p, size_t n)
{
	if (a->log_fd < 0 && !a->log_tried)
		open_log(a);
	if (a->log_len < LOG_HEAD) {
		size_t take = LOG_HEAD - a->log_len;

		if (take > n)
			take = n;
		if (a->log_fd >= 0 && write(a->log_fd, p, take) < 0) {
			/* a full disk loses log bytes, nothing else */
		}
		a->log_len += take;
		p += take;
		n -= take;
	}
	if (n == 0)
		return;
	if (!a->tail) {
		a->tail = malloc(LOG_TAIL);
		if (!a->tail) {
			a->log_dropped += n;
			return;
		}
	}
	while (n > 0) {
		size_t room = LOG_TAIL - a->tail_pos, take = n < room ? n : room;

		memcpy(a->tail + a->tail_pos, p, take);
		a->tail_pos = (a->tail_pos + take) % LOG_TAIL;
		if (a->tail_len + take > LOG_TAIL)
			a->log_dropped += a->tail_len + take - LOG_TAIL;
		a->tail_len = a->tail_len + take > LOG_TAIL ? LOG_TAIL :
			a->tail_len + take;
		p += take;
		n -= take;
	}
}

static int drain_stderr(struct attempt *a)
{
	char buf[65536];

	for (;;) {
		ssize_t n = read(a->err_fd, buf, sizeof(buf));

		if (n > 0) {
			log_bytes(a, buf, (size_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0;
		close(a->err_fd);
		a->err_fd = -1;
		return 1;
	}
}

static void log_finish(struct attempt *a)
{
	if (a->log_fd < 0)
		return;
	if (a->tail_len) {
		char mark[96];
		int m = snprintf(mark, sizeof(mark), "\n[jobfs: %" PRIu64
				 " bytes of stderr skipped]\n", a->log_dropped);
		size_t start = (a->tail_pos + LOG_TAIL - a->tail_len) % LOG_TAIL;
		size_t first = a->tail_len < LOG_TAIL - start ?
			a->tail_len : LOG_TAIL - start;

		if (a->log_dropped && write(a->log_fd, mark, (size_t)m) < 0) {
			/* nothing to do */
		}
		if (write(a->log_fd, a->tail + start, first) < 0 ||
		    (a->tail_len > first &&
		     write(a->log_fd, a->tail, a->tail_len - first) < 0)) {
			/* nothing to do */
		}
	}
	close(a->log_fd);
	a->log_fd = -1;
	free(a->tail);
	a->tail = NULL;
}

/* ------------------------------------------------------------------ */
/* the end of an attempt */

static double backoff_delay(const struct spec *s, uint32_t fails)
{
	double d = s->backoff_initial;

	for (uint32_t i = 1; i < fails && d < s->backoff_max; i++)
		d *= s->backoff_factor;
	if (d > s->backoff_max)
		d = s->backoff_max;
	/* +-20 % jitter so that chunks that failed together do not retry
	 * together. */
	return d * (0.8 + 0.4 * ((double)random() / RAND_MAX));
}

static int no_retry(const struct spec *s, const struct exec_result *r)
{
	if (r->exec_errno || r->signaled)
		return 0;
	for (size_t i = 0; i < s->n_no_retry; i++) {
		if (s->no_retry[i] == r->code)
			return 1;
	}
	return 0;
}

static void job_add_wait(struct job *j, uint32_t n, double when)
{
	if (j->nwaits == j->capwaits) {
		size_t cap = j->capwaits ? j->capwaits * 2 : 8;
		void *p = realloc(j->waits, cap * sizeof(*j->waits));

		if (!p) {
			job_set_cs(j, n, CS_PENDING); /* retry at once */
			return;
		}
		j->waits = p;
		j->capwaits = cap;
	}
	j->waits[j->nwaits].n = n;
	j->waits[j->nwaits].when = when;
	j->nwaits++;
	job_set_cs(j, n, CS_WAIT);
}

/* Drop every backoff wait of j, sending the chunks back to pending. */
void job_clear_waits(struct job *j)
{
	for (size_t i = 0; i < j->nwaits; i++)
		job_set_cs(j, j->waits[i].n, CS_PENDING);
	j->nwaits = 0;
}

/*
 * A failed attempt: count it against the chunk's budget durably, then
 * either schedule a retry or mark the chunk failed. Called with e->lock.
 */
static void attempt_failed(struct engine *e, struct attempt *a,
			   const char *why, const char *event)
{
	struct job *j = a->job;
	struct chunk_rec r;
	struct db_txn *t = NULL;
	int give_up, rc;

	rc = db_begin(e->db, 1, &t);
	if (!rc)
		rc = db_chunk_get(t, j->id, a->n, &r, NULL);
	if (!rc) {
		r.attempts++;
		r.fails++;
		r.last_code = a->res.exec_errno ? 127 :
			(a->res.signaled ? -a->res.code : a->res.code);
		give_up = r.fails >= j->spec.attempts ||
			no_retry(&j->spec, &a->res);
		r.state = give_up ? CHUNK_FAILED : CHUNK_PENDING;
		if (give_up)
			r.flags &= (uint8_t)~CHUNK_F_QUEUED;
		rc = db_chunk_put(t, j->id, a->n, &r, why);
		if (!rc) {
			rc = db_commit(t);
			t = NULL;
		}
	}
	db_abort(t);
	if (rc) {
		/* Could not record the failure (the store is failing): the
		 * chunk waits a moment in memory only and runs again; nothing
		 * done is affected, and the scheduler does not spin on it. */
		snprintf(j->last_error, sizeof(j->last_error),
			 "cannot record the failure of chunk %" PRIu32 ": %s",
			 a->n, strerror(-rc));
		attempt_event(j, a, event, why, -1);
		job_add_wait(j, a->n, mono_now() + STORE_RETRY);
		return;
	}
	if (give_up) {
		job_set_cs(j, a->n, CS_FAILED);
		attempt_event(j, a, event, why, -1);
		if (strcmp(event, "failed"))
			attempt_event(j, a, "failed", why, -1);
	} else {
		double d = backoff_delay(&j->spec, r.fails);

		attempt_event(j, a, event, why, -1);
		job_add_wait(j, a->n, mono_now() + d);
		attempt_event(j, a, "retry-scheduled", NULL, d);
	}
}

/* Whether the store's filesystem has (almost) no room left. */
static int store_full(struct engine *e)
{
	struct statvfs v;

	return fstatvfs(e->os.root, &v) == 0 &&
		(uint64_t)v.f_bavail * v.f_frsize < (1u << 20);
}

/* The output of a successful attempt: JOBFS_OUTPUT if the worker wrote
 * it, else its stdout. */
static int pick_output(struct engine *e, struct attempt *a, int *dirfd,
		       const char **name, int *fd)
{
	char fname[32];
	struct stat st;
	int sdir, ofd;

	snprintf(fname, sizeof(fname), "output.%s", a->job->spec.ext);
	sdir = openat(e->os.scratch, a->scratch, O_RDONLY | O_DIRECTORY |
		      O_NOFOLLOW | O_CLOEXEC);
	if (sdir >= 0 && fstatat(sdir, fname, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISREG(st.st_mode)) {
		ofd = openat(sdir, fname, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (ofd >= 0) {
			/* move it beside the stdout temp file, so the
			 * scratch directory can go */
			if (renameat(sdir, fname, e->os.tmp, a->out_name) ==
			    0) {
				close(a->out_fd);
				a->out_fd = ofd;
				a->out_moved = 1;
				close(sdir);
				goto stdout_file;
			}
			close(ofd);
		}
	}
	if (sdir >= 0)
		close(sdir);
stdout_file:
	*dirfd = e->os.tmp;
	*name = a->out_name;
	*fd = a->out_fd;
	return 0;
}


/* The worker's main process has exited and been reaped. */
static void attempt_ended(struct engine *e, struct attempt *a)
{
	struct job *j = a->job;
	char why[256];

	if (a->in_fd >= 0) {
		close(a->in_fd);
		a->in_fd = -1;
	}
	if (a->err_fd >= 0)
		drain_stderr(a);
	if (a->err_fd >= 0) {
		close(a->err_fd);
		a->err_fd = -1;
	}
	log_finish(a);
	e->nrunning--;
	pthread_cond_broadcast(&e->idle); /* job_find_settled() */
	if (!e->nrunning && e->ncommitq)
		pthread_cond_signal(&e->commit_cond); /* commit_linger() */

	if (a->kill == KILL_CANCEL || a->kill == KILL_SHUTDOWN) {
		/* Not the chunk's fault: back to pending, no attempt spent. */
		job_set_cs(j, a->n, CS_PENDING);
		attempt_event(j, a, "cancelled",
			      a->kill == KILL_SHUTDOWN ? "daemon stopping" :
			      "cancelled", -1);
		attempt_unlink(e, a);
		attempt_free(e, a);
		return;
	}
	if (a->kill == KILL_FEED) {
		snprintf(why, sizeof(why), "cannot give the chunk to the "
			 "worker: %s", strerror(a->feed_errno));
		attempt_failed(e, a, why, "failed");
		goto gone;
	}
	if (a->kill == KILL_TIMEOUT) {
		snprintf(why, sizeof(why), "timeout after %g s",
			 j->spec.timeout);
		attempt_failed(e, a, why, "timeout");
		goto gone;
	}
	if (!a->res.exec_errno && a->res.signaled && a->res.code == SIGXFSZ) {
		snprintf(why, sizeof(why), "output larger than max_output "
			 "(%" PRIu64 " bytes)", j->spec.max_output);
		attempt_failed(e, a, why, "failed");
		goto gone;
	}
	if (a->res.exec_errno || a->res.signaled || a->res.code != 0) {
		char *shargv[4] = { "/bin/sh", "-c", j->spec.shell, NULL };
		size_t l;

		exec_describe(&a->res, j->spec.shell ? shargv : j->spec.argv,
			      j->spec.shell != NULL, why, sizeof(why));
		/* A worker whose output did not fit says "write error" in
		 * its log at best: name the cause where the user looks. */
		l = strlen(why);
		if (store_full(e))
			snprintf(why + l, sizeof(why) - l, " (No space left on "
				 "device: the store's filesystem is full)");
		attempt_failed(e, a, why, "failed");
		goto gone;
	}

	/* exit 0: hand it to the commit thread */
	job_set_cs(j, a->n, CS_COMMIT);
	if (e->ncommitq == e->capcommitq) {
		size_t cap = e->capcommitq ? e->capcommitq * 2 : 16;
		void *p = realloc(e->commitq, cap * sizeof(*e->commitq));

		if (!p) {
			attempt_failed(e, a, "out of memory", "failed");
			goto gone;
		}
		e->commitq = p;
		e->capcommitq = cap;
	}
	e->commitq[e->ncommitq++] = a;
	pthread_cond_signal(&e->commit_cond);
	return;

gone:
	attempt_unlink(e, a);
	attempt_free(e, a);
	job_check_finished(e, j);
}

/*
 * A job in RUN or SELECTED mode with nothing left to start or finish has
 * ended its run: RUN returns to IDLE (the state reads done or failed),
 * SELECTED to the mode it interrupted.
 */
void job_check_finished(struct engine *e, struct job *j)
{
	struct db_txn *t = NULL;
	uint32_t mode;

	if (j->rec.mode == JOB_MODE_RUN) {
		if (job_active(j) || job_pending(j) || j->nwait)
			return;
		mode = JOB_MODE_IDLE;
	} else if (j->rec.mode == JOB_MODE_SELECTED) {
		if (job_active(j) || j->nqueued)
			return;
		mode = j->rec.after_selected;
	} else {
		return;
	}
	j->rec.mode = mode;
	j->run_end_mono = mono_now();
	if (db_begin(e->db, 1, &t) == 0) {
		if (job_put_rec(e, t, j) == 0)
			db_commit(t);
		else
			db_abort(t);
	}
	job_unmap_input(j);
	job_event(j, 0, j->nfailed ? "run-failed" : "run-done", NULL);
	job_bump(j);
	engine_want_encode(e);
}

/* ------------------------------------------------------------------ */
/* reading objects */

int engine_obj_open(struct engine *e, const uint8_t sha[SHA_LEN],
		    int *fd_out)
{
	struct db_txn *t = NULL;
	const void *data;
	size_t len, off = 0;
	int rc, fd;

	rc = db_begin(e->db, 0, &t);
	if (rc)
		return rc;
	rc = db_obj_inline(t, sha, &data, &len);
	if (rc) {
		db_abort(t);
		/* a file (-ENODATA), or no record: the file decides */
		return objstore_open_obj(&e->os, sha, fd_out);
	}
	fd = memfd_create("jobfs-object", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0) {
		rc = -errno;
		db_abort(t);
		return rc;
	}
	while (!rc && off < len) {
		ssize_t n = write(fd, (const char *)data + off, len - off);

		if (n < 0 && errno != EINTR)
			rc = -errno;
		else if (n > 0)
			off += (size_t)n;
	}
	db_abort(t);
	if (!rc && (lseek(fd, 0, SEEK_SET) < 0 ||
		    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW |
			  F_SEAL_WRITE | F_SEAL_SEAL) < 0))
		rc = -errno;
	if (rc) {
		close(fd);
		return rc;
	}
	*fd_out = fd;
	return 0;
}

int engine_obj_open_unlocked(struct engine *e, const uint8_t sha[SHA_LEN],
			     int *fd_out)
{
	int rc;

	pthread_mutex_lock(&e->lock);
	rc = engine_obj_open(e, sha, fd_out);
	pthread_mutex_unlock(&e->lock);
	return rc;
}

/* ------------------------------------------------------------------ */
/* the commit thread */

/*
 * An audio chunk: libsndfile must read the worker's file (else the attempt
 * fails with its reason); its samples, normalized to a headerless object,
 * are what is published. Sets a->commit_rc and a->commit_err.
 */
static int publish_audio(struct engine *e, struct attempt *a, int *created)
{
	char name[96];
	int fd, rc;

	rc = objstore_tmp_create(&e->os, "pcm", name, sizeof(name), &fd);
	if (rc) {
		snprintf(a->commit_err, sizeof(a->commit_err),
			 "cannot store output: %s", strerror(-rc));
		return a->commit_rc = rc;
	}
	rc = audio_normalize(a->out_fd, fd, &a->fmt, a->commit_err,
			     sizeof(a->commit_err));
	if (!rc) {
		rc = objstore_publish_nosync(&e->os, fd, e->os.tmp, name,
					     a->obj, &a->obj_size, created);
		if (rc)
			snprintf(a->commit_err, sizeof(a->commit_err),
				 "cannot store output: %s", strerror(-rc));
	}
	if (rc)
		unlinkat(e->os.tmp, name, 0);
	close(fd);
	return a->commit_rc = rc;
}

/*
 * A small output is kept in LMDB (steps 1-2 are skipped: the commit of
 * step 3 makes its bytes durable with the record). Reads the whole file
 * into a->inl and hashes it; returns 1, or 0 to publish it as a file
 * (too big, not a regular file, or a read that failed or came up short).
 */
static int take_inline(struct engine *e, struct attempt *a, int fd)
{
	struct stat st;
	size_t size, got = 0;
	char *buf;

	if (!e->inline_max || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size > e->inline_max)
		return 0;
	size = (size_t)st.st_size;
	buf = malloc(size + 1);
	if (!buf)
		return 0;
	while (got < size) {
		ssize_t n = pread(fd, buf + got, size - got, (off_t)got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (got != size || sha_buf(buf, size, a->obj)) {
		free(buf);
		return 0;
	}
	a->inl = buf;
	a->obj_size = size;
	return 1;
}

/* Step 3 of the protocol for a batch: one LMDB transaction marks every
 * published chunk done and counts its object. It reads and writes only
 * the records of the batch's chunks, which nothing else changes while
 * they are committing (a chunk in CS_COMMIT keeps its job busy), and the
 * reference counts, which LMDB's one writer at a time keeps right: so it
 * runs without e->lock unless grow is set (then with it, since resizing
 * the map needs every reader out of the way). */
static int commit_records(struct engine *e, struct attempt **batch, size_t n,
			  int grow)
{
	struct db_txn *t = NULL;
	int rc;

	rc = grow ? db_begin(e->db, 1, &t) : db_begin_nogrow(e->db, &t);
	for (size_t i = 0; !rc && i < n; i++) {
		struct attempt *a = batch[i];
		struct chunk_rec r;

		if (a->commit_rc)
			continue;
		rc = db_chunk_get(t, a->job->id, a->n, &r, NULL);
		if (rc)
			break;
		r.state = CHUNK_DONE;
		r.flags = 0;
		r.attempts++;
		r.last_code = 0;
		memcpy(r.obj, a->obj, SHA_LEN);
		r.obj_size = a->obj_size;
		r.duration_ms = (uint32_t)((mono_now() - a->started_mono) *
					   1000);
		r.done_ms = wall_ms();
		r.rate = a->fmt.rate;
		r.channels = a->fmt.channels;
		r.enc = a->fmt.enc;
		r.frames = a->fmt.frames;
		rc = db_obj_ref_inline(t, a->obj, a->obj_size, a->inl, +1,
				       NULL);
		if (!rc)
			rc = db_chunk_put(t, a->job->id, a->n, &r, "");
	}
	if (!rc && t) {
		crashpoint("before-commit");
		rc = db_commit(t);
		if (!rc)
			crashpoint("after-commit");
	} else {
		db_abort(t);
	}
	return rc;
}

#define DROP_MAP_EVERY 256

static void commit_batch(struct engine *e, struct attempt **batch, size_t n,
			 uint8_t (*dead)[SHA_LEN], size_t ndead)
{
	struct db_txn *t = NULL;
	uint8_t (*synced)[SHA_LEN] = malloc((n + 1) * SHA_LEN);
	size_t nsynced = 0;
	int rc, created = 0;

	/* Steps 1-2 of the protocol, outside the lock: the slow part. Each
	 * file is hashed, fsynced and renamed; then each object directory
	 * touched is fsynced once for the whole batch. */
	for (size_t i = 0; i < n; i++) {
		struct attempt *a = batch[i];
		const char *name;
		int dirfd, fd;

		pick_output(e, a, &dirfd, &name, &fd);
		a->out_fd = fd;
		if (SPEC_IS_AUDIO(a->job->spec.output)) {
			rc = publish_audio(e, a, &created);
		} else if (take_inline(e, a, fd)) {
			rc = a->commit_rc = 0;
			out_release(e, a);
			continue;
		} else {
			rc = objstore_publish_nosync(&e->os, fd, dirfd, name,
						     a->obj, &a->obj_size,
						     &created);
			a->commit_rc = rc;
			if (rc)
				snprintf(a->commit_err, sizeof(a->commit_err),
					 "cannot store output: %s",
					 strerror(-rc));
			else
				a->out_name[0] = '\0'; /* renamed away */
		}
		if (!rc && synced)
			memcpy(synced[nsynced++], a->obj, SHA_LEN);
	}
	rc = synced ? objstore_sync_dirs(&e->os,
					 (const uint8_t (*)[SHA_LEN])synced,
					 nsynced, created) : -ENOMEM;
	free(synced);
	if (!rc)
		crashpoint("dir-fsync");
	for (size_t i = 0; rc && i < n; i++) {
		struct attempt *a = batch[i];

		if (a->commit_rc)
			continue;
		a->commit_rc = rc;
		snprintf(a->commit_err, sizeof(a->commit_err),
			 "cannot store output: %s", strerror(-rc));
	}

	/* The scratch directories are not needed any more (the outputs
	 * were moved out, the workers are reaped): remove them here rather
	 * than with the lock held. */
	for (size_t i = 0; i < n; i++)
		scratch_release(e, batch[i]);

	/* Step 3: one transaction for the whole batch, without the lock; if
	 * the map is full, made again with the lock held, after the map
	 * grows. */
	db_map_was_full();
	rc = commit_records(e, batch, n, 0);
	/* every DROP_MAP_EVERY chunks, the map pages the commits walked
	 * leave the daemon's resident size (db_drop_map). Each write
	 * transaction copies the pages it changes to new places in the
	 * file and reads them through the map, where the kernel maps 16
	 * pages around each fault: without this, a million-chunk run ends
	 * with all of data.mdb (250 MiB) resident, and it grows back about
	 * 3 KiB a chunk. */
	e->committed_since_drop += n;
	if (e->committed_since_drop >= DROP_MAP_EVERY) {
		e->committed_since_drop = 0;
		db_drop_map(e->db);
	}
	pthread_mutex_lock(&e->lock);
	for (int tries = 0; rc == -ENOSPC && db_map_was_full() &&
	     tries < 16 && !db_grow(e->db); tries++)
		rc = commit_records(e, batch, n, 1);

	/* Step 4: visible. */
	for (size_t i = 0; i < n; i++) {
		struct attempt *a = batch[i];
		struct job *j = a->job;

		if (!a->commit_rc && rc) {
			a->commit_rc = rc;
			snprintf(a->commit_err, sizeof(a->commit_err),
				 "cannot commit: %s", strerror(-rc));
		}
		if (a->commit_rc) {
			snprintf(j->last_error, sizeof(j->last_error),
				 "chunk %" PRIu32 ": %s", a->n, a->commit_err);
			attempt_failed(e, a, a->commit_err, "failed");
		} else {
			job_set_cs(j, a->n, CS_DONE);
			j->run_done++;
			j->done_bytes += a->obj_size;
			attempt_event(j, a, "done", NULL, -1);
		}
		attempt_unlink(e, a);
		attempt_free(e, a);
		job_check_finished(e, j);
	}

	/* Dead objects: unlink those whose record is gone (I3). */
	if (ndead && db_begin(e->db, 0, &t) == 0) {
		for (size_t i = 0; i < ndead; i++) {
			struct obj_rec r;

			if (db_obj_get(t, dead[i], &r) == -ENOENT) {
				crashpoint("gc");
				objstore_unlink_obj(&e->os, dead[i]);
			}
		}
		db_abort(t);
	}
	pthread_cond_broadcast(&e->idle);
	pthread_mutex_unlock(&e->lock);
	engine_wake(e);
}

/*
 * Group commit, the waiting half. A batch costs two fdatasyncs (LMDB's
 * data, then its meta page) whatever its size, so while other attempts
 * are still running the commit thread waits for them a little before it
 * commits: at most as long as its last batch took, and never once no
 * attempt is left running. A chunk is then reported done at most one
 * commit's time later, and a run of tiny chunks needs a fraction of the
 * fsyncs (docs/design.md, "Group commit"). Called and returns with the
 * lock held.
 */
static void commit_linger(struct engine *e)
{
	struct timespec dl;
	double wait = e->last_commit_s;

	if (!e->ncommitq || !e->nrunning || e->stop_commit || wait <= 0)
		return;
	if (wait > COMMIT_LINGER_MAX)
		wait = COMMIT_LINGER_MAX;
	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_nsec += (long)(wait * 1e9);
	dl.tv_sec += dl.tv_nsec / 1000000000L;
	dl.tv_nsec %= 1000000000L;
	while (e->nrunning && e->ncommitq < COMMIT_BATCH_WANT &&
	       !e->stop_commit &&
	       pthread_cond_timedwait(&e->commit_cond, &e->lock, &dl) == 0) {
		/* woken: by a chunk to commit, or by the end of the run */
	}
}

static void *commit_main(void *arg)
{
	struct engine *e = arg;
	double t0;

	pthread_mutex_lock(&e->lock);
	for (;;) {
		struct attempt **batch;
		uint8_t (*dead)[SHA_LEN];
		size_t n, ndead;

		while (!e->ncommitq && !e->ndead && !e->stop_commit)
			pthread_cond_wait(&e->commit_cond, &e->lock);
		if (!e->ncommitq && !e->ndead && e->stop_commit)
			break;
		commit_linger(e);
		batch = e->commitq;
		n = e->ncommitq;
		dead = e->dead;
		ndead = e->ndead;
		e->commitq = NULL;
		e->ncommitq = e->capcommitq = 0;
		e->dead = NULL;
		e->ndead = e->capdead = 0;
		pthread_mutex_unlock(&e->lock);
		t0 = mono_now();
		commit_batch(e, batch, n, dead, ndead);
		e->last_commit_s = mono_now() - t0;
		free(batch);
		free(dead);
		pthread_mutex_lock(&e->lock);
	}
	pthread_mutex_unlock(&e->lock);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* the scheduler */

/* The job that should start its next chunk: highest priority first, then
 * the one with the fewest running chunks, so jobs share the slots. */
static struct job *pick_job(struct engine *e, uint32_t *chunk)
{
	struct job *best = NULL;
	uint32_t best_n = 0;

	for (size_t i = 0; i < e->njobs; i++) {
		struct job *j = e->jobs[i];
		uint32_t n = 0;

		if (!j->has_spec || j->nrunning >= j->spec.parallel)
			continue;
		if (j->rec.mode == JOB_MODE_RUN) {
			if (!job_pending(j))
				continue;
		} else if (j->rec.mode != JOB_MODE_SELECTED || !j->nqueued) {
			continue;
		}
		if (best && (j->spec.priority < best->spec.priority ||
			     (j->spec.priority == best->spec.priority &&
			      j->nrunning >= best->nrunning)))
			continue;
		/* find its next runnable chunk, from where we left off */
		for (uint32_t k = 0; k < j->nchunks; k++) {
			uint32_t c = (j->scan + k) % j->nchunks + 1;

			if (job_runnable(j, c)) {
				n = c;
				break;
			}
		}
		if (!n)
			continue;
		best = j;
		best_n = n;
	}
	*chunk = best_n;
	return best;
}

static void schedule(struct engine *e)
{
	while (!e->stopping && e->nrunning < e->o.max_running) {
		uint32_t n;
		struct job *j = pick_job(e, &n);
		struct attempt *a = NULL;
		int rc;

		if (!j)
			break;
		rc = attempt_prepare(e, j, n, &a);
		if (rc) {
			start_failed(e, j, n, rc);
			/* let the loop breathe: the lock goes down in poll */
			break;
		}
		if (e->startq_tail)
			e->startq_tail->start_next = a;
		else
			e->startq = a;
		e->startq_tail = a;
		e->nstarting++;
		j->scan = n % j->nchunks;
	}
}

/*
 * The first queued start, launched by the scheduler itself when the start
 * thread is idle: a chunk that follows a worker's exit then costs no
 * wakeup of the start thread and none back to the scheduler to poll the
 * new worker (docs/design.md, "Threads"). The rest of the queue is the
 * start thread's; one launch at a time (the executor's vfork stack), so a
 * start here waits while the start thread launches, and the reverse.
 * Called with e->lock held.
 */
static void start_here(struct engine *e)
{
	if (e->startq && !e->start_busy && !e->stopping)
		start_one(e, startq_pop(e));
	if (e->startq)
		pthread_cond_signal(&e->start_cond);
}

static void expire_waits(struct engine *e, double now, double *next)
{
	for (size_t i = 0; i < e->njobs; i++) {
		struct job *j = e->jobs[i];

		for (size_t k = 0; k < j->nwaits;) {
			if (j->waits[k].when <= now) {
				uint32_t n = j->waits[k].n;

				j->waits[k] = j->waits[--j->nwaits];
				job_set_cs(j, n, CS_PENDING);
				continue;
			}
			if (*next == 0 || j->waits[k].when < *next)
				*next = j->waits[k].when;
			k++;
		}
	}
}

static void *sched_main(void *arg)
{
	struct engine *e = arg;
	struct pollfd *pfd = NULL;
	struct attempt **who = NULL;
	size_t cap = 0;

	pthread_mutex_lock(&e->lock);
	for (;;) {
		double now = mono_now(), next = 0;
		size_t n = 0, count = 1;
		int timeout;

		expire_waits(e, now, &next);
		schedule(e);
		start_here(e);
		if (e->stopping && e->hurry && e->stop_deadline > now)
			e->stop_deadline = now; /* engine_hurry() */

		/* timeouts and the shutdown deadline */
		for (struct attempt *a = e->attempts; a; a = a->next) {
			if (a->ended)
				continue;
			if (a->kill == KILL_NONE && a->deadline_mono > 0) {
				if (a->deadline_mono <= now) {
					a->kill = KILL_TIMEOUT;
					exec_kill(e->ex, a->ex);
				} else if (!next || a->deadline_mono < next) {
					next = a->deadline_mono;
				}
			}
			if (e->stopping && a->kill == KILL_NONE) {
				if (now >= e->stop_deadline) {
					a->kill = KILL_SHUTDOWN;
					exec_kill(e->ex, a->ex);
				} else if (!next || e->stop_deadline < next) {
					next = e->stop_deadline;
				}
			}
			count += 3;
		}
		if (e->stopping && !e->attempts && !e->nstarting)
			break;

		if (count > cap) {
			size_t nc = count * 2;
			void *p1 = realloc(pfd, nc * sizeof(*pfd));
			void *p2 = p1 ? realloc(who, nc * sizeof(*who)) : NULL;

			if (p1)
				pfd = p1;
			if (p2)
				who = p2;
			if (!p1 || !p2) {
				pthread_mutex_unlock(&e->lock);
				usleep(10000);
				pthread_mutex_lock(&e->lock);
				continue;
			}
			cap = nc;
		}
		pfd[n].fd = e->wake[0];
		pfd[n].events = POLLIN;
		who[n++] = NULL;
		for (struct attempt *a = e->attempts; a; a = a->next) {
			if (a->ended)
				continue;
			pfd[n].fd = exec_fd(e->ex, a->ex);
			pfd[n].events = POLLIN;
			who[n++] = a;
			if (a->err_fd >= 0) {
				pfd[n].fd = a->err_fd;
				pfd[n].events = POLLIN;
				who[n++] = a;
			}
			if (a->in_fd >= 0) {
				pfd[n].fd = a->in_fd;
				pfd[n].events = POLLOUT;
				who[n++] = a;
			}
		}
		/* Wake at least once a second even with nothing due: a
		 * wakeup byte that could not be written (the self-pipe is
		 * the only way other threads reach this loop) then costs a
		 * second, never a hang. */
		timeout = 1000;
		if (next > 0) {
			double ms = (next - now) * 1000 + 1;

			timeout = ms < 0 ? 0 : ms > 1000 ? 1000 : (int)ms;
		}
		pthread_mutex_unlock(&e->lock);
		poll(pfd, n, timeout);
		pthread_mutex_lock(&e->lock);

		if (pfd[0].revents) {
			char buf[256];

			while (read(e->wake[0], buf, sizeof(buf)) > 0) {
				/* nothing to do */
			}
		}
		/* I/O first, exits after, so that the last stderr bytes
		 * are read before the attempt is judged. */
		for (size_t i = 1; i < n; i++) {
			struct attempt *a = who[i];

			if (!pfd[i].revents || a->ended)
				continue;
			if (pfd[i].fd == a->in_fd)
				feed_stdin(e, a);
			else if (pfd[i].fd == a->err_fd)
				drain_stderr(a);
		}
		for (size_t i = 1; i < n; i++) {
			struct attempt *a = who[i];

			if (!a || !pfd[i].revents || a->ended ||
			    pfd[i].events != POLLIN ||
			    pfd[i].fd != exec_fd(e->ex, a->ex))
				continue;
			if (exec_reap(e->ex, a->ex, &a->res) == 0) {
				/* attempt_ended() may free a: forget the
				 * other entries that point to it */
				for (size_t k = i + 1; k < n; k++) {
					if (who[k] == a)
						who[k] = NULL;
				}
				a->ended = 1;
				attempt_ended(e, a);
			}
		}
	}
	pthread_mutex_unlock(&e->lock);
	free(pfd);
	free(who);
	return NULL;
}

/* Stop one of the engine's helper threads: set its flag and signal its
 * condition (with the lock), then join it. */
static void stop_thread(struct engine *e, int *flag, pthread_cond_t *cond,
			pthread_t thread)
{
	pthread_mutex_lock(&e->lock);
	*flag = 1;
	pthread_cond_signal(cond);
	pthread_mutex_unlock(&e->lock);
	pthread_join(thread, NULL);
}

int engine_start(struct engine *e)
{
	int rc;

	pthread_mutex_lock(&e->lock);
	for (size_t i = 0; i < e->njobs; i++) {
		struct job *j = e->jobs[i];

		if (e->o.no_resume && (j->rec.mode == JOB_MODE_RUN ||
				       j->rec.mode == JOB_MODE_SELECTED)) {
			struct db_txn *t = NULL;

			j->rec.mode = JOB_MODE_STOP;
			if (db_begin(e->db, 1, &t) == 0) {
				if (job_put_rec(e, t, j) == 0)
					db_commit(t);
				else
					db_abort(t);
			}
			job_event(j, 0, "not-resumed", "not resumed at mount "
				  "(--no-resume)");
		} else if (j->rec.mode == JOB_MODE_RUN ||
			   j->rec.mode == JOB_MODE_SELECTED) {
			job_event(j, 0, "resumed", NULL);
		}
	}
	pthread_mutex_unlock(&e->lock);

	rc = pthread_create(&e->commit_thread, NULL, commit_main, e);
	if (rc)
		return -rc;
	rc = pthread_create(&e->encode_thread, NULL, encode_main, e);
	if (rc)
		goto no_encode;
	rc = pthread_create(&e->start_thread, NULL, start_main, e);
	if (rc)
		goto no_start;
	rc = pthread_create(&e->sched_thread, NULL, sched_main, e);
	if (rc)
		goto no_sched;
	e->started = 1;
	pthread_mutex_lock(&e->lock);
	engine_want_encode(e);
	pthread_mutex_unlock(&e->lock);
	return 0;

no_sched:
	stop_thread(e, &e->stop_start, &e->start_cond, e->start_thread);
no_start:
	stop_thread(e, &e->stop_encode, &e->encode_cond, e->encode_thread);
no_encode:
	stop_thread(e, &e->stop_commit, &e->commit_cond, e->commit_thread);
	return -rc;
}

void engine_shutdown(struct engine *e)
{
	if (!e || !e->started || e->shut)
		return;
	pthread_mutex_lock(&e->lock);
	e->stopping = 1;
	e->stop_deadline = mono_now() + e->o.grace;
	pthread_mutex_unlock(&e->lock);
	engine_wake(e);
	pthread_join(e->sched_thread, NULL);

	/* the scheduler ended with no start queued or under way */
	stop_thread(e, &e->stop_start, &e->start_cond, e->start_thread);
	stop_thread(e, &e->stop_commit, &e->commit_cond, e->commit_thread);
	stop_thread(e, &e->stop_encode, &e->encode_cond, e->encode_thread);
	e->shut = 1;
}

void engine_close(struct engine *e)
{
	if (!e)
		return;
	engine_shutdown(e);
	for (size_t i = 0; i < e->njobs; i++)
		job_free(e->jobs[i]);
	free(e->jobs);
	free(e->commitq);
	free(e->dead);
	scratch_pool_free(e);
	out_pool_free(e);
	db_close(e->db);
	objstore_close(&e->os);
	if (e->wake[0] >= 0)
		close(e->wake[0]);
	if (e->wake[1] >= 0)
		close(e->wake[1]);
	pthread_mutex_destroy(&e->lock);
	pthread_mutex_destroy(&e->scratch_lock);
	pthread_cond_destroy(&e->idle);
	pthread_cond_destroy(&e->commit_cond);
	pthread_cond_destroy(&e->start_cond);
	pthread_cond_destroy(&e->encode_cond);
	free(e);
}
