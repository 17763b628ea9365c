/*
 * exec.h - the executor: runs one attempt of one chunk somewhere.
 *
 * The engine talks to an executor only through this interface, so that a
 * Slurm executor can later stand beside the local one. An attempt is an
 * opaque handle with an explicit lifecycle:
 *
 *     exec_start() -> (poll exec_fd() until readable) -> exec_reap()
 *                  -> exec_free()
 *
 * exec_kill() may be called at any point between start and free and is
 * idempotent. One thread at a time starts attempts (the engine's start
 * thread, or its scheduler while the start thread is idle); exec_fd,
 * exec_kill and exec_reap of the attempts already started may be called
 * from another thread meanwhile (the scheduler, between starts),
 * and exec_free of a reaped attempt from a third (the commit thread). The
 * engine never calls two of them at once on one attempt.
 *
 * The local executor runs each attempt as a fresh process group (the
 * attempt's "tree"): it is killed as a whole on exec_kill(), and whatever
 * the main process leaves running when it exits is killed by exec_reap().
 * A watchdog process started by exec_local_open() kills every live tree
 * when the daemon dies, kill -9 included.
 */
#ifndef JOBFS_EXEC_H
#define JOBFS_EXEC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct exec_request {
	char *const *argv;   /* NULL-terminated; argv[0] without '/' is
			      * searched in the PATH found in envp */
	char *const *envp;   /* the child's complete environment */
	const char *cwd;     /* working directory (must exist) */
	int stdin_fd;        /* becomes the child's fd 0 */
	int stdout_fd;       /* becomes the child's fd 1 */
	int stderr_fd;       /* becomes the child's fd 2 */
	uint64_t max_output; /* RLIMIT_FSIZE for the tree in bytes; 0 = none */
	uint32_t max_procs;  /* processes and threads of the tree; 0 = none
			      * (a pids cgroup, else RLIMIT_NPROC) */
};

struct exec_result {
	int exec_errno;  /* non-zero: the program could not be started
			  * (ENOENT: not found, EACCES: not executable, ...)
			  * and the fields below are meaningless */
	int signaled;    /* 1: killed by signal `code`; 0: exited with `code` */
	int code;
	double cpu_seconds; /* user + system time of the main process */
	int contained;   /* 1: the tree ran in a pids cgroup that had no
			  * process left when the main one was reaped, so
			  * nothing of the attempt can still write to its
			  * working directory; 0: not known */
};

struct executor;
struct exec_attempt;

struct executor_ops {
	int (*start)(struct executor *ex, const struct exec_request *req,
		     struct exec_attempt **out);
	int (*fd)(struct exec_attempt *a);
	void (*kill)(struct exec_attempt *a);
	int (*reap)(struct exec_attempt *a, struct exec_result *out);
	void (*free)(struct exec_attempt *a);
	void (*close)(struct executor *ex);
};

struct executor {
	const struct executor_ops *ops;
};

/*
 * Open the local executor and start its watchdog process. Call before any
 * thread is started and before the LMDB environment or the FUSE channel is
 * opened, so the watchdog holds none of their descriptors. Returns 0 and
 * sets *out, or a negative errno.
 */
int exec_local_open(struct executor **out);

/*
 * Start one attempt. The request's fds are dup'ed into the child; the
 * caller still owns (and should close) its copies after the call. The
 * child gets a new session and process group, the working directory
 * req->cwd, no descriptor other than 0, 1 and 2, exactly req->envp, and SIGKILL when
 * the daemon's engine thread dies. Returns 0 and sets *out, or a negative
 * errno when no process could be created (fork failed). A program that
 * cannot be executed is not an error here: it is reported by exec_reap().
 */
static inline int exec_start(struct executor *ex,
			     const struct exec_request *req,
			     struct exec_attempt **out)
{
	return ex->ops->start(ex, req, out);
}

/* A descriptor that polls readable (POLLIN) once the attempt has ended. */
static inline int exec_fd(struct executor *ex, struct exec_attempt *a)
{
	return ex->ops->fd(a);
}

/* SIGKILL the attempt's whole tree. Idempotent. */
static inline void exec_kill(struct executor *ex, struct exec_attempt *a)
{
	ex->ops->kill(a);
}

/*
 * Collect the result of an ended attempt, killing whatever is left of its
 * tree. Returns 0 and fills *out, or -EAGAIN if the attempt has not ended.
 */
static inline int exec_reap(struct executor *ex, struct exec_attempt *a,
			    struct exec_result *out)
{
	return ex->ops->reap(a, out);
}

/* Release an attempt; kills and reaps it first if it is still running. */
static inline void exec_free(struct executor *ex, struct exec_attempt *a)
{
	ex->ops->free(a);
}

/* Kill every attempt still running, stop the watchdog, free the executor. */
static inline void exec_close(struct executor *ex)
{
	ex->ops->close(ex);
}

/*
 * Build a worker environment: the allow-listed variables of the daemon's
 * own environment (PATH, HOME, LANG, LC_*, TZ, TMPDIR, USER, LOGNAME; PATH
 * defaults to /usr/local/bin:/usr/bin:/bin when unset), then each
 * "KEY=VALUE" of extra_a and then extra_b (either may be NULL), a later
 * entry replacing an earlier one with the same KEY. Nothing else, and never
 * a variable whose name starts with LD_ from the daemon's environment.
 * Returns a NULL-terminated malloc'ed array of malloc'ed strings, freed
 * with exec_env_free(), or NULL on ENOMEM.
 */
char **exec_env_build(char *const *extra_a, char *const *extra_b);
void exec_env_free(char **env);

/* Describe a result in words: "exit 3", "killed by SIGSEGV",
 * "command not found: espeek-ng", "not executable: ./w.sh". For a shell
 * command (/bin/sh -c), exit 127 and 126 are described as not found / not
 * executable naming the first word of the command. Writes into buf. */
void exec_describe(const struct exec_result *r, char *const *argv,
		   int is_shell, char *buf, size_t len);

#endif
