/*
 * fuzz_chunker.c - chunker_cut() on arbitrary bytes, every mode.
 *
 * Input: two bytes that choose max, then the text.
 *   byte 0 == 0xff: max = UINT64_MAX - byte 1 (sizes that overflow a
 *                   careless i + max)
 *   otherwise:      max = byte 0 | (byte 1 & 3) << 8, so 0..1023
 * Every mode is cut with that max and, when it is not 0, with max 0 too,
 * plus an unknown mode; one cut per input is also stopped early through
 * the emit callback.
 *
 * What is checked, from chunker.h, with every notion (whitespace, UTF-8
 * characters, words, sentence and paragraph ends) recomputed here from the
 * bytes rather than borrowed from chunker.c:
 *
 *   - a bad (by, max) pair or an unknown mode is -EINVAL with nothing
 *     emitted; otherwise 0;
 *   - ranges are non-empty and contiguous from 0 to len (invariant 1);
 *   - input of whitespace only gives no chunk, in every mode (2);
 *   - text modes never cut inside a UTF-8 sequence, paragraph and sentence
 *     never inside a word, and every cut falls where a word starts right
 *     after whitespace (3, and rule A of chunker.c); every chunk of a text
 *     mode holds a non-whitespace byte;
 *   - with max > 0, a paragraph or sentence chunk holds at most max
 *     characters from its first to its last word unless it is one word
 *     alone; bytes chunks are exactly max bytes but the last (4);
 *   - a chunk is whole units or part of one unit, never a tail glued to
 *     the next (5); packing is greedy: a chunk of whole units could not
 *     have taken the next unit without passing max;
 *   - with max == 0, paragraph and sentence cut exactly at every
 *     paragraph (sentence) end;
 *   - line: one chunk per line holding a non-whitespace byte, each chunk
 *     starting at a line start; whole: one chunk [0, len);
 *   - a non-zero return from emit stops the cut and is returned, after
 *     exactly the chunks seen so far.
 */
#include <errno.h>
#include <string.h>

#include "chunker.h"
#include "fuzz.h"

#define F_WORD 0x01   /* a word starts here, right after whitespace */
#define F_SENT 0x02   /* ... and a sentence ends before it */
#define F_PARA 0x04   /* ... and a paragraph ends before it */

/* What the text is made of, computed once per input. */
struct text {
	const unsigned char *b;
	size_t len;
	bool has_text;
	uint8_t *flag;          /* len + 1 */
	size_t *nchars;         /* len + 1: characters starting in [0, i) */
	bool *char_start;       /* len: a character starts at i */
	size_t *first_ns;       /* len + 1: first non-space at or after i */
	size_t *last_ns_end;    /* len + 1: 1 + last non-space before i, or 0 */
	size_t *word_end;       /* len + 1: first space at or after i */
	size_t *next_sent;      /* len + 1: next F_SENT position > i, or len */
	size_t *next_para;      /* len + 1: next F_PARA position > i, or len */
	size_t text_lines;      /* lines holding a non-space byte */
};

struct cuts {
	uint64_t *s, *e;
	size_t n, cap;
	size_t stop_at;         /* return stop_rc from this call; 0: never */
	int stop_rc;
};

static int emit(void *arg, uint64_t start, uint64_t end)
{
	struct cuts *c = arg;

	if (c->n == c->cap) {
		c->cap = c->cap ? 2 * c->cap : 64;
		c->s = realloc(c->s, c->cap * sizeof(*c->s));
		c->e = realloc(c->e, c->cap * sizeof(*c->e));
		FUZZ_CHECK(c->s && c->e, "realloc");
	}
	c->s[c->n] = start;
	c->e[c->n] = end;
	c->n++;
	return c->n == c->stop_at ? c->stop_rc : 0;
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);

	FUZZ_CHECK(p, "calloc(%zu, %zu)", n, size);
	return p;
}

/* Sentence classes of chunker.h: terminators and closers. */
static bool is_term(uint32_t cp)
{
	return cp == '.' || cp == '!' || cp == '?' || cp == 0x2026;
}

static bool is_closer(uint32_t cp)
{
	return cp == '"' || cp == '\'' || cp == ')' || cp == ']' ||
	       cp == '}' || cp == 0x201d || cp == 0x2019 || cp == 0x00bb;
}

static void text_init(struct text *t, const unsigned char *b, size_t len)
{
	size_t i, k, words = 0;
	bool line_text = false;

	memset(t, 0, sizeof(*t));
	t->b = b;
	t->len = len;
	t->flag = xcalloc(len + 1, 1);
	t->nchars = xcalloc(len + 1, sizeof(size_t));
	t->char_start = xcalloc(len, sizeof(bool));
	t->first_ns = xcalloc(len + 1, sizeof(size_t));
	t->last_ns_end = xcalloc(len + 1, sizeof(size_t));
	t->word_end = xcalloc(len + 1, sizeof(size_t));
	t->next_sent = xcalloc(len + 1, sizeof(size_t));
	t->next_para = xcalloc(len + 1, sizeof(size_t));

	/* characters: greedy decoding from 0, an invalid byte being one */
	for (i = 0; i < len; i += k) {
		k = fuzz_utf8_seq(b + i, len - i, NULL);
		if (!k)
			k = 1;
		t->char_start[i] = true;
	}
	for (i = 0; i < len; i++)
		t->nchars[i + 1] = t->nchars[i] + t->char_start[i];

	for (i = 0; i < len; i++) {
		t->has_text |= !fuzz_is_space(b[i]);
		t->last_ns_end[i + 1] = fuzz_is_space(b[i]) ? t->last_ns_end[i] :
			i + 1;
		if (!fuzz_is_space(b[i]))
			line_text = true;
		if (b[i] == '\n' || i + 1 == len) {
			t->text_lines += line_text;
			line_text = false;
		}
	}
	t->first_ns[len] = len;
	t->word_end[len] = len;
	for (i = len; i-- > 0;) {
		t->first_ns[i] = fuzz_is_space(b[i]) ? t->first_ns[i + 1] : i;
		t->word_end[i] = fuzz_is_space(b[i]) ? i : t->word_end[i + 1];
	}

	/* words, and which of them end a sentence or a paragraph */
	i = t->first_ns[0];
	while (i < len) {
		size_t we = t->word_end[i], next, nl = 0;
		bool term = false;
		uint32_t cp;

		for (size_t c = i; c < we; c += k) {
			k = fuzz_utf8_seq(b + c, we - c, &cp);
			if (!k) {
				k = 1;
				cp = 0xffffffffu;
			}
			term = is_term(cp) || (term && is_closer(cp));
		}
		next = t->first_ns[we];
		for (size_t c = we; c < next; c++)
			nl += b[c] == '\n';
		if (next < len) {
			t->flag[next] = F_WORD;
			if (nl >= 2)
				t->flag[next] |= F_PARA | F_SENT;
			else if (term)
				t->flag[next] |= F_SENT;
		}
		words++;
		i = next;
	}
	(void)words;
	t->next_sent[len] = len;
	t->next_para[len] = len;
	for (i = len; i-- > 0;) {
		t->next_sent[i] = t->flag[i + 1] & F_SENT || i + 1 == len ?
			i + 1 : t->next_sent[i + 1];
		t->next_para[i] = t->flag[i + 1] & F_PARA || i + 1 == len ?
			i + 1 : t->next_para[i + 1];
	}
}

static void text_release(struct text *t)
{
	free(t->flag);
	free(t->nchars);
	free(t->char_start);
	free(t->first_ns);
	free(t->last_ns_end);
	free(t->word_end);
	free(t->next_sent);
	free(t->next_para);
}

/* Characters from the first to the last word byte of [a, b); 0 if none. */
static uint64_t text_size(const struct text *t, size_t a, size_t b)
{
	size_t f = t->first_ns[a], l = t->last_ns_end[b];

	if (f >= b || l <= a)
		return 0;
	return t->nchars[l] - t->nchars[f];
}

/* Words in [a, b). */
static size_t words_in(const struct text *t, size_t a, size_t b)
{
	size_t n = 0, i = t->first_ns[a];

	while (i < b) {
		n++;
		i = t->first_ns[t->word_end[i]];
	}
	return n;
}

/* Whether p (0 < p < len) is a boundary of the given kind; 0 and len are
 * boundaries of every kind. */
static bool at(const struct text *t, size_t p, uint8_t kind)
{
	return p == 0 || p == t->len || (t->flag[p] & kind);
}

static const char *mode_name(enum chunk_by by)
{
	const char *n = chunker_by_name(by);

	return n ? n : "?";
}

/* Invariant 5 for one level: a chunk with a boundary strictly inside is
 * made of whole units of that level. */
static void check_whole_or_part(const struct text *t, const struct cuts *c,
				uint8_t kind, enum chunk_by by, uint64_t max)
{
	for (size_t i = 0; i < c->n; i++) {
		size_t s = c->s[i], e = c->e[i], p;
		bool inside = false;

		for (p = s + 1; p < e && !inside; p++)
			inside = t->flag[p] & kind;
		if (!inside)
			continue;
		FUZZ_CHECK(at(t, s, kind) && at(t, e, kind),
			   "%s max %llu: chunk %zu [%zu, %zu) holds a %s end but "
			   "is not whole %ss", mode_name(by),
			   (unsigned long long)max, i + 1, s, e,
			   kind == F_PARA ? "paragraph" : "sentence",
			   kind == F_PARA ? "paragraph" : "sentence");
	}
}

/*
 * Greedy packing: a chunk that is a run of whole units of some level and
 * is followed, in the same enclosing unit, by another unit of that level,
 * could not have taken that unit within max. Which level packed the chunk
 * is read off its end: mid-sentence means words, mid-paragraph (in
 * paragraph mode) means sentences, else the mode's own unit. A chunk that
 * is the tail of an overlong unit is closed with that unit, so it makes
 * no claim.
 */
static void check_greedy(const struct text *t, const struct cuts *c,
			 enum chunk_by by, uint64_t max)
{
	for (size_t i = 0; i + 1 < c->n; i++) {
		size_t s = c->s[i], e = c->e[i], next_end;
		const char *lv;

		if (!at(t, e, F_SENT)) {
			next_end = t->word_end[e];
			lv = "word";
		} else if (by == CHUNK_BY_PARAGRAPH && !at(t, e, F_PARA)) {
			if (!at(t, s, F_SENT))
				continue;
			next_end = t->next_sent[e];
			lv = "sentence";
		} else if (by == CHUNK_BY_PARAGRAPH) {
			if (!at(t, s, F_PARA))
				continue;
			next_end = t->next_para[e];
			lv = "paragraph";
		} else {
			if (!at(t, s, F_SENT))
				continue;
			next_end = t->next_sent[e];
			lv = "sentence";
		}
		FUZZ_CHECK(text_size(t, s, next_end) > max,
			   "%s max %llu: chunk %zu [%zu, %zu) could have taken "
			   "the next %s (up to %zu): %llu characters",
			   mode_name(by), (unsigned long long)max, i + 1, s, e,
			   lv, next_end,
			   (unsigned long long)text_size(t, s, next_end));
	}
}

static void check_cut(const struct text *t, enum chunk_by by, uint64_t max,
		      int rc, const struct cuts *c)
{
	bool text_mode = by != CHUNK_BY_BYTES;
	size_t i;

	FUZZ_CHECK(rc == 0, "%s max %llu returned %d", mode_name(by),
		   (unsigned long long)max, rc);
	if (!t->has_text) {
		FUZZ_CHECK(c->n == 0, "%s max %llu: %zu chunks from whitespace",
			   mode_name(by), (unsigned long long)max, c->n);
		return;
	}
	FUZZ_CHECK(c->n > 0, "%s max %llu: no chunk from text", mode_name(by),
		   (unsigned long long)max);
	for (i = 0; i < c->n; i++) {
		FUZZ_CHECK(c->s[i] == (i ? c->e[i - 1] : 0) &&
			   c->s[i] < c->e[i] && c->e[i] <= t->len,
			   "%s max %llu: chunk %zu is [%llu, %llu) after %llu "
			   "(len %zu)", mode_name(by), (unsigned long long)max,
			   i + 1, (unsigned long long)c->s[i],
			   (unsigned long long)c->e[i],
			   (unsigned long long)(i ? c->e[i - 1] : 0), t->len);
		if (text_mode) {
			FUZZ_CHECK(t->first_ns[c->s[i]] < c->e[i],
				   "%s max %llu: chunk %zu [%llu, %llu) is only "
				   "whitespace", mode_name(by),
				   (unsigned long long)max, i + 1,
				   (unsigned long long)c->s[i],
				   (unsigned long long)c->e[i]);
			FUZZ_CHECK(c->s[i] == 0 || t->char_start[c->s[i]],
				   "%s: cut at %llu splits a UTF-8 sequence",
				   mode_name(by), (unsigned long long)c->s[i]);
		}
	}
	FUZZ_CHECK(c->e[c->n - 1] == t->len, "%s max %llu: last chunk ends at "
		   "%llu, not %zu", mode_name(by), (unsigned long long)max,
		   (unsigned long long)c->e[c->n - 1], t->len);

	switch (by) {
	case CHUNK_BY_PARAGRAPH:
	case CHUNK_BY_SENTENCE: {
		uint8_t unit = by == CHUNK_BY_PARAGRAPH ? F_PARA : F_SENT;

		for (i = 1; i < c->n; i++)
			FUZZ_CHECK(t->flag[c->s[i]] & F_WORD,
				   "%s max %llu: cut at %llu is not the start "
				   "of a word after whitespace", mode_name(by),
				   (unsigned long long)max,
				   (unsigned long long)c->s[i]);
		if (max == 0) {
			size_t want = 0, k = 1;

			for (size_t p = 1; p < t->len; p++) {
				if (!(t->flag[p] & unit))
					continue;
				want++;
				FUZZ_CHECK(k < c->n && c->s[k] == p,
					   "%s max 0: no cut at the %s end %zu",
					   mode_name(by), mode_name(by), p);
				k++;
			}
			FUZZ_CHECK(c->n == want + 1, "%s max 0: %zu chunks for "
				   "%zu ends", mode_name(by), c->n, want);
			break;
		}
		for (i = 0; i < c->n; i++) {
			uint64_t sz = text_size(t, c->s[i], c->e[i]);

			FUZZ_CHECK(sz <= max || words_in(t, c->s[i], c->e[i]) == 1,
				   "%s max %llu: chunk %zu [%llu, %llu) holds "
				   "%llu characters and %zu words",
				   mode_name(by), (unsigned long long)max, i + 1,
				   (unsigned long long)c->s[i],
				   (unsigned long long)c->e[i],
				   (unsigned long long)sz,
				   words_in(t, c->s[i], c->e[i]));
		}
		check_whole_or_part(t, c, unit, by, max);
		if (by == CHUNK_BY_PARAGRAPH)
			check_whole_or_part(t, c, F_SENT, by, max);
		check_greedy(t, c, by, max);
		break;
	}
	case CHUNK_BY_LINE:
		FUZZ_CHECK(c->n == t->text_lines, "line: %zu chunks for %zu "
			   "lines with text", c->n, t->text_lines);
		for (i = 1; i < c->n; i++) {
			size_t s = c->s[i];

			FUZZ_CHECK(t->b[s - 1] == '\n', "line: chunk %zu starts "
				   "at %zu, not at a line start", i + 1, s);
			/* the line it starts with holds text */
			while (s < c->e[i] && t->b[s] != '\n' &&
			       fuzz_is_space(t->b[s]))
				s++;
			FUZZ_CHECK(s < c->e[i] && t->b[s] != '\n',
				   "line: chunk %zu starts with a blank line",
				   i + 1);
		}
		break;
	case CHUNK_BY_BYTES:
		for (i = 0; i + 1 < c->n; i++)
			FUZZ_CHECK(c->e[i] - c->s[i] == max, "bytes max %llu: "
				   "chunk %zu has %llu bytes",
				   (unsigned long long)max, i + 1,
				   (unsigned long long)(c->e[i] - c->s[i]));
		FUZZ_CHECK(c->e[i] - c->s[i] <= max, "bytes max %llu: last "
			   "chunk has %llu bytes", (unsigned long long)max,
			   (unsigned long long)(c->e[i] - c->s[i]));
		break;
	case CHUNK_BY_WHOLE:
		FUZZ_CHECK(c->n == 1, "whole: %zu chunks", c->n);
		break;
	}
}

static bool pair_ok(enum chunk_by by, uint64_t max)
{
	switch (by) {
	case CHUNK_BY_PARAGRAPH:
	case CHUNK_BY_SENTENCE:
		return true;
	case CHUNK_BY_LINE:
	case CHUNK_BY_WHOLE:
		return max == 0;
	case CHUNK_BY_BYTES:
		return max > 0;
	}
	return false;
}

static void cut_and_check(const struct text *t, enum chunk_by by,
			  uint64_t max, uint64_t *rnd)
{
	struct cuts c = { 0 }, stopped = { 0 };
	int rc;

	rc = chunker_cut((const char *)t->b, t->len, by, max, emit, &c);
	if (!pair_ok(by, max)) {
		FUZZ_CHECK(rc == -EINVAL && c.n == 0, "%s max %llu: rc %d and "
			   "%zu chunks, want -EINVAL and none", mode_name(by),
			   (unsigned long long)max, rc, c.n);
		goto out;
	}
	check_cut(t, by, max, rc, &c);

	/* Stop after a chunk chosen from the input, once in a while. */
	if (c.n && fuzz_rand(rnd) % 4 == 0) {
		stopped.stop_at = 1 + (size_t)(fuzz_rand(rnd) % c.n);
		stopped.stop_rc = stopped.stop_at % 2 ? -ECANCELED : 7;
		rc = chunker_cut((const char *)t->b, t->len, by, max, emit,
				 &stopped);
		FUZZ_CHECK(rc == stopped.stop_rc && stopped.n == stopped.stop_at,
			   "%s: emit stopped with %d after chunk %zu, but the "
			   "cut returned %d after %zu chunks", mode_name(by),
			   stopped.stop_rc, stopped.stop_at, rc, stopped.n);
		FUZZ_CHECK(!memcmp(stopped.s, c.s, stopped.n * sizeof(*c.s)) &&
			   !memcmp(stopped.e, c.e, stopped.n * sizeof(*c.e)),
			   "%s: a stopped cut emitted other chunks",
			   mode_name(by));
	}
out:
	free(c.s);
	free(c.e);
	free(stopped.s);
	free(stopped.e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum chunk_by modes[] = {
		CHUNK_BY_PARAGRAPH, CHUNK_BY_SENTENCE, CHUNK_BY_LINE,
		CHUNK_BY_BYTES, CHUNK_BY_WHOLE,
	};
	uint64_t max = 0, rnd = fuzz_seed(data, size);
	unsigned char *buf;
	struct text t;
	struct cuts c = { 0 };
	size_t len;

	if (size >= 2) {
		if (data[0] == 0xff)
			max = UINT64_MAX - data[1];
		else
			max = data[0] | (uint64_t)(data[1] & 3) << 8;
		data += 2;
		size -= 2;
	}
	len = size;
	/* An exact-size copy so that a read past len is an ASan report. */
	buf = malloc(len ? len : 1);
	FUZZ_CHECK(buf, "malloc");
	memcpy(buf, data, len);
	text_init(&t, buf, len);

	for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
		cut_and_check(&t, modes[m], max, &rnd);
		if (max)
			cut_and_check(&t, modes[m], 0, &rnd);
	}

	FUZZ_CHECK(chunker_cut((const char *)buf, len, (enum chunk_by)5, 0,
			       emit, &c) == -EINVAL && c.n == 0,
		   "unknown mode 5 was accepted");
	FUZZ_CHECK(chunker_cut((const char *)buf, len, (enum chunk_by)-1, max,
			       emit, &c) == -EINVAL && c.n == 0,
		   "unknown mode -1 was accepted");
	FUZZ_CHECK(chunker_cut((const char *)buf, len, CHUNK_BY_PARAGRAPH, max,
			       NULL, NULL) == -EINVAL, "NULL emit accepted");
	if (len)
		FUZZ_CHECK(chunker_cut(NULL, len, CHUNK_BY_WHOLE, 0, emit,
				       &c) == -EINVAL && c.n == 0,
			   "NULL buffer of %zu bytes accepted", len);

	text_release(&t);
	free(buf);
	return 0;
}
