/*
 * fuzz_spec.c - spec_parse(), spec_to_json() and spec_is_complete() on
 * arbitrary bytes.
 *
 * The input is the text of a spec file, byte for byte. Each run checks:
 *
 *   1. spec_parse() returns 0, -EINVAL, -E2BIG or -ENOMEM, and the same
 *      code for the same text whatever error buffer it is given.
 *   2. On error the message starts with "spec: ", is NUL-terminated inside
 *      the buffer (which is malloc'ed to exactly errlen bytes, so a write
 *      past it is an ASan report), is one line of well-formed UTF-8 with
 *      no C0 control byte, and a smaller buffer gets a prefix of the same
 *      message.
 *   3. On success every field is inside the range spec.h documents,
 *      exactly one of shell/argv is set, ext is valid for the output, env
 *      holds KEY=VALUE entries, params and command_id are what they
 *      claim to be.
 *   4. spec_to_json() of the result parses again, gives an equal struct,
 *      and prints the same text (the manifest and status.json depend on
 *      this being a fixed point).
 *   5. spec_is_complete() says what cJSON says about the text being one
 *      value followed only by whitespace, and says "complete" for every
 *      text whose syntax spec_parse() accepted (invariant 2 of spec.c).
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fuzz.h"
#include "spec.h"

#define ERR_BIG 512

struct parsed {
	int rc;
	struct spec s;
	char *err;      /* malloc'ed, errlen bytes */
	size_t errlen;
};

/*
 * Fill the stack below us with 0xfe, a byte that is never UTF-8 and never
 * NUL, before each parse: a message built from an uninitialized buffer
 * then fails the UTF-8 check, or runs off the buffer into ASan's red zone,
 * every time instead of by luck. That is how bad_choice() was caught
 * printing a buffer it had not filled (docs/fuzzing.md).
 */
static __attribute__((noinline)) void paint_stack(void)
{
	unsigned char a[8192];  /* deeper than spec_parse() goes */

	memset(a, 0xfe, sizeof(a));
	/* the compiler must believe the bytes are used */
	__asm__ volatile("" : : "r"(a) : "memory");
}

static void parse(const char *text, size_t len, size_t errlen,
		  struct parsed *p)
{
	paint_stack();
	p->errlen = errlen;
	p->err = errlen ? malloc(errlen) : NULL;
	FUZZ_CHECK(!errlen || p->err, "malloc(%zu) failed", errlen);
	if (p->err)
		memset(p->err, 'X', errlen); /* no NUL unless spec_parse puts one */
	p->rc = spec_parse(text, len, &p->s, p->err, errlen);
}

static void parsed_release(struct parsed *p)
{
	spec_release(&p->s);
	free(p->err);
	p->err = NULL;
}

static bool all_zero(const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

/* Invariant 2 for one error message. */
static void check_message(const struct parsed *p)
{
	const char *nul;
	size_t len;

	FUZZ_CHECK(all_zero(&p->s, sizeof(p->s)),
		   "*out is not zeroed after an error (rc %d)", p->rc);
	if (!p->errlen)
		return;
	nul = memchr(p->err, '\0', p->errlen);
	FUZZ_CHECK(nul, "error message not NUL-terminated inside its %zu-byte "
		   "buffer", p->errlen);
	len = (size_t)(nul - p->err);
	if (p->errlen > 6) {
		FUZZ_CHECK(!strncmp(p->err, "spec: ", 6),
			   "message does not start with \"spec: \": '%s'",
			   p->err);
	} else {
		FUZZ_CHECK(!strncmp(p->err, "spec: ", len),
			   "short message is not a prefix of \"spec: \": '%s'",
			   p->err);
	}
	if (p->errlen == ERR_BIG) {
		FUZZ_CHECK(len > 6, "empty message: '%s'", p->err);
		FUZZ_CHECK(len < ERR_BIG - 1, "message filled %d bytes",
			   ERR_BIG);
		FUZZ_CHECK(fuzz_utf8_valid(p->err, len),
			   "message is not well-formed UTF-8: '%s'", p->err);
	}
	/* One line, no C0 control byte. DEL (0x7f) is let through: JSON
	 * allows it raw in a string, and a quoted value shows it as written
	 * (show_key() turns it into '?' in keys; values are left alone). */
	for (size_t i = 0; i < len; i++)
		FUZZ_CHECK((unsigned char)p->err[i] >= 0x20,
			   "control byte 0x%02x at %zu in message '%s'",
			   (unsigned char)p->err[i], i, p->err);
}

static bool name_ok(const char *k, size_t n)
{
	if (n == 0 || !((k[0] >= 'A' && k[0] <= 'Z') ||
			(k[0] >= 'a' && k[0] <= 'z') || k[0] == '_'))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!((k[i] >= 'A' && k[i] <= 'Z') ||
		      (k[i] >= 'a' && k[i] <= 'z') ||
		      (k[i] >= '0' && k[i] <= '9') || k[i] == '_'))
			return false;
	return true;
}

static bool seconds_ok(double v)
{
	return isfinite(v) && v >= 0 && v <= 1e9;
}

/* Invariant 3. */
static void check_fields(const struct spec *s)
{
	size_t i, n;

	FUZZ_CHECK(!s->shell != !s->argv, "shell %p and argv %p: exactly one "
		   "must be set", (void *)s->shell, (void *)s->argv);
	FUZZ_CHECK(s->command_id, "no command_id");
	if (s->shell) {
		FUZZ_CHECK(s->shell[0], "empty shell command");
		FUZZ_CHECK(!strncmp(s->command_id, "sh:", 3) &&
			   !strcmp(s->command_id + 3, s->shell),
			   "command_id '%s' for shell '%s'", s->command_id,
			   s->shell);
	} else {
		cJSON *a;

		FUZZ_CHECK(s->argv[0], "argv is empty");
		FUZZ_CHECK(!strncmp(s->command_id, "argv:", 5),
			   "command_id '%s' for an argv", s->command_id);
		a = cJSON_Parse(s->command_id + 5);
		FUZZ_CHECK(cJSON_IsArray(a), "command_id '%s' holds no array",
			   s->command_id);
		n = (size_t)cJSON_GetArraySize(a);
		for (i = 0; s->argv[i]; i++) {
			cJSON *e = cJSON_GetArrayItem(a, (int)i);

			FUZZ_CHECK(s->argv[i][0], "argv[%zu] is empty", i);
			FUZZ_CHECK(cJSON_IsString(e) &&
				   !strcmp(e->valuestring, s->argv[i]),
				   "command_id '%s' differs from argv[%zu] '%s'",
				   s->command_id, i, s->argv[i]);
		}
		FUZZ_CHECK(i == n, "argv has %zu words, command_id %zu", i, n);
		cJSON_Delete(a);
	}

	FUZZ_CHECK(chunker_by_name(s->by), "chunking.by %d", (int)s->by);
	FUZZ_CHECK(!(s->by == CHUNK_BY_BYTES && s->max == 0),
		   "bytes with max 0");
	FUZZ_CHECK(!((s->by == CHUNK_BY_LINE || s->by == CHUNK_BY_WHOLE) &&
		     s->max), "%s with max %llu", chunker_by_name(s->by),
		   (unsigned long long)s->max);
	FUZZ_CHECK(s->parallel >= 1 && s->parallel <= SPEC_MAX_PARALLEL,
		   "parallel %u", s->parallel);
	FUZZ_CHECK(s->attempts >= 1 && s->attempts <= SPEC_MAX_ATTEMPTS,
		   "attempts %u", s->attempts);
	FUZZ_CHECK(seconds_ok(s->backoff_initial), "backoff.initial %g",
		   s->backoff_initial);
	FUZZ_CHECK(seconds_ok(s->backoff_max), "backoff.max %g",
		   s->backoff_max);
	FUZZ_CHECK(s->backoff_max >= s->backoff_initial,
		   "backoff.max %g < backoff.initial %g", s->backoff_max,
		   s->backoff_initial);
	FUZZ_CHECK(isfinite(s->backoff_factor) && s->backoff_factor >= 1,
		   "backoff.factor %g", s->backoff_factor);
	FUZZ_CHECK(seconds_ok(s->timeout), "timeout %g", s->timeout);
	FUZZ_CHECK(!s->no_retry == !s->n_no_retry, "no_retry %p with %zu codes",
		   (void *)s->no_retry, s->n_no_retry);
	for (i = 0; i < s->n_no_retry; i++)
		FUZZ_CHECK(s->no_retry[i] >= 0 && s->no_retry[i] <= 255,
			   "no_retry[%zu] = %d", i, s->no_retry[i]);

	n = strnlen(s->ext, sizeof(s->ext));
	FUZZ_CHECK(n >= 1 && n <= SPEC_MAX_EXT, "ext of %zu bytes", n);
	for (i = 0; i < n; i++)
		FUZZ_CHECK((s->ext[i] >= 'A' && s->ext[i] <= 'Z') ||
			   (s->ext[i] >= 'a' && s->ext[i] <= 'z') ||
			   (s->ext[i] >= '0' && s->ext[i] <= '9'),
			   "ext '%s'", s->ext);
	FUZZ_CHECK((unsigned)s->output <= SPEC_OUTPUT_OGG, "output %d",
		   (int)s->output);
	if (SPEC_IS_AUDIO(s->output))
		FUZZ_CHECK(!strcmp(s->ext, "wav"), "audio output with ext '%s'",
			   s->ext);
	FUZZ_CHECK(s->gap_ms <= SPEC_MAX_GAP_MS, "gap_ms %u",
		   (unsigned)s->gap_ms);
	FUZZ_CHECK(SPEC_IS_AUDIO(s->output) || !s->gap_ms,
		   "gap_ms %u on non-audio output", (unsigned)s->gap_ms);
	FUZZ_CHECK((spec_encoded_ext(s->output) != NULL) ==
		   (s->output == SPEC_OUTPUT_FLAC ||
		    s->output == SPEC_OUTPUT_OGG),
		   "spec_encoded_ext(%d)", (int)s->output);

	for (i = 0; s->env && s->env[i]; i++) {
		const char *eq = strchr(s->env[i], '=');

		FUZZ_CHECK(eq && name_ok(s->env[i], (size_t)(eq - s->env[i])),
			   "env entry '%s'", s->env[i]);
		FUZZ_CHECK(strncmp(s->env[i], "JOBFS_", 6),
			   "reserved env entry '%s'", s->env[i]);
		for (size_t k = 0; k < i; k++) {
			size_t kl = (size_t)(eq - s->env[i]);

			FUZZ_CHECK(strncmp(s->env[k], s->env[i], kl) ||
				   s->env[k][kl] != '=',
				   "env key of '%s' twice", s->env[i]);
		}
	}
	FUZZ_CHECK(!s->env || s->env[0], "env is an empty array, not NULL");

	FUZZ_CHECK(s->params, "params is NULL");
	{
		cJSON *p = cJSON_Parse(s->params);
		char *again;

		FUZZ_CHECK(p, "params '%s' is not JSON", s->params);
		again = cJSON_PrintUnformatted(p);
		FUZZ_CHECK(again && !strcmp(again, s->params),
			   "params '%s' is not compact cJSON text (reprinted "
			   "'%s')", s->params, again ? again : "(null)");
		cJSON_free(again);
		cJSON_Delete(p);
	}
}

static bool strv_equal(char *const *a, char *const *b)
{
	size_t i;

	if (!a || !b)
		return a == b;
	for (i = 0; a[i] && b[i]; i++)
		if (strcmp(a[i], b[i]))
			return false;
	return !a[i] && !b[i];
}

/* The struct fields that spec_to_json() carries. */
static void check_same(const struct spec *a, const struct spec *b,
		       const char *json)
{
	FUZZ_CHECK((!a->shell && !b->shell) ||
		   (a->shell && b->shell && !strcmp(a->shell, b->shell)),
		   "shell changed through %s", json);
	FUZZ_CHECK(strv_equal(a->argv, b->argv), "argv changed through %s",
		   json);
	FUZZ_CHECK(!strcmp(a->command_id, b->command_id),
		   "command_id '%s' became '%s' through %s", a->command_id,
		   b->command_id, json);
	FUZZ_CHECK(a->by == b->by && a->max == b->max,
		   "chunking changed through %s", json);
	FUZZ_CHECK(a->parallel == b->parallel && a->attempts == b->attempts,
		   "parallel/attempts changed through %s", json);
	FUZZ_CHECK(a->backoff_initial == b->backoff_initial &&
		   a->backoff_factor == b->backoff_factor &&
		   a->backoff_max == b->backoff_max &&
		   a->timeout == b->timeout,
		   "backoff or timeout changed through %s "
		   "(%.17g %.17g %.17g %.17g -> %.17g %.17g %.17g %.17g)", json,
		   a->backoff_initial, a->backoff_factor, a->backoff_max,
		   a->timeout, b->backoff_initial, b->backoff_factor,
		   b->backoff_max, b->timeout);
	FUZZ_CHECK(a->n_no_retry == b->n_no_retry &&
		   (!a->n_no_retry || !memcmp(a->no_retry, b->no_retry,
					      a->n_no_retry *
					      sizeof(*a->no_retry))),
		   "no_retry changed through %s", json);
	FUZZ_CHECK(!strcmp(a->ext, b->ext) && a->output == b->output &&
		   a->gap_ms == b->gap_ms,
		   "ext/output/gap changed through %s", json);
	FUZZ_CHECK(strv_equal(a->env, b->env), "env changed through %s", json);
	FUZZ_CHECK(!strcmp(a->params, b->params),
		   "params '%s' became '%s' through %s", a->params, b->params,
		   json);
	FUZZ_CHECK(a->priority == b->priority &&
		   a->max_output == b->max_output &&
		   a->max_procs == b->max_procs,
		   "priority/max_output/max_procs changed through %s", json);
}

/* Invariant 4. */
static void check_round_trip(const struct spec *s)
{
	struct parsed p2 = { 0 };
	char *j1, *j2;

	j1 = spec_to_json(s);
	FUZZ_CHECK(j1, "spec_to_json returned NULL");
	parse(j1, strlen(j1), ERR_BIG, &p2);
	FUZZ_CHECK(p2.rc == 0, "spec_to_json output does not parse (%d: %s): "
		   "%s", p2.rc, p2.err, j1);
	check_fields(&p2.s);
	check_same(s, &p2.s, j1);
	j2 = spec_to_json(&p2.s);
	FUZZ_CHECK(j2 && !strcmp(j1, j2), "spec_to_json is not a fixed point:"
		   "\n  %s\n  %s", j1, j2 ? j2 : "(null)");
	FUZZ_CHECK(spec_is_complete(j1, strlen(j1)) == 1,
		   "spec_to_json output is not complete: %s", j1);
	free(j1);
	free(j2);
	parsed_release(&p2);
}

/* Invariant 5: cJSON's own view of completeness. */
static int cjson_complete(const char *text, size_t len)
{
	const char *end = NULL;
	cJSON *root;

	if (!len)
		return 0;
	root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
	if (!root)
		return 0;
	cJSON_Delete(root);
	for (; end < text + len; end++)
		if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r')
			return 0;
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct parsed big = { 0 }, small = { 0 }, none = { 0 };
	/* An exact-size copy: a read past len is an ASan report, which a
	 * pointer into libFuzzer's buffer would not always be. */
	char *text = malloc(size ? size : 1);
	size_t small_len = 1 + (size_t)(fuzz_seed(data, size) % 40);
	int complete;

	FUZZ_CHECK(text, "malloc");
	memcpy(text, data, size);

	parse(text, size, ERR_BIG, &big);
	FUZZ_CHECK(big.rc == 0 || big.rc == -EINVAL || big.rc == -E2BIG ||
		   big.rc == -ENOMEM, "spec_parse returned %d", big.rc);
	FUZZ_CHECK((size > SPEC_MAX_BYTES) == (big.rc == -E2BIG),
		   "%zu bytes gave %d", size, big.rc);

	parse(text, size, small_len, &small);
	parse(text, size, 0, &none);
	FUZZ_CHECK(small.rc == big.rc && none.rc == big.rc,
		   "rc depends on the error buffer: %d, %d, %d", big.rc,
		   small.rc, none.rc);

	if (big.rc) {
		size_t n;

		check_message(&big);
		check_message(&small);
		check_message(&none);
		n = strlen(big.err);
		if (n > small_len - 1)
			n = small_len - 1;
		FUZZ_CHECK(strlen(small.err) == n && !memcmp(small.err, big.err, n),
			   "a %zu-byte buffer got '%s', not a prefix of '%s'",
			   small_len, small.err, big.err);
	} else {
		check_fields(&big.s);
		check_round_trip(&big.s);
	}

	complete = spec_is_complete(text, size);
	FUZZ_CHECK(complete == 0 || complete == 1, "spec_is_complete %d",
		   complete);
	FUZZ_CHECK(complete == cjson_complete(text, size),
		   "spec_is_complete says %d, cJSON says %d", complete,
		   !complete);
	/* Syntax errors are the ones with a line and column, and "empty";
	 * any other outcome means the strict scanner accepted the text. */
	if (big.rc != -E2BIG && strncmp(big.err, "spec: line ", 11) &&
	    strcmp(big.err, "spec: empty") && big.rc != -ENOMEM)
		FUZZ_CHECK(complete, "spec_parse got past the syntax (%d: '%s') "
			   "but spec_is_complete says the text is incomplete",
			   big.rc, big.err);

	parsed_release(&big);
	parsed_release(&small);
	parsed_release(&none);
	free(text);
	return 0;
}
