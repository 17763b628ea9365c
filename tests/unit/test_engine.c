/*
 * test_engine.c - the chunk and job state machines, and the engine driven
 * directly (no FUSE): a real store, real workers, real LMDB.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "engine_int.h"

/* Random transitions keep the per-state counters equal to a recount
 * (invariant I1 of engine.c). */
static void test_counters(void)
{
	struct job j;
	uint32_t n = 200;

	memset(&j, 0, sizeof(j));
	j.nchunks = n;
	j.cs = calloc(n, 1);
	srandom(7);
	for (int step = 0; step < 20000; step++) {
		uint32_t c = (uint32_t)(random() % n) + 1;
		int st = (int)(random() % 6);

		if (random() % 4 == 0)
			st |= CS_QUEUED;
		job_set_cs(&j, c, st);
	}
	{
		uint32_t cnt[6] = { 0 }, q = 0;

		for (uint32_t c = 0; c < n; c++) {
			cnt[j.cs[c] & CS_MASK]++;
			q += !!(j.cs[c] & CS_QUEUED);
			/* a done or failed chunk is never queued */
			CHECK(!((j.cs[c] & CS_QUEUED) &&
				((j.cs[c] & CS_MASK) == CS_DONE ||
				 (j.cs[c] & CS_MASK) == CS_FAILED)));
		}
		CHECK_EQ_U64(j.ndone, cnt[CS_DONE]);
		CHECK_EQ_U64(j.nfailed, cnt[CS_FAILED]);
		CHECK_EQ_U64(j.nrunning, cnt[CS_RUNNING]);
		CHECK_EQ_U64(j.nwait, cnt[CS_WAIT]);
		CHECK_EQ_U64(j.ncommit, cnt[CS_COMMIT]);
		CHECK_EQ_U64(j.nqueued, q);
	}
	free(j.cs);
}

/* The derived job state for each mode and mix of chunk states. */
static void test_states(void)
{
	struct job j;
	uint8_t cs[3] = { 0 };

	memset(&j, 0, sizeof(j));
	j.cs = cs;
	j.nchunks = 3;
	CHECK(!strcmp(job_state_name(&j), "new"));
	j.has_spec = 1;
	CHECK(!strcmp(job_state_name(&j), "new"));
	j.rec.has_input = 1;
	CHECK(!strcmp(job_state_name(&j), "ready"));
	CHECK(!job_busy(&j));
	j.rec.mode = JOB_MODE_RUN;
	CHECK(!strcmp(job_state_name(&j), "running"));
	CHECK(job_busy(&j));
	CHECK(job_runnable(&j, 1));
	job_set_cs(&j, 1, CS_RUNNING);
	CHECK(job_active(&j));
	j.rec.mode = JOB_MODE_PAUSE;
	CHECK(!strcmp(job_state_name(&j), "paused"));
	CHECK(!job_runnable(&j, 2));
	job_set_cs(&j, 1, CS_DONE);
	job_set_cs(&j, 2, CS_DONE);
	job_set_cs(&j, 3, CS_FAILED);
	j.rec.mode = JOB_MODE_IDLE;
	CHECK(!strcmp(job_state_name(&j), "failed"));
	job_set_cs(&j, 3, CS_DONE);
	CHECK(!strcmp(job_state_name(&j), "done"));
	job_set_cs(&j, 2, CS_PENDING | CS_QUEUED);
	j.rec.mode = JOB_MODE_SELECTED;
	CHECK(job_busy(&j));
	CHECK(job_runnable(&j, 2));
	CHECK(!job_runnable(&j, 1));
	j.rec.mode = JOB_MODE_STOP;
	CHECK(!strcmp(job_state_name(&j), "stopped"));
}

static char root[128];

static cJSON *status_json(struct engine *e, const char *job)
{
	char *buf;
	size_t len;
	cJSON *o;

	if (engine_render(e, job, RENDER_STATUS_JSON, &buf, &len))
		return NULL;
	o = cJSON_ParseWithLength(buf, len);
	free(buf);
	return o;
}

static const char *state_of(cJSON *o)
{
	cJSON *s = cJSON_GetObjectItem(o, "state");

	return cJSON_IsString(s) ? s->valuestring : "?";
}

static int wait_state(struct engine *e, const char *job, const char *want)
{
	for (int i = 0; i < 500; i++) {
		cJSON *o = status_json(e, job);
		int ok = o && !strcmp(state_of(o), want);

		cJSON_Delete(o);
		if (ok)
			return 1;
		usleep(20000);
	}
	return 0;
}

static int set_input(struct engine *e, const char *job, const char *text)
{
	struct input_tx *tx;
	int fd, rc;

	rc = engine_input_begin(e, job, 1, &tx, &fd);
	if (rc)
		return rc;
	if (write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
		engine_input_abort(e, tx);
		return -EIO;
	}
	return engine_input_commit(e, tx);
}

static void test_engine_run(void)
{
	struct engine_opts o = {
		.store = root, .max_running = 2, .grace = 5,
		.max_input = 1 << 20, .max_chunks = 1000, .max_jobs = 10,
	};
	struct executor *ex;
	struct engine *e;
	char err[256] = "";
	const char *spec = "{\"command\": \"tr a-z A-Z\"}";
	const char *spec2 = "{\"command\": \"sh -c 'test $JOBFS_CHUNK != 2 "
		"&& tr a-z A-Z'\", \"attempts\": 2, "
		"\"backoff\": {\"initial\": 0.01}}";
	struct output_view *v;
	char out[128];
	ssize_t n;

	CHECK(exec_local_open(&ex) == 0);
	CHECK(engine_open(&o, ex, &e, err, sizeof(err)) == 0);
	CHECK(engine_start(e) == 0);

	CHECK(engine_job_create(e, "bad/name") == -EINVAL);
	CHECK(engine_job_create(e, ".hidden") == -EINVAL);
	CHECK(engine_job_create(e, "j1") == 0);
	CHECK(engine_job_create(e, "j1") == -EEXIST);
	CHECK(engine_control(e, "j1", "start\n", 6) == -EBUSY);
	CHECK(engine_spec_set(e, "j1", "{\"atempts\": 1}", 14) == -EINVAL);
	CHECK(engine_spec_set(e, "j1", spec, strlen(spec)) == 0);
	CHECK(set_input(e, "j1", "one.\n\ntwo.\n\nthree.\n") == 0);
	CHECK(engine_control(e, "j1", "resum", 5) == -EINVAL);
	CHECK(engine_control(e, "j1", "retry 4", 7) == -EINVAL);
	CHECK(engine_control(e, "j1", "start\n", 6) == 0);
	CHECK(wait_state(e, "j1", "done"));

	CHECK(engine_output_open(e, "j1", &v) == 0);
	n = engine_output_read(v, out, sizeof(out), 0);
	CHECK(n == 19 && !memcmp(out, "ONE.\n\nTWO.\n\nTHREE.\n", 19));
	n = engine_output_read(v, out, 4, 7);
	CHECK(n == 4 && !memcmp(out, "WO.\n", 4));
	engine_output_close(v);

	/* a new command: nothing reused; chunk 2 fails twice and is failed */
	CHECK(engine_spec_set(e, "j1", spec2, strlen(spec2)) == 0);
	CHECK(engine_control(e, "j1", "start", 5) == 0);
	CHECK(wait_state(e, "j1", "failed"));
	{
		cJSON *s = status_json(e, "j1");
		cJSON *c = cJSON_GetObjectItem(s, "chunks");
		cJSON *f = cJSON_GetArrayItem(cJSON_GetObjectItem(s, "failed"),
					      0);

		CHECK(cJSON_GetObjectItem(c, "done")->valueint == 2);
		CHECK(cJSON_GetObjectItem(c, "failed")->valueint == 1);
		CHECK(f && cJSON_GetObjectItem(f, "chunk")->valueint == 2);
		CHECK(f && !strcmp(cJSON_GetObjectItem(f, "error")->valuestring,
				   "exit 1"));
		CHECK(f && cJSON_GetObjectItem(f, "attempts")->valueint == 2);
		cJSON_Delete(s);
	}
	/* the output stops before the failed chunk */
	CHECK(engine_output_open(e, "j1", &v) == 0);
	CHECK(engine_output_size(v) == 6);
	engine_output_close(v);
	CHECK(engine_job_delete(e, "j1") == 0);
	CHECK(engine_job_delete(e, "j1") == -ENOENT);

	/* A worker that never reads a chunk larger than the pipe: writing
	 * the rest meets EPIPE once it has exited, which is the worker's
	 * business (no SIGPIPE for the process, which has not ignored it) */
	{
		const char *spec3 = "{\"command\": \"true\", "
			"\"chunking\": {\"by\": \"line\"}}";
		size_t big = 300000;
		char *line = malloc(big + 2);

		CHECK(line != NULL);
		if (line) {
			memset(line, 'a', big);
			memcpy(line + big, "\n", 2);
			CHECK(engine_job_create(e, "j2") == 0);
			CHECK(engine_spec_set(e, "j2", spec3,
					      strlen(spec3)) == 0);
			CHECK(set_input(e, "j2", line) == 0);
			CHECK(engine_control(e, "j2", "start", 5) == 0);
			CHECK(wait_state(e, "j2", "done"));
			free(line);
		}
	}

	engine_shutdown(e);
	engine_close(e);
	exec_close(ex);
}

int main(void)
{
	char cmd[200];

	snprintf(root, sizeof(root), "/tmp/jobfs-test-engine.XXXXXX");
	if (!mkdtemp(root))
		return 1;
	test_counters();
	test_states();
	test_engine_run();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", root);
	return check_done();
}
