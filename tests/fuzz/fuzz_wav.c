/*
 * fuzz_wav.c - audio_normalize() on arbitrary bytes, and what jobfs then
 * serves from the result.
 *
 * The input is a worker's output file, byte for byte, in a memfd; the
 * samples go to a second memfd. Checked:
 *
 *   1. audio_normalize() returns 0 or a negative errno; on error the
 *      message is non-empty and NUL-terminated.
 *   2. On 0: rate in 1..AUDIO_MAX_RATE, channels in
 *      1..AUDIO_MAX_CHANNELS, enc is one of enum audio_enc,
 *      frames > 0, and the samples file holds exactly
 *      frames * channels * audio_sample_bytes(enc) bytes.
 *   3. audio_wav_header() for those frames (and for a few frame counts
 *      large enough to need RF64) parses back: RIFF or RF64, sizes that
 *      add up to the header plus the data, a fmt chunk that says what fmt
 *      says (byte rate and block align included, computed here in 64
 *      bits), a fact chunk for float data, and the data chunk last.
 *   4. libsndfile reads header + samples back as the same rate, channels,
 *      frames and sample format.
 *   5. audio_read_converted() to every encoding returns, for offsets and
 *      lengths drawn from the input, exactly the bytes that lie in range
 *      (min(len, total - off), 0 past the end); to the object's own
 *      encoding it returns the object's bytes; widening a 16- or 24-bit
 *      integer object to 24 or 32 bits puts the sample in the high bytes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sndfile.h>

#include "audio.h"
#include "fuzz.h"

static int in_fd = -1, out_fd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	in_fd = memfd_create("fuzz-wav-in", MFD_CLOEXEC);
	out_fd = memfd_create("fuzz-wav-out", MFD_CLOEXEC);
	if (in_fd < 0 || out_fd < 0) {
		perror("memfd_create");
		exit(1);
	}
	return 0;
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

/* Invariant 3 for one header. */
static void check_header(const struct audio_fmt *fmt, uint64_t frames)
{
	uint8_t h[AUDIO_HEADER_MAX + 16];
	unsigned bps = audio_sample_bytes(fmt->enc);
	bool is_float = fmt->enc == AUDIO_F32 || fmt->enc == AUDIO_F64;
	uint64_t data = frames * fmt->channels * bps, riff;
	size_t len, pos = 12;
	bool rf64, seen_fmt = false, seen_fact = false;

	memset(h, 0xa5, sizeof(h));
	len = audio_wav_header(fmt, frames, h);
	FUZZ_CHECK(len >= 44 && len <= AUDIO_HEADER_MAX,
		   "header of %zu bytes", len);
	for (size_t i = len; i < sizeof(h); i++)
		FUZZ_CHECK(h[i] == 0xa5, "header wrote byte %zu of %zu", i, len);
	rf64 = !memcmp(h, "RF64", 4);
	FUZZ_CHECK(rf64 || !memcmp(h, "RIFF", 4), "header starts '%.4s'", h);
	FUZZ_CHECK(!memcmp(h + 8, "WAVE", 4), "no WAVE form type");
	riff = le32(h + 4);
	if (rf64) {
		FUZZ_CHECK(riff == 0xffffffffu, "RF64 with RIFF size %u",
			   (unsigned)riff);
		FUZZ_CHECK(!memcmp(h + 12, "ds64", 4) && le32(h + 16) >= 28,
			   "RF64 without a ds64 chunk first");
		riff = le64(h + 20);
		FUZZ_CHECK(le64(h + 28) == data, "ds64 data size %llu, want "
			   "%llu", (unsigned long long)le64(h + 28),
			   (unsigned long long)data);
		FUZZ_CHECK(le64(h + 36) == frames, "ds64 sample count %llu, "
			   "want %llu", (unsigned long long)le64(h + 36),
			   (unsigned long long)frames);
		pos = 20 + le32(h + 16);
	} else {
		FUZZ_CHECK(len - 8 + data <= 0xffffffffu,
			   "RIFF header for %llu data bytes does not fit",
			   (unsigned long long)data);
	}
	FUZZ_CHECK(riff == len - 8 + data, "RIFF size %llu, want %llu",
		   (unsigned long long)riff,
		   (unsigned long long)(len - 8 + data));

	for (;;) {
		uint32_t csize;

		FUZZ_CHECK(pos + 8 <= len, "chunk header at %zu past the end "
			   "(%zu) before a data chunk", pos, len);
		csize = le32(h + pos + 4);
		if (!memcmp(h + pos, "data", 4)) {
			FUZZ_CHECK(pos + 8 == len, "data chunk at %zu, header "
				   "ends at %zu", pos, len);
			FUZZ_CHECK(rf64 ? csize == 0xffffffffu : csize == data,
				   "data chunk size %u for %llu bytes (%s)",
				   (unsigned)csize, (unsigned long long)data,
				   rf64 ? "RF64" : "RIFF");
			break;
		}
		FUZZ_CHECK(pos + 8 + csize <= len, "chunk '%.4s' of %u bytes "
			   "runs past the header", h + pos, (unsigned)csize);
		if (!memcmp(h + pos, "fmt ", 4)) {
			const uint8_t *f = h + pos + 8;
			uint64_t byte_rate = (uint64_t)fmt->rate *
				fmt->channels * bps;
			uint64_t align = (uint64_t)fmt->channels * bps;

			seen_fmt = true;
			FUZZ_CHECK(csize == (is_float ? 18u : 16u),
				   "fmt chunk of %u bytes", (unsigned)csize);
			FUZZ_CHECK(le16(f) == (is_float ? 3 : 1),
				   "format tag %u for %s", le16(f),
				   audio_enc_name(fmt->enc));
			FUZZ_CHECK(le16(f + 2) == fmt->channels,
				   "channels %u, want %u", le16(f + 2),
				   fmt->channels);
			FUZZ_CHECK(le32(f + 4) == fmt->rate, "rate %u, want %u",
				   (unsigned)le32(f + 4), (unsigned)fmt->rate);
			FUZZ_CHECK(le32(f + 8) == byte_rate,
				   "byte rate %u, want %llu (rate %u x %u "
				   "channels x %u bytes)", (unsigned)le32(f + 8),
				   (unsigned long long)byte_rate,
				   (unsigned)fmt->rate, fmt->channels, bps);
			FUZZ_CHECK(le16(f + 12) == align,
				   "block align %u, want %llu", le16(f + 12),
				   (unsigned long long)align);
			FUZZ_CHECK(le16(f + 14) == bps * 8, "bits %u, want %u",
				   le16(f + 14), bps * 8);
		} else if (!memcmp(h + pos, "fact", 4)) {
			seen_fact = true;
			FUZZ_CHECK(csize == 4 && le32(h + pos + 8) ==
				   (frames > 0xffffffffu ? 0xffffffffu :
				    (uint32_t)frames),
				   "fact chunk says %u frames of %llu",
				   (unsigned)le32(h + pos + 8),
				   (unsigned long long)frames);
		}
		pos += 8 + csize + (csize & 1);
	}
	FUZZ_CHECK(seen_fmt, "no fmt chunk");
	FUZZ_CHECK(seen_fact == is_float, "fact chunk %s for %s",
		   seen_fact ? "present" : "missing", audio_enc_name(fmt->enc));
}

/* header + samples, as one virtual file for libsndfile */
struct joined {
	const uint8_t *h;
	size_t hlen;
	int fd;
	sf_count_t len, pos;
};

static sf_count_t j_len(void *u)
{
	return ((struct joined *)u)->len;
}

static sf_count_t j_seek(sf_count_t off, int whence, void *u)
{
	struct joined *j = u;
	sf_count_t base = whence == SEEK_CUR ? j->pos :
		whence == SEEK_END ? j->len : 0;

	if (base + off < 0)
		return -1;
	j->pos = base + off;
	return j->pos;
}

static sf_count_t j_read(void *ptr, sf_count_t n, void *u)
{
	struct joined *j = u;
	sf_count_t done = 0;

	while (done < n && j->pos < j->len) {
		if ((size_t)j->pos < j->hlen) {
			sf_count_t k = (sf_count_t)j->hlen - j->pos;

			if (k > n - done)
				k = n - done;
			memcpy((char *)ptr + done, j->h + j->pos, (size_t)k);
			done += k;
			j->pos += k;
		} else {
			ssize_t got = pread(j->fd, (char *)ptr + done,
					    (size_t)(n - done),
					    (off_t)(j->pos - (sf_count_t)j->hlen));

			if (got <= 0)
				break;
			done += got;
			j->pos += got;
		}
	}
	return done;
}

static sf_count_t j_write(const void *ptr, sf_count_t n, void *u)
{
	(void)ptr;
	(void)n;
	(void)u;
	return 0;
}

static sf_count_t j_tell(void *u)
{
	return ((struct joined *)u)->pos;
}

/* Invariant 4. */
static void check_reads_back(const struct audio_fmt *fmt, uint64_t bytes)
{
	static const int subtype[] = {
		[AUDIO_S16] = SF_FORMAT_PCM_16, [AUDIO_S24] = SF_FORMAT_PCM_24,
		[AUDIO_S32] = SF_FORMAT_PCM_32, [AUDIO_F32] = SF_FORMAT_FLOAT,
		[AUDIO_F64] = SF_FORMAT_DOUBLE,
	};
	SF_VIRTUAL_IO vio = { j_len, j_seek, j_read, j_write, j_tell };
	uint8_t h[AUDIO_HEADER_MAX];
	struct joined j = { h, 0, out_fd, 0, 0 };
	SF_INFO info = { 0 };
	SNDFILE *s;
	char first[4];

	/* libsndfile refuses any WAV whose samples begin with the bytes
	 * "wvpk" or "OggS" (it takes them for WavPack or Ogg data in a WAV
	 * wrapper): a limit of that reader, documented in docs/audio.md,
	 * not of the file. */
	if (bytes >= 4 && pread(out_fd, first, 4, 0) == 4 &&
	    (!memcmp(first, "wvpk", 4) || !memcmp(first, "OggS", 4)))
		return;
	j.hlen = audio_wav_header(fmt, fmt->frames, h);
	j.len = (sf_count_t)(j.hlen + bytes);
	s = sf_open_virtual(&vio, SFM_READ, &info, &j);
	FUZZ_CHECK(s, "libsndfile cannot read the served WAV (%u Hz, %u "
		   "channels, %s, %llu frames): %s", (unsigned)fmt->rate,
		   fmt->channels, audio_enc_name(fmt->enc),
		   (unsigned long long)fmt->frames, sf_strerror(NULL));
	FUZZ_CHECK((uint64_t)info.frames == fmt->frames &&
		   info.channels == fmt->channels &&
		   (uint32_t)info.samplerate == fmt->rate &&
		   (info.format & SF_FORMAT_SUBMASK) == subtype[fmt->enc],
		   "served WAV reads back as %lld frames, %d channels, %d Hz, "
		   "subtype 0x%x; want %llu, %u, %u, 0x%x",
		   (long long)info.frames, info.channels, info.samplerate,
		   info.format & SF_FORMAT_SUBMASK,
		   (unsigned long long)fmt->frames, fmt->channels,
		   (unsigned)fmt->rate, subtype[fmt->enc]);
	sf_close(s);
}

/* Invariant 5 for one (dst, off, len). */
static void check_converted(const struct audio_fmt *fmt, unsigned dst,
			    uint64_t off, size_t len)
{
	unsigned sb = audio_sample_bytes(fmt->enc), db = audio_sample_bytes(dst);
	uint64_t total = fmt->frames * fmt->channels * db;
	size_t want = off >= total ? 0 : (size_t)(total - off < len ?
						   total - off : len);
	char *buf = malloc(len ? len : 1), *raw = NULL;
	ssize_t got;

	FUZZ_CHECK(buf, "malloc(%zu)", len);
	got = audio_read_converted(out_fd, fmt, dst, off, buf, len);
	FUZZ_CHECK(got >= 0 && (size_t)got == want,
		   "audio_read_converted(%s -> %s, off %llu, len %zu) of %llu "
		   "bytes returned %zd, want %zu", audio_enc_name(fmt->enc),
		   audio_enc_name(dst), (unsigned long long)off, len,
		   (unsigned long long)total, got, want);
	if (!want)
		goto out;

	/* What the bytes must be, where that is exact: the same encoding,
	 * or an integer widened into the high bytes. */
	if (dst == fmt->enc) {
		raw = malloc(want);
		FUZZ_CHECK(raw && pread(out_fd, raw, want, (off_t)off) ==
			   (ssize_t)want, "pread of the samples");
		FUZZ_CHECK(!memcmp(raw, buf, want), "%s -> %s at %llu: bytes "
			   "differ from the object's", audio_enc_name(fmt->enc),
			   audio_enc_name(dst), (unsigned long long)off);
	} else if ((fmt->enc == AUDIO_S16 || fmt->enc == AUDIO_S24) &&
		   (dst == AUDIO_S24 || dst == AUDIO_S32) && db > sb) {
		uint64_t first = off / db, last = (off + want - 1) / db;
		size_t n = (size_t)(last - first + 1);

		raw = malloc(n * sb);
		FUZZ_CHECK(raw && pread(out_fd, raw, n * sb,
					(off_t)(first * sb)) ==
			   (ssize_t)(n * sb), "pread of the samples");
		for (uint64_t b = off; b < off + want; b++) {
			uint64_t sample = b / db;
			unsigned k = (unsigned)(b % db), pad = db - sb;
			char expect = k < pad ? 0 :
				raw[(sample - first) * sb + (k - pad)];

			FUZZ_CHECK(buf[b - off] == expect, "%s -> %s: byte %llu "
				   "is 0x%02x, want 0x%02x",
				   audio_enc_name(fmt->enc), audio_enc_name(dst),
				   (unsigned long long)b,
				   (unsigned char)buf[b - off],
				   (unsigned char)expect);
		}
	}
out:
	free(raw);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct audio_fmt fmt = { 0 };
	char err[256];
	struct stat st;
	uint64_t rnd = fuzz_seed(data, size), bytes;
	int rc;

	FUZZ_CHECK(ftruncate(in_fd, 0) == 0 && ftruncate(out_fd, 0) == 0 &&
		   lseek(in_fd, 0, SEEK_SET) == 0 &&
		   lseek(out_fd, 0, SEEK_SET) == 0, "resetting the memfds");
	FUZZ_CHECK(pwrite(in_fd, data, size, 0) == (ssize_t)size,
		   "writing the input");

	memset(err, 'X', sizeof(err));
	rc = audio_normalize(in_fd, out_fd, &fmt, err, sizeof(err));
	FUZZ_CHECK(rc <= 0, "audio_normalize returned %d", rc);
	if (rc) {
		FUZZ_CHECK(memchr(err, '\0', sizeof(err)) && err[0],
			   "error %d with no message", rc);
		return 0;
	}

	FUZZ_CHECK(fmt.rate > 0 && fmt.rate <= AUDIO_MAX_RATE &&
		   fmt.channels >= 1 && fmt.channels <= AUDIO_MAX_CHANNELS &&
		   audio_sample_bytes(fmt.enc) && fmt.frames > 0,
		   "format: %u Hz, %u channels, enc %u, %llu frames",
		   (unsigned)fmt.rate, fmt.channels, fmt.enc,
		   (unsigned long long)fmt.frames);
	FUZZ_CHECK(fstat(out_fd, &st) == 0, "fstat");
	bytes = fmt.frames * fmt.channels * audio_sample_bytes(fmt.enc);
	FUZZ_CHECK((uint64_t)st.st_size == bytes, "samples file of %lld bytes "
		   "for %llu frames x %u channels x %u bytes",
		   (long long)st.st_size, (unsigned long long)fmt.frames,
		   fmt.channels, audio_sample_bytes(fmt.enc));

	check_header(&fmt, fmt.frames);
	/* Frame counts near and past the RIFF limit. */
	for (int i = 0; i < 3; i++) {
		uint64_t fb = (uint64_t)fmt.channels *
			audio_sample_bytes(fmt.enc);
		uint64_t f = (0xffffffffULL - 100) / fb - 2 +
			fuzz_rand(&rnd) % 8;

		if (i == 2)
			f = fuzz_rand(&rnd) % ((uint64_t)1 << 40) + 1;
		check_header(&fmt, f);
	}
	check_reads_back(&fmt, bytes);

	for (unsigned dst = AUDIO_S16; dst <= AUDIO_F64; dst++) {
		uint64_t total = fmt.frames * fmt.channels *
			audio_sample_bytes(dst);

		for (int i = 0; i < 3; i++) {
			uint64_t off = fuzz_rand(&rnd) % (total + 16);
			size_t len = (size_t)(fuzz_rand(&rnd) %
					      (total < 65536 ? total + 16 :
					       65536));

			if (i == 0)
				off = 0;
			check_converted(&fmt, dst, off, len);
		}
	}
	return 0;
}
