/*
 * db.c - the LMDB schema behind every job (see db.h for the layout).
 *
 * Records are fixed C structs copied in and out with memcpy (LMDB gives no
 * alignment guarantee for values), followed by a variable tail. The store
 * belongs to one machine, so host byte order is fine for values; keys are
 * big-endian so that cursors walk chunks in order.
 */
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lmdb.h>

#include "db.h"

/* The map starts at 1 GiB of address space and doubles when it is three
 * quarters used (db_maybe_grow): the file itself only grows as data is
 * written. */
#define DB_MAPSIZE ((size_t)1 << 30)
#define DB_MAXREADERS 1024

struct db {
	MDB_env *env;
	MDB_dbi meta, jobs, chunks, objects;
	uint64_t mapsize;
	/* Held for the life of every write transaction, and while the map
	 * is resized: a resize never races a writer, whichever thread it
	 * runs in (see db_begin_nogrow). */
	pthread_mutex_t wlock;
};

struct db_txn {
	struct db *db;
	MDB_txn *txn;
	int write;
	/* objects whose count reached 0 in this transaction: their records
	 * stay (with their inline bytes) until the commit, so that a +1
	 * later in the same transaction finds them (a new plan releases
	 * every old chunk, then takes the ones it reuses) */
	uint8_t (*zero)[SHA_LEN];
	size_t nzero, capzero;
};

/* Set when a transaction of this thread ran out of map. */
static __thread int map_full_seen;

/* The one place where LMDB's codes become negative errnos. */
static int db_err(int rc)
{
	switch (rc) {
	case MDB_SUCCESS:
		return 0;
	case MDB_NOTFOUND:
		return -ENOENT;
	case MDB_KEYEXIST:
		return -EEXIST;
	case MDB_MAP_FULL:
		map_full_seen = 1;
		return -ENOSPC;
	case MDB_READERS_FULL:
		return -EAGAIN;
	default:
		if (rc > 0 && rc < MDB_KEYEXIST)
			return -rc; /* a plain errno */
		return -EIO;
	}
}

int db_open(const char *dir, int readonly, struct db **out,
	    char *err, size_t errlen)
{
	struct db *db;
	MDB_txn *txn = NULL;
	unsigned int flags = MDB_NOTLS | (readonly ? MDB_RDONLY : 0);
#ifdef JOBFS_MUTANT_NOSYNC
	/* a deliberately broken build: the power-loss and persistence-order
	 * suites must catch it */
	flags |= MDB_NOSYNC;
#endif
	unsigned int dflags = readonly ? 0 : MDB_CREATE;
	int rc, dead = 0;

	db = calloc(1, sizeof(*db));
	if (!db)
		return -ENOMEM;
	pthread_mutex_init(&db->wlock, NULL);
	rc = mdb_env_create(&db->env);
	if (rc)
		goto fail_free;
	mdb_env_set_mapsize(db->env, DB_MAPSIZE);
	db->mapsize = DB_MAPSIZE;
	mdb_env_set_maxdbs(db->env, 8);
	mdb_env_set_maxreaders(db->env, DB_MAXREADERS);
	rc = mdb_env_open(db->env, dir, flags, 0600);
	if (rc)
		goto fail_env;
	if (!readonly) {
		/* data.mdb may have just been created: its name must be
		 * durable before a commit in it is acknowledged */
		int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		if (dfd < 0 || fsync(dfd) < 0) {
			rc = errno;
			if (dfd >= 0)
				close(dfd);
			goto fail_env;
		}
		close(dfd);
	}
	{
		MDB_envinfo info;

		/* an existing environment keeps the larger map it grew to */
		if (mdb_env_info(db->env, &info) == 0)
			db->mapsize = info.me_mapsize;
	}
	mdb_reader_check(db->env, &dead);

	rc = mdb_txn_begin(db->env, NULL, readonly ? MDB_RDONLY : 0, &txn);
	if (rc)
		goto fail_env;
	if ((rc = mdb_dbi_open(txn, "meta", dflags, &db->meta)) ||
	    (rc = mdb_dbi_open(txn, "jobs", dflags, &db->jobs)) ||
	    (rc = mdb_dbi_open(txn, "chunks", dflags, &db->chunks)) ||
	    (rc = mdb_dbi_open(txn, "objects", dflags, &db->objects)))
		goto fail_txn;
	if (!readonly) {
		MDB_val k = { 7, "version" }, v;
		uint32_t ver = DB_VERSION;

		rc = mdb_get(txn, db->meta, &k, &v);
		if (rc == MDB_NOTFOUND) {
			v.mv_size = sizeof(ver);
			v.mv_data = &ver;
			rc = mdb_put(txn, db->meta, &k, &v, 0);
		} else if (rc == 0) {
			if (v.mv_size != sizeof(ver))
				rc = EINVAL;
			else
				memcpy(&ver, v.mv_data, sizeof(ver));
			if (!rc && (ver > DB_VERSION ||
				    ver < DB_VERSION_OLDEST)) {
				snprintf(err, errlen, "store format %u, this "
					 "jobfs reads %u to %u", ver,
					 DB_VERSION_OLDEST, DB_VERSION);
				rc = EPROTO;
			} else if (!rc && ver < DB_VERSION) {
				/* an older store is a valid newer one; mark
				 * it, so that an older jobfs refuses it
				 * once it may hold what it cannot read */
				ver = DB_VERSION;
				v.mv_size = sizeof(ver);
				v.mv_data = &ver;
				rc = mdb_put(txn, db->meta, &k, &v, 0);
			}
		}
		if (rc)
			goto fail_txn;
	}
	/* Commit even a read-only transaction: LMDB closes handles opened
	 * in a transaction that is aborted. */
	rc = mdb_txn_commit(txn);
	txn = NULL;
	if (rc)
		goto fail_env;
	*out = db;
	return 0;

fail_txn:
	mdb_txn_abort(txn);
fail_env:
	if (!err[0] || rc != EPROTO)
		snprintf(err, errlen, "lmdb: %s", mdb_strerror(rc));
	mdb_env_close(db->env);
fail_free:
	free(db);
	return db_err(rc);
}

void db_close(struct db *db)
{
	if (!db)
		return;
	mdb_env_close(db->env);
	pthread_mutex_destroy(&db->wlock);
	free(db);
}

int db_fd(struct db *db)
{
	mdb_filehandle_t fd = -1;

	mdb_env_get_fd(db->env, &fd);
	return fd;
}

int db_map_was_full(void)
{
	int seen = map_full_seen;

	map_full_seen = 0;
	return seen;
}

static int set_mapsize(struct db *db, uint64_t bytes)
{
	int rc = mdb_env_set_mapsize(db->env, (size_t)bytes);

	if (!rc)
		db->mapsize = bytes;
	return db_err(rc);
}

int db_grow(struct db *db)
{
	int rc;

	pthread_mutex_lock(&db->wlock);
	rc = set_mapsize(db, db->mapsize * 2);
	pthread_mutex_unlock(&db->wlock);
	return rc;
}

int db_set_mapsize(struct db *db, uint64_t bytes)
{
	int rc;

	pthread_mutex_lock(&db->wlock);
	rc = set_mapsize(db, bytes);
	pthread_mutex_unlock(&db->wlock);
	return rc;
}

/*
 * Before a write transaction (db->wlock held): when the map is more than
 * three quarters used, double it. LMDB allows this only while the process
 * has no other transaction open: the caller of db_begin() excludes
 * readers (the engine opens read transactions under its lock, and calls
 * db_begin() for writing with it held), and wlock excludes a writer.
 */
static void db_maybe_grow(struct db *db)
{
	MDB_envinfo info;
	MDB_stat st;

	if (mdb_env_info(db->env, &info) || mdb_env_stat(db->env, &st))
		return;
	if ((uint64_t)(info.me_last_pgno + 1) * st.ms_psize * 4 <
	    (uint64_t)info.me_mapsize * 3)
		return;
	set_mapsize(db, (uint64_t)info.me_mapsize * 2);
}

static int begin(struct db *db, int write, int grow, struct db_txn **out)
{
	struct db_txn *t;
	int rc;

	*out = NULL; /* so that db_abort(*out) is always safe */
	t = malloc(sizeof(*t));
	if (!t)
		return -ENOMEM;
	if (write) {
		pthread_mutex_lock(&db->wlock);
		if (grow)
			db_maybe_grow(db);
	}
	t->db = db;
	t->write = write;
	t->zero = NULL;
	t->nzero = t->capzero = 0;
	rc = mdb_txn_begin(db->env, NULL, write ? 0 : MDB_RDONLY, &t->txn);
	if (rc == MDB_MAP_RESIZED) {
		/* another process (the daemon, for jobfs-check) grew it */
		mdb_env_set_mapsize(db->env, 0);
		rc = mdb_txn_begin(db->env, NULL, write ? 0 : MDB_RDONLY,
				   &t->txn);
	}
	if (rc) {
		if (write)
			pthread_mutex_unlock(&db->wlock);
		free(t);
		return db_err(rc);
	}
	*out = t;
	return 0;
}

int db_begin(struct db *db, int write, struct db_txn **out)
{
	return begin(db, write, 1, out);
}

int db_begin_nogrow(struct db *db, struct db_txn **out)
{
	return begin(db, 1, 0, out);
}

static int obj_val(const MDB_val *v, struct obj_rec *out);

/* Remove the objects records left at 0 references (struct db_txn). */
static int drop_zero_refs(struct db_txn *t)
{
	for (size_t i = 0; i < t->nzero; i++) {
		MDB_val k = { SHA_LEN, t->zero[i] }, v;
		struct obj_rec r;
		int rc = mdb_get(t->txn, t->db->objects, &k, &v);

		if (rc == MDB_NOTFOUND)
			continue; /* listed twice */
		if (rc)
			return db_err(rc);
		rc = obj_val(&v, &r);
		if (rc)
			return rc;
		if (r.refs == 0) {
			rc = mdb_del(t->txn, t->db->objects, &k, NULL);
			if (rc)
				return db_err(rc);
		}
	}
	return 0;
}

int db_commit(struct db_txn *t)
{
	int rc = t->nzero ? drop_zero_refs(t) : 0;

	if (rc)
		mdb_txn_abort(t->txn);
	else
		rc = db_err(mdb_txn_commit(t->txn));
	if (t->write)
		pthread_mutex_unlock(&t->db->wlock);
	free(t->zero);
	free(t);
	return rc;
}

void db_abort(struct db_txn *t)
{
	if (!t)
		return;
	mdb_txn_abort(t->txn);
	if (t->write)
		pthread_mutex_unlock(&t->db->wlock);
	free(t->zero);
	free(t);
}

int db_next_job_id(struct db_txn *t, uint64_t *out)
{
	MDB_val k = { 11, "next_job_id" }, v;
	uint64_t id = 1;
	int rc;

	rc = mdb_get(t->txn, t->db->meta, &k, &v);
	if (rc == 0 && v.mv_size == sizeof(id))
		memcpy(&id, v.mv_data, sizeof(id));
	else if (rc && rc != MDB_NOTFOUND)
		return db_err(rc);
	*out = id;
	id++;
	v.mv_size = sizeof(id);
	v.mv_data = &id;
	return db_err(mdb_put(t->txn, t->db->meta, &k, &v, 0));
}

static int job_decode(const MDB_val *v, struct job_rec *r,
		      const char **spec, size_t *speclen)
{
	if (v->mv_size < sizeof(*r))
		return -EIO;
	memcpy(r, v->mv_data, sizeof(*r));
	*spec = (const char *)v->mv_data + sizeof(*r);
	*speclen = v->mv_size - sizeof(*r);
	return 0;
}

int db_job_get(struct db_txn *t, const char *name, struct job_rec *out,
	       char **spec_out, size_t *speclen_out)
{
	MDB_val k = { strlen(name), (void *)name }, v;
	const char *spec;
	size_t speclen;
	int rc;

	rc = db_err(mdb_get(t->txn, t->db->jobs, &k, &v));
	if (rc)
		return rc;
	rc = job_decode(&v, out, &spec, &speclen);
	if (rc)
		return rc;
	if (spec_out) {
		*spec_out = NULL;
		if (speclen) {
			*spec_out = malloc(speclen + 1);
			if (!*spec_out)
				return -ENOMEM;
			memcpy(*spec_out, spec, speclen);
			(*spec_out)[speclen] = '\0';
		}
	}
	if (speclen_out)
		*speclen_out = speclen;
	return 0;
}

int db_job_put(struct db_txn *t, const char *name, const struct job_rec *r,
	       const char *spec, size_t speclen)
{
	MDB_val k = { strlen(name), (void *)name }, v;
	int rc;

	v.mv_size = sizeof(*r) + speclen;
	rc = mdb_put(t->txn, t->db->jobs, &k, &v, MDB_RESERVE);
	if (rc)
		return db_err(rc);
	memcpy(v.mv_data, r, sizeof(*r));
	if (speclen)
		memcpy((char *)v.mv_data + sizeof(*r), spec, speclen);
	return 0;
}

int db_job_del(struct db_txn *t, const char *name)
{
	MDB_val k = { strlen(name), (void *)name };

	return db_err(mdb_del(t->txn, t->db->jobs, &k, NULL));
}

int db_job_iter(struct db_txn *t, db_job_fn fn, void *arg)
{
	MDB_cursor *c;
	MDB_val k, v;
	char name[512];
	int rc, op = MDB_FIRST;

	rc = mdb_cursor_open(t->txn, t->db->jobs, &c);
	if (rc)
		return db_err(rc);
	while ((rc = mdb_cursor_get(c, &k, &v, op)) == 0) {
		struct job_rec r;
		const char *spec;
		size_t speclen;

		op = MDB_NEXT;
		if (k.mv_size >= sizeof(name) || job_decode(&v, &r, &spec,
							    &speclen))
			continue; /* not ours; db_check reports it */
		memcpy(name, k.mv_data, k.mv_size);
		name[k.mv_size] = '\0';
		rc = fn(arg, name, &r, spec, speclen);
		if (rc) {
			mdb_cursor_close(c);
			return rc;
		}
	}
	mdb_cursor_close(c);
	return rc == MDB_NOTFOUND ? 0 : db_err(rc);
}

static void chunk_key(uint8_t key[12], uint64_t job, uint32_t n)
{
	for (int i = 0; i < 8; i++)
		key[i] = (uint8_t)(job >> (56 - 8 * i));
	for (int i = 0; i < 4; i++)
		key[8 + i] = (uint8_t)(n >> (24 - 8 * i));
}

static uint64_t key_job(const uint8_t *key)
{
	uint64_t job = 0;

	for (int i = 0; i < 8; i++)
		job = job << 8 | key[i];
	return job;
}

static uint32_t key_chunk(const uint8_t *key)
{
	uint32_t n = 0;

	for (int i = 8; i < 12; i++)
		n = n << 8 | key[i];
	return n;
}

int db_chunk_get(struct db_txn *t, uint64_t job, uint32_t n,
		 struct chunk_rec *out, char *err_out)
{
	uint8_t key[12];
	MDB_val k = { sizeof(key), key }, v;
	int rc;

	chunk_key(key, job, n);
	rc = db_err(mdb_get(t->txn, t->db->chunks, &k, &v));
	if (rc)
		return rc;
	if (v.mv_size < sizeof(*out))
		return -EIO;
	memcpy(out, v.mv_data, sizeof(*out));
	if (err_out) {
		size_t len = v.mv_size - sizeof(*out);

		if (len > DB_ERR_MAX)
			len = DB_ERR_MAX;
		memcpy(err_out, (char *)v.mv_data + sizeof(*out), len);
		err_out[len] = '\0';
	}
	return 0;
}

int db_chunk_put(struct db_txn *t, uint64_t job, uint32_t n,
		 const struct chunk_rec *r, const char *err)
{
	uint8_t key[12];
	MDB_val k = { sizeof(key), key }, v;
	size_t elen = err ? strnlen(err, DB_ERR_MAX) : 0;
	int rc;

	chunk_key(key, job, n);
	v.mv_size = sizeof(*r) + elen;
	rc = mdb_put(t->txn, t->db->chunks, &k, &v, MDB_RESERVE);
	if (rc)
		return db_err(rc);
	memcpy(v.mv_data, r, sizeof(*r));
	if (elen)
		memcpy((char *)v.mv_data + sizeof(*r), err, elen);
	return 0;
}

/*
 * Give back the pages of the map a walk went through: a walk over a
 * million records touches every page of data.mdb, and each page read
 * through the map counts in the daemon's resident size until the kernel
 * reclaims it. The map is read-only and shared (never MDB_WRITEMAP), so
 * this only drops our page table entries for [lo, hi]; the pages stay in
 * the page cache, and a pointer into the map faults its page back in.
 * (LMDB does not tell where its map is, but every record it hands out
 * points into it.)
 */
#define DROP_EVERY 65536

static void drop_map_pages(struct db *db, const char *lo, const char *hi)
{
	unsigned flags;
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t a = (uintptr_t)lo & ~(page - 1);

	if (!lo || mdb_env_get_flags(db->env, &flags) || (flags & MDB_WRITEMAP))
		return;
	madvise((void *)a, (uintptr_t)hi - a + 1, MADV_DONTNEED);
}

void db_drop_map(struct db *db)
{
	char line[4608];
	unsigned flags;
	struct stat st;
	FILE *f;
	int fd;

	if (mdb_env_get_flags(db->env, &flags) || (flags & MDB_WRITEMAP) ||
	    mdb_env_get_fd(db->env, &fd) || fstat(fd, &st) < 0)
		return;
	/* wlock: no resize moves the map while its range is in use here */
	pthread_mutex_lock(&db->wlock);
	f = fopen("/proc/self/maps", "re");
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long lo, hi, off, ino;
		unsigned maj, mnr;
		char perms[8];
		const char *name;
		size_t len = strlen(line);

		if (len && line[len - 1] == '\n')
			line[--len] = '\0';
		name = strrchr(line, '/');
		if (sscanf(line, "%lx-%lx %7s %lx %x:%x %lu", &lo, &hi, perms,
			   &off, &maj, &mnr, &ino) != 7 || ino != st.st_ino ||
		    !name || strcmp(name, "/data.mdb"))
			continue;
		/* only a shared mapping that we cannot write: dropping its
		 * page table entries loses nothing, a read faults the page
		 * back from the file */
		if (perms[0] != 'r' || perms[1] != '-' || perms[3] != 's')
			continue;
		madvise((void *)lo, hi - lo, MADV_DONTNEED);
	}
	if (f)
		fclose(f);
	pthread_mutex_unlock(&db->wlock);
}

int db_chunk_iter(struct db_txn *t, uint64_t job, uint32_t from,
		  db_chunk_fn fn, void *arg)
{
	uint8_t key[12];
	MDB_val k = { sizeof(key), key }, v;
	MDB_cursor *c;
	int rc, op = MDB_SET_RANGE;
	uint32_t seen = 0;
	const char *lo = NULL, *hi = NULL;

	chunk_key(key, job, from);
	rc = mdb_cursor_open(t->txn, t->db->chunks, &c);
	if (rc)
		return db_err(rc);
	for (;;) {
		struct chunk_rec r;

		rc = mdb_cursor_get(c, &k, &v, op);
		op = MDB_NEXT;
		if (rc) {
			rc = rc == MDB_NOTFOUND ? 0 : db_err(rc);
			break;
		}
		if (k.mv_size != 12 || key_job(k.mv_data) != job)
			break;
		if (v.mv_size < sizeof(r)) {
			rc = -EIO;
			break;
		}
		memcpy(&r, v.mv_data, sizeof(r));
		rc = fn(arg, key_chunk(k.mv_data), &r,
			(const char *)v.mv_data + sizeof(r),
			v.mv_size - sizeof(r));
		if (rc)
			break;
		if (!lo || (const char *)v.mv_data < lo)
			lo = v.mv_data;
		if ((const char *)v.mv_data + v.mv_size - 1 > hi)
			hi = (const char *)v.mv_data + v.mv_size - 1;
		if (++seen % DROP_EVERY == 0 && !(t->write)) {
			drop_map_pages(t->db, lo, hi);
			lo = hi = NULL;
		}
	}
	mdb_cursor_close(c);
	if (seen >= DROP_EVERY && !(t->write))
		drop_map_pages(t->db, lo, hi);
	return rc;
}

int db_chunk_del_all(struct db_txn *t, uint64_t job)
{
	uint8_t key[12];
	MDB_val k = { sizeof(key), key }, v;
	MDB_cursor *c;
	int rc;

	chunk_key(key, job, 0);
	rc = mdb_cursor_open(t->txn, t->db->chunks, &c);
	if (rc)
		return db_err(rc);
	for (;;) {
		/* Seek afresh after each delete rather than trust where
		 * LMDB leaves the cursor at a page boundary. */
		k.mv_size = sizeof(key);
		k.mv_data = key;
		rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
		if (rc || k.mv_size != 12 || key_job(k.mv_data) != job)
			break;
		rc = mdb_cursor_del(c, 0);
		if (rc)
			break;
	}
	mdb_cursor_close(c);
	return rc == MDB_NOTFOUND || rc == 0 ? 0 : db_err(rc);
}

/* An objects value: the record, then nothing or exactly size bytes. */
static int obj_val(const MDB_val *v, struct obj_rec *out)
{
	if (v->mv_size < sizeof(*out))
		return -EIO;
	memcpy(out, v->mv_data, sizeof(*out));
	if (v->mv_size != sizeof(*out) &&
	    v->mv_size - sizeof(*out) != out->size)
		return -EIO;
	return 0;
}

int db_obj_get(struct db_txn *t, const uint8_t sha[SHA_LEN],
	       struct obj_rec *out)
{
	MDB_val k = { SHA_LEN, (void *)sha }, v;
	int rc = db_err(mdb_get(t->txn, t->db->objects, &k, &v));

	return rc ? rc : obj_val(&v, out);
}

int db_obj_inline(struct db_txn *t, const uint8_t sha[SHA_LEN],
		  const void **data, size_t *len)
{
	MDB_val k = { SHA_LEN, (void *)sha }, v;
	struct obj_rec r;
	int rc = db_err(mdb_get(t->txn, t->db->objects, &k, &v));

	if (!rc)
		rc = obj_val(&v, &r);
	if (rc)
		return rc;
	/* an empty object needs no file: it is always "inline" */
	if (v.mv_size == sizeof(r) && r.size)
		return -ENODATA;
	*data = (const char *)v.mv_data + sizeof(r);
	*len = v.mv_size - sizeof(r);
	return 0;
}

int db_obj_ref_inline(struct db_txn *t, const uint8_t sha[SHA_LEN],
		      uint64_t size, const void *data, int delta,
		      uint64_t *refs_out)
{
	MDB_val k = { SHA_LEN, (void *)sha }, v;
	struct obj_rec r = { 0, size };
	const void *tail = data;
	size_t tlen = data ? (size_t)size : 0;
	int rc;

	if (data && size > DB_INLINE_MAX)
		return -EINVAL;
	rc = db_err(mdb_get(t->txn, t->db->objects, &k, &v));
	if (!rc) {
		rc = obj_val(&v, &r);
		if (rc)
			return rc;
		/* keep what the record holds */
		tail = (const char *)v.mv_data + sizeof(r);
		tlen = v.mv_size - sizeof(r);
	} else if (rc != -ENOENT) {
		return rc;
	}
	if (delta < 0 && r.refs < (uint64_t)-delta)
		return -EIO; /* would go negative: the counts are wrong */
	r.refs += (uint64_t)(int64_t)delta;
	if (refs_out)
		*refs_out = r.refs;
	if (r.refs == 0) {
		if (rc == -ENOENT)
			return 0;
		/* kept at 0 until the commit (drop_zero_refs) */
		if (t->nzero == t->capzero) {
			size_t cap = t->capzero ? t->capzero * 2 : 16;
			void *p = realloc(t->zero, cap * SHA_LEN);

			if (!p)
				return -ENOMEM;
			t->zero = p;
			t->capzero = cap;
		}
		memcpy(t->zero[t->nzero++], sha, SHA_LEN);
	}
	if (!tlen) {
		v.mv_size = sizeof(r);
		v.mv_data = &r;
		return db_err(mdb_put(t->txn, t->db->objects, &k, &v, 0));
	}
	{
		/* the old value may sit on a page this put rewrites: copy
		 * it out first */
		char buf[sizeof(r) + DB_INLINE_MAX];

		if (tlen > DB_INLINE_MAX)
			return -EIO;
		memcpy(buf, &r, sizeof(r));
		memmove(buf + sizeof(r), tail, tlen);
		v.mv_size = sizeof(r) + tlen;
		v.mv_data = buf;
		return db_err(mdb_put(t->txn, t->db->objects, &k, &v, 0));
	}
}

int db_obj_ref(struct db_txn *t, const uint8_t sha[SHA_LEN], uint64_t size,
	       int delta, uint64_t *refs_out)
{
	return db_obj_ref_inline(t, sha, size, NULL, delta, refs_out);
}

int db_stat(struct db *db, uint64_t *map_bytes, uint64_t *chunk_records)
{
	MDB_envinfo info;
	MDB_stat st;
	MDB_txn *txn;
	int rc;

	rc = mdb_env_info(db->env, &info);
	if (rc)
		return db_err(rc);
	rc = mdb_env_stat(db->env, &st);
	if (rc)
		return db_err(rc);
	*map_bytes = (uint64_t)(info.me_last_pgno + 1) * st.ms_psize;
	rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &txn);
	if (rc)
		return db_err(rc);
	rc = mdb_stat(txn, db->chunks, &st);
	mdb_txn_abort(txn);
	if (rc)
		return db_err(rc);
	*chunk_records = st.ms_entries;
	return 0;
}
