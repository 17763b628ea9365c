/*
 * fault.h - failure points for the fault-injection suite.
 *
 * libfiu's preload library fails libc calls by name (fsync, write, mmap,
 * malloc, ...), but jobfs makes its directory operations relative to
 * descriptors (openat, renameat) and starts workers with clone(2), which
 * the preload library does not wrap. In a build configured with
 * -Dfiu=true these calls also pass through libfiu failure points of
 * jobfs's own:
 *
 *   jobfs/open     openat of temp files and objects
 *   jobfs/rename   renameat of outputs into objects/ and of new inputs
 *   jobfs/fork     the clone that starts a worker
 *
 * FAULT(name, err) is true (with errno set to err) when the point fails.
 * In a normal build it is always false and costs nothing.
 */
#ifndef JOBFS_FAULT_H
#define JOBFS_FAULT_H

#include <errno.h>

#ifdef JOBFS_FIU
#include <fiu.h>
#define FAULT(name, err) (fiu_fail(name) ? (errno = (err), 1) : 0)
#else
#define FAULT(name, err) 0
#endif

#endif
