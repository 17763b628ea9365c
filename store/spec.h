/*
 * spec.h - the job definition written to NAME/spec.
 *
 * A spec is JSON parsed with cJSON and checked strictly: unknown keys and
 * wrong types are errors, so a typo such as "atempts" never passes
 * silently. A parsed spec is a plain struct owned by the caller and freed
 * with spec_release().
 */
#ifndef JOBFS_SPEC_H
#define JOBFS_SPEC_H

#include <stddef.h>
#include <stdint.h>

#include "chunker.h"

#define SPEC_MAX_BYTES (64 * 1024)   /* larger specs are rejected */
#define SPEC_MAX_PARALLEL 256
#define SPEC_MAX_ATTEMPTS 1000
#define SPEC_DEFAULT_MAX_PROCS 1024
#define SPEC_MAX_EXT 16

enum spec_output {
	SPEC_OUTPUT_CONCAT = 0, /* default: output.EXT = chunks joined */
	SPEC_OUTPUT_NONE,       /* no output.EXT file */
	SPEC_OUTPUT_WAV,        /* audio chunks, checked; output.wav */
	SPEC_OUTPUT_FLAC,       /* ... and output.flac when done */
	SPEC_OUTPUT_OGG,        /* ... and output.ogg when done */
};

#define SPEC_MAX_GAP_MS 60000

/* Whether chunks of this output are audio (WAV) chunks. */
#define SPEC_IS_AUDIO(o) ((o) >= SPEC_OUTPUT_WAV)

/* The name of an output's encoded file ("flac", "ogg"), or NULL. */
const char *spec_encoded_ext(enum spec_output o);

struct spec {
	/* Exactly one of shell/argv is set. shell is run as /bin/sh -c shell;
	 * argv is NULL-terminated and exec'd directly (argv[0] searched in
	 * PATH). */
	char *shell;
	char **argv;

	enum chunk_by by;      /* chunking.by, default paragraph */
	uint64_t max;          /* chunking.max, 0 = none */

	unsigned parallel;     /* default 1, 1..SPEC_MAX_PARALLEL */
	unsigned attempts;     /* default 3, 1..SPEC_MAX_ATTEMPTS */
	double backoff_initial; /* seconds, default 1 */
	double backoff_factor;  /* default 2, >= 1 */
	double backoff_max;     /* seconds, default 60, >= initial */
	double timeout;         /* seconds per attempt, 0 = none (default) */
	int *no_retry;          /* exit codes that fail at once */
	size_t n_no_retry;

	char ext[SPEC_MAX_EXT + 1]; /* default "out" ("wav" for audio);
				     * [A-Za-z0-9]{1,16} */
	enum spec_output output;
	uint32_t gap_ms;        /* join.gap_ms: silence between audio chunks */

	char **env;             /* "KEY=VALUE", NULL-terminated, may be NULL */
	char *params;           /* compact JSON text of params, "null" if absent */
	int64_t priority;       /* default 0; higher starts first */
	uint64_t max_output;    /* bytes per attempt's output, 0 = no cap */
	uint32_t max_procs;     /* processes and threads of one attempt's
				 * tree, default SPEC_DEFAULT_MAX_PROCS,
				 * 0 = no cap */

	/* Canonical text of the command, part of every chunk's identity:
	 * "sh:" followed by the shell string, or "argv:" followed by the
	 * compact JSON array. */
	char *command_id;
};

/*
 * Parse and check len bytes of JSON text. On success fills *out (which the
 * caller later frees with spec_release()) and returns 0. On failure returns
 * -EINVAL, leaves *out zeroed, and writes a one-line message into err
 * (errlen bytes, always NUL-terminated) that says what is wrong and where:
 *   "spec: line 3, column 14: expected ',' or '}'"
 *   "spec: unknown key 'atempts' (did you mean 'attempts'?)"
 *   "spec: 'parallel' must be an integer from 1 to 256, got 0"
 * Returns -E2BIG (with a message) when len > SPEC_MAX_BYTES.
 */
int spec_parse(const char *text, size_t len, struct spec *out,
	       char *err, size_t errlen);

/*
 * Tell whether text[0, len) parses as one JSON value followed only by
 * whitespace, so that a writer can judge a spec on write(2) before close.
 * Returns 1 if so, else 0 (more writes may still complete it).
 */
int spec_is_complete(const char *text, size_t len);

/* Free everything a parsed spec owns and zero it. Safe on a zeroed spec. */
void spec_release(struct spec *s);

/* The same spec as compact JSON with every default filled in (for the
 * manifest and status.json). Caller frees with free(). NULL on ENOMEM. */
char *spec_to_json(const struct spec *s);

#endif
