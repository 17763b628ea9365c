/*
 * fuzz_verbs.c - the control-write grammar (store/control.c) on its own,
 * at full speed; fuzz_control drives the same writes through a real
 * engine, much more slowly.
 *
 * Input: two bytes give the job's number of chunks (0-65535), the rest is
 * one write. Checked after every parse:
 *
 *   1. the return is 0 or -EINVAL (-ENOMEM cannot happen: a list never
 *      names more chunks than the job has);
 *   2. on -EINVAL the reason is non-empty, one line, NUL-terminated
 *      inside the buffer, free of C0 control bytes, and no list is kept;
 *   3. on 0, the write with its surrounding blanks and newline removed
 *      begins with the verb's name, followed by nothing or a blank; only
 *      "retry" has a list, and its list is non-empty, at most nchunks
 *      long, every number in 1..nchunks;
 *   4. a retry list written back as "retry a-b,c" (runs of consecutive
 *      numbers as ranges, so never longer than the write) parses to the
 *      same list, and the write with one trailing newline added parses to the
 *      same command (what echo adds changes nothing);
 *   5. every verb other than retry is accepted alone, and refused with
 *      an argument after it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "control.h"
#include "fuzz.h"

static void check_reason(const char *err, size_t errlen)
{
	size_t n = strnlen(err, errlen);

	FUZZ_CHECK(n > 0 && n < errlen, "reason empty or unterminated");
	for (size_t i = 0; i < n; i++)
		FUZZ_CHECK((unsigned char)err[i] >= 0x20,
			   "control byte 0x%02x in reason '%s'",
			   (unsigned char)err[i], err);
}

static int same(const struct ctl_cmd *a, const struct ctl_cmd *b)
{
	return a->verb == b->verb && a->count == b->count &&
	       (!a->count || !memcmp(a->list, b->list,
				     a->count * sizeof(*a->list)));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctl_cmd cmd, again;
	char err[400], *w, *back;
	const char *name, *p;
	uint32_t nchunks;
	size_t n, len, blen;
	int rc;

	if (size < 2)
		return 0;
	nchunks = (uint32_t)data[0] << 8 | data[1];
	w = (char *)data + 2;
	len = size - 2;

	memset(err, 0x55, sizeof(err));
	rc = control_parse(w, len, nchunks, &cmd, err, sizeof(err));
	FUZZ_CHECK(rc == 0 || rc == -EINVAL, "control_parse returned %d", rc);
	if (rc) {
		check_reason(err, sizeof(err));
		FUZZ_CHECK(!cmd.list && !cmd.count, "list kept on refusal");
		return 0;
	}

	/* 3: the verb is what the write says. */
	name = control_verb_name(cmd.verb);
	n = len;
	while (n && (w[n - 1] == '\n' || w[n - 1] == '\r' ||
		     w[n - 1] == ' ' || w[n - 1] == '\t'))
		n--;
	p = w;
	while (p < w + n && (*p == ' ' || *p == '\t'))
		p++;
	FUZZ_CHECK((size_t)(w + n - p) >= strlen(name) &&
		   !memcmp(p, name, strlen(name)),
		   "accepted as '%s': '%.*s'", name, (int)n, w);
	p += strlen(name);
	FUZZ_CHECK(p == w + n || *p == ' ' || *p == '\t',
		   "verb '%s' runs on in '%.*s'", name, (int)n, w);
	if (cmd.verb != CTL_RETRY) {
		FUZZ_CHECK(!cmd.list && !cmd.count, "%s has a list", name);
		FUZZ_CHECK(p == w + n, "%s accepted an argument", name);
	} else {
		FUZZ_CHECK(cmd.count >= 1 && cmd.count <= nchunks,
			   "retry list of %zu chunks, job has %u", cmd.count,
			   nchunks);
		for (size_t i = 0; i < cmd.count; i++)
			FUZZ_CHECK(cmd.list[i] >= 1 && cmd.list[i] <= nchunks,
				   "chunk %u outside 1-%u", cmd.list[i],
				   nchunks);
	}

	/* 4: round trips. */
	blen = 16 + cmd.count * 12;
	back = malloc(blen > len + 2 ? blen : len + 2);
	FUZZ_CHECK(back, "malloc");
	if (cmd.verb == CTL_RETRY) {
		size_t k = (size_t)sprintf(back, "retry ");

		for (size_t i = 0; i < cmd.count; i++) {
			size_t e = i;

			while (e + 1 < cmd.count &&
			       cmd.list[e + 1] == cmd.list[e] + 1)
				e++;
			k += (size_t)sprintf(back + k, "%s%u", i ? "," : "",
					     cmd.list[i]);
			if (e > i)
				k += (size_t)sprintf(back + k, "-%u",
						     cmd.list[e]);
			i = e;
		}
		rc = control_parse(back, k, nchunks, &again, err, sizeof(err));
		FUZZ_CHECK(rc == 0 && same(&cmd, &again),
			   "'%s' does not parse back (%d: %s)", back, rc,
			   rc ? err : "different list");
		control_free(&again);
	}
	memcpy(back, w, len);
	back[len] = '\n';
	rc = control_parse(back, len + 1, nchunks, &again, err, sizeof(err));
	if (!memchr(w, '\n', len))
		FUZZ_CHECK(rc == 0 && same(&cmd, &again),
			   "a trailing newline changed the command");
	if (!rc)
		control_free(&again);

	/* 5: the verb alone, and with an argument. */
	if (cmd.verb != CTL_RETRY) {
		rc = control_parse(name, strlen(name), nchunks, &again, err,
				   sizeof(err));
		FUZZ_CHECK(rc == 0 && again.verb == cmd.verb,
			   "'%s' alone refused", name);
		sprintf(back, "%s x", name);
		rc = control_parse(back, strlen(back), nchunks, &again, err,
				   sizeof(err));
		FUZZ_CHECK(rc == -EINVAL, "'%s' accepted", back);
		check_reason(err, sizeof(err));
	}
	free(back);
	control_free(&cmd);
	return 0;
}
