/*
 * test_exec.c - the local executor, with real processes.
 *
 * Each test runs ordinary programs (true, sh, tr, env, ls, head, sleep)
 * through the executor and checks what the process saw or left behind:
 * its descriptors, environment, signal state, process group and exit
 * status, and that no process of its tree survives kill, reap, exec_free,
 * exec_close or the death of the process that owned the executor.
 * Run with the single argument --pdeathsig, the binary instead prints
 * its PR_GET_PDEATHSIG; test_pdeathsig() runs it that way as a worker.
 */
#define _GNU_SOURCE
#include "check.h"
#include "exec.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char g_tmp[] = "/tmp/test_exec.XXXXXX";
static char **g_env;  /* exec_env_build(NULL, NULL) of the test's environ */
static int g_null;    /* /dev/null, read-write */

/* ---- helpers --------------------------------------------------------- */

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static char *tmp_path(const char *name)
{
	static char buf[4][PATH_MAX];
	static int next;
	char *p = buf[next++ % 4];
	snprintf(p, PATH_MAX, "%s/%s", g_tmp, name);
	return p;
}

static int create_file(const char *name, const char *content, mode_t mode)
{
	int fd = open(tmp_path(name), O_WRONLY | O_CREAT | O_TRUNC, mode);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, content, strlen(content));
	close(fd);
	return n == (ssize_t)strlen(content) ? 0 : -1;
}

static int open_out(const char *name)
{
	return open(tmp_path(name), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
		    0644);
}

/* The whole file (up to len - 1 bytes) as a string; "" on error. */
static char *slurp(const char *name, char *buf, size_t len)
{
	buf[0] = '\0';
	int fd = open(tmp_path(name), O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return buf;
	size_t have = 0;
	ssize_t n;
	while (have + 1 < len && (n = read(fd, buf + have, len - 1 - have)) > 0)
		have += (size_t)n;
	buf[have] = '\0';
	close(fd);
	return buf;
}

/* Wait up to ms for the attempt to end: 0 or -ETIMEDOUT. */
static int wait_end(struct executor *ex, struct exec_attempt *a, int ms)
{
	struct pollfd p = { .fd = exec_fd(ex, a), .events = POLLIN };
	int r;
	while ((r = poll(&p, 1, ms)) < 0 && errno == EINTR)
		;
	return r == 1 ? 0 : -ETIMEDOUT;
}

/* Run argv to completion with the given fds; returns exec_start's or
 * exec_reap's error, or 0 with *res filled. */
static int run_fds(struct executor *ex, char *const *argv, char *const *envp,
		   int in, int out, int err, uint64_t max_output,
		   struct exec_result *res)
{
	struct exec_request req = {
		.argv = argv, .envp = envp, .cwd = g_tmp,
		.stdin_fd = in, .stdout_fd = out, .stderr_fd = err,
		.max_output = max_output,
	};
	struct exec_attempt *a;
	memset(res, 0, sizeof *res);
	int rc = exec_start(ex, &req, &a);
	if (rc < 0)
		return rc;
	rc = wait_end(ex, a, 10000);
	if (rc == 0)
		rc = exec_reap(ex, a, res);
	exec_free(ex, a);
	return rc;
}

static int run(struct executor *ex, char *const *argv, struct exec_result *res)
{
	return run_fds(ex, argv, g_env, g_null, g_null, g_null, 0, res);
}

static const char *describe(const struct exec_result *r, char *const *argv,
			    int is_shell)
{
	static char buf[256];
	exec_describe(r, argv, is_shell, buf, sizeof buf);
	return buf;
}

/* Read one line (a pid) from fd within 5 s; 0 on failure. */
static pid_t read_pid(int fd)
{
	char buf[32];
	size_t have = 0;
	while (have + 1 < sizeof buf) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 5000) != 1)
			break;
		ssize_t n = read(fd, buf + have, 1);
		if (n <= 0)
			break;
		if (buf[have] == '\n')
			break;
		have += (size_t)n;
	}
	buf[have] = '\0';
	return (pid_t)atoi(buf);
}

/* State, parent and process group of a process from /proc; -1 if gone. */
static int proc_stat(const char *pid, char *state, int *ppid, int *pgrp)
{
	char path[64], buf[512];
	snprintf(path, sizeof path, "/proc/%s/stat", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	char *rp = strrchr(buf, ')'); /* comm may hold spaces and parens */
	if (rp == NULL || sscanf(rp + 1, " %c %d %d", state, ppid, pgrp) != 3)
		return -1;
	return 0;
}

/* How many processes match: in group pgid (pgid > 0) or children of ppid
 * (ppid > 0), alive (zombie == 0) or zombies (zombie == 1). Orphans are
 * reaped by whatever PID 1 the test runs under, maybe never, so a dead
 * process of a tree is one in state Z or X. */
static int count_procs(pid_t pgid, pid_t ppid_want, int zombie)
{
	DIR *d = opendir("/proc");
	int count = 0;
	struct dirent *e;
	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL) {
		char state;
		int ppid, pgrp;
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		if (proc_stat(e->d_name, &state, &ppid, &pgrp) < 0)
			continue;
		if (pgid > 0 && pgrp != pgid)
			continue;
		if (ppid_want > 0 && ppid != ppid_want)
			continue;
		int dead = state == 'Z' || state == 'X';
		if (dead == zombie)
			count++;
	}
	closedir(d);
	return count;
}

static int live_in_group(pid_t pgid)
{
	return count_procs(pgid, 0, 0);
}

/* Poll every 100 ms, 20 times, until the group has no live process;
 * returns how many were still alive at the end. */
static int wait_group_dead(pid_t pgid)
{
	int live = live_in_group(pgid);
	for (int i = 0; i < 20 && live != 0; i++) {
		sleep_ms(100);
		live = live_in_group(pgid);
	}
	return live;
}

/* Poll until the group has at least n live processes (the tree is up). */
static int wait_group_size(pid_t pgid, int n)
{
	int live = live_in_group(pgid);
	for (int i = 0; i < 50 && live < n; i++) {
		sleep_ms(20);
		live = live_in_group(pgid);
	}
	return live;
}

/* Open descriptors of a process below 1000 (valgrind keeps its own at
 * the top of the table, even in a forked child); -1 on error. */
static int count_fds_of(const char *pid)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%s/fd", pid);
	DIR *d = opendir(path);
	struct dirent *e;
	int n = 0;
	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.' && atoi(e->d_name) < 1000)
			n++;
	closedir(d);
	return n;
}

static int count_fds(void)
{
	return count_fds_of("self");
}

/* The pid of our child named jobfs-watchdog, or 0. */
static pid_t find_watchdog(void)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	pid_t found = 0;
	if (d == NULL)
		return 0;
	while (found == 0 && (e = readdir(d)) != NULL) {
		char state, path[300], comm[32] = "";
		int ppid, pgrp;
		if (e->d_name[0] < '0' || e->d_name[0] > '9' ||
		    proc_stat(e->d_name, &state, &ppid, &pgrp) < 0 ||
		    ppid != getpid())
			continue;
		snprintf(path, sizeof path, "/proc/%s/comm", e->d_name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		ssize_t n = read(fd, comm, sizeof comm - 1);
		close(fd);
		comm[n > 0 ? n : 0] = '\0';
		if (strcmp(comm, "jobfs-watchdog\n") == 0)
			found = (pid_t)atoi(e->d_name);
	}
	closedir(d);
	return found;
}

/* Start a shell tree whose first line of output is its pid ($$) and
 * return that, with the attempt in *out. */
static pid_t start_tree(struct executor *ex, const char *cmd,
			struct exec_attempt **out)
{
	char *argv[] = { "/bin/sh", "-c", (char *)cmd, NULL };
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return 0;
	struct exec_request req = {
		.argv = argv, .envp = g_env, .cwd = g_tmp,
		.stdin_fd = g_null, .stdout_fd = p[1], .stderr_fd = g_null,
	};
	pid_t pgid = 0;
	if (exec_start(ex, &req, out) == 0)
		pgid = read_pid(p[0]);
	close(p[0]);
	close(p[1]);
	return pgid;
}

/* ---- tests ----------------------------------------------------------- */

static void test_describe(void)
{
	char *prog[] = { "espeak-ng", NULL };
	char *sh[] = { "/bin/sh", "-c", "  ./w.sh --fast; echo", NULL };
	char *empty_sh[] = { "/bin/sh", "-c", "", NULL };
	struct exec_result r = { 0 };
	char small[8];

	r.code = 3;
	CHECK(strcmp(describe(&r, prog, 0), "exit 3") == 0);
	r.code = 127;
	CHECK(strcmp(describe(&r, prog, 0), "exit 127") == 0);
	CHECK(strcmp(describe(&r, sh, 1), "command not found: ./w.sh") == 0);
	CHECK(strcmp(describe(&r, empty_sh, 1), "exit 127") == 0);
	r.code = 126;
	CHECK(strcmp(describe(&r, sh, 1), "not executable: ./w.sh") == 0);
	r.signaled = 1;
	r.code = SIGSEGV;
	CHECK(strcmp(describe(&r, prog, 0), "killed by SIGSEGV") == 0);
	r.code = 99;
	CHECK(strcmp(describe(&r, prog, 0), "killed by signal 99") == 0);
	r.exec_errno = ENOENT;
	CHECK(strcmp(describe(&r, prog, 0), "command not found: espeak-ng") == 0);
	r.exec_errno = EACCES;
	CHECK(strcmp(describe(&r, prog, 0), "not executable: espeak-ng") == 0);
	r.exec_errno = E2BIG;
	CHECK(strcmp(describe(&r, prog, 0),
		     "cannot run espeak-ng: Argument list too long") == 0);
	exec_describe(&r, prog, 0, small, sizeof small);
	CHECK(strcmp(small, "cannot ") == 0);
}

static int env_count(char **env, const char *kv)
{
	int n = 0;
	for (size_t i = 0; env[i] != NULL; i++)
		n += strcmp(env[i], kv) == 0;
	return n;
}

static int env_has_key(char **env, const char *key)
{
	size_t k = strlen(key);
	for (size_t i = 0; env[i] != NULL; i++)
		if (strncmp(env[i], key, k) == 0 && env[i][k] == '=')
			return 1;
	return 0;
}

static void test_env_build(void)
{
	char *a[] = { "JOBFS_A=1", "JOBFS_B=2", "HOME=/a", NULL };
	char *b[] = { "JOBFS_A=3", "NOEQUALS", "=empty", "HOME=/b", NULL };
	char **env = exec_env_build(a, b);
	CHECK(env != NULL);
	if (env == NULL)
		return;
	CHECK(env_count(env, "JOBFS_A=3") == 1);
	CHECK(!env_has_key(env, "JOBFS_A") || env_count(env, "JOBFS_A=1") == 0);
	CHECK(env_count(env, "JOBFS_B=2") == 1);
	CHECK(env_count(env, "HOME=/b") == 1);
	CHECK(!env_has_key(env, "HOME") || env_count(env, "HOME=/a") == 0);
	CHECK(env_count(env, "LC_JOBFS_TEST=x") == 1);
	CHECK(env_count(env, "TZ=UTC") == 1);
	CHECK(env_has_key(env, "PATH"));
	CHECK(!env_has_key(env, "SECRET_TOKEN"));
	CHECK(!env_has_key(env, "LD_FOO"));
	CHECK(!env_has_key(env, "LD_LIBRARY_PATH"));
	CHECK(!env_has_key(env, "NOEQUALS"));
	CHECK(!env_has_key(env, ""));
	exec_env_free(env);

	/* PATH falls back to a default, once. */
	char *saved = getenv("PATH") ? strdup(getenv("PATH")) : NULL;
	unsetenv("PATH");
	env = exec_env_build(NULL, NULL);
	CHECK(env != NULL);
	if (env != NULL) {
		CHECK(env_count(env, "PATH=/usr/local/bin:/usr/bin:/bin") == 1);
		exec_env_free(env);
	}
	if (saved != NULL)
		setenv("PATH", saved, 1);
	free(saved);
	exec_env_free(NULL);
}

static void test_exit_status(struct executor *ex)
{
	struct exec_result r;
	char *t[] = { "true", NULL };
	char *f[] = { "false", NULL };
	char *e3[] = { "/bin/sh", "-c", "exit 3", NULL };
	char *segv[] = { "/bin/sh", "-c", "kill -SEGV $$", NULL };

	CHECK(run(ex, t, &r) == 0);
	CHECK(r.exec_errno == 0 && r.signaled == 0 && r.code == 0);
	CHECK(strcmp(describe(&r, t, 0), "exit 0") == 0);
	CHECK(run(ex, f, &r) == 0);
	CHECK(r.exec_errno == 0 && r.signaled == 0 && r.code == 1);
	CHECK(run(ex, e3, &r) == 0);
	CHECK(r.exec_errno == 0 && r.signaled == 0);
	CHECK_EQ_U64(r.code, 3);
	CHECK(strcmp(describe(&r, e3, 1), "exit 3") == 0);
	CHECK(run(ex, segv, &r) == 0);
	CHECK(r.exec_errno == 0 && r.signaled == 1);
	CHECK_EQ_U64(r.code, SIGSEGV);
	CHECK(strcmp(describe(&r, segv, 1), "killed by SIGSEGV") == 0);
}

static void test_cpu_time(struct executor *ex)
{
	struct exec_result r;
	char *busy[] = { "/bin/sh", "-c",
			 "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done",
			 NULL };
	char *t[] = { "true", NULL };
	CHECK(run(ex, busy, &r) == 0);
	CHECK(r.exec_errno == 0 && r.code == 0);
	CHECK(r.cpu_seconds > 0.01 && r.cpu_seconds < 60);
	CHECK(run(ex, t, &r) == 0);
	CHECK(r.cpu_seconds >= 0 && r.cpu_seconds < 0.5);
}

static void test_exec_errors(struct executor *ex)
{
	struct exec_result r;
	char buf[256];

	char *missing[] = { "espeek-ng-nonexistent", NULL };
	CHECK(run(ex, missing, &r) == 0);
	CHECK_EQ_U64(r.exec_errno, ENOENT);
	CHECK(strcmp(describe(&r, missing, 0),
		     "command not found: espeek-ng-nonexistent") == 0);

	char *missing_abs[] = { "/nonexistent-dir/prog", NULL };
	CHECK(run(ex, missing_abs, &r) == 0);
	CHECK_EQ_U64(r.exec_errno, ENOENT);

	/* A name not found in PATH must not be run from the cwd. */
	CHECK(create_file("in-cwd-only", "#!/bin/sh\nexit 0\n", 0755) == 0);
	char *cwd_only[] = { "in-cwd-only", NULL };
	CHECK(run(ex, cwd_only, &r) == 0);
	CHECK_EQ_U64(r.exec_errno, ENOENT);

	CHECK(create_file("noexec", "#!/bin/sh\nexit 0\n", 0644) == 0);
	char *noexec[] = { tmp_path("noexec"), NULL };
	CHECK(run(ex, noexec, &r) == 0);
	CHECK_EQ_U64(r.exec_errno, EACCES);
	snprintf(buf, sizeof buf, "not executable: %s", noexec[0]);
	CHECK(strcmp(describe(&r, noexec, 0), buf) == 0);

	/* PATH search in envp: a non-executable match gives EACCES unless
	 * an executable one comes later, as with execvp. */
	CHECK(mkdir(tmp_path("bin1"), 0755) == 0);
	CHECK(mkdir(tmp_path("bin2"), 0755) == 0);
	CHECK(create_file("bin1/jobfs-prog", "#!/bin/sh\nexit 5\n", 0644) == 0);
	CHECK(create_file("bin2/jobfs-prog", "#!/bin/sh\nexit 7\n", 0755) == 0);
	char path1[PATH_MAX + 8], path12[2 * PATH_MAX + 16];
	snprintf(path1, sizeof path1, "PATH=%s", tmp_path("bin1"));
	snprintf(path12, sizeof path12, "PATH=%s:%s", tmp_path("bin1"),
		 tmp_path("bin2"));
	char *env1[] = { path1, NULL };
	char *env12[] = { path12, NULL };
	char *prog[] = { "jobfs-prog", NULL };
	CHECK(run_fds(ex, prog, env1, g_null, g_null, g_null, 0, &r) == 0);
	CHECK_EQ_U64(r.exec_errno, EACCES);
	CHECK(strcmp(describe(&r, prog, 0), "not executable: jobfs-prog") == 0);
	CHECK(run_fds(ex, prog, env12, g_null, g_null, g_null, 0, &r) == 0);
	CHECK(r.exec_errno == 0 && r.signaled == 0 && r.code == 7);
	/* ...and the daemon's own PATH is not consulted. */
	char *t[] = { "true", NULL };
	CHECK(run_fds(ex, t, env1, g_null, g_null, g_null, 0, &r) == 0);
	CHECK_EQ_U64(r.exec_errno, ENOENT);

	char *sh_missing[] = { "/bin/sh", "-c", "nonexistent-cmd-xyz", NULL };
	CHECK(run(ex, sh_missing, &r) == 0);
	CHECK(r.exec_errno == 0 && r.signaled == 0 && r.code == 127);
	CHECK(strcmp(describe(&r, sh_missing, 1),
		     "command not found: nonexistent-cmd-xyz") == 0);

	char *sh_noexec[] = { "/bin/sh", "-c", "./noexec arg", NULL };
	CHECK(run(ex, sh_noexec, &r) == 0);
	CHECK(r.exec_errno == 0 && r.signaled == 0 && r.code == 126);
	CHECK(strcmp(describe(&r, sh_noexec, 1), "not executable: ./noexec") == 0);

	/* Bad requests fail in exec_start, before any fork. */
	struct exec_attempt *a;
	struct exec_request bad = { .argv = t, .envp = g_env, .cwd = g_tmp,
				    .stdin_fd = g_null, .stdout_fd = 999,
				    .stderr_fd = g_null };
	CHECK(exec_start(ex, &bad, &a) == -EBADF);
	char *none[] = { NULL };
	bad.argv = none;
	bad.stdout_fd = g_null;
	CHECK(exec_start(ex, &bad, &a) == -EINVAL);
}

static void test_stdio(struct executor *ex)
{
	struct exec_result r;
	char buf[256];

	CHECK(create_file("in.txt", "hello, World 42\n", 0644) == 0);
	int in = open(tmp_path("in.txt"), O_RDONLY | O_CLOEXEC);
	int out = open_out("out.txt");
	int err = open_out("err.txt");
	char *tr[] = { "tr", "a-z", "A-Z", NULL };
	CHECK(run_fds(ex, tr, g_env, in, out, err, 0, &r) == 0);
	CHECK(r.exec_errno == 0 && r.code == 0);
	CHECK(strcmp(slurp("out.txt", buf, sizeof buf), "HELLO, WORLD 42\n") == 0);
	CHECK(strcmp(slurp("err.txt", buf, sizeof buf), "") == 0);
	close(in);
	close(out);
	close(err);

	/* Sources that are themselves 0..2, crossed: the child's stdout is
	 * our fd 2 and its stderr our fd 1. A naive dup2 order loses one. */
	int fa = open_out("a.txt"), fb = open_out("b.txt");
	fflush(stdout);
	fflush(stderr);
	int save1 = dup(1), save2 = dup(2);
	dup2(fa, 1);
	dup2(fb, 2);
	char *sh[] = { "/bin/sh", "-c", "echo out; echo err >&2", NULL };
	int rc = run_fds(ex, sh, g_env, g_null, 2, 1, 0, &r);
	dup2(save1, 1);
	dup2(save2, 2);
	close(save1);
	close(save2);
	close(fa);
	close(fb);
	CHECK(rc == 0 && r.code == 0);
	CHECK(strcmp(slurp("a.txt", buf, sizeof buf), "err\n") == 0);
	CHECK(strcmp(slurp("b.txt", buf, sizeof buf), "out\n") == 0);

	/* The working directory. */
	char real[PATH_MAX], want[PATH_MAX + 2];
	CHECK(realpath(g_tmp, real) != NULL);
	snprintf(want, sizeof want, "%s\n", real);
	out = open_out("pwd.txt");
	char *pwd[] = { "/bin/pwd", NULL };
	CHECK(run_fds(ex, pwd, g_env, g_null, out, g_null, 0, &r) == 0);
	close(out);
	CHECK(strcmp(slurp("pwd.txt", buf, sizeof buf), want) == 0);
}

static void test_fd_hygiene(struct executor *ex)
{
	struct exec_result r;
	char buf[256];
	int leak[4];
	int p[2];

	leak[0] = open("/dev/null", O_RDONLY);        /* no O_CLOEXEC */
	leak[1] = dup(leak[0]);
	CHECK(pipe(p) == 0);
	leak[2] = p[0];
	leak[3] = p[1];
	int out = open("/tmp", O_TMPFILE | O_RDWR, 0600); /* not CLOEXEC either */
	if (out < 0)
		out = open_out("fds.txt");
	char *ls[] = { "ls", "/proc/self/fd", NULL };
	CHECK(run_fds(ex, ls, g_env, g_null, out, g_null, 0, &r) == 0);
	CHECK(r.code == 0);
	ssize_t n = pread(out, buf, sizeof buf - 1, 0);
	buf[n > 0 ? n : 0] = '\0';
	/* 0, 1, 2 and the directory ls is reading. */
	CHECK(strcmp(buf, "0\n1\n2\n3\n") == 0);
	close(out);
	for (int i = 0; i < 4; i++)
		close(leak[i]);
}

static void test_environment(struct executor *ex)
{
	struct exec_result r;
	char buf[8192];
	char *extra[] = { "JOBFS_CHUNK=17", NULL };
	char **env = exec_env_build(extra, NULL);
	CHECK(env != NULL);
	if (env == NULL)
		return;
	int out = open_out("env.txt");
	char *argv[] = { "env", NULL };
	CHECK(run_fds(ex, argv, env, g_null, out, g_null, 0, &r) == 0);
	close(out);
	CHECK(r.code == 0);
	slurp("env.txt", buf, sizeof buf);
	CHECK(strncmp(buf, "PATH=", 5) == 0 || strstr(buf, "\nPATH=") != NULL);
	CHECK(strstr(buf, "JOBFS_CHUNK=17\n") != NULL);
	CHECK(strstr(buf, "SECRET_TOKEN") == NULL);
	CHECK(strstr(buf, "LD_FOO") == NULL);
	CHECK(strstr(buf, "LD_") == NULL);
	exec_env_free(env);
}

static void test_signal_state(struct executor *ex)
{
	struct exec_result r;
	char buf[4096];
	sigset_t usr1, old;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, &old);
	void (*old_pipe)(int) = signal(SIGPIPE, SIG_IGN);
	void (*old_hup)(int) = signal(SIGHUP, SIG_IGN);

	int out = open_out("status.txt");
	char *argv[] = { "cat", "/proc/self/status", NULL };
	CHECK(run_fds(ex, argv, g_env, g_null, out, g_null, 0, &r) == 0);
	close(out);
	signal(SIGPIPE, old_pipe);
	signal(SIGHUP, old_hup);
	sigprocmask(SIG_SETMASK, &old, NULL);

	slurp("status.txt", buf, sizeof buf);
	CHECK(strstr(buf, "\nSigBlk:\t0000000000000000\n") != NULL);
	CHECK(strstr(buf, "\nSigIgn:\t0000000000000000\n") != NULL);
}

/* The worker gets SIGKILL when its parent thread dies: run this very
 * binary in its --pdeathsig mode, which prints PR_GET_PDEATHSIG. */
static void test_pdeathsig(struct executor *ex, const char *self)
{
	struct exec_result r;
	char want[16], buf[64];
	int out = open_out("pdeathsig.txt");
	char *argv[] = { (char *)self, "--pdeathsig", NULL };
	CHECK(run_fds(ex, argv, g_env, g_null, out, g_null, 0, &r) == 0);
	close(out);
	CHECK(r.exec_errno == 0 && r.code == 0);
	snprintf(want, sizeof want, "%d\n", SIGKILL);
	CHECK(strcmp(slurp("pdeathsig.txt", buf, sizeof buf), want) == 0);
}

static void test_tree_kill(struct executor *ex)
{
	struct exec_attempt *a = NULL;
	struct exec_result r;
	pid_t pgid = start_tree(ex, "echo $$; sleep 1000 | cat & sleep 1000", &a);
	CHECK(pgid > 0 && a != NULL);
	if (pgid <= 0 || a == NULL)
		return;

	char state;
	int ppid, pgrp;
	char name[16];
	snprintf(name, sizeof name, "%d", (int)pgid);
	CHECK(proc_stat(name, &state, &ppid, &pgrp) == 0);
	CHECK_EQ_U64(pgrp, pgid);     /* a group of its own */
	CHECK_EQ_U64(ppid, getpid());
	CHECK(wait_group_size(pgid, 4) >= 4); /* sh, sleep | cat, sleep */

	CHECK(exec_reap(ex, a, &r) == -EAGAIN);
	exec_kill(ex, a);
	exec_kill(ex, a); /* idempotent */
	CHECK(wait_end(ex, a, 5000) == 0);
	CHECK(exec_reap(ex, a, &r) == 0);
	CHECK(r.signaled == 1 && r.code == SIGKILL);
	CHECK(strcmp(describe(&r, NULL, 1), "killed by SIGKILL") == 0);
	exec_kill(ex, a); /* after reap: a no-op, must not signal anyone */
	exec_free(ex, a);
	CHECK_EQ_U64(wait_group_dead(pgid), 0);
}

static void test_leftovers(struct executor *ex)
{
	struct exec_attempt *a = NULL;
	struct exec_result r;
	pid_t pgid = start_tree(ex, "echo $$; (sleep 1000 &) ; exit 0", &a);
	CHECK(pgid > 0 && a != NULL);
	if (pgid <= 0 || a == NULL)
		return;
	CHECK(wait_end(ex, a, 5000) == 0);
	/* The main process has exited; its orphan still runs. */
	CHECK(live_in_group(pgid) >= 1);
	CHECK(exec_reap(ex, a, &r) == 0);
	CHECK(r.signaled == 0 && r.code == 0);
	exec_free(ex, a);
	CHECK_EQ_U64(wait_group_dead(pgid), 0);
}

static void test_free_running(struct executor *ex)
{
	struct exec_attempt *a = NULL;
	pid_t pgid = start_tree(ex, "echo $$; sleep 1000 & sleep 1000", &a);
	CHECK(pgid > 0 && a != NULL);
	if (pgid <= 0 || a == NULL)
		return;
	CHECK(wait_group_size(pgid, 3) >= 3);
	exec_free(ex, a); /* kills and reaps */
	CHECK_EQ_U64(wait_group_dead(pgid), 0);
	CHECK_EQ_U64(count_procs(0, getpid(), 1), 0); /* leader reaped */
}

/* exec_close() kills what runs; the attempt outlives the executor. */
static void test_close_running(void)
{
	struct executor *ex;
	struct exec_attempt *a = NULL;
	struct exec_result r;
	CHECK(exec_local_open(&ex) == 0);
	pid_t pgid = start_tree(ex, "echo $$; sleep 1000 & sleep 1000", &a);
	CHECK(pgid > 0 && a != NULL);
	if (pgid <= 0 || a == NULL) {
		exec_close(ex);
		return;
	}
	CHECK(wait_group_size(pgid, 3) >= 3);
	exec_close(ex);
	CHECK(wait_end(ex, a, 5000) == 0);
	CHECK(exec_reap(ex, a, &r) == 0);
	CHECK(r.signaled == 1 && r.code == SIGKILL);
	exec_free(ex, a);
	CHECK_EQ_U64(wait_group_dead(pgid), 0);
}

/*
 * The daemon dies with kill -9 while a tree runs: the main process dies
 * of PDEATHSIG, and the background sleep, which nothing else would kill,
 * is killed by the watchdog. Run while the test has no executor open, so
 * the forked "daemon" shares no watchdog pipe with us.
 */
static void test_watchdog(void)
{
	int p[2];
	CHECK(pipe2(p, O_CLOEXEC) == 0);
	pid_t daemon = fork();
	if (daemon == 0) {
		struct executor *ex;
		struct exec_attempt *a;
		char *argv[] = { "/bin/sh", "-c",
				 "echo $$; sleep 1000 & sleep 1000", NULL };
		struct exec_request req = {
			.argv = argv, .envp = g_env, .cwd = g_tmp,
			.stdin_fd = g_null, .stdout_fd = p[1],
			.stderr_fd = g_null,
		};
		close(p[0]);
		if (exec_local_open(&ex) < 0 || exec_start(ex, &req, &a) < 0)
			_exit(1);
		close(p[1]);
		for (;;)
			pause();
	}
	close(p[1]);
	CHECK(daemon > 0);
	if (daemon < 0) {
		close(p[0]);
		return;
	}
	pid_t pgid = read_pid(p[0]);
	close(p[0]);
	CHECK(pgid > 0);
	if (pgid > 0)
		CHECK(wait_group_size(pgid, 3) >= 3);
	kill(daemon, SIGKILL);
	int status;
	CHECK(waitpid(daemon, &status, 0) == daemon);
	if (pgid > 0)
		CHECK_EQ_U64(wait_group_dead(pgid), 0);
}

/* The watchdog holds only its pipe, has a session of its own and shrugs
 * off the signals a terminal or an init script would send. */
static void test_watchdog_process(void)
{
	pid_t wd = find_watchdog();
	CHECK(wd > 0);
	if (wd <= 0)
		return;
	char name[16];
	snprintf(name, sizeof name, "%d", (int)wd);
	CHECK_EQ_U64(count_fds_of(name), 1); /* its pipe */
	CHECK(getsid(wd) == wd && getsid(wd) != getsid(0));
	kill(wd, SIGTERM);
	kill(wd, SIGINT);
	kill(wd, SIGHUP);
	sleep_ms(100);
	char state;
	int ppid, pgrp;
	CHECK(proc_stat(name, &state, &ppid, &pgrp) == 0 && state != 'Z');
}

static void test_max_output(struct executor *ex)
{
	struct exec_result r;
	int out = open_out("big.bin");
	char *argv[] = { "head", "-c", "10000000", "/dev/zero", NULL };
	CHECK(run_fds(ex, argv, g_env, g_null, out, g_null, 1000000, &r) == 0);
	struct stat st;
	CHECK(fstat(out, &st) == 0);
	close(out);
	CHECK(r.exec_errno == 0);
	CHECK((r.signaled && r.code == SIGXFSZ) || (!r.signaled && r.code != 0));
	CHECK(st.st_size > 0 && st.st_size <= 1000000);
	CHECK(strcmp(describe(&r, argv, 0), "killed by SIGXFSZ") == 0 ||
	      !r.signaled);
}

static void test_many(struct executor *ex)
{
	struct exec_result r;
	char *t[] = { "true", NULL };
	int fds_before = count_fds();
	int failed = 0;
	for (int i = 0; i < 2000; i++) {
		if (run(ex, t, &r) != 0 || r.exec_errno != 0 || r.signaled ||
		    r.code != 0)
			failed++;
	}
	CHECK_EQ_U64(failed, 0);
	CHECK_EQ_U64(count_procs(0, getpid(), 1), 0); /* no zombies */
	CHECK_EQ_U64(count_fds(), fds_before);
}

static void remove_tree(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		char p[PATH_MAX];
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
		if (e->d_type == DT_DIR)
			remove_tree(p);
		else
			unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--pdeathsig") == 0) {
		int sig = -1;
		prctl(PR_GET_PDEATHSIG, &sig, 0, 0, 0);
		printf("%d\n", sig);
		return 0;
	}
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n <= 0) {
		perror("readlink /proc/self/exe");
		return 1;
	}
	self[n] = '\0';
	if (mkdtemp(g_tmp) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	/* What a daemon might carry that a worker must not see. */
	setenv("SECRET_TOKEN", "abc", 1);
	setenv("LD_FOO", "1", 1);
	setenv("LC_JOBFS_TEST", "x", 1);
	setenv("TZ", "UTC", 1);
	g_env = exec_env_build(NULL, NULL);
	g_null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (g_env == NULL || g_null < 0) {
		perror("setup");
		return 1;
	}

	test_describe();
	test_env_build();
	test_watchdog();
	test_close_running();

	struct executor *ex;
	CHECK(exec_local_open(&ex) == 0);
	test_exit_status(ex);
	test_cpu_time(ex);
	test_exec_errors(ex);
	test_stdio(ex);
	test_fd_hygiene(ex);
	test_environment(ex);
	test_signal_state(ex);
	test_pdeathsig(ex, self);
	test_tree_kill(ex);
	test_leftovers(ex);
	test_free_running(ex);
	test_watchdog_process();
	test_max_output(ex);
	test_many(ex);
	exec_close(ex);
	CHECK_EQ_U64(count_procs(0, getpid(), 0), 0); /* watchdogs reaped */
	CHECK_EQ_U64(count_procs(0, getpid(), 1), 0);

	close(g_null);
	exec_env_free(g_env);
	remove_tree(g_tmp);
	return check_done();
}
