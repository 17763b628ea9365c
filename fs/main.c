/*
 * main.c - jobfs: options, the store lock, daemon start-up and shutdown.
 *
 * Start-up, in order, and why:
 *   1. parse options (fuse_opt for ours, fuse_parse_cmdline for FUSE's);
 *   2. check the mountpoint, clearing a dead mount a crashed daemon left;
 *   3. fork into the background (unless -f), keeping a pipe back to the
 *      parent so that every later error is still printed on the terminal
 *      and sets the exit code;
 *   4. lock the store (flock: a dead daemon's lock vanishes with it);
 *   5. start the executor's watchdog before any thread or LMDB descriptor
 *      exists, so it inherits nothing;
 *   6. open the engine (LMDB, recovery), mount, start the engine, tell
 *      the parent, serve.
 * Shutdown (SIGTERM, SIGINT, SIGHUP, or an unmount) leaves the FUSE loop;
 * the mount goes first, then the engine gives running chunks their grace
 * period and persists everything, and the daemon exits 0. Another of
 * those signals during the grace period ends it at once (late_signals).
 */
#define FUSE_USE_VERSION 314
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "db.h"
#include "engine.h"
#include "exec.h"
#include "fsops.h"
#include "objects.h"
#include "sha.h"

#ifndef JOBFS_VERSION
#define JOBFS_VERSION "0"
#endif

struct options {
	char *store;
	unsigned max_running;
	double grace;
	int no_resume;
	unsigned long long max_input;
	unsigned max_chunks;
	unsigned max_jobs;
	unsigned long long map_size;
	unsigned readahead_kb;
	unsigned inline_max;
	int help, version;
};

#define OPT(t, p) { t, offsetof(struct options, p), 1 }
static const struct fuse_opt option_spec[] = {
	OPT("--store=%s", store),
	OPT("--max-running=%u", max_running),
	OPT("--grace=%lf", grace),
	OPT("--no-resume", no_resume),
	OPT("--max-input=%llu", max_input),
	OPT("--max-chunks=%u", max_chunks),
	OPT("--max-jobs=%u", max_jobs),
	OPT("--map-size=%llu", map_size),
	OPT("--readahead=%u", readahead_kb),
	OPT("--inline-max=%u", inline_max),
	OPT("-h", help),
	OPT("--help", help),
	OPT("-V", version),
	OPT("--version", version),
	FUSE_OPT_END
};

/* Does word name an option of option_spec that takes a value (its
 * template is "--opt=...")? */
static int takes_value(const char *word)
{
	for (const struct fuse_opt *t = option_spec; t->templ; t++) {
		const char *eq = strchr(t->templ, '=');

		if (eq && strlen(word) == (size_t)(eq - t->templ) &&
		    !strncmp(word, t->templ, (size_t)(eq - t->templ)))
			return 1;
	}
	return 0;
}

/*
 * Every option that takes a value may be given as "--opt=VALUE" or as
 * "--opt VALUE". fuse_opt would match a "--opt %s" template against
 * "--opt=VALUE" too and take "=VALUE" for the value, so only the '='
 * templates exist, and this joins the two-word form into one word first
 * (up to a "--", after which everything is an argument). Sets *out to a
 * copy of argv whose joined words are malloc'ed, kept for the life of the
 * process. Returns 0, or -1: an option without its value (after a
 * message), or no memory.
 */
static int join_values(int argc, char *argv[], char ***out, int *outc)
{
	char **v = calloc((size_t)argc + 1, sizeof(*v));
	int n = 0, i;

	if (!v)
		return -1;
	for (i = 0; i < argc; i++) {
		if (i > 0 && !strcmp(argv[i], "--")) {
			while (i < argc)
				v[n++] = argv[i++];
			break;
		}
		if (i == 0 || !takes_value(argv[i])) {
			v[n++] = argv[i];
			continue;
		}
		if (i + 1 >= argc) {
			fprintf(stderr, "jobfs: option '%s' needs a value\n",
				argv[i]);
			break;
		}
		if (asprintf(&v[n], "%s=%s", argv[i], argv[i + 1]) < 0) {
			v[n] = NULL;
			break;
		}
		n++;
		i++;
	}
	/* on failure too: what was joined stays reachable until exit */
	*out = v;
	*outc = n;
	return i < argc ? -1 : 0;
}

static void usage(const char *prog)
{
	printf("usage: %s [options] MOUNTPOINT\n\n"
"jobfs makes each long, chunked batch job a directory: write a spec and an\n"
"input, echo resume > control, and every chunk that finishes is kept, even\n"
"across crashes.\n\n"
"options (a value may follow '=' or a space):\n"
"    --store DIR          where jobs live (default $XDG_STATE_HOME/jobfs,\n"
"                         else ~/.local/state/jobfs)\n"
"    --max-running N      chunks running at once over all jobs (default:\n"
"                         the number of CPUs)\n"
"    --grace SECONDS      at shutdown, how long running chunks may take to\n"
"                         finish before they are killed (default 10)\n"
"    --no-resume          do not resume jobs that were running\n"
"    --max-input=BYTES    largest input per job (default 4294967296)\n"
"    --max-chunks=N       most chunks per job (default 1000000)\n"
"    --max-jobs=N         most jobs (default 10000)\n"
"    --map-size=BYTES     initial LMDB map size (default 1 GiB; it\n"
"                         doubles when three quarters full)\n"
"    --readahead=KB       the mount's read-ahead, set when run as root\n"
"                         (default 1024; 0 leaves the kernel's 128)\n"
"    --inline-max=BYTES   chunk outputs up to this size are kept in LMDB,\n"
"                         larger ones as files (default 1024, at most\n"
"                         1984; 0 keeps every output as a file)\n"
"    -f                   stay in the foreground\n"
"    -d                   FUSE debug output (implies -f)\n"
"    -s                   single-threaded FUSE loop\n"
"    -o opt,[opt...]      FUSE mount options\n"
"    -h, --help           this text\n"
"    -V, --version        the version\n", prog);
}

/* ---- read-ahead ---- */

/*
 * The kernel gives a FUSE mount 128 KiB of read-ahead, and a FUSE INIT
 * reply can only lower it; a first read of a large chunk file then goes
 * in 128 KiB requests. Only its backing device's sysfs knob raises it,
 * which needs root: best effort, from a thread, since the mount's device
 * number is known only once the mount answers stat.
 */
static char *ra_mountpoint;
static unsigned ra_kb;

static void *readahead_main(void *arg)
{
	struct stat st;
	char path[96], val[32];
	int fd;

	(void)arg;
	if (stat(ra_mountpoint, &st) < 0)
		return NULL;
	snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb",
		 major(st.st_dev), minor(st.st_dev));
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	snprintf(val, sizeof(val), "%u\n", ra_kb);
	if (write(fd, val, strlen(val)) < 0) {
		/* not root, or not allowed here: the default stays */
	}
	close(fd);
	return NULL;
}

static void set_readahead(const char *mp, unsigned kb)
{
	pthread_attr_t a;
	pthread_t t;

	if (kb == 0 || geteuid() != 0)
		return;
	ra_mountpoint = strdup(mp);
	ra_kb = kb;
	if (!ra_mountpoint || pthread_attr_init(&a))
		return;
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	pthread_create(&t, &a, readahead_main, NULL);
	pthread_attr_destroy(&a);
}

/* ---- the parent's pipe: errors reach the terminal after the fork ---- */

static int report_fd = -1;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2),
						     noreturn));

static void die(const char *fmt, ...)
{
	char msg[2048];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if (n > (int)sizeof(msg) - 2)
		n = (int)sizeof(msg) - 2;
	msg[n++] = '\n';
	if (report_fd >= 0) {
		if (write(report_fd, msg, (size_t)n) < 0) {
			/* nothing to do */
		}
	} else {
		fprintf(stderr, "jobfs: %.*s", n, msg);
	}
	_exit(1);
}

/* Fork; the parent waits for "ok" or an error line and exits with it. */
static void daemonize(void)
{
	int p[2];
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0) {
		perror("jobfs: pipe");
		exit(1);
	}
	pid = fork();
	if (pid < 0) {
		perror("jobfs: fork");
		exit(1);
	}
	if (pid > 0) {
		char buf[2048];
		ssize_t n, got = 0;

		close(p[1]);
		while ((n = read(p[0], buf + got, sizeof(buf) - 1 -
				 (size_t)got)) > 0)
			got += n;
		buf[got] = '\0';
		if (got >= 3 && !strncmp(buf, "ok\n", 3))
			exit(0);
		if (got == 0)
			fprintf(stderr, "jobfs: the daemon died while "
				"starting\n");
		else
			fprintf(stderr, "jobfs: %s", buf);
		exit(1);
	}
	close(p[0]);
	report_fd = p[1];
	setsid();
	/* every path is absolute by now; do not pin the caller's cwd */
	if (chdir("/") < 0) {
		/* harmless */
	}
}

static void report_ok(void)
{
	int null;

	if (report_fd < 0)
		return;
	if (write(report_fd, "ok\n", 3) < 0) {
		/* nothing to do */
	}
	close(report_fd);
	report_fd = -1;
	null = open("/dev/null", O_RDWR);
	if (null >= 0) {
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		if (null > 2)
			close(null);
	}
}

/* ---- the store and the mountpoint ---- */

/* mkdir dir, and when it made it, fsync the directory it is in, so that
 * the name survives a power loss with what is later put inside. */
static int mkdir_synced(const char *dir, mode_t mode)
{
	if (mkdir(dir, mode) < 0)
		return errno == EEXIST ? 0 : -errno;
	return objstore_fsync_parent(dir);
}

static int mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);
	int rc;

	if (len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		rc = mkdir_synced(buf, 0700);
		if (rc)
			return rc;
		*p = '/';
	}
	return mkdir_synced(buf, mode);
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

/* Take the store's lock; on failure name the daemon that holds it. */
static int lock_store(const char *store, const char *mountpoint)
{
	char path[PATH_MAX], buf[PATH_MAX + 64];
	int fd;

	snprintf(path, sizeof(path), "%s/lock", store);
	fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		die("cannot open %s: %s", path, strerror(errno));
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		ssize_t n;

		if (errno != EWOULDBLOCK)
			die("cannot lock %s: %s", path, strerror(errno));
		n = pread(fd, buf, sizeof(buf) - 1, 0);
		buf[n > 0 ? n : 0] = '\0';
		buf[strcspn(buf, "\n")] = ' ';
		buf[strcspn(buf, "\n")] = '\0';
		die("store %s is in use by another jobfs (pid and mountpoint: "
		    "%s); unmount that one first, or use --store", store,
		    buf[0] ? buf : "unknown");
	}
	/* The lock is the flock, held until this process exits, however it
	 * exits: what the file says is only for the message above. */
	if (ftruncate(fd, 0) == 0) {
		int n = snprintf(buf, sizeof(buf), "%ld\n%s\n",
				 (long)getpid(), mountpoint);

		if (pwrite(fd, buf, (size_t)n, 0) < 0) {
			/* nothing to do */
		}
	}
	return fd;
}

/* A dead FUSE mount answers ENOTCONN (or ECONNABORTED). Try to clear it;
 * if that fails, say exactly what to run. */
static void check_mountpoint(const char *mp)
{
	struct stat st;

	if (stat(mp, &st) == 0) {
		if (!S_ISDIR(st.st_mode))
			die("mountpoint %s is not a directory", mp);
		return;
	}
	/* A FUSE mount whose daemon died answers ENOTCONN, or ECONNABORTED
	 * while the kernel is still tearing the connection down. */
	if (errno == ENOTCONN || errno == ECONNABORTED) {
		pid_t pid = fork();
		int status = 1;

		if (pid == 0) {
			int null = open("/dev/null", O_WRONLY);

			if (null >= 0) {
				dup2(null, 1);
				dup2(null, 2);
			}
			execlp("fusermount3", "fusermount3", "-uz", mp,
			       (char *)NULL);
			_exit(127);
		}
		if (pid > 0)
			waitpid(pid, &status, 0);
		if (stat(mp, &st) == 0 && S_ISDIR(st.st_mode)) {
			fprintf(stderr, "jobfs: cleared the dead mount a "
				"crashed jobfs left on %s\n", mp);
			return;
		}
		die("%s is a dead FUSE mount (Transport endpoint is not "
		    "connected) and could not be cleared; run: "
		    "fusermount3 -uz %s", mp, mp);
	}
	die("mountpoint %s: %s", mp, strerror(errno));
}

/* Whether "-o ...allow_other..." is among the arguments. */
static int allow_other_given(int argc, char *argv[])
{
	for (int i = 1; i < argc; i++) {
		const char *o = NULL;

		if (!strcmp(argv[i], "-o") && i + 1 < argc)
			o = argv[i + 1];
		else if (!strncmp(argv[i], "-o", 2))
			o = argv[i] + 2;
		if (!o)
			continue;
		for (const char *p = o; (p = strstr(p, "allow_other"));
		     p += 11) {
			if ((p == o || p[-1] == ',') &&
			    (p[11] == '\0' || p[11] == ','))
				return 1;
		}
	}
	return 0;
}

/*
 * libfuse stops its worker threads with pthread_cancel, and glibc loads
 * libgcc_s the first time a thread is cancelled: if that load fails then
 * (no memory, at shutdown), glibc aborts the process before jobfs has
 * persisted anything. Cancel one idle thread at start, so the load happens
 * while a failure is still a clean refusal to start.
 */
static void *idle_thread(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

static int preload_cancellation(void)
{
	pthread_t t;

	/* Load it ourselves first, where failing is an error we can print
	 * (glibc's own load aborts the process when it fails). */
	if (!dlopen("libgcc_s.so.1", RTLD_NOW | RTLD_NODELETE))
		return -1;
	if (pthread_create(&t, NULL, idle_thread, NULL) != 0)
		return -1;
	pthread_cancel(t);
	return pthread_join(t, NULL) == 0 ? 0 : -1;
}

/*
 * After the FUSE loop has ended, SIGTERM, SIGINT and SIGHUP no longer stop
 * it (libfuse's handlers are gone) and would kill the daemon in the middle
 * of its shutdown. A signal then means "do not wait for running chunks":
 * their grace ends at once, and the shutdown still goes to its clean end
 * (commits, files, exit 0). SIGKILL stays the way to stop at once.
 */
static struct engine *stopping_engine;

static void on_late_signal(int sig)
{
	(void)sig;
	engine_hurry(stopping_engine);
}

static void late_signals(struct engine *e)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_late_signal;
	sigemptyset(&sa.sa_mask);
	stopping_engine = e;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

/* argv with the options' values joined (join_values), kept for the life
 * of the process */
static char **joined;
static int njoined;

int main(int argc, char *argv[])
{
	struct fuse_args args;
	struct fuse_cmdline_opts fo;
	struct fuse_loop_config *lc = NULL;
	struct options o = { 0 };
	struct engine_opts eo = { 0 };
	struct executor *ex = NULL;
	struct engine *e = NULL;
	struct fuse *fuse;
	char err[1024] = "", *store = NULL, *mp;
	long cpus;
	int rc, status = 2;

	o.grace = 10;
	o.max_input = 4ULL << 30;
	o.max_chunks = 1000000;
	o.max_jobs = 10000;
	o.readahead_kb = 1024;
	o.inline_max = ENGINE_INLINE_DEFAULT;
	if (join_values(argc, argv, &joined, &njoined) < 0)
		return 2;
	args = (struct fuse_args)FUSE_ARGS_INIT(njoined, joined);
	if (fuse_opt_parse(&args, &o, option_spec, NULL) < 0)
		return 2;
	if (o.help || o.version) {
		if (o.help)
			usage(argv[0]);
		else
			printf("jobfs %s (libfuse %d)\n", JOBFS_VERSION,
			       fuse_version());
		fuse_opt_free_args(&args);
		free(o.store);
		return 0;
	}
	if (fuse_parse_cmdline(&args, &fo) != 0) {
		fuse_opt_free_args(&args);
		free(o.store);
		return 2;
	}
	if (fo.show_help || fo.show_version || !fo.mountpoint) {
		if (fo.mountpoint)
			usage(argv[0]);
		else
			fprintf(stderr, "jobfs: no mountpoint given (try "
				"--help)\n");
		fuse_opt_free_args(&args);
		free(fo.mountpoint);
		free(o.store);
		return fo.mountpoint ? 0 : 2;
	}
	/* Bad values are refused before anything is made (the store
	 * directory included); an early exit frees what it holds. */
	if (o.grace < 0 || o.max_chunks < 1 || o.max_jobs < 1 ||
	    o.max_input < 1) {
		fprintf(stderr, "jobfs: --grace, --max-chunks, --max-jobs and "
			"--max-input must be positive\n");
		goto out;
	}
	if (o.inline_max > DB_INLINE_MAX) {
		fprintf(stderr, "jobfs: --inline-max is at most %d bytes\n",
			DB_INLINE_MAX);
		goto out;
	}
	mp = fo.mountpoint; /* fuse_parse_cmdline made it absolute */
	store = o.store ? o.store : default_store();
	if (!store) {
		fprintf(stderr, "jobfs: no store: set HOME or XDG_STATE_HOME, "
			"or give --store DIR\n");
		goto out;
	}
	rc = mkdir_p(store, 0700);
	if (rc) {
		fprintf(stderr, "jobfs: cannot create store %s: %s\n", store,
			strerror(-rc));
		status = 1;
		goto out;
	}
	{
		char *abs = realpath(store, NULL);

		if (!abs) {
			fprintf(stderr, "jobfs: store %s: %s\n", store,
				strerror(errno));
			status = 1;
			goto out;
		}
		if (store != o.store)
			free(store); /* default_store()'s */
		store = abs;
	}
	cpus = sysconf(_SC_NPROCESSORS_ONLN);
	if (!o.max_running)
		o.max_running = cpus > 0 ? (unsigned)cpus : 1;

	check_mountpoint(mp);
	signal(SIGPIPE, SIG_IGN);
	if (preload_cancellation() != 0) {
		fprintf(stderr, "jobfs: cannot start threads\n");
		return 1;
	}
	if (sha_init() != 0) {
		fprintf(stderr, "jobfs: cannot prepare SHA-256\n");
		return 1;
	}
	if (!fo.foreground)
		daemonize();

	lock_store(store, mp);
	rc = exec_local_open(&ex);
	if (rc)
		die("cannot start the worker watchdog: %s", strerror(-rc));

	eo.store = store;
	eo.max_running = o.max_running;
	eo.grace = o.grace;
	eo.no_resume = o.no_resume;
	eo.max_input = o.max_input;
	eo.max_chunks = o.max_chunks;
	eo.max_jobs = o.max_jobs;
	eo.map_size = o.map_size;
	eo.inline_max = o.inline_max ? (int)o.inline_max : -1;
	rc = engine_open(&eo, ex, &e, err, sizeof(err));
	if (rc)
		die("%s", err[0] ? err : strerror(-rc));

	/* Whoever can write a spec can run code as us: never honour set-uid
	 * bits or device nodes, and when others are let in at all
	 * (allow_other), let the kernel enforce the modes we report, which
	 * give write access to the owner only. */
	fuse_opt_add_arg(&args, "-osubtype=jobfs,fsname=jobfs,nosuid,nodev");
	if (allow_other_given(argc, argv))
		fuse_opt_add_arg(&args, "-odefault_permissions");
	fuse = fuse_new(&args, &jobfs_ops, sizeof(jobfs_ops), e);
	if (!fuse)
		die("cannot set up FUSE (bad -o option?)");
	if (fuse_mount(fuse, mp) != 0)
		die("cannot mount on %s (is /dev/fuse there, and fuse3 "
		    "installed?)", mp);
	if (fuse_set_signal_handlers(fuse_get_session(fuse)) != 0)
		die("cannot install signal handlers");
	rc = engine_start(e);
	if (rc) {
		fuse_unmount(fuse);
		die("cannot start the engine: %s", strerror(-rc));
	}
	if (fo.foreground)
		fprintf(stderr, "jobfs: serving %s on %s (store %s)\n", "jobs",
			mp, store);
	report_ok();
	set_readahead(mp, o.readahead_kb);

	if (fo.singlethread) {
		rc = fuse_loop(fuse);
	} else {
		lc = fuse_loop_cfg_create();
		fuse_loop_cfg_set_clone_fd(lc, 0);
		fuse_loop_cfg_set_max_threads(lc, 16);
		rc = fuse_loop_mt(fuse, lc);
		fuse_loop_cfg_destroy(lc);
	}

	fuse_remove_signal_handlers(fuse_get_session(fuse));
	late_signals(e);
	fuse_unmount(fuse);
	engine_shutdown(e);
	fuse_destroy(fuse);   /* frees handles left open: the engine is needed */
	signal(SIGTERM, SIG_DFL); /* the handler needs the engine */
	signal(SIGINT, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	engine_close(e);
	exec_close(ex);
	status = rc < 0 ? 1 : 0;
out:
	fuse_opt_free_args(&args);
	free(fo.mountpoint);
	if (store != o.store)
		free(store);
	free(o.store);
	return status;
}
