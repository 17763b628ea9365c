/*
 * testworker.c - jobfs-testworker: a deterministic worker for the tests.
 *
 * It behaves like a real worker (chunk text on stdin, output on stdout or
 * in $JOBFS_OUTPUT, diagnostics on stderr, exit status as the verdict) but
 * every behaviour, failures included, is chosen by environment variables,
 * so a test can make chunk 3 fail on its first attempt without a shell
 * script and without any timing luck.
 *
 * Output (always written before a failure knob acts, unless it hangs):
 *   default         the input with a-z turned into A-Z
 *   TW_SIZE=N       N bytes (any value 0-255) from a generator seeded with
 *                   a hash of the input text: same text, same bytes
 *   TW_TO_FILE=1    write the output to the file $JOBFS_OUTPUT instead
 *   TW_STDOUT_JUNK=1  with TW_TO_FILE, also write a line to stdout (that
 *                   jobfs must ignore, since $JOBFS_OUTPUT exists)
 *   TW_NO_STDIN=1   never read stdin (the input text is then empty)
 *   TW_FDS=1        append "fds: 0 1 2\n": the descriptors open at start
 *   TW_SLEEP_MS=N   sleep N ms before writing the output (every chunk)
 *
 * Failure knobs; each acts only on the chunks in TW_CHUNKS ("3,5-7",
 * default every chunk) and only while JOBFS_ATTEMPT <= TW_FAIL_ATTEMPTS
 * (default: every attempt):
 *   TW_STDERR=N     write N bytes to stderr (lines; first and last marked)
 *   TW_FORK_HANG=1  start a grandchild "sleep 1000" in the background, then
 *                   hang
 *   TW_HANG=1       hang (before any output)
 *   TW_CRASH=1      raise SIGSEGV (after the output)
 *   TW_EXIT=N       exit with status N (after the output)
 *
 * Exit statuses of its own: 0 done, 100 a bad TW_* value, 101 an I/O
 * error (with a message on stderr).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define EXIT_USAGE 100
#define EXIT_IO 101

static void die(int code, const char *fmt, const char *arg)
{
	fprintf(stderr, "testworker: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n");
	exit(code);
}

/* A non-negative decimal from the environment, or dflt when unset or
 * empty. A value that is not a plain number is a usage error: a typo in a
 * test must not pass silently. */
static long long env_num(const char *name, long long dflt)
{
	const char *s = getenv(name);
	char *end;
	long long v;

	if (!s || !*s)
		return dflt;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || *end || v < 0)
		die(EXIT_USAGE, "bad number in %s", name);
	return v;
}

static int env_flag(const char *name)
{
	return env_num(name, 0) != 0;
}

/* Is chunk n in the list "3,5-7"? An unset or empty list means all. */
static int chunk_selected(const char *list, long long n)
{
	const char *p = list;

	if (!p || !*p)
		return 1;
	while (*p) {
		char *end;
		long long a, b;

		errno = 0;
		a = strtoll(p, &end, 10);
		if (end == p || errno)
			die(EXIT_USAGE, "bad TW_CHUNKS '%s'", list);
		b = a;
		p = end;
		if (*p == '-') {
			p++;
			b = strtoll(p, &end, 10);
			if (end == p)
				die(EXIT_USAGE, "bad TW_CHUNKS '%s'", list);
			p = end;
		}
		if (*p == ',')
			p++;
		else if (*p)
			die(EXIT_USAGE, "bad TW_CHUNKS '%s'", list);
		if (n >= a && n <= b)
			return 1;
	}
	return 0;
}

static void sleep_ms(long long ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
		/* the remainder is in ts */
	}
}

static _Noreturn void hang(void)
{
	for (;;)
		pause();
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* In a sanitizer build of this worker, a deliberate SIGSEGV must still kill
 * it by that signal, as the tests expect; ASan would otherwise catch it and
 * exit 1. (Unused in a normal build.) */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "handle_segv=0";
}

/* All of stdin, NUL-terminated for convenience. */
static char *read_all(int fd, size_t *len)
{
	size_t cap = 65536, n = 0;
	char *buf = malloc(cap + 1);

	if (!buf)
		die(EXIT_IO, "%s", "out of memory");
	for (;;) {
		ssize_t r;

		if (n == cap) {
			char *p;

			cap *= 2;
			p = realloc(buf, cap + 1);
			if (!p)
				die(EXIT_IO, "%s", "out of memory");
			buf = p;
		}
		r = read(fd, buf + n, cap - n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			die(EXIT_IO, "read stdin: %s", strerror(errno));
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	buf[n] = '\0';
	*len = n;
	return buf;
}

/* FNV-1a, 64 bits: simple, and enough to tell chunks apart. */
static uint64_t fnv1a(const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

/* The descriptors open now, as " 0 1 2", read before we open anything. */
static void list_fds(char *out, size_t len)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int self, fds[256], n = 0;
	size_t used = 0;

	out[0] = '\0';
	if (!d)
		return;
	self = dirfd(d);
	while ((de = readdir(d)) && n < 256) {
		char *end;
		long v = strtol(de->d_name, &end, 10);

		if (de->d_name[0] == '.' || *end || v == self)
			continue;
		fds[n++] = (int)v;
	}
	closedir(d);
	/* sort: readdir order is not promised */
	for (int i = 1; i < n; i++) {
		for (int k = i; k > 0 && fds[k - 1] > fds[k]; k--) {
			int t = fds[k];

			fds[k] = fds[k - 1];
			fds[k - 1] = t;
		}
	}
	for (int i = 0; i < n && used + 16 < len; i++)
		used += (size_t)snprintf(out + used, len - used, " %d", fds[i]);
}

static void write_stderr(long long n)
{
	static const char first[] = "TW-STDERR-FIRST\n";
	static const char last[] = "TW-STDERR-LAST\n";
	char line[64];
	long long left = n, lineno = 0;

	if (n >= (long long)(sizeof(first) + sizeof(last))) {
		write_all(2, first, sizeof(first) - 1);
		left -= (long long)(sizeof(first) - 1) +
			(long long)(sizeof(last) - 1);
	}
	while (left > 0) {
		int k = snprintf(line, sizeof(line), "stderr line %08lld\n",
				 lineno++);

		if (k > left)
			k = (int)left;
		if (write_all(2, line, (size_t)k) < 0)
			return;
		left -= k;
	}
	if (n >= (long long)(sizeof(first) + sizeof(last)))
		write_all(2, last, sizeof(last) - 1);
}

/* "sleep 1000" in a grandchild that stays in our process group, as a
 * careless shell pipeline would leave it. */
static void fork_sleeper(void)
{
	pid_t pid = fork();

	if (pid < 0)
		die(EXIT_IO, "fork: %s", strerror(errno));
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		/* let go of stdout and stderr, so that jobfs sees them close
		 * only when the worker itself goes */
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
			dup2(null, 2);
		}
		execlp("sleep", "sleep", "1000", (char *)NULL);
		_exit(127);
	}
}

static void emit(int fd, const char *p, size_t n)
{
	if (write_all(fd, p, n) < 0)
		die(EXIT_IO, "write output: %s", strerror(errno));
}

int main(void)
{
	long long chunk = env_num("JOBFS_CHUNK", 0);
	long long attempt = env_num("JOBFS_ATTEMPT", 1);
	long long fail_attempts = env_num("TW_FAIL_ATTEMPTS", -1);
	long long size = env_num("TW_SIZE", -1);
	long long sleep = env_num("TW_SLEEP_MS", 0);
	long long err_bytes = env_num("TW_STDERR", 0);
	long long exit_code = env_num("TW_EXIT", 0);
	int to_file = env_flag("TW_TO_FILE");
	int failing;
	char fds[1024];
	char *in, *out;
	size_t in_len, out_len;
	int ofd = 1;

	fds[0] = '\0';
	if (env_flag("TW_FDS"))
		list_fds(fds, sizeof(fds));
	failing = chunk_selected(getenv("TW_CHUNKS"), chunk) &&
		(fail_attempts < 0 || attempt <= fail_attempts);

	if (env_flag("TW_NO_STDIN")) {
		in = calloc(1, 1);
		in_len = 0;
	} else {
		in = read_all(0, &in_len);
	}
	if (sleep > 0)
		sleep_ms(sleep);
	if (failing && err_bytes > 0)
		write_stderr(err_bytes);
	if (failing && env_flag("TW_FORK_HANG")) {
		fork_sleeper();
		hang();
	}
	if (failing && env_flag("TW_HANG"))
		hang();

	if (size >= 0) {
		uint64_t x = fnv1a(in, in_len) | 1;

		out_len = (size_t)size;
		out = malloc(out_len + 1);
		if (!out)
			die(EXIT_IO, "%s", "out of memory");
		for (size_t i = 0; i < out_len; i++) {
			/* xorshift64 */
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			out[i] = (char)(x >> 56);
		}
	} else {
		out = in;
		out_len = in_len;
		for (size_t i = 0; i < out_len; i++) {
			if (out[i] >= 'a' && out[i] <= 'z')
				out[i] = (char)(out[i] - 'a' + 'A');
		}
	}
	if (to_file) {
		const char *path = getenv("JOBFS_OUTPUT");

		if (!path || !*path)
			die(EXIT_USAGE, "%s", "TW_TO_FILE=1 without JOBFS_OUTPUT");
		ofd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (ofd < 0)
			die(EXIT_IO, "open $JOBFS_OUTPUT: %s", strerror(errno));
		if (env_flag("TW_STDOUT_JUNK"))
			emit(1, "stdout junk, not the output\n", 28);
	}
	emit(ofd, out, out_len);
	if (fds[0]) {
		emit(ofd, "fds:", 4);
		emit(ofd, fds, strlen(fds));
		emit(ofd, "\n", 1);
	}
	if (ofd != 1 && close(ofd) < 0)
		die(EXIT_IO, "close $JOBFS_OUTPUT: %s", strerror(errno));

	if (failing && env_flag("TW_CRASH")) {
		struct rlimit none = { 0, 0 };

		setrlimit(RLIMIT_CORE, &none); /* no core file in scratch */
		signal(SIGSEGV, SIG_DFL);
		raise(SIGSEGV);
	}
	if (out != in)
		free(out);
	free(in);
	if (failing && exit_code)
		return (int)(exit_code & 255);
	return 0;
}
