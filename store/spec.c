/*
 * spec.c - parse and check a job's spec (see spec.h).
 *
 * The text goes through two passes:
 *
 *   1. scan: a strict RFC 8259 scanner of our own. It is the only judge
 *      of syntax, so a syntax error gets a line and column that point at
 *      the byte at fault (cJSON's error pointer says where parsing
 *      stopped, which for an unterminated string is the end of the text).
 *      For every value, in document order, it records the value's byte
 *      range, the size of its subtree and whether it is a string holding
 *      \u0000 (cJSON would silently cut such a string short).
 *   2. cJSON builds the tree. Its nodes come in the same document order,
 *      so a node's entry in the scan table is found by walking the tree
 *      with a cursor: first child = parent + 1, next sibling = this +
 *      size of this subtree. The raw text lets an error quote a value
 *      exactly as written and lets integers be read exactly, also past
 *      the 2^53 that a double holds.
 *
 * Invariants:
 *   1. spec_parse() returns 0 with every field valid, or a negative errno
 *      with *out all zero and nothing left allocated.
 *   2. Whatever scan accepts, cJSON accepts: scan's nesting and number
 *      length limits are below cJSON's, and it rejects every escape cJSON
 *      rejects. A cJSON failure after a good scan is therefore ENOMEM.
 *   3. Within one object, problems are reported in document order;
 *      checks that relate two fields (backoff.max >= backoff.initial,
 *      chunking.by against chunking.max, command present) come after the
 *      object's own members.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "spec.h"

#define SCAN_MAX_DEPTH 64     /* objects and arrays nested deeper: error */
#define SCAN_MAX_NUMBER 63    /* cJSON reads at most 63 bytes of a number */
#define SPEC_MAX_SECONDS 1e9  /* keeps seconds * 1e9 inside an int64 of ns */
#define SHOW_MAX 40           /* bytes of an offending value in a message */
#define SHOW_BUF (SHOW_MAX + 8)
#define KEY_CMP_MAX 32        /* longer keys get no "did you mean" */

/* ---- pass 1: the scanner ------------------------------------------- */

struct jval {
	uint32_t start, end;  /* byte range of the value's text */
	uint32_t count;       /* values in its subtree, itself included */
	uint8_t has_nul;      /* a string that holds \u0000 */
};

struct scan {
	const char *p;
	size_t len, pos;
	struct jval *v;       /* every value in document order */
	size_t nv, cap;
	unsigned depth;
	size_t err_pos;       /* where the syntax error is */
	char what[96];        /* what it is */
};

static int is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static int is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static int is_blank(const char *p, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (!is_ws(p[i]))
			return 0;
	return 1;
}

static int scan_fail(struct scan *s, size_t pos, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int scan_fail(struct scan *s, size_t pos, const char *fmt, ...)
{
	va_list ap;

	s->err_pos = pos;
	va_start(ap, fmt);
	vsnprintf(s->what, sizeof(s->what), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* "expected X" at the current byte, saying so when the text ran out. */
static int scan_expected(struct scan *s, const char *what)
{
	if (s->pos >= s->len)
		return scan_fail(s, s->pos, "unexpected end of text, expected %s",
				 what);
	return scan_fail(s, s->pos, "expected %s", what);
}

static void skip_ws(struct scan *s)
{
	while (s->pos < s->len && is_ws(s->p[s->pos]))
		s->pos++;
}

/* Length of the valid UTF-8 sequence at q (n bytes left), 0 if invalid. */
static size_t utf8_len(const unsigned char *q, size_t n)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len, i;

	if (q[0] >= 0xc2 && q[0] <= 0xdf)
		len = 2;
	else if (q[0] >= 0xe0 && q[0] <= 0xef)
		len = 3;
	else if (q[0] >= 0xf0 && q[0] <= 0xf4)
		len = 4;
	else
		return 0;
	/* The second byte's range rules out overlong forms, surrogates and
	 * code points past U+10FFFF. */
	if (q[0] == 0xe0)
		lo = 0xa0;
	else if (q[0] == 0xed)
		hi = 0x9f;
	else if (q[0] == 0xf0)
		lo = 0x90;
	else if (q[0] == 0xf4)
		hi = 0x8f;
	if (n < len || q[1] < lo || q[1] > hi)
		return 0;
	for (i = 2; i < len; i++)
		if ((q[i] & 0xc0) != 0x80)
			return 0;
	return len;
}

/* The 4 hex digits at p[at], or -1. */
static long hex4(const struct scan *s, size_t at)
{
	long v = 0;
	size_t i;

	if (at + 4 > s->len)
		return -1;
	for (i = at; i < at + 4; i++) {
		char c = s->p[i];

		v <<= 4;
		if (is_digit(c))
			v |= c - '0';
		else if (lower(c) >= 'a' && lower(c) <= 'f')
			v |= lower(c) - 'a' + 10;
		else
			return -1;
	}
	return v;
}

/* One escape sequence at s->pos (a backslash) inside the string that
 * opened at open. Surrogates must come in pairs, as cJSON insists. */
static int scan_escape(struct scan *s, size_t open, uint8_t *has_nul)
{
	size_t at = s->pos;
	long hi, lo;
	char c;

	if (at + 1 >= s->len)
		return scan_fail(s, open, "unterminated string");
	c = s->p[at + 1];
	if (c && strchr("\"\\/bfnrt", c)) {
		s->pos += 2;
		return 0;
	}
	if (c != 'u') {
		if (c > 0x20 && c < 0x7f)
			return scan_fail(s, at, "invalid escape '\\%c'", c);
		return scan_fail(s, at, "invalid escape");
	}
	hi = hex4(s, at + 2);
	if (hi < 0)
		return scan_fail(s, at, "invalid \\u escape (4 hex digits needed)");
	s->pos = at + 6;
	if (hi == 0)
		*has_nul = 1;
	if (hi >= 0xdc00 && hi <= 0xdfff)
		return scan_fail(s, at, "unpaired surrogate \\u%04lx", hi);
	if (hi >= 0xd800 && hi <= 0xdbff) {
		if (s->pos + 1 < s->len && s->p[s->pos] == '\\' &&
		    s->p[s->pos + 1] == 'u') {
			lo = hex4(s, s->pos + 2);
			if (lo >= 0xdc00 && lo <= 0xdfff) {
				s->pos += 6;
				return 0;
			}
		}
		return scan_fail(s, at, "unpaired surrogate \\u%04lx", hi);
	}
	return 0;
}

/* A string at s->pos (the opening quote). */
static int scan_string(struct scan *s, uint8_t *has_nul)
{
	size_t open = s->pos++;
	int rc;

	for (;;) {
		unsigned char c;
		size_t n;

		if (s->pos >= s->len)
			return scan_fail(s, open, "unterminated string");
		c = (unsigned char)s->p[s->pos];
		if (c == '"') {
			s->pos++;
			return 0;
		}
		if (c == '\n')
			return scan_fail(s, s->pos, "line break inside a string "
					 "(write \\n, or close the string)");
		if (c < 0x20)
			return scan_fail(s, s->pos, "control character 0x%02x "
					 "inside a string", c);
		if (c == '\\') {
			rc = scan_escape(s, open, has_nul);
			if (rc)
				return rc;
			continue;
		}
		if (c < 0x80) {
			s->pos++;
			continue;
		}
		n = utf8_len((const unsigned char *)s->p + s->pos,
			     s->len - s->pos);
		if (!n)
			return scan_fail(s, s->pos, "invalid UTF-8 byte 0x%02x "
					 "inside a string", c);
		s->pos += n;
	}
}

static int is_number_char(char c)
{
	return is_digit(c) || is_alpha(c) || c == '.' || c == '+' || c == '-';
}

/* A number at s->pos, by the RFC 8259 grammar. */
static int scan_number(struct scan *s)
{
	size_t start = s->pos, i = start, end;

	if (s->p[i] == '-')
		i++;
	if (i < s->len && s->p[i] == '0') {
		i++;
	} else if (i < s->len && is_digit(s->p[i])) {
		while (i < s->len && is_digit(s->p[i]))
			i++;
	} else {
		goto bad;
	}
	if (i < s->len && s->p[i] == '.') {
		if (++i >= s->len || !is_digit(s->p[i]))
			goto bad;
		while (i < s->len && is_digit(s->p[i]))
			i++;
	}
	if (i < s->len && (s->p[i] == 'e' || s->p[i] == 'E')) {
		i++;
		if (i < s->len && (s->p[i] == '+' || s->p[i] == '-'))
			i++;
		if (i >= s->len || !is_digit(s->p[i]))
			goto bad;
		while (i < s->len && is_digit(s->p[i]))
			i++;
	}
	if (i < s->len && is_number_char(s->p[i]))
		goto bad;
	if (i - start > SCAN_MAX_NUMBER)
		return scan_fail(s, start, "number longer than %d characters",
				 SCAN_MAX_NUMBER);
	s->pos = i;
	return 0;
bad:
	for (end = start; end < s->len && is_number_char(s->p[end]); end++)
		;
	if (end - start > 20)
		return scan_fail(s, start, "invalid number '%.20s...'",
				 s->p + start);
	return scan_fail(s, start, "invalid number '%.*s'", (int)(end - start),
			 s->p + start);
}

/* true, false or null at s->pos (a letter). */
static int scan_word(struct scan *s)
{
	static const char *const words[] = { "true", "false", "null" };
	size_t i = s->pos, n, k;

	while (i < s->len && (is_alpha(s->p[i]) || is_digit(s->p[i]) ||
			      s->p[i] == '_'))
		i++;
	n = i - s->pos;
	for (k = 0; k < sizeof(words) / sizeof(words[0]); k++) {
		if (strlen(words[k]) == n && !memcmp(s->p + s->pos, words[k], n)) {
			s->pos = i;
			return 0;
		}
	}
	for (k = 0; k < sizeof(words) / sizeof(words[0]); k++)
		if (strlen(words[k]) == n &&
		    !strncasecmp(s->p + s->pos, words[k], n))
			return scan_fail(s, s->pos, "expected a value, got '%.*s' "
					 "(write %s)", (int)n, s->p + s->pos,
					 words[k]);
	if (n > 20)
		return scan_fail(s, s->pos, "expected a value, got '%.20s...' "
				 "(strings need double quotes)", s->p + s->pos);
	return scan_fail(s, s->pos, "expected a value, got '%.*s' (strings "
			 "need double quotes)", (int)n, s->p + s->pos);
}

static int scan_value(struct scan *s);

/* An object at s->pos (the '{'). */
static int scan_object(struct scan *s)
{
	size_t open = s->pos++;
	int rc, after_comma = 0;

	if (++s->depth > SCAN_MAX_DEPTH)
		return scan_fail(s, open, "nested deeper than %d levels",
				 SCAN_MAX_DEPTH);
	skip_ws(s);
	if (s->pos < s->len && s->p[s->pos] == '}') {
		s->pos++;
		s->depth--;
		return 0;
	}
	for (;;) {
		uint8_t nul = 0;
		size_t key;

		skip_ws(s);
		if (after_comma && s->pos < s->len && s->p[s->pos] == '}')
			return scan_fail(s, s->pos, "expected a key after ',' "
					 "(JSON allows no trailing comma)");
		if (s->pos >= s->len || s->p[s->pos] != '"')
			return scan_expected(s, "a key in double quotes");
		key = s->pos;
		rc = scan_string(s, &nul);
		if (rc)
			return rc;
		if (nul)
			return scan_fail(s, key, "key holds \\u0000");
		skip_ws(s);
		if (s->pos >= s->len || s->p[s->pos] != ':')
			return scan_expected(s, "':' after the key");
		s->pos++;
		rc = scan_value(s);
		if (rc)
			return rc;
		skip_ws(s);
		if (s->pos < s->len && s->p[s->pos] == ',') {
			s->pos++;
			after_comma = 1;
			continue;
		}
		if (s->pos < s->len && s->p[s->pos] == '}') {
			s->pos++;
			break;
		}
		return scan_expected(s, "',' or '}'");
	}
	s->depth--;
	return 0;
}

/* An array at s->pos (the '['). */
static int scan_array(struct scan *s)
{
	size_t open = s->pos++;
	int rc;

	if (++s->depth > SCAN_MAX_DEPTH)
		return scan_fail(s, open, "nested deeper than %d levels",
				 SCAN_MAX_DEPTH);
	skip_ws(s);
	if (s->pos < s->len && s->p[s->pos] == ']') {
		s->pos++;
		s->depth--;
		return 0;
	}
	for (;;) {
		rc = scan_value(s);
		if (rc)
			return rc;
		skip_ws(s);
		if (s->pos < s->len && s->p[s->pos] == ',') {
			s->pos++;
			skip_ws(s);
			if (s->pos < s->len && s->p[s->pos] == ']')
				return scan_fail(s, s->pos, "expected a value "
						 "after ',' (JSON allows no "
						 "trailing comma)");
			continue;
		}
		if (s->pos < s->len && s->p[s->pos] == ']') {
			s->pos++;
			break;
		}
		return scan_expected(s, "',' or ']'");
	}
	s->depth--;
	return 0;
}

/* Any value, after optional whitespace; records it in s->v. */
static int scan_value(struct scan *s)
{
	uint8_t nul = 0;
	size_t idx;
	char c;
	int rc;

	skip_ws(s);
	if (s->pos >= s->len)
		return scan_expected(s, "a value");
	if (s->nv == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 64;
		struct jval *v = realloc(s->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		s->v = v;
		s->cap = cap;
	}
	idx = s->nv++;
	s->v[idx].start = (uint32_t)s->pos;

	c = s->p[s->pos];
	if (c == '{')
		rc = scan_object(s);
	else if (c == '[')
		rc = scan_array(s);
	else if (c == '"')
		rc = scan_string(s, &nul);
	else if (c == '-' || is_digit(c))
		rc = scan_number(s);
	else if (is_alpha(c))
		rc = scan_word(s);
	else if (c == '\'')
		rc = scan_fail(s, s->pos, "expected a value, got ''' (JSON "
			       "strings use double quotes)");
	else if (c > 0x20 && c < 0x7f)
		rc = scan_fail(s, s->pos, "expected a value, got '%c'", c);
	else
		rc = scan_fail(s, s->pos, "expected a value, got byte 0x%02x",
			       (unsigned char)c);
	if (rc)
		return rc;
	s->v[idx].end = (uint32_t)s->pos;
	s->v[idx].count = (uint32_t)(s->nv - idx);
	s->v[idx].has_nul = nul;
	return 0;
}

/* The whole text: one value and nothing after it but whitespace. */
static int scan_text(struct scan *s)
{
	int rc = scan_value(s);

	if (rc)
		return rc;
	skip_ws(s);
	if (s->pos < s->len)
		return scan_fail(s, s->pos, "unexpected text after the end of "
				 "the top-level value");
	return 0;
}

/* 1-based line and column (in UTF-8 characters) of byte off. */
static void line_col(const char *p, size_t off, size_t *line, size_t *col)
{
	size_t i;

	*line = 1;
	*col = 1;
	for (i = 0; i < off; i++) {
		if (p[i] == '\n') {
			++*line;
			*col = 1;
		} else if (((unsigned char)p[i] & 0xc0) != 0x80) {
			++*col;
		}
	}
}

/* ---- pass 2: checking the tree ------------------------------------- */

struct ctx {
	const char *text;
	const struct jval *v;  /* the scan table */
	char *err;
	size_t errlen;
};

static int fail(struct ctx *c, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Write "spec: " and the message into the caller's buffer; returns rc. */
static int fail(struct ctx *c, int rc, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!c->err || !c->errlen)
		return rc;
	n = snprintf(c->err, c->errlen, "spec: ");
	if (n >= 0 && (size_t)n < c->errlen) {
		va_start(ap, fmt);
		vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return rc;
}

static int no_memory(struct ctx *c)
{
	return fail(c, -ENOMEM, "out of memory");
}

/* Back up from cut to the start of a UTF-8 character of p. */
static size_t utf8_cut(const char *p, size_t cut)
{
	while (cut > 0 && ((unsigned char)p[cut] & 0xc0) == 0x80)
		cut--;
	return cut;
}

/* The value at idx as written, for "got ...": strings, numbers and
 * literals verbatim (shortened past SHOW_MAX bytes), containers by kind. */
static const char *show_value(const struct ctx *c, const cJSON *n, size_t idx,
			      char *buf, size_t size)
{
	const char *raw = c->text + c->v[idx].start;
	size_t len = c->v[idx].end - c->v[idx].start, cut;

	if (cJSON_IsObject(n))
		return "an object";
	if (cJSON_IsArray(n))
		return "an array";
	if (len <= SHOW_MAX) {
		snprintf(buf, size, "%.*s", (int)len, raw);
		return buf;
	}
	cut = utf8_cut(raw, SHOW_MAX - 4);
	snprintf(buf, size, "%.*s...%s", (int)cut, raw,
		 cJSON_IsString(n) ? "\"" : "");
	return buf;
}

/* A decoded key made safe to print: control bytes become '?', long keys
 * are shortened. */
static const char *show_key(const char *key, char *buf, size_t size)
{
	size_t i, n = strlen(key), max = SHOW_MAX;

	if (n > max)
		n = utf8_cut(key, max - 3);
	if (n > size - 4)
		n = size - 4;
	for (i = 0; i < n; i++)
		buf[i] = (unsigned char)key[i] < 0x20 || key[i] == 0x7f ?
			 '?' : key[i];
	strcpy(buf + i, strlen(key) > n ? "..." : "");
	return buf;
}

/* Optimal string alignment distance, ASCII case folded; UINT32_MAX for
 * strings longer than KEY_CMP_MAX. */
static unsigned edit_distance(const char *a, const char *b)
{
	unsigned char d[KEY_CMP_MAX + 1][KEY_CMP_MAX + 1];
	size_t la = strlen(a), lb = strlen(b), i, j;

	if (la > KEY_CMP_MAX || lb > KEY_CMP_MAX)
		return UINT32_MAX;
	for (i = 0; i <= la; i++)
		d[i][0] = (unsigned char)i;
	for (j = 0; j <= lb; j++)
		d[0][j] = (unsigned char)j;
	for (i = 1; i <= la; i++) {
		for (j = 1; j <= lb; j++) {
			unsigned v, cost = lower(a[i - 1]) != lower(b[j - 1]);

			v = d[i - 1][j - 1] + cost;
			if (d[i - 1][j] + 1u < v)
				v = d[i - 1][j] + 1u;
			if (d[i][j - 1] + 1u < v)
				v = d[i][j - 1] + 1u;
			if (i > 1 && j > 1 && lower(a[i - 1]) == lower(b[j - 2]) &&
			    lower(a[i - 2]) == lower(b[j - 1]) &&
			    d[i - 2][j - 2] + 1u < v)
				v = d[i - 2][j - 2] + 1u;
			d[i][j] = (unsigned char)v;
		}
	}
	return d[la][lb];
}

/* The name within edit distance 2 of word (and closer than word is
 * long, so "x" suggests nothing), or NULL. */
static const char *suggest(const char *word, const char *const *names,
			   size_t n)
{
	const char *best = NULL;
	unsigned best_d = 3, d;
	size_t i;

	for (i = 0; i < n; i++) {
		d = edit_distance(word, names[i]);
		if (d < best_d) {
			best_d = d;
			best = names[i];
		}
	}
	if (best && best_d >= strlen(word))
		return NULL;
	return best;
}

/* The value at idx read exactly as an integer: 0 and sign and magnitude,
 * -1 if it is not a whole number, -2 if its magnitude passes UINT64_MAX.
 * 2.0, 2.50e1 and 1e3 are whole; 2.5 and 1e-3 are not. */
static int raw_integer(const struct ctx *c, size_t idx, int *neg,
		       uint64_t *mag)
{
	const char *p = c->text + c->v[idx].start;
	size_t n = c->v[idx].end - c->v[idx].start, i = 0, m = 0, k;
	char d[SCAN_MAX_NUMBER + 1];
	long exp = 0, nfrac = 0;
	int exp_neg = 0;

	*neg = 0;
	*mag = 0;
	if (i < n && p[i] == '-') {
		*neg = 1;
		i++;
	}
	for (; i < n && is_digit(p[i]); i++)
		if (m || p[i] != '0')
			d[m++] = p[i];
	if (i < n && p[i] == '.') {
		for (i++; i < n && is_digit(p[i]); i++, nfrac++)
			if (m || p[i] != '0')
				d[m++] = p[i];
	}
	if (i < n && (p[i] == 'e' || p[i] == 'E')) {
		i++;
		if (i < n && (p[i] == '+' || p[i] == '-'))
			exp_neg = p[i++] == '-';
		for (; i < n && is_digit(p[i]); i++)
			if (exp < 100000)  /* far past any uint64 either way */
				exp = exp * 10 + (p[i] - '0');
	}
	exp = (exp_neg ? -exp : exp) - nfrac;
	while (m && d[m - 1] == '0') {
		m--;
		exp++;
	}
	if (!m) {
		*neg = 0;       /* -0 is 0 */
		return 0;
	}
	if (exp < 0)
		return -1;
	if (m + (size_t)exp > 20)
		return -2;
	for (k = 0; k < m; k++) {
		unsigned dig = (unsigned)(d[k] - '0');

		if (*mag > (UINT64_MAX - dig) / 10)
			return -2;
		*mag = *mag * 10 + dig;
	}
	for (; exp > 0; exp--) {
		if (*mag > UINT64_MAX / 10)
			return -2;
		*mag *= 10;
	}
	return 0;
}

/* "'name' must be expect, got <value>" */
static int bad_value(struct ctx *c, const cJSON *n, size_t idx,
		     const char *name, const char *expect)
{
	char b[SHOW_BUF];

	return fail(c, -EINVAL, "'%s' must be %s, got %s", name, expect,
		    show_value(c, n, idx, b, sizeof(b)));
}

static int want_u64(struct ctx *c, const cJSON *n, size_t idx,
		    const char *name, const char *expect, uint64_t lo,
		    uint64_t hi, uint64_t *out)
{
	uint64_t mag;
	int neg;

	if (!cJSON_IsNumber(n) || raw_integer(c, idx, &neg, &mag) ||
	    neg || mag < lo || mag > hi)
		return bad_value(c, n, idx, name, expect);
	*out = mag;
	return 0;
}

static int want_i64(struct ctx *c, const cJSON *n, size_t idx,
		    const char *name, const char *expect, int64_t *out)
{
	uint64_t mag;
	int neg;

	if (!cJSON_IsNumber(n) || raw_integer(c, idx, &neg, &mag) ||
	    mag > (uint64_t)INT64_MAX + neg)
		return bad_value(c, n, idx, name, expect);
	if (!neg)
		*out = (int64_t)mag;
	else if (mag == (uint64_t)INT64_MAX + 1)
		*out = INT64_MIN;
	else
		*out = -(int64_t)mag;
	return 0;
}

static int want_double(struct ctx *c, const cJSON *n, size_t idx,
		       const char *name, const char *expect, double lo,
		       double hi, double *out)
{
	if (!cJSON_IsNumber(n) || !isfinite(n->valuedouble) ||
	    n->valuedouble < lo || n->valuedouble > hi)
		return bad_value(c, n, idx, name, expect);
	*out = n->valuedouble == 0 ? 0 : n->valuedouble;  /* no -0 */
	return 0;
}

/* A string without \u0000 (which cJSON would have cut it at). */
static int want_string(struct ctx *c, const cJSON *n, size_t idx,
		       const char *name, const char *expect, const char **out)
{
	if (!cJSON_IsString(n) || c->v[idx].has_nul)
		return bad_value(c, n, idx, name, expect);
	*out = n->valuestring;
	return 0;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Reject an object that holds a key twice (cJSON keeps both). */
static int check_duplicates(struct ctx *c, const cJSON *obj,
			    const char *where)
{
	const cJSON *m;
	const char **names;
	size_t n = 0, i;
	char b[SHOW_BUF];
	int rc = 0;

	for (m = obj->child; m; m = m->next)
		n++;
	if (n < 2)
		return 0;
	names = malloc(n * sizeof(*names));
	if (!names)
		return no_memory(c);
	for (i = 0, m = obj->child; m; m = m->next)
		names[i++] = m->string;
	qsort(names, n, sizeof(*names), cmp_names);
	for (i = 1; i < n; i++) {
		if (strcmp(names[i - 1], names[i]))
			continue;
		show_key(names[i], b, sizeof(b));
		if (where)
			rc = fail(c, -EINVAL, "duplicate key '%s' in '%s'", b,
				  where);
		else
			rc = fail(c, -EINVAL, "duplicate key '%s'", b);
		break;
	}
	free(names);
	return rc;
}

typedef int (*field_fn)(struct ctx *c, const cJSON *n, size_t idx,
			struct spec *s);

struct field {
	const char *name;
	field_fn parse;
};

static int unknown_key(struct ctx *c, const char *key,
		       const struct field *fields, size_t nfields,
		       const char *where)
{
	const char *names[16], *hint;
	char b[SHOW_BUF], known[160] = "";
	size_t i, n = nfields < 16 ? nfields : 16;

	for (i = 0; i < n; i++)
		names[i] = fields[i].name;
	hint = suggest(key, names, n);
	show_key(key, b, sizeof(b));
	if (!where && hint)
		return fail(c, -EINVAL, "unknown key '%s' (did you mean '%s'?)",
			    b, hint);
	if (!where)
		return fail(c, -EINVAL, "unknown key '%s'", b);
	if (hint)
		return fail(c, -EINVAL, "unknown key '%s' in '%s' (did you mean "
			    "'%s'?)", b, where, hint);
	for (i = 0; i < n; i++) {
		strncat(known, i ? ", " : "", sizeof(known) - strlen(known) - 1);
		strncat(known, names[i], sizeof(known) - strlen(known) - 1);
	}
	return fail(c, -EINVAL, "unknown key '%s' in '%s' (known keys: %s)", b,
		    where, known);
}

/* Check obj's keys against fields and hand each value to its parser, in
 * document order. where names the object for messages (NULL: the top). */
static int parse_object(struct ctx *c, const cJSON *obj, size_t idx,
			const struct field *fields, size_t nfields,
			const char *where, struct spec *s)
{
	const cJSON *m;
	size_t ci = idx + 1, k;
	int rc = check_duplicates(c, obj, where);

	for (m = obj->child; m && !rc; m = m->next) {
		for (k = 0; k < nfields; k++)
			if (!strcmp(m->string, fields[k].name))
				break;
		if (k == nfields)
			return unknown_key(c, m->string, fields, nfields, where);
		rc = fields[k].parse(c, m, ci, s);
		ci += c->v[ci].count;
	}
	return rc;
}

static char *concat(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *r = malloc(la + lb + 1);

	if (r) {
		memcpy(r, a, la);
		memcpy(r + la, b, lb + 1);
	}
	return r;
}

/* cJSON's compact text, copied so that the caller frees it with free(). */
static char *print_compact(const cJSON *n)
{
	char *t = cJSON_PrintUnformatted(n), *r;

	if (!t)
		return NULL;
	r = strdup(t);
	cJSON_free(t);
	return r;
}

#define COMMAND_EXPECT \
	"a non-empty string or a non-empty array of non-empty strings"

static int f_command(struct ctx *c, const cJSON *n, size_t idx,
		     struct spec *s)
{
	const cJSON *e;
	size_t count = 0, i, ei;
	char name[32], *json;

	if (cJSON_IsString(n)) {
		if (!*n->valuestring)
			return bad_value(c, n, idx, "command", COMMAND_EXPECT);
		if (c->v[idx].has_nul)
			return fail(c, -EINVAL, "'command' must not contain NUL "
				    "(\\u0000)");
		s->shell = strdup(n->valuestring);
		s->command_id = concat("sh:", n->valuestring);
		return s->shell && s->command_id ? 0 : no_memory(c);
	}
	if (!cJSON_IsArray(n) || !n->child)
		return bad_value(c, n, idx, "command", COMMAND_EXPECT);
	for (e = n->child; e; e = e->next)
		count++;
	s->argv = calloc(count + 1, sizeof(*s->argv));
	if (!s->argv)
		return no_memory(c);
	for (i = 0, ei = idx + 1, e = n->child; e;
	     i++, ei += c->v[ei].count, e = e->next) {
		snprintf(name, sizeof(name), "command[%zu]", i);
		if (!cJSON_IsString(e) || !*e->valuestring)
			return bad_value(c, e, ei, name, "a non-empty string");
		if (c->v[ei].has_nul)
			return fail(c, -EINVAL, "'%s' must not contain NUL "
				    "(\\u0000)", name);
		s->argv[i] = strdup(e->valuestring);
		if (!s->argv[i])
			return no_memory(c);
	}
	json = print_compact(n);
	if (!json)
		return no_memory(c);
	s->command_id = concat("argv:", json);
	free(json);
	return s->command_id ? 0 : no_memory(c);
}

/* A value of an enumeration failed: list the accepted values and
 * suggest the nearest one. */
static int bad_choice(struct ctx *c, const cJSON *n, size_t idx,
		      const char *name, const char *const *choices,
		      size_t nchoices)
{
	char expect[200] = "", b[SHOW_BUF];
	const char *hint = NULL, *got;
	size_t i, used;

	for (i = 0; i < nchoices; i++) {
		used = strlen(expect);
		snprintf(expect + used, sizeof(expect) - used, "%s\"%s\"",
			 i == 0 ? (nchoices > 2 ? "one of " : "") :
			 i + 1 == nchoices ? " or " : ", ", choices[i]);
	}
	if (cJSON_IsString(n) && !c->v[idx].has_nul)
		hint = suggest(n->valuestring, choices, nchoices);
	/* show_value() may return a constant ("an object") and leave b
	 * untouched: print what it returns */
	got = show_value(c, n, idx, b, sizeof(b));
	if (hint)
		return fail(c, -EINVAL, "'%s' must be %s, got %s (did you mean "
			    "\"%s\"?)", name, expect, got, hint);
	return fail(c, -EINVAL, "'%s' must be %s, got %s", name, expect, got);
}

static int f_chunk_by(struct ctx *c, const cJSON *n, size_t idx,
		      struct spec *s)
{
	const char *names[16];
	size_t count = 0, i;

	if (cJSON_IsString(n) && !c->v[idx].has_nul &&
	    chunker_by_parse(n->valuestring, &s->by) == 0)
		return 0;
	while (count < 16 && chunker_by_name((enum chunk_by)count))
		count++;
	for (i = 0; i < count; i++)
		names[i] = chunker_by_name((enum chunk_by)i);
	return bad_choice(c, n, idx, "chunking.by", names, count);
}

static int f_chunk_max(struct ctx *c, const cJSON *n, size_t idx,
		       struct spec *s)
{
	return want_u64(c, n, idx, "chunking.max", "an integer >= 0", 0,
			UINT64_MAX, &s->max);
}

static const struct field chunking_fields[] = {
	{ "by", f_chunk_by },
	{ "max", f_chunk_max },
};

static int f_chunking(struct ctx *c, const cJSON *n, size_t idx,
		      struct spec *s)
{
	int rc;

	if (!cJSON_IsObject(n))
		return bad_value(c, n, idx, "chunking", "an object such as "
				 "{\"by\": \"paragraph\", \"max\": 0}");
	rc = parse_object(c, n, idx, chunking_fields,
			  sizeof(chunking_fields) / sizeof(chunking_fields[0]),
			  "chunking", s);
	if (rc)
		return rc;
	if (s->by == CHUNK_BY_BYTES && s->max == 0)
		return fail(c, -EINVAL, "chunking by \"bytes\" needs "
			    "'chunking.max' > 0 (the size of a chunk in bytes)");
	if (s->by == CHUNK_BY_LINE && s->max)
		return fail(c, -EINVAL, "'chunking.max' must be 0 with by "
			    "\"line\" (each line is one chunk), got %" PRIu64,
			    s->max);
	if (s->by == CHUNK_BY_WHOLE && s->max)
		return fail(c, -EINVAL, "'chunking.max' must be 0 with by "
			    "\"whole\" (the whole input is one chunk), got %"
			    PRIu64, s->max);
	return 0;
}

static int f_parallel(struct ctx *c, const cJSON *n, size_t idx,
		      struct spec *s)
{
	char expect[64];
	uint64_t v = 0;
	int rc;

	snprintf(expect, sizeof(expect), "an integer from 1 to %d",
		 SPEC_MAX_PARALLEL);
	rc = want_u64(c, n, idx, "parallel", expect, 1, SPEC_MAX_PARALLEL, &v);
	if (!rc)
		s->parallel = (unsigned)v;
	return rc;
}

static int f_attempts(struct ctx *c, const cJSON *n, size_t idx,
		      struct spec *s)
{
	char expect[64];
	uint64_t v = 0;
	int rc;

	snprintf(expect, sizeof(expect), "an integer from 1 to %d",
		 SPEC_MAX_ATTEMPTS);
	rc = want_u64(c, n, idx, "attempts", expect, 1, SPEC_MAX_ATTEMPTS, &v);
	if (!rc)
		s->attempts = (unsigned)v;
	return rc;
}

#define SECONDS_EXPECT "a number of seconds from 0 to 1000000000"

static int f_backoff_initial(struct ctx *c, const cJSON *n, size_t idx,
			     struct spec *s)
{
	return want_double(c, n, idx, "backoff.initial", SECONDS_EXPECT, 0,
			   SPEC_MAX_SECONDS, &s->backoff_initial);
}

static int f_backoff_factor(struct ctx *c, const cJSON *n, size_t idx,
			    struct spec *s)
{
	return want_double(c, n, idx, "backoff.factor", "a finite number >= 1",
			   1, HUGE_VAL, &s->backoff_factor);
}

static int f_backoff_max(struct ctx *c, const cJSON *n, size_t idx,
			 struct spec *s)
{
	return want_double(c, n, idx, "backoff.max", SECONDS_EXPECT, 0,
			   SPEC_MAX_SECONDS, &s->backoff_max);
}

static const struct field backoff_fields[] = {
	{ "initial", f_backoff_initial },
	{ "factor", f_backoff_factor },
	{ "max", f_backoff_max },
};

static int f_backoff(struct ctx *c, const cJSON *n, size_t idx,
		     struct spec *s)
{
	int rc;

	if (!cJSON_IsObject(n))
		return bad_value(c, n, idx, "backoff", "an object such as "
				 "{\"initial\": 1, \"factor\": 2, \"max\": 60}");
	rc = parse_object(c, n, idx, backoff_fields,
			  sizeof(backoff_fields) / sizeof(backoff_fields[0]),
			  "backoff", s);
	if (!rc && s->backoff_max < s->backoff_initial)
		rc = fail(c, -EINVAL, "'backoff.max' (%g) must not be less than "
			  "'backoff.initial' (%g)", s->backoff_max,
			  s->backoff_initial);
	return rc;
}

static int f_timeout(struct ctx *c, const cJSON *n, size_t idx,
		     struct spec *s)
{
	return want_double(c, n, idx, "timeout", "a number of seconds from 0 "
			   "(none) to 1000000000", 0, SPEC_MAX_SECONDS,
			   &s->timeout);
}

static int f_no_retry(struct ctx *c, const cJSON *n, size_t idx,
		      struct spec *s)
{
	const cJSON *e;
	size_t count = 0, i, ei;
	char name[32];
	uint64_t v = 0;
	int rc;

	if (!cJSON_IsArray(n))
		return bad_value(c, n, idx, "no_retry", "an array of exit codes "
				 "from 0 to 255");
	for (e = n->child; e; e = e->next)
		count++;
	if (!count)
		return 0;
	s->no_retry = calloc(count, sizeof(*s->no_retry));
	if (!s->no_retry)
		return no_memory(c);
	s->n_no_retry = count;
	for (i = 0, ei = idx + 1, e = n->child; e;
	     i++, ei += c->v[ei].count, e = e->next) {
		snprintf(name, sizeof(name), "no_retry[%zu]", i);
		rc = want_u64(c, e, ei, name, "an exit code from 0 to 255", 0,
			      255, &v);
		if (rc)
			return rc;
		s->no_retry[i] = (int)v;
	}
	return 0;
}

static int f_ext(struct ctx *c, const cJSON *n, size_t idx, struct spec *s)
{
	static const char expect[] = "1 to 16 ASCII letters or digits";
	const char *e = NULL;
	size_t i, len;
	int rc;

	rc = want_string(c, n, idx, "ext", expect, &e);
	if (rc)
		return rc;
	len = strlen(e);
	if (len < 1 || len > SPEC_MAX_EXT)
		return bad_value(c, n, idx, "ext", expect);
	for (i = 0; i < len; i++)
		if (!is_alpha(e[i]) && !is_digit(e[i]))
			return bad_value(c, n, idx, "ext", expect);
	memcpy(s->ext, e, len + 1);
	return 0;
}

static int f_output(struct ctx *c, const cJSON *n, size_t idx,
		    struct spec *s)
{
	static const char *const choices[] = { "concat", "none", "wav",
					       "flac", "ogg" };

	if (cJSON_IsString(n) && !c->v[idx].has_nul) {
		for (size_t i = 0; i < sizeof(choices) / sizeof(choices[0]);
		     i++) {
			if (!strcmp(n->valuestring, choices[i])) {
				s->output = (enum spec_output)i;
				return 0;
			}
		}
	}
	return bad_choice(c, n, idx, "output", choices,
			  sizeof(choices) / sizeof(choices[0]));
}

const char *spec_encoded_ext(enum spec_output o)
{
	return o == SPEC_OUTPUT_FLAC ? "flac" : o == SPEC_OUTPUT_OGG ? "ogg" :
		NULL;
}

static int f_join_gap(struct ctx *c, const cJSON *n, size_t idx,
		      struct spec *s)
{
	uint64_t v;
	int rc;

	rc = want_u64(c, n, idx, "join.gap_ms", "an integer number of "
		      "milliseconds from 0 to 60000", 0, SPEC_MAX_GAP_MS, &v);
	if (!rc)
		s->gap_ms = (uint32_t)v;
	return rc;
}

static const struct field join_fields[] = {
	{ "gap_ms", f_join_gap },
};

static int f_join(struct ctx *c, const cJSON *n, size_t idx, struct spec *s)
{
	if (!cJSON_IsObject(n))
		return bad_value(c, n, idx, "join", "an object such as "
				 "{\"gap_ms\": 300}");
	return parse_object(c, n, idx, join_fields,
			    sizeof(join_fields) / sizeof(join_fields[0]),
			    "join", s);
}

static int env_name_ok(const char *k)
{
	size_t i;

	if (!is_alpha(k[0]) && k[0] != '_')
		return 0;
	for (i = 1; k[i]; i++)
		if (!is_alpha(k[i]) && !is_digit(k[i]) && k[i] != '_')
			return 0;
	return 1;
}

static int f_env(struct ctx *c, const cJSON *n, size_t idx, struct spec *s)
{
	const cJSON *e;
	size_t count = 0, i, ei;
	char b[SHOW_BUF], name[SHOW_BUF + 8], *kv;
	int rc;

	if (!cJSON_IsObject(n))
		return bad_value(c, n, idx, "env", "an object of strings");
	rc = check_duplicates(c, n, "env");
	if (rc)
		return rc;
	for (e = n->child; e; e = e->next)
		count++;
	if (!count)
		return 0;
	s->env = calloc(count + 1, sizeof(*s->env));
	if (!s->env)
		return no_memory(c);
	for (i = 0, ei = idx + 1, e = n->child; e;
	     i++, ei += c->v[ei].count, e = e->next) {
		show_key(e->string, b, sizeof(b));
		if (!env_name_ok(e->string))
			return fail(c, -EINVAL, "'env' key '%s' is not a variable "
				    "name (letters, digits and '_', not "
				    "starting with a digit)", b);
		if (!strncmp(e->string, "JOBFS_", 6))
			return fail(c, -EINVAL, "'env' key '%s' is reserved "
				    "(names starting with JOBFS_ are set by "
				    "jobfs)", b);
		snprintf(name, sizeof(name), "env.%s", b);
		if (!cJSON_IsString(e))
			return bad_value(c, e, ei, name, "a string");
		if (c->v[ei].has_nul)
			return fail(c, -EINVAL, "'%s' must not contain NUL "
				    "(\\u0000)", name);
		kv = malloc(strlen(e->string) + 1 + strlen(e->valuestring) + 1);
		if (!kv)
			return no_memory(c);
		strcpy(kv, e->string);
		strcat(kv, "=");
		strcat(kv, e->valuestring);
		s->env[i] = kv;
	}
	return 0;
}

/* params may be anything, but cJSON must be able to print it back as it
 * was: no duplicate keys, no \u0000, no number beyond a double. */
static int check_params(struct ctx *c, const cJSON *n, size_t idx)
{
	const cJSON *e;
	size_t ei;
	char b[SHOW_BUF];
	int rc;

	if (cJSON_IsString(n) && c->v[idx].has_nul)
		return fail(c, -EINVAL, "'params' must not contain NUL "
			    "(\\u0000), got %s", show_value(c, n, idx, b,
							     sizeof(b)));
	if (cJSON_IsNumber(n) && !isfinite(n->valuedouble))
		return fail(c, -EINVAL, "'params' holds a number too large "
			    "for a double: %s", show_value(c, n, idx, b,
							   sizeof(b)));
	if (cJSON_IsObject(n)) {
		rc = check_duplicates(c, n, "params");
		if (rc)
			return rc;
	}
	for (ei = idx + 1, e = n->child; e; ei += c->v[ei].count, e = e->next) {
		rc = check_params(c, e, ei);
		if (rc)
			return rc;
	}
	return 0;
}

static int f_params(struct ctx *c, const cJSON *n, size_t idx,
		    struct spec *s)
{
	int rc = check_params(c, n, idx);

	if (rc)
		return rc;
	s->params = print_compact(n);
	return s->params ? 0 : no_memory(c);
}

static int f_priority(struct ctx *c, const cJSON *n, size_t idx,
		      struct spec *s)
{
	return want_i64(c, n, idx, "priority", "an integer from "
			"-9223372036854775808 to 9223372036854775807",
			&s->priority);
}

static int f_max_output(struct ctx *c, const cJSON *n, size_t idx,
			struct spec *s)
{
	return want_u64(c, n, idx, "max_output", "an integer number of bytes "
			">= 0 (0 = no cap)", 0, UINT64_MAX, &s->max_output);
}

static int f_max_procs(struct ctx *c, const cJSON *n, size_t idx,
		       struct spec *s)
{
	uint64_t v;
	int rc = want_u64(c, n, idx, "max_procs", "an integer from 0 to "
			  "1000000 (0 = no cap)", 0, 1000000, &v);

	if (!rc)
		s->max_procs = (uint32_t)v;
	return rc;
}

static const struct field top_fields[] = {
	{ "command", f_command },
	{ "chunking", f_chunking },
	{ "parallel", f_parallel },
	{ "attempts", f_attempts },
	{ "backoff", f_backoff },
	{ "timeout", f_timeout },
	{ "no_retry", f_no_retry },
	{ "ext", f_ext },
	{ "output", f_output },
	{ "join", f_join },
	{ "env", f_env },
	{ "params", f_params },
	{ "priority", f_priority },
	{ "max_output", f_max_output },
	{ "max_procs", f_max_procs },
};

/*
 * Parse and check a spec; see spec.h. Borrows text; on success *out owns
 * its strings and arrays until spec_release().
 */
int spec_parse(const char *text, size_t len, struct spec *out,
	       char *err, size_t errlen)
{
	struct scan sc;
	struct ctx c = { text, NULL, err, errlen };
	struct spec s;
	cJSON *root;
	char b[SHOW_BUF];
	size_t line, col;
	int rc;

	memset(out, 0, sizeof(*out));
	memset(&sc, 0, sizeof(sc));
	memset(&s, 0, sizeof(s));
	if (err && errlen)
		err[0] = '\0';
	if (!text)
		len = 0;
	if (len > SPEC_MAX_BYTES)
		return fail(&c, -E2BIG, "%zu bytes, more than the %d allowed",
			    len, SPEC_MAX_BYTES);
	if (is_blank(text, len))
		return fail(&c, -EINVAL, "empty");

	sc.p = text;
	sc.len = len;
	rc = scan_text(&sc);
	if (rc == -ENOMEM) {
		rc = no_memory(&c);
		goto free_scan;
	}
	if (rc) {
		line_col(text, sc.err_pos, &line, &col);
		rc = fail(&c, rc, "line %zu, column %zu: %s", line, col,
			  sc.what);
		goto free_scan;
	}
	c.v = sc.v;

	/* By invariant 2 only a failed allocation makes cJSON fail here. */
	root = cJSON_ParseWithLengthOpts(text, len, NULL, 0);
	if (!root) {
		rc = no_memory(&c);
		goto free_scan;
	}
	if (!cJSON_IsObject(root)) {
		rc = fail(&c, -EINVAL, "the top level must be an object, got %s",
			  show_value(&c, root, 0, b, sizeof(b)));
		goto free_tree;
	}

	s.by = CHUNK_BY_PARAGRAPH;
	s.parallel = 1;
	s.attempts = 3;
	s.max_procs = SPEC_DEFAULT_MAX_PROCS;
	s.backoff_initial = 1;
	s.backoff_factor = 2;
	s.backoff_max = 60;
	s.ext[0] = '\0';  /* unset: the default depends on output */
	s.output = SPEC_OUTPUT_CONCAT;
	rc = parse_object(&c, root, 0, top_fields,
			  sizeof(top_fields) / sizeof(top_fields[0]), NULL, &s);
	if (!rc && !s.shell && !s.argv)
		rc = fail(&c, -EINVAL, "'command' is required");
	if (!rc && SPEC_IS_AUDIO(s.output) && s.ext[0] &&
	    strcmp(s.ext, "wav"))
		rc = fail(&c, -EINVAL, "'ext' must be \"wav\" for audio output "
			  "(the chunks are WAV files), got \"%s\"", s.ext);
	if (!rc && !SPEC_IS_AUDIO(s.output) && s.gap_ms)
		rc = fail(&c, -EINVAL, "'join.gap_ms' applies to audio output "
			  "only (\"output\": \"wav\", \"flac\" or \"ogg\")");
	if (!rc && !s.ext[0])
		strcpy(s.ext, SPEC_IS_AUDIO(s.output) ? "wav" : "out");
	if (!rc && !s.params) {
		s.params = strdup("null");
		if (!s.params)
			rc = no_memory(&c);
	}
	if (rc)
		spec_release(&s);
	else
		*out = s;
free_tree:
	cJSON_Delete(root);
free_scan:
	free(sc.v);
	return rc;
}

/*
 * Whether text[0, len) is one whole JSON value and then only whitespace.
 * Borrows text, which need not be NUL-terminated.
 */
int spec_is_complete(const char *text, size_t len)
{
	const char *end = NULL;
	cJSON *root;

	if (!text || !len)
		return 0;
	root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
	if (!root)
		return 0;
	cJSON_Delete(root);
	for (; end < text + len; end++)
		if (!is_ws(*end))
			return 0;
	return 1;
}

static void free_strv(char **v)
{
	size_t i;

	if (!v)
		return;
	for (i = 0; v[i]; i++)
		free(v[i]);
	free(v);
}

/* Free what s owns and zero it; safe on a zeroed or released spec. */
void spec_release(struct spec *s)
{
	free(s->shell);
	free_strv(s->argv);
	free(s->no_retry);
	free_strv(s->env);
	free(s->params);
	free(s->command_id);
	memset(s, 0, sizeof(*s));
}

/* Add a 64-bit integer as raw text: a cJSON number is a double and would
 * round values past 2^53. */
static int add_raw_u64(cJSON *o, const char *name, uint64_t v)
{
	char num[32];

	snprintf(num, sizeof(num), "%" PRIu64, v);
	return cJSON_AddRawToObject(o, name, num) != NULL;
}

/*
 * A finite double as the shortest of %.15g, %.16g and %.17g that reads
 * back as the same bits. cJSON's own printer accepts a text that reads
 * back one unit in the last place away, which would make a spec change
 * through spec_to_json() and back.
 */
static int add_raw_double(cJSON *o, const char *name, double v)
{
	char num[40];
	int prec;

	for (prec = 15; prec <= 17; prec++) {
		snprintf(num, sizeof(num), "%.*g", prec, v);
		if (prec == 17 || strtod(num, NULL) == v)
			break;
	}
	return cJSON_AddRawToObject(o, name, num) != NULL;
}

static int add_env(cJSON *root, char *const *env)
{
	cJSON *o = cJSON_AddObjectToObject(root, "env");
	const char *eq;
	char *key;
	size_t i;
	int ok;

	if (!o)
		return 0;
	for (i = 0; env && env[i]; i++) {
		eq = strchr(env[i], '=');
		if (!eq)
			continue;       /* not from spec_parse(); skip */
		key = strndup(env[i], (size_t)(eq - env[i]));
		if (!key)
			return 0;
		ok = cJSON_AddStringToObject(o, key, eq + 1) != NULL;
		free(key);
		if (!ok)
			return 0;
	}
	return 1;
}

/*
 * The spec as compact JSON with every field present, in the order of
 * spec.h; parsing it again gives the same spec. Borrows s; the caller
 * frees the result with free(). NULL when memory runs out.
 */
char *spec_to_json(const struct spec *s)
{
	const char *by = chunker_by_name(s->by);
	cJSON *root = cJSON_CreateObject(), *o;
	char num[32], *json = NULL;
	size_t i;

	if (!root)
		return NULL;
	if (s->argv) {
		o = cJSON_AddArrayToObject(root, "command");
		if (!o)
			goto free_root;
		for (i = 0; s->argv[i]; i++)
			if (!cJSON_AddItemToArray(o, cJSON_CreateString(s->argv[i])))
				goto free_root;
	} else if (s->shell) {
		if (!cJSON_AddStringToObject(root, "command", s->shell))
			goto free_root;
	} else if (!cJSON_AddNullToObject(root, "command")) {
		goto free_root;
	}

	o = cJSON_AddObjectToObject(root, "chunking");
	if (!o || !(by ? cJSON_AddStringToObject(o, "by", by) :
		    cJSON_AddNullToObject(o, "by")) ||
	    !add_raw_u64(o, "max", s->max))
		goto free_root;
	if (!cJSON_AddNumberToObject(root, "parallel", s->parallel) ||
	    !cJSON_AddNumberToObject(root, "attempts", s->attempts))
		goto free_root;
	o = cJSON_AddObjectToObject(root, "backoff");
	if (!o || !add_raw_double(o, "initial", s->backoff_initial) ||
	    !add_raw_double(o, "factor", s->backoff_factor) ||
	    !add_raw_double(o, "max", s->backoff_max) ||
	    !add_raw_double(root, "timeout", s->timeout))
		goto free_root;
	o = cJSON_AddArrayToObject(root, "no_retry");
	if (!o)
		goto free_root;
	for (i = 0; i < s->n_no_retry; i++)
		if (!cJSON_AddItemToArray(o, cJSON_CreateNumber(s->no_retry[i])))
			goto free_root;
	if (!cJSON_AddStringToObject(root, "ext", s->ext) ||
	    !cJSON_AddStringToObject(root, "output",
				     (const char *[]){ "concat", "none", "wav",
						       "flac", "ogg" }
				     [s->output]) ||
	    !(o = cJSON_AddObjectToObject(root, "join")) ||
	    !cJSON_AddNumberToObject(o, "gap_ms", s->gap_ms) ||
	    !add_env(root, s->env))
		goto free_root;
	/* params is already compact JSON text; emitting it raw keeps it byte
	 * for byte. */
	if (!cJSON_AddRawToObject(root, "params", s->params ? s->params : "null"))
		goto free_root;
	snprintf(num, sizeof(num), "%" PRId64, s->priority);
	if (!cJSON_AddRawToObject(root, "priority", num) ||
	    !add_raw_u64(root, "max_output", s->max_output) ||
	    !add_raw_u64(root, "max_procs", s->max_procs))
		goto free_root;
	json = print_compact(root);
free_root:
	cJSON_Delete(root);
	return json;
}
