/*
 * chunker.c - cut a job's input into chunks.
 *
 * The invariants this module guarantees are numbered in chunker.h. This
 * file adds the rules the header leaves to the implementation:
 *
 *   A. The text modes see the input as a row of tokens. A token is a word
 *      (a maximal run of non-whitespace bytes) plus the whitespace run
 *      after it; the first token also takes the input's leading
 *      whitespace. paragraph and sentence only ever cut where a token
 *      begins, that is at the first byte of a word, right after a
 *      whitespace byte. Whitespace is ASCII and no byte of a multibyte
 *      UTF-8 sequence is, so such a cut can split neither a word nor a
 *      UTF-8 sequence (invariant 3), and every whitespace run belongs to
 *      the chunk before it.
 *
 *   B. Each token ends units up to some level: every token ends a word; it
 *      ends a sentence if its word ends in a terminator and closers, a
 *      paragraph if its whitespace holds two or more newlines, and the
 *      input if nothing follows it. A higher end implies the lower ones,
 *      so words nest in sentences, sentences in paragraphs.
 *
 *   C. What max counts. A chunk's size is the number of characters from
 *      its first word's first byte to its last word's last byte: the
 *      input's leading whitespace and the whitespace run a chunk ends with
 *      are not counted. They cannot be moved out of the chunk (see A), so
 *      counting them would make max unreachable for "a" followed by a
 *      thousand spaces, and would split a paragraph that fits merely
 *      because of the blank line after it. Whitespace between words
 *      inside a chunk does count.
 *
 *   D. Packing is greedy level by level. Whole units are added to the open
 *      chunk while its size stays within max. A unit that alone exceeds
 *      max closes the open chunk and is cut on its own, one level down,
 *      and the chunk holding its tail is closed when the unit ends. So a
 *      chunk is either a run of whole units or a piece of one unit, never
 *      the tail of one paragraph glued to the next: chunk edges fall on
 *      the highest boundary that max allows. A word longer than max is a
 *      chunk of its own, with the whitespace after it.
 *
 *   E. A sentence terminator may be followed by any number of closers
 *      (so `end.")` ends a sentence), and a word such as "e.g." ends one
 *      too: the rule is lexical and does not guess at abbreviations.
 *
 * Each level scans a unit once to measure it and, only when it is too
 * long, hands it to the level below, which scans it again. With three
 * levels every byte is read at most three times: O(len) time and O(1)
 * memory (the recursion is at most three calls deep).
 */
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "chunker.h"

#define CP_INVALID 0xffffffffu  /* a byte that starts no valid sequence */

/* Which units a token ends; each level implies those below it (rule B). */
enum level {
	LV_WORD = 0,
	LV_SENTENCE,
	LV_PARAGRAPH,
	LV_INPUT,
};

struct cut {
	const unsigned char *buf;
	size_t len;
	uint64_t max;           /* 0: one unit per chunk */
	chunker_emit_fn emit;
	void *arg;
};

struct tok {
	size_t end;             /* where the next token starts, or len */
	uint64_t chars;         /* characters in the word */
	uint64_t gap;           /* characters (bytes) of whitespace after it */
	enum level ends;
};

/* A unit as unit_measure() sees it. end, gap and ends are known unless
 * over is set for a unit of more than one word. */
struct unit {
	size_t end;
	uint64_t text;          /* characters from first to last word byte */
	uint64_t gap;           /* whitespace after the last word */
	enum level ends;        /* what its last token ends */
	bool over;              /* text > max */
};

/* The open chunk of one level's greedy packing. */
struct pack {
	size_t start, end;
	uint64_t size;          /* counts the last unit's gap: see pack_add() */
	bool open;
};

static const char *const by_names[] = {
	[CHUNK_BY_PARAGRAPH] = "paragraph",
	[CHUNK_BY_SENTENCE] = "sentence",
	[CHUNK_BY_LINE] = "line",
	[CHUNK_BY_BYTES] = "bytes",
	[CHUNK_BY_WHOLE] = "whole",
};

static inline bool is_space(unsigned char b)
{
	/* ' ', '\t', '\n', '\v', '\f', '\r' and nothing else: isspace()
	 * depends on the locale, and these are the bytes chunker.h names. */
	return b == ' ' || (b >= '\t' && b <= '\r');
}

/*
 * Decode the character at s[0, n), n >= 1: store its code point in *cp and
 * return its length in bytes. A well-formed sequence follows RFC 3629 (no
 * overlong forms, no surrogates, nothing above U+10FFFF); any other lead
 * byte, or a sequence cut short, is one character of one byte with code
 * point CP_INVALID, so that decoding always moves forward.
 */
static size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
	unsigned char b = s[0], lo = 0x80, hi = 0xbf;
	uint32_t v;
	size_t k, i;

	if (b < 0x80) {
		*cp = b;
		return 1;
	}
	if (b >= 0xc2 && b <= 0xdf) {
		k = 2;
		v = b & 0x1f;
	} else if (b >= 0xe0 && b <= 0xef) {
		k = 3;
		v = b & 0x0f;
		if (b == 0xe0)
			lo = 0xa0;      /* overlong below U+0800 */
		else if (b == 0xed)
			hi = 0x9f;      /* surrogates U+D800..U+DFFF */
	} else if (b >= 0xf0 && b <= 0xf4) {
		k = 4;
		v = b & 0x07;
		if (b == 0xf0)
			lo = 0x90;      /* overlong below U+10000 */
		else if (b == 0xf4)
			hi = 0x8f;      /* above U+10FFFF */
	} else {
		goto invalid;
	}
	if (n < k || s[1] < lo || s[1] > hi)
		goto invalid;
	v = v << 6 | (s[1] & 0x3f);
	for (i = 2; i < k; i++) {
		if ((s[i] & 0xc0) != 0x80)
			goto invalid;
		v = v << 6 | (s[i] & 0x3f);
	}
	*cp = v;
	return k;
invalid:
	*cp = CP_INVALID;
	return 1;
}

/*
 * What a character means to a sentence end. Terminators are '.', '!', '?'
 * and U+2026; closers the quotes and brackets that may follow one. ASCII
 * goes through a table because tok_scan() asks for every character.
 */
enum cclass {
	CC_OTHER = 0,
	CC_SPACE,
	CC_TERM,
	CC_CLOSER,
};

static const unsigned char ascii_class[0x80] = {
	[' '] = CC_SPACE, ['\t'] = CC_SPACE, ['\n'] = CC_SPACE,
	['\v'] = CC_SPACE, ['\f'] = CC_SPACE, ['\r'] = CC_SPACE,
	['.'] = CC_TERM, ['!'] = CC_TERM, ['?'] = CC_TERM,
	['"'] = CC_CLOSER, ['\''] = CC_CLOSER, [')'] = CC_CLOSER,
	[']'] = CC_CLOSER, ['}'] = CC_CLOSER,
};

/* The class of a non-ASCII code point (or CP_INVALID). */
static enum cclass wide_class(uint32_t cp)
{
	switch (cp) {
	case 0x2026:
		return CC_TERM;
	case 0x201d: case 0x2019: case 0x00bb:
		return CC_CLOSER;
	default:
		return CC_OTHER;
	}
}

/*
 * Scan the token that starts at pos: the input's leading whitespace if pos
 * is 0, one word, and the whitespace run after it. The caller guarantees a
 * non-whitespace byte at or after pos, so the word is never empty and
 * every caller makes progress.
 */
static void tok_scan(const struct cut *c, size_t pos, struct tok *t)
{
	const unsigned char *b = c->buf;
	size_t i = pos, n = c->len, word_end;
	uint64_t chars = 0, newlines = 0;
	bool term = false;
	enum cclass cc;
	uint32_t cp;

	while (i < n && is_space(b[i]))
		i++;
	while (i < n) {
		/* Only ASCII can be whitespace, and it is most of most
		 * inputs: look it up without decoding. */
		if (b[i] < 0x80) {
			cc = ascii_class[b[i]];
			if (cc == CC_SPACE)
				break;
			i++;
		} else {
			i += utf8_next(b + i, n - i, &cp);
			cc = wide_class(cp);
		}
		chars++;
		/* A closer keeps a pending terminator; anything else clears
		 * it, so only a word ending in terminator + closers counts. */
		term = cc == CC_TERM || (term && cc == CC_CLOSER);
	}
	assert(chars > 0);
	word_end = i;
	while (i < n && is_space(b[i])) {
		newlines += b[i] == '\n';
		i++;
	}

	t->end = i;
	t->chars = chars;
	t->gap = i - word_end;
	if (i == n)
		t->ends = LV_INPUT;
	else if (newlines >= 2)
		t->ends = LV_PARAGRAPH;
	else if (term)
		t->ends = LV_SENTENCE;
	else
		t->ends = LV_WORD;
}

/*
 * Measure the unit of level lv that starts at pos. Once its text is known
 * to exceed max the scan stops with u->over set and u->end unknown: the
 * level below will scan the unit again anyway, and stopping keeps that to
 * one extra pass. A word is one token, so it is always measured whole.
 */
static void unit_measure(const struct cut *c, size_t pos, enum level lv,
			 struct unit *u)
{
	uint64_t text = 0;
	struct tok t;

	for (;;) {
		tok_scan(c, pos, &t);
		text += t.chars;
		if (t.ends >= lv)
			break;
		if (c->max && text > c->max) {
			u->text = text;
			u->over = true;
			return;
		}
		text += t.gap;  /* inside the unit, so it counts (rule C) */
		pos = t.end;
	}
	u->end = t.end;
	u->text = text;
	u->gap = t.gap;
	u->ends = t.ends;
	u->over = c->max && text > c->max;
}

static int emit_range(const struct cut *c, size_t start, size_t end)
{
	assert(start < end && end <= c->len);
	return c->emit(c->arg, start, end);
}

static int pack_flush(const struct cut *c, struct pack *p)
{
	int rc = 0;

	if (p->open) {
		p->open = false;
		rc = emit_range(c, p->start, p->end);
	}
	return rc;
}

/*
 * Add the unit [start, u->end) to the open chunk, closing that chunk first
 * if the unit would push it past max. The gap of the chunk's last unit is
 * counted in p->size already: it is only compared with max once another
 * unit follows, and then it lies inside the chunk.
 */
static int pack_add(const struct cut *c, struct pack *p, size_t start,
		    const struct unit *u)
{
	int rc = 0;

	if (p->open && (c->max == 0 || p->size + u->text > c->max))
		rc = pack_flush(c, p);
	if (!p->open) {
		p->open = true;
		p->start = start;
		p->size = 0;
	}
	p->size += u->text + u->gap;
	p->end = u->end;
	return rc;
}

/*
 * Cut the input from pos into chunks of whole units of level lv, packed
 * greedily (rule D), and stop after the first token that ends a unit of
 * level stop (> lv). Store where that token ends in *out_end and what it
 * ends in *out_ends. Returns 0 or the first non-zero value of emit.
 */
static int cut_level(const struct cut *c, size_t pos, enum level lv,
		     enum level stop, size_t *out_end, enum level *out_ends)
{
	struct pack p = { .open = false };
	struct unit u = { .ends = LV_WORD };
	int rc = 0;

	for (;;) {
		unit_measure(c, pos, lv, &u);
		if (!u.over) {
			rc = pack_add(c, &p, pos, &u);
		} else {
			rc = pack_flush(c, &p);
			if (rc)
				break;
			if (lv == LV_WORD)
				rc = emit_range(c, pos, u.end);
			else
				rc = cut_level(c, pos, (enum level)(lv - 1), lv,
					       &u.end, &u.ends);
		}
		if (rc)
			break;
		pos = u.end;
		if (u.ends >= stop)
			break;
	}
	if (!rc)
		rc = pack_flush(c, &p);
	*out_end = pos;
	*out_ends = u.ends;
	return rc;
}

/*
 * Line mode: a chunk starts at every line that holds a non-whitespace
 * byte, except the first such line, whose chunk starts at 0 to take the
 * whitespace-only lines before it. Cuts fall right after a '\n', so they
 * never split a UTF-8 sequence.
 */
static int cut_lines(const struct cut *c)
{
	const unsigned char *b = c->buf;
	size_t i = 0, line, start = 0, n = c->len;
	bool have = false, text;
	int rc = 0;

	while (i < n) {
		line = i;
		text = false;
		while (i < n && b[i] != '\n') {
			text |= !is_space(b[i]);
			i++;
		}
		if (i < n)
			i++;
		if (!text)
			continue;
		if (have) {
			rc = emit_range(c, start, line);
			if (rc)
				break;
			start = line;
		}
		have = true;
	}
	if (!rc && have)
		rc = emit_range(c, start, n);
	return rc;
}

static int cut_bytes(const struct cut *c)
{
	size_t i = 0, end;
	int rc = 0;

	while (i < c->len && !rc) {
		/* Compare against what is left: i + max can overflow. */
		end = c->len - i > c->max ? i + (size_t)c->max : c->len;
		rc = emit_range(c, i, end);
		i = end;
	}
	return rc;
}

static bool has_text(const unsigned char *b, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!is_space(b[i]))
			return true;
	return false;
}

/*
 * Cut buf[0, len) as chunker.h describes. buf is only read, and only
 * during the call. Returns -EINVAL for a bad (by, max) pair, an unknown
 * mode, a NULL emit or a NULL buf with len > 0, checked before anything
 * is emitted; otherwise 0 or the first non-zero value returned by emit.
 */
int chunker_cut(const char *buf, size_t len, enum chunk_by by, uint64_t max,
		chunker_emit_fn emit, void *arg)
{
	struct cut c = {
		.buf = (const unsigned char *)buf,
		.len = len,
		.max = max,
		.emit = emit,
		.arg = arg,
	};
	enum level ends;
	size_t end;
	int rc = -EINVAL;

	if (!emit || (!buf && len))
		goto out;
	switch (by) {
	case CHUNK_BY_PARAGRAPH:
	case CHUNK_BY_SENTENCE:
		break;
	case CHUNK_BY_LINE:
	case CHUNK_BY_WHOLE:
		if (max != 0)
			goto out;
		break;
	case CHUNK_BY_BYTES:
		if (max == 0)
			goto out;
		break;
	default:
		goto out;
	}

	/* Invariant 2 for every mode, bytes included. It also gives
	 * tok_scan() the non-whitespace byte it relies on. */
	rc = 0;
	if (!has_text(c.buf, len))
		goto out;

	switch (by) {
	case CHUNK_BY_PARAGRAPH:
		rc = cut_level(&c, 0, LV_PARAGRAPH, LV_INPUT, &end, &ends);
		break;
	case CHUNK_BY_SENTENCE:
		rc = cut_level(&c, 0, LV_SENTENCE, LV_INPUT, &end, &ends);
		break;
	case CHUNK_BY_LINE:
		rc = cut_lines(&c);
		break;
	case CHUNK_BY_BYTES:
		rc = cut_bytes(&c);
		break;
	case CHUNK_BY_WHOLE:
		rc = emit_range(&c, 0, len);
		break;
	}
out:
	return rc;
}

/* The mode's name as a spec spells it, or NULL for an unknown value. */
const char *chunker_by_name(enum chunk_by by)
{
	if ((unsigned)by >= sizeof(by_names) / sizeof(by_names[0]))
		return NULL;
	return by_names[by];
}

/*
 * Parse a mode name, exactly as chunker_by_name() spells it (case
 * matters, as everywhere else in a spec). Returns 0 and sets *out, or
 * -EINVAL for NULL or an unknown name, leaving *out alone.
 */
int chunker_by_parse(const char *name, enum chunk_by *out)
{
	size_t i;
	int rc = -EINVAL;

	for (i = 0; name && i < sizeof(by_names) / sizeof(by_names[0]); i++) {
		if (strcmp(name, by_names[i]) == 0) {
			*out = (enum chunk_by)i;
			rc = 0;
			break;
		}
	}
	return rc;
}
