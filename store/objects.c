/*
 * objects.c - the store's directories and its content-addressed objects.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crashpoint.h"
#include "fault.h"
#include "objects.h"

static int open_subdir(int dirfd, const char *name, int *out)
{
	return objstore_dir_open(dirfd, name, 1, out);
}

int objstore_dir_open(int dirfd, const char *name, int create, int *out)
{
	int fd;

	if (create && mkdirat(dirfd, name, 0700) < 0 && errno != EEXIST)
		return -errno;
	fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
		    O_CLOEXEC);
	if (fd < 0)
		return -errno;
	*out = fd;
	return 0;
}

int objstore_fsync_parent(const char *path)
{
	char *copy = strdup(path), *slash;
	int fd, rc;

	if (!copy)
		return -ENOMEM;
	while ((slash = strrchr(copy, '/')) && slash[1] == '\0' &&
	       slash != copy)
		*slash = '\0'; /* trailing slashes */
	slash = strrchr(copy, '/');
	if (!slash)
		strcpy(copy, ".");
	else if (slash == copy)
		copy[1] = '\0';
	else
		*slash = '\0';
	fd = open(copy, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(copy);
	if (fd < 0)
		return -errno;
	rc = objstore_fsync_dir(fd);
	close(fd);
	return rc;
}

int objstore_open(const char *path, struct objstore *os, char *err,
		  size_t errlen)
{
	struct stat st;
	int rc;

	int made;

	memset(os, 0, sizeof(*os));
	os->root = os->objects = os->inputs = os->events = os->logs = -1;
	os->tmp = os->scratch = -1;

	made = mkdir(path, 0700) == 0;
	if (!made && errno != EEXIST) {
		rc = -errno;
		snprintf(err, errlen, "cannot create store %s: %s", path,
			 strerror(errno));
		return rc;
	}
	if (lstat(path, &st) < 0) {
		rc = -errno;
		snprintf(err, errlen, "store %s: %s", path, strerror(errno));
		return rc;
	}
	if (S_ISLNK(st.st_mode) || !S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "store %s is not a directory (a symlink "
			 "is refused)", path);
		return -ENOTDIR;
	}
	if (st.st_mode & 0022) {
		snprintf(err, errlen, "store %s is writable by others (mode "
			 "%03o); run: chmod go-w %s", path,
			 (unsigned)(st.st_mode & 0777), path);
		return -EPERM;
	}
	os->root = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (os->root < 0) {
		rc = -errno;
		snprintf(err, errlen, "store %s: %s", path, strerror(errno));
		return rc;
	}
	os->path = realpath(path, NULL);
	if (!os->path)
		return -ENOMEM;
	if ((rc = open_subdir(os->root, "objects", &os->objects)) ||
	    (rc = open_subdir(os->root, "inputs", &os->inputs)) ||
	    (rc = open_subdir(os->root, "events", &os->events)) ||
	    (rc = open_subdir(os->root, "logs", &os->logs)) ||
	    (rc = open_subdir(os->root, "tmp", &os->tmp)) ||
	    (rc = open_subdir(os->root, "scratch", &os->scratch)) ||
	    (rc = mkdirat(os->root, "db", 0700) < 0 && errno != EEXIST ?
	     -errno : 0)) {
		snprintf(err, errlen, "store %s: cannot create its "
			 "directories: %s", path, strerror(-rc));
		objstore_close(os);
		return rc;
	}
	/* The names just made must outlive a power loss before anything
	 * in them is acknowledged: the store in its parent, its
	 * directories in it, and an objects/xx/ that a daemon which died
	 * made without syncing objects/ (a publish syncs objects/ only when
	 * its own mkdir made the subdirectory). */
	if ((made && (rc = objstore_fsync_parent(path))) ||
	    (rc = objstore_fsync_dir(os->objects)) ||
	    (rc = objstore_fsync_dir(os->root))) {
		snprintf(err, errlen, "store %s: cannot sync it: %s", path,
			 strerror(-rc));
		objstore_close(os);
		return rc;
	}
	return 0;
}

void objstore_close(struct objstore *os)
{
	int *fds[] = { &os->root, &os->objects, &os->inputs, &os->events,
		       &os->logs, &os->tmp, &os->scratch };

	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
		if (*fds[i] >= 0)
			close(*fds[i]);
		*fds[i] = -1;
	}
	free(os->path);
	os->path = NULL;
}

int objstore_tmp_create(struct objstore *os, const char *prefix,
			char *name, size_t namelen, int *fd_out)
{
	static unsigned long seq;
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	for (int tries = 0; tries < 100; tries++) {
		int fd;

		snprintf(name, namelen, "%s-%ld-%lu-%lx", prefix,
			 (long)getpid(),
			 __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED),
			 (unsigned long)ts.tv_nsec);
		fd = FAULT("jobfs/open", EIO) ? -1 :
			openat(os->tmp, name, O_RDWR | O_CREAT | O_EXCL |
			       O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd >= 0) {
			*fd_out = fd;
			return 0;
		}
		if (errno != EEXIST)
			return -errno;
	}
	return -EEXIST;
}

int objstore_fsync_dir(int dirfd)
{
	while (fsync(dirfd) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

static void obj_path(const uint8_t sha[SHA_LEN], char dir[3],
		     char file[SHA_HEX_LEN + 1])
{
	sha_hex(sha, file);
	dir[0] = file[0];
	dir[1] = file[1];
	dir[2] = '\0';
}

int objstore_publish(struct objstore *os, int fd, int dirfd,
		     const char *name, uint8_t sha[SHA_LEN], uint64_t *size)
{
	int created = 0, rc;

	rc = objstore_publish_nosync(os, fd, dirfd, name, sha, size,
				     &created);
	if (!rc)
		rc = objstore_sync_dirs(os, (const uint8_t (*)[SHA_LEN])sha, 1,
					created);
	return rc;
}

int objstore_sync_dirs(struct objstore *os, const uint8_t (*sha)[SHA_LEN],
		       size_t n, int created)
{
	uint8_t done[256] = { 0 };
	int rc = 0;

	for (size_t i = 0; i < n && !rc; i++) {
		char dir[3], file[SHA_HEX_LEN + 1];
		int sub;

		if (done[sha[i][0]]++)
			continue;
		obj_path(sha[i], dir, file);
		sub = openat(os->objects, dir, O_RDONLY | O_DIRECTORY |
			     O_NOFOLLOW | O_CLOEXEC);
		if (sub < 0)
			return -errno;
		rc = objstore_fsync_dir(sub);
		close(sub);
	}
	/* a new objects/xx/ must itself be made durable in objects/ */
	if (!rc && created)
		rc = objstore_fsync_dir(os->objects);
	return rc;
}

int objstore_publish_nosync(struct objstore *os, int fd, int dirfd,
			    const char *name, uint8_t sha[SHA_LEN],
			    uint64_t *size, int *created)
{
	char dir[3], file[SHA_HEX_LEN + 1];
	int sub = -1, rc;

	rc = sha_fd(fd, sha, size);
	if (rc)
		return rc;
	crashpoint("mid-output");
#ifndef JOBFS_MUTANT_NO_OUTPUT_FSYNC
	while (fsync(fd) < 0) {
		if (errno != EINTR)
			return -errno;
	}
#endif
	crashpoint("file-fsync");
	obj_path(sha, dir, file);
	if (mkdirat(os->objects, dir, 0700) == 0)
		*created = 1;
	else if (errno != EEXIST)
		return -errno;
	sub = openat(os->objects, dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
		     O_CLOEXEC);
	if (sub < 0)
		return -errno;
	/* Replacing an existing object is harmless: the name is its hash,
	 * so the bytes are the same. */
	rc = FAULT("jobfs/rename", EIO) || renameat(dirfd, name, sub, file) < 0 ?
		-errno : 0;
	close(sub);
	if (!rc)
		crashpoint("rename");
	return rc;
}

int objstore_open_obj(struct objstore *os, const uint8_t sha[SHA_LEN],
		      int *fd_out)
{
	char dir[3], file[SHA_HEX_LEN + 1];
	int sub, fd, rc;

	obj_path(sha, dir, file);
	if (FAULT("jobfs/open", EIO))
		return -errno;
	rc = objstore_dir_open(os->objects, dir, 0, &sub);
	if (rc)
		return rc;
	fd = openat(sub, file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	rc = fd < 0 ? -errno : 0;
	close(sub);
	if (!rc)
		*fd_out = fd;
	return rc;
}

int objstore_unlink_obj(struct objstore *os, const uint8_t sha[SHA_LEN])
{
	char dir[3], file[SHA_HEX_LEN + 1];
	int sub, rc;

	obj_path(sha, dir, file);
	rc = objstore_dir_open(os->objects, dir, 0, &sub);
	if (rc)
		return rc == -ENOENT ? 0 : rc;
	rc = unlinkat(sub, file, 0) < 0 && errno != ENOENT ? -errno : 0;
	close(sub);
	return rc;
}

long objstore_sweep(struct objstore *os, objstore_live_fn is_live, void *arg)
{
	DIR *top;
	struct dirent *de;
	long removed = 0;
	int fd;

	fd = openat(os->objects, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	top = fdopendir(fd);
	if (!top) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(top))) {
		struct dirent *e;
		DIR *sub;
		int sfd;

		if (de->d_name[0] == '.' || strlen(de->d_name) != 2)
			continue;
		sfd = openat(os->objects, de->d_name, O_RDONLY | O_DIRECTORY |
			     O_NOFOLLOW | O_CLOEXEC);
		if (sfd < 0)
			continue;
		sub = fdopendir(sfd);
		if (!sub) {
			close(sfd);
			continue;
		}
		while ((e = readdir(sub))) {
			uint8_t sha[SHA_LEN];

			if (e->d_name[0] == '.')
				continue;
			if (sha_unhex(e->d_name, sha) == 0 &&
			    memcmp(e->d_name, de->d_name, 2) == 0 &&
			    is_live(arg, sha))
				continue;
			crashpoint("gc");
			if (unlinkat(sfd, e->d_name, 0) == 0)
				removed++;
		}
		closedir(sub);
	}
	closedir(top);
	return removed;
}

/* Remove every entry of the directory open as dirfd. */
static long clear_dir(int dirfd)
{
	DIR *d;
	struct dirent *de;
	long n = 0;
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (objstore_rmtree(dirfd, de->d_name) == 0)
			n++;
	}
	closedir(d);
	return n;
}

long objstore_clear_temps(struct objstore *os)
{
	long a = clear_dir(os->tmp), b = clear_dir(os->scratch);

	return (a > 0 ? a : 0) + (b > 0 ? b : 0);
}

int objstore_rmtree(int parent, const char *name)
{
	struct stat st;
	DIR *d;
	struct dirent *de;
	int fd;

	if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(st.st_mode))
		return unlinkat(parent, name, 0) < 0 ? -errno : 0;
	fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
		    O_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* A worker may leave a directory it cannot be walked into. */
	fchmod(fd, 0700);
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		objstore_rmtree(dirfd(d), de->d_name);
	}
	closedir(d);
	return unlinkat(parent, name, AT_REMOVEDIR) < 0 ? -errno : 0;
}
