/*
 * wavworker.c - a deterministic text-to-WAV worker for tests.
 *
 * Reads the chunk's text on stdin and writes a WAV file whose samples are
 * derived from a hash of the text (same text, same bytes), written with
 * libsndfile. Its environment makes it misbehave on purpose:
 *
 *   WW_RATE=N          sample rate (22050)          WW_CHANNELS=N (1)
 *   WW_FORMAT=F        pcm16 | pcm24 | float        (pcm16)
 *   WW_MS_PER_CHAR=N   audio length per input byte (10 ms)
 *   WW_FRAMES=N        a fixed number of frames instead
 *   WW_STREAM=1        write placeholder sizes (0x7FFFFFFF) in the RIFF
 *                      and data headers, as espeak-ng --stdout does
 *   WW_TO_FILE=1       write $JOBFS_OUTPUT instead of stdout
 *
 * Failures, for the chunks in WW_CHUNKS ("3,5-7"; default all) and the
 * attempts up to WW_FAIL_ATTEMPTS (default all):
 *   WW_EXIT=N          exit N without output
 *   WW_HANG=1          sleep forever
 *   WW_CRASH=1         die by SIGSEGV
 *   WW_GARBAGE=1       print text instead of audio, exit 0
 *   WW_BROKEN=1        write a header cut short, exit 0
 *   WW_EMPTY=1         a valid WAV with no frames, exit 0
 *   WW_RATE_BAD=N      use rate N instead (a mismatched chunk), exit 0
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sndfile.h>

/* In a sanitizer build of this worker, a deliberate SIGSEGV must still kill
 * it by that signal, as the tests expect; ASan would otherwise catch it and
 * exit 1. (Unused in a normal build.) */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "handle_segv=0";
}

static long env_long(const char *name, long def)
{
	const char *v = getenv(name);

	return v && *v ? strtol(v, NULL, 10) : def;
}

static int in_list(const char *list, long n)
{
	const char *p = list;

	if (!list || !*list)
		return 1;
	while (*p) {
		char *end;
		long a = strtol(p, &end, 10), b = a;

		if (*end == '-')
			b = strtol(end + 1, &end, 10);
		if (n >= a && n <= b)
			return 1;
		p = *end == ',' ? end + 1 : end;
		if (p == end && *p)
			break;
	}
	return 0;
}

static int misbehave(void)
{
	long chunk = env_long("JOBFS_CHUNK", 1);
	long attempt = env_long("JOBFS_ATTEMPT", 1);
	long upto = env_long("WW_FAIL_ATTEMPTS", 0);

	return in_list(getenv("WW_CHUNKS"), chunk) &&
		(upto <= 0 || attempt <= upto);
}

struct mem {
	unsigned char *p;
	sf_count_t len, cap, pos;
};

static sf_count_t m_len(void *u)
{
	return ((struct mem *)u)->len;
}

static sf_count_t m_seek(sf_count_t off, int whence, void *u)
{
	struct mem *m = u;

	m->pos = (whence == SEEK_CUR ? m->pos : whence == SEEK_END ? m->len :
		  0) + off;
	return m->pos;
}

static sf_count_t m_read(void *ptr, sf_count_t n, void *u)
{
	struct mem *m = u;

	if (m->pos >= m->len)
		return 0;
	if (n > m->len - m->pos)
		n = m->len - m->pos;
	memcpy(ptr, m->p + m->pos, (size_t)n);
	m->pos += n;
	return n;
}

static sf_count_t m_write(const void *ptr, sf_count_t n, void *u)
{
	struct mem *m = u;

	if (m->pos + n > m->cap) {
		sf_count_t cap = (m->pos + n) * 2;
		unsigned char *p = realloc(m->p, (size_t)cap);

		if (!p)
			return 0;
		m->p = p;
		m->cap = cap;
	}
	memcpy(m->p + m->pos, ptr, (size_t)n);
	m->pos += n;
	if (m->pos > m->len)
		m->len = m->pos;
	return n;
}

static sf_count_t m_tell(void *u)
{
	return ((struct mem *)u)->pos;
}

/* the chunk's text, freed at exit whichever way the worker ends, so that
 * a sanitizer build of this worker stays quiet */
static char *text;

static void free_text(void)
{
	free(text);
}

static void put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

int main(void)
{
	SF_VIRTUAL_IO vio = { m_len, m_seek, m_read, m_write, m_tell };
	struct mem m = { 0 };
	SF_INFO info = { 0 };
	SNDFILE *s;
	size_t tlen = 0, tcap = 0;
	uint64_t h = 1469598103934665603ULL;
	const char *fmt = getenv("WW_FORMAT");
	long rate = env_long("WW_RATE", 22050);
	long channels = env_long("WW_CHANNELS", 1);
	long frames;
	int bad = misbehave(), out = 1;
	float *buf;

	atexit(free_text);
	for (;;) {
		ssize_t n;

		if (tlen == tcap) {
			tcap = tcap ? tcap * 2 : 4096;
			text = realloc(text, tcap);
			if (!text)
				return 70;
		}
		n = read(0, text + tlen, tcap - tlen);
		if (n <= 0)
			break;
		tlen += (size_t)n;
	}
	for (size_t i = 0; i < tlen; i++)
		h = (h ^ (unsigned char)text[i]) * 1099511628211ULL;

	if (bad && getenv("WW_EXIT"))
		return (int)env_long("WW_EXIT", 1);
	if (bad && getenv("WW_HANG"))
		for (;;)
			pause();
	if (bad && getenv("WW_CRASH"))
		raise(SIGSEGV);
	if (bad && getenv("WW_GARBAGE")) {
		fputs("this is not audio at all\n", stdout);
		return 0;
	}
	if (bad && getenv("WW_RATE_BAD"))
		rate = env_long("WW_RATE_BAD", 16000);
	if (getenv("WW_TO_FILE") && getenv("JOBFS_OUTPUT")) {
		out = open(getenv("JOBFS_OUTPUT"), O_WRONLY | O_CREAT | O_TRUNC,
			   0644);
		if (out < 0)
			return 71;
	}

	frames = getenv("WW_FRAMES") ? env_long("WW_FRAMES", 0) :
		(long)tlen * env_long("WW_MS_PER_CHAR", 10) * rate / 1000;
	if (frames < 1)
		frames = 1;
	if (bad && getenv("WW_EMPTY"))
		frames = 0;
	info.samplerate = (int)rate;
	info.channels = (int)channels;
	info.format = SF_FORMAT_WAV |
		(fmt && !strcmp(fmt, "float") ? SF_FORMAT_FLOAT :
		 fmt && !strcmp(fmt, "pcm24") ? SF_FORMAT_PCM_24 :
		 SF_FORMAT_PCM_16);
	s = sf_open_virtual(&vio, SFM_WRITE, &info, &m);
	if (!s) {
		fprintf(stderr, "wavworker: %s\n", sf_strerror(NULL));
		return 72;
	}
	/* PEAK chunks would make the bytes depend on more than the text */
	sf_command(s, SFC_SET_ADD_PEAK_CHUNK, NULL, SF_FALSE);
	buf = malloc(sizeof(float) * 1024 * (size_t)channels);
	{
		double f = 180 + (double)(h % 500);
		uint64_t noise = h;

		for (long done = 0; done < frames;) {
			long n = frames - done > 1024 ? 1024 : frames - done;

			for (long i = 0; i < n; i++) {
				for (long c = 0; c < channels; c++) {
					noise = noise * 6364136223846793005ULL +
						1442695040888963407ULL;
					buf[i * channels + c] = (float)(0.5 *
						sin(2 * M_PI * f * (double)(done + i) /
						    (double)rate) +
						0.01 * ((double)(noise >> 40) /
							(1 << 24) - 0.5));
				}
			}
			sf_writef_float(s, buf, n);
			done += n;
		}
	}
	sf_close(s);
	if (bad && getenv("WW_BROKEN") && m.len > 20)
		m.len = 20;
	if (getenv("WW_STREAM") && m.len >= 44 &&
	    !memcmp(m.p + 36, "data", 4)) {
		put32(m.p + 4, 0x7ffff000);
		put32(m.p + 40, 0x7ffff000);
	}
	for (sf_count_t off = 0; off < m.len;) {
		ssize_t n = write(out, m.p + off, (size_t)(m.len - off));

		if (n <= 0)
			return 74;
		off += n;
	}
	free(buf);
	free(m.p);
	return 0;
}
