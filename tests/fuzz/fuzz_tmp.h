/*
 * fuzz_tmp.h - the scratch directory of a target that needs a real store
 * (fuzz_control, fuzz_keys). Include after defining _GNU_SOURCE.
 *
 * A target that finds something ends in abort(), before its atexit()
 * cleanup, so a long run would pile up stores. The directory is named
 * jobfs-fuzz-NAME.PID.XXXXXX, and each process first removes the ones
 * whose process is gone.
 */
#ifndef JOBFS_FUZZ_TMP_H
#define JOBFS_FUZZ_TMP_H

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fuzz_rm_entry(const char *path, const struct stat *st, int flag,
			 struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Remove path and everything below it; errors are ignored. */
static inline void fuzz_rm_tree(const char *path)
{
	nftw(path, fuzz_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Make a fresh directory for target name into out (len bytes), in
 * /dev/shm when it is writable (LMDB commits are synchronous), else in
 * $TMPDIR or /tmp; exits if it cannot. */
static inline void fuzz_tmpdir(const char *name, char *out, size_t len)
{
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" :
		getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	char prefix[64], stale[4096];
	size_t plen;
	DIR *d;
	struct dirent *de;

	snprintf(prefix, sizeof(prefix), "jobfs-fuzz-%s.", name);
	plen = strlen(prefix);
	d = opendir(base);
	while (d && (de = readdir(d))) {
		char *end;
		long pid;

		if (strncmp(de->d_name, prefix, plen))
			continue;
		pid = strtol(de->d_name + plen, &end, 10);
		if (end == de->d_name + plen || *end != '.' || pid <= 0 ||
		    kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue;
		snprintf(stale, sizeof(stale), "%s/%s", base, de->d_name);
		fuzz_rm_tree(stale);
	}
	if (d)
		closedir(d);
	snprintf(out, len, "%s/%s%ld.XXXXXX", base, prefix, (long)getpid());
	if (!mkdtemp(out)) {
		perror(out);
		exit(1);
	}
}

#endif
