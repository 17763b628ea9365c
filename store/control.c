/*
 * control.c - parse one write to a control file (see control.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"

static const char *const names[] = {
	[CTL_START] = "start",
	[CTL_RESUME] = "resume",
	[CTL_PAUSE] = "pause",
	[CTL_CANCEL] = "cancel",
	[CTL_RETRY_FAILED] = "retry-failed",
	[CTL_RETRY] = "retry",
	[CTL_RESET] = "reset",
	[CTL_VERIFY] = "verify",
};

#define NVERBS (sizeof(names) / sizeof(names[0]))

const char *control_verb_name(enum ctl_verb v)
{
	return (size_t)v < NVERBS ? names[v] : "?";
}

static int is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* A decimal number, saturating at UINT64_MAX (then out of range anyway). */
static uint64_t number(const char **pp)
{
	const char *p = *pp;
	uint64_t v = 0;

	while (is_digit(*p)) {
		unsigned d = (unsigned)(*p++ - '0');

		v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
	}
	*pp = p;
	return v;
}

/* Printable copy of at most 60 bytes of s for an error message. */
static void shown(char *out, size_t outlen, const char *s, size_t n)
{
	size_t k = n < 60 ? n : 60;

	if (k >= outlen)
		k = outlen - 1;
	for (size_t i = 0; i < k; i++)
		out[i] = (unsigned char)s[i] < 0x20 ? '?' : s[i];
	out[k] = '\0';
	if (n > k && outlen > k + 3)
		strcpy(out + k, "...");
}

/* Parse "3-5,9": every range checked before anything is expanded. */
static int parse_list(const char *s, uint32_t nchunks, struct ctl_cmd *cmd,
		      char *err, size_t errlen)
{
	char what[80];
	const char *p = s;
	uint64_t total = 0;
	size_t n = 0;

	shown(what, sizeof(what), s, strlen(s));
	for (int pass = 0; pass < 2; pass++) {
		p = s;
		while (*p) {
			uint64_t a, b;

			if (!is_digit(*p))
				goto bad;
			a = b = number(&p);
			if (*p == '-') {
				p++;
				if (!is_digit(*p))
					goto bad;
				b = number(&p);
			}
			if (*p == ',' && p[1])
				p++;
			else if (*p)
				goto bad;
			if (a < 1 || b < a || b > nchunks) {
				snprintf(err, errlen, "retry: chunk %s is out "
					 "of range 1-%" PRIu32, what, nchunks);
				return -EINVAL;
			}
			if (pass == 0) {
				total += b - a + 1;
				continue;
			}
			for (uint64_t k = a; k <= b; k++)
				cmd->list[n++] = (uint32_t)k;
		}
		if (pass == 0) {
			if (total > nchunks) {
				snprintf(err, errlen, "retry: '%s' names %" PRIu64
					 " chunks, more than the job's %" PRIu32
					 " (a chunk named twice?)", what, total,
					 nchunks);
				return -EINVAL;
			}
			cmd->list = malloc((size_t)total * sizeof(uint32_t));
			if (!cmd->list)
				return -ENOMEM;
		}
	}
	cmd->count = n;
	return 0;
bad:
	snprintf(err, errlen, "retry: bad chunk list '%s' (want N, N-M or a "
		 "comma list of them)", what);
	return -EINVAL;
}

int control_parse(const char *buf, size_t len, uint32_t nchunks,
		  struct ctl_cmd *cmd, char *err, size_t errlen)
{
	char verb[64], arg[256];
	size_t n = len, i = 0, k = 0;
	int v = -1;

	memset(cmd, 0, sizeof(*cmd));
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' ||
		     is_blank(buf[n - 1])))
		n--;
	while (i < n && is_blank(buf[i]))
		i++;
	while (i < n && !is_blank(buf[i]) && k < sizeof(verb) - 1)
		verb[k++] = buf[i++];
	verb[k] = '\0';
	while (i < n && is_blank(buf[i]))
		i++;
	k = 0;
	while (i < n && k < sizeof(arg) - 1)
		arg[k++] = buf[i++];
	arg[k] = '\0';
	if (i < n || memchr(buf, '\n', n) || memchr(buf, '\0', n)) {
		snprintf(err, errlen, "control takes one verb per write");
		return -EINVAL;
	}
	for (size_t x = 0; x < NVERBS; x++) {
		if (!strcmp(verb, names[x]))
			v = (int)x;
	}
	if (v < 0) {
		char s[80];

		shown(s, sizeof(s), buf, n);
		snprintf(err, errlen, "unknown control verb '%s' (read control "
			 "for the list)", s);
		return -EINVAL;
	}
	cmd->verb = (enum ctl_verb)v;
	if (cmd->verb != CTL_RETRY) {
		if (arg[0]) {
			char s[80];

			shown(s, sizeof(s), arg, strlen(arg));
			snprintf(err, errlen, "%s takes no argument, got '%s'",
				 verb, s);
			return -EINVAL;
		}
		return 0;
	}
	if (!arg[0]) {
		snprintf(err, errlen, "retry needs chunk numbers: retry 7, "
			 "retry 3-5,9");
		return -EINVAL;
	}
	return parse_list(arg, nchunks, cmd, err, errlen);
}

void control_free(struct ctl_cmd *cmd)
{
	free(cmd->list);
	cmd->list = NULL;
	cmd->count = 0;
}
