/*
 * test_store.c - the LMDB schema (db.c), the object store (objects.c) and
 * SHA-256 (sha.c), on a real store in a temp directory.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lmdb.h>

#include "check.h"
#include "db.h"
#include "objects.h"
#include "sha.h"

static char root[256];

static void test_sha(void)
{
	uint8_t d[SHA_LEN], back[SHA_LEN];
	char hex[SHA_HEX_LEN + 1];
	uint64_t size;
	int fd;

	sha_buf("abc", 3, d);
	sha_hex(d, hex);
	CHECK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223"
		      "b00361a396177a9cb410ff61f20015ad"));
	CHECK(sha_unhex(hex, back) == 0 && !memcmp(back, d, SHA_LEN));
	CHECK(sha_unhex("zz", back) == -EINVAL);

	fd = open("/tmp", O_TMPFILE | O_RDWR, 0600);
	CHECK(fd >= 0);
	CHECK(write(fd, "abc", 3) == 3);
	CHECK(sha_fd(fd, back, &size) == 0);
	CHECK_EQ_U64(size, 3);
	CHECK(!memcmp(back, d, SHA_LEN));
	close(fd);
}

struct seen {
	uint32_t n[16];
	size_t count;
};

static int note_chunk(void *arg, uint32_t n, const struct chunk_rec *r,
		      const char *err, size_t errlen)
{
	struct seen *s = arg;

	(void)r;
	(void)err;
	(void)errlen;
	if (s->count < 16)
		s->n[s->count++] = n;
	return 0;
}

static int count_job(void *arg, const char *name, const struct job_rec *r,
		     const char *spec, size_t speclen)
{
	(void)name;
	(void)r;
	(void)spec;
	(void)speclen;
	(*(int *)arg)++;
	return 0;
}

static void test_db(void)
{
	char dir[300], err[256] = "", *spec = NULL;
	struct db *db;
	struct db_txn *t;
	struct job_rec jr = { 0 }, jr2;
	struct chunk_rec cr = { 0 }, cr2;
	struct obj_rec orec;
	struct seen seen = { { 0 }, 0 };
	uint8_t obj[SHA_LEN];
	uint64_t id1, id2, refs;
	size_t speclen = 0;
	char e2[DB_ERR_MAX + 1];
	int jobs = 0;

	snprintf(dir, sizeof(dir), "%s/db", root);
	CHECK(mkdir(dir, 0700) == 0);
	CHECK(db_open(dir, 0, &db, err, sizeof(err)) == 0);
	CHECK(db_fd(db) >= 0);

	/* jobs and ids */
	CHECK(db_begin(db, 1, &t) == 0);
	CHECK(db_next_job_id(t, &id1) == 0);
	CHECK(db_next_job_id(t, &id2) == 0);
	CHECK_EQ_U64(id2, id1 + 1);
	jr.id = id1;
	jr.nchunks = 3;
	CHECK(db_job_put(t, "ch1", &jr, "{\"command\":\"cat\"}", 17) == 0);
	jr.id = id2;
	CHECK(db_job_put(t, "ch2", &jr, NULL, 0) == 0);

	/* chunks of two jobs: the cursor must not cross from one to the
	 * other, and order is numeric (big-endian keys), 2 before 10 */
	for (uint32_t n = 1; n <= 3; n++) {
		cr.start = n * 10;
		CHECK(db_chunk_put(t, id1, n == 3 ? 10 : n, &cr,
				   n == 2 ? "exit 3" : NULL) == 0);
	}
	CHECK(db_chunk_put(t, id2, 1, &cr, NULL) == 0);
	CHECK(db_commit(t) == 0);

	CHECK(db_begin(db, 0, &t) == 0);
	CHECK(db_job_get(t, "ch1", &jr2, &spec, &speclen) == 0);
	CHECK_EQ_U64(jr2.id, id1);
	CHECK(spec && !strcmp(spec, "{\"command\":\"cat\"}"));
	CHECK_EQ_U64(speclen, 17);
	free(spec);
	CHECK(db_job_get(t, "nope", &jr2, NULL, NULL) == -ENOENT);
	CHECK(db_job_iter(t, count_job, &jobs) == 0);
	CHECK(jobs == 2);
	CHECK(db_chunk_iter(t, id1, 1, note_chunk, &seen) == 0);
	CHECK_EQ_U64(seen.count, 3);
	CHECK(seen.n[0] == 1 && seen.n[1] == 2 && seen.n[2] == 10);
	CHECK(db_chunk_get(t, id1, 2, &cr2, e2) == 0);
	CHECK(!strcmp(e2, "exit 3"));
	CHECK_EQ_U64(cr2.start, 20);
	db_abort(t);

	/* delete all of one job's chunks; the other keeps its own */
	CHECK(db_begin(db, 1, &t) == 0);
	CHECK(db_chunk_del_all(t, id1) == 0);
	CHECK(db_commit(t) == 0);
	CHECK(db_begin(db, 0, &t) == 0);
	seen.count = 0;
	CHECK(db_chunk_iter(t, id1, 1, note_chunk, &seen) == 0);
	CHECK_EQ_U64(seen.count, 0);
	CHECK(db_chunk_iter(t, id2, 1, note_chunk, &seen) == 0);
	CHECK_EQ_U64(seen.count, 1);
	db_abort(t);

	/* reference counts: created at +1, deleted at 0 (when the
	 * transaction commits), never negative */
	sha_buf("x", 1, obj);
	CHECK(db_begin(db, 1, &t) == 0);
	CHECK(db_obj_ref(t, obj, 1, +1, &refs) == 0 && refs == 1);
	CHECK(db_obj_ref(t, obj, 1, +1, &refs) == 0 && refs == 2);
	CHECK(db_obj_ref(t, obj, 1, -1, &refs) == 0 && refs == 1);
	CHECK(db_obj_get(t, obj, &orec) == 0 && orec.size == 1);
	CHECK(db_obj_ref(t, obj, 1, -1, &refs) == 0 && refs == 0);
	CHECK(db_obj_get(t, obj, &orec) == 0 && orec.refs == 0);
	CHECK(db_obj_ref(t, obj, 1, -1, &refs) == -EIO);
	CHECK(db_commit(t) == 0);
	CHECK(db_begin(db, 0, &t) == 0);
	CHECK(db_obj_get(t, obj, &orec) == -ENOENT);
	db_abort(t);

	/* an aborted transaction leaves nothing; a committed one survives
	 * close and reopen */
	CHECK(db_begin(db, 1, &t) == 0);
	CHECK(db_job_del(t, "ch2") == 0);
	db_abort(t);
	db_close(db);
	CHECK(db_open(dir, 1, &db, err, sizeof(err)) == 0);
	CHECK(db_begin(db, 0, &t) == 0);
	{
		int rc = db_job_get(t, "ch2", &jr2, NULL, NULL);

		if (rc)
			fprintf(stderr, "reopen: %d\n", rc);
		CHECK(rc == 0);
	}
	db_abort(t);
	db_close(db);
}

static int live_if_first_byte_a(void *arg, const uint8_t sha[SHA_LEN])
{
	const uint8_t *keep = arg;

	return !memcmp(sha, keep, SHA_LEN);
}

static void test_objects(void)
{
	struct objstore os;
	char err[256] = "", name[600], path[512];
	uint8_t sha[SHA_LEN], sha2[SHA_LEN], want[SHA_LEN];
	uint64_t size;
	struct stat st;
	int fd, fd2;

	snprintf(path, sizeof(path), "%s/store", root);
	CHECK(objstore_open(path, &os, err, sizeof(err)) == 0);
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0700);

	CHECK(objstore_tmp_create(&os, "out", name, sizeof(name), &fd) == 0);
	CHECK(write(fd, "hello", 5) == 5);
	CHECK(objstore_publish(&os, fd, os.tmp, name, sha, &size) == 0);
	close(fd);
	sha_buf("hello", 5, want);
	CHECK(!memcmp(sha, want, SHA_LEN));
	CHECK_EQ_U64(size, 5);
	CHECK(faccessat(os.tmp, name, F_OK, 0) < 0); /* renamed away */
	CHECK(objstore_open_obj(&os, sha, &fd) == 0);
	{
		char buf[8] = "";

		CHECK(read(fd, buf, sizeof(buf)) == 5 && !memcmp(buf, "hello",
								   5));
	}
	close(fd);

	/* the same bytes again: one object */
	CHECK(objstore_tmp_create(&os, "out", name, sizeof(name), &fd) == 0);
	CHECK(write(fd, "hello", 5) == 5);
	CHECK(objstore_publish(&os, fd, os.tmp, name, sha2, &size) == 0);
	close(fd);
	CHECK(!memcmp(sha, sha2, SHA_LEN));

	/* another object, then a sweep that keeps only the first */
	CHECK(objstore_tmp_create(&os, "out", name, sizeof(name), &fd2) == 0);
	CHECK(write(fd2, "other", 5) == 5);
	CHECK(objstore_publish(&os, fd2, os.tmp, name, sha2, &size) == 0);
	close(fd2);
	CHECK(objstore_sweep(&os, live_if_first_byte_a, sha) == 1);
	CHECK(objstore_open_obj(&os, sha, &fd) == 0);
	close(fd);
	CHECK(objstore_open_obj(&os, sha2, &fd) == -ENOENT);
	CHECK(objstore_unlink_obj(&os, sha2) == 0); /* missing is fine */

	/* temp files and scratch trees go at startup */
	CHECK(objstore_tmp_create(&os, "out", name, sizeof(name), &fd) == 0);
	close(fd);
	CHECK(mkdirat(os.scratch, "w1", 0700) == 0);
	CHECK(mkdirat(os.scratch, "w1/deep", 0500) == 0);
	CHECK(objstore_clear_temps(&os) == 2);
	CHECK(faccessat(os.scratch, "w1", F_OK, 0) < 0);
	objstore_close(&os);

	/* a store writable by others, or a symlink, is refused */
	CHECK(chmod(path, 0777) == 0);
	CHECK(objstore_open(path, &os, err, sizeof(err)) == -EPERM);
	CHECK(strstr(err, "writable by others") != NULL);
	CHECK(chmod(path, 0700) == 0);
	snprintf(name, sizeof(name), "%s/link", root);
	CHECK(symlink(path, name) == 0);
	CHECK(objstore_open(name, &os, err, sizeof(err)) == -ENOTDIR);
}

/* Resident kB of this process's mappings of a file named data.mdb. */
static long mdb_rss_kb(void)
{
	char line[4608];
	long kb = 0, v;
	int in = 0;
	FILE *f = fopen("/proc/self/smaps", "r");

	while (f && fgets(line, sizeof(line), f)) {
		char *nl = strchr(line, '\n'), *sp;

		if (nl)
			*nl = '\0';
		sp = strchr(line, ' ');
		if (sp && strchr(line, '-') && strchr(line, '-') < sp)
			in = strlen(line) > 9 &&
			     !strcmp(line + strlen(line) - 9, "/data.mdb");
		else if (in && sscanf(line, "Rss: %ld kB", &v) == 1)
			kb += v;
	}
	if (f)
		fclose(f);
	return kb;
}

static int touch_chunk(void *arg, uint32_t n, const struct chunk_rec *r,
		       const char *err, size_t errlen)
{
	(void)n;
	(void)err;
	(void)errlen;
	*(uint64_t *)arg += r->start;
	return 0;
}

/* db_drop_map: the pages a walk of 200,000 records mapped leave the
 * resident size, and the records read the same afterwards. */
/* Objects kept inline: the bytes come back, a count change keeps them,
 * a release and a take in one transaction keep them, a release to 0
 * removes them at the commit, and a file object has none. */
static void test_inline(void)
{
	char dir[300], err[256] = "", big[DB_INLINE_MAX + 1];
	static const char text[] = "one small output\n";
	uint8_t a[SHA_LEN], b[SHA_LEN], e[SHA_LEN];
	struct db *db;
	struct db_txn *t;
	struct obj_rec r;
	const void *data;
	size_t len;
	uint64_t refs;

	snprintf(dir, sizeof(dir), "%s/inldb", root);
	CHECK(mkdir(dir, 0700) == 0);
	CHECK(db_open(dir, 0, &db, err, sizeof(err)) == 0);
	CHECK(sha_buf(text, strlen(text), a) == 0);
	CHECK(sha_buf("file", 4, b) == 0);
	CHECK(sha_buf("", 0, e) == 0);
	memset(big, 'x', sizeof(big));

	CHECK(db_begin(db, 1, &t) == 0);
	CHECK(db_obj_ref_inline(t, a, strlen(text), text, +1, &refs) == 0);
	CHECK(refs == 1);
	CHECK(db_obj_ref(t, b, 4, +1, NULL) == 0);
	CHECK(db_obj_ref_inline(t, e, 0, "", +1, NULL) == 0);
	/* too big to be inline */
	CHECK(db_obj_ref_inline(t, b, sizeof(big), big, +1, NULL) == -EINVAL);
	CHECK(db_commit(t) == 0);

	CHECK(db_begin(db, 1, &t) == 0);
	CHECK(db_obj_inline(t, a, &data, &len) == 0);
	CHECK(len == strlen(text) && !memcmp(data, text, len));
	CHECK(db_obj_inline(t, b, &data, &len) == -ENODATA);
	CHECK(db_obj_inline(t, e, &data, &len) == 0 && len == 0);
	/* a second reference keeps the bytes */
	CHECK(db_obj_ref(t, a, strlen(text), +1, &refs) == 0 && refs == 2);
	CHECK(db_obj_get(t, a, &r) == 0 && r.refs == 2 &&
	      r.size == strlen(text));
	CHECK(db_obj_inline(t, a, &data, &len) == 0);
	CHECK(len == strlen(text) && !memcmp(data, text, len));
	/* released to 0 and taken again in one transaction, as a new
	 * plan does: the record and its bytes are still there */
	CHECK(db_obj_ref(t, a, strlen(text), -1, NULL) == 0);
	CHECK(db_obj_ref(t, a, strlen(text), -1, &refs) == 0 && refs == 0);
	CHECK(db_obj_ref(t, a, strlen(text), +1, &refs) == 0 && refs == 1);
	CHECK(db_commit(t) == 0);

	CHECK(db_begin(db, 0, &t) == 0);
	CHECK(db_obj_inline(t, a, &data, &len) == 0);
	CHECK(len == strlen(text) && !memcmp(data, text, len));
	db_abort(t);

	/* released to 0 for good: gone at the commit, once even if it was
	 * at 0 twice; a release below 0 fails */
	CHECK(db_begin(db, 1, &t) == 0);
	CHECK(db_obj_ref(t, a, strlen(text), -1, &refs) == 0 && refs == 0);
	CHECK(db_obj_ref(t, a, strlen(text), -1, NULL) == -EIO);
	CHECK(db_obj_ref(t, b, 4, -1, &refs) == 0 && refs == 0);
	CHECK(db_obj_ref(t, b, 4, +1, NULL) == 0);
	CHECK(db_obj_ref(t, b, 4, -1, &refs) == 0 && refs == 0);
	CHECK(db_commit(t) == 0);
	CHECK(db_begin(db, 0, &t) == 0);
	CHECK(db_obj_get(t, a, &r) == -ENOENT);
	CHECK(db_obj_get(t, b, &r) == -ENOENT);
	CHECK(db_obj_get(t, e, &r) == 0 && r.refs == 1);
	db_abort(t);

	/* an aborted release changes nothing */
	CHECK(db_begin(db, 1, &t) == 0);
	CHECK(db_obj_ref(t, e, 0, -1, &refs) == 0 && refs == 0);
	db_abort(t);
	CHECK(db_begin(db, 0, &t) == 0);
	CHECK(db_obj_get(t, e, &r) == 0 && r.refs == 1);
	db_abort(t);
	db_close(db);
}

/* Write meta "version" = ver straight into the environment in dir. */
static void set_version(const char *dir, uint32_t ver)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = { 7, "version" }, v = { sizeof(ver), &ver };

	CHECK(mdb_env_create(&env) == 0);
	CHECK(mdb_env_set_maxdbs(env, 8) == 0);
	CHECK(mdb_env_open(env, dir, 0, 0600) == 0);
	CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0);
	CHECK(mdb_dbi_open(txn, "meta", 0, &dbi) == 0);
	CHECK(mdb_put(txn, dbi, &k, &v, 0) == 0);
	CHECK(mdb_txn_commit(txn) == 0);
	mdb_env_close(env);
}

static uint32_t get_version(const char *dir)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = { 7, "version" }, v;
	uint32_t ver = 0;

	CHECK(mdb_env_create(&env) == 0);
	CHECK(mdb_env_set_maxdbs(env, 8) == 0);
	CHECK(mdb_env_open(env, dir, MDB_RDONLY, 0600) == 0);
	CHECK(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) == 0);
	CHECK(mdb_dbi_open(txn, "meta", 0, &dbi) == 0);
	if (mdb_get(txn, dbi, &k, &v) == 0 && v.mv_size == sizeof(ver))
		memcpy(&ver, v.mv_data, sizeof(ver));
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return ver;
}

/* A version-1 store opens and is marked 2; a newer one is refused with
 * its number in the message. */
static void test_version(void)
{
	char dir[300], err[256] = "";
	struct db *db;

	snprintf(dir, sizeof(dir), "%s/verdb", root);
	CHECK(mkdir(dir, 0700) == 0);
	CHECK(db_open(dir, 0, &db, err, sizeof(err)) == 0);
	db_close(db);
	CHECK(get_version(dir) == DB_VERSION);
	set_version(dir, 1);
	CHECK(db_open(dir, 0, &db, err, sizeof(err)) == 0);
	db_close(db);
	CHECK(get_version(dir) == 2);
	set_version(dir, DB_VERSION + 1);
	CHECK(db_open(dir, 0, &db, err, sizeof(err)) < 0);
	CHECK(strstr(err, "store format 3") != NULL);
}

static void test_drop_map(void)
{
	char dir[300], err[256] = "";
	struct db *db;
	struct db_txn *t;
	struct chunk_rec cr = { 0 };
	uint64_t sum1 = 0, sum2 = 0;
	long before, after;
	int rc = 0;

	snprintf(dir, sizeof(dir), "%s/dropdb", root);
	CHECK(mkdir(dir, 0700) == 0);
	CHECK(db_open(dir, 0, &db, err, sizeof(err)) == 0);
	CHECK(db_begin(db, 1, &t) == 0);
	for (uint32_t n = 1; n <= 200000 && !rc; n++) {
		cr.start = n;
		rc = db_chunk_put(t, 7, n, &cr, NULL);
	}
	CHECK(rc == 0);
	CHECK(db_commit(t) == 0);
	/* a write transaction walks through the map too */
	CHECK(db_begin(db, 1, &t) == 0);
	CHECK(db_chunk_iter(t, 7, 1, touch_chunk, &sum1) == 0);
	CHECK(db_commit(t) == 0);
	before = mdb_rss_kb();
	db_drop_map(db);
	after = mdb_rss_kb();
	CHECK(before > 8 * 1024); /* about 40 MiB of records were mapped */
	CHECK(after < 1024);
	if (before <= 8 * 1024 || after >= 1024)
		fprintf(stderr, "data.mdb resident: %ld kB, then %ld kB\n",
			before, after);
	CHECK(db_begin(db, 0, &t) == 0);
	CHECK(db_chunk_iter(t, 7, 1, touch_chunk, &sum2) == 0);
	db_abort(t);
	CHECK_EQ_U64(sum1, sum2);
	CHECK_EQ_U64(sum1, (uint64_t)200000 * 200001 / 2);
	db_close(db);
}

int main(void)
{
	char cmd[300];

	snprintf(root, sizeof(root), "/tmp/jobfs-test-store.XXXXXX");
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		return 1;
	}
	test_sha();
	test_db();
	test_objects();
	test_inline();
	test_version();
	test_drop_map();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", root);
	return check_done();
}
