/*
 * encode.c - output.flac and output.ogg: an audio job's joined output,
 * encoded with libsndfile once every chunk is done.
 *
 * The encode thread waits until a job with "output": "flac" or "ogg" has
 * every chunk done and no valid encoding, then encodes the same bytes that
 * output.wav serves (header aside) into a temp file, publishes it as an
 * object (fsync, rename, fsync dir) and commits it to the job's record with
 * a key: the SHA-256 of the format, the gap and every chunk's object. The
 * encoding is served only while that key still matches the job's chunks,
 * so a retried or edited chunk makes it stale at once, and the thread
 * encodes again. Progress shows in status while it runs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine_int.h"

/* The key of j's joined audio as it is now, or -errno (-ENOENT: not all
 * done or not joinable). Called with e->lock. */
static int job_enc_key(struct engine *e, struct job *j, uint8_t key[SHA_LEN],
		       struct output_view **vout)
{
	struct output_view *v;
	struct sha_ctx *c;
	int rc;

	if (!j->has_spec || !spec_encoded_ext(j->spec.output) ||
	    !j->nchunks || j->ndone != j->nchunks)
		return -ENOENT;
	rc = view_new_locked(e, j, &v);
	if (rc)
		return rc;
	if (view_pieces(v) != j->nchunks) {
		engine_output_close(v);
		return -ENOENT;
	}
	c = sha_new();
	if (!c) {
		engine_output_close(v);
		return -ENOMEM;
	}
	sha_update(c, "jobfs-encoded-1", 15);
	sha_update(c, spec_encoded_ext(j->spec.output),
		   strlen(spec_encoded_ext(j->spec.output)));
	view_hash(v, c);
	sha_final(c, key);
	if (vout)
		*vout = v;
	else
		engine_output_close(v);
	return 0;
}

int job_enc_valid(struct engine *e, struct job *j)
{
	uint8_t key[SHA_LEN];

	if (!j->rec.has_enc)
		return 0;
	if (j->enc_checked == j->version + 1)
		return j->enc_ok;
	j->enc_ok = job_enc_key(e, j, key, NULL) == 0 &&
		!memcmp(key, j->rec.enc_key, SHA_LEN);
	j->enc_checked = j->version + 1;
	return j->enc_ok;
}

struct enc_src {
	struct output_view *v;
	uint64_t skip;  /* the WAV header */
};

static ssize_t enc_read(void *arg, char *buf, size_t len, uint64_t off)
{
	struct enc_src *s = arg;

	return engine_output_read(s->v, buf, len, off + s->skip);
}

/* Encode one job. Called with e->lock; drops it while encoding. */
static void encode_job(struct engine *e, struct job *j)
{
	struct output_view *v = NULL;
	struct audio_fmt fmt;
	struct enc_src src;
	struct db_txn *t = NULL;
	uint8_t key[SHA_LEN], key2[SHA_LEN], sha[SHA_LEN], old[SHA_LEN];
	uint64_t size, refs;
	char name[96], err[256] = "", ext[8];
	int fd = -1, rc, had;

	rc = job_enc_key(e, j, key, &v);
	if (rc)
		return;
	snprintf(ext, sizeof(ext), "%s", spec_encoded_ext(j->spec.output));
	view_format(v, &fmt, &src.skip);
	src.v = v;
	j->encoding = 1;
	j->enc_total = fmt.frames;
	j->enc_done = 0;
	job_bump(j);
	pthread_mutex_unlock(&e->lock);

	rc = objstore_tmp_create(&e->os, "enc", name, sizeof(name), &fd);
	if (rc)
		snprintf(err, sizeof(err), "%s", strerror(-rc));
	else
		rc = audio_encode(ext, &fmt, fmt.frames, enc_read, &src, fd,
				  &j->enc_done, err, sizeof(err));
	if (!rc) {
		rc = objstore_publish(&e->os, fd, e->os.tmp, name, sha, &size);
		if (rc)
			snprintf(err, sizeof(err), "%s", strerror(-rc));
	}
	if (fd >= 0)
		close(fd);
	if (rc)
		unlinkat(e->os.tmp, name, 0);
	engine_output_close(v);

	pthread_mutex_lock(&e->lock);
	j->encoding = 0;
	job_bump(j);
	if (rc) {
		snprintf(j->last_error, sizeof(j->last_error),
			 "cannot encode output.%s: %s", ext, err);
		memcpy(j->enc_failed_key, key, SHA_LEN);
		job_event(j, 0, "encode-failed", "%s", j->last_error);
		return;
	}
	/* the chunks may have changed while we encoded, or be changing
	 * (a plan being saved writes the job's record) */
	if (j->planning || job_enc_key(e, j, key2, NULL) ||
	    memcmp(key, key2, SHA_LEN)) {
		engine_mark_dead(e, sha);
		return;
	}
	had = j->rec.has_enc;
	memcpy(old, j->rec.enc_obj, SHA_LEN);
	rc = db_begin(e->db, 1, &t);
	if (!rc)
		rc = db_obj_ref(t, sha, size, +1, NULL);
	if (!rc && had)
		rc = db_obj_ref(t, old, j->rec.enc_size, -1, &refs);
	if (!rc) {
		struct job_rec save = j->rec;

		memcpy(j->rec.enc_key, key, SHA_LEN);
		memcpy(j->rec.enc_obj, sha, SHA_LEN);
		j->rec.enc_size = size;
		j->rec.has_enc = 1;
		rc = job_put_rec(e, t, j);
		if (!rc)
			rc = db_commit(t);
		else
			db_abort(t);
		t = NULL;
		if (rc)
			j->rec = save;
	}
	db_abort(t);
	if (rc) {
		snprintf(j->last_error, sizeof(j->last_error),
			 "cannot commit output.%s: %s", ext, strerror(-rc));
		engine_mark_dead(e, sha);
		return;
	}
	if (had && !refs)
		engine_mark_dead(e, old);
	j->enc_checked = 0;
	job_event(j, 0, "encoded", NULL);
}

void *encode_main(void *arg)
{
	struct engine *e = arg;

	pthread_mutex_lock(&e->lock);
	while (!e->stop_encode) {
		struct job *todo = NULL;

		for (size_t i = 0; i < e->njobs && !todo; i++) {
			struct job *j = e->jobs[i];
			uint8_t key[SHA_LEN];

			if (!j->has_spec || !spec_encoded_ext(j->spec.output) ||
			    j->ndone != j->nchunks || !j->nchunks ||
			    job_busy(j) || job_enc_valid(e, j))
				continue;
			if (job_enc_key(e, j, key, NULL) == 0 &&
			    memcmp(key, j->enc_failed_key, SHA_LEN))
				todo = j;
		}
		if (todo) {
			encode_job(e, todo);
			continue;
		}
		e->encode_wanted = 0;
		while (!e->encode_wanted && !e->stop_encode)
			pthread_cond_wait(&e->encode_cond, &e->lock);
	}
	pthread_mutex_unlock(&e->lock);
	return NULL;
}

void engine_want_encode(struct engine *e)
{
	e->encode_wanted = 1;
	pthread_cond_signal(&e->encode_cond);
}
