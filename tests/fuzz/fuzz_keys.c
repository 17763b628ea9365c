/*
 * fuzz_keys.c - store/db.c through its public face (db.h): chunk keys,
 * job records and object counts on a real LMDB environment.
 *
 * The input is a little program: each op is one byte that picks the
 * operation, then the bytes its arguments come from (job ids and chunk
 * numbers drawn from a table of edge values or taken raw, names, error
 * texts, record bytes). The ops run on one write transaction at a time
 * against a model kept here in plain arrays, and every answer is compared
 * with the model:
 *
 *   - db_chunk_get() gives back the record and the error text as put,
 *     the text cut at its first NUL and at DB_ERR_MAX bytes;
 *   - db_chunk_iter(job, from) calls back exactly the model's chunks of
 *     that job numbered >= from, in increasing order, never one of another
 *     job (ids next to each other in big-endian order are in the table),
 *     and stops with the callback's non-zero value;
 *   - db_chunk_del_all() removes one job's chunks and nothing else;
 *   - db_job_get()/db_job_iter() give back records and spec text, in
 *     LMDB's key order; names LMDB cannot hold (empty, > 511 bytes) are
 *     refused with -EIO;
 *   - db_obj_ref() counts as the model does and refuses to go below 0;
 *     a record that reaches 0 stays (at 0, with its size) until the
 *     commit, which removes it: a +1 before then takes it back;
 *   - db_next_job_id() counts up by one;
 *   - a commit makes the model durable: a read transaction, after the
 *     commit or beside a writer with uncommitted changes (MDB_NOTLS allows
 *     that in one thread), sees exactly the committed model; an abort, or
 *     any failed call, brings the model back to it.
 *
 * The environment lives for the whole process, in /dev/shm when there is
 * one (commits are synchronous). Each input ends by deleting every record
 * it committed, so the next one starts from an empty store, which is
 * checked with db_stat().
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "fuzz.h"
#include "fuzz_tmp.h"

#define MAX_CHUNKS 256
#define MAX_JOBS 32
#define MAX_OBJS 16
#define MAX_OPS 96
#define NAME_MAX_LMDB 511
#define NAME_BUF (NAME_MAX_LMDB + 16)  /* pick_name() goes a little past */

struct mchunk {
	uint64_t job;
	uint32_t n;
	struct chunk_rec rec;
	char err[DB_ERR_MAX + 1];
};

struct mjob {
	char name[NAME_BUF];
	struct job_rec rec;
	char spec[64];
	size_t speclen;
};

struct mobj {
	uint8_t sha[SHA_LEN];
	uint64_t refs, size;
	int inl;           /* created with inline bytes: size x fill */
	uint8_t fill;
};

struct model {
	struct mchunk chunks[MAX_CHUNKS];
	size_t nchunks;
	struct mjob jobs[MAX_JOBS];
	size_t njobs;
	struct mobj objs[MAX_OBJS];
	size_t nobjs;
	uint64_t next_id;
};

static struct db *db;
static char dir[256];
static struct model committed, cur;

/* ---- reading the program ---- */

struct prog {
	const uint8_t *p;
	size_t n;
	uint64_t rnd;
};

static uint8_t byte(struct prog *g)
{
	if (!g->n)
		return (uint8_t)fuzz_rand(&g->rnd);
	g->n--;
	return *g->p++;
}

static uint64_t raw(struct prog *g, unsigned bytes)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < bytes; i++)
		v = v << 8 | byte(g);
	return v;
}

/* Ids whose big-endian keys sit next to each other, and the ends. */
static uint64_t pick_job(struct prog *g)
{
	static const uint64_t ids[] = {
		0, 1, 2, 3, 255, 256, 257, 0xffff, 0x10000, 0xffffffffULL,
		0x100000000ULL, 0x100000001ULL, 0xff00000000000000ULL,
		0x00ffffffffffffffULL, 0x0100000000000000ULL,
		0x7fffffffffffffffULL, 0x8000000000000000ULL,
		UINT64_MAX - 1, UINT64_MAX,
	};
	uint8_t b = byte(g);

	if (b < 0x80)
		return ids[b % (sizeof(ids) / sizeof(ids[0]))];
	if (b < 0xc0)
		return b & 7;
	return raw(g, 8);
}

static uint32_t pick_n(struct prog *g)
{
	static const uint32_t ns[] = {
		0, 1, 2, 3, 255, 256, 257, 0xffff, 0x10000, 0xffffff,
		0x1000000, 0x7fffffff, 0x80000000, UINT32_MAX - 1, UINT32_MAX,
	};
	uint8_t b = byte(g);

	if (b < 0x40)
		return ns[b % (sizeof(ns) / sizeof(ns[0]))];
	if (b < 0xe0)
		return 1 + (b & 15);
	return (uint32_t)raw(g, 4);
}

/* An error text: sometimes NULL, sometimes longer than DB_ERR_MAX, may
 * hold a NUL (where db.c must cut it). */
static const char *pick_err(struct prog *g, char *buf, size_t size)
{
	uint8_t b = byte(g);
	size_t len;

	if (b < 0x20)
		return NULL;
	len = b < 0xe0 ? (size_t)(b & 63) : DB_ERR_MAX - 4 + (b & 15);
	if (len > size - 1)
		len = size - 1;
	for (size_t i = 0; i < len; i++) {
		uint8_t c = b & 1 ? byte(g) : (uint8_t)fuzz_rand(&g->rnd);

		buf[i] = (char)(c ? c : (b & 2 ? 'x' : 0));
	}
	buf[len] = '\0';
	return buf;
}

static void pick_name(struct prog *g, char *name)
{
	uint8_t b = byte(g);
	size_t len;

	if (b < 0xf0)
		len = b % 12;
	else
		len = NAME_MAX_LMDB - 3 + (b & 7); /* around LMDB's limit */
	for (size_t i = 0; i < len; i++) {
		uint8_t c = len < 12 ? byte(g) : (uint8_t)('a' + i % 26);

		name[i] = (char)(c ? c : 'z');
	}
	name[len] = '\0';
}

static void fill(struct prog *g, void *p, size_t n)
{
	uint8_t *b = p;

	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)fuzz_rand(&g->rnd);
}

/* ---- the model ---- */

static struct mchunk *m_chunk(struct model *m, uint64_t job, uint32_t n)
{
	for (size_t i = 0; i < m->nchunks; i++)
		if (m->chunks[i].job == job && m->chunks[i].n == n)
			return &m->chunks[i];
	return NULL;
}

static struct mjob *m_job(struct model *m, const char *name)
{
	for (size_t i = 0; i < m->njobs; i++)
		if (!strcmp(m->jobs[i].name, name))
			return &m->jobs[i];
	return NULL;
}

static struct mobj *m_obj(struct model *m, const uint8_t *sha)
{
	for (size_t i = 0; i < m->nobjs; i++)
		if (!memcmp(m->objs[i].sha, sha, SHA_LEN))
			return &m->objs[i];
	return NULL;
}

/* LMDB's default key order: bytes compared as unsigned, then length. */
static int name_cmp(const void *a, const void *b)
{
	const char *x = ((const struct mjob *)a)->name;
	const char *y = ((const struct mjob *)b)->name;
	size_t lx = strlen(x), ly = strlen(y);
	int c = memcmp(x, y, lx < ly ? lx : ly);

	return c ? c : (lx > ly) - (lx < ly);
}

/* ---- checks against the model ---- */

struct iter_seen {
	uint32_t n[MAX_CHUNKS + 1];
	size_t count;
	const struct model *m;
	uint64_t job;
	size_t stop_after;      /* return 99 after this many; 0: never */
};

static int on_chunk(void *arg, uint32_t n, const struct chunk_rec *r,
		    const char *err, size_t errlen)
{
	struct iter_seen *s = arg;
	const struct mchunk *mc = m_chunk((struct model *)s->m, s->job, n);

	FUZZ_CHECK(s->count < MAX_CHUNKS + 1, "iteration of job %llu runs on",
		   (unsigned long long)s->job);
	FUZZ_CHECK(mc, "iteration of job %llu gave chunk %u, which it does "
		   "not have (another job's?)", (unsigned long long)s->job,
		   (unsigned)n);
	FUZZ_CHECK(!memcmp(r, &mc->rec, sizeof(*r)), "job %llu chunk %u: "
		   "record differs in iteration", (unsigned long long)s->job,
		   (unsigned)n);
	FUZZ_CHECK(errlen == strlen(mc->err) && !memcmp(err, mc->err, errlen),
		   "job %llu chunk %u: error text of %zu bytes in iteration, "
		   "want %zu", (unsigned long long)s->job, (unsigned)n, errlen,
		   strlen(mc->err));
	s->n[s->count++] = n;
	return s->stop_after && s->count == s->stop_after ? 99 : 0;
}

static int u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

static void check_iter(struct db_txn *t, const struct model *m, uint64_t job,
		       uint32_t from, size_t stop_after)
{
	static struct iter_seen s;
	uint32_t want[MAX_CHUNKS];
	size_t nwant = 0;
	int rc;

	memset(&s, 0, sizeof(s));
	s.m = m;
	s.job = job;
	s.stop_after = stop_after;
	for (size_t i = 0; i < m->nchunks; i++)
		if (m->chunks[i].job == job && m->chunks[i].n >= from)
			want[nwant++] = m->chunks[i].n;
	qsort(want, nwant, sizeof(want[0]), u32_cmp);
	rc = db_chunk_iter(t, job, from, on_chunk, &s);
	if (stop_after && stop_after <= nwant) {
		FUZZ_CHECK(rc == 99 && s.count == stop_after, "iteration "
			   "stopped by its callback returned %d after %zu",
			   rc, s.count);
		nwant = stop_after;
	} else {
		FUZZ_CHECK(rc == 0, "db_chunk_iter(%llu, %u) returned %d",
			   (unsigned long long)job, (unsigned)from, rc);
	}
	FUZZ_CHECK(s.count == nwant, "db_chunk_iter(%llu, from %u) gave %zu "
		   "chunks, want %zu", (unsigned long long)job, (unsigned)from,
		   s.count, nwant);
	for (size_t i = 0; i < nwant; i++)
		FUZZ_CHECK(s.n[i] == want[i], "db_chunk_iter(%llu, from %u): "
			   "chunk %zu is %u, want %u", (unsigned long long)job,
			   (unsigned)from, i, (unsigned)s.n[i],
			   (unsigned)want[i]);
}

static void check_get(struct db_txn *t, const struct model *m, uint64_t job,
		      uint32_t n)
{
	const struct mchunk *mc = m_chunk((struct model *)m, job, n);
	struct chunk_rec r;
	/* exactly the documented DB_ERR_MAX + 1 bytes: ASan sees overruns */
	char *err = malloc(DB_ERR_MAX + 1);
	int rc;

	FUZZ_CHECK(err, "malloc");
	rc = db_chunk_get(t, job, n, &r, err);
	if (!mc) {
		FUZZ_CHECK(rc == -ENOENT, "db_chunk_get(%llu, %u) of a missing "
			   "chunk returned %d", (unsigned long long)job,
			   (unsigned)n, rc);
	} else {
		FUZZ_CHECK(rc == 0, "db_chunk_get(%llu, %u) returned %d",
			   (unsigned long long)job, (unsigned)n, rc);
		FUZZ_CHECK(!memcmp(&r, &mc->rec, sizeof(r)),
			   "db_chunk_get(%llu, %u): record differs",
			   (unsigned long long)job, (unsigned)n);
		FUZZ_CHECK(!strcmp(err, mc->err), "db_chunk_get(%llu, %u): "
			   "error text '%s', want '%s'",
			   (unsigned long long)job, (unsigned)n, err, mc->err);
		rc = db_chunk_get(t, job, n, &r, NULL);
		FUZZ_CHECK(rc == 0, "db_chunk_get without err_out: %d", rc);
	}
	free(err);
}

struct job_seen {
	const struct mjob *want;
	size_t count, n;
};

static int on_job(void *arg, const char *name, const struct job_rec *r,
		  const char *spec, size_t speclen)
{
	struct job_seen *s = arg;
	const struct mjob *w;

	FUZZ_CHECK(s->count < s->n, "db_job_iter gave job '%s' past the %zu "
		   "the model has", name, s->n);
	w = &s->want[s->count++];
	FUZZ_CHECK(!strcmp(name, w->name), "db_job_iter: job %zu is '%s', "
		   "want '%s' (order or name differs)", s->count, name,
		   w->name);
	FUZZ_CHECK(!memcmp(r, &w->rec, sizeof(*r)) && speclen == w->speclen &&
		   (!speclen || !memcmp(spec, w->spec, speclen)),
		   "db_job_iter: job '%s' record or spec differs", name);
	return 0;
}

static void failed(void);

/* t is the write transaction when name may be missing: a failed lookup
 * ends it (see failed()). */
static void check_job_get(struct db_txn *t, const struct model *m,
			  const char *name)
{
	const struct mjob *w = m_job((struct model *)m, name);
	struct job_rec r;
	char *spec = (char *)1;
	size_t speclen = 12345;
	int rc;

	rc = db_job_get(t, name, &r, &spec, &speclen);
	if (!w) {
		size_t len = strlen(name);

		/* LMDB refuses a key it could not hold on a put only; a
		 * lookup may just not find it */
		FUZZ_CHECK(rc == -ENOENT || (rc == -EIO && (len == 0 ||
					      len > NAME_MAX_LMDB)),
			   "db_job_get of missing '%.40s' (%zu bytes) "
			   "returned %d", name, len, rc);
		if (rc != -ENOENT)
			failed();
		return;
	}
	FUZZ_CHECK(rc == 0, "db_job_get('%s') returned %d", name, rc);
	FUZZ_CHECK(!memcmp(&r, &w->rec, sizeof(r)), "db_job_get('%s'): record "
		   "differs", name);
	FUZZ_CHECK(speclen == w->speclen, "db_job_get('%s'): spec of %zu "
		   "bytes, want %zu", name, speclen, w->speclen);
	if (!speclen) {
		FUZZ_CHECK(spec == NULL, "db_job_get('%s'): no spec but a "
			   "pointer", name);
	} else {
		FUZZ_CHECK(spec && !memcmp(spec, w->spec, speclen) &&
			   spec[speclen] == '\0', "db_job_get('%s'): spec "
			   "differs", name);
	}
	free(spec);
}

/* An object's inline bytes are what it was made with; an object made
 * without any has none (-ENODATA), unless it is empty. */
static void check_inline(struct db_txn *t, const struct mobj *o)
{
	const void *data;
	size_t len;
	int rc = db_obj_inline(t, o->sha, &data, &len);

	if (!o->inl && o->size) {
		FUZZ_CHECK(rc == -ENODATA, "db_obj_inline of a file object "
			   "returned %d", rc);
		return;
	}
	FUZZ_CHECK(rc == 0 && len == o->size, "db_obj_inline returned %d, "
		   "%zu bytes, want %llu", rc, rc ? 0 : len,
		   (unsigned long long)o->size);
	for (size_t i = 0; i < len; i++)
		FUZZ_CHECK(((const uint8_t *)data)[i] == o->fill,
			   "inline byte %zu changed", i);
}

static void check_all(struct db_txn *t, const struct model *m)
{
	static struct mjob sorted[MAX_JOBS];
	struct job_seen js = { sorted, 0, m->njobs };
	int rc;

	for (size_t i = 0; i < m->nchunks; i++)
		check_iter(t, m, m->chunks[i].job, 0, 0);
	for (size_t i = 0; i < m->nchunks; i++)
		check_get(t, m, m->chunks[i].job, m->chunks[i].n);
	memcpy(sorted, m->jobs, m->njobs * sizeof(sorted[0]));
	qsort(sorted, m->njobs, sizeof(sorted[0]), name_cmp);
	rc = db_job_iter(t, on_job, &js);
	FUZZ_CHECK(rc == 0 && js.count == m->njobs, "db_job_iter returned %d "
		   "after %zu of %zu jobs", rc, js.count, m->njobs);
	for (size_t i = 0; i < m->njobs; i++)
		check_job_get(t, m, m->jobs[i].name);
	for (size_t i = 0; i < m->nobjs; i++) {
		struct obj_rec o;

		rc = db_obj_get(t, m->objs[i].sha, &o);
		FUZZ_CHECK(rc == 0 && o.refs == m->objs[i].refs &&
			   o.size == m->objs[i].size, "db_obj_get: rc %d, "
			   "refs %llu size %llu, want %llu %llu", rc,
			   (unsigned long long)o.refs,
			   (unsigned long long)o.size,
			   (unsigned long long)m->objs[i].refs,
			   (unsigned long long)m->objs[i].size);
		check_inline(t, &m->objs[i]);
	}
}

/* What a read transaction sees is the committed model, whatever the
 * open write transaction (if any) has changed. */
static void check_committed(void)
{
	struct db_txn *r;
	int rc = db_begin(db, 0, &r);

	FUZZ_CHECK(rc == 0, "read transaction beside the writer: %d", rc);
	check_all(r, &committed);
	db_abort(r);
}

/* ---- the ops ---- */

static struct db_txn *txn;

static void begin(void)
{
	int rc = db_begin(db, 1, &txn);

	FUZZ_CHECK(rc == 0, "db_begin(write) returned %d", rc);
	cur = committed;
}

/* A failed call: only abort is allowed, and nothing of the transaction
 * remains. */
static void failed(void)
{
	db_abort(txn);
	begin();
}

static void op_chunk_put(struct prog *g)
{
	struct mchunk c, *mc;
	char ebuf[DB_ERR_MAX + 40];
	const char *err;
	int rc;

	memset(&c, 0, sizeof(c));
	c.job = pick_job(g);
	c.n = pick_n(g);
	fill(g, &c.rec, sizeof(c.rec));
	err = pick_err(g, ebuf, sizeof(ebuf));
	if (err)
		snprintf(c.err, sizeof(c.err), "%.*s", DB_ERR_MAX, err);
	mc = m_chunk(&cur, c.job, c.n);
	if (!mc && cur.nchunks == MAX_CHUNKS)
		return;
	rc = db_chunk_put(txn, c.job, c.n, &c.rec, err);
	FUZZ_CHECK(rc == 0, "db_chunk_put(%llu, %u) returned %d",
		   (unsigned long long)c.job, (unsigned)c.n, rc);
	if (!mc)
		mc = &cur.chunks[cur.nchunks++];
	*mc = c;
}

static void op_chunk_del_all(struct prog *g)
{
	uint64_t job = pick_job(g);
	uint8_t b = byte(g);
	size_t k = 0;
	int rc;

	/* sometimes a job that has chunks, so that something goes; the
	 * bytes are read whatever the state, so an input means the same
	 * thing however it is cut */
	if (cur.nchunks && b & 1)
		job = cur.chunks[(b >> 1) % cur.nchunks].job;
	rc = db_chunk_del_all(txn, job);
	FUZZ_CHECK(rc == 0, "db_chunk_del_all(%llu) returned %d",
		   (unsigned long long)job, rc);
	for (size_t i = 0; i < cur.nchunks; i++)
		if (cur.chunks[i].job != job)
			cur.chunks[k++] = cur.chunks[i];
	cur.nchunks = k;
	check_iter(txn, &cur, job, 0, 0);
}

static void op_job_put(struct prog *g)
{
	struct mjob j, *w;
	size_t len;
	uint8_t b;
	int rc;

	memset(&j, 0, sizeof(j));
	pick_name(g, j.name);
	b = byte(g);
	if (cur.njobs && b < 0x60)
		strcpy(j.name, cur.jobs[b % cur.njobs].name);
	fill(g, &j.rec, sizeof(j.rec));
	j.speclen = byte(g) % sizeof(j.spec);
	for (size_t i = 0; i < j.speclen; i++)
		j.spec[i] = (char)byte(g);
	w = m_job(&cur, j.name);
	if (!w && cur.njobs == MAX_JOBS)
		return;
	rc = db_job_put(txn, j.name, &j.rec, j.speclen ? j.spec : NULL,
			j.speclen);
	len = strlen(j.name);
	if (len == 0 || len > NAME_MAX_LMDB) {
		FUZZ_CHECK(rc == -EIO, "db_job_put of a %zu-byte name returned "
			   "%d", len, rc);
		failed();
		return;
	}
	FUZZ_CHECK(rc == 0, "db_job_put('%s') returned %d", j.name, rc);
	if (!w)
		w = &cur.jobs[cur.njobs++];
	*w = j;
}

static void op_job_del(struct prog *g)
{
	char name[NAME_BUF];
	struct mjob *w;
	uint8_t b;
	int rc;

	pick_name(g, name);
	b = byte(g);
	if (cur.njobs && b & 1)
		strcpy(name, cur.jobs[(b >> 1) % cur.njobs].name);
	w = m_job(&cur, name);
	rc = db_job_del(txn, name);
	if (!w) {
		size_t len = strlen(name);

		FUZZ_CHECK(rc == -ENOENT || (rc == -EIO && (len == 0 ||
					      len > NAME_MAX_LMDB)),
			   "db_job_del of missing '%.40s' (%zu bytes) "
			   "returned %d", name, len, rc);
		if (rc != -ENOENT)
			failed();
		return;
	}
	FUZZ_CHECK(rc == 0, "db_job_del('%s') returned %d", name, rc);
	*w = cur.jobs[--cur.njobs];
}

static void op_obj_ref(struct prog *g)
{
	uint8_t sha[SHA_LEN] = { 0 };
	uint8_t b = byte(g);
	int delta = b & 1 ? 1 : -1;
	uint64_t size = raw(g, 2), refs = 777;
	uint8_t b2 = byte(g), fill = (uint8_t)(b2 >> 1);
	int g_inline = b2 & 1;
	static uint8_t bytes[DB_INLINE_MAX];
	struct mobj *o;
	int rc;

	sha[0] = (uint8_t)(b >> 1 & 7);     /* few objects, so counts grow */
	sha[SHA_LEN - 1] = (uint8_t)(b >> 4);
	o = m_obj(&cur, sha);
	if (!o && cur.nobjs == MAX_OBJS)
		return;
	/* a new object may come with its bytes (size of them, all fill) */
	if (g_inline && delta > 0) {
		size %= DB_INLINE_MAX + 1;
		memset(bytes, fill, (size_t)size);
		rc = db_obj_ref_inline(txn, sha, size, bytes, delta, &refs);
	} else {
		rc = db_obj_ref(txn, sha, size, delta, &refs);
	}
	if ((!o || !o->refs) && delta < 0) {
		FUZZ_CHECK(rc == -EIO, "db_obj_ref(-1) on a missing object "
			   "returned %d", rc);
		failed();
		return;
	}
	FUZZ_CHECK(rc == 0, "db_obj_ref(%+d) returned %d", delta, rc);
	if (!o) {
		o = &cur.objs[cur.nobjs++];
		memcpy(o->sha, sha, SHA_LEN);
		o->refs = 0;
		o->size = size;
		o->inl = g_inline;
		o->fill = fill;
	}
	o->refs += (uint64_t)(int64_t)delta;
	FUZZ_CHECK(refs == o->refs, "db_obj_ref says %llu refs, want %llu",
		   (unsigned long long)refs, (unsigned long long)o->refs);
	if (!o->refs) {
		struct obj_rec rec;

		/* kept at 0 until the commit (model and store alike) */
		FUZZ_CHECK(db_obj_get(txn, sha, &rec) == 0 && rec.refs == 0 &&
			   rec.size == o->size, "object with no reference "
			   "left: its record is not there at 0 until the "
			   "commit");
	}
}

static void op_next_id(void)
{
	uint64_t id = 0;
	int rc = db_next_job_id(txn, &id);

	FUZZ_CHECK(rc == 0, "db_next_job_id returned %d", rc);
	FUZZ_CHECK(id == cur.next_id, "db_next_job_id gave %llu, want %llu",
		   (unsigned long long)id, (unsigned long long)cur.next_id);
	cur.next_id++;
}

static void commit(void)
{
	uint8_t gone[MAX_OBJS][SHA_LEN];
	size_t ngone = 0, k = 0;
	struct db_txn *r;
	int rc = db_commit(txn);

	txn = NULL;
	FUZZ_CHECK(rc == 0, "db_commit returned %d", rc);
	/* the commit removed the records left at 0 */
	for (size_t i = 0; i < cur.nobjs; i++) {
		if (cur.objs[i].refs)
			cur.objs[k++] = cur.objs[i];
		else
			memcpy(gone[ngone++], cur.objs[i].sha, SHA_LEN);
	}
	cur.nobjs = k;
	committed = cur;
	check_committed();
	rc = db_begin(db, 0, &r);
	FUZZ_CHECK(rc == 0, "db_begin(read): %d", rc);
	for (size_t i = 0; i < ngone; i++) {
		struct obj_rec rec;

		FUZZ_CHECK(db_obj_get(r, gone[i], &rec) == -ENOENT,
			   "an object left at 0 references still has a record "
			   "after the commit");
	}
	db_abort(r);
	begin();
}

/* Delete everything the input committed; the store is empty again. */
static void wipe(void)
{
	uint64_t map, records = 1;
	int rc;

	db_abort(txn);
	begin();
	for (size_t i = 0; i < cur.nchunks; i++)
		FUZZ_CHECK(db_chunk_del_all(txn, cur.chunks[i].job) == 0,
			   "db_chunk_del_all while wiping");
	for (size_t i = 0; i < cur.njobs; i++)
		FUZZ_CHECK(db_job_del(txn, cur.jobs[i].name) == 0,
			   "db_job_del('%s') while wiping", cur.jobs[i].name);
	for (size_t i = 0; i < cur.nobjs; i++)
		for (uint64_t r = cur.objs[i].refs; r > 0; r--)
			FUZZ_CHECK(db_obj_ref(txn, cur.objs[i].sha, 0, -1,
					      NULL) == 0,
				   "db_obj_ref(-1) while wiping");
	rc = db_commit(txn);
	txn = NULL;
	FUZZ_CHECK(rc == 0, "db_commit of the wipe returned %d", rc);
	cur.nchunks = cur.njobs = cur.nobjs = 0;
	committed = cur;
	rc = db_stat(db, &map, &records);
	FUZZ_CHECK(rc == 0 && records == 0, "after the wipe db_stat says %d, "
		   "%llu chunk records", rc, (unsigned long long)records);
	check_committed();
}

static void cleanup(void)
{
	db_close(db);
	fuzz_rm_tree(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char err[256] = "";
	struct db_txn *t;
	int rc;

	(void)argc;
	(void)argv;
	fuzz_tmpdir("keys", dir, sizeof(dir));
	rc = db_open(dir, 0, &db, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "db_open(%s): %d %s\n", dir, rc, err);
		exit(1);
	}
	atexit(cleanup);
	/* next_job_id starts at 1 in a new store */
	rc = db_begin(db, 0, &t);
	FUZZ_CHECK(rc == 0, "db_begin: %d", rc);
	db_abort(t);
	committed.next_id = 1;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct prog g = { data, size, fuzz_seed(data, size) };

	begin();
	for (int i = 0; i < MAX_OPS && g.n; i++) {
		uint8_t op = byte(&g);

		switch (op % 12) {
		case 0:
		case 1:
		case 2:
			op_chunk_put(&g);
			break;
		case 3: {
			uint64_t job = pick_job(&g);
			uint32_t n = pick_n(&g);
			uint8_t b = byte(&g);

			if (cur.nchunks && op & 0x80) {
				struct mchunk *c = &cur.chunks[b % cur.nchunks];

				job = c->job;
				n = c->n;
			}
			check_get(txn, &cur, job, n);
			break;
		}
		case 4: {
			uint64_t job = pick_job(&g);
			uint32_t from = pick_n(&g);
			uint8_t b = byte(&g);

			if (cur.nchunks && op & 0x80)
				job = cur.chunks[b % cur.nchunks].job;
			check_iter(txn, &cur, job, from, op >> 4 & 3);
			break;
		}
		case 5:
			op_chunk_del_all(&g);
			break;
		case 6:
			op_job_put(&g);
			break;
		case 7: {
			char name[NAME_BUF];

			uint8_t b;

			pick_name(&g, name);
			b = byte(&g);
			if (cur.njobs && op & 0x80)
				strcpy(name, cur.jobs[b % cur.njobs].name);
			check_job_get(txn, &cur, name);
			break;
		}
		case 8:
			op_job_del(&g);
			break;
		case 9:
			op_obj_ref(&g);
			break;
		case 10:
			if (op & 0x80) {
				op_next_id();
			} else {
				check_all(txn, &cur);
				/* a reader beside the open writer sees only
				 * what was committed */
				check_committed();
			}
			break;
		case 11:
			if (op & 0x80) {
				commit();
			} else {
				db_abort(txn);
				begin();
				check_all(txn, &cur);
			}
			break;
		}
	}
	check_all(txn, &cur);
	/* Keep next_job_id's model right across the wipe: it is in meta,
	 * which the wipe leaves alone. */
	if (byte(&g) & 1)
		commit();
	wipe();
	return 0;
}
