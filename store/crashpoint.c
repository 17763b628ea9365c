/*
 * crashpoint.c - see crashpoint.h. Compiled only into test builds.
 */
#ifdef JOBFS_CRASHPOINTS
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crashpoint.h"

static char want[64];
static long at = -1;     /* -1: not read yet; 0: no crash point */
static long passes;

void crashpoint(const char *name)
{
	if (at < 0) {
		const char *env = getenv("JOBFS_CRASHPOINT");
		const char *colon = env ? strrchr(env, ':') : NULL;

		at = 0;
		if (colon && (size_t)(colon - env) < sizeof(want)) {
			memcpy(want, env, (size_t)(colon - env));
			want[colon - env] = '\0';
			at = strtol(colon + 1, NULL, 10);
		}
	}
	if (at <= 0 || strcmp(name, want))
		return;
	if (__atomic_add_fetch(&passes, 1, __ATOMIC_SEQ_CST) == at)
		kill(getpid(), SIGKILL);
}
#endif
