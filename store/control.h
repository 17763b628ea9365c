/*
 * control.h - the grammar of a write to a job's control file.
 *
 * One write is one verb, optionally followed by blanks and an argument;
 * trailing blanks and one newline are ignored. Only "retry" takes an
 * argument: a list of chunk numbers "7", "3-5", "3-5,9". Parsing knows
 * nothing about the job except its number of chunks, so it can be tested
 * and fuzzed on its own; the engine (fs/api.c) decides whether the verb
 * is allowed in the job's state.
 */
#ifndef JOBFS_CONTROL_H
#define JOBFS_CONTROL_H

#include <stddef.h>
#include <stdint.h>

enum ctl_verb {
	CTL_START,
	CTL_RESUME,
	CTL_PAUSE,
	CTL_CANCEL,
	CTL_RETRY_FAILED,
	CTL_RETRY,
	CTL_RESET,
	CTL_VERIFY,
};

struct ctl_cmd {
	enum ctl_verb verb;
	uint32_t *list;		/* retry: chunk numbers as written, malloc'ed */
	size_t count;
};

/* The verb's name as written ("retry-failed"). */
const char *control_verb_name(enum ctl_verb v);

/*
 * Parse one write of len bytes. On success fills *cmd (free its list with
 * control_free) and returns 0. A write that is not a verb, has an
 * argument it must not have, or a chunk number outside 1..nchunks returns
 * -EINVAL with the reason, one line, in err; -ENOMEM when a list cannot
 * be allocated.
 */
int control_parse(const char *buf, size_t len, uint32_t nchunks,
		  struct ctl_cmd *cmd, char *err, size_t errlen);

void control_free(struct ctl_cmd *cmd);

#endif
