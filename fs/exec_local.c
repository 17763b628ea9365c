/*
 * exec_local.c - the local executor: each attempt is a child process of
 * the daemon, in a session and process group of its own, watched by a watchdog.
 *
 * Invariants this module guarantees:
 *
 *  1. An attempt's process group id is the pid of its main process, and
 *     that pid stays ours (an unreaped child or zombie) until the group
 *     has been sent SIGKILL for the last time. So kill(-pgid) can never
 *     hit a stranger's group: every kill(-pgid) in this file happens
 *     before the wait4() that releases the pid.
 *  2. A child holds no descriptor but 0, 1 and 2 once it execs, whatever
 *     the daemon had open (LMDB's descriptor is not close-on-exec), and
 *     starts with default signal dispositions and an empty signal mask.
 *  3. The watchdog knows every group that may still have live members:
 *     the child itself sends "add" before it execs (so no program code
 *     runs in a group the watchdog has not been told about), and the
 *     daemon sends "del" only after the group's final SIGKILL and before
 *     the wait4() that frees the pgid (so a daemon crash can never make
 *     the watchdog kill a recycled pgid).
 *  4. When the daemon dies, kill -9 included, the watchdog reads EOF and
 *     SIGKILLs every group it knows; a child that has not exec'd yet dies
 *     of PR_SET_PDEATHSIG instead.
 *
 * Lifecycle of an attempt:
 *
 *     start --> RUNNING --(main process exited; reap)--> REAPED --> free
 *                  |                                        ^
 *                  +---- free: kill, blocking reap ---------+
 *
 * The one escape is a process that leaves the group (setsid, setpgid);
 * a pids cgroup (below), where the daemon can make one, follows it.
 *
 * What the rest of the daemon must not do: wait for any child (waitpid
 * with -1) or set SIGCHLD to SIG_IGN, since either reaps attempts behind
 * our back (invariant 1); fork without exec while the executor is open
 * (the copy of the watchdog pipe would delay the watchdog's EOF).
 * Needs Linux 5.3 (CLONE_PIDFD, waitid P_PIDFD) and glibc 2.32.
 */
#define _GNU_SOURCE
#include "../store/fault.h"
#include "exec.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"

enum wd_op { WD_ADD = 1, WD_DEL = 2 };

/* One watchdog message; 8 bytes, so every write(2) of one is atomic
 * (PIPE_BUF) even with the daemon and its children writing at once. */
struct wd_msg {
	int32_t op;
	int32_t pgid;
};

#define CG_POOL_MAX 64

struct local_executor {
	struct executor base; /* first: the engine's handle points here */
	int wd_fd;            /* write end of the watchdog pipe, -1 after close */
	pid_t wd_pid;
	int closed;
	unsigned nattempts;   /* attempts not yet freed; atomic: an attempt
			       * may be freed by another thread (the
			       * engine's commit thread) while one starts */
	struct exec_attempt *running; /* list of attempts not yet reaped,
				       * under run_lock: one thread starts
				       * while another reaps */
	pthread_mutex_t run_lock;
	int cg_base;          /* pids cgroup directory we may make children
			       * in, or -1 (then RLIMIT_NPROC) */
	pid_t cg_owner;       /* our pid, in the names of our cgroups */
	unsigned long cg_seq;
	unsigned long *cg_left; /* cgroups not yet removable (members dying) */
	size_t cg_nleft, cg_capleft;
	/* empty cgroups of contained attempts, kept for the next ones
	 * (cg_release, bound_procs): making and removing a cgroup costs
	 * more than the rest of a tiny chunk's start. cg_lock guards the
	 * pool and cg_left. */
	pthread_mutex_t cg_lock;
	struct { unsigned long n; uint32_t max; } cg_pool[CG_POOL_MAX];
	size_t cg_npool;
	void *stack;          /* for the child until it execs */
	size_t stack_len;
	double swept_at;      /* when stale cgroups were last removed */
	double nproc_at;      /* when nproc_base was counted */
	unsigned long nproc_base; /* our uid's tasks then */
};

struct exec_attempt {
	struct local_executor *ex;
	struct exec_attempt *prev, *next; /* in ex->running while !reaped */
	pid_t pid;    /* also the process group id */
	int pidfd;    /* polls readable when the main process exits */
	int errfd;    /* read end of the exec-error pipe, non-blocking */
	int reaped;
	unsigned long cg;  /* its pids cgroup's number, 0 = none */
	uint32_t cg_max;   /* and that cgroup's pids.max */
	struct exec_result result;
};

static const struct executor_ops local_ops; /* defined at the end */

/* ---- small helpers --------------------------------------------------- */

/* close_range() for the whole rest of the table, with a fallback loop in
 * case the kernel lacks it. Async-signal-safe. */
static void close_from(unsigned lo, unsigned hi)
{
	if (lo > hi)
		return;
	if (syscall(SYS_close_range, lo, hi, 0) == 0)
		return;
	struct rlimit rl;
	unsigned max = 65536;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur < max)
		max = (unsigned)rl.rlim_cur;
	for (unsigned fd = lo; fd < max && fd <= hi; fd++)
		close((int)fd);
}

/* Set one disposition; sigaction() is async-signal-safe. */
static void set_handler(int sig, void (*handler)(int))
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = handler;
	sigaction(sig, &sa, NULL);
}

/* Every catchable signal back to SIG_DFL. Handlers would be reset by
 * execve anyway, but ignored signals (SIGPIPE in most daemons) survive
 * it. Async-signal-safe. */
static void reset_signals(void)
{
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			set_handler(sig, SIG_DFL); /* EINVAL for glibc's own */
}

/* Write a whole buffer; async-signal-safe. Returns 0 or -1 with errno. */
static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Send one message to the watchdog from the daemon. A dead watchdog must
 * not take the daemon with it through SIGPIPE, and the daemon's SIGPIPE
 * disposition is not ours to change: block it around the write and eat
 * the one the write raised, as OpenSSL and curl do. */
static void wd_send(struct local_executor *ex, int op, pid_t pgid)
{
	if (ex == NULL || ex->wd_fd < 0)
		return;
	struct wd_msg m = { .op = op, .pgid = pgid };
	sigset_t pipe_set, old, pending;
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	sigpending(&pending);
	int was_pending = sigismember(&pending, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
	if (write_all(ex->wd_fd, &m, sizeof m) < 0 && errno == EPIPE &&
	    !was_pending) {
		struct timespec zero = { 0, 0 };
		while (sigtimedwait(&pipe_set, NULL, &zero) < 0 &&
		       errno == EINTR)
			;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* ---- the bound on processes ----------------------------------------- */

/*
 * A worker that forks without end must not take the machine, or the
 * daemon, with it. Each attempt gets a pids cgroup of its own with
 * pids.max = the spec's max_procs, when the daemon can make one: the pids
 * hierarchy (cgroup v1) or the unified one with the pids controller
 * (cgroup v2), at the daemon's own cgroup, writable (root, or a delegated
 * subtree). The child moves itself in before it execs, so every process
 * and thread of its tree counts. A cgroup also follows processes that
 * left the group with setsid: whatever is left in it when the attempt is
 * reaped is killed.
 *
 * Without a usable cgroup the child gets RLIMIT_NPROC = the user's task
 * count at start + max_procs. That limit counts every task of the user,
 * not just the tree, and the kernel does not apply it to root; docs/
 * security.md says so.
 */

static int write_str_at(int dirfd, const char *file, const char *text)
{
	int fd = openat(dirfd, file, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = write_all(fd, text, strlen(text)) < 0 ? -errno : 0;
	close(fd);
	return rc;
}

/* Is word one of the comma-separated items of list? */
static int has_item(const char *list, const char *word)
{
	size_t n = strlen(word);
	for (const char *p = list; p != NULL && *p; ) {
		const char *end = strchrnul(p, ',');
		if ((size_t)(end - p) == n && strncmp(p, word, n) == 0)
			return 1;
		p = *end ? end + 1 : end;
	}
	return 0;
}

/*
 * The directory of our own cgroup in the hierarchy that has the pids
 * controller, from /proc/self/mountinfo and /proc/self/cgroup. Sets
 * *v2 for the unified hierarchy. Returns 0 or -ENOENT.
 */
static int cg_own_dir(char *out, size_t len, int *v2)
{
	char line[4096], mnt1[1024] = "", mnt2[1024] = "", root1[1024] = "",
	     root2[1024] = "", path1[2048] = "", path2[2048] = "";
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (f == NULL)
		return -ENOENT;
	while (fgets(line, sizeof line, f)) {
		char root[1024], mp[1024], fstype[64], super[1024];
		const char *dash = strstr(line, " - ");
		if (dash == NULL ||
		    sscanf(line, "%*s %*s %*s %1023s %1023s", root, mp) != 2 ||
		    sscanf(dash + 3, "%63s %*s %1023s", fstype, super) != 2)
			continue;
		if (strcmp(fstype, "cgroup") == 0 && has_item(super, "pids") &&
		    !mnt1[0]) {
			snprintf(mnt1, sizeof mnt1, "%s", mp);
			snprintf(root1, sizeof root1, "%s", root);
		} else if (strcmp(fstype, "cgroup2") == 0 && !mnt2[0]) {
			snprintf(mnt2, sizeof mnt2, "%s", mp);
			snprintf(root2, sizeof root2, "%s", root);
		}
	}
	fclose(f);
	if ((f = fopen("/proc/self/cgroup", "re")) == NULL)
		return -ENOENT;
	while (fgets(line, sizeof line, f)) {
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (c2 == NULL)
			continue;
		line[strcspn(line, "\n")] = '\0';
		*c2 = '\0';
		if (c1[1] == '\0' && strcmp(line, "0:") == 0)
			snprintf(path2, sizeof path2, "%s", c2 + 1);
		else if (has_item(c1 + 1, "pids"))
			snprintf(path1, sizeof path1, "%s", c2 + 1);
	}
	fclose(f);

	/* The path is relative to the hierarchy's root; the mount may show
	 * only a subtree of it (a container), given as the mount's root. */
	const char *mnt = mnt1[0] && path1[0] ? mnt1 : mnt2;
	const char *root = mnt == mnt1 ? root1 : root2;
	const char *path = mnt == mnt1 ? path1 : path2;
	if (!mnt[0] || !path[0])
		return -ENOENT;
	size_t rl = strcmp(root, "/") == 0 ? 0 : strlen(root);
	if (rl && (strncmp(path, root, rl) != 0 ||
		   (path[rl] != '/' && path[rl] != '\0')))
		return -ENOENT;
	*v2 = mnt == mnt2;
	if ((size_t)snprintf(out, len, "%s%s", mnt, path + rl) >= len)
		return -ENOENT;
	return 0;
}

static void cg_name(char *buf, size_t len, pid_t owner, unsigned long n)
{
	snprintf(buf, len, "jobfs-%d-%lu", (int)owner, n);
}

/* SIGKILL every member of the cgroup dir (cgroup.kill where the kernel
 * has it, else each pid of cgroup.procs). */
static void cg_kill_members(int dirfd)
{
	if (write_str_at(dirfd, "cgroup.kill", "1") == 0)
		return;
	int fd = openat(dirfd, "cgroup.procs", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	char buf[4096];
	size_t have = 0;
	for (;;) {
		ssize_t r = read(fd, buf + have, sizeof buf - 1 - have);
		if (r <= 0)
			break;
		have += (size_t)r;
		buf[have] = '\0';
		char *p = buf, *nl;
		while ((nl = strchr(p, '\n')) != NULL) {
			long pid = strtol(p, NULL, 10);
			/* a member now; pid reuse within this loop would
			 * need the whole pid space to wrap around */
			if (pid > 1)
				kill((pid_t)pid, SIGKILL);
			p = nl + 1;
		}
		have = (size_t)(buf + have - p);
		memmove(buf, p, have);
	}
	close(fd);
}

/* Remove cgroup name under base, killing what is left in it. Returns 1
 * when it was empty (the first rmdir took it), 0 when it is gone
 * otherwise, -EBUSY while members are still dying. */
static int cg_remove(int base, const char *name)
{
	if (unlinkat(base, name, AT_REMOVEDIR) == 0)
		return 1;
	if (errno == ENOENT)
		return 0;
	if (errno != EBUSY)
		return 0; /* not ours to fight over */
	int d = openat(base, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (d >= 0) {
		cg_kill_members(d);
		close(d);
	}
	if (unlinkat(base, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
		return 0;
	return -EBUSY;
}

/* Try again to remove the cgroups whose members were still dying. */
static void cg_retry_left(struct local_executor *ex)
{
	size_t k = 0;
	pthread_mutex_lock(&ex->cg_lock);
	for (size_t i = 0; i < ex->cg_nleft; i++) {
		char name[64];
		cg_name(name, sizeof name, ex->cg_owner, ex->cg_left[i]);
		if (cg_remove(ex->cg_base, name) < 0)
			ex->cg_left[k++] = ex->cg_left[i];
	}
	ex->cg_nleft = k;
	pthread_mutex_unlock(&ex->cg_lock);
}

/* Whether cgroup name under base has no task: its pids.current is 0. */
static int cg_empty(int base, const char *name)
{
	char buf[32];
	ssize_t r = -1;
	int d = openat(base, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (d < 0)
		return 0;
	int fd = openat(d, "pids.current", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		r = read(fd, buf, sizeof buf - 1);
		close(fd);
	}
	close(d);
	return r == 2 && buf[0] == '0' && buf[1] == '\n';
}

/* Release attempt cgroup n (pids.max max): 1 when it was empty (nothing
 * of the tree left; it then goes to the pool if there is room, else it
 * is removed), 0 when members had to be killed or it stays behind. A
 * cgroup that nothing is in stays empty: only a process in it, or one
 * that writes to its cgroup.procs (a child of ours being started), can
 * put a task there. */
static int cg_release(struct local_executor *ex, unsigned long n,
		      uint32_t max)
{
	char name[64];
	int rc;
	if (ex == NULL || ex->cg_base < 0 || n == 0)
		return 0;
	cg_name(name, sizeof name, ex->cg_owner, n);
	pthread_mutex_lock(&ex->cg_lock);
	if (ex->cg_npool < CG_POOL_MAX && cg_empty(ex->cg_base, name)) {
		ex->cg_pool[ex->cg_npool].n = n;
		ex->cg_pool[ex->cg_npool].max = max;
		ex->cg_npool++;
		pthread_mutex_unlock(&ex->cg_lock);
		return 1;
	}
	pthread_mutex_unlock(&ex->cg_lock);
	rc = cg_remove(ex->cg_base, name);
	if (rc >= 0)
		return rc;
	pthread_mutex_lock(&ex->cg_lock);
	if (ex->cg_nleft == ex->cg_capleft) {
		size_t cap = ex->cg_capleft ? ex->cg_capleft * 2 : 16;
		void *p = realloc(ex->cg_left, cap * sizeof *ex->cg_left);
		if (p == NULL) {
			/* stays behind; the sweep of stale cgroups of the
			 * next daemon removes it */
			pthread_mutex_unlock(&ex->cg_lock);
			return 0;
		}
		ex->cg_left = p;
		ex->cg_capleft = cap;
	}
	ex->cg_left[ex->cg_nleft++] = n;
	pthread_mutex_unlock(&ex->cg_lock);
	return 0;
}

/* Remove what daemons that are gone left in base: "jobfs-PID-N" with PID
 * not alive (a daemon killed with -9 cannot clean up). */
static void cg_sweep_stale(int base)
{
	int fd = openat(base, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;
	if (d == NULL) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d)) != NULL) {
		int pid;
		unsigned long n;
		if (sscanf(de->d_name, "jobfs-%d-%lu", &pid, &n) != 2 ||
		    pid <= 0 || kill(pid, 0) == 0 || errno == EPERM)
			continue; /* not ours, or its daemon is alive */
		cg_remove(base, de->d_name);
	}
	closedir(d);
}

/* Find a pids cgroup directory we can make attempt cgroups in: a probe
 * child must come with a pids.max. Returns an open directory or -1. */
static int cg_open_base(pid_t owner)
{
	char dir[4096], probe[64];
	int v2 = 0;
	if (cg_own_dir(dir, sizeof dir, &v2) < 0)
		return -1;
	int base = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (base < 0)
		return -1;
	cg_sweep_stale(base);
	cg_name(probe, sizeof probe, owner, 0);
	if (mkdirat(base, probe, 0700) < 0 && errno != EEXIST) {
		close(base);
		return -1;
	}
	/* In v2 a child has pids.max only once its parent delegates the
	 * controller (which the kernel refuses while the parent itself has
	 * processes, unless it is the root). */
	char file[96];
	snprintf(file, sizeof file, "%s/pids.max", probe);
	if (faccessat(base, file, W_OK, 0) < 0 && v2)
		write_str_at(base, "cgroup.subtree_control", "+pids");
	int ok = faccessat(base, file, W_OK, 0) == 0;
	unlinkat(base, probe, AT_REMOVEDIR);
	if (!ok) {
		close(base);
		return -1;
	}
	return base;
}

/* Tasks (threads) of uid, counted in /proc; what RLIMIT_NPROC counts. */
static unsigned long uid_tasks(uid_t uid)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	unsigned long n = 0;
	if (d == NULL)
		return 0;
	while ((de = readdir(d)) != NULL) {
		char task[300];
		struct stat st;
		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		snprintf(task, sizeof task, "%s/task", de->d_name);
		if (fstatat(dirfd(d), de->d_name, &st, 0) < 0 ||
		    st.st_uid != uid)
			continue;
		if (fstatat(dirfd(d), task, &st, 0) == 0 && st.st_nlink > 2)
			n += (unsigned long)st.st_nlink - 2;
		else
			n++;
	}
	closedir(d);
	return n;
}

/* ---- the watchdog ---------------------------------------------------- */

/*
 * The watchdog's whole life, in a forked child of the daemon. It owns
 * nothing but the read end of its pipe, sits in a session of its own
 * (a Ctrl-C on the daemon's terminal must not kill the one process that
 * cleans up after the daemon) and uses only system calls, so it is safe
 * even if the daemon was already multithreaded. The live set is an
 * mmap'ed array of pgids; "del" of an unknown pgid is ignored (the child
 * may have died before it could send "add").
 */
static _Noreturn void watchdog_main(int rfd)
{
	if (rfd > 0)
		close_from(0, (unsigned)rfd - 1);
	close_from((unsigned)rfd + 1, ~0U);

	reset_signals();
	set_handler(SIGINT, SIG_IGN);
	set_handler(SIGTERM, SIG_IGN);
	set_handler(SIGHUP, SIG_IGN);
	set_handler(SIGPIPE, SIG_IGN);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	setsid();
	if (chdir("/") < 0) {
		/* keeps the daemon's cwd busy; harmless */
	}
	prctl(PR_SET_NAME, "jobfs-watchdog", 0, 0, 0);

	size_t cap = 16384, n = 0;
	pid_t *set = mmap(NULL, cap * sizeof *set, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (set == MAP_FAILED) {
		set = NULL;
		cap = 0;
	}

	struct wd_msg buf[256];
	size_t have = 0; /* bytes in buf; reads may split a message */
	for (;;) {
		ssize_t r = read(rfd, (char *)buf + have, sizeof buf - have);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break; /* EOF: the daemon is gone or closed us */
		have += (size_t)r;
		size_t whole = have / sizeof buf[0];
		for (size_t i = 0; i < whole; i++) {
			pid_t pg = buf[i].pgid;
			if (pg <= 0)
				continue;
			if (buf[i].op == WD_ADD) {
				if (n == cap) {
					size_t ncap = cap ? cap * 2 : 16384;
					void *p = cap ? mremap(set, cap * sizeof *set,
							       ncap * sizeof *set,
							       MREMAP_MAYMOVE)
						      : mmap(NULL, ncap * sizeof *set,
							     PROT_READ | PROT_WRITE,
							     MAP_PRIVATE | MAP_ANONYMOUS,
							     -1, 0);
					if (p == MAP_FAILED)
						continue; /* cannot track it */
					set = p;
					cap = ncap;
				}
				set[n++] = pg;
			} else if (buf[i].op == WD_DEL) {
				for (size_t j = 0; j < n; j++) {
					if (set[j] == pg) {
						set[j] = set[--n];
						break;
					}
				}
			}
		}
		size_t used = whole * sizeof buf[0];
		memmove(buf, (char *)buf + used, have - used);
		have -= used;
	}
	for (size_t j = 0; j < n; j++)
		kill(-set[j], SIGKILL);
	_exit(0);
}

/*
 * Open the local executor: a pipe whose daemon end is close-on-exec and a
 * watchdog process holding the other end. Returns 0 and sets *out, or a
 * negative errno (pipe, fork or ENOMEM). See exec.h for when to call it.
 */
int exec_local_open(struct executor **out)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;

	/* Block every signal across fork, so no handler of the daemon runs
	 * in the child before the child has reset them (git does the same).
	 * The executor is allocated after the fork so that the watchdog
	 * inherits no pointer into it (valgrind would call it lost there). */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pid_t pid = fork();
	if (pid == 0)
		watchdog_main(p[0]);
	int fork_errno = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	close(p[0]);
	if (pid < 0) {
		close(p[1]);
		return -fork_errno;
	}

	struct local_executor *ex = calloc(1, sizeof *ex);
	if (ex == NULL) {
		close(p[1]); /* EOF: the watchdog exits */
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		return -ENOMEM;
	}
	ex->base.ops = &local_ops;
	ex->wd_fd = p[1];
	ex->wd_pid = pid;
	ex->cg_owner = getpid();
	ex->cg_base = cg_open_base(ex->cg_owner);
	pthread_mutex_init(&ex->cg_lock, NULL);
	pthread_mutex_init(&ex->run_lock, NULL);
	*out = &ex->base;
	return 0;
}

/* ---- starting an attempt --------------------------------------------- */

/* The value of PATH in envp, or the default exec_env_build() uses. */
static const char *env_path(char *const *envp)
{
	for (size_t i = 0; envp != NULL && envp[i] != NULL; i++)
		if (strncmp(envp[i], "PATH=", 5) == 0)
			return envp[i] + 5;
	return DEFAULT_PATH;
}

/*
 * The file to execve for argv0, searched the way execvp does but in the
 * child's PATH (relative entries taken relative to the child's cwd) and
 * in the parent, where malloc is allowed. Sets *out to a malloc'ed path,
 * or to NULL when nothing was found (the child then reports ENOENT).
 * A match that is not executable is kept only if no later one is, so
 * that the child reports EACCES as execvp would. Returns 0 or -ENOMEM.
 */
static int resolve_program(const char *argv0, char *const *envp,
			   const char *cwd, char **out)
{
	*out = NULL;
	if (strchr(argv0, '/') != NULL) {
		*out = strdup(argv0);
		return *out ? 0 : -ENOMEM;
	}
	if (argv0[0] == '\0')
		return 0;

	const char *path = env_path(envp);
	char *denied = NULL;
	size_t cap = strlen(path) + strlen(cwd) + strlen(argv0) + 4;
	char *cand = malloc(cap);
	if (cand == NULL)
		return -ENOMEM;
	for (const char *dir = path;; ) {
		const char *end = strchrnul(dir, ':');
		int dlen = (int)(end - dir);
		if (dlen == 0)
			snprintf(cand, cap, "%s/%s", cwd, argv0);
		else if (dir[0] == '/')
			snprintf(cand, cap, "%.*s/%s", dlen, dir, argv0);
		else
			snprintf(cand, cap, "%s/%.*s/%s", cwd, dlen, dir, argv0);

		struct stat st;
		if (stat(cand, &st) == 0 && S_ISREG(st.st_mode)) {
			if (faccessat(AT_FDCWD, cand, X_OK, AT_EACCESS) == 0) {
				free(denied);
				*out = cand;
				return 0;
			}
			if (denied == NULL && (denied = strdup(cand)) == NULL) {
				free(cand);
				return -ENOMEM;
			}
		}
		if (*end == '\0')
			break;
		dir = end + 1;
	}
	free(cand);
	*out = denied;
	return 0;
}

/* Everything the child needs, computed before fork. */
struct child_plan {
	const char *path;  /* NULL: report ENOENT */
	char *const *argv;
	char *const *envp;
	const char *cwd;
	int fds[3];
	int errfd;         /* write end of the exec-error pipe */
	int wd_fd;         /* write end of the watchdog pipe, or -1 */
	pid_t parent;
	uint64_t max_output;
	int cg_procs;      /* the attempt's cgroup.procs, or -1 */
	rlim_t nproc;      /* RLIMIT_NPROC to set, 0 = none */
};

/* Report errno to the parent and die; async-signal-safe. */
static _Noreturn void child_fail(int errfd, int err)
{
	write_all(errfd, &err, sizeof err);
	_exit(127);
}

/*
 * The child between fork and execve: async-signal-safe calls only (plus
 * setrlimit and prctl, which are plain system calls). Ordering matters:
 * the group and the death signal come first, so that from the "add"
 * message on, the tree can always be killed by someone.
 */
static _Noreturn void child_main(const struct child_plan *p)
{
	int errfd = p->errfd;

	/* Dispositions back to default but SIGPIPE, which we ignore while
	 * writing to a watchdog that may be dead; the mask stays full (it
	 * was filled before fork) until just before execve. */
	reset_signals();
	set_handler(SIGPIPE, SIG_IGN);

	/* A session of its own, which is also a process group of its own
	 * (pgid = pid). A new session rather than only a new group: with
	 * the scheduler's autogroups (kernel.sched_autogroup_enabled) a
	 * session is a CPU group, so a tree of a thousand busy processes
	 * gets one group's share of the CPU, not a thousand shares taken
	 * from the daemon's group, and the mount stays responsive. */
	if (setsid() < 0)
		child_fail(errfd, errno);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		child_fail(errfd, errno);
	if (getppid() != p->parent)
		_exit(127); /* the daemon died before prctl: nobody to run for */
	if (p->wd_fd >= 0) {
		struct wd_msg m = { .op = WD_ADD, .pgid = getpid() };
		write_all(p->wd_fd, &m, sizeof m);
	}
	set_handler(SIGPIPE, SIG_DFL); /* also drops a SIGPIPE pending from it */

	/* The bound on processes, before anything can fork. */
	if (p->cg_procs < 0 || write_all(p->cg_procs, "0", 1) < 0) {
		struct rlimit rl;
		if (p->nproc > 0 && getrlimit(RLIMIT_NPROC, &rl) == 0) {
			rlim_t lim = p->nproc;
			if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < lim)
				lim = rl.rlim_max;
			rl.rlim_cur = rl.rlim_max = lim;
			setrlimit(RLIMIT_NPROC, &rl);
		}
	}

	/* Move every fd we keep above 2 first, so that no dup2 onto 0..2
	 * clobbers a source that happens to be 0..2. */
	int err_hi = fcntl(errfd, F_DUPFD_CLOEXEC, 3);
	if (err_hi < 0)
		child_fail(errfd, errno);
	errfd = err_hi;
	int hi[3];
	for (int i = 0; i < 3; i++) {
		hi[i] = fcntl(p->fds[i], F_DUPFD, 3);
		if (hi[i] < 0)
			child_fail(errfd, errno);
	}
	for (int i = 0; i < 3; i++)
		if (dup2(hi[i], i) < 0)
			child_fail(errfd, errno);
	close_from(3, (unsigned)errfd - 1);
	close_from((unsigned)errfd + 1, ~0U);

	if (chdir(p->cwd) < 0)
		child_fail(errfd, errno);
	if (p->max_output > 0) {
		/* Soft and hard, so the worker cannot raise it; never above
		 * the hard limit we inherited, which only root could raise. */
		struct rlimit rl;
		rlim_t lim = (rlim_t)p->max_output;
		if (getrlimit(RLIMIT_FSIZE, &rl) == 0 &&
		    rl.rlim_max != RLIM_INFINITY && rl.rlim_max < lim)
			lim = rl.rlim_max;
		rl.rlim_cur = rl.rlim_max = lim;
		if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
			child_fail(errfd, errno);
	}
	if (p->path == NULL)
		child_fail(errfd, ENOENT);

	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	execve(p->path, p->argv, p->envp);
	child_fail(errfd, errno);
}

static void running_link(struct local_executor *ex, struct exec_attempt *a)
{
	pthread_mutex_lock(&ex->run_lock);
	a->prev = NULL;
	a->next = ex->running;
	if (ex->running)
		ex->running->prev = a;
	ex->running = a;
	pthread_mutex_unlock(&ex->run_lock);
}

static void running_unlink(struct exec_attempt *a)
{
	struct local_executor *ex = a->ex;
	if (ex == NULL)
		return;
	pthread_mutex_lock(&ex->run_lock);
	if (a->prev)
		a->prev->next = a->next;
	else if (ex->running == a)
		ex->running = a->next;
	if (a->next)
		a->next->prev = a->prev;
	a->prev = a->next = NULL;
	pthread_mutex_unlock(&ex->run_lock);
}

/* Is fd open? Checked before fork so that a bad request fails here and
 * not as a puzzling exec_errno later. */
static int fd_valid(int fd)
{
	return fd >= 0 && fcntl(fd, F_GETFD) >= 0;
}

/*
 * fork() that also returns a pidfd for the child, atomically: clone with
 * CLONE_PIDFD and no new stack behaves as fork. Chosen over fork() plus
 * pidfd_open() because valgrind (3.19, Debian 12) does not know
 * pidfd_open but runs this clone as a fork. Unlike fork(), it runs no
 * atfork handlers and leaves glibc's cached thread id stale in the child;
 * child_main() calls nothing that needs either (no malloc, stdio, raise,
 * pthread_*). Returns the pid as fork() does; *pidfd is set in the parent.
 */
static pid_t fork_pidfd(int *pidfd)
{
	unsigned long flags = CLONE_PIDFD | SIGCHLD;
#if defined(__s390__) || defined(__CRIS__)
	if (FAULT("jobfs/fork", EAGAIN))
		return -1;
	return (pid_t)syscall(SYS_clone, 0UL, flags, pidfd, NULL, 0UL);
#else
	if (FAULT("jobfs/fork", EAGAIN))
		return -1;
	return (pid_t)syscall(SYS_clone, flags, 0UL, pidfd, NULL, 0UL);
#endif
}

/*
 * Start the child the way posix_spawn does: CLONE_VM | CLONE_VFORK on a
 * stack of its own. No page table of the daemon is copied (a fork costs
 * in proportion to the daemon's mapped memory, and the scheduler does it
 * with the engine lock held), and this thread sleeps until the child has
 * exec'd or died; the daemon's other threads run on. Sharing memory is
 * safe because child_main() writes nothing but its own stack and errno
 * (this thread's, which sleeps meanwhile), and has its own copy of the
 * signal handlers (no CLONE_SIGHAND). valgrind runs it as a fork. The
 * stack is made once and reused: one start at a time (exec.h). Falls back to fork_pidfd() if the stack cannot be mapped.
 */
#define CHILD_STACK ((size_t)64 * 1024)

/* AddressSanitizer keeps per-thread state that a child sharing the
 * daemon's memory would corrupt: sanitizer builds fork. */
#if defined(__SANITIZE_ADDRESS__)
#define SPAWN_FORKS 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SPAWN_FORKS 1
#endif
#endif
#ifndef SPAWN_FORKS
#define SPAWN_FORKS 0
#endif

static int child_entry(void *arg)
{
	child_main(arg);
}

static pid_t spawn_pidfd(struct local_executor *ex, struct child_plan *plan,
			 int *pidfd)
{
	if (ex->stack == NULL) {
		long page = sysconf(_SC_PAGESIZE);
		if (SPAWN_FORKS)
			goto fork;
		void *p = mmap(NULL, CHILD_STACK + (size_t)page,
			       PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
		if (p == MAP_FAILED)
			goto fork;
		mprotect(p, (size_t)page, PROT_NONE); /* guard below */
		ex->stack = p;
		ex->stack_len = CHILD_STACK + (size_t)page;
	}
	if (FAULT("jobfs/fork", EAGAIN))
		return -1;
	return clone(child_entry, (char *)ex->stack + ex->stack_len,
		     CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, plan,
		     pidfd);
fork:;
	pid_t pid = fork_pidfd(pidfd);
	if (pid == 0)
		child_main(plan);
	return pid;
}

static double mono_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Open cgroup name's cgroup.procs into plan->cg_procs, first writing
 * pids.max = max when set_max; 1 on success. */
static int cg_plan(int base, const char *name, uint32_t max, int set_max,
		   struct child_plan *plan)
{
	char num[32];
	int d = openat(base, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (d < 0)
		return 0;
	snprintf(num, sizeof num, "%u", max);
	if (!set_max || write_str_at(d, "pids.max", num) == 0)
		plan->cg_procs = openat(d, "cgroup.procs",
					O_WRONLY | O_CLOEXEC);
	close(d);
	return plan->cg_procs >= 0;
}

/*
 * Set up the bound on the attempt's processes in plan: a pids cgroup
 * with pids.max = max, pooled (cg_release) or fresh (its number is
 * returned, and its cgroup.procs open in plan->cg_procs), else
 * RLIMIT_NPROC in plan->nproc (0 returned). The user's task count behind
 * RLIMIT_NPROC is counted at most once a second.
 */
static unsigned long bound_procs(struct local_executor *ex, uint32_t max,
				 struct child_plan *plan)
{
	if (ex->cg_base >= 0) {
		char name[64];
		unsigned long n = 0;
		uint32_t had = 0;
		double now = mono_seconds();

		cg_retry_left(ex);
		/* a daemon killed just before we started left cgroups whose
		 * members were still dying then: try them again now and then */
		if (now - ex->swept_at > 10.0) {
			cg_sweep_stale(ex->cg_base);
			ex->swept_at = now;
		}
		pthread_mutex_lock(&ex->cg_lock);
		if (ex->cg_npool) {
			ex->cg_npool--;
			n = ex->cg_pool[ex->cg_npool].n;
			had = ex->cg_pool[ex->cg_npool].max;
		}
		pthread_mutex_unlock(&ex->cg_lock);
		if (n) {
			/* a pooled cgroup, empty since its attempt */
			cg_name(name, sizeof name, ex->cg_owner, n);
			if (cg_plan(ex->cg_base, name, max, had != max, plan))
				return n;
			cg_remove(ex->cg_base, name);
		}
		n = ++ex->cg_seq;
		cg_name(name, sizeof name, ex->cg_owner, n);
		if (mkdirat(ex->cg_base, name, 0700) == 0) {
			if (cg_plan(ex->cg_base, name, max, 1, plan))
				return n;
			unlinkat(ex->cg_base, name, AT_REMOVEDIR);
		}
	}
	double now = mono_seconds();
	if (ex->nproc_at == 0 || now - ex->nproc_at > 1.0) {
		ex->nproc_base = uid_tasks(getuid());
		ex->nproc_at = now;
	}
	plan->nproc = (rlim_t)(ex->nproc_base + max);
	return 0;
}

/*
 * exec_start() for the local executor: fork a child that becomes the
 * leader of a new session and process group and execs req->argv. The
 * request is borrowed for the call only. Returns 0 and sets *out, or a negative
 * errno: -EINVAL (empty argv), -EBADF (a request fd is not open),
 * -ENOMEM, or what pipe2 or clone failed with.
 */
static int local_start(struct executor *base, const struct exec_request *req,
		       struct exec_attempt **out)
{
	struct local_executor *ex = (struct local_executor *)base;
	int rc = 0;

	if (ex->closed)
		return -EBADF;
	if (req->argv == NULL || req->argv[0] == NULL || req->cwd == NULL)
		return -EINVAL;
	if (!fd_valid(req->stdin_fd) || !fd_valid(req->stdout_fd) ||
	    !fd_valid(req->stderr_fd))
		return -EBADF;

	struct exec_attempt *a = calloc(1, sizeof *a);
	if (a == NULL)
		return -ENOMEM;

	char *path;
	rc = resolve_program(req->argv[0], req->envp, req->cwd, &path);
	if (rc < 0)
		goto free_a;

	int ep[2];
	if (pipe2(ep, O_CLOEXEC) < 0) {
		rc = -errno;
		goto free_path;
	}

	struct child_plan plan = {
		.path = path,
		.argv = req->argv,
		.envp = req->envp,
		.cwd = req->cwd,
		.fds = { req->stdin_fd, req->stdout_fd, req->stderr_fd },
		.errfd = ep[1],
		.wd_fd = ex->wd_fd,
		.parent = getpid(),
		.max_output = req->max_output,
		.cg_procs = -1,
	};
	unsigned long cg = 0;
	if (req->max_procs > 0)
		cg = bound_procs(ex, req->max_procs, &plan);

	/* Block every signal across fork, so no handler of the daemon runs
	 * in the child before the child has reset them (git does the same). */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int pidfd = -1;
	pid_t pid = spawn_pidfd(ex, &plan, &pidfd);
	int fork_errno = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	close(ep[1]);
	free(path);
	if (plan.cg_procs >= 0)
		close(plan.cg_procs);
	if (pid < 0) {
		rc = -fork_errno;
		close(ep[0]);
		cg_release(ex, cg, req->max_procs);
		goto free_a;
	}

	a->ex = ex;
	a->pid = pid;
	a->cg = cg;
	a->cg_max = req->max_procs;
	a->pidfd = pidfd;
	a->errfd = ep[0];
	fcntl(a->errfd, F_SETFL, O_NONBLOCK);
	running_link(ex, a);
	__atomic_add_fetch(&ex->nattempts, 1, __ATOMIC_RELAXED);
	*out = a;
	return 0;

free_path:
	free(path);
free_a:
	free(a);
	return rc;
}

static int local_fd(struct exec_attempt *a)
{
	return a->pidfd;
}

static void local_kill(struct exec_attempt *a)
{
	if (a->reaped)
		return;
	/* pid not reaped: still ours (inv. 1). Before the child's setsid
	 * there is no group yet; then only the child itself exists, and
	 * collect() kills the group again before the reap. */
	if (kill(-a->pid, SIGKILL) < 0 && errno == ESRCH)
		kill(a->pid, SIGKILL);
}

/*
 * Collect an attempt whose main process has exited (or wait for it when
 * block is set): SIGKILL the group while the leader is an unreaped zombie,
 * tell the watchdog, then reap and fill a->result. Returns 0 or -EAGAIN.
 */
static int collect(struct exec_attempt *a, int block)
{
	if (a->reaped)
		return 0;

	siginfo_t si;
	memset(&si, 0, sizeof si);
	int flags = WEXITED | WNOWAIT | (block ? 0 : WNOHANG);
	int r;
	do
		r = waitid(P_PIDFD, (id_t)a->pidfd, &si, flags);
	while (r < 0 && errno == EINTR);
	if (r == 0 && si.si_pid == 0)
		return -EAGAIN;

	memset(&a->result, 0, sizeof a->result);
	if (r < 0) {
		/* ECHILD: someone else in the daemon waited for our child
		 * (a waitpid(-1) somewhere). The pid may be recycled, so no
		 * kill(-pgid); report the lost status as a failed start. */
		a->result.exec_errno = errno;
		wd_send(a->ex, WD_DEL, a->pid);
		goto done;
	}

	kill(-a->pid, SIGKILL);          /* leftovers of the tree (inv. 1) */
	wd_send(a->ex, WD_DEL, a->pid);  /* before the pgid is freed (inv. 3) */

	int status = 0;
	struct rusage ru;
	memset(&ru, 0, sizeof ru);
	pid_t w;
	do
		w = wait4(a->pid, &status, 0, &ru);
	while (w < 0 && errno == EINTR);
	if (w < 0) {
		a->result.exec_errno = errno;
		goto done;
	}

	int e = 0;
	if (read(a->errfd, &e, sizeof e) == (ssize_t)sizeof e && e != 0) {
		a->result.exec_errno = e;
	}
	if (WIFSIGNALED(status)) {
		a->result.signaled = 1;
		a->result.code = WTERMSIG(status);
	} else {
		a->result.code = WEXITSTATUS(status);
	}
	/* The main process's time plus that of the descendants it waited
	 * for (a shell's commands), which is what a user means by it. */
	a->result.cpu_seconds =
		(double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
		(double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
done:
	a->reaped = 1;
	running_unlink(a);
	/* kills what is left in the group; contained when nothing was */
	a->result.contained = cg_release(a->ex, a->cg, a->cg_max);
	a->cg = 0;
	return 0;
}

static int local_reap(struct exec_attempt *a, struct exec_result *out)
{
	int rc = collect(a, 0);
	if (rc == 0)
		*out = a->result;
	return rc;
}

/* Release an executor that is closed and has no attempts left. */
static void executor_maybe_free(struct local_executor *ex)
{
	if (ex != NULL && ex->closed &&
	    __atomic_load_n(&ex->nattempts, __ATOMIC_ACQUIRE) == 0) {
		if (ex->cg_base >= 0) {
			for (size_t i = 0; i < ex->cg_npool; i++) {
				char name[64];
				cg_name(name, sizeof name, ex->cg_owner,
					ex->cg_pool[i].n);
				cg_remove(ex->cg_base, name);
			}
			cg_retry_left(ex);
			close(ex->cg_base);
		}
		pthread_mutex_destroy(&ex->cg_lock);
		pthread_mutex_destroy(&ex->run_lock);
		free(ex->cg_left);
		if (ex->stack != NULL)
			munmap(ex->stack, ex->stack_len);
		free(ex);
	}
}

static void local_free(struct exec_attempt *a)
{
	if (a == NULL)
		return;
	if (!a->reaped) {
		local_kill(a);
		collect(a, 1);
	}
	close(a->pidfd);
	close(a->errfd);
	struct local_executor *ex = a->ex;
	assert(a->reaped);
	if (ex != NULL) {
		unsigned left = __atomic_sub_fetch(&ex->nattempts, 1,
						   __ATOMIC_ACQ_REL);
		assert(left != (unsigned)-1);
		(void)left;
		executor_maybe_free(ex);
	}
	free(a);
}

/*
 * exec_close(): SIGKILL every attempt not yet reaped, close the pipe (the
 * watchdog then kills whatever it still knows and exits) and reap the
 * watchdog. Attempts not yet freed stay valid: they can still be polled,
 * reaped and freed, and the executor's memory goes with the last of them,
 * so exec_free(ex, a) after exec_close(ex) is legal.
 */
static void local_close(struct executor *base)
{
	struct local_executor *ex = (struct local_executor *)base;
	pthread_mutex_lock(&ex->run_lock);
	for (struct exec_attempt *a = ex->running; a != NULL; a = a->next)
		kill(-a->pid, SIGKILL);
	pthread_mutex_unlock(&ex->run_lock);
	if (ex->wd_fd >= 0) {
		close(ex->wd_fd);
		ex->wd_fd = -1;
	}
	if (ex->wd_pid > 0) {
		while (waitpid(ex->wd_pid, NULL, 0) < 0 && errno == EINTR)
			;
		ex->wd_pid = 0;
	}
	ex->closed = 1;
	executor_maybe_free(ex);
}

static const struct executor_ops local_ops = {
	.start = local_start,
	.fd = local_fd,
	.kill = local_kill,
	.reap = local_reap,
	.free = local_free,
	.close = local_close,
};

/* ---- environment ----------------------------------------------------- */

static int env_allowed(const char *kv)
{
	static const char *const names[] = {
		"PATH", "HOME", "LANG", "TZ", "TMPDIR", "USER", "LOGNAME",
	};
	const char *eq = strchr(kv, '=');
	if (eq == NULL || eq == kv)
		return 0;
	size_t klen = (size_t)(eq - kv);
	if (strncmp(kv, "LD_", 3) == 0)
		return 0;
	if (strncmp(kv, "LC_", 3) == 0)
		return 1;
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (strlen(names[i]) == klen && strncmp(kv, names[i], klen) == 0)
			return 1;
	return 0;
}

/* Set "KEY=VALUE" in env (n entries, room for it and the NULL): replace
 * the entry with the same KEY or append. Takes a copy. 0 or -ENOMEM. */
static int env_put(char **env, size_t *n, const char *kv)
{
	size_t klen = (size_t)(strchr(kv, '=') - kv) + 1; /* with '=' */
	char *copy = strdup(kv);
	if (copy == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < *n; i++) {
		if (strncmp(env[i], kv, klen) == 0) {
			free(env[i]);
			env[i] = copy;
			return 0;
		}
	}
	env[(*n)++] = copy;
	env[*n] = NULL;
	return 0;
}

static size_t count_strv(char *const *v)
{
	size_t n = 0;
	while (v != NULL && v[n] != NULL)
		n++;
	return n;
}

/*
 * exec_env_build(): see exec.h. Extra entries without '=' or with an
 * empty KEY are skipped. The daemon's environment is read with environ,
 * so do not call this while another thread may setenv().
 */
char **exec_env_build(char *const *extra_a, char *const *extra_b)
{
	size_t cap = count_strv(environ) + count_strv(extra_a) +
		     count_strv(extra_b) + 2; /* default PATH, NULL */
	char **env = calloc(cap, sizeof *env);
	if (env == NULL)
		return NULL;
	size_t n = 0;
	int have_path = 0;

	for (size_t i = 0; environ != NULL && environ[i] != NULL; i++) {
		if (!env_allowed(environ[i]))
			continue;
		if (strncmp(environ[i], "PATH=", 5) == 0)
			have_path = 1;
		if (env_put(env, &n, environ[i]) < 0)
			goto fail;
	}
	if (!have_path && env_put(env, &n, "PATH=" DEFAULT_PATH) < 0)
		goto fail;
	char *const *extras[2] = { extra_a, extra_b };
	for (int k = 0; k < 2; k++) {
		for (size_t i = 0; extras[k] != NULL && extras[k][i] != NULL; i++) {
			const char *kv = extras[k][i];
			const char *eq = strchr(kv, '=');
			if (eq == NULL || eq == kv)
				continue;
			if (env_put(env, &n, kv) < 0)
				goto fail;
		}
	}
	return env;
fail:
	exec_env_free(env);
	return NULL;
}

/* Free what exec_env_build() returned; NULL is fine. */
void exec_env_free(char **env)
{
	for (size_t i = 0; env != NULL && env[i] != NULL; i++)
		free(env[i]);
	free(env);
}

/* ---- describing results ---------------------------------------------- */

/* The first word of a shell command: up to blank or an operator. */
static void first_word(const char *cmd, char *buf, size_t len)
{
	const char *s = cmd ? cmd : "";
	s += strspn(s, " \t\n");
	size_t w = strcspn(s, " \t\n;&|<>()");
	snprintf(buf, len, "%.*s", (int)w, s);
}

/* exec_describe(): see exec.h. Never fails; the text is cut to fit len. */
void exec_describe(const struct exec_result *r, char *const *argv,
		   int is_shell, char *buf, size_t len)
{
	const char *prog = argv && argv[0] ? argv[0] : "?";
	if (len == 0)
		return;
	if (r->exec_errno != 0) {
		if (r->exec_errno == ENOENT)
			snprintf(buf, len, "command not found: %s", prog);
		else if (r->exec_errno == EACCES)
			snprintf(buf, len, "not executable: %s", prog);
		else {
			const char *msg = strerrordesc_np(r->exec_errno);
			if (msg)
				snprintf(buf, len, "cannot run %s: %s", prog, msg);
			else
				snprintf(buf, len, "cannot run %s: error %d", prog,
					 r->exec_errno);
		}
		return;
	}
	if (r->signaled) {
		const char *abbrev = sigabbrev_np(r->code);
		if (abbrev)
			snprintf(buf, len, "killed by SIG%s", abbrev);
		else
			snprintf(buf, len, "killed by signal %d", r->code);
		return;
	}
	if (is_shell && (r->code == 127 || r->code == 126) && argv &&
	    argv[0] && argv[1] && argv[2]) {
		char word[256];
		first_word(argv[2], word, sizeof word);
		if (word[0] != '\0') {
			snprintf(buf, len, "%s: %s",
				 r->code == 127 ? "command not found"
						: "not executable",
				 word);
			return;
		}
	}
	snprintf(buf, len, "exit %d", r->code);
}
