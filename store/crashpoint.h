/*
 * crashpoint.h - named places where a test build can die on purpose.
 *
 * In a build configured with -Dcrashpoints=true, JOBFS_CRASHPOINT=name:k
 * in the daemon's environment makes the k-th pass through crashpoint(name)
 * send the daemon SIGKILL, exactly as kill -9 would at that instant. The
 * crash suite (tests/crash/crashpoints.py) sweeps every point and checks
 * that a remount recovers a consistent store. In a normal build
 * crashpoint() is nothing.
 *
 * Points, in the order a chunk meets them:
 *   tmp-created      the stdout temp file of an attempt exists
 *   mid-output       the output is hashed but not yet fsynced
 *   file-fsync       the output file is fsynced, not renamed
 *   rename           renamed into objects/, directory not fsynced
 *   dir-fsync        directory fsynced, LMDB not committed
 *   before-commit    inside the LMDB write transaction, before commit
 *   after-commit     committed, not yet visible in memory
 * and elsewhere:
 *   mid-input        an input write is half in its temp file
 *   input-renamed    a new input file is in place, its plan not committed
 *   spec-write       a new spec is parsed, its plan not committed
 *   gc               an unreferenced object is about to be unlinked
 *   recovery         startup recovery, between its steps
 */
#ifndef JOBFS_CRASHPOINT_H
#define JOBFS_CRASHPOINT_H

#ifdef JOBFS_CRASHPOINTS
void crashpoint(const char *name);
#else
#define crashpoint(name) ((void)0)
#endif

#endif
