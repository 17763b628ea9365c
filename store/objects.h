/*
 * objects.h - the store directory: content-addressed outputs and the
 * files that live beside the LMDB environment.
 *
 *   STORE/lock              flock'ed by the one daemon using the store
 *   STORE/db/               the LMDB environment (db.h)
 *   STORE/objects/xx/HASH   chunk outputs, named by their SHA-256
 *   STORE/inputs/ID         each job's input bytes
 *   STORE/events/ID.jsonl   each job's event log
 *   STORE/logs/ID/N.log     worker stderr per chunk
 *   STORE/tmp/              files being written; emptied at start
 *   STORE/scratch/          worker working directories; emptied at start
 *
 * Every path is opened relative to directory descriptors held here, with
 * O_NOFOLLOW, so a planted symlink cannot lead jobfs out of the store.
 *
 * Publishing an object follows the commit protocol's first half:
 *   write temp file -> fsync file -> rename into objects/xx/ ->
 *   fsync objects/xx/
 * after which the caller may commit the LMDB record that refers to it.
 */
#ifndef JOBFS_OBJECTS_H
#define JOBFS_OBJECTS_H

#include <stddef.h>
#include <stdint.h>

#include "sha.h"

struct objstore {
	int root, objects, inputs, events, logs, tmp, scratch;
	char *path;    /* absolute path of the store root */
};

/*
 * Open the store at path, creating it (mode 0700) and its directories as
 * needed. Refuses a store root that is a symlink or writable by others.
 * Returns 0 or a negative errno with a message in err.
 */
int objstore_open(const char *path, struct objstore *os, char *err,
		  size_t errlen);
void objstore_close(struct objstore *os);

/* Create a new empty file in tmp/ open for read and write; the name is
 * written into name (at least 64 bytes). */
int objstore_tmp_create(struct objstore *os, const char *prefix,
			char *name, size_t namelen, int *fd_out);

/*
 * Publish the file open as fd (found as dirfd/name, so it can be renamed)
 * as an object: hash it, fsync it, rename it to objects/xx/HASH and fsync
 * that directory. On success sets sha and size; the source name is gone.
 */
int objstore_publish(struct objstore *os, int fd, int dirfd,
		     const char *name, uint8_t sha[SHA_LEN], uint64_t *size);

/*
 * The same in two steps, for group commit: publish several files without
 * syncing their directories (*created is set when a new objects/xx/ was
 * made), then fsync each distinct objects/xx/ once, and objects/ itself if
 * any was created. Only after objstore_sync_dirs() returns 0 may a commit
 * refer to those objects.
 */
int objstore_publish_nosync(struct objstore *os, int fd, int dirfd,
			    const char *name, uint8_t sha[SHA_LEN],
			    uint64_t *size, int *created);
int objstore_sync_dirs(struct objstore *os, const uint8_t (*sha)[SHA_LEN],
		       size_t n, int created);

/* Open an object read-only. -ENOENT if it is missing. */
int objstore_open_obj(struct objstore *os, const uint8_t sha[SHA_LEN],
		      int *fd_out);

/* Remove an object's file (no error if missing). */
int objstore_unlink_obj(struct objstore *os, const uint8_t sha[SHA_LEN]);

/*
 * Walk every object file, calling is_live for each; remove those for
 * which it returns 0. Returns the number removed or a negative errno.
 */
typedef int (*objstore_live_fn)(void *arg, const uint8_t sha[SHA_LEN]);
long objstore_sweep(struct objstore *os, objstore_live_fn is_live, void *arg);

/* Remove everything below tmp/ and scratch/ (startup recovery); returns
 * the number of entries removed. */
long objstore_clear_temps(struct objstore *os);

/*
 * Open the directory name right below dirfd (made first, mode 0700, when
 * create is set), never through a symlink: a symlink planted there gives
 * -ENOTDIR (or -ELOOP), so nothing outside the store is reached through
 * it. Paths of two components (objects/xx/SHA, logs/ID/N.log) go through
 * this and then one name relative to the fd, never as "a/b", which would
 * follow a symlinked "a". The caller closes *out.
 */
int objstore_dir_open(int dirfd, const char *name, int create, int *out);

/* Remove a directory tree below dirfd (worker scratch, job logs). */
int objstore_rmtree(int dirfd, const char *name);

/* fsync a directory descriptor, retrying EINTR. */
int objstore_fsync_dir(int dirfd);
/* fsync the directory that holds path (a new name in it is then durable). */
int objstore_fsync_parent(const char *path);

#endif
