/*
 * fuzz_control.c - control writes (fs/api.c engine_control) on a real
 * engine: a real store, LMDB, the local executor, the engine's threads.
 *
 * Setup, once per process: an engine with workers runs job "j" to its end
 * (12 chunks: 1-9 done with distinct outputs, 10-12 failed after their one
 * attempt), and prepares job "r" (spec and input, never started) and job
 * "n" (spec, no input). That store is kept as a pristine copy. The
 * fuzzing engine is then opened on a copy of it with max_running = 0: the
 * scheduler never starts a worker, so "start", "resume", "retry ..." and
 * "retry-failed" move chunks between states at full speed and stay
 * deterministic.
 *
 * Input: an optional first byte 0x01 (job "r") or 0x02 (job "n"), else
 * job "j"; then up to 8 control writes separated by 0x1e (ASCII record
 * separator), each passed to engine_control() as one write. After every
 * write:
 *
 *   1. the return is 0, -EINVAL or -EBUSY (never -ENOENT: the job exists,
 *      and never a store error on a healthy store);
 *   2. the events the write appended are JSON objects naming the job; on
 *      -EINVAL/-EBUSY the last one is "rejected" with an error, and the
 *      status file has a "rejected <time>: <that error>" line; on 0 no
 *      "rejected" event was written;
 *   3. the reason is one line of well-formed UTF-8 without C0 control
 *      bytes: cat status shows it on a terminal, and status.json and
 *      events carry it as JSON, which must be UTF-8 (RFC 8259, 8.1);
 *   4. status.json parses with cJSON, is well-formed UTF-8, has a known
 *      state and mode, and its chunk counts add up: done + running +
 *      pending + failed = total, waiting <= pending, reused <= done; its
 *      last_rejected.reason is the reason of 2;
 *   5. manifest.json parses and agrees with status.json on the number of
 *      chunks in each state (a text seen just before for that job is
 *      not parsed again: its figures are kept with it).
 *
 * After an input with an accepted write (or once the event logs have
 * grown), the engine is closed and reopened on a fresh copy of the
 * pristine store before the next input, so every input starts from the
 * same state.
 *
 * The setup is a test in itself: failing workers are how the scheduler's
 * use-after-free of a freed attempt was found (docs/fuzzing.md).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "engine.h"
#include "fuzz.h"
#include "fuzz_tmp.h"

#define MAX_WRITES 8
#define EVENTS_RESTORE_AT (256 * 1024)

static const char *const job_names[] = { "j", "r", "n" };

static struct executor *ex;
static struct engine *eng;
static char top[256], pristine[300], work[300];
static int events_fd[3] = { -1, -1, -1 };

/* ---- store copies ---- */

static void copy_file(const char *from, const char *to, mode_t mode)
{
	char buf[65536];
	int in = open(from, O_RDONLY | O_CLOEXEC);
	int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	ssize_t n;

	FUZZ_CHECK(in >= 0 && out >= 0, "copying %s to %s: %s", from, to,
		   strerror(errno));
	while ((n = read(in, buf, sizeof(buf))) > 0)
		FUZZ_CHECK(write(out, buf, (size_t)n) == n, "writing %s", to);
	FUZZ_CHECK(n == 0, "reading %s", from);
	close(in);
	close(out);
}

/* Copy the directory tree from into to (which must not exist). LMDB's
 * lock file is left out: a fresh one is made at open. */
static void copy_tree(const char *from, const char *to)
{
	DIR *d;
	struct dirent *de;
	struct stat st;

	FUZZ_CHECK(stat(from, &st) == 0 && mkdir(to, st.st_mode & 07777) == 0,
		   "mkdir %s: %s", to, strerror(errno));
	d = opendir(from);
	FUZZ_CHECK(d, "opendir %s", from);
	while ((de = readdir(d))) {
		char a[4096], b[4096];

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    !strcmp(de->d_name, "lock.mdb"))
			continue;
		snprintf(a, sizeof(a), "%s/%s", from, de->d_name);
		snprintf(b, sizeof(b), "%s/%s", to, de->d_name);
		FUZZ_CHECK(lstat(a, &st) == 0, "lstat %s", a);
		if (S_ISDIR(st.st_mode))
			copy_tree(a, b);
		else if (S_ISREG(st.st_mode))
			copy_file(a, b, st.st_mode & 07777);
	}
	closedir(d);
}

/* ---- the engine ---- */

static struct engine *open_engine(const char *store, unsigned max_running)
{
	struct engine_opts o = {
		.store = store, .max_running = max_running, .grace = 1,
		.max_input = 1 << 20, .max_chunks = 1000, .max_jobs = 10,
	};
	struct engine *e;
	char err[256] = "";
	int rc;

	rc = engine_open(&o, ex, &e, err, sizeof(err));
	FUZZ_CHECK(rc == 0, "engine_open(%s): %d %s", store, rc, err);
	rc = engine_start(e);
	FUZZ_CHECK(rc == 0, "engine_start: %d", rc);
	return e;
}

static void close_engine(void)
{
	for (int i = 0; i < 3; i++) {
		if (events_fd[i] >= 0)
			close(events_fd[i]);
		events_fd[i] = -1;
	}
	engine_shutdown(eng);
	engine_close(eng);
	eng = NULL;
}

/* Open a fresh copy of the pristine store with no worker slots. */
static void restore(void)
{
	if (eng)
		close_engine();
	fuzz_rm_tree(work);
	copy_tree(pristine, work);
	eng = open_engine(work, 0);
	for (int i = 0; i < 3; i++) {
		int rc = engine_events_open(eng, job_names[i], &events_fd[i]);

		FUZZ_CHECK(rc == 0, "engine_events_open(%s): %d", job_names[i],
			   rc);
	}
}

static cJSON *status_json(const char *job, char **text_out)
{
	char *buf = NULL;
	size_t len = 0;
	cJSON *o;
	int rc = engine_render(eng, job, RENDER_STATUS_JSON, &buf, &len);

	FUZZ_CHECK(rc == 0, "render status.json of %s: %d", job, rc);
	o = cJSON_ParseWithLength(buf, len);
	FUZZ_CHECK(o, "status.json of %s does not parse:\n%.*s", job,
		   (int)len, buf);
	FUZZ_CHECK(fuzz_utf8_valid(buf, len), "status.json of %s is "
		   "not well-formed UTF-8:\n%.*s", job, (int)len, buf);
	if (text_out)
		*text_out = buf;
	else
		free(buf);
	return o;
}

static const char *str_of(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double num_of(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	FUZZ_CHECK(cJSON_IsNumber(v), "'%s' is not a number", key);
	return v->valuedouble;
}

static void wait_state(const char *job, const char *want)
{
	for (int i = 0; i < 3000; i++) {
		cJSON *o = status_json(job, NULL);
		const char *s = str_of(o, "state");
		bool ok = s && !strcmp(s, want);

		cJSON_Delete(o);
		if (ok)
			return;
		usleep(10000);
	}
	FUZZ_CHECK(0, "setup: job %s never reached state '%s'", job, want);
}

static void set_input(struct engine *e, const char *job, const char *text)
{
	struct input_tx *tx;
	int fd, rc;

	rc = engine_input_begin(e, job, 1, &tx, &fd);
	FUZZ_CHECK(rc == 0, "setup: engine_input_begin(%s): %d", job, rc);
	FUZZ_CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text),
		   "setup: writing input");
	rc = engine_input_commit(e, tx);
	FUZZ_CHECK(rc == 0, "setup: engine_input_commit(%s): %d", job, rc);
}

static void set_spec(struct engine *e, const char *job, const char *spec)
{
	int rc = engine_spec_set(e, job, spec, strlen(spec));

	FUZZ_CHECK(rc == 0, "setup: engine_spec_set(%s): %d", job, rc);
}

static void cleanup(void)
{
	if (eng)
		close_engine();
	if (ex)
		exec_close(ex);
	ex = NULL;
	fuzz_rm_tree(top);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	/* Chunks 1-9 succeed (each echoes its text), 10-12 fail at once. */
	static const char spec[] =
		"{\"command\": \"test $JOBFS_CHUNK -le 9 && cat\", "
		"\"attempts\": 1, \"backoff\": {\"initial\": 0}}";
	static const char input[] =
		"One.\n\nTwo.\n\nThree.\n\nFour.\n\nFive.\n\nSix.\n\n"
		"Seven.\n\nEight.\n\nNine.\n\nTen.\n\nEleven.\n\nTwelve.\n";
	struct engine *e;
	int rc;

	(void)argc;
	(void)argv;
	/* the executor's watchdog must be forked before any thread */
	rc = exec_local_open(&ex);
	FUZZ_CHECK(rc == 0, "exec_local_open: %d", rc);
	fuzz_tmpdir("control", top, sizeof(top));
	atexit(cleanup);
	snprintf(pristine, sizeof(pristine), "%s/pristine", top);
	snprintf(work, sizeof(work), "%s/work", top);

	e = open_engine(pristine, 4);
	eng = e;
	FUZZ_CHECK(engine_job_create(e, "j") == 0 &&
		   engine_job_create(e, "r") == 0 &&
		   engine_job_create(e, "n") == 0, "setup: creating jobs");
	set_spec(e, "j", spec);
	set_input(e, "j", input);
	set_spec(e, "r", spec);
	set_input(e, "r", "Alpha.\n\nBeta.\n\nGamma.\n\nDelta.\n");
	set_spec(e, "n", spec);
	rc = engine_control(e, "j", "start\n", 6);
	FUZZ_CHECK(rc == 0, "setup: start: %d", rc);
	wait_state("j", "failed");
	engine_shutdown(e);
	engine_close(e);
	eng = NULL;
	restore();
	return 0;
}

/* ---- checks ---- */

/* The events appended since *off; returns the last one's "event" and, for
 * a rejection, its error (both malloc'ed or NULL). */
static void new_events(int fd, const char *job, off_t *off, char **last,
		       char **last_error, bool *any_rejected)
{
	struct stat st;
	char *buf, *line, *end;
	size_t n;

	*last = *last_error = NULL;
	*any_rejected = false;
	FUZZ_CHECK(fstat(fd, &st) == 0, "fstat events");
	if (st.st_size <= *off)
		return;
	n = (size_t)(st.st_size - *off);
	buf = malloc(n + 1);
	FUZZ_CHECK(buf && pread(fd, buf, n, *off) == (ssize_t)n,
		   "reading events");
	buf[n] = '\0';
	FUZZ_CHECK(buf[n - 1] == '\n', "events of %s end in a torn line", job);
	FUZZ_CHECK(fuzz_utf8_valid(buf, n), "events of %s are not "
		   "well-formed UTF-8:\n%s", job, buf);
	for (line = buf; line < buf + n; line = end + 1) {
		cJSON *o;
		const char *ev, *err;

		end = memchr(line, '\n', (size_t)(buf + n - line));
		o = cJSON_ParseWithLength(line, (size_t)(end - line));
		FUZZ_CHECK(cJSON_IsObject(o), "event line of %s is not a JSON "
			   "object: %.*s", job, (int)(end - line), line);
		ev = str_of(o, "event");
		FUZZ_CHECK(ev && str_of(o, "time") && str_of(o, "job") &&
			   !strcmp(str_of(o, "job"), job),
			   "event line without event/time/job %s: %.*s", job,
			   (int)(end - line), line);
		err = str_of(o, "error");
		free(*last);
		free(*last_error);
		*last = strdup(ev);
		*last_error = err ? strdup(err) : NULL;
		if (!strcmp(ev, "rejected")) {
			*any_rejected = true;
			FUZZ_CHECK(err && *err, "rejected event without error");
		}
		cJSON_Delete(o);
	}
	*off = st.st_size;
	free(buf);
}

static void check_reason(const char *reason)
{
	size_t n = strlen(reason);

	FUZZ_CHECK(fuzz_utf8_valid(reason, n), "rejection reason is not "
		   "well-formed UTF-8: '%s'", reason);
	/* C0 controls are what a terminal acts on (ESC starts a sequence,
	 * CR rewrites the line); DEL is let through, as in fuzz_spec. */
	for (size_t i = 0; i < n; i++)
		FUZZ_CHECK((unsigned char)reason[i] >= 0x20, "rejection reason "
			   "holds control byte 0x%02x at %zu: '%s'",
			   (unsigned char)reason[i], i, reason);
}

/* The status file's "rejected <time>: <reason>" line. */
static void check_status_text(const char *job, const char *reason)
{
	char *buf = NULL, *line, *nl;
	size_t len = 0, rl = strlen(reason);
	int rc = engine_render(eng, job, RENDER_STATUS, &buf, &len);

	FUZZ_CHECK(rc == 0, "render status of %s: %d", job, rc);
	buf = realloc(buf, len + 1);
	FUZZ_CHECK(buf, "realloc");
	buf[len] = '\0';
	line = strstr(buf, "\nrejected ");
	FUZZ_CHECK(line, "status of %s has no rejected line:\n%s", job, buf);
	line++;
	nl = strchr(line, '\n');
	FUZZ_CHECK(nl, "status of %s: rejected line does not end", job);
	FUZZ_CHECK((size_t)(nl - line) > rl + 2 &&
		   !memcmp(nl - rl - 2, ": ", 2) && !memcmp(nl - rl, reason, rl),
		   "status of %s: rejected line '%.*s' does not end with the "
		   "reason '%s'", job, (int)(nl - line), line, reason);
	free(buf);
}

/* A manifest.json's chunk_count, the length of its chunks array and the
 * chunks in each state (done, failed, running, other), parsed with cJSON.
 * A rejected write leaves the manifest as it was, so most renders repeat
 * the last text of the job: for the same bytes the parse would give the
 * same figures, and the figures of the last text are used instead. */
static void manifest_counts(int which, const char *buf, size_t len,
			    double mc[6])
{
	static struct { char *text; size_t len; double mc[6]; } last[3];
	const char *job = job_names[which];
	cJSON *m, *ch;

	if (last[which].text && last[which].len == len &&
	    !memcmp(last[which].text, buf, len)) {
		memcpy(mc, last[which].mc, sizeof(last[which].mc));
		return;
	}
	m = cJSON_ParseWithLength(buf, len);
	FUZZ_CHECK(m, "manifest.json of %s does not parse:\n%.*s", job,
		   (int)len, buf);
	mc[0] = num_of(m, "chunk_count");
	ch = cJSON_GetObjectItemCaseSensitive(m, "chunks");
	mc[1] = cJSON_GetArraySize(ch);
	mc[2] = mc[3] = mc[4] = mc[5] = 0;
	for (cJSON *x = ch ? ch->child : NULL; x; x = x->next) {
		const char *s = str_of(x, "state");

		FUZZ_CHECK(s, "manifest chunk without state");
		if (!strcmp(s, "done"))
			mc[2]++;
		else if (!strcmp(s, "failed"))
			mc[3]++;
		else if (!strcmp(s, "running"))
			mc[4]++;
		else
			mc[5]++;
	}
	cJSON_Delete(m);
	free(last[which].text);
	last[which].text = malloc(len);
	FUZZ_CHECK(last[which].text, "malloc");
	memcpy(last[which].text, buf, len);
	last[which].len = len;
	memcpy(last[which].mc, mc, sizeof(last[which].mc));
}

static void check_consistent(int which, const char *reason)
{
	static const char *const states[] = { "new", "ready", "running",
		"paused", "stopped", "failed", "done" };
	static const char *const modes[] = { "idle", "run", "pause", "stop",
		"selected" };
	const char *job = job_names[which];
	cJSON *o = status_json(job, NULL), *c, *lr;
	double total, done, running, pending, waiting, failed, reused;
	double mc[6];
	const char *state = str_of(o, "state"), *mode = str_of(o, "mode");
	char *buf = NULL;
	size_t len = 0, i;
	int rc;

	for (i = 0; state && i < sizeof(states) / sizeof(states[0]); i++)
		if (!strcmp(state, states[i]))
			break;
	FUZZ_CHECK(state && i < sizeof(states) / sizeof(states[0]),
		   "status.json state '%s'", state ? state : "(none)");
	for (i = 0; mode && i < sizeof(modes) / sizeof(modes[0]); i++)
		if (!strcmp(mode, modes[i]))
			break;
	FUZZ_CHECK(mode && i < sizeof(modes) / sizeof(modes[0]),
		   "status.json mode '%s'", mode ? mode : "(none)");
	c = cJSON_GetObjectItemCaseSensitive(o, "chunks");
	FUZZ_CHECK(cJSON_IsObject(c), "status.json has no chunks object");
	total = num_of(c, "total");
	done = num_of(c, "done");
	running = num_of(c, "running");
	pending = num_of(c, "pending");
	waiting = num_of(c, "waiting");
	failed = num_of(c, "failed");
	reused = num_of(c, "reused");
	FUZZ_CHECK(done >= 0 && running >= 0 && pending >= 0 && failed >= 0 &&
		   done + running + pending + failed == total,
		   "%s: done %g + running %g + pending %g + failed %g != "
		   "total %g", job, done, running, pending, failed, total);
	FUZZ_CHECK(waiting >= 0 && waiting <= pending && reused >= 0 &&
		   reused <= done, "%s: waiting %g pending %g reused %g done %g",
		   job, waiting, pending, reused, done);
	FUZZ_CHECK(running == 0, "%s: %g chunks running with no worker slot",
		   job, running);
	lr = cJSON_GetObjectItemCaseSensitive(o, "last_rejected");
	if (reason) {
		const char *r = str_of(lr, "reason");

		FUZZ_CHECK(r && !strcmp(r, reason), "status.json last_rejected "
			   "'%s', the event says '%s'", r ? r : "(none)",
			   reason);
	}

	rc = engine_render(eng, job, RENDER_MANIFEST, &buf, &len);
	FUZZ_CHECK(rc == 0, "render manifest.json of %s: %d", job, rc);
	manifest_counts(which, buf, len, mc);
	FUZZ_CHECK(mc[0] == total, "manifest chunk_count %g, status total %g",
		   mc[0], total);
	FUZZ_CHECK(mc[1] == total, "manifest lists %g chunks of %g", mc[1],
		   total);
	FUZZ_CHECK(mc[2] == done && mc[3] == failed && mc[4] == running &&
		   mc[5] == pending, "%s: manifest counts %g/%g/%g/%g, "
		   "status %g/%g/%g/%g (done/failed/running/pending)", job,
		   mc[2], mc[3], mc[4], mc[5], done, failed, running, pending);
	free(buf);
	cJSON_Delete(o);
}

static void one_write(int which, const uint8_t *p, size_t n, bool *accepted)
{
	const char *job = job_names[which];
	char *buf = malloc(n ? n : 1), *last = NULL, *last_error = NULL;
	struct stat st;
	off_t off;
	bool rejected;
	int rc;

	FUZZ_CHECK(buf, "malloc");
	memcpy(buf, p, n);
	FUZZ_CHECK(fstat(events_fd[which], &st) == 0, "fstat events");
	off = st.st_size;

	/* exactly n bytes, not NUL-terminated, as a FUSE write brings */
	rc = engine_control(eng, job, buf, n);
	FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -EBUSY,
		   "engine_control(%s, '%.*s') returned %d (%s)", job, (int)n,
		   buf, rc, strerror(-rc));
	new_events(events_fd[which], job, &off, &last, &last_error, &rejected);
	if (rc) {
		FUZZ_CHECK(last && !strcmp(last, "rejected") && last_error,
			   "engine_control(%s, '%.*s') returned %d; the last new "
			   "event is '%s'", job, (int)n, buf, rc,
			   last ? last : "(none)");
		check_reason(last_error);
		check_status_text(job, last_error);
	} else {
		FUZZ_CHECK(!rejected, "engine_control(%s, '%.*s') returned 0 "
			   "but wrote a rejected event", job, (int)n, buf);
		*accepted = true;
	}
	check_consistent(which, rc ? last_error : NULL);
	free(last);
	free(last_error);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool dirty;
	int which = 0, writes = 0;
	bool accepted = false;
	struct stat st;

	/* The previous input changed the store: start again from the
	 * pristine copy. Done here rather than at the end of that input so
	 * that the engine's new threads have long settled when libFuzzer
	 * looks for leaks after an input (LeakSanitizer can miss the
	 * pointers of a thread that has only just started). */
	if (dirty)
		restore();
	dirty = false;
	if (size && (data[0] == 1 || data[0] == 2)) {
		which = data[0];
		data++;
		size--;
	}
	while (writes < MAX_WRITES) {
		const uint8_t *sep = memchr(data, 0x1e, size);
		size_t n = sep ? (size_t)(sep - data) : size;

		one_write(which, data, n, &accepted);
		writes++;
		if (!sep)
			break;
		data = sep + 1;
		size -= n + 1;
	}
	for (int i = 0; i < 3; i++)
		if (fstat(events_fd[i], &st) == 0 &&
		    st.st_size > EVENTS_RESTORE_AT)
			accepted = true;
	dirty = accepted;
	return 0;
}
