/*
 * check.h - the few macros the unit tests share.
 *
 * CHECK(cond) records a failure with file, line and the condition's text
 * and goes on; CHECK_EQ_U64 prints both values. A test program ends with
 * `return check_done();`, which prints "N checks, N failed" and returns
 * the exit status meson expects (0 pass, 1 fail).
 */
#ifndef JOBFS_CHECK_H
#define JOBFS_CHECK_H

#include <inttypes.h>
#include <stdio.h>

static unsigned check_count, check_failed;

#define CHECK(cond)                                                        \
	do {                                                               \
		check_count++;                                             \
		if (!(cond)) {                                             \
			check_failed++;                                    \
			fprintf(stderr, "%s:%d: check failed: %s\n",       \
				__FILE__, __LINE__, #cond);                \
		}                                                          \
	} while (0)

#define CHECK_EQ_U64(a, b)                                                 \
	do {                                                               \
		uint64_t check_a_ = (uint64_t)(a), check_b_ = (uint64_t)(b);\
		check_count++;                                             \
		if (check_a_ != check_b_) {                                \
			check_failed++;                                    \
			fprintf(stderr, "%s:%d: %s == %s failed: %" PRIu64 \
				" != %" PRIu64 "\n", __FILE__, __LINE__,   \
				#a, #b, check_a_, check_b_);               \
		}                                                          \
	} while (0)

static inline int check_done(void)
{
	printf("%u checks, %u failed\n", check_count, check_failed);
	return check_failed ? 1 : 0;
}

#endif
