/*
 * render.c - status, status.json and manifest.json.
 *
 * status and status.json come from the in-memory counters plus, for the
 * few failed chunks shown, their records: cost does not grow with the
 * number of chunks. manifest.json walks every chunk record and is cached
 * by the caller until the job's version changes.
 *
 * The keys of status.json and manifest.json are documented in
 * docs/status.md; they are stable: new keys may appear, none changes
 * meaning or disappears.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "engine_int.h"

#define SHOW_MAX 50   /* failed / running chunks listed in status */

struct sbuf {
	char *p;
	size_t len, cap;
	int oom;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->oom)
		return;
	for (;;) {
		size_t room = b->cap - b->len;

		va_start(ap, fmt);
		n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->oom = 1;
			return;
		}
		if ((size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
		{
			size_t cap = (b->cap + (size_t)n + 1) * 2;
			char *p = realloc(b->p, cap);

			if (!p) {
				b->oom = 1;
				return;
			}
			b->p = p;
			b->cap = cap;
		}
	}
}

static void fmt_duration(double s, char *buf, size_t len)
{
	long t = (long)(s + 0.5);

	if (s < 0 || isnan(s))
		snprintf(buf, len, "-");
	else if (t < 60)
		snprintf(buf, len, "%lds", t);
	else if (t < 3600)
		snprintf(buf, len, "%ldm%02lds", t / 60, t % 60);
	else
		snprintf(buf, len, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
}

struct figures {
	uint32_t pending;
	double elapsed, rate, eta;  /* rate: chunks per minute; eta -1 */
	double percent;
};

static void figures(const struct job *j, struct figures *f)
{
	double now = mono_now();

	f->pending = j->nchunks - j->ndone - j->nfailed - j->nrunning -
		j->ncommit - j->nwait;
	f->percent = j->nchunks ? 100.0 * j->ndone / j->nchunks : 0;
	f->elapsed = j->rec.run_started_ms ?
		(j->run_end_mono ? j->run_end_mono : now) - j->run_mono : 0;
	f->rate = f->elapsed > 0 && j->run_done ?
		j->run_done / f->elapsed * 60 : 0;
	f->eta = -1;
	if (f->rate > 0 && !strcmp(job_state_name(j), "running"))
		f->eta = (j->nchunks - j->ndone - j->nfailed) / f->rate * 60;
}

struct failed_ctx {
	struct sbuf *b;
	cJSON *arr;
	unsigned shown;
};

static int show_failed(void *arg, uint32_t n, const struct chunk_rec *r,
		       const char *err, size_t errlen)
{
	struct failed_ctx *c = arg;

	if (r->state != CHUNK_FAILED)
		return 0;
	if (c->shown++ >= SHOW_MAX)
		return 1;
	if (c->b)
		sb_printf(c->b, "  chunk %" PRIu32 ": %.*s (after %" PRIu32
			  " attempt%s)\n", n, (int)errlen, err, r->attempts,
			  r->attempts == 1 ? "" : "s");
	if (c->arr) {
		cJSON *o = cJSON_CreateObject();
		char e[DB_ERR_MAX + 1];

		snprintf(e, sizeof(e), "%.*s", (int)errlen, err);
		cJSON_AddNumberToObject(o, "chunk", n);
		cJSON_AddNumberToObject(o, "attempts", r->attempts);
		cJSON_AddStringToObject(o, "error", e);
		cJSON_AddItemToArray(c->arr, o);
	}
	return 0;
}

/* The failed chunks are found in memory (one byte per chunk) and only
 * their records read, so this costs the same for 100 or 100,000 chunks. */
static void each_failed(struct engine *e, struct job *j, struct failed_ctx *c)
{
	struct db_txn *t = NULL;

	if (!j->nfailed || db_begin(e->db, 0, &t))
		return;
	for (uint32_t n = 1; n <= j->nchunks && c->shown < SHOW_MAX; n++) {
		struct chunk_rec r;
		char err[DB_ERR_MAX + 1];

		if ((j->cs[n - 1] & CS_MASK) != CS_FAILED ||
		    db_chunk_get(t, j->id, n, &r, err))
			continue;
		show_failed(c, n, &r, err, strlen(err));
	}
	db_abort(t);
}

/* ---- audio jobs ---- */

#define MISMATCH_MAX 5

struct audio_sum {
	double seconds;
	uint32_t chunks;
	struct audio_fmt ref;        /* of the lowest done chunk */
	uint32_t ref_n;
	uint32_t nmis;
	struct { uint32_t n, rate, channels; } mis[MISMATCH_MAX];
	struct job *j;
};

static int audio_add(void *arg, uint32_t n, const struct chunk_rec *r,
		     const char *err, size_t errlen)
{
	struct audio_sum *a = arg;

	(void)err;
	(void)errlen;
	if (n > a->j->nchunks || (a->j->cs[n - 1] & CS_MASK) != CS_DONE ||
	    r->state != CHUNK_DONE || !r->rate)
		return 0;
	a->seconds += (double)r->frames / r->rate;
	a->chunks++;
	if (!a->ref_n) {
		a->ref.rate = r->rate;
		a->ref.channels = r->channels;
		a->ref.enc = r->enc;
		a->ref_n = n;
	} else if (r->rate != a->ref.rate || r->channels != a->ref.channels) {
		if (a->nmis < MISMATCH_MAX) {
			a->mis[a->nmis].n = n;
			a->mis[a->nmis].rate = r->rate;
			a->mis[a->nmis].channels = r->channels;
		}
		a->nmis++;
	}
	return 0;
}

/* Walks the done chunks' records: audio jobs only, and only when status
 * is read. */
static int audio_summary(struct engine *e, struct job *j, struct audio_sum *a)
{
	struct db_txn *t = NULL;

	memset(a, 0, sizeof(*a));
	a->j = j;
	if (!j->has_spec || !SPEC_IS_AUDIO(j->spec.output))
		return 0;
	if (db_begin(e->db, 0, &t))
		return 0;
	db_chunk_iter(t, j->id, 1, audio_add, a);
	db_abort(t);
	return 1;
}

static const char *plural(unsigned n)
{
	return n == 1 ? "" : "s";
}

/* "output.flac ready (N bytes)", "encoding output.flac: 45%", ... */
static const char *encode_state(struct engine *e, struct job *j,
				double *progress)
{
	*progress = 0;
	if (!j->has_spec || !spec_encoded_ext(j->spec.output))
		return NULL;
	if (j->encoding) {
		*progress = j->enc_total ?
			(double)j->enc_done / j->enc_total : 0;
		return "encoding";
	}
	if (job_enc_valid(e, j))
		return "ready";
	if (j->nchunks && j->ndone == j->nchunks)
		return j->last_error[0] &&
			strstr(j->last_error, "encode") ? "failed" : "pending";
	return "waiting";
}

int render_status(struct engine *e, struct job *j, char **buf, size_t *len)
{
	struct sbuf b = { 0 };
	struct figures f;
	char t1[32], t2[32];
	int width = 30, fill;

	figures(j, &f);
	fill = j->nchunks ? (int)((uint64_t)width * j->ndone / j->nchunks) : 0;
	sb_printf(&b, "job      %s\n", j->name);
	sb_printf(&b, "state    %s\n", job_state_name(j));
	sb_printf(&b, "progress [");
	for (int i = 0; i < width; i++)
		sb_printf(&b, "%c", i < fill ? '#' : '-');
	sb_printf(&b, "] %" PRIu32 "/%" PRIu32 " %.1f%%\n", j->ndone,
		  j->nchunks, f.percent);
	sb_printf(&b, "chunks   %" PRIu32 " done, %" PRIu32 " running, %"
		  PRIu32 " pending, %" PRIu32 " failed, %" PRIu32
		  " reused\n", j->ndone, j->nrunning + j->ncommit,
		  f.pending + j->nwait, j->nfailed, j->nreused);
	fmt_duration(f.elapsed, t1, sizeof(t1));
	fmt_duration(f.eta, t2, sizeof(t2));
	if (j->rec.run_started_ms)
		sb_printf(&b, "elapsed  %s  rate %.1f chunks/min  eta %s\n",
			  t1, f.rate, t2);
	if (!j->has_spec)
		sb_printf(&b, "next     write the job definition to spec, "
			  "e.g. {\"command\": \"tr a-z A-Z\"}\n");
	else if (!j->rec.has_input)
		sb_printf(&b, "next     write what to process to input\n");
	else if (!strcmp(job_state_name(j), "ready"))
		sb_printf(&b, "next     echo start > control\n");
	if (j->rec.has_input && j->has_spec)
		sb_printf(&b, "plan     %" PRIu32 " chunks: %" PRIu32
			  " reused, %" PRIu32 " to run (%" PRIu32
			  " new text, %" PRIu32 " command or params "
			  "changed)\n", j->rec.nchunks, j->rec.plan_reused,
			  j->rec.nchunks - j->rec.plan_reused,
			  j->rec.plan_new, j->rec.plan_changed);
	{
		struct audio_sum a;
		double p;
		const char *es;

		if (audio_summary(e, j, &a) && a.chunks) {
			sb_printf(&b, "audio    %.3f s in %" PRIu32 " chunk%s, %"
				  PRIu32 " Hz, %u channel%s, %s\n", a.seconds,
				  a.chunks, plural(a.chunks), a.ref.rate,
				  a.ref.channels, plural(a.ref.channels),
				  audio_enc_name(a.ref.enc));
			for (uint32_t i = 0; i < a.nmis && i < MISMATCH_MAX;
			     i++)
				sb_printf(&b, "mismatch chunk %" PRIu32 " is %"
					  PRIu32 " Hz, %" PRIu32 " channel%s; "
					  "chunk %" PRIu32 " is %" PRIu32
					  " Hz, %u channel%s: output.wav is "
					  "not produced\n", a.mis[i].n,
					  a.mis[i].rate, a.mis[i].channels,
					  plural(a.mis[i].channels), a.ref_n,
					  a.ref.rate, a.ref.channels,
					  plural(a.ref.channels));
		}
		es = encode_state(e, j, &p);
		if (es && !strcmp(es, "encoding"))
			sb_printf(&b, "encode   output.%s: %.0f%%\n",
				  spec_encoded_ext(j->spec.output), p * 100);
		else if (es && !strcmp(es, "ready"))
			sb_printf(&b, "encode   output.%s ready (%" PRIu64
				  " bytes)\n", spec_encoded_ext(j->spec.output),
				  j->rec.enc_size);
		else if (es && !strcmp(es, "pending"))
			sb_printf(&b, "encode   output.%s: starting\n",
				  spec_encoded_ext(j->spec.output));
	}
	if (j->nrunning + j->ncommit) {
		unsigned shown = 0;

		sb_printf(&b, "running\n");
		for (struct attempt *a = e->attempts; a; a = a->next) {
			if (a->job != j || shown++ >= SHOW_MAX)
				continue;
			fmt_duration(mono_now() - a->started_mono, t1,
				     sizeof(t1));
			sb_printf(&b, "  chunk %" PRIu32 ": attempt %" PRIu32
				  ", %s%s\n", a->n, a->number, t1,
				  a->ended ? ", committing" : "");
		}
	}
	if (j->nwaits) {
		struct db_txn *t = NULL;

		sb_printf(&b, "waiting\n");
		db_begin(e->db, 0, &t);
		for (size_t i = 0; i < j->nwaits && i < SHOW_MAX; i++) {
			struct chunk_rec r;
			char err[DB_ERR_MAX + 1] = "";

			if (!t || db_chunk_get(t, j->id, j->waits[i].n, &r,
					       err))
				r.attempts = 0;
			fmt_duration(j->waits[i].when - mono_now(), t1,
				     sizeof(t1));
			sb_printf(&b, "  chunk %" PRIu32 ": attempt %" PRIu32
				  " failed (%s), retry in %s\n",
				  j->waits[i].n, r.attempts, err, t1);
		}
		db_abort(t);
	}
	if (j->nfailed) {
		struct failed_ctx c = { &b, NULL, 0 };

		sb_printf(&b, "failed\n");
		each_failed(e, j, &c);
		if (j->nfailed > SHOW_MAX)
			sb_printf(&b, "  ... and %" PRIu32 " more\n",
				  j->nfailed - SHOW_MAX);
		sb_printf(&b, "  (echo retry-failed > control runs them "
			  "again)\n");
	}
	if (j->last_reject[0]) {
		iso_time(j->last_reject_ms, t1, sizeof(t1));
		sb_printf(&b, "rejected %s: %s\n", t1, j->last_reject);
	}
	if (j->last_error[0])
		sb_printf(&b, "error    %s\n", j->last_error);
	if (b.oom) {
		free(b.p);
		return -ENOMEM;
	}
	*buf = b.p;
	*len = b.len;
	return 0;
}

static const char *mode_name(uint32_t m)
{
	static const char *names[] = { "idle", "run", "pause", "stop",
				       "selected" };

	return m < sizeof(names) / sizeof(names[0]) ? names[m] : "?";
}

static int print_json(cJSON *o, char **buf, size_t *len)
{
	char *s = json_failed() ? NULL : cJSON_Print(o);

	cJSON_Delete(o);
	if (!s || json_failed()) {
		free(s);
		return -ENOMEM;
	}
	*len = strlen(s) + 1;
	s[*len - 1] = '\n'; /* replaces the NUL */
	*buf = s;
	return 0;
}

int render_status_json(struct engine *e, struct job *j, char **buf,
		       size_t *len)
{
	cJSON *o, *c, *arr;
	struct figures f;
	char t[40];

	json_begin();
	o = cJSON_CreateObject();
	figures(j, &f);
	cJSON_AddNumberToObject(o, "version", 1);
	cJSON_AddStringToObject(o, "job", j->name);
	cJSON_AddStringToObject(o, "state", job_state_name(j));
	cJSON_AddStringToObject(o, "mode", mode_name(j->rec.mode));
	c = cJSON_AddObjectToObject(o, "chunks");
	cJSON_AddNumberToObject(c, "total", j->nchunks);
	cJSON_AddNumberToObject(c, "done", j->ndone);
	cJSON_AddNumberToObject(c, "running", j->nrunning + j->ncommit);
	cJSON_AddNumberToObject(c, "pending", f.pending + j->nwait);
	cJSON_AddNumberToObject(c, "waiting", j->nwait);
	cJSON_AddNumberToObject(c, "failed", j->nfailed);
	cJSON_AddNumberToObject(c, "reused", j->nreused);
	cJSON_AddNumberToObject(o, "percent", round(f.percent * 10) / 10);
	if (j->rec.run_started_ms) {
		iso_time(j->rec.run_started_ms, t, sizeof(t));
		cJSON_AddStringToObject(o, "started", t);
	} else {
		cJSON_AddNullToObject(o, "started");
	}
	cJSON_AddNumberToObject(o, "elapsed", round(f.elapsed * 1000) / 1000);
	cJSON_AddNumberToObject(o, "rate_per_min", round(f.rate * 100) / 100);
	if (f.eta >= 0)
		cJSON_AddNumberToObject(o, "eta", round(f.eta));
	else
		cJSON_AddNullToObject(o, "eta");
	c = cJSON_AddObjectToObject(o, "plan");
	cJSON_AddNumberToObject(c, "chunks", j->rec.nchunks);
	cJSON_AddNumberToObject(c, "reused", j->rec.plan_reused);
	cJSON_AddNumberToObject(c, "new_text", j->rec.plan_new);
	cJSON_AddNumberToObject(c, "changed", j->rec.plan_changed);
	arr = cJSON_AddArrayToObject(o, "running");
	for (struct attempt *a = e->attempts; a; a = a->next) {
		cJSON *r;

		if (a->job != j)
			continue;
		r = cJSON_CreateObject();
		cJSON_AddNumberToObject(r, "chunk", a->n);
		cJSON_AddNumberToObject(r, "attempt", a->number);
		cJSON_AddNumberToObject(r, "age", round((mono_now() -
						a->started_mono) * 1000) /
					1000);
		cJSON_AddBoolToObject(r, "committing", a->ended);
		cJSON_AddItemToArray(arr, r);
	}
	arr = cJSON_AddArrayToObject(o, "waiting");
	for (size_t i = 0; i < j->nwaits; i++) {
		cJSON *r = cJSON_CreateObject();

		struct chunk_rec rec;
		char err[DB_ERR_MAX + 1] = "";
		struct db_txn *wt;

		cJSON_AddNumberToObject(r, "chunk", j->waits[i].n);
		cJSON_AddNumberToObject(r, "retry_in",
					round((j->waits[i].when - mono_now()) *
					      1000) / 1000);
		if (db_begin(e->db, 0, &wt) == 0) {
			if (db_chunk_get(wt, j->id, j->waits[i].n, &rec,
					 err) == 0) {
				cJSON_AddNumberToObject(r, "attempts",
							rec.attempts);
				cJSON_AddStringToObject(r, "error", err);
			}
			db_abort(wt);
		}
		cJSON_AddItemToArray(arr, r);
	}
	arr = cJSON_AddArrayToObject(o, "failed");
	{
		struct failed_ctx fc = { NULL, arr, 0 };

		each_failed(e, j, &fc);
	}
	if (j->last_reject[0]) {
		c = cJSON_AddObjectToObject(o, "last_rejected");
		iso_time(j->last_reject_ms, t, sizeof(t));
		cJSON_AddStringToObject(c, "time", t);
		cJSON_AddStringToObject(c, "reason", j->last_reject);
	} else {
		cJSON_AddNullToObject(o, "last_rejected");
	}
	if (j->last_error[0])
		cJSON_AddStringToObject(o, "last_error", j->last_error);
	else
		cJSON_AddNullToObject(o, "last_error");
	{
		struct audio_sum a;

		if (audio_summary(e, j, &a)) {
			cJSON *au = cJSON_AddObjectToObject(o, "audio"), *m;
			const char *es;
			double p;

			cJSON_AddNumberToObject(au, "seconds",
						round(a.seconds * 1000) / 1000);
			cJSON_AddNumberToObject(au, "chunks", a.chunks);
			if (a.chunks) {
				cJSON_AddNumberToObject(au, "rate", a.ref.rate);
				cJSON_AddNumberToObject(au, "channels",
							a.ref.channels);
				cJSON_AddStringToObject(au, "encoding",
						audio_enc_name(a.ref.enc));
			}
			m = cJSON_AddArrayToObject(au, "mismatched");
			for (uint32_t i = 0; i < a.nmis && i < MISMATCH_MAX;
			     i++) {
				cJSON *x = cJSON_CreateObject();

				cJSON_AddNumberToObject(x, "chunk", a.mis[i].n);
				cJSON_AddNumberToObject(x, "rate",
							a.mis[i].rate);
				cJSON_AddNumberToObject(x, "channels",
							a.mis[i].channels);
				cJSON_AddItemToArray(m, x);
			}
			es = encode_state(e, j, &p);
			if (es) {
				cJSON *en = cJSON_AddObjectToObject(au,
								    "encoded");

				cJSON_AddStringToObject(en, "file",
					spec_encoded_ext(j->spec.output));
				cJSON_AddStringToObject(en, "state", es);
				cJSON_AddNumberToObject(en, "progress",
							round(p * 1000) / 1000);
				if (!strcmp(es, "ready"))
					cJSON_AddNumberToObject(en, "size",
						(double)j->rec.enc_size);
			}
		} else {
			cJSON_AddNullToObject(o, "audio");
		}
	}
	return print_json(o, buf, len);
}

static const char *chunk_state_name(const struct job *j, uint32_t n,
				    const struct chunk_rec *r)
{
	switch (j->cs[n - 1] & CS_MASK) {
	case CS_DONE:
		return "done";
	case CS_FAILED:
		return "failed";
	case CS_RUNNING:
		return "running";
	case CS_COMMIT:
		return "running";
	case CS_WAIT:
		return "waiting";
	default:
		return r->fails ? "retrying" : "pending";
	}
}

struct manifest_ctx {
	struct sbuf *b;
	struct job *j;
	unsigned width;
	int first;
	double audio_seconds;
};

static int manifest_chunk(void *arg, uint32_t n, const struct chunk_rec *r,
			  const char *err, size_t errlen)
{
	struct manifest_ctx *c = arg;
	char hex[SHA_HEX_LEN + 1], ohex[SHA_HEX_LEN + 1];
	int done;

	if (n > c->j->nchunks)
		return 1;
	done = (c->j->cs[n - 1] & CS_MASK) == CS_DONE;
	sha_hex(r->text_sha, hex);
	sb_printf(c->b, "%s\n    {\"chunk\": %" PRIu32 ", \"start\": %" PRIu64
		  ", \"end\": %" PRIu64 ", \"sha256\": \"%s\", \"state\": "
		  "\"%s\", \"attempts\": %" PRIu32, c->first ? "" : ",", n,
		  r->start, r->end, hex, chunk_state_name(c->j, n, r),
		  r->attempts);
	c->first = 0;
	if (done) {
		sha_hex(r->obj, ohex);
		sb_printf(c->b, ", \"output\": \"chunks/%0*" PRIu32 ".%s\", "
			  "\"output_sha256\": \"%s\", \"size\": %" PRIu64
			  ", \"duration\": %.3f, \"reused\": %s", c->width, n,
			  c->j->spec.ext, ohex, r->obj_size,
			  r->duration_ms / 1000.0,
			  (r->flags & CHUNK_F_REUSED) ? "true" : "false");
		if (r->rate) {
			sb_printf(c->b, ", \"audio_seconds\": %.3f",
				  (double)r->frames / r->rate);
			c->audio_seconds += (double)r->frames / r->rate;
		}
	} else {
		sb_printf(c->b, ", \"output\": null");
	}
	if (errlen && !done) {
		/* the error text is ours or the system's; escape it */
		cJSON *s = cJSON_CreateString("");
		char e[DB_ERR_MAX + 1], *p;

		snprintf(e, sizeof(e), "%.*s", (int)errlen, err);
		cJSON_SetValuestring(s, e);
		p = cJSON_PrintUnformatted(s);
		if (p)
			sb_printf(c->b, ", \"error\": %s", p);
		free(p);
		cJSON_Delete(s);
	}
	sb_printf(c->b, "}");
	return 0;
}

int render_manifest(struct engine *e, struct job *j, char **buf, size_t *len)
{
	struct sbuf b = { 0 };
	struct manifest_ctx c = { &b, j, job_width(j), 1, 0 };
	struct db_txn *t = NULL;
	char created[40], updated[40], hex[SHA_HEX_LEN + 1];
	cJSON *head;
	char *hs;
	int rc;

	json_begin();
	head = cJSON_CreateObject();

	/* the head through cJSON (it holds user text), the chunk list by
	 * hand: it can hold a million entries */
	iso_time(j->rec.created_ms, created, sizeof(created));
	iso_time(j->rec.updated_ms, updated, sizeof(updated));
	cJSON_AddNumberToObject(head, "version", 1);
	cJSON_AddStringToObject(head, "job", j->name);
	cJSON_AddStringToObject(head, "created", created);
	cJSON_AddStringToObject(head, "updated", updated);
	if (j->rec.has_input) {
		cJSON *in = cJSON_AddObjectToObject(head, "input");

		sha_hex(j->rec.input_sha, hex);
		cJSON_AddNumberToObject(in, "length", (double)j->rec.input_len);
		cJSON_AddStringToObject(in, "sha256", hex);
	} else {
		cJSON_AddNullToObject(head, "input");
	}
	if (j->has_spec) {
		cJSON *cmd = cJSON_Parse(j->spec.shell ? "null" : "[]");
		cJSON *params = cJSON_Parse(j->spec.params);

		if (j->spec.shell) {
			cJSON_Delete(cmd);
			cmd = cJSON_CreateString(j->spec.shell);
		} else {
			for (char **a = j->spec.argv; a && *a; a++)
				cJSON_AddItemToArray(cmd,
						     cJSON_CreateString(*a));
		}
		cJSON_AddItemToObject(head, "command", cmd);
		cJSON_AddItemToObject(head, "params",
				      params ? params : cJSON_CreateNull());
		cJSON_AddStringToObject(head, "chunking",
					chunker_by_name(j->spec.by));
		cJSON_AddNumberToObject(head, "max", (double)j->spec.max);
	} else {
		cJSON_AddNullToObject(head, "command");
		cJSON_AddNullToObject(head, "params");
	}
	cJSON_AddNumberToObject(head, "chunk_count", j->nchunks);
	hs = json_failed() ? NULL : cJSON_Print(head);
	cJSON_Delete(head);
	if (!hs || json_failed()) {
		free(hs);
		return -ENOMEM;
	}
	/* open the object again to append "chunks" */
	{
		/* drop the closing brace and the white space before it */
		size_t hl = strlen(hs) - 1;

		while (hl > 0 && (hs[hl - 1] == '\n' || hs[hl - 1] == ' ' ||
				  hs[hl - 1] == '\t'))
			hl--;
		hs[hl] = '\0';
	}
	sb_printf(&b, "%s,\n  \"chunks\": [", hs);
	free(hs);
	rc = db_begin(e->db, 0, &t);
	if (rc) {
		free(b.p);
		return rc;
	}
	rc = db_chunk_iter(t, j->id, 1, manifest_chunk, &c);
	db_abort(t);
	if (rc < 0) {
		free(b.p);
		return rc;
	}
	sb_printf(&b, "%s]", c.first ? "" : "\n  ");
	if (j->has_spec && SPEC_IS_AUDIO(j->spec.output))
		sb_printf(&b, ",\n  \"audio_seconds\": %.3f", c.audio_seconds);
	sb_printf(&b, "\n}\n");
	if (b.oom) {
		free(b.p);
		return -ENOMEM;
	}
	*buf = b.p;
	*len = b.len;
	return 0;
}
