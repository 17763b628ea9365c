/*
 * test_chunker.c - unit tests for store/chunker.c.
 *
 * Three kinds of test:
 *   - hand-written inputs with the exact chunks each mode must produce;
 *   - random inputs (seeded, so a failure replays) checked against the
 *     invariants of chunker.h and the mode rules, with checks written
 *     here from the bytes up rather than borrowed from the chunker;
 *   - the same random inputs cut by a slow array-based model of the
 *     packing rules, which must give exactly the same ranges.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "chunker.h"

/* ---- recording what the chunker emits ---- */

struct rec {
	uint64_t *start, *end;
	size_t n, cap;
	size_t stop_at;  /* return stop_rc from this call (1-based); 0: never */
	int stop_rc;
};

static void rec_push(struct rec *r, uint64_t start, uint64_t end)
{
	if (r->n == r->cap) {
		r->cap = r->cap ? 2 * r->cap : 64;
		r->start = realloc(r->start, r->cap * sizeof(*r->start));
		r->end = realloc(r->end, r->cap * sizeof(*r->end));
		if (!r->start || !r->end) {
			perror("realloc");
			exit(2);
		}
	}
	r->start[r->n] = start;
	r->end[r->n] = end;
	r->n++;
}

static int rec_emit(void *arg, uint64_t start, uint64_t end)
{
	struct rec *r = arg;

	rec_push(r, start, end);
	return r->n == r->stop_at ? r->stop_rc : 0;
}

static void rec_release(struct rec *r)
{
	free(r->start);
	free(r->end);
	memset(r, 0, sizeof(*r));
}

static int run(const char *buf, size_t len, enum chunk_by by, uint64_t max,
	       struct rec *r)
{
	memset(r, 0, sizeof(*r));
	return chunker_cut(buf, len, by, max, rec_emit, r);
}

/* ---- byte-level helpers, written independently of chunker.c ---- */

static bool t_space(unsigned char b)
{
	return b && strchr(" \t\n\v\f\r", b) != NULL;
}

/*
 * Length of the well-formed UTF-8 sequence at s[0, n), or 0 if there is
 * none. Decodes first and then rejects overlong forms, surrogates and
 * values above U+10FFFF, where chunker.c checks the second byte's range.
 */
static size_t t_seq(const unsigned char *s, size_t n)
{
	uint32_t cp, min;
	size_t k, i;

	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xe0) == 0xc0) {
		k = 2, cp = s[0] & 0x1f, min = 0x80;
	} else if ((s[0] & 0xf0) == 0xe0) {
		k = 3, cp = s[0] & 0x0f, min = 0x800;
	} else if ((s[0] & 0xf8) == 0xf0) {
		k = 4, cp = s[0] & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	if (n < k)
		return 0;
	for (i = 1; i < k; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return k;
}

static uint64_t t_chars(const unsigned char *s, size_t n)
{
	uint64_t chars = 0;
	size_t i = 0, k;

	while (i < n) {
		k = t_seq(s + i, n - i);
		i += k ? k : 1;
		chars++;
	}
	return chars;
}

/* Does position p (0 < p < n) fall inside a well-formed sequence? */
static bool t_inside_seq(const unsigned char *s, size_t n, size_t p)
{
	size_t q, k;

	for (q = p - 1; q + 4 > p; q--) {
		k = t_seq(s + q, n - q);
		if (k && q + k > p)
			return true;
		if (q == 0)
			break;
	}
	return false;
}

static bool t_has_text(const unsigned char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!t_space(s[i]))
			return true;
	return false;
}

static bool t_suffix(const unsigned char *s, size_t *n, const char *suf)
{
	size_t k = strlen(suf);

	if (*n < k || memcmp(s + *n - k, suf, k) != 0)
		return false;
	*n -= k;
	return true;
}

/* Does the word s[0, n) end a sentence, by the bytes it ends with? */
static bool t_sentence_word(const unsigned char *s, size_t n)
{
	static const char *const closers[] = {
		"\"", "'", ")", "]", "}",
		"\xe2\x80\x9d", "\xe2\x80\x99", "\xc2\xbb", NULL,
	};
	static const char *const terms[] = {
		".", "!", "?", "\xe2\x80\xa6", NULL,
	};
	bool more = true;
	size_t i;

	while (more) {
		more = false;
		for (i = 0; closers[i]; i++)
			if (t_suffix(s, &n, closers[i]))
				more = true;
	}
	for (i = 0; terms[i]; i++)
		if (t_suffix(s, &n, terms[i]))
			return true;
	return false;
}

/* ---- tokens and the array-based model ---- */

enum { T_WORD, T_SENT, T_PARA, T_INPUT };

struct ttok {
	size_t start, wstart, wend, end;
	uint64_t chars, gap;
	int level;
};

/* Split s into tokens (word + following whitespace); returns the count. */
static size_t t_tokens(const unsigned char *s, size_t n, struct ttok **out)
{
	struct ttok *v = NULL, *t;
	size_t cnt = 0, cap = 0, i = 0, nl;

	while (i < n && t_space(s[i]))
		i++;
	while (i < n) {
		if (cnt == cap) {
			cap = cap ? 2 * cap : 16;
			v = realloc(v, cap * sizeof(*v));
			if (!v) {
				perror("realloc");
				exit(2);
			}
		}
		t = &v[cnt];
		t->start = cnt ? i : 0;
		t->wstart = i;
		while (i < n && !t_space(s[i]))
			i++;
		t->wend = i;
		nl = 0;
		while (i < n && t_space(s[i]))
			nl += s[i++] == '\n';
		t->end = i;
		t->chars = t_chars(s + t->wstart, t->wend - t->wstart);
		t->gap = t->end - t->wend;
		if (i == n)
			t->level = T_INPUT;
		else if (nl >= 2)
			t->level = T_PARA;
		else if (t_sentence_word(s + t->wstart, t->wend - t->wstart))
			t->level = T_SENT;
		else
			t->level = T_WORD;
		cnt++;
	}
	*out = v;
	return cnt;
}

struct model {
	const struct ttok *tok;
	uint64_t max;
	struct rec *r;
	/* the open chunk */
	bool open;
	size_t start, end;
	uint64_t size;
};

static void model_flush(struct model *m)
{
	if (m->open)
		rec_push(m->r, m->start, m->end);
	m->open = false;
}

/*
 * Cut tokens [lo, hi) into units of level lv (each ends at a token of
 * level >= lv, the last at hi) and pack them: a straightforward
 * restatement of the rules in chunker.c's header comment.
 */
static void model_cut(struct model *m, size_t lo, size_t hi, int lv)
{
	size_t a = lo, b, i;
	uint64_t text;

	while (a < hi) {
		for (b = a; b + 1 < hi && m->tok[b].level < lv; b++)
			;
		text = 0;
		for (i = a; i <= b; i++)
			text += m->tok[i].chars + (i < b ? m->tok[i].gap : 0);
		if (m->max && text > m->max) {
			model_flush(m);
			if (lv == T_WORD) {
				rec_push(m->r, m->tok[a].start, m->tok[a].end);
			} else {
				model_cut(m, a, b + 1, lv - 1);
				model_flush(m);
			}
		} else {
			if (m->open && (!m->max || m->size + text > m->max))
				model_flush(m);
			if (!m->open) {
				m->open = true;
				m->start = m->tok[a].start;
				m->size = 0;
			}
			m->size += text + m->tok[b].gap;
			m->end = m->tok[b].end;
		}
		a = b + 1;
	}
	model_flush(m);
}

/* ---- checking one cut ---- */

static const char *by_str(enum chunk_by by)
{
	const char *s = chunker_by_name(by);

	return s ? s : "?";
}

static void dump(const char *why, const unsigned char *s, size_t n,
		 enum chunk_by by, uint64_t max)
{
	size_t i;

	fprintf(stderr, "  %s: by=%s max=%" PRIu64 " input (%zu bytes): \"",
		why, by_str(by), max, n);
	for (i = 0; i < n; i++) {
		if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"' && s[i] != '\\')
			fputc(s[i], stderr);
		else
			fprintf(stderr, "\\x%02x", s[i]);
	}
	fprintf(stderr, "\"\n");
}

/*
 * Check r (a complete cut of s by (by, max)) against invariants 1-4 and
 * the mode's own rules. Returns true if all hold.
 */
static bool check_cut(const unsigned char *s, size_t n, enum chunk_by by,
		      uint64_t max, const struct rec *r)
{
	bool ok = true, text_mode = by != CHUNK_BY_BYTES;
	bool packed = by == CHUNK_BY_PARAGRAPH || by == CHUNK_BY_SENTENCE;
	int top = by == CHUNK_BY_PARAGRAPH ? T_PARA : T_SENT;
	struct ttok *tok = NULL;
	size_t ntok, i, j, jt = 0, a, b, p, lines;
	int lin, ls, le;

#define FAIL(...)                                                          \
	do {                                                               \
		if (ok)                                                    \
			dump("cut", s, n, by, max);                        \
		fprintf(stderr, "    chunk %zu: ", i);                     \
		fprintf(stderr, __VA_ARGS__);                              \
		fputc('\n', stderr);                                       \
		ok = false;                                                \
	} while (0)

	i = 0;
	/* invariant 2 */
	if (!t_has_text(s, n)) {
		if (r->n != 0)
			FAIL("%zu chunks for whitespace-only input", r->n);
		return ok;
	}
	/* invariant 1 */
	if (r->n == 0)
		FAIL("no chunk for input with text");
	for (i = 0; i < r->n; i++) {
		if (r->start[i] != (i ? r->end[i - 1] : 0))
			FAIL("starts at %" PRIu64 ", not contiguous", r->start[i]);
		if (r->end[i] <= r->start[i])
			FAIL("empty or reversed [%" PRIu64 ", %" PRIu64 ")",
			     r->start[i], r->end[i]);
	}
	if (r->n && r->end[r->n - 1] != n)
		FAIL("last chunk ends at %" PRIu64 ", not %zu",
		     r->end[r->n - 1], n);
	if (!ok)
		return ok;

	ntok = t_tokens(s, n, &tok);
	for (i = 0; i < r->n; i++) {
		a = r->start[i];
		b = r->end[i];
		/* invariant 3, and where each mode may cut at all */
		if (i > 0 && text_mode && t_inside_seq(s, n, a))
			FAIL("cut at %zu inside a UTF-8 sequence", a);
		if (i > 0 && packed && !(t_space(s[a - 1]) && !t_space(s[a])))
			FAIL("cut at %zu is not at a word start", a);
		if (i > 0 && by == CHUNK_BY_LINE && s[a - 1] != '\n')
			FAIL("cut at %zu is not at a line start", a);
		if (by == CHUNK_BY_WHOLE && r->n != 1)
			FAIL("whole gave %zu chunks", r->n);
		if (by == CHUNK_BY_BYTES && b - a != max && i + 1 < r->n)
			FAIL("bytes chunk of %zu bytes", b - a);
		if (by == CHUNK_BY_BYTES && b - a > max)
			FAIL("bytes chunk of %zu bytes", b - a);

		/* invariant 4, sizes trimmed of leading and trailing
		 * whitespace (see rule C in chunker.c) */
		if (packed && max) {
			size_t ta = a, tb = b, k;
			bool one_word = true;

			while (ta < tb && t_space(s[ta]))
				ta++;
			while (tb > ta && t_space(s[tb - 1]))
				tb--;
			for (k = ta; k < tb; k++)
				if (t_space(s[k]))
					one_word = false;
			if (t_chars(s + ta, tb - ta) > max && !one_word)
				FAIL("%" PRIu64 " characters > max",
				     t_chars(s + ta, tb - ta));
			if (ta == tb)
				FAIL("no word in the chunk");
		}

		/* rule D: a chunk spanning a boundary of some level starts
		 * and ends on boundaries of at least that level */
		if (packed) {
			/* chunks and tokens are both in order, so one
			 * walk over the tokens serves all chunks */
			while (jt < ntok && tok[jt].end <= a)
				jt++;
			ls = a == 0 ? T_INPUT :
			     jt && tok[jt - 1].end == a ? tok[jt - 1].level : -1;
			lin = -1;
			for (j = jt; j < ntok && tok[j].end < b; j++)
				if (tok[j].level > lin)
					lin = tok[j].level;
			le = j < ntok && tok[j].end == b ? tok[j].level : -1;
			if (lin > top)
				lin = top;
			if (lin >= 0 && (ls < lin || le < lin))
				FAIL("spans a level-%d boundary but has ends of "
				     "level %d and %d", lin, ls, le);
			/* with max 0, exactly one unit of the top level */
			if (!max && (lin >= top || le < top))
				FAIL("not one %s", by_str(by));
		}

		if (by == CHUNK_BY_LINE) {
			bool text = false;

			lines = 0;
			for (p = a; p < b; p++) {
				text |= !t_space(s[p]);
				if (s[p] == '\n' || p + 1 == b) {
					lines += text;
					if (i > 0 && !text && lines == 0)
						FAIL("starts with a blank line");
					text = false;
				}
			}
			if (lines != 1)
				FAIL("%zu lines with text", lines);
		}
	}

	/* the model must agree range for range */
	if (packed && ok) {
		struct rec mr = { 0 };
		struct model m = { .tok = tok, .max = max, .r = &mr };

		model_cut(&m, 0, ntok, top);
		if (mr.n != r->n) {
			i = 0;
			FAIL("model has %zu chunks, chunker %zu", mr.n, r->n);
		}
		for (i = 0; ok && i < r->n; i++)
			if (mr.start[i] != r->start[i] || mr.end[i] != r->end[i])
				FAIL("model [%" PRIu64 ", %" PRIu64 "), chunker [%"
				     PRIu64 ", %" PRIu64 ")", mr.start[i],
				     mr.end[i], r->start[i], r->end[i]);
		rec_release(&mr);
	}
	free(tok);
	return ok;
#undef FAIL
}

/* ---- hand-written examples ---- */

/*
 * Cut s (len bytes) and compare with the expected chunks, given as
 * strings in order (NULL-terminated list; lengths from strlen, so
 * examples with NUL bytes use check_ranges() instead).
 */
static void expect_at(int line, const char *s, size_t len, enum chunk_by by,
		      uint64_t max, const char *const *want)
{
	struct rec r;
	size_t i, nwant = 0, off = 0;
	bool ok = true;
	int rc;

	while (want[nwant])
		nwant++;
	rc = run(s, len, by, max, &r);
	CHECK(rc == 0);
	CHECK(check_cut((const unsigned char *)s, len, by, max, &r));
	if (r.n != nwant)
		ok = false;
	for (i = 0; ok && i < nwant; i++) {
		size_t k = strlen(want[i]);

		if (r.start[i] != off || r.end[i] != off + k ||
		    memcmp(s + off, want[i], k) != 0)
			ok = false;
		off += k;
	}
	check_count++;
	if (!ok) {
		check_failed++;
		fprintf(stderr, "%s:%d: unexpected chunks\n", __FILE__, line);
		dump("got", (const unsigned char *)s, len, by, max);
		for (i = 0; i < r.n; i++)
			dump("  chunk", (const unsigned char *)s + r.start[i],
			     r.end[i] - r.start[i], by, max);
		for (i = 0; i < nwant; i++)
			dump("  want", (const unsigned char *)want[i],
			     strlen(want[i]), by, max);
	}
	rec_release(&r);
}

#define EXPECT(s, by, max, ...)                                            \
	expect_at(__LINE__, s, strlen(s), by, max,                         \
		  (const char *const[]){ __VA_ARGS__, NULL })
#define EXPECT_NONE(s, by, max)                                            \
	expect_at(__LINE__, s, strlen(s), by, max, (const char *const[]){ NULL })

static void test_paragraph(void)
{
	const enum chunk_by P = CHUNK_BY_PARAGRAPH;

	EXPECT("One. Two.\n\nThree\n\n\nFour\n", P, 0,
	       "One. Two.\n\n", "Three\n\n\n", "Four\n");
	/* leading whitespace, blank lines included, joins the first */
	EXPECT("\n\n  Lead.\n\nNext", P, 0, "\n\n  Lead.\n\n", "Next");
	EXPECT(" \n \n x", P, 0, " \n \n x");
	/* a blank line may hold spaces; CRLF counts by its newlines */
	EXPECT("a\n \nb", P, 0, "a\n \n", "b");
	EXPECT("a\r\n\r\nb", P, 0, "a\r\n\r\n", "b");
	EXPECT("a\r\rb", P, 0, "a\r\rb");
	EXPECT("a\nb\nc. d.\n", P, 0, "a\nb\nc. d.\n");

	/* greedy packing of whole paragraphs, at most max */
	EXPECT("aa bb.\n\ncc dd.\n\nee ff.", P, 20,
	       "aa bb.\n\ncc dd.\n\n", "ee ff.");
	EXPECT("aa bb.\n\ncc dd.\n\nee ff.", P, 14,
	       "aa bb.\n\ncc dd.\n\n", "ee ff.");
	EXPECT("aa bb.\n\ncc dd.\n\nee ff.", P, 13,
	       "aa bb.\n\n", "cc dd.\n\n", "ee ff.");
	EXPECT("aa bb.\n\ncc dd.\n\nee ff.", P, 22, "aa bb.\n\ncc dd.\n\nee ff.");

	/* a paragraph over max is cut at sentence ends, and the piece
	 * holding its tail is not packed with the next paragraph */
	EXPECT("Aa. Bb bb. Cc.\n\nDd.", P, 8,
	       "Aa. ", "Bb bb. ", "Cc.\n\n", "Dd.");
	EXPECT("Xx.\n\nAa. Bb bb. Cc.", P, 8,
	       "Xx.\n\n", "Aa. ", "Bb bb. ", "Cc.");
	/* ... a sentence over max at whitespace, words packed greedily */
	EXPECT("one two three four. Five.", P, 9,
	       "one two ", "three ", "four. ", "Five.");
	/* ... and a word over max is a chunk with the whitespace after it */
	EXPECT("hi incomprehensibilities  yo", P, 5,
	       "hi ", "incomprehensibilities  ", "yo");
	EXPECT("incomprehensibilities", P, 5, "incomprehensibilities");
	EXPECT("  \n\nincomprehensibilities \n\n ", P, 5,
	       "  \n\nincomprehensibilities \n\n ");

	/* max counts characters, not bytes; an invalid byte is one */
	EXPECT("\xc3\xa9 \xc3\xa9 \xc3\xa9 \xc3\xa9", P, 7,
	       "\xc3\xa9 \xc3\xa9 \xc3\xa9 \xc3\xa9");
	EXPECT("\xc3\xa9 \xc3\xa9 \xc3\xa9 \xc3\xa9", P, 6,
	       "\xc3\xa9 \xc3\xa9 \xc3\xa9 ", "\xc3\xa9");
	EXPECT("\xe6\x97\xa5\xe6\x9c\xac \xe2\x80\x94 x", P, 6,
	       "\xe6\x97\xa5\xe6\x9c\xac \xe2\x80\x94 x");
	EXPECT("\xe6\x97\xa5\xe6\x9c\xac \xe2\x80\x94 x", P, 5,
	       "\xe6\x97\xa5\xe6\x9c\xac \xe2\x80\x94 ", "x");
	EXPECT("\xff\xff \xff", P, 4, "\xff\xff \xff");
	EXPECT("\xff\xff \xff", P, 3, "\xff\xff ", "\xff");
	/* a truncated sequence is two invalid bytes, so two characters */
	EXPECT("\xe2\x80 a", P, 3, "\xe2\x80 ", "a");
	EXPECT("\xe2\x80\xa6 a", P, 3, "\xe2\x80\xa6 a");
	/* overlong forms, surrogates and values past U+10FFFF are invalid:
	 * one character per byte; their neighbours are valid */
	EXPECT("\xe0\x80\xaf a", P, 4, "\xe0\x80\xaf ", "a");
	EXPECT("\xe0\xa0\x80 a", P, 3, "\xe0\xa0\x80 a");
	EXPECT("\xed\xa0\x80 a", P, 4, "\xed\xa0\x80 ", "a");
	EXPECT("\xed\x9f\xbf a", P, 3, "\xed\x9f\xbf a");
	EXPECT("\xf0\x8f\xbf\xbf a", P, 5, "\xf0\x8f\xbf\xbf ", "a");
	EXPECT("\xf0\x90\x80\x80 a", P, 3, "\xf0\x90\x80\x80 a");
	EXPECT("\xf4\x90\x80\x80 a", P, 5, "\xf4\x90\x80\x80 ", "a");
	EXPECT("\xf4\x8f\xbf\xbf a", P, 3, "\xf4\x8f\xbf\xbf a");
	EXPECT("\xf5\x80\x80\x80 a", P, 5, "\xf5\x80\x80\x80 ", "a");
	EXPECT("\xc1\xbf a", P, 3, "\xc1\xbf ", "a");
	EXPECT("\xc2\x80 a", P, 3, "\xc2\x80 a");
	/* a sequence cut short by the end of the input */
	EXPECT("a \xe6\x97", P, 3, "a ", "\xe6\x97");

	/* leading and trailing whitespace are not counted against max */
	EXPECT("\n\n   abc", P, 3, "\n\n   abc");
	EXPECT("abc   \n\n", P, 3, "abc   \n\n");
	EXPECT("ab\n\n\n\ncd", P, 2, "ab\n\n\n\n", "cd");

	EXPECT_NONE("", P, 0);
	EXPECT_NONE(" \t\n\v\f\r\n\n", P, 0);
	EXPECT_NONE("   ", P, 1);
}

static void test_sentence(void)
{
	const enum chunk_by S = CHUNK_BY_SENTENCE;

	EXPECT("He said \"Hi.\" Then left! Why? Ok\xe2\x80\xa6 \"Done.\") end",
	       S, 0, "He said \"Hi.\" ", "Then left! ", "Why? ",
	       "Ok\xe2\x80\xa6 ", "\"Done.\") ", "end");
	/* a terminator counts only before whitespace or the end */
	EXPECT("a.b c", S, 0, "a.b c");
	EXPECT("pi is 3.14 ok", S, 0, "pi is 3.14 ok");
	EXPECT("Wait... what", S, 0, "Wait... ", "what");
	EXPECT("end.", S, 0, "end.");
	EXPECT("a.\xff b", S, 0, "a.\xff b");
	EXPECT("\xe2\x80\x9cQuoted\xe2\x80\x9d x", S, 0,
	       "\xe2\x80\x9cQuoted\xe2\x80\x9d x");
	/* the non-ASCII closers */
	EXPECT("a.\xe2\x80\x9d b!\xe2\x80\x99 c?\xc2\xbb d.]} e", S, 0,
	       "a.\xe2\x80\x9d ", "b!\xe2\x80\x99 ", "c?\xc2\xbb ",
	       "d.]} ", "e");
	/* a paragraph end is a sentence end; whitespace goes before */
	EXPECT("x.\n\ny", S, 0, "x.\n\n", "y");
	EXPECT("x\n\ny", S, 0, "x\n\n", "y");
	EXPECT("  x.  \n y. \n", S, 0, "  x.  \n ", "y. \n");

	/* packing crosses paragraph ends: sentences are the top level */
	EXPECT("A. B.\n\nC. D.", S, 5, "A. B.\n\n", "C. D.");
	EXPECT("A. B.\n\nC. D.", S, 4, "A. ", "B.\n\n", "C. ", "D.");
	EXPECT("one two three four. Five.", S, 9,
	       "one two ", "three ", "four. ", "Five.");
	EXPECT("Hi. one two three four", S, 9,
	       "Hi. ", "one two ", "three ", "four");
	EXPECT("hi incomprehensibilities  yo", S, 5,
	       "hi ", "incomprehensibilities  ", "yo");

	EXPECT_NONE("", S, 0);
	EXPECT_NONE("\n\n\n", S, 3);
}

static void test_line(void)
{
	const enum chunk_by L = CHUNK_BY_LINE;

	EXPECT("\n  \nfirst\n\n second \n\t\nthird", L, 0,
	       "\n  \nfirst\n\n", " second \n\t\n", "third");
	EXPECT("a\r\nb\r\n", L, 0, "a\r\n", "b\r\n");
	EXPECT("only", L, 0, "only");
	EXPECT("x\n   ", L, 0, "x\n   ");
	EXPECT("a. b.\n\nc", L, 0, "a. b.\n\n", "c");
	EXPECT("\xe6\x97\xa5\xe6\x9c\xac\n\xff\n", L, 0,
	       "\xe6\x97\xa5\xe6\x9c\xac\n", "\xff\n");
	EXPECT_NONE("", L, 0);
	EXPECT_NONE("\n \n\t\n", L, 0);
}

static void test_bytes_whole(void)
{
	const enum chunk_by B = CHUNK_BY_BYTES, W = CHUNK_BY_WHOLE;

	EXPECT("abcdefg", B, 3, "abc", "def", "g");
	EXPECT("abcdef", B, 3, "abc", "def");
	EXPECT("abcdefg", B, 7, "abcdefg");
	EXPECT("abcdefg", B, 100, "abcdefg");
	EXPECT("abcdefg", B, UINT64_MAX, "abcdefg");
	/* bytes may cut anywhere, UTF-8 sequences and whitespace runs
	 * included, once the input has text at all */
	EXPECT("\xc3\xa9", B, 1, "\xc3", "\xa9");
	EXPECT(" a ", B, 2, " a", " ");
	EXPECT_NONE("   ", B, 2);
	EXPECT_NONE("", B, 1);

	EXPECT("  hi\n\nthere. \n", W, 0, "  hi\n\nthere. \n");
	EXPECT("\xff", W, 0, "\xff");
	EXPECT_NONE("", W, 0);
	EXPECT_NONE(" \n", W, 0);
}

/* NUL bytes are ordinary word bytes. */
static void test_nul(void)
{
	static const char s1[] = "a\0b. c";          /* 6 bytes */
	static const char s2[] = "\0\0\0 \0";        /* 5 bytes */
	struct rec r;

	CHECK(run(s1, 6, CHUNK_BY_SENTENCE, 0, &r) == 0);
	CHECK_EQ_U64(r.n, 2);
	if (r.n == 2) {
		CHECK_EQ_U64(r.end[0], 5);
		CHECK_EQ_U64(r.end[1], 6);
	}
	rec_release(&r);

	CHECK(run(s2, 5, CHUNK_BY_PARAGRAPH, 3, &r) == 0);
	CHECK_EQ_U64(r.n, 2);
	if (r.n == 2) {
		CHECK_EQ_U64(r.end[0], 4);
		CHECK_EQ_U64(r.end[1], 5);
	}
	rec_release(&r);

	CHECK(run(s2, 5, CHUNK_BY_WHOLE, 0, &r) == 0);
	CHECK_EQ_U64(r.n, 1);
	rec_release(&r);
}

/* A real document: 21 paragraphs, lines wrapped, blank lines varied. */
static void test_21_paragraphs(void)
{
	static const char *const seps[] = { "\n\n", "\n\n\n", "\n \n", "\r\n\r\n" };
	char buf[8192], word[32];
	size_t len = 0, i;
	struct rec r;
	int k;

	len += (size_t)snprintf(buf + len, sizeof(buf) - len, "\n");
	for (k = 1; k <= 21; k++) {
		len += (size_t)snprintf(buf + len, sizeof(buf) - len,
			"Paragraph %d starts here. It has a second sentence,\n"
			"wrapped onto a second line! And a third? Yes\xe2\x80\xa6 "
			"caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac.%s", k,
			k < 21 ? seps[k % 4] : "\n");
	}
	CHECK(len < sizeof(buf) - 1);
	CHECK(run(buf, len, CHUNK_BY_PARAGRAPH, 0, &r) == 0);
	CHECK_EQ_U64(r.n, 21);
	CHECK(check_cut((const unsigned char *)buf, len, CHUNK_BY_PARAGRAPH,
			0, &r));
	for (i = 0; i < r.n && i < 21; i++) {
		size_t a = r.start[i];

		while (buf[a] == '\n')
			a++;
		snprintf(word, sizeof(word), "Paragraph %zu ", i + 1);
		CHECK(strncmp(buf + a, word, strlen(word)) == 0);
	}
	rec_release(&r);

	/* five sentences each: here. line! third? Yes\u2026 and the last */
	CHECK(run(buf, len, CHUNK_BY_SENTENCE, 0, &r) == 0);
	CHECK_EQ_U64(r.n, 21 * 5);
	rec_release(&r);
}

/* Long runs must not trip anything (they are O(len), not timed here). */
static void test_long(void)
{
	size_t n = 1 << 20, i;
	char *s = malloc(n);
	struct rec r;

	if (!s) {
		perror("malloc");
		exit(2);
	}
	memset(s, 'x', n);
	CHECK(run(s, n, CHUNK_BY_PARAGRAPH, 10, &r) == 0);
	CHECK_EQ_U64(r.n, 1);
	rec_release(&r);

	for (i = 0; i < n; i++)
		s[i] = "ab "[i % 3];
	CHECK(run(s, n, CHUNK_BY_PARAGRAPH, 0, &r) == 0);
	CHECK_EQ_U64(r.n, 1);
	rec_release(&r);
	CHECK(run(s, n, CHUNK_BY_SENTENCE, 3000, &r) == 0);
	CHECK(check_cut((unsigned char *)s, n, CHUNK_BY_SENTENCE, 3000, &r));
	/* 1000 words of "ab " are 2999 characters when trimmed */
	CHECK_EQ_U64(r.n, (n + 2999) / 3000);
	rec_release(&r);
	free(s);
}

static void test_bad_args(void)
{
	static const struct {
		enum chunk_by by;
		uint64_t max;
	} bad[] = {
		{ CHUNK_BY_LINE, 1 },
		{ CHUNK_BY_WHOLE, 5 },
		{ CHUNK_BY_WHOLE, UINT64_MAX },
		{ CHUNK_BY_BYTES, 0 },
		{ (enum chunk_by)99, 0 },
		{ (enum chunk_by)-1, 10 },
	};
	struct rec r;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		/* judged before the input, even an empty one */
		CHECK(run("some text", 9, bad[i].by, bad[i].max, &r) == -EINVAL);
		CHECK_EQ_U64(r.n, 0);
		rec_release(&r);
		CHECK(run("", 0, bad[i].by, bad[i].max, &r) == -EINVAL);
		rec_release(&r);
	}
	CHECK(chunker_cut("x", 1, CHUNK_BY_WHOLE, 0, NULL, NULL) == -EINVAL);
	CHECK(run(NULL, 3, CHUNK_BY_WHOLE, 0, &r) == -EINVAL);
	rec_release(&r);
	CHECK(run(NULL, 0, CHUNK_BY_WHOLE, 0, &r) == 0);
	CHECK_EQ_U64(r.n, 0);
	rec_release(&r);
}

static void test_names(void)
{
	static const char *const names[] = {
		"paragraph", "sentence", "line", "bytes", "whole",
	};
	static const char *const bad[] = {
		"", "Paragraph", "lines", "paragraph ", "byte", "wholes",
	};
	enum chunk_by by;
	size_t i;

	for (i = 0; i < 5; i++) {
		CHECK(chunker_by_name((enum chunk_by)i) != NULL &&
		      strcmp(chunker_by_name((enum chunk_by)i), names[i]) == 0);
		by = CHUNK_BY_WHOLE;
		CHECK(chunker_by_parse(names[i], &by) == 0);
		CHECK_EQ_U64(by, i);
	}
	CHECK(chunker_by_parse("paragraph", &by) == 0 &&
	      by == CHUNK_BY_PARAGRAPH);
	CHECK(chunker_by_name((enum chunk_by)5) == NULL);
	CHECK(chunker_by_name((enum chunk_by)-1) == NULL);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		by = CHUNK_BY_LINE;
		CHECK(chunker_by_parse(bad[i], &by) == -EINVAL);
		CHECK(by == CHUNK_BY_LINE);
	}
	CHECK(chunker_by_parse(NULL, &by) == -EINVAL);
}

/* ---- random inputs ---- */

static uint64_t rng_state;

static uint64_t rng(void)
{
	/* xorshift64*: small, seeded, the same sequence everywhere */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dULL;
}

static size_t pick(size_t n)
{
	return (size_t)(rng() % n);
}

struct piece {
	const char *s;
	size_t len;
};

/* A piece from a string literal, NUL bytes and all. */
#define P(lit) { lit, sizeof(lit) - 1 }

static void put(char *buf, size_t *len, size_t cap, const struct piece *p)
{
	size_t k = p->len;

	if (*len + k <= cap) {
		memcpy(buf + *len, p->s, k);
		*len += k;
	}
}

/* Words, punctuation and whitespace that make text-like input. */
static size_t gen_text(char *buf, size_t cap)
{
	static const struct piece words[] = {
		P("the"), P("a"), P("lorem"), P("ipsum"), P("x"),
		P("supercalifragilisticexpialidocious"),
		P("\xc3\xa9"), P("caf\xc3\xa9"), P("\xe2\x80\x94"),
		P("\xe6\x97\xa5\xe6\x9c\xac"),
		P("\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xa7\xe3\x81\x99"),
		P("\x80"), P("\xff"), P("a\0b"), P("\0"),
		P("\xe2\x80"), P("\xf0\x9f\x98\x80"), P("\xed\xa0\x80"),
		P("\xc0\xaf"), P("3.14"), P("e.g."), P("\"quoted"),
		P("\xe2\x80\x9cso"), P("\xe0\x80\xaf"), P("\xe0\xa0\x80"),
		P("\xf4\x8f\xbf\xbf"), P("\xf4\x90\x80\x80"),
		P("\xf0\x8f\xbf\xbf"), P("\xf5\x80\x80\x80"),
		P("\xf8\x88\x80\x80\x80"), P("\xc1\xbf"), P("\xc2\x80"),
		P("\xed\x9f\xbf"), P("\xee\x80\x80"),
	};
	static const struct piece puncts[] = {
		P("."), P("!"), P("?"), P("\xe2\x80\xa6"), P(".\""),
		P(".)"), P("?\xe2\x80\x9d"), P("!\xe2\x80\x99\xc2\xbb"),
		P("..."), P(".\xff"), P("\xe2\x80\xa6]"),
	};
	static const struct piece seps[] = {
		P(" "), P(" "), P(" "), P("  "), P("\n"), P("\n\n"),
		P("\n \n"), P("\t"), P("\r\n"), P("\r\n\r\n"),
		P("\n\n\n"), P("\v"), P("\f"), P(" \n"),
	};
	size_t len = 0, ntok = pick(60), i;

	if (pick(4) == 0)
		put(buf, &len, cap, &seps[pick(sizeof(seps) / sizeof(seps[0]))]);
	for (i = 0; i < ntok; i++) {
		put(buf, &len, cap,
		    &words[pick(sizeof(words) / sizeof(words[0]))]);
		if (pick(3) == 0)
			put(buf, &len, cap,
			    &words[pick(sizeof(words) / sizeof(words[0]))]);
		if (pick(4) == 0)
			put(buf, &len, cap,
			    &puncts[pick(sizeof(puncts) / sizeof(puncts[0]))]);
		if (i + 1 < ntok || pick(2))
			put(buf, &len, cap,
			    &seps[pick(sizeof(seps) / sizeof(seps[0]))]);
	}
	return len;
}

/* Bytes from a small alphabet that collides UTF-8 fragments with
 * whitespace, terminators and closers. */
static size_t gen_bytes(char *buf, size_t cap)
{
	static const char alpha[] = " \n\n\t.!?\"')a b\x80\xff\xe2\x80\xa6"
				    "\x9d\x99\xc2\xbb\xc3\xa9\xf0\x9f\x98"
				    "\xe0\xa0\xed\xf4\x90\x8f\xf5\xc1";
	size_t len = pick(cap < 120 ? cap : 120), i;

	for (i = 0; i < len; i++)
		buf[i] = pick(16) == 0 ? '\0' : alpha[pick(sizeof(alpha) - 1)];
	return len;
}

static void test_random(void)
{
	static const uint64_t maxes[] = { 0, 1, 2, 3, 5, 8, 13, 30, 80, 400 };
	static const enum chunk_by modes[] = {
		CHUNK_BY_PARAGRAPH, CHUNK_BY_SENTENCE, CHUNK_BY_LINE,
		CHUNK_BY_BYTES, CHUNK_BY_WHOLE,
	};
	char buf[4096];
	size_t len, m, x, k, i;
	unsigned iter, bad = 0;
	struct rec r, s;
	bool ok;
	uint64_t max;
	int rc;

	rng_state = 0x6a6f626673ULL;  /* "jobfs" */
	for (iter = 0; iter < 3000 && bad < 5; iter++) {
		len = iter % 3 == 2 ? gen_bytes(buf, sizeof(buf))
				    : gen_text(buf, sizeof(buf));
		for (m = 0; m < 5; m++) {
			for (x = 0; x < sizeof(maxes) / sizeof(maxes[0]); x++) {
				max = maxes[x];
				if ((modes[m] == CHUNK_BY_LINE ||
				     modes[m] == CHUNK_BY_WHOLE) && max)
					continue;
				if (modes[m] == CHUNK_BY_BYTES && !max)
					continue;
				rc = run(buf, len, modes[m], max, &r);
				CHECK(rc == 0);
				ok = check_cut((unsigned char *)buf, len,
					       modes[m], max, &r);
				CHECK(ok);
				bad += !ok;

				/* stopping at the k-th chunk returns its
				 * value and emits no chunk after it */
				if (r.n) {
					k = 1 + pick(r.n);
					memset(&s, 0, sizeof(s));
					s.stop_at = k;
					s.stop_rc = pick(2) ? -EIO : 7;
					rc = chunker_cut(buf, len, modes[m], max,
							 rec_emit, &s);
					CHECK(rc == s.stop_rc);
					CHECK_EQ_U64(s.n, k);
					for (i = 0; i < s.n && i < k; i++)
						CHECK(s.start[i] == r.start[i] &&
						      s.end[i] == r.end[i]);
					rec_release(&s);
				}
				rec_release(&r);
			}
		}
	}
}

/* Inputs of whitespace only give nothing in any mode, whatever max. */
static void test_whitespace_only(void)
{
	static const char ws[] = " \t\n\v\f\r";
	char buf[64];
	size_t len, i;
	unsigned iter;
	struct rec r;

	rng_state = 42;
	for (iter = 0; iter < 200; iter++) {
		len = pick(sizeof(buf));
		for (i = 0; i < len; i++)
			buf[i] = ws[pick(6)];
		CHECK(run(buf, len, CHUNK_BY_PARAGRAPH, 0, &r) == 0 && !r.n);
		rec_release(&r);
		CHECK(run(buf, len, CHUNK_BY_PARAGRAPH, 3, &r) == 0 && !r.n);
		rec_release(&r);
		CHECK(run(buf, len, CHUNK_BY_SENTENCE, 1, &r) == 0 && !r.n);
		rec_release(&r);
		CHECK(run(buf, len, CHUNK_BY_LINE, 0, &r) == 0 && !r.n);
		rec_release(&r);
		CHECK(run(buf, len, CHUNK_BY_BYTES, 1, &r) == 0 && !r.n);
		rec_release(&r);
		CHECK(run(buf, len, CHUNK_BY_WHOLE, 0, &r) == 0 && !r.n);
		rec_release(&r);
	}
}

/* emit's value stops the cut in every mode, from the first chunk on. */
static void test_emit_stops(void)
{
	static const char s[] = "A. B.\n\nC. D.\n\nE.\nF. incomprehensibly "
				"long sentence here.";
	static const struct {
		enum chunk_by by;
		uint64_t max;
	} cases[] = {
		{ CHUNK_BY_PARAGRAPH, 0 }, { CHUNK_BY_PARAGRAPH, 4 },
		{ CHUNK_BY_SENTENCE, 0 }, { CHUNK_BY_SENTENCE, 4 },
		{ CHUNK_BY_LINE, 0 }, { CHUNK_BY_BYTES, 5 },
		{ CHUNK_BY_WHOLE, 0 },
	};
	struct rec r;
	size_t i;
	int rc;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(&r, 0, sizeof(r));
		r.stop_at = 1;
		r.stop_rc = -ECANCELED;
		rc = chunker_cut(s, sizeof(s) - 1, cases[i].by, cases[i].max,
				 rec_emit, &r);
		CHECK(rc == -ECANCELED);
		CHECK_EQ_U64(r.n, 1);
		rec_release(&r);

		memset(&r, 0, sizeof(r));
		r.stop_at = 2;
		r.stop_rc = 1;
		rc = chunker_cut(s, sizeof(s) - 1, cases[i].by, cases[i].max,
				 rec_emit, &r);
		CHECK(rc == (cases[i].by == CHUNK_BY_WHOLE ? 0 : 1));
		CHECK_EQ_U64(r.n, cases[i].by == CHUNK_BY_WHOLE ? 1 : 2);
		rec_release(&r);
	}
}

int main(void)
{
	test_paragraph();
	test_sentence();
	test_line();
	test_bytes_whole();
	test_nul();
	test_21_paragraphs();
	test_long();
	test_bad_args();
	test_names();
	test_whitespace_only();
	test_emit_stops();
	test_random();
	return check_done();
}
