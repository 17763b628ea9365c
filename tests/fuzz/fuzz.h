/*
 * fuzz.h - what the libFuzzer targets share: the entry points' prototypes,
 * a check that stops the run with a readable reason, and two byte-level
 * helpers written here from the RFCs rather than taken from the code
 * under test (a checker that shares the bug it looks for finds nothing).
 *
 * A failed FUZZ_CHECK prints the condition and a message and calls
 * abort(), which libFuzzer reports as a crash and saves the input as
 * crash-<sha1> in its artifact directory.
 */
#ifndef JOBFS_FUZZ_H
#define JOBFS_FUZZ_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static void fuzz_fail(const char *file, int line, const char *cond,
		      const char *fmt, ...)
	__attribute__((noreturn, format(printf, 4, 5)));

static void fuzz_fail(const char *file, int line, const char *cond,
		      const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "\n%s:%d: invariant broken: %s\n  ", file, line, cond);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

/* FUZZ_CHECK(cond, "printf format", ...): the format says what was seen. */
#define FUZZ_CHECK(cond, ...)                                              \
	do {                                                               \
		if (!(cond))                                               \
			fuzz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__); \
	} while (0)

/* The six bytes chunker.h and the C locale call whitespace. */
static inline bool fuzz_is_space(unsigned char b)
{
	return b == ' ' || b == '\t' || b == '\n' || b == '\v' || b == '\f' ||
	       b == '\r';
}

/*
 * Length of the well-formed UTF-8 sequence (RFC 3629, table in section 4)
 * at s[0, n), or 0 if the bytes there start none. The code point is
 * assembled first and then judged, so overlong forms, surrogates and
 * values past U+10FFFF are refused by value, not by byte ranges.
 */
static inline size_t fuzz_utf8_seq(const unsigned char *s, size_t n,
				   uint32_t *cp_out)
{
	uint32_t cp, min;
	size_t len, i;

	if (n == 0)
		return 0;
	if (s[0] < 0x80) {
		len = 1;
		cp = s[0];
		min = 0;
	} else if ((s[0] & 0xe0) == 0xc0) {
		len = 2;
		cp = s[0] & 0x1f;
		min = 0x80;
	} else if ((s[0] & 0xf0) == 0xe0) {
		len = 3;
		cp = s[0] & 0x0f;
		min = 0x800;
	} else if ((s[0] & 0xf8) == 0xf0) {
		len = 4;
		cp = s[0] & 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	if (cp_out)
		*cp_out = cp;
	return len;
}

/* Whether s[0, n) is entirely well-formed UTF-8. */
static inline bool fuzz_utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, k;

	while (i < n) {
		k = fuzz_utf8_seq(p + i, n - i, NULL);
		if (!k)
			return false;
		i += k;
	}
	return true;
}

/* A small deterministic generator (splitmix64) for choices a target
 * derives from its input, so that every run of an input is the same. */
static inline uint64_t fuzz_rand(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* A seed for fuzz_rand() from the input bytes (FNV-1a). */
static inline uint64_t fuzz_seed(const uint8_t *data, size_t size)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < size; i++)
		h = (h ^ data[i]) * 0x100000001b3ULL;
	return h;
}

#endif
