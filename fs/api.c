/*
 * api.c - the engine calls behind the FUSE tree: jobs, control verbs,
 * spec and input writes, chunk files, logs and the joined output.
 *
 * Each call takes e->lock for its whole duration except where it must do
 * slow I/O (verify hashes every output; an input commit fsyncs and hashes
 * the new input): those drop the lock for the slow part and re-check what
 * they saw when they take it again.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "control.h"
#include "crashpoint.h"
#include "fault.h"
#include "engine_int.h"

#define LOCK(e) pthread_mutex_lock(&(e)->lock)
#define UNLOCK(e) pthread_mutex_unlock(&(e)->lock)

#define SETTLE_MS 5000

/*
 * The job called name, once the attempts that a cancel killed have ended.
 * After "echo cancel > control" the job is stopped, but its killed
 * process trees take a moment to be reaped; an rmdir, a reset or a new
 * spec or input written right after the cancel waits for that (at most
 * SETTLE_MS) rather than failing with EBUSY. A job that is stopping for
 * another reason (a pause lets its chunks finish) is returned as it is.
 * With e->lock held, which the wait releases: the job may be gone after
 * it (NULL).
 */
static struct job *job_find_settled(struct engine *e, const char *name)
{
	struct job *j = job_find(e, name);
	struct timespec until;

	if (!j || j->rec.mode != JOB_MODE_STOP || !job_active(j))
		return j;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += SETTLE_MS / 1000;
	while (j && j->rec.mode == JOB_MODE_STOP && job_active(j)) {
		if (pthread_cond_timedwait(&e->idle, &e->lock, &until))
			break;
		j = job_find(e, name);
	}
	return j;
}

/* ------------------------------------------------------------------ */
/* jobs */

int engine_job_create(struct engine *e, const char *name)
{
	struct db_txn *t = NULL;
	struct job *j = NULL;
	int rc;

	if (!engine_name_ok(name))
		return -EINVAL;
	LOCK(e);
	if (job_find(e, name)) {
		rc = -EEXIST;
		goto out;
	}
	if (e->njobs >= e->o.max_jobs) {
		rc = -ENOSPC;
		goto out;
	}
	j = calloc(1, sizeof(*j));
	if (!j || !(j->cs = calloc(1, 1))) {
		rc = -ENOMEM;
		goto out;
	}
	snprintf(j->name, sizeof(j->name), "%s", name);
	j->events_fd = -1;
	rc = db_begin(e->db, 1, &t);
	if (rc)
		goto out;
	rc = db_next_job_id(t, &j->id);
	if (rc)
		goto out;
	j->rec.version = 1;
	j->rec.id = j->id;
	j->rec.created_ms = j->rec.updated_ms = wall_ms();
	rc = db_job_put(t, name, &j->rec, NULL, 0);
	if (rc)
		goto out;
	rc = db_commit(t);
	t = NULL;
	if (rc)
		goto out;
	{
		char ev[64];

		snprintf(ev, sizeof(ev), "%" PRIu64 ".jsonl", j->id);
		j->events_fd = openat(e->os.events, ev, O_WRONLY | O_CREAT |
				      O_TRUNC | O_APPEND | O_NOFOLLOW |
				      O_CLOEXEC, 0600);
	}
	j->run_mono = mono_now();
	rc = 0;
	{
		struct job **p;

		if (e->njobs == e->capjobs) {
			size_t cap = e->capjobs ? e->capjobs * 2 : 16;

			p = realloc(e->jobs, cap * sizeof(*p));
			if (!p) {
				rc = -ENOMEM; /* committed; loads next mount */
				goto out;
			}
			e->jobs = p;
			e->capjobs = cap;
		}
		e->jobs[e->njobs++] = j;
		j = NULL;
	}
	job_event(e->jobs[e->njobs - 1], 0, "created", NULL);
out:
	db_abort(t);
	if (j) {
		if (j->events_fd >= 0)
			close(j->events_fd);
		free(j->cs);
		free(j);
	}
	UNLOCK(e);
	return rc;
}

struct release_ctx {
	struct db_txn *t;
	uint8_t (*dead)[SHA_LEN];
	size_t n, cap;
};

static int release_done(void *arg, uint32_t n, const struct chunk_rec *r,
			const char *err, size_t errlen)
{
	struct release_ctx *c = arg;
	uint64_t refs;
	int rc;

	(void)n;
	(void)err;
	(void)errlen;
	if (r->state != CHUNK_DONE)
		return 0;
	rc = db_obj_ref(c->t, r->obj, r->obj_size, -1, &refs);
	if (rc || refs)
		return rc;
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 32;
		void *p = realloc(c->dead, cap * SHA_LEN);

		if (!p)
			return 0; /* the next startup sweep removes it */
		c->dead = p;
		c->cap = cap;
	}
	memcpy(c->dead[c->n++], r->obj, SHA_LEN);
	return 0;
}

int engine_job_delete(struct engine *e, const char *name)
{
	struct release_ctx c = { 0 };
	struct job *j;
	char buf[128];
	int rc;

	LOCK(e);
	j = job_find_settled(e, name);
	if (!j) {
		rc = -ENOENT;
		goto out;
	}
	if (job_busy(j) || j->busy_writers || j->verifying || j->encoding) {
		job_reject(j, "rmdir refused: the job is running; write "
			   "cancel to control first");
		rc = -EBUSY;
		goto out;
	}
	rc = db_begin(e->db, 1, &c.t);
	if (rc)
		goto out;
	rc = db_chunk_iter(c.t, j->id, 1, release_done, &c);
	if (!rc && j->rec.has_enc) {
		struct chunk_rec fake = { .state = CHUNK_DONE };

		memcpy(fake.obj, j->rec.enc_obj, SHA_LEN);
		fake.obj_size = j->rec.enc_size;
		rc = release_done(&c, 0, &fake, NULL, 0);
	}
	if (!rc)
		rc = db_chunk_del_all(c.t, j->id);
	if (!rc)
		rc = db_job_del(c.t, j->name);
	if (rc) {
		db_abort(c.t);
		goto out;
	}
	rc = db_commit(c.t);
	if (rc)
		goto out;
	for (size_t i = 0; i < c.n; i++)
		engine_mark_dead(e, c.dead[i]);
	if (j->rec.has_input) {
		job_input_name(j, buf, sizeof(buf));
		unlinkat(e->os.inputs, buf, 0);
	}
	snprintf(buf, sizeof(buf), "%" PRIu64 ".jsonl", j->id);
	unlinkat(e->os.events, buf, 0);
	snprintf(buf, sizeof(buf), "%" PRIu64, j->id);
	objstore_rmtree(e->os.logs, buf);
	for (size_t i = 0; i < e->njobs; i++) {
		if (e->jobs[i] == j) {
			memmove(&e->jobs[i], &e->jobs[i + 1],
				(e->njobs - i - 1) * sizeof(*e->jobs));
			e->njobs--;
			break;
		}
	}
	job_free(j);
out:
	free(c.dead);
	UNLOCK(e);
	return rc;
}

int engine_job_list(struct engine *e, engine_name_fn fn, void *arg)
{
	int rc = 0;

	LOCK(e);
	for (size_t i = 0; i < e->njobs && !rc; i++)
		rc = fn(arg, e->jobs[i]->name);
	UNLOCK(e);
	return rc;
}

int engine_job_info(struct engine *e, const char *name, struct job_info *out)
{
	struct job *j;

	LOCK(e);
	j = job_find(e, name);
	if (j) {
		memset(out, 0, sizeof(*out));
		snprintf(out->ext, sizeof(out->ext), "%s",
			 j->has_spec ? j->spec.ext : "out");
		out->has_output = j->has_spec &&
			j->spec.output != SPEC_OUTPUT_NONE;
		out->audio = j->has_spec && SPEC_IS_AUDIO(j->spec.output);
		out->encoded = j->has_spec ? spec_encoded_ext(j->spec.output) :
			NULL;
		out->created_ms = j->rec.created_ms;
		out->updated_ms = j->rec.updated_ms;
		out->nchunks = j->nchunks;
		out->width = job_width(j);
		out->spec_len = j->spec_len;
		out->input_len = j->rec.has_input ? j->rec.input_len : 0;
		out->events_len = j->events_len;
	}
	UNLOCK(e);
	return j ? 0 : -ENOENT;
}

/* ------------------------------------------------------------------ */
/* rendering */

static const char control_help[] =
	"start          run every chunk that is not done\n"
	"resume         the same as start\n"
	"pause          start no new chunk; running ones finish\n"
	"cancel         kill running chunks; they return to pending\n"
	"retry-failed   run the failed chunks again\n"
	"retry N[-M],.. discard those chunks' outputs and run them again\n"
	"reset          discard every output and all chunk state\n"
	"verify         re-hash every done output; corrupt ones run again\n";

int engine_render(struct engine *e, const char *name, enum render_what w,
		  char **buf, size_t *len)
{
	struct job *j;
	int rc = 0;

	LOCK(e);
	j = job_find(e, name);
	if (!j) {
		rc = -ENOENT;
		goto out;
	}
	switch (w) {
	case RENDER_STATUS:
		rc = render_status(e, j, buf, len);
		break;
	case RENDER_STATUS_JSON:
		rc = render_status_json(e, j, buf, len);
		break;
	case RENDER_MANIFEST:
		if (!j->manifest || j->manifest_version != j->version) {
			free(j->manifest);
			j->manifest = NULL;
			rc = render_manifest(e, j, &j->manifest,
					     &j->manifest_len);
			if (rc)
				break;
			j->manifest_version = j->version;
		}
		*buf = malloc(j->manifest_len + 1);
		if (!*buf) {
			rc = -ENOMEM;
			break;
		}
		memcpy(*buf, j->manifest, j->manifest_len);
		*len = j->manifest_len;
		break;
	case RENDER_CONTROL:
		*buf = strdup(control_help);
		*len = sizeof(control_help) - 1;
		rc = *buf ? 0 : -ENOMEM;
		break;
	case RENDER_SPEC:
		*len = j->spec_len;
		*buf = malloc(j->spec_len + 1);
		if (!*buf) {
			rc = -ENOMEM;
			break;
		}
		if (j->spec_len)
			memcpy(*buf, j->spec_text, j->spec_len);
		break;
	}
out:
	UNLOCK(e);
	return rc;
}

/* ------------------------------------------------------------------ */
/* control verbs */

/* Write the chunk records of j whose in-memory state changes, through fn,
 * in one transaction. */
typedef int (*rec_edit_fn)(struct job *j, uint32_t n, struct chunk_rec *r,
			   void *arg);

static int edit_chunks(struct engine *e, struct job *j, const uint32_t *list,
		       size_t count, rec_edit_fn fn, void *arg,
		       struct release_ctx *rel)
{
	struct db_txn *t = NULL;
	int rc;

	rc = db_begin(e->db, 1, &t);
	if (rc)
		return rc;
	for (size_t i = 0; i < count && !rc; i++) {
		struct chunk_rec r;
		char err[DB_ERR_MAX + 1];

		rc = db_chunk_get(t, j->id, list[i], &r, err);
		if (rc)
			break;
		if (rel && r.state == CHUNK_DONE) {
			uint64_t refs;

			rc = db_obj_ref(t, r.obj, r.obj_size, -1, &refs);
			if (!rc && !refs && rel->n < rel->cap)
				memcpy(rel->dead[rel->n++], r.obj, SHA_LEN);
			if (rc)
				break;
		}
		rc = fn(j, list[i], &r, arg);
		if (!rc)
			rc = db_chunk_put(t, j->id, list[i], &r, err);
	}
	if (!rc)
		rc = job_put_rec(e, t, j);
	if (rc) {
		db_abort(t);
		return rc;
	}
	return db_commit(t);
}

/* fresh budget; queued if asked */
static int rec_requeue(struct job *j, uint32_t n, struct chunk_rec *r,
		       void *arg)
{
	int queue = *(int *)arg;

	(void)j;
	(void)n;
	r->state = CHUNK_PENDING;
	r->fails = 0;
	r->flags = (uint8_t)((r->flags & ~(CHUNK_F_REUSED | CHUNK_F_QUEUED)) |
			     (queue ? CHUNK_F_QUEUED : 0));
	return 0;
}

static int rec_reset(struct job *j, uint32_t n, struct chunk_rec *r,
		     void *arg)
{
	(void)j;
	(void)n;
	(void)arg;
	r->state = CHUNK_PENDING;
	r->flags = 0;
	r->fails = 0;
	r->attempts = 0;
	r->last_code = 0;
	memset(r->obj, 0, SHA_LEN);
	r->obj_size = 0;
	r->duration_ms = 0;
	r->done_ms = 0;
	return 0;
}

/* Put listed chunks back to pending with a fresh budget; in a job that is
 * not running, only they run (SELECTED). Their outputs, if done, are
 * released. */
static int requeue(struct engine *e, struct job *j, uint32_t *list,
		   size_t count, int discard)
{
	struct release_ctx rel = { 0 };
	uint32_t old_mode = j->rec.mode, old_after = j->rec.after_selected;
	int queue = j->rec.mode != JOB_MODE_RUN, was_busy = job_busy(j), rc;

	if (discard) {
		rel.cap = count;
		rel.dead = malloc(count * SHA_LEN + 1);
		if (!rel.dead)
			return -ENOMEM;
	}
	if (queue && j->rec.mode != JOB_MODE_SELECTED) {
		j->rec.after_selected = j->rec.mode == JOB_MODE_PAUSE ||
			j->rec.mode == JOB_MODE_STOP ? j->rec.mode :
			JOB_MODE_IDLE;
		j->rec.mode = JOB_MODE_SELECTED;
	}
	rc = edit_chunks(e, j, list, count, rec_requeue, &queue,
			 discard ? &rel : NULL);
	if (rc) {
		j->rec.mode = old_mode;
		j->rec.after_selected = old_after;
		free(rel.dead);
		return rc;
	}
	for (size_t i = 0; i < count; i++) {
		uint32_t n = list[i];
		int st = j->cs[n - 1] & CS_MASK;

		if (st == CS_WAIT) {
			for (size_t k = 0; k < j->nwaits; k++) {
				if (j->waits[k].n == n) {
					j->waits[k] = j->waits[--j->nwaits];
					break;
				}
			}
		}
		if (st == CS_DONE)
			job_event(j, n, "discarded", NULL);
		job_set_cs(j, n, CS_PENDING | (queue ? CS_QUEUED : 0));
	}
	for (size_t i = 0; i < rel.n; i++)
		engine_mark_dead(e, rel.dead[i]);
	free(rel.dead);
	j->nreused = 0; /* recounted lazily is not worth it: shown per plan */
	if (!was_busy) {
		j->run_mono = mono_now();
		j->run_end_mono = 0;
		j->run_done = 0;
	}
	engine_wake(e);
	return 0;
}

static int verb_verify(struct engine *e, struct job *j);

int engine_control(struct engine *e, const char *name, const char *buf,
		   size_t len)
{
	struct ctl_cmd cmd = { 0 };
	const char *verb = "control";
	char err[400];
	struct job *j;
	int rc = 0;

	LOCK(e);
	j = job_find(e, name);
	if (!j) {
		UNLOCK(e);
		return -ENOENT;
	}
	if (j->planning) {
		job_reject(j, "control refused: a new plan of the job is being "
			   "saved; write again in a moment");
		rc = -EBUSY;
		goto out;
	}
	rc = control_parse(buf, len, j->nchunks, &cmd, err, sizeof(err));
	if (rc == -EINVAL)
		job_reject(j, "%s", err);
	if (rc)
		goto out;
	verb = control_verb_name(cmd.verb);

	if (cmd.verb == CTL_START || cmd.verb == CTL_RESUME) {
		uint32_t *list;
		size_t count = 0;
		int q = 0;

		if (!j->has_spec || !j->rec.has_input) {
			job_reject(j, "%s refused: the job has no %s yet", verb,
				   !j->has_spec ? "spec" : "input");
			rc = -EBUSY;
			goto out;
		}
		list = malloc(((size_t)j->nfailed + j->nqueued + 1) *
			      sizeof(*list));
		if (!list) {
			rc = -ENOMEM;
			goto out;
		}
		for (uint32_t c = 1; c <= j->nchunks; c++) {
			if ((j->cs[c - 1] & CS_MASK) == CS_FAILED ||
			    (j->cs[c - 1] & CS_QUEUED))
				list[count++] = c;
		}
		if (j->rec.mode != JOB_MODE_RUN) {
			j->run_mono = mono_now();
			j->run_end_mono = 0;
			j->run_done = 0;
			j->done_bytes = 0;
			j->rec.run_started_ms = wall_ms();
		}
		j->rec.mode = JOB_MODE_RUN;
		rc = edit_chunks(e, j, list, count, rec_requeue, &q, NULL);
		if (!rc) {
			for (size_t i = 0; i < count; i++) {
				int st = j->cs[list[i] - 1] & CS_MASK;

				j->cs[list[i] - 1] &= (uint8_t)~CS_QUEUED;
				if (st == CS_FAILED)
					job_set_cs(j, list[i], CS_PENDING);
			}
			j->nqueued = 0;
			job_event(j, 0, verb, NULL);
			/* nothing left to run (all done): done at once,
			 * not a job in mode run that never ends */
			job_check_finished(e, j);
		}
		free(list);
	} else if (cmd.verb == CTL_PAUSE) {
		if (j->rec.mode == JOB_MODE_PAUSE)
			goto out;
		if (j->rec.mode != JOB_MODE_RUN &&
		    j->rec.mode != JOB_MODE_SELECTED) {
			job_reject(j, "pause refused: the job is %s, not "
				   "running", job_state_name(j));
			rc = -EBUSY;
			goto out;
		}
		j->rec.mode = JOB_MODE_PAUSE;
		rc = edit_chunks(e, j, NULL, 0, NULL, NULL, NULL);
		if (!rc)
			job_event(j, 0, "paused", NULL);
	} else if (cmd.verb == CTL_CANCEL) {
		if (j->rec.mode == JOB_MODE_IDLE && !job_active(j)) {
			job_reject(j, "cancel refused: the job is %s, not "
				   "running", job_state_name(j));
			rc = -EBUSY;
			goto out;
		}
		j->rec.mode = JOB_MODE_STOP;
		rc = edit_chunks(e, j, NULL, 0, NULL, NULL, NULL);
		if (rc)
			goto out;
		for (struct attempt *a = e->attempts; a; a = a->next) {
			if (a->job == j && !a->ended && a->kill == KILL_NONE) {
				a->kill = KILL_CANCEL;
				exec_kill(e->ex, a->ex);
			}
		}
		job_clear_waits(j);
		job_event(j, 0, "cancel", NULL);
	} else if (cmd.verb == CTL_RETRY_FAILED) {
		uint32_t *list;
		size_t count = 0;

		if (!j->nfailed)
			goto out; /* nothing failed: nothing to do */
		list = malloc((size_t)j->nfailed * sizeof(*list));
		if (!list) {
			rc = -ENOMEM;
			goto out;
		}
		for (uint32_t c = 1; c <= j->nchunks; c++) {
			if ((j->cs[c - 1] & CS_MASK) == CS_FAILED)
				list[count++] = c;
		}
		rc = requeue(e, j, list, count, 0);
		free(list);
		if (!rc)
			job_event(j, 0, "retry-failed", NULL);
	} else if (cmd.verb == CTL_RETRY) {
		for (size_t i = 0; i < cmd.count; i++) {
			int st = j->cs[cmd.list[i] - 1] & CS_MASK;

			if (st == CS_RUNNING || st == CS_COMMIT) {
				job_reject(j, "retry refused: chunk %" PRIu32
					   " is running", cmd.list[i]);
				rc = -EBUSY;
				break;
			}
		}
		if (!rc)
			rc = requeue(e, j, cmd.list, cmd.count, 1);
	} else if (cmd.verb == CTL_RESET) {
		struct release_ctx rel = { 0 };
		uint32_t *list;

		j = job_find_settled(e, name);
		if (!j) { /* removed while the cancel settled */
			control_free(&cmd);
			UNLOCK(e);
			return -ENOENT;
		}
		if (job_busy(j)) {
			job_reject(j, "reset refused: the job is running; "
				   "write cancel or pause first");
			rc = -EBUSY;
			goto out;
		}
		list = malloc(((size_t)j->nchunks + 1) * sizeof(*list));
		rel.cap = j->ndone;
		rel.dead = malloc((size_t)j->ndone * SHA_LEN + 1);
		if (!list || !rel.dead) {
			free(list);
			free(rel.dead);
			rc = -ENOMEM;
			goto out;
		}
		for (uint32_t c = 1; c <= j->nchunks; c++)
			list[c - 1] = c;
		j->rec.mode = JOB_MODE_IDLE;
		j->rec.run_started_ms = 0;
		rc = edit_chunks(e, j, list, j->nchunks, rec_reset, NULL, &rel);
		if (!rc) {
			job_clear_waits(j);
			for (uint32_t c = 1; c <= j->nchunks; c++)
				job_set_cs(j, c, CS_PENDING);
			j->nqueued = 0;
			memset(j->cs, CS_PENDING, j->nchunks);
			j->nreused = 0;
			j->run_done = 0;
			for (size_t i = 0; i < rel.n; i++)
				engine_mark_dead(e, rel.dead[i]);
			for (uint32_t c = 1; c <= j->nchunks; c++)
				log_unlink(e->os.logs, j->id, c);
			job_event(j, 0, "reset", NULL);
		}
		free(list);
		free(rel.dead);
	} else if (cmd.verb == CTL_VERIFY) {
		if (j->verifying) {
			job_reject(j, "verify refused: a verify is running");
			rc = -EBUSY;
			goto out;
		}
		rc = verb_verify(e, j); /* unlocks and relocks */
	}
out:
	if (rc == -EIO || rc == -ENOSPC || rc == -ENOMEM)
		snprintf(j->last_error, sizeof(j->last_error), "%s: %s", verb,
			 strerror(-rc));
	control_free(&cmd);
	job_bump(j);
	UNLOCK(e);
	engine_wake(e);
	return rc;
}

/*
 * verify: re-hash every done output against its recorded SHA-256. The
 * hashing runs without the lock; a chunk whose object is missing or
 * differs goes back to pending (and runs when the job runs), and each one
 * is reported with a "corrupt" event. Called and returns with e->lock.
 */
struct vitem {
	uint32_t n;
	uint8_t obj[SHA_LEN];
	uint64_t size;
	int bad;
	char why[96];
};

struct vcollect {
	struct vitem *v;
	size_t n, cap;
};

static int verify_collect(void *arg, uint32_t n, const struct chunk_rec *r,
			  const char *err, size_t errlen)
{
	struct vcollect *c = arg;

	(void)err;
	(void)errlen;
	if (r->state != CHUNK_DONE)
		return 0;
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 64;
		void *p = realloc(c->v, cap * sizeof(*c->v));

		if (!p)
			return -ENOMEM;
		c->v = p;
		c->cap = cap;
	}
	memset(&c->v[c->n], 0, sizeof(c->v[c->n]));
	c->v[c->n].n = n;
	memcpy(c->v[c->n].obj, r->obj, SHA_LEN);
	c->v[c->n].size = r->obj_size;
	c->n++;
	return 0;
}

static int verb_verify(struct engine *e, struct job *j)
{
	struct vcollect c = { 0 };
	struct db_txn *t = NULL;
	size_t nbad = 0;
	uint32_t *list = NULL;
	int rc;

	rc = db_begin(e->db, 0, &t);
	if (rc)
		return rc;
	rc = db_chunk_iter(t, j->id, 1, verify_collect, &c);
	db_abort(t);
	if (rc)
		goto out_free;
	/* While the lock is down, j->verifying keeps the job and its plan
	 * in place: rmdir, spec and input refuse with EBUSY. */
	j->verifying++;
	UNLOCK(e);
	for (size_t i = 0; i < c.n; i++) {
		struct vitem *v = &c.v[i];
		uint8_t sha[SHA_LEN];
		uint64_t size;
		int fd;

		rc = engine_obj_open_unlocked(e, v->obj, &fd);
		if (rc) {
			v->bad = 1;
			snprintf(v->why, sizeof(v->why), "output missing: %s",
				 strerror(-rc));
			continue;
		}
		rc = sha_fd(fd, sha, &size);
		close(fd);
		if (rc) {
			v->bad = 1;
			snprintf(v->why, sizeof(v->why), "output unreadable: "
				 "%s", strerror(-rc));
		} else if (size != v->size) {
			v->bad = 1;
			snprintf(v->why, sizeof(v->why), "output is %" PRIu64
				 " bytes, %" PRIu64 " were recorded", size,
				 v->size);
		} else if (memcmp(sha, v->obj, SHA_LEN)) {
			v->bad = 1;
			snprintf(v->why, sizeof(v->why), "output SHA-256 does "
				 "not match");
		}
	}
	LOCK(e);
	j->verifying--;
	rc = 0;
	list = malloc((c.n + 1) * sizeof(*list));
	if (!list) {
		rc = -ENOMEM;
		goto out_free;
	}
	for (size_t i = 0; i < c.n; i++) {
		struct vitem *v = &c.v[i];

		if (!v->bad || v->n > j->nchunks ||
		    (j->cs[v->n - 1] & CS_MASK) != CS_DONE)
			continue;
		list[nbad++] = v->n;
		job_event(j, v->n, "corrupt", "%s", v->why);
	}
	if (nbad) {
		struct release_ctx rel = { 0 };
		int q = j->rec.mode != JOB_MODE_RUN;

		rel.cap = nbad;
		rel.dead = malloc(nbad * SHA_LEN);
		/* A corrupt object is removed even if another chunk still
		 * refers to it: verify of that chunk finds it missing. */
		rc = edit_chunks(e, j, list, nbad, rec_requeue, &q,
				 rel.dead ? &rel : NULL);
		if (!rc) {
			for (size_t i = 0; i < nbad; i++)
				job_set_cs(j, list[i], CS_PENDING);
			for (size_t i = 0; i < c.n; i++) {
				if (c.v[i].bad)
					objstore_unlink_obj(&e->os, c.v[i].obj);
			}
		}
		free(rel.dead);
	}
	{
		char msg[128];

		snprintf(msg, sizeof(msg), "%zu outputs checked, %zu corrupt "
			 "or missing", c.n, nbad);
		job_event(j, 0, "verified", nbad ? "%s" : NULL, msg);
		snprintf(j->last_error, sizeof(j->last_error), "verify: %s",
			 msg);
	}
out_free:
	free(list);
	free(c.v);
	return rc;
}

/* ------------------------------------------------------------------ */
/* spec */

int engine_spec_writable(struct engine *e, const char *name)
{
	struct job *j;
	int rc = 0;

	LOCK(e);
	j = job_find_settled(e, name);
	if (!j) {
		rc = -ENOENT;
	} else if (job_busy(j) || j->verifying) {
		job_reject(j, "spec refused: the job is running; write pause "
			   "or cancel to control first");
		rc = -EBUSY;
	}
	UNLOCK(e);
	return rc;
}

int engine_spec_check(struct engine *e, const char *name, const char *text,
		      size_t len)
{
	struct spec s;
	struct job *j;
	char err[300];
	int rc;

	rc = spec_parse(text, len, &s, err, sizeof(err));
	if (!rc) {
		spec_release(&s);
		return 0;
	}
	LOCK(e);
	j = job_find(e, name);
	if (j)
		job_reject(j, "%s", err);
	UNLOCK(e);
	return rc == -E2BIG ? -EFBIG : -EINVAL;
}

/*
 * Cut the input in force of j under sp, without the lock: returns with
 * e->lock held again and *jp the job found again by name, or NULL (and
 * -ENOENT) when it was deleted meanwhile. -EAGAIN when the job's input
 * changed meanwhile (the caller cuts again). Called with e->lock held.
 */
static int cut_unlocked(struct engine *e, const char *name, struct job **jp,
			const struct spec *sp, struct plan_cut *cut)
{
	struct job *j = *jp;
	uint64_t id = j->id;
	uint8_t want[SHA_LEN];
	void *map = NULL;
	size_t len = 0;
	int rc;

	memset(cut, 0, sizeof(*cut));
	if (!j->rec.has_input)
		return 0;
	memcpy(want, j->rec.input_sha, SHA_LEN);
	rc = job_map_input_ro(e, j, &map, &len);
	if (rc)
		return rc;
	UNLOCK(e);
	rc = plan_cut(map, len, sp, e->o.max_chunks, cut);
	if (map)
		munmap(map, len);
	LOCK(e);
	*jp = j = job_find(e, name);
	if (!j || j->id != id) {
		*jp = NULL;
		rc = -ENOENT;
	} else if (!rc && (!j->rec.has_input ||
			   memcmp(j->rec.input_sha, want, SHA_LEN))) {
		rc = -EAGAIN;
	}
	if (rc)
		plan_cut_free(cut);
	return rc;
}

static void reject_too_many(struct engine *e, struct job *j, const char *what)
{
	job_reject(j, "%s refused: the input cuts into more than %" PRIu32
		   " chunks (--max-chunks)", what, e->o.max_chunks);
}

int engine_spec_set(struct engine *e, const char *name, const char *text,
		    size_t len)
{
	struct plan_cut cut = { 0 };
	struct spec s;
	struct job *j;
	char err[300];
	int rc, tries = 0;

	rc = spec_parse(text, len, &s, err, sizeof(err));
	LOCK(e);
	j = job_find_settled(e, name);
	if (!j) {
		if (!rc)
			spec_release(&s);
		UNLOCK(e);
		return -ENOENT;
	}
	if (rc) {
		job_reject(j, "%s", err);
		UNLOCK(e);
		return rc == -E2BIG ? -EFBIG : -EINVAL;
	}
again:
	if (j->planning) {
		spec_release(&s);
		job_reject(j, "spec refused: a new plan of the job is being "
			   "saved; write again in a moment");
		UNLOCK(e);
		return -EBUSY;
	}
	if (job_busy(j) || j->verifying) {
		spec_release(&s);
		job_reject(j, "spec refused: the job is running; write pause "
			   "or cancel to control first");
		UNLOCK(e);
		return -EBUSY;
	}
	if (j->spec_text && j->spec_len == len &&
	    !memcmp(j->spec_text, text, len)) {
		spec_release(&s); /* unchanged: keep the plan */
		UNLOCK(e);
		return 0;
	}
	/* The input in force is cut under the new spec without the lock;
	 * if a new input lands meanwhile, it is cut again. */
	rc = cut_unlocked(e, name, &j, &s, &cut);
	if (rc == -EAGAIN && ++tries < 8)
		goto again;
	if (rc == -EAGAIN)
		rc = -EBUSY;
	if (rc) {
		spec_release(&s);
		if (j && rc == -E2BIG) {
			reject_too_many(e, j, "spec");
			rc = -EINVAL;
		} else if (j && rc != -ENOENT) {
			job_reject(j, "spec not saved: %s", strerror(-rc));
		}
		UNLOCK(e);
		return rc;
	}
	if (job_busy(j) || j->verifying) {
		plan_cut_free(&cut);
		goto again; /* refused there */
	}
	crashpoint("spec-write");
	rc = plan_job(e, j, text, len, &s, &cut, 0, NULL, j->rec.has_input);
	plan_cut_free(&cut);
	if (rc) {
		spec_release(&s);
		job_reject(j, "spec not saved: %s", strerror(-rc));
	} else {
		j->last_reject[0] = '\0';
		job_event(j, 0, "spec", NULL);
	}
	UNLOCK(e);
	engine_wake(e);
	return rc;
}

/* ------------------------------------------------------------------ */
/* input */

struct input_tx {
	char name[65];
	char tmp[96];
	int fd;
};

/* With e->lock held. */
static void input_tx_end(struct engine *e, struct input_tx *tx)
{
	struct job *j = job_find(e, tx->name);

	if (j && j->busy_writers)
		j->busy_writers--;
}

uint64_t engine_max_input(struct engine *e)
{
	return e->o.max_input;
}

void engine_input_refuse(struct engine *e, const char *name, uint64_t size)
{
	struct job *j;

	LOCK(e);
	j = job_find(e, name);
	if (j)
		job_reject(j, "input refused: a write reaching %" PRIu64
			   " bytes is over the limit of %" PRIu64 " (--max-input);"
			   " the input in force is kept", size, e->o.max_input);
	UNLOCK(e);
}

/*
 * Open a write transaction on a job's input: a temp file that the writer
 * fills and engine_input_commit() makes the input. Without trunc (an
 * O_APPEND or a write at an offset) the temp file starts as a copy of the
 * input in force. The copy, as large as the input (1 GiB takes seconds),
 * is made without the engine lock: the job counts the writer first, so it
 * cannot be removed meanwhile, and the committed input is read through an
 * fd opened under the lock, which a plan committed meanwhile cannot take
 * away (inputs are named by content and never rewritten).
 */
int engine_input_begin(struct engine *e, const char *name, int trunc,
		       struct input_tx **out, int *fd_out)
{
	struct input_tx *tx;
	struct job *j;
	uint64_t len = 0;
	loff_t off = 0;
	int rc, src = -1;

	tx = calloc(1, sizeof(*tx));
	if (!tx)
		return -ENOMEM;
	tx->fd = -1;
	LOCK(e);
	j = job_find_settled(e, name);
	if (!j) {
		rc = -ENOENT;
		goto fail;
	}
	if (job_busy(j) || j->verifying) {
		job_reject(j, "input refused: the job is running; write pause "
			   "or cancel to control first");
		rc = -EBUSY;
		goto fail;
	}
	snprintf(tx->name, sizeof(tx->name), "%s", name);
	rc = objstore_tmp_create(&e->os, "input", tx->tmp, sizeof(tx->tmp),
				 &tx->fd);
	if (rc)
		goto fail;
	if (!trunc && j->rec.has_input && j->rec.input_len) {
		char in[128];

		job_input_name(j, in, sizeof(in));
		src = openat(e->os.inputs, in, O_RDONLY | O_NOFOLLOW |
			     O_CLOEXEC);
		if (src < 0) {
			rc = -errno;
			goto fail;
		}
		len = j->rec.input_len;
	}
	j->busy_writers++;
	UNLOCK(e);

	while (off < (loff_t)len) {
		ssize_t n = copy_file_range(src, &off, tx->fd, NULL,
					    len - (uint64_t)off, 0);

		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO;
			break;
		}
	}
	if (src >= 0) {
		close(src);
		src = -1;
	}
	if (rc) {
		LOCK(e);
		input_tx_end(e, tx);
		goto fail;
	}
	*out = tx;
	*fd_out = tx->fd;
	return 0;
fail:
	if (src >= 0)
		close(src);
	if (tx->fd >= 0) {
		close(tx->fd);
		unlinkat(e->os.tmp, tx->tmp, 0);
	}
	UNLOCK(e);
	free(tx);
	return rc;
}

int engine_input_commit(struct engine *e, struct input_tx *tx)
{
	uint8_t sha[SHA_LEN];
	uint64_t size, id;
	char name[128], hex[SHA_HEX_LEN + 1], oldname[128];
	struct plan_cut cut = { 0 };
	enum chunk_by cut_by = 0;
	uint64_t cut_max = 0;
	int have_cut = 0;
	void *map = NULL;
	struct job *j;
	int rc, renamed = 0, tries = 0;

	/* The slow parts without the lock: hash and make durable, then cut
	 * under the spec in force (cut again if the spec changes meanwhile). */
	rc = sha_fd(tx->fd, sha, &size);
	if (!rc && fsync(tx->fd) < 0)
		rc = -errno;
	if (!rc && size > 0) {
		map = mmap(NULL, size, PROT_READ, MAP_SHARED, tx->fd, 0);
		if (map == MAP_FAILED) {
			map = NULL;
			rc = -errno;
		}
	}
	LOCK(e);
	for (;;) {
		struct spec sp;

		j = job_find(e, tx->name);
		if (!j) {
			rc = -ENOENT;
			goto out;
		}
		if (rc)
			goto out;
		if (j->rec.has_input && !memcmp(sha, j->rec.input_sha,
						SHA_LEN)) {
			rc = 0; /* the same bytes again: nothing changes */
			goto out;
		}
		if (j->planning) {
			job_reject(j, "input refused: a new plan of the job is "
				   "being saved; write again in a moment");
			rc = -EBUSY;
			goto out;
		}
		if (job_busy(j) || j->verifying) {
			job_reject(j, "input refused: the job started while it "
				   "was being written");
			rc = -EBUSY;
			goto out;
		}
		if (!j->has_spec || size == 0) {
			plan_cut_free(&cut); /* nothing to cut */
			break;
		}
		if (have_cut && j->spec.by == cut_by && j->spec.max == cut_max)
			break;
		if (++tries > 8) {
			job_reject(j, "input refused: the spec kept changing "
				   "while the input was cut");
			rc = -EBUSY;
			goto out;
		}
		plan_cut_free(&cut);
		memset(&sp, 0, sizeof(sp));
		sp.by = cut_by = j->spec.by;
		sp.max = cut_max = j->spec.max;
		id = j->id;
		UNLOCK(e);
		rc = plan_cut(map, size, &sp, e->o.max_chunks, &cut);
		LOCK(e);
		have_cut = !rc;
		j = job_find(e, tx->name);
		if (!j || j->id != id) {
			rc = -ENOENT;
			goto out;
		}
		if (rc == -E2BIG) {
			reject_too_many(e, j, "input");
			rc = -EFBIG;
			goto out;
		}
	}
	sha_hex(sha, hex);
	snprintf(name, sizeof(name), "%" PRIu64 "-%s", j->id, hex);
	if (FAULT("jobfs/rename", EIO) ||
	    renameat(e->os.tmp, tx->tmp, e->os.inputs, name) < 0) {
		rc = -errno;
		goto out;
	}
	renamed = 1;
	rc = objstore_fsync_dir(e->os.inputs);
	if (rc)
		goto out;
	crashpoint("input-renamed");
	oldname[0] = '\0';
	if (j->rec.has_input)
		job_input_name(j, oldname, sizeof(oldname));
	rc = plan_job(e, j, NULL, 0, NULL, &cut, size, sha, 1);
	if (rc) {
		job_reject(j, "input not saved: %s", strerror(-rc));
		goto out;
	}
	renamed = 0; /* it is the job's input now */
	if (oldname[0] && strcmp(oldname, name))
		unlinkat(e->os.inputs, oldname, 0);
	j->last_reject[0] = '\0';
	job_event(j, 0, "input", NULL);
out:
	if (renamed)
		unlinkat(e->os.inputs, name, 0);
	plan_cut_free(&cut);
	input_tx_end(e, tx);
	UNLOCK(e);
	if (map)
		munmap(map, size);
	close(tx->fd);
	unlinkat(e->os.tmp, tx->tmp, 0);
	free(tx);
	engine_wake(e);
	return rc;
}

void engine_input_abort(struct engine *e, struct input_tx *tx)
{
	LOCK(e);
	input_tx_end(e, tx);
	UNLOCK(e);
	close(tx->fd);
	unlinkat(e->os.tmp, tx->tmp, 0);
	free(tx);
}

int engine_input_open(struct engine *e, const char *name, int *fd_out)
{
	struct job *j;
	char in[128];
	int rc = 0;

	LOCK(e);
	j = job_find(e, name);
	if (!j) {
		rc = -ENOENT;
	} else if (!j->rec.has_input) {
		*fd_out = -1; /* empty */
	} else {
		job_input_name(j, in, sizeof(in));
		*fd_out = openat(e->os.inputs, in, O_RDONLY | O_NOFOLLOW |
				 O_CLOEXEC);
		if (*fd_out < 0)
			rc = -errno;
	}
	UNLOCK(e);
	return rc;
}

int engine_events_open(struct engine *e, const char *name, int *fd_out)
{
	struct job *j;
	char ev[64];
	int rc = 0;

	LOCK(e);
	j = job_find(e, name);
	if (!j) {
		rc = -ENOENT;
	} else {
		snprintf(ev, sizeof(ev), "%" PRIu64 ".jsonl", j->id);
		*fd_out = openat(e->os.events, ev, O_RDONLY | O_NOFOLLOW |
				 O_CLOEXEC);
		if (*fd_out < 0)
			rc = -errno;
	}
	UNLOCK(e);
	return rc;
}

/* ------------------------------------------------------------------ */
/* chunks and logs */

/*
 * The done set is the in-memory state (one byte per chunk), which is what
 * a commit makes visible: no LMDB walk, so listing a few done chunks of a
 * million-chunk plan costs a scan of a megabyte.
 */
int engine_chunk_list(struct engine *e, const char *name, int logs,
		      uint32_t from, engine_chunk_fn fn, void *arg)
{
	struct job *j;
	int rc = 0;

	LOCK(e);
	j = job_find(e, name);
	if (!j) {
		rc = -ENOENT;
		goto out;
	}
	if (logs) {
		char dir[32];
		int fd;
		DIR *d;
		struct dirent *de;

		snprintf(dir, sizeof(dir), "%" PRIu64, j->id);
		fd = openat(e->os.logs, dir, O_RDONLY | O_DIRECTORY |
			    O_NOFOLLOW | O_CLOEXEC);
		rc = 0;
		if (fd < 0)
			goto out;
		d = fdopendir(fd);
		if (!d) {
			close(fd);
			goto out;
		}
		while (!rc && (de = readdir(d))) {
			char *end;
			unsigned long n = strtoul(de->d_name, &end, 10);

			if (end == de->d_name || strcmp(end, ".log") || n < 1 ||
			    n > j->nchunks)
				continue;
			rc = fn(arg, (uint32_t)n);
		}
		closedir(d);
		goto out;
	}
	for (uint32_t n = from ? from : 1; !rc && n <= j->nchunks; n++) {
		if ((j->cs[n - 1] & CS_MASK) == CS_DONE)
			rc = fn(arg, n);
	}
out:
	UNLOCK(e);
	return rc;
}

/* The record of done chunk n of a job, with e->lock held: -ENOENT unless
 * the chunk is done. Sets *jout to the job. */
static int done_rec(struct engine *e, const char *name, uint32_t n,
		    struct job **jout, struct chunk_rec *r)
{
	struct db_txn *t = NULL;
	struct job *j = job_find(e, name);
	int rc;

	*jout = j;
	if (!j || n < 1 || n > j->nchunks ||
	    (j->cs[n - 1] & CS_MASK) != CS_DONE)
		return -ENOENT;
	rc = db_begin(e->db, 0, &t);
	if (rc)
		return rc;
	rc = db_chunk_get(t, j->id, n, r, NULL);
	db_abort(t);
	if (!rc && r->state != CHUNK_DONE)
		rc = -ENOENT;
	return rc;
}

int engine_chunk_stat(struct engine *e, const char *name, uint32_t n,
		      uint64_t *size, int64_t *mtime_ms)
{
	struct chunk_rec r;
	struct job *j;
	int rc;

	LOCK(e);
	rc = done_rec(e, name, n, &j, &r);
	if (!rc) {
		*size = r.obj_size;
		*mtime_ms = r.done_ms;
		if (j->has_spec && SPEC_IS_AUDIO(j->spec.output)) {
			struct audio_fmt f = { r.rate, r.channels, r.enc,
					       r.frames };
			uint8_t h[AUDIO_HEADER_MAX];

			*size += audio_wav_header(&f, r.frames, h);
		}
	}
	UNLOCK(e);
	return rc;
}

/*
 * The kernel keeps a chunk file's pages across opens unless an open says
 * otherwise, and it knows the file by its name: a chunk redone since (a
 * retry, an edited input, a job made again under the same name) has new
 * bytes under the same name. So each open of chunk n records a tag of the
 * done record it serves, and lets the kernel keep its cache only if the
 * previous open served the same record. The tag covers the output's hash
 * and the time it became done, so a redo that happens to give the same
 * bytes also starts afresh, which is merely slower. Called with e->lock
 * held, r being chunk n's done record.
 */
static void chunk_keep_cache(struct job *j, uint32_t n,
			     const struct chunk_rec *r, struct chunk_cache *cc)
{
	uint32_t tag = ((uint32_t)r->obj[0] | (uint32_t)r->obj[1] << 8 |
			(uint32_t)r->obj[2] << 16 | (uint32_t)r->obj[3] << 24) ^
		((uint32_t)r->done_ms * 2654435761u) ^
		(uint32_t)((uint64_t)r->done_ms >> 32);

	cc->tag = tag ? tag : 1; /* 0 is "never opened" */
	cc->keep = 0;
	cc->cached = 1;
	if (n > j->nserved) {
		uint32_t cap = j->nchunks > n ? j->nchunks : n;
		uint32_t *p = realloc(j->served, cap * sizeof(*p));

		if (!p)
			return; /* not recorded: the next open starts
				 * afresh too */
		memset(p + j->nserved, 0, (cap - j->nserved) * sizeof(*p));
		j->served = p;
		j->nserved = cap;
	}
	cc->keep = j->served[n - 1] == (uint32_t)cc->tag;
	j->served[n - 1] = (uint32_t)cc->tag;
}

void engine_chunk_closed(struct engine *e, const char *name, uint32_t n,
			 const struct chunk_cache *cc)
{
	struct job *j;

	LOCK(e);
	j = job_find(e, name);
	if (j && n >= 1 && n <= j->nserved &&
	    j->served[n - 1] != (uint32_t)cc->tag)
		j->served[n - 1] = 0;
	UNLOCK(e);
}

void engine_output_closed(struct engine *e, const char *name,
			  const struct chunk_cache *cc)
{
	struct job *j;

	LOCK(e);
	j = job_find(e, name);
	if (j && j->out_served != cc->tag)
		j->out_served = 0;
	UNLOCK(e);
}

int engine_chunk_open(struct engine *e, const char *name, uint32_t n,
		      int *fd_out, struct chunk_cache *cc)
{
	struct chunk_rec r;
	struct job *j;
	int rc;

	LOCK(e);
	rc = done_rec(e, name, n, &j, &r);
	if (!rc) {
		rc = engine_obj_open(e, r.obj, fd_out);
		if (rc == -ENOENT)
			rc = -EIO; /* recorded done, object gone: verify
				    * finds it */
	}
	if (!rc && cc)
		chunk_keep_cache(j, n, &r, cc);
	UNLOCK(e);
	return rc;
}

int engine_chunk_remove(struct engine *e, const char *name, uint32_t n)
{
	struct job *j;
	int rc;

	LOCK(e);
	j = job_find(e, name);
	if (!j || n < 1 || n > j->nchunks ||
	    (j->cs[n - 1] & CS_MASK) != CS_DONE) {
		UNLOCK(e);
		return -ENOENT;
	}
	if (j->planning) {
		UNLOCK(e);
		return -EBUSY; /* its record is being replaced */
	}
	rc = requeue(e, j, &n, 1, 1);
	UNLOCK(e);
	engine_wake(e);
	return rc;
}

/* The id of the job called name, if it has a chunk n. */
static int log_job(struct engine *e, const char *name, uint32_t n,
		   uint64_t *id)
{
	struct job *j = job_find(e, name);

	if (!j || n < 1 || n > j->nchunks)
		return -ENOENT;
	*id = j->id;
	return 0;
}

int engine_log_open(struct engine *e, const char *name, uint32_t n,
		    int *fd_out)
{
	uint64_t id;
	int rc;

	LOCK(e);
	rc = log_job(e, name, n, &id);
	if (!rc) {
		rc = log_open(e->os.logs, id, n, O_RDONLY);
		if (rc >= 0) {
			*fd_out = rc;
			rc = 0;
		}
	}
	UNLOCK(e);
	return rc;
}

int engine_log_stat(struct engine *e, const char *name, uint32_t n,
		    uint64_t *size, int64_t *mtime_ms)
{
	struct stat st;
	uint64_t id;
	int rc;

	LOCK(e);
	rc = log_job(e, name, n, &id);
	if (!rc)
		rc = log_stat(e->os.logs, id, n, &st);
	if (!rc) {
		*size = (uint64_t)st.st_size;
		*mtime_ms = (int64_t)st.st_mtim.tv_sec * 1000 +
			st.st_mtim.tv_nsec / 1000000;
	}
	UNLOCK(e);
	return rc;
}

/* ------------------------------------------------------------------ */
/* output.EXT and audio chunk files: views served in place */

/*
 * A view is a file made of pieces that already exist: for a job's output,
 * the done chunks from chunk 1 in order (fixed when the view is built);
 * for an audio job, a WAV header made in memory, then each chunk's samples
 * read in place from its object, with join.gap_ms of silence between
 * chunks. A chunk whose encoding differs from chunk 1's is converted as it
 * is read. A view of one audio chunk serves chunks/NNNN.wav the same way.
 */
/* Objects a view keeps open: a few, for the reads of a readahead, which
 * can be in different pieces. */
#define VIEW_FDS 4

struct output_view {
	struct engine *e;
	uint32_t n;                  /* pieces */
	uint8_t (*obj)[SHA_LEN];
	uint64_t *end;               /* end offset of each piece's data */
	uint16_t *enc;               /* audio: each piece's own encoding */
	int audio;
	struct audio_fmt fmt;        /* audio: the file's format */
	uint64_t gap;                /* bytes of silence between pieces */
	uint8_t header[AUDIO_HEADER_MAX];
	size_t hlen;
	uint64_t size;
	pthread_mutex_t fd_lock;     /* guards fd, fd_idx, fd_users */
	int fd[VIEW_FDS];            /* objects kept open, or -1 */
	uint32_t fd_idx[VIEW_FDS];   /* the piece of each */
	unsigned fd_users[VIEW_FDS]; /* reads using it now (view_fd_take) */
};

struct prefix_ctx {
	struct output_view *v;
	struct job *j;
	uint32_t next, cap, max;
	uint64_t frames, bytes;
	char *problem;
	size_t problem_len;
};

static int prefix_add(void *arg, uint32_t n, const struct chunk_rec *r,
		      const char *err, size_t errlen)
{
	struct prefix_ctx *c = arg;
	struct output_view *v = c->v;

	(void)err;
	(void)errlen;
	if (n != c->next || v->n >= c->max || r->state != CHUNK_DONE ||
	    n > c->j->nchunks || (c->j->cs[n - 1] & CS_MASK) != CS_DONE)
		return 1; /* the run of done chunks ends here */
	if (v->audio) {
		if (!audio_sample_bytes(r->enc) || !r->rate || !r->channels)
			return 1;
		if (v->n == 0) {
			v->fmt.rate = r->rate;
			v->fmt.channels = r->channels;
			v->fmt.enc = r->enc;
		} else if (r->rate != v->fmt.rate ||
			   r->channels != v->fmt.channels) {
			snprintf(c->problem, c->problem_len, "chunk %" PRIu32
				 " is %" PRIu32 " Hz, %u channel%s but chunk %"
				 PRIu32 " is %" PRIu32 " Hz, %u channel%s: "
				 "output.wav is not produced", n, r->rate,
				 r->channels, r->channels == 1 ? "" : "s",
				 n - v->n, v->fmt.rate, v->fmt.channels,
				 v->fmt.channels == 1 ? "" : "s");
			return -EMEDIUMTYPE;
		}
	}
	if (v->n == c->cap) {
		uint32_t cap = c->cap ? c->cap * 2 : 64;
		void *p;

		if (!(p = realloc(v->obj, (size_t)cap * SHA_LEN)))
			return -ENOMEM;
		v->obj = p;
		if (!(p = realloc(v->end, (size_t)cap * sizeof(*v->end))))
			return -ENOMEM;
		v->end = p;
		if (!(p = realloc(v->enc, (size_t)cap * sizeof(*v->enc))))
			return -ENOMEM;
		v->enc = p;
		c->cap = cap;
	}
	memcpy(v->obj[v->n], r->obj, SHA_LEN);
	v->enc[v->n] = r->enc;
	if (v->audio) {
		c->frames += r->frames;
		c->bytes += r->frames * v->fmt.channels *
			audio_sample_bytes(v->fmt.enc);
	} else {
		c->bytes += r->obj_size;
	}
	v->end[v->n] = c->bytes; /* made absolute once the header is known */
	v->n++;
	c->next++;
	return 0;
}

/* Build a view of the done chunks from `first` on (at most max of them).
 * Called with e->lock. -EMEDIUMTYPE: audio chunks that cannot be joined,
 * the reason in j->audio_problem. */
static int view_build(struct engine *e, struct job *j, uint32_t first,
		      uint32_t max, struct output_view *v)
{
	struct prefix_ctx c = { v, j, first, 0, max, 0, 0, j->audio_problem,
				sizeof(j->audio_problem) };
	struct db_txn *t = NULL;
	uint64_t gap_frames = 0;
	int rc;

	v->audio = j->has_spec && SPEC_IS_AUDIO(j->spec.output);
	rc = db_begin(e->db, 0, &t);
	if (rc)
		return rc;
	if (first == 1 && max > 1)
		j->audio_problem[0] = '\0';
	rc = db_chunk_iter(t, j->id, first, prefix_add, &c);
	db_abort(t);
	if (rc < 0)
		return rc;
	if (v->audio) {
		if (v->n == 0)
			return -ENOENT; /* no format to make a header with */
		if (v->n > 1)
			gap_frames = (uint64_t)v->fmt.rate * j->spec.gap_ms /
				1000;
		v->gap = gap_frames * v->fmt.channels *
			audio_sample_bytes(v->fmt.enc);
		v->fmt.frames = c.frames + gap_frames * (v->n - 1);
		v->hlen = audio_wav_header(&v->fmt, v->fmt.frames, v->header);
	}
	for (uint32_t i = 0; i < v->n; i++)
		v->end[i] += v->hlen + v->gap * i;
	v->size = v->n ? v->end[v->n - 1] : v->hlen;
	return 0;
}

int view_new_locked(struct engine *e, struct job *j, struct output_view **out)
{
	struct output_view *v = calloc(1, sizeof(*v));
	int rc;

	if (!v)
		return -ENOMEM;
	v->e = e;
	for (int k = 0; k < VIEW_FDS; k++)
		v->fd[k] = -1;
	pthread_mutex_init(&v->fd_lock, NULL);
	rc = view_build(e, j, 1, UINT32_MAX, v);
	if (rc) {
		engine_output_close(v);
		return rc;
	}
	*out = v;
	return 0;
}

uint32_t view_pieces(const struct output_view *v)
{
	return v->n;
}

void view_hash(const struct output_view *v, struct sha_ctx *c)
{
	sha_update(c, &v->fmt, sizeof(v->fmt));
	sha_update(c, &v->gap, sizeof(v->gap));
	for (uint32_t i = 0; i < v->n; i++) {
		sha_update(c, v->obj[i], SHA_LEN);
		sha_update(c, &v->enc[i], sizeof(v->enc[i]));
	}
}

void view_format(const struct output_view *v, struct audio_fmt *fmt,
		 uint64_t *header_len)
{
	*fmt = v->fmt;
	*header_len = v->hlen;
}

/*
 * output.EXT changes while chunks join it (its header too), and each open
 * reads a snapshot of its own: it is served past the page cache then.
 * Once every chunk is done its bytes stay as they are until something
 * changes the job, which bumps j->version: an open then may use the page
 * cache, and keep what an earlier open at the same version cached. Called
 * with e->lock held, v the view just built for j.
 */
static void output_keep_cache(struct job *j, const struct output_view *v,
			      struct chunk_cache *cc)
{
	memset(cc, 0, sizeof(*cc));
	if (!j->nchunks || v->n != j->nchunks || j->planning)
		return;
	cc->cached = 1;
	cc->tag = j->version + 1;
	cc->keep = j->out_served == cc->tag;
	j->out_served = cc->tag;
}

static int view_open(struct engine *e, const char *name, uint32_t first,
		     uint32_t max, struct output_view **out,
		     struct chunk_cache *cc)
{
	struct output_view *v;
	struct chunk_rec r;
	struct job *j;
	int rc;

	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->e = e;
	for (int k = 0; k < VIEW_FDS; k++)
		v->fd[k] = -1;
	pthread_mutex_init(&v->fd_lock, NULL);
	LOCK(e);
	j = job_find(e, name);
	if (!j)
		rc = -ENOENT;
	else if (max == 1 && (first < 1 || first > j->nchunks ||
			      (j->cs[first - 1] & CS_MASK) != CS_DONE))
		rc = -ENOENT;
	else
		rc = view_build(e, j, first, max, v);
	if (!rc && max == 1 && v->n != 1)
		rc = -ENOENT;
	if (!rc && cc && max == 1) {
		rc = done_rec(e, name, first, &j, &r);
		if (!rc)
			chunk_keep_cache(j, first, &r, cc);
	} else if (!rc && cc) {
		output_keep_cache(j, v, cc);
	}
	UNLOCK(e);
	if (rc) {
		engine_output_close(v);
		return rc == -EMEDIUMTYPE ? -ENOENT : rc;
	}
	*out = v;
	return 0;
}

int engine_output_open(struct engine *e, const char *name,
		       struct output_view **out)
{
	return view_open(e, name, 1, UINT32_MAX, out, NULL);
}

int engine_output_open_cached(struct engine *e, const char *name,
			      struct output_view **out,
			      struct chunk_cache *cc)
{
	return view_open(e, name, 1, UINT32_MAX, out, cc);
}

int engine_chunk_view(struct engine *e, const char *name, uint32_t n,
		      struct output_view **out, struct chunk_cache *cc)
{
	return view_open(e, name, n, 1, out, cc);
}

uint64_t engine_output_size(struct output_view *v)
{
	return v->size;
}

int engine_output_stat(struct engine *e, const char *name, uint64_t *size)
{
	struct output_view *v;
	int rc = engine_output_open(e, name, &v);

	if (rc)
		return rc;
	*size = engine_output_size(v);
	engine_output_close(v);
	return 0;
}

/*
 * Piece i's object, open for one read. The reads of one open file can come
 * from several FUSE threads at once (the kernel sends a reader's readahead
 * that way); they share a kept descriptor (pread has no shared offset),
 * and a descriptor is closed only when no read uses it: closed under one
 * read by another, its number could go to the next object opened, whose
 * bytes the first read would then serve. A piece kept open stays
 * readable even once its object is released (a reader that opened the
 * file before a redo reads on), so a piece is opened again only when no
 * slot holds it. Returns the descriptor and sets *slot (-1: not kept,
 * view_fd_put closes it), or -EIO.
 */
static int view_fd_take(struct output_view *v, uint32_t i, int *slot)
{
	int fd, k, free_k = -1;

	pthread_mutex_lock(&v->fd_lock);
	for (k = 0; k < VIEW_FDS; k++) {
		if (v->fd[k] >= 0 && v->fd_idx[k] == i) {
			v->fd_users[k]++;
			*slot = k;
			fd = v->fd[k];
			pthread_mutex_unlock(&v->fd_lock);
			return fd;
		}
		/* an empty slot, else one no read uses */
		if (!v->fd_users[k] &&
		    (free_k < 0 || (v->fd[k] < 0 && v->fd[free_k] >= 0)))
			free_k = k;
	}
	pthread_mutex_unlock(&v->fd_lock);
	if (engine_obj_open_unlocked(v->e, v->obj[i], &fd))
		return -EIO;
	*slot = -1;
	pthread_mutex_lock(&v->fd_lock);
	if (free_k >= 0 && !v->fd_users[free_k]) {
		int old = v->fd[free_k];

		v->fd[free_k] = fd;
		v->fd_idx[free_k] = i;
		v->fd_users[free_k] = 1;
		*slot = free_k;
		if (old >= 0)
			close(old); /* no read uses it */
	}
	pthread_mutex_unlock(&v->fd_lock);
	return fd;
}

/* The read that took fd from slot is done with it. */
static void view_fd_put(struct output_view *v, int slot, int fd)
{
	if (slot < 0) {
		close(fd);
		return;
	}
	pthread_mutex_lock(&v->fd_lock);
	v->fd_users[slot]--;
	pthread_mutex_unlock(&v->fd_lock);
}

ssize_t engine_output_read(struct output_view *v, char *buf, size_t size,
			   uint64_t off)
{
	size_t done = 0;

	while (done < size && off + done < v->size) {
		uint64_t pos = off + done, start, in;
		uint32_t lo = 0, hi = v->n, i;
		size_t want = size - done;
		ssize_t n;
		int fd, slot;

		if (pos < v->hlen) {
			n = (ssize_t)(v->hlen - pos < want ? v->hlen - pos :
				      want);
			memcpy(buf + done, v->header + pos, (size_t)n);
			done += (size_t)n;
			continue;
		}
		/* the first piece whose data ends beyond pos */
		while (lo < hi) {
			uint32_t mid = lo + (hi - lo) / 2;

			if (v->end[mid] <= pos)
				lo = mid + 1;
			else
				hi = mid;
		}
		i = lo;
		start = i ? v->end[i - 1] + v->gap : v->hlen;
		if (pos < start) {
			/* silence between two pieces */
			n = (ssize_t)(start - pos < want ? start - pos : want);
			memset(buf + done, 0, (size_t)n);
			done += (size_t)n;
			continue;
		}
		in = pos - start;
		if (want > v->end[i] - pos)
			want = (size_t)(v->end[i] - pos);
		fd = view_fd_take(v, i, &slot);
		if (fd < 0)
			return done ? (ssize_t)done : fd;
		if (v->audio && v->enc[i] != v->fmt.enc) {
			struct audio_fmt src = v->fmt;

			src.enc = v->enc[i];
			n = audio_read_converted(fd, &src, v->fmt.enc, in,
						 buf + done, want);
		} else {
			n = pread(fd, buf + done, want, (off_t)in);
			if (n < 0)
				n = -errno;
		}
		view_fd_put(v, slot, fd);
		if (n < 0)
			return done ? (ssize_t)done : n;
		if (n == 0)
			break; /* object shorter than recorded */
		done += (size_t)n;
	}
	return (ssize_t)done;
}

void engine_output_close(struct output_view *v)
{
	if (!v)
		return;
	for (int k = 0; k < VIEW_FDS; k++)
		if (v->fd[k] >= 0)
			close(v->fd[k]);
	pthread_mutex_destroy(&v->fd_lock);
	free(v->obj);
	free(v->end);
	free(v->enc);
	free(v);
}

/* output.flac / output.ogg: the encoded object while it is valid. */
int engine_encoded_stat(struct engine *e, const char *name, uint64_t *size)
{
	struct job *j;
	int rc = -ENOENT;

	LOCK(e);
	j = job_find(e, name);
	if (j && job_enc_valid(e, j)) {
		*size = j->rec.enc_size;
		rc = 0;
	}
	UNLOCK(e);
	return rc;
}

int engine_encoded_open(struct engine *e, const char *name, int *fd_out)
{
	struct job *j;
	int rc = -ENOENT;

	LOCK(e);
	j = job_find(e, name);
	if (j && job_enc_valid(e, j))
		rc = engine_obj_open(e, j->rec.enc_obj, fd_out);
	UNLOCK(e);
	return rc;
}
