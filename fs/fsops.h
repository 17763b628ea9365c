/*
 * fsops.h - the FUSE operations table (fsops.c). fuse_new() is given the
 * engine as private data; every operation finds it there.
 */
#ifndef JOBFS_FSOPS_H
#define JOBFS_FSOPS_H

#define FUSE_USE_VERSION 314
#include <fuse.h>

extern const struct fuse_operations jobfs_ops;

#endif
