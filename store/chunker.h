/*
 * chunker.h - cut a job's input into chunks.
 *
 * The chunker is a pure function over a byte buffer. It never allocates a
 * copy of the input and reports each chunk as a byte range through a
 * callback, so a job of a million chunks costs no memory here.
 *
 * Invariants every mode guarantees (checked by tests/unit/test_chunker.c):
 *   1. Ranges are reported in order, are non-empty, and are contiguous: the
 *      first starts at 0, each starts where the previous ended, the last
 *      ends at len. Joining them gives back the input byte for byte.
 *   2. An input with no byte outside ASCII whitespace (" \t\n\v\f\r") yields
 *      no chunk at all (this includes the empty input).
 *   3. Text modes (paragraph, sentence, line, whole) never cut inside a
 *      UTF-8 sequence; paragraph and sentence never cut inside a word
 *      (a maximal run of non-whitespace bytes).
 *   4. With max > 0, paragraph and sentence chunks hold at most max
 *      characters (UTF-8 code points; an invalid byte counts as one) from
 *      their first word to their last: the whitespace before the input's
 *      first word and after a chunk's last word is free, so a paragraph
 *      that fits is never split for its trailing blank line. One word alone
 *      longer than max is a chunk of its own (with the whitespace after
 *      it). bytes chunks hold exactly max bytes except the last.
 *   5. A paragraph too long for max is cut on its own: its pieces are never
 *      packed with neighbouring paragraphs (likewise sentences one level
 *      down), so every chunk is whole paragraphs or part of one.
 */
#ifndef JOBFS_CHUNKER_H
#define JOBFS_CHUNKER_H

#include <stddef.h>
#include <stdint.h>

enum chunk_by {
	CHUNK_BY_PARAGRAPH = 0, /* default */
	CHUNK_BY_SENTENCE,
	CHUNK_BY_LINE,
	CHUNK_BY_BYTES,
	CHUNK_BY_WHOLE,
};

/*
 * Called once per chunk, in order, with the half-open byte range
 * [start, end) of the input. A non-zero return stops the cut and is
 * returned by chunker_cut().
 */
typedef int (*chunker_emit_fn)(void *arg, uint64_t start, uint64_t end);

/*
 * Cut buf[0, len) into chunks and report each one through emit.
 *
 * paragraph: a paragraph ends after a run of whitespace that holds two or
 *   more newlines (a blank line); that run belongs to the paragraph before
 *   it. With max == 0 every paragraph is one chunk. With max > 0
 *   consecutive paragraphs are packed greedily into chunks of at most max
 *   characters; a paragraph longer than max is cut at sentence ends, and a
 *   sentence longer than max at whitespace.
 * sentence: a sentence ends after '.', '!', '?' or U+2026 (optionally
 *   followed by closing quotes or brackets: " ' ) ] } U+201D U+2019 U+00BB)
 *   when whitespace or the end of input follows; the whitespace run after it
 *   belongs to the sentence before. A paragraph end is also a sentence end.
 *   max == 0: one sentence per chunk; max > 0: sentences packed greedily,
 *   overlong ones cut at whitespace.
 * line: every line holding a non-whitespace byte is one item; the
 *   whitespace-only lines after it belong to it, and whitespace-only lines
 *   before the first item belong to the first item. max must be 0.
 * bytes: fixed slices of max bytes (max must be > 0); may cut anywhere.
 * whole: the whole input is one chunk (if it holds a non-whitespace byte);
 *   max must be 0.
 *
 * Whitespace-only input before the first chunk's text belongs to the first
 * chunk; trailing whitespace to the last.
 *
 * Returns 0, -EINVAL for a bad (by, max) combination, or the first non-zero
 * value returned by emit.
 */
int chunker_cut(const char *buf, size_t len, enum chunk_by by, uint64_t max,
		chunker_emit_fn emit, void *arg);

/* "paragraph", "sentence", ... for a mode; NULL for an unknown value. */
const char *chunker_by_name(enum chunk_by by);

/* Parse a mode name; returns 0 and sets *out, or -EINVAL. */
int chunker_by_parse(const char *name, enum chunk_by *out);

#endif
