/*
 * plan.c - a job's plan: its spec, its input, and the chunks cut from them.
 *
 * Whenever the spec or the input changes, the job is cut again and every
 * new chunk gets an identity:
 *
 *     identity = SHA-256(text SHA-256 || command id || params)
 *
 * (each part length-prefixed). A new chunk whose identity matches a done
 * chunk of the old plan takes over its output without running: editing one
 * paragraph of a chapter re-renders that paragraph only. The whole
 * replacement is one LMDB transaction, so a crash leaves either the old
 * plan or the new one.
 *
 * Input bytes live in STORE/inputs/ID-SHA (named by content, so that the
 * file a committed plan refers to is never overwritten): a new input is
 * written to a temp file, fsynced, renamed to its name and the directory
 * fsynced before the transaction that refers to it commits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chunker.h"
#include "engine_int.h"

#define DROP_STEP ((uint64_t)4 << 20)   /* a multiple of any page size */

int job_input_name(const struct job *j, char *buf, size_t len)
{
	char hex[SHA_HEX_LEN + 1];

	sha_hex(j->rec.input_sha, hex);
	return snprintf(buf, len, "%" PRIu64 "-%s", j->id, hex);
}

/* Map the job's committed input read-only; an empty input maps to
 * NULL with length 0. */
int job_map_input_ro(struct engine *e, struct job *j, void **out,
		     size_t *len)
{
	char name[128];
	struct stat st;
	int fd, rc = 0;

	*out = NULL;
	*len = 0;
	job_input_name(j, name, sizeof(name));
	fd = openat(e->os.inputs, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
	} else if (st.st_size > 0) {
		void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED,
			       fd, 0);

		if (p == MAP_FAILED) {
			rc = -errno;
		} else {
			*out = p;
			*len = (size_t)st.st_size;
		}
	}
	close(fd);
	return rc;
}

/* The identity of a chunk under a spec. Whether outputs are audio is part
 * of it too: an audio chunk's object holds normalized samples, not the
 * worker's bytes, so the two kinds are never exchanged. */
static void identity(const uint8_t text_sha[SHA_LEN], const struct spec *sp,
		     uint8_t out[SHA_LEN])
{
	struct sha_ctx *c = sha_new();
	const char *kind = SPEC_IS_AUDIO(sp->output) ? "audio" : "bytes";
	uint64_t l;

	if (!c) {
		memset(out, 0, SHA_LEN); /* matches nothing real */
		return;
	}
	sha_update(c, "jobfs-chunk-1", 13);
	sha_update(c, text_sha, SHA_LEN);
	l = strlen(sp->command_id);
	sha_update(c, &l, sizeof(l));
	sha_update(c, sp->command_id, l);
	l = strlen(sp->params);
	sha_update(c, &l, sizeof(l));
	sha_update(c, sp->params, l);
	sha_update(c, kind, strlen(kind) + 1);
	sha_final(c, out);
}

/* What the old plan had done, for reuse: an open-addressing table keyed by
 * identity, and one keyed by text alone (to tell "command changed" from
 * "new text"). */
struct old_done {
	uint8_t ident[SHA_LEN];
	uint8_t text[SHA_LEN];
	uint8_t obj[SHA_LEN];
	uint64_t size;
	uint32_t duration_ms;
	uint32_t rate;
	uint16_t channels, enc;
	uint64_t frames;
	int used;
};

struct old_map {
	struct old_done *slots;
	size_t cap, n;
	uint32_t *by_text;   /* indexes+1 into slots, keyed by text */
};

static size_t slot_of(const uint8_t *key, size_t cap)
{
	uint64_t h;

	memcpy(&h, key, sizeof(h));
	return (size_t)(h & (cap - 1));
}

static int old_map_init(struct old_map *m, size_t n)
{
	size_t cap = 16;

	while (cap < n * 2)
		cap *= 2;
	m->slots = calloc(cap, sizeof(*m->slots));
	m->by_text = calloc(cap, sizeof(*m->by_text));
	m->cap = cap;
	m->n = 0;
	return m->slots && m->by_text ? 0 : -ENOMEM;
}

static void old_map_free(struct old_map *m)
{
	free(m->slots);
	free(m->by_text);
}

static void old_map_add(struct old_map *m, const struct old_done *d)
{
	size_t i = slot_of(d->ident, m->cap);

	while (m->slots[i].used) {
		if (!memcmp(m->slots[i].ident, d->ident, SHA_LEN))
			goto text; /* same identity: one entry is enough */
		i = (i + 1) & (m->cap - 1);
	}
	m->slots[i] = *d;
	m->slots[i].used = 1;
	m->n++;
text:;
	size_t t = slot_of(d->text, m->cap);

	while (m->by_text[t]) {
		if (!memcmp(m->slots[m->by_text[t] - 1].text, d->text,
			    SHA_LEN))
			return;
		t = (t + 1) & (m->cap - 1);
	}
	m->by_text[t] = (uint32_t)(i + 1);
}

static const struct old_done *old_map_get(const struct old_map *m,
					  const uint8_t *ident)
{
	size_t i = slot_of(ident, m->cap);

	while (m->slots[i].used) {
		if (!memcmp(m->slots[i].ident, ident, SHA_LEN))
			return &m->slots[i];
		i = (i + 1) & (m->cap - 1);
	}
	return NULL;
}

static int old_map_has_text(const struct old_map *m, const uint8_t *text)
{
	size_t t = slot_of(text, m->cap);

	while (m->by_text[t]) {
		if (!memcmp(m->slots[m->by_text[t] - 1].text, text, SHA_LEN))
			return 1;
		t = (t + 1) & (m->cap - 1);
	}
	return 0;
}

struct release_list {
	uint8_t (*sha)[SHA_LEN];
	size_t n, cap;
};

static void release_add(struct release_list *l, const uint8_t *sha)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 32;
		void *p = realloc(l->sha, cap * SHA_LEN);

		if (!p)
			return; /* the startup sweep will find it */
		l->sha = p;
		l->cap = cap;
	}
	memcpy(l->sha[l->n++], sha, SHA_LEN);
}

struct collect_ctx {
	struct db_txn *t;
	struct old_map *map;
	const struct spec *sp;
	struct release_list *rel;
	int rc;
};

static int collect_old(void *arg, uint32_t n, const struct chunk_rec *r,
		       const char *err, size_t errlen)
{
	struct collect_ctx *c = arg;
	struct old_done d = { 0 };
	uint64_t refs;
	int rc;

	(void)n;
	(void)err;
	(void)errlen;
	if (r->state != CHUNK_DONE)
		return 0;
	if (c->map->slots && c->sp) {
		identity(r->text_sha, c->sp, d.ident);
		memcpy(d.text, r->text_sha, SHA_LEN);
		memcpy(d.obj, r->obj, SHA_LEN);
		d.size = r->obj_size;
		d.duration_ms = r->duration_ms;
		d.rate = r->rate;
		d.channels = r->channels;
		d.enc = r->enc;
		d.frames = r->frames;
		old_map_add(c->map, &d);
	}
	rc = db_obj_ref(c->t, r->obj, r->obj_size, -1, &refs);
	if (rc)
		return rc;
	if (refs == 0)
		release_add(c->rel, r->obj);
	return 0;
}

/* ---- cutting: no lock needed ---- */

struct cutter {
	struct plan_cut *out;
	const uint8_t *input;
	uint32_t max;
	uint64_t dropped;   /* input bytes already given back to the kernel */
};

/*
 * SHA-256 of input[start, end), giving the pages behind it back to the
 * kernel as it goes: the chunker never reads before the chunk it emits, so
 * cutting a 4 GiB input does not make the daemon 4 GiB large. (The input
 * is a page-aligned mmap; a page read again is simply faulted back in.)
 */
static int hash_text(struct cutter *c, uint64_t start, uint64_t end,
		     uint8_t out[SHA_LEN])
{
	struct sha_ctx *h;
	uint64_t at = start;

	if (end - start < DROP_STEP && start - c->dropped < DROP_STEP)
		return sha_buf(c->input + start, (size_t)(end - start), out);
	h = sha_new();
	if (!h)
		return -ENOMEM;
	while (at < end) {
		uint64_t to = end - at > DROP_STEP ? at + DROP_STEP : end;

		sha_update(h, c->input + at, (size_t)(to - at));
		at = to;
		if ((at & ~(DROP_STEP - 1)) > c->dropped) {
			uint64_t upto = at & ~(DROP_STEP - 1);

			madvise((void *)(c->input + c->dropped),
				(size_t)(upto - c->dropped), MADV_DONTNEED);
			c->dropped = upto;
		}
	}
	sha_final(h, out);
	return 0;
}

static int cut_item(void *arg, uint64_t start, uint64_t end)
{
	struct cutter *c = arg;
	struct plan_cut *o = c->out;
	struct cut_item *it;

	if (o->n >= c->max)
		return -E2BIG;
	if (o->n == o->cap) {
		uint32_t cap = o->cap ? o->cap * 2 : 64;
		void *p;

		if (cap > c->max)
			cap = c->max;
		p = realloc(o->items, (size_t)cap * sizeof(*o->items));
		if (!p)
			return -ENOMEM;
		o->items = p;
		o->cap = cap;
	}
	it = &o->items[o->n++];
	it->start = start;
	it->end = end;
	return hash_text(c, start, end, it->text_sha);
}

int plan_cut(const uint8_t *input, size_t len, const struct spec *sp,
	     uint32_t max, struct plan_cut *out)
{
	struct cutter c = { out, input, max, 0 };
	int rc;

	memset(out, 0, sizeof(*out));
	if (!sp)
		return 0;
	rc = chunker_cut((const char *)input, len, sp->by, sp->max, cut_item,
			 &c);
	if (rc)
		plan_cut_free(out);
	return rc;
}

void plan_cut_free(struct plan_cut *c)
{
	free(c->items);
	memset(c, 0, sizeof(*c));
}

/* ---- applying a cut: with the lock ---- */

struct cut_ctx {
	struct db_txn *t;
	const struct old_map *map;
	const struct spec *sp;
	uint32_t n, reused, fresh, changed;
	uint8_t *cs;
};

static int cut_one(struct cut_ctx *c, const struct cut_item *it,
		   uint64_t job_id)
{
	struct chunk_rec r = { 0 };
	uint8_t ident[SHA_LEN];
	const struct old_done *d = NULL;
	int rc;

	c->n++;
	r.state = CHUNK_PENDING;
	r.start = it->start;
	r.end = it->end;
	memcpy(r.text_sha, it->text_sha, SHA_LEN);
	if (c->map->slots) {
		identity(r.text_sha, c->sp, ident);
		d = old_map_get(c->map, ident);
	}
	if (d) {
		r.state = CHUNK_DONE;
		r.flags = CHUNK_F_REUSED;
		memcpy(r.obj, d->obj, SHA_LEN);
		r.obj_size = d->size;
		r.duration_ms = d->duration_ms;
		r.rate = d->rate;
		r.channels = d->channels;
		r.enc = d->enc;
		r.frames = d->frames;
		r.done_ms = wall_ms();
		rc = db_obj_ref(c->t, d->obj, d->size, +1, NULL);
		if (rc)
			return rc;
		c->reused++;
	} else if (c->map->slots && old_map_has_text(c->map, r.text_sha)) {
		c->changed++;
	} else {
		c->fresh++;
	}
	c->cs[c->n - 1] = d ? CS_DONE : CS_PENDING;
	return db_chunk_put(c->t, job_id, c->n, &r, NULL);
}

/*
 * Replace j's plan. new_spec (with its parse new_parsed) replaces the spec
 * when not NULL; on success the parse moves into the job (the caller must
 * not release it), on failure it stays the caller's. A new input is given
 * as input_sha and input_len; with input_sha NULL and has_input set the
 * input in force stays. pc is the cut (plan_cut) of that input under the
 * spec that will be in force. Called with e->lock held and the job not
 * busy. On failure nothing changes and a negative errno is returned.
 */
static int plan_job_once(struct engine *e, struct job *j,
			 const char *new_spec, size_t new_spec_len,
			 const struct spec *new_parsed,
			 const struct plan_cut *pc, uint64_t input_len,
			 const uint8_t input_sha[SHA_LEN], int has_input,
			 int unlocked)
{
	const struct spec *sp = new_parsed ? new_parsed :
		(j->has_spec ? &j->spec : NULL);
	struct release_list rel = { 0 };
	struct old_map map = { 0 };
	struct cut_ctx cut = { 0 };
	struct db_txn *t = NULL;
	struct job_rec rec = j->rec;
	char *spec_copy = NULL;
	int rc, dropped = 0;

	if (!input_sha && j->rec.has_input && has_input) {
		/* no new input (a spec change): the one in force */
		input_len = j->rec.input_len;
		input_sha = j->rec.input_sha;
	}
	if (new_spec) {
		spec_copy = malloc(new_spec_len + 1);
		if (!spec_copy) {
			rc = -ENOMEM;
			goto out;
		}
		memcpy(spec_copy, new_spec, new_spec_len);
		spec_copy[new_spec_len] = '\0';
	}
	if (j->has_spec && j->ndone) {
		rc = old_map_init(&map, j->ndone);
		if (rc)
			goto out;
	}

	/* The transaction, as large as the plan, without the engine lock
	 * when unlocked is set: j->planning keeps everything that could
	 * change j away meanwhile (plan_job), and a write transaction that
	 * may not resize the map can run beside readers. */
	if (unlocked) {
		pthread_mutex_unlock(&e->lock);
		dropped = 1;
	}
	rc = dropped ? db_begin_nogrow(e->db, &t) : db_begin(e->db, 1, &t);
	if (rc)
		goto out;
	{
		struct collect_ctx c = {
			t, &map, j->has_spec ? &j->spec : NULL, &rel, 0
		};

		rc = db_chunk_iter(t, j->id, 1, collect_old, &c);
	}
	if (!rc)
		rc = db_chunk_del_all(t, j->id);
	if (rc)
		goto out;

	cut.t = t;
	cut.map = &map;
	cut.sp = sp;
	if (sp && has_input && pc->n) {
		cut.cs = malloc(pc->n);
		if (!cut.cs) {
			rc = -ENOMEM;
			goto out;
		}
		for (uint32_t i = 0; i < pc->n && !rc; i++)
			rc = cut_one(&cut, &pc->items[i], j->id);
		if (rc)
			goto out;
	}

	if (has_input) {
		rec.has_input = 1;
		rec.input_len = input_len;
		memcpy(rec.input_sha, input_sha, SHA_LEN);
	}
	rec.nchunks = cut.n;
	rec.plan_reused = cut.reused;
	rec.plan_new = cut.fresh;
	rec.plan_changed = cut.changed;
	rec.updated_ms = wall_ms();
	rc = db_job_put(t, j->name, &rec, spec_copy ? spec_copy : j->spec_text,
			spec_copy ? new_spec_len : j->spec_len);
	if (rc)
		goto out;
	rc = db_commit(t);
	t = NULL;
	if (dropped) {
		pthread_mutex_lock(&e->lock);
		dropped = 0;
	}
	if (rc)
		goto out;

	/* committed: make it visible */
	job_clear_waits(j);
	job_unmap_input(j);
	j->rec = rec;
	if (new_spec) {
		free(j->spec_text);
		j->spec_text = spec_copy;
		j->spec_len = new_spec_len;
		spec_copy = NULL;
		spec_release(&j->spec);
		j->spec = *new_parsed; /* the caller's parse moves in */
		j->has_spec = 1;
	}
	free(j->cs);
	j->cs = cut.cs ? cut.cs : calloc(1, 1);
	cut.cs = NULL;
	j->nchunks = cut.n;
	j->ndone = cut.reused;
	j->nreused = cut.reused;
	j->nfailed = j->nrunning = j->ncommit = j->nwait = j->nqueued = 0;
	j->scan = 0;
	for (size_t i = 0; i < rel.n; i++)
		engine_mark_dead(e, rel.sha[i]);
	job_event_plan(j, cut.n, cut.reused, cut.fresh, cut.changed);
	for (uint32_t n = 1; n <= j->nchunks; n++) {
		if ((j->cs[n - 1] & CS_MASK) == CS_DONE)
			job_event(j, n, "reused", NULL);
	}
	free(j->manifest);
	j->manifest = NULL;
	job_bump(j);
	engine_want_encode(e);
	rc = 0;
out:
	db_abort(t);
	if (dropped)
		pthread_mutex_lock(&e->lock);
	free(cut.cs);
	free(spec_copy);
	old_map_free(&map);
	free(rel.sha);
	return rc;
}

int plan_job(struct engine *e, struct job *j, const char *new_spec,
	     size_t new_spec_len, const struct spec *new_parsed,
	     const struct plan_cut *cut, uint64_t input_len,
	     const uint8_t input_sha[SHA_LEN], int has_input)
{
	int rc;

	/* A plan is one transaction, as large as the job, written without
	 * the engine lock; when it does not fit the map, the map grows and
	 * the plan is made again, with the lock held (a resize needs every
	 * reader out of the way). */
	j->planning = 1;
	for (int tries = 0;; tries++) {
		db_map_was_full();
		rc = plan_job_once(e, j, new_spec, new_spec_len, new_parsed,
				   cut, input_len, input_sha, has_input,
				   tries == 0);
		if (rc != -ENOSPC || !db_map_was_full() || tries >= 16 ||
		    db_grow(e->db))
			break;
	}
	j->planning = 0;
	return rc;
}
