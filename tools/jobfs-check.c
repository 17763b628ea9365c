/*
 * jobfs-check.c - an offline consistency check of a jobfs store.
 *
 * It opens the store read-only (LMDB with MDB_RDONLY; object files with
 * O_RDONLY) and checks what the commit protocol promises (docs/design.md):
 *
 *   1. every DONE chunk record names an object file that exists
 *      (else "missing"), whose size is the recorded obj_size (else
 *      "badsize") and whose SHA-256 is its name (else "corrupt"); an
 *      object kept inline in its objects record is checked the same
 *      way, from the bytes of that record;
 *   2. every object referenced by a chunk record, or by a job's encoded
 *      output (job_rec.has_enc/enc_obj), has an objects-db record whose
 *      reference count is at least the number of records referring to it
 *      (else "badrefs");
 *   3. it also reports, without failing: files in STORE/tmp and
 *      directories in STORE/scratch ("tmpfile"; none after a daemon has
 *      started, some while one runs or right after a kill), object files
 *      with no objects-db record ("orphan"; allowed after a crash, swept
 *      at the next start) and objects-db records that nothing refers to
 *      ("warning": a leaked reference, never a lost chunk).
 *
 * It is safe while a daemon holds the store: LMDB readers do not block the
 * writer, and everything it reads comes from one read snapshot. Object
 * files are checked after that snapshot is closed (a long-lived reader
 * would stop LMDB from reusing pages), so a chunk released meanwhile (rm,
 * retry, reset, rmdir) could look missing; every file problem is therefore
 * checked again against a fresh snapshot and counted only if the record
 * that refers to the object is still there, unchanged.
 *
 * Output: one line per problem, then
 *   jobfs-check: jobs=N done=N objects=N missing=N corrupt=N badsize=N
 *                badrefs=N tmpfiles=N orphans=N inline=N
 * (one line; inline counts the objects kept in LMDB). missing, corrupt and badsize count referring records (two
 * chunks sharing a lost object lose two chunks); badrefs counts objects;
 * objects is the number of distinct objects referred to. Exit status: 0
 * clean, 1 if missing + corrupt + badsize + badrefs > 0, 2 if the store
 * cannot be read.
 *
 * --json prints the figures as one JSON object on stdout instead (problem
 * lines then go to stderr); --list adds every done chunk (job, number,
 * object, size, whether the object's bytes are inline in LMDB, checked
 * here), and per-job counts, for crash tests that must see that no
 * done chunk went away. --cache FILE skips re-hashing an object whose
 * name, inode, size and mtime match a line of FILE from an earlier run,
 * and rewrites FILE with this run's verified objects: objects are
 * immutable once published, so a kill -9 loop need not hash gigabytes
 * each round (a final run without --cache hashes everything).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "db.h"
#include "objects.h"
#include "sha.h"

/* One record that refers to an object: a done chunk, or (n == 0) a job's
 * encoded output. */
struct ref {
	uint8_t sha[SHA_LEN];
	uint64_t size;     /* the size the record says the object has */
	size_t job;        /* index into check.jobs */
	uint32_t n;        /* chunk number, 0 for the encoded output */
	int problem;       /* PROB_* found for the file, before recheck */
	int inl;           /* the object is kept in its objects record */
};

struct job_info {
	char name[128];
	uint64_t id;
	uint32_t nchunks, done, failed, pending;
};

/* A verified object from an earlier run (--cache). */
struct cached {
	uint8_t sha[SHA_LEN];
	uint64_t ino, size;
	int64_t mtime_ns;
};

enum { PROB_NONE, PROB_MISSING, PROB_BADSIZE, PROB_CORRUPT };

struct check {
	const char *store;
	int json, list;
	FILE *msg;         /* where problem lines go */
	struct db *db;
	int objects_fd;    /* STORE/objects, or -1 */

	struct job_info *jobs;
	size_t njobs, capjobs;
	struct ref *refs;
	size_t nrefs, caprefs;
	struct cached *cache;       /* sorted by sha */
	size_t ncache, capcache;
	struct cached *verified;    /* this run's, for the new cache file */
	size_t nverified, capverified;

	uint64_t done, objects, missing, corrupt, badsize, badrefs;
	uint64_t tmpfiles, orphans, warnings, inlined;
};

static void *grow(void *p, size_t *cap, size_t n, size_t size)
{
	size_t ncap;
	void *q;

	if (n < *cap)
		return p;
	ncap = *cap ? *cap * 2 : 64;
	q = realloc(p, ncap * size);
	if (!q) {
		fprintf(stderr, "jobfs-check: out of memory\n");
		exit(2);
	}
	*cap = ncap;
	return q;
}

static int cmp_sha(const void *a, const void *b)
{
	return memcmp(a, b, SHA_LEN);
}

static int cmp_ref(const void *a, const void *b)
{
	const struct ref *x = a, *y = b;
	int c = memcmp(x->sha, y->sha, SHA_LEN);

	if (c)
		return c;
	if (x->job != y->job)
		return x->job < y->job ? -1 : 1;
	return x->n < y->n ? -1 : x->n > y->n;
}

static int cmp_ref_pos(const void *a, const void *b)
{
	const struct ref *x = a, *y = b;

	if (x->job != y->job)
		return x->job < y->job ? -1 : 1;
	return x->n < y->n ? -1 : x->n > y->n;
}

/* "job 'a' chunk 7" or "job 'a' encoded output", for problem lines. */
static void ref_name(const struct check *c, const struct ref *r, char *out,
		     size_t len)
{
	if (r->n)
		snprintf(out, len, "job '%s' chunk %" PRIu32,
			 c->jobs[r->job].name, r->n);
	else
		snprintf(out, len, "job '%s' encoded output",
			 c->jobs[r->job].name);
}

/* ---- reading the snapshot -------------------------------------------- */

static void add_ref(struct check *c, const uint8_t sha[SHA_LEN],
		    uint64_t size, size_t job, uint32_t n)
{
	struct ref *r;

	c->refs = grow(c->refs, &c->caprefs, c->nrefs, sizeof(*c->refs));
	r = &c->refs[c->nrefs++];
	/* every field: realloc'd memory is not zeroed, and a stray inl
	 * would leave the object's file unchecked */
	*r = (struct ref){ .size = size, .job = job, .n = n,
			   .problem = PROB_NONE };
	memcpy(r->sha, sha, SHA_LEN);
}

static int on_job(void *arg, const char *name, const struct job_rec *r,
		  const char *spec, size_t speclen)
{
	struct check *c = arg;
	struct job_info *j;

	(void)spec;
	(void)speclen;
	c->jobs = grow(c->jobs, &c->capjobs, c->njobs, sizeof(*c->jobs));
	j = &c->jobs[c->njobs++];
	memset(j, 0, sizeof(*j));
	snprintf(j->name, sizeof(j->name), "%s", name);
	j->id = r->id;
	j->nchunks = r->nchunks;
	if (r->has_enc)
		add_ref(c, r->enc_obj, r->enc_size, c->njobs - 1, 0);
	return 0;
}

struct chunk_walk {
	struct check *c;
	size_t job;
};

static int on_chunk(void *arg, uint32_t n, const struct chunk_rec *r,
		    const char *err, size_t errlen)
{
	struct chunk_walk *w = arg;
	struct job_info *j = &w->c->jobs[w->job];

	(void)err;
	(void)errlen;
	switch (r->state) {
	case CHUNK_DONE:
		j->done++;
		w->c->done++;
		add_ref(w->c, r->obj, r->obj_size, w->job, n);
		break;
	case CHUNK_FAILED:
		j->failed++;
		break;
	default:
		j->pending++;
		break;
	}
	return 0;
}

/*
 * The references i..k-1 share one object. If its bytes are inline in the
 * objects record, check them here, in the snapshot that holds them (no
 * file can race with it), and mark the references so that
 * check_objects() leaves them alone.
 */
static void check_inline(struct check *c, struct db_txn *t, size_t i,
			 size_t k)
{
	const void *data;
	size_t len;
	uint8_t got[SHA_LEN];
	int intact;

	if (db_obj_inline(t, c->refs[i].sha, &data, &len))
		return;
	c->inlined++;
	intact = sha_buf(data, len, got) == 0 &&
		!memcmp(got, c->refs[i].sha, SHA_LEN);
	for (size_t m = i; m < k; m++) {
		struct ref *r = &c->refs[m];
		char hex[SHA_HEX_LEN + 1], who[200];

		r->inl = 1;
		sha_hex(r->sha, hex);
		ref_name(c, r, who, sizeof(who));
		if (len != r->size) {
			fprintf(c->msg, "badsize: %s: object %s: %zu bytes "
				"inline, recorded %" PRIu64 "\n", who, hex, len,
				r->size);
			c->badsize++;
		} else if (!intact) {
			fprintf(c->msg, "corrupt: %s: object %s: its inline "
				"bytes do not hash to it\n", who, hex);
			c->corrupt++;
		}
	}
}

/*
 * Read every job and chunk record in one snapshot, then check each
 * distinct object's reference count in that same snapshot (so the counts
 * are exact, whatever a daemon does meanwhile). Returns 0 or a negative
 * errno.
 */
static int check_records(struct check *c)
{
	struct db_txn *t = NULL;
	int rc;

	rc = db_begin(c->db, 0, &t);
	if (rc)
		return rc;
	rc = db_job_iter(t, on_job, c);
	for (size_t i = 0; !rc && i < c->njobs; i++) {
		struct chunk_walk w = { c, i };

		rc = db_chunk_iter(t, c->jobs[i].id, 1, on_chunk, &w);
	}
	if (rc)
		goto out;
	qsort(c->refs, c->nrefs, sizeof(*c->refs), cmp_ref);
	for (size_t i = 0; i < c->nrefs;) {
		size_t k = i;
		struct obj_rec o;
		char hex[SHA_HEX_LEN + 1], who[200];
		int grc;

		while (k < c->nrefs &&
		       !memcmp(c->refs[k].sha, c->refs[i].sha, SHA_LEN))
			k++;
		c->objects++;
		sha_hex(c->refs[i].sha, hex);
		ref_name(c, &c->refs[i], who, sizeof(who));
		grc = db_obj_get(t, c->refs[i].sha, &o);
		if (grc == -ENOENT) {
			fprintf(c->msg, "badrefs: object %s has no objects "
				"record but %zu records refer to it (%s%s)\n",
				hex, k - i, who, k - i > 1 ? ", ..." : "");
			c->badrefs++;
		} else if (grc) {
			rc = grc;
			goto out;
		}
		if (!grc)
			check_inline(c, t, i, k);
		if (grc) {
			/* reported above */
		} else if (o.refs < k - i) {
			fprintf(c->msg, "badrefs: object %s has refs=%" PRIu64
				" but %zu records refer to it (%s, ...)\n",
				hex, o.refs, k - i, who);
			c->badrefs++;
		} else if (o.refs > k - i) {
			fprintf(c->msg, "warning: object %s has refs=%" PRIu64
				" but %zu records refer to it (a leaked "
				"reference)\n", hex, o.refs, k - i);
			c->warnings++;
		}
		i = k;
	}
out:
	db_abort(t);
	return rc;
}

/* ---- the object files ------------------------------------------------- */

static const struct cached *cache_find(const struct check *c,
				       const uint8_t sha[SHA_LEN])
{
	if (!c->ncache)
		return NULL;
	return bsearch(sha, c->cache, c->ncache, sizeof(*c->cache), cmp_sha);
}

/* Load FILE's "HEX INO SIZE MTIME_NS" lines; a missing or unreadable
 * file is an empty cache (the first run of a loop). */
static void cache_load(struct check *c, const char *path)
{
	FILE *f = fopen(path, "re");
	char line[256];

	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char hex[SHA_HEX_LEN + 1];
		struct cached e;
		unsigned long long ino, size;
		long long mt;

		if (sscanf(line, "%64s %llu %llu %lld", hex, &ino, &size,
			   &mt) != 4 || sha_unhex(hex, e.sha))
			continue;
		e.ino = ino;
		e.size = size;
		e.mtime_ns = mt;
		c->cache = grow(c->cache, &c->capcache, c->ncache,
				sizeof(*c->cache));
		c->cache[c->ncache++] = e;
	}
	fclose(f);
	qsort(c->cache, c->ncache, sizeof(*c->cache), cmp_sha);
}

/* Write this run's verified objects to path through a temp file and a
 * rename, so that a killed check never leaves half a cache. */
static int cache_save(const struct check *c, const char *path)
{
	char tmp[4096];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
	f = fopen(tmp, "we");
	if (!f)
		return -errno;
	for (size_t i = 0; i < c->nverified; i++) {
		char hex[SHA_HEX_LEN + 1];

		sha_hex(c->verified[i].sha, hex);
		fprintf(f, "%s %" PRIu64 " %" PRIu64 " %" PRId64 "\n", hex,
			c->verified[i].ino, c->verified[i].size,
			c->verified[i].mtime_ns);
	}
	if (fclose(f) != 0 || rename(tmp, path) < 0) {
		int rc = -errno;

		unlink(tmp);
		return rc;
	}
	return 0;
}

/*
 * Check one object file against the size its records give. Returns a
 * PROB_* and, for PROB_NONE, remembers the file for the cache. A file
 * that cannot be read for another reason than ENOENT is reported as
 * corrupt with the reason.
 */
static int check_file(struct check *c, const uint8_t sha[SHA_LEN],
		      uint64_t want, int use_cache, char *why, size_t whylen)
{
	char hex[SHA_HEX_LEN + 1], rel[SHA_HEX_LEN + 4];
	uint8_t got[SHA_LEN];
	struct stat st;
	uint64_t size;
	int fd, rc, result = PROB_NONE;

	why[0] = '\0';
	sha_hex(sha, hex);
	snprintf(rel, sizeof(rel), "%.2s/%s", hex, hex);
	if (c->objects_fd < 0)
		return PROB_MISSING;
	fd = openat(c->objects_fd, rel, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return PROB_MISSING;
		snprintf(why, whylen, "cannot open: %s", strerror(errno));
		return PROB_CORRUPT;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(why, whylen, "not a regular file");
		result = PROB_CORRUPT;
		goto out;
	}
	if ((uint64_t)st.st_size != want) {
		snprintf(why, whylen, "%" PRIu64 " bytes, recorded %" PRIu64,
			 (uint64_t)st.st_size, want);
		result = PROB_BADSIZE;
		goto out;
	}
	if (use_cache) {
		const struct cached *e = cache_find(c, sha);
		int64_t mt = (int64_t)st.st_mtim.tv_sec * 1000000000 +
			st.st_mtim.tv_nsec;

		if (e && e->ino == (uint64_t)st.st_ino && e->size == want &&
		    e->mtime_ns == mt)
			goto ok;
	}
	rc = sha_fd(fd, got, &size);
	if (rc) {
		snprintf(why, whylen, "cannot read: %s", strerror(-rc));
		result = PROB_CORRUPT;
		goto out;
	}
	if (size != want) {
		snprintf(why, whylen, "%" PRIu64 " bytes read, recorded %"
			 PRIu64, size, want);
		result = PROB_BADSIZE;
		goto out;
	}
	if (memcmp(got, sha, SHA_LEN)) {
		char ghex[SHA_HEX_LEN + 1];

		sha_hex(got, ghex);
		snprintf(why, whylen, "content hashes to %s", ghex);
		result = PROB_CORRUPT;
		goto out;
	}
ok:
	c->verified = grow(c->verified, &c->capverified, c->nverified,
			   sizeof(*c->verified));
	memcpy(c->verified[c->nverified].sha, sha, SHA_LEN);
	c->verified[c->nverified].ino = (uint64_t)st.st_ino;
	c->verified[c->nverified].size = want;
	c->verified[c->nverified].mtime_ns =
		(int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
	c->nverified++;
out:
	close(fd);
	return result;
}

/* Is the record r still there, still referring to the same object, in a
 * snapshot taken now? Used to tell a lost object from one released while
 * we looked. An error reading the store counts as "still there". */
static int ref_still_live(struct check *c, struct db_txn *t,
			  const struct ref *r)
{
	const struct job_info *j = &c->jobs[r->job];
	struct job_rec jr;
	struct chunk_rec cr;
	int rc;

	rc = db_job_get(t, j->name, &jr, NULL, NULL);
	if (rc == -ENOENT || (!rc && jr.id != j->id))
		return 0;
	if (rc)
		return 1;
	if (!r->n)
		return jr.has_enc && !memcmp(jr.enc_obj, r->sha, SHA_LEN);
	rc = db_chunk_get(t, j->id, r->n, &cr, NULL);
	if (rc == -ENOENT)
		return 0;
	if (rc)
		return 1;
	return cr.state == CHUNK_DONE && !memcmp(cr.obj, r->sha, SHA_LEN);
}

/*
 * Check the file of every referenced object. A record that disagrees with
 * another about an object's size is itself a badsize problem. Problems
 * are checked once more against a fresh snapshot before they count.
 */
static void check_objects(struct check *c, int use_cache)
{
	struct db_txn *t = NULL;
	size_t nprob = 0;

	for (size_t i = 0; i < c->nrefs;) {
		size_t k = i;
		char why[160];
		int p;

		while (k < c->nrefs &&
		       !memcmp(c->refs[k].sha, c->refs[i].sha, SHA_LEN))
			k++;
		if (c->refs[i].inl) {
			i = k; /* checked in check_records() */
			continue;
		}
		p = check_file(c, c->refs[i].sha, c->refs[i].size, use_cache,
			       why, sizeof(why));
		for (size_t m = i; m < k; m++) {
			c->refs[m].problem = p;
			/* records that disagree about the size: the file
			 * matches at most one of them */
			if (p == PROB_NONE && c->refs[m].size != c->refs[i].size)
				c->refs[m].problem = PROB_BADSIZE;
			if (c->refs[m].problem != PROB_NONE)
				nprob++;
		}
		i = k;
	}
	if (nprob && db_begin(c->db, 0, &t) != 0)
		t = NULL;
	for (size_t i = 0; nprob && i < c->nrefs; i++) {
		struct ref *r = &c->refs[i];
		char hex[SHA_HEX_LEN + 1], who[200], why[160];

		if (r->problem == PROB_NONE)
			continue;
		if (t && !ref_still_live(c, t, r))
			continue;  /* released while we looked */
		sha_hex(r->sha, hex);
		ref_name(c, r, who, sizeof(who));
		/* the reason, again, for this ref's own recorded size */
		switch (check_file(c, r->sha, r->size, 0, why, sizeof(why))) {
		case PROB_NONE:
			/* fixed itself (a publish raced us): not a problem */
			continue;
		case PROB_MISSING:
			fprintf(c->msg, "missing: %s: object %s\n", who, hex);
			c->missing++;
			break;
		case PROB_BADSIZE:
			fprintf(c->msg, "badsize: %s: object %s: %s\n", who,
				hex, why);
			c->badsize++;
			break;
		default:
			fprintf(c->msg, "corrupt: %s: object %s: %s\n", who,
				hex, why);
			c->corrupt++;
			break;
		}
	}
	db_abort(t);
}

/* ---- what lies around the records ----------------------------------- */

/* Report every entry of STORE/name (tmp or scratch). */
static void check_temps(struct check *c, int root, const char *name)
{
	int fd = openat(root, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
			O_CLOEXEC);
	struct dirent *de;
	DIR *d;

	if (fd < 0)
		return;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return;
	}
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		fprintf(c->msg, "tmpfile: %s/%s\n", name, de->d_name);
		c->tmpfiles++;
	}
	closedir(d);
}

static int ref_has(const struct check *c, const uint8_t sha[SHA_LEN])
{
	size_t lo = 0, hi = c->nrefs;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int d = memcmp(c->refs[mid].sha, sha, SHA_LEN);

		if (!d)
			return 1;
		if (d < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

/*
 * Walk every objects/xx/HASH: a file with no objects record is an
 * orphan (garbage a crash may leave, swept at the next start); a record
 * that no chunk of our snapshot refers to is a leaked reference. The walk uses a fresh
 * snapshot, since files appear after the first one was taken.
 */
static void check_orphans(struct check *c)
{
	struct db_txn *t = NULL;
	struct dirent *de;
	DIR *top;
	int fd;

	if (c->objects_fd < 0)
		return;
	if (db_begin(c->db, 0, &t))
		return;
	fd = openat(c->objects_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	top = fd >= 0 ? fdopendir(fd) : NULL;
	if (!top) {
		if (fd >= 0)
			close(fd);
		db_abort(t);
		return;
	}
	while ((de = readdir(top))) {
		struct dirent *e;
		DIR *sub;
		int sfd;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		sfd = openat(c->objects_fd, de->d_name, O_RDONLY |
			     O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		sub = sfd >= 0 ? fdopendir(sfd) : NULL;
		if (!sub) {
			if (sfd >= 0)
				close(sfd);
			fprintf(c->msg, "orphan: objects/%s (not a "
				"directory)\n", de->d_name);
			c->orphans++;
			continue;
		}
		while ((e = readdir(sub))) {
			uint8_t sha[SHA_LEN];
			struct obj_rec o;

			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			if (strlen(de->d_name) != 2 ||
			    sha_unhex(e->d_name, sha) ||
			    memcmp(e->d_name, de->d_name, 2)) {
				fprintf(c->msg, "orphan: objects/%s/%s (not "
					"an object name)\n", de->d_name,
					e->d_name);
				c->orphans++;
			} else if (db_obj_get(t, sha, &o) == -ENOENT) {
				/* referred to by a record: a badrefs
				 * problem, reported already */
				if (ref_has(c, sha))
					continue;
				fprintf(c->msg, "orphan: objects/%s/%s\n",
					de->d_name, e->d_name);
				c->orphans++;
			} else if (!ref_has(c, sha)) {
				fprintf(c->msg, "warning: objects/%s/%s has "
					"a record (refs=%" PRIu64 ") but no "
					"record refers to it\n", de->d_name,
					e->d_name, o.refs);
				c->warnings++;
			}
		}
		closedir(sub);
	}
	closedir(top);
	db_abort(t);
}

/* ---- output ------------------------------------------------------------ */

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

static void print_json(struct check *c)
{
	printf("{\"jobs\": %zu, \"done\": %" PRIu64 ", \"objects\": %" PRIu64
	       ", \"missing\": %" PRIu64 ", \"corrupt\": %" PRIu64
	       ", \"badsize\": %" PRIu64 ", \"badrefs\": %" PRIu64
	       ", \"tmpfiles\": %" PRIu64 ", \"orphans\": %" PRIu64
	       ", \"warnings\": %" PRIu64 ", \"inline\": %" PRIu64,
	       c->njobs, c->done, c->objects, c->missing, c->corrupt,
	       c->badsize, c->badrefs, c->tmpfiles, c->orphans, c->warnings,
	       c->inlined);
	if (c->list) {
		printf(", \"per_job\": {");
		for (size_t i = 0; i < c->njobs; i++) {
			const struct job_info *j = &c->jobs[i];

			printf("%s", i ? ", " : "");
			json_str(stdout, j->name);
			printf(": {\"id\": %" PRIu64 ", \"chunks\": %" PRIu32
			       ", \"done\": %" PRIu32 ", \"failed\": %" PRIu32
			       ", \"pending\": %" PRIu32 "}", j->id,
			       j->nchunks, j->done, j->failed, j->pending);
		}
		qsort(c->refs, c->nrefs, sizeof(*c->refs), cmp_ref_pos);
		printf("}, \"done_chunks\": [");
		for (size_t i = 0, first = 1; i < c->nrefs; i++) {
			char hex[SHA_HEX_LEN + 1];

			if (!c->refs[i].n)
				continue;
			sha_hex(c->refs[i].sha, hex);
			printf("%s[", first ? "" : ", ");
			json_str(stdout, c->jobs[c->refs[i].job].name);
			printf(", %" PRIu32 ", \"%s\", %" PRIu64 ", %s]",
			       c->refs[i].n, hex, c->refs[i].size,
			       c->refs[i].inl ? "true" : "false");
			first = 0;
		}
		printf("]");
	}
	printf("}\n");
}

/* Jobs, then done chunks in job and chunk order. Sorts c->refs, so it
 * comes after every check that relies on their order by object. */
static void print_list(struct check *c)
{
	qsort(c->refs, c->nrefs, sizeof(*c->refs), cmp_ref_pos);
	for (size_t i = 0; i < c->njobs; i++) {
		const struct job_info *j = &c->jobs[i];

		printf("job %s id=%" PRIu64 " chunks=%" PRIu32 " done=%" PRIu32
		       " failed=%" PRIu32 " pending=%" PRIu32 "\n", j->name,
		       j->id, j->nchunks, j->done, j->failed, j->pending);
	}
	for (size_t i = 0; i < c->nrefs; i++) {
		char hex[SHA_HEX_LEN + 1];

		if (!c->refs[i].n)
			continue;
		sha_hex(c->refs[i].sha, hex);
		printf("done %s %" PRIu32 " %s %" PRIu64 "\n",
		       c->jobs[c->refs[i].job].name, c->refs[i].n, hex,
		       c->refs[i].size);
	}
}

static char *default_store(void)
{
	const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
	char *s = NULL;

	if (xdg && xdg[0] == '/') {
		if (asprintf(&s, "%s/jobfs", xdg) < 0)
			s = NULL;
	} else if (home && home[0]) {
		if (asprintf(&s, "%s/.local/state/jobfs", home) < 0)
			s = NULL;
	}
	return s;
}

static void usage(FILE *f)
{
	fprintf(f,
"usage: jobfs-check [--store DIR] [--json] [--list] [--cache FILE]\n\n"
"Check a jobfs store read-only: every done chunk's object exists with its\n"
"recorded size and SHA-256, and every referenced object has a reference\n"
"count that covers its records. Safe while a daemon runs.\n\n"
"    --store DIR   the store (default $XDG_STATE_HOME/jobfs, else\n"
"                  ~/.local/state/jobfs)\n"
"    --json        the figures as one JSON object (problems on stderr)\n"
"    --list        also list jobs and done chunks\n"
"    --cache FILE  skip hashing objects verified by an earlier run that\n"
"                  used the same FILE (same inode, size and mtime)\n\n"
"Exit status: 0 clean, 1 missing/corrupt/badsize/badrefs found, 2 the\n"
"store cannot be read.\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "list", no_argument, NULL, 'l' },
		{ "cache", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct check c;
	const char *cache = NULL;
	char *store = NULL, *owned = NULL, dbdir[4096], err[512] = "";
	int opt, root, rc;

	memset(&c, 0, sizeof(c));
	c.objects_fd = -1;
	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (opt) {
		case 's':
			store = optarg;
			break;
		case 'j':
			c.json = 1;
			break;
		case 'l':
			c.list = 1;
			break;
		case 'c':
			cache = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "jobfs-check: unexpected argument '%s'\n",
			argv[optind]);
		return 2;
	}
	if (!store)
		store = owned = default_store();
	if (!store) {
		fprintf(stderr, "jobfs-check: no store: set HOME or "
			"XDG_STATE_HOME, or give --store DIR\n");
		return 2;
	}
	c.store = store;
	c.msg = c.json ? stderr : stdout;

	root = open(store, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0) {
		fprintf(stderr, "jobfs-check: store '%s': %s\n", store,
			strerror(errno));
		return 2;
	}
	snprintf(dbdir, sizeof(dbdir), "%s/db", store);
	rc = db_open(dbdir, 1, &c.db, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "jobfs-check: store '%s': cannot open its "
			"database: %s\n", store, err[0] ? err : strerror(-rc));
		close(root);
		return 2;
	}
	c.objects_fd = openat(root, "objects", O_RDONLY | O_DIRECTORY |
			      O_NOFOLLOW | O_CLOEXEC);

	rc = check_records(&c);
	if (rc) {
		fprintf(stderr, "jobfs-check: store '%s': cannot read its "
			"records: %s\n", store, strerror(-rc));
		db_close(c.db);
		close(root);
		return 2;
	}
	if (cache)
		cache_load(&c, cache);
	check_objects(&c, cache != NULL);
	check_temps(&c, root, "tmp");
	check_temps(&c, root, "scratch");
	check_orphans(&c);
	if (cache && (rc = cache_save(&c, cache)))
		fprintf(stderr, "jobfs-check: cannot write cache '%s': %s\n",
			cache, strerror(-rc));

	if (c.json) {
		print_json(&c);
	} else {
		if (c.list)
			print_list(&c);
		printf("jobfs-check: jobs=%zu done=%" PRIu64 " objects=%" PRIu64
		       " missing=%" PRIu64 " corrupt=%" PRIu64 " badsize=%"
		       PRIu64 " badrefs=%" PRIu64 " tmpfiles=%" PRIu64
		       " orphans=%" PRIu64 " inline=%" PRIu64 "\n", c.njobs,
		       c.done, c.objects, c.missing, c.corrupt, c.badsize,
		       c.badrefs, c.tmpfiles, c.orphans, c.inlined);
	}
	fflush(stdout);

	db_close(c.db);
	if (c.objects_fd >= 0)
		close(c.objects_fd);
	close(root);
	free(c.jobs);
	free(c.refs);
	free(c.cache);
	free(c.verified);
	free(owned);
	return (c.missing + c.corrupt + c.badsize + c.badrefs) ? 1 : 0;
}
