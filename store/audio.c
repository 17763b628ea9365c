/*
 * audio.c - reading, normalizing and encoding audio with libsndfile, and
 * the WAV header jobfs serves in front of raw samples.
 *
 * Every decision about sample formats is libsndfile's: it reads whatever a
 * worker wrote, converts between encodings, and encodes FLAC and Vorbis.
 * The only bytes written by hand are the WAV header (RIFF or RF64 with a
 * fmt, optional fact, and data chunk), because output.wav is that header
 * followed by chunk samples read in place, and must exist the moment the
 * last chunk commits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sndfile.h>

#include "audio.h"

#define BLOCK_FRAMES 8192

unsigned audio_sample_bytes(unsigned enc)
{
	switch (enc) {
	case AUDIO_S16:
		return 2;
	case AUDIO_S24:
		return 3;
	case AUDIO_S32:
	case AUDIO_F32:
		return 4;
	case AUDIO_F64:
		return 8;
	default:
		return 0;
	}
}

const char *audio_enc_name(unsigned enc)
{
	switch (enc) {
	case AUDIO_S16:
		return "16-bit";
	case AUDIO_S24:
		return "24-bit";
	case AUDIO_S32:
		return "32-bit";
	case AUDIO_F32:
		return "float";
	case AUDIO_F64:
		return "double";
	default:
		return "unknown";
	}
}

static int sf_subtype(unsigned enc)
{
	switch (enc) {
	case AUDIO_S24:
		return SF_FORMAT_PCM_24;
	case AUDIO_S32:
		return SF_FORMAT_PCM_32;
	case AUDIO_F32:
		return SF_FORMAT_FLOAT;
	case AUDIO_F64:
		return SF_FORMAT_DOUBLE;
	default:
		return SF_FORMAT_PCM_16;
	}
}

static unsigned enc_of(int format)
{
	switch (format & SF_FORMAT_SUBMASK) {
	case SF_FORMAT_PCM_24:
		return AUDIO_S24;
	case SF_FORMAT_PCM_32:
		return AUDIO_S32;
	case SF_FORMAT_FLOAT:
		return AUDIO_F32;
	case SF_FORMAT_DOUBLE:
		return AUDIO_F64;
	default:
		return AUDIO_S16; /* 8-bit, u-law, ADPCM, ...: 16-bit */
	}
}

/* Read up to n frames into buf in the sample type of enc. */
static sf_count_t read_frames(SNDFILE *s, unsigned enc, void *buf,
			      sf_count_t n)
{
	switch (enc) {
	case AUDIO_S16:
		return sf_readf_short(s, buf, n);
	case AUDIO_S24:
	case AUDIO_S32:
		return sf_readf_int(s, buf, n);
	case AUDIO_F32:
		return sf_readf_float(s, buf, n);
	default:
		return sf_readf_double(s, buf, n);
	}
}

static sf_count_t write_frames(SNDFILE *s, unsigned enc, const void *buf,
			       sf_count_t n)
{
	switch (enc) {
	case AUDIO_S16:
		return sf_writef_short(s, buf, n);
	case AUDIO_S24:
	case AUDIO_S32:
		return sf_writef_int(s, buf, n);
	case AUDIO_F32:
		return sf_writef_float(s, buf, n);
	default:
		return sf_writef_double(s, buf, n);
	}
}

/* Size in memory of one sample of enc's read type. */
static size_t mem_sample(unsigned enc)
{
	switch (enc) {
	case AUDIO_S16:
		return sizeof(short);
	case AUDIO_S24:
	case AUDIO_S32:
		return sizeof(int);
	case AUDIO_F32:
		return sizeof(float);
	default:
		return sizeof(double);
	}
}

int audio_normalize(int in_fd, int out_fd, struct audio_fmt *fmt, char *err,
		    size_t errlen)
{
	SF_INFO in = { 0 }, out = { 0 };
	SNDFILE *r = NULL, *w = NULL;
	void *buf = NULL;
	uint64_t frames = 0;
	unsigned enc;
	int fd, rc = 0;

	fd = dup(in_fd);
	if (fd < 0 || lseek(fd, 0, SEEK_SET) < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot read output: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return rc;
	}
	r = sf_open_fd(fd, SFM_READ, &in, 1);
	if (!r) {
		snprintf(err, errlen, "output is not audio: %s",
			 sf_strerror(NULL));
		return -EINVAL;
	}
	if (in.frames <= 0 || in.channels <= 0 || in.samplerate <= 0) {
		snprintf(err, errlen, "output has no audio frames");
		rc = -EINVAL;
		goto out;
	}
	/* A WAV header holds the byte rate in 32 bits: refuse what it
	 * cannot describe rather than write a wrong header later. */
	if (in.samplerate > AUDIO_MAX_RATE || in.channels > AUDIO_MAX_CHANNELS) {
		snprintf(err, errlen, "output is not usable audio: %d Hz, %d "
			 "channels (at most %d Hz, %d channels)", in.samplerate,
			 in.channels, AUDIO_MAX_RATE, AUDIO_MAX_CHANNELS);
		rc = -EINVAL;
		goto out;
	}
	enc = enc_of(in.format);
	out.samplerate = in.samplerate;
	out.channels = in.channels;
	out.format = SF_FORMAT_RAW | sf_subtype(enc) | SF_ENDIAN_LITTLE;
	fd = dup(out_fd);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot write samples: %s",
			 strerror(errno));
		goto out;
	}
	w = sf_open_fd(fd, SFM_WRITE, &out, 1);
	if (!w) {
		snprintf(err, errlen, "cannot write samples: %s",
			 sf_strerror(NULL));
		rc = -EIO;
		goto out;
	}
	buf = malloc((size_t)BLOCK_FRAMES * (size_t)in.channels *
		     mem_sample(enc));
	if (!buf) {
		rc = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	for (;;) {
		sf_count_t n = read_frames(r, enc, buf, BLOCK_FRAMES);

		if (n <= 0)
			break;
		if (write_frames(w, enc, buf, n) != n) {
			snprintf(err, errlen, "cannot write samples: %s",
				 sf_strerror(w));
			rc = -EIO;
			goto out;
		}
		frames += (uint64_t)n;
	}
	if (sf_error(r) != SF_ERR_NO_ERROR) {
		snprintf(err, errlen, "output is not audio: %s",
			 sf_strerror(r));
		rc = -EINVAL;
		goto out;
	}
	if (frames == 0) {
		snprintf(err, errlen, "output has no audio frames");
		rc = -EINVAL;
		goto out;
	}
	fmt->rate = (uint32_t)in.samplerate;
	fmt->channels = (uint16_t)in.channels;
	fmt->enc = (uint16_t)enc;
	fmt->frames = frames;
out:
	free(buf);
	if (w && sf_close(w) != 0 && !rc) {
		snprintf(err, errlen, "cannot write samples");
		rc = -EIO;
	}
	if (r)
		sf_close(r);
	return rc;
}

static uint8_t *put16(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	return p + 2;
}

static uint8_t *put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
	return p + 4;
}

static uint8_t *put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
	return p + 8;
}

static uint8_t *put4cc(uint8_t *p, const char *s)
{
	memcpy(p, s, 4);
	return p + 4;
}

size_t audio_wav_header(const struct audio_fmt *fmt, uint64_t frames,
			uint8_t *buf)
{
	unsigned bps = audio_sample_bytes(fmt->enc);
	int is_float = fmt->enc == AUDIO_F32 || fmt->enc == AUDIO_F64;
	uint64_t data = frames * fmt->channels * bps;
	/* fmt chunk: 16 bytes for PCM, 18 (cbSize = 0) for float, which
	 * also carries a fact chunk with the frame count */
	size_t fmt_len = is_float ? 18 : 16;
	size_t head = 12 + 8 + fmt_len + (is_float ? 12 : 0) + 8;
	int rf64 = data + head + 36 > 0xffffffffULL;
	uint8_t *p = buf;

	if (rf64)
		head += 36; /* the ds64 chunk */
	p = put4cc(p, rf64 ? "RF64" : "RIFF");
	p = put32(p, rf64 ? 0xffffffffU : (uint32_t)(head - 8 + data));
	p = put4cc(p, "WAVE");
	if (rf64) {
		p = put4cc(p, "ds64");
		p = put32(p, 28);
		p = put64(p, head - 8 + data);
		p = put64(p, data);
		p = put64(p, frames);
		p = put32(p, 0); /* no table */
	}
	p = put4cc(p, "fmt ");
	p = put32(p, (uint32_t)fmt_len);
	p = put16(p, is_float ? 3 : 1);
	p = put16(p, fmt->channels);
	p = put32(p, fmt->rate);
	p = put32(p, fmt->rate * fmt->channels * bps);
	p = put16(p, fmt->channels * bps);
	p = put16(p, bps * 8);
	if (is_float) {
		p = put16(p, 0);
		p = put4cc(p, "fact");
		p = put32(p, 4);
		p = put32(p, frames > 0xffffffffULL ? 0xffffffffU :
			  (uint32_t)frames);
	}
	p = put4cc(p, "data");
	p = put32(p, rf64 ? 0xffffffffU : (uint32_t)data);
	return (size_t)(p - buf);
}

/* Pack n frames read as enc's memory type into little-endian bytes. The
 * machines jobfs runs on are little-endian (checked at build time). */
static void pack(unsigned enc, const void *in, size_t samples, char *out)
{
	if (enc == AUDIO_S24) {
		const int *v = in;

		for (size_t i = 0; i < samples; i++) {
			uint32_t u = (uint32_t)v[i];

			out[3 * i] = (char)(u >> 8);
			out[3 * i + 1] = (char)(u >> 16);
			out[3 * i + 2] = (char)(u >> 24);
		}
		return;
	}
	memcpy(out, in, samples * mem_sample(enc));
}

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
	       "jobfs serves raw samples as little-endian memory");

/* virtual I/O over a descriptor with pread, so that many readers can
 * share one descriptor without sharing a file offset */
struct pfile {
	int fd;
	sf_count_t pos, len;
};

static sf_count_t pf_len(void *u)
{
	return ((struct pfile *)u)->len;
}

static sf_count_t pf_seek(sf_count_t off, int whence, void *u)
{
	struct pfile *f = u;
	sf_count_t base = whence == SEEK_CUR ? f->pos :
		whence == SEEK_END ? f->len : 0;

	if (base + off < 0)
		return -1;
	f->pos = base + off;
	return f->pos;
}

static sf_count_t pf_read(void *ptr, sf_count_t n, void *u)
{
	struct pfile *f = u;
	ssize_t got = pread(f->fd, ptr, (size_t)n, (off_t)f->pos);

	if (got <= 0)
		return 0;
	f->pos += got;
	return got;
}

static sf_count_t pf_write(const void *ptr, sf_count_t n, void *u)
{
	(void)ptr;
	(void)n;
	(void)u;
	return 0;
}

static sf_count_t pf_tell(void *u)
{
	return ((struct pfile *)u)->pos;
}

/* a fixed memory buffer that libsndfile's writer fills */
struct memw {
	char *p;
	sf_count_t pos, len, cap;
};

static sf_count_t mw_len(void *u)
{
	return ((struct memw *)u)->len;
}

static sf_count_t mw_seek(sf_count_t off, int whence, void *u)
{
	struct memw *m = u;

	m->pos = (whence == SEEK_CUR ? m->pos : whence == SEEK_END ? m->len :
		  0) + off;
	return m->pos;
}

static sf_count_t mw_write(const void *ptr, sf_count_t n, void *u)
{
	struct memw *m = u;

	if (m->pos < 0 || m->pos + n > m->cap)
		return 0;
	memcpy(m->p + m->pos, ptr, (size_t)n);
	m->pos += n;
	if (m->pos > m->len)
		m->len = m->pos;
	return n;
}

static sf_count_t mw_tell(void *u)
{
	return ((struct memw *)u)->pos;
}

static sf_count_t mw_read(void *ptr, sf_count_t n, void *u)
{
	struct memw *m = u;

	if (m->pos < 0 || m->pos >= m->len)
		return 0;
	if (n > m->len - m->pos)
		n = m->len - m->pos;
	memcpy(ptr, m->p + m->pos, (size_t)n);
	m->pos += n;
	return n;
}

ssize_t audio_read_converted(int fd, const struct audio_fmt *src,
			     unsigned dst, uint64_t off, char *buf,
			     size_t len)
{
	SF_VIRTUAL_IO vio = { pf_len, pf_seek, pf_read, pf_write, pf_tell };
	SF_VIRTUAL_IO wvio = { mw_len, mw_seek, mw_read, mw_write, mw_tell };
	struct pfile pf = { fd, 0, 0 };
	struct memw mw = { 0 };
	SNDFILE *w = NULL;
	SF_INFO info = { 0 };
	SNDFILE *s;
	size_t fbytes = (size_t)audio_sample_bytes(dst) * src->channels;
	uint64_t first = off / fbytes, done = 0;
	void *tmp = NULL;
	char *packed = NULL;
	struct stat st;
	ssize_t rc;

	if (!fbytes)
		return -EINVAL;
	if (fstat(fd, &st) < 0)
		return -errno;
	pf.len = st.st_size;
	info.samplerate = (int)src->rate;
	info.channels = src->channels;
	info.format = SF_FORMAT_RAW | sf_subtype(src->enc) | SF_ENDIAN_LITTLE;
	s = sf_open_virtual(&vio, SFM_READ, &info, &pf);
	if (!s)
		return -EIO;
	/* Float samples become integers through libsndfile's writer, which
	 * scales [-1, 1] to the integer range and clips; reading them as
	 * integers would not scale them at all. */
	if ((src->enc == AUDIO_F32 || src->enc == AUDIO_F64) &&
	    dst != AUDIO_F32 && dst != AUDIO_F64) {
		SF_INFO wi = { 0 };

		wi.samplerate = (int)src->rate;
		wi.channels = src->channels;
		wi.format = SF_FORMAT_RAW | sf_subtype(dst) | SF_ENDIAN_LITTLE;
		mw.cap = (sf_count_t)BLOCK_FRAMES * (sf_count_t)fbytes;
		mw.p = malloc((size_t)mw.cap);
		w = mw.p ? sf_open_virtual(&wvio, SFM_WRITE, &wi, &mw) : NULL;
		if (!w) {
			free(mw.p);
			sf_close(s);
			return -EIO;
		}
		sf_command(w, SFC_SET_CLIPPING, NULL, SF_TRUE);
	}
	if (sf_seek(s, (sf_count_t)first, SEEK_SET) < 0) {
		rc = 0; /* past the end: nothing to read */
		goto out;
	}
	tmp = malloc((size_t)BLOCK_FRAMES * src->channels * sizeof(double));
	packed = malloc((size_t)BLOCK_FRAMES * fbytes);
	if (!tmp || !packed) {
		rc = -ENOMEM;
		goto out;
	}
	while (done < len) {
		uint64_t at = off + done;
		uint64_t skip = at - (at / fbytes) * fbytes;
		size_t want_frames = (size_t)((skip + (len - done) + fbytes - 1) /
					      fbytes);
		sf_count_t n;
		size_t take;

		if (want_frames > BLOCK_FRAMES)
			want_frames = BLOCK_FRAMES;
		if (w) {
			n = read_frames(s, AUDIO_F64, tmp,
					(sf_count_t)want_frames);
			if (n <= 0)
				break;
			mw.pos = mw.len = 0;
			if (sf_writef_double(w, tmp, n) != n ||
			    mw.len != n * (sf_count_t)fbytes) {
				rc = -EIO;
				goto out;
			}
			memcpy(packed, mw.p, (size_t)mw.len);
		} else {
			n = read_frames(s, dst, tmp, (sf_count_t)want_frames);
			if (n <= 0)
				break;
			pack(dst, tmp, (size_t)n * src->channels, packed);
		}
		take = (size_t)n * fbytes - (size_t)skip;
		if (take > len - done)
			take = len - done;
		memcpy(buf + done, packed + skip, take);
		done += take;
		/* every block after the first starts frame-aligned */
	}
	rc = (ssize_t)done;
out:
	free(tmp);
	free(packed);
	if (w)
		sf_close(w);
	free(mw.p);
	sf_close(s);
	return rc;
}

/* virtual I/O over a read function, for the encoder's input */
struct vstream {
	audio_read_fn fn;
	void *arg;
	uint64_t len, pos;
};

static sf_count_t v_len(void *u)
{
	return (sf_count_t)((struct vstream *)u)->len;
}

static sf_count_t v_seek(sf_count_t off, int whence, void *u)
{
	struct vstream *v = u;
	int64_t base = whence == SEEK_CUR ? (int64_t)v->pos :
		whence == SEEK_END ? (int64_t)v->len : 0;

	if (base + off < 0)
		return -1;
	v->pos = (uint64_t)(base + off);
	return (sf_count_t)v->pos;
}

static sf_count_t v_read(void *ptr, sf_count_t n, void *u)
{
	struct vstream *v = u;
	ssize_t got;

	if (v->pos >= v->len)
		return 0;
	if ((uint64_t)n > v->len - v->pos)
		n = (sf_count_t)(v->len - v->pos);
	got = v->fn(v->arg, ptr, (size_t)n, v->pos);
	if (got <= 0)
		return 0;
	v->pos += (uint64_t)got;
	return got;
}

static sf_count_t v_write(const void *ptr, sf_count_t n, void *u)
{
	(void)ptr;
	(void)n;
	(void)u;
	return 0;
}

static sf_count_t v_tell(void *u)
{
	return (sf_count_t)((struct vstream *)u)->pos;
}

static int encode_format(const char *format, unsigned enc)
{
	if (!strcmp(format, "flac"))
		return SF_FORMAT_FLAC | (enc == AUDIO_S16 ? SF_FORMAT_PCM_16 :
					 SF_FORMAT_PCM_24);
	if (!strcmp(format, "ogg"))
		return SF_FORMAT_OGG | SF_FORMAT_VORBIS;
	return 0;
}

int audio_can_encode(const char *format)
{
	SF_INFO i = { 0 };

	i.samplerate = 22050;
	i.channels = 1;
	i.format = encode_format(format, AUDIO_S16);
	return i.format && sf_format_check(&i);
}

int audio_encode(const char *format, const struct audio_fmt *fmt,
		 uint64_t total_frames, audio_read_fn read_fn, void *arg,
		 int out_fd, volatile uint64_t *progress, char *err,
		 size_t errlen)
{
	SF_VIRTUAL_IO vio = { v_len, v_seek, v_read, v_write, v_tell };
	struct vstream vs = { read_fn, arg, 0, 0 };
	SF_INFO in = { 0 }, out = { 0 };
	SNDFILE *r = NULL, *w = NULL;
	void *buf = NULL;
	uint64_t done = 0;
	int fd, rc = 0;

	vs.len = total_frames * fmt->channels * audio_sample_bytes(fmt->enc);
	in.samplerate = (int)fmt->rate;
	in.channels = fmt->channels;
	in.format = SF_FORMAT_RAW | sf_subtype(fmt->enc) | SF_ENDIAN_LITTLE;
	r = sf_open_virtual(&vio, SFM_READ, &in, &vs);
	if (!r) {
		snprintf(err, errlen, "cannot read the joined audio: %s",
			 sf_strerror(NULL));
		return -EIO;
	}
	out.samplerate = (int)fmt->rate;
	out.channels = fmt->channels;
	out.format = encode_format(format, fmt->enc);
	if (!out.format || !sf_format_check(&out)) {
		snprintf(err, errlen, "libsndfile here cannot write %s at %u "
			 "Hz, %u channels", format, fmt->rate, fmt->channels);
		rc = -EINVAL;
		goto out;
	}
	fd = dup(out_fd);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s", strerror(errno));
		goto out;
	}
	w = sf_open_fd(fd, SFM_WRITE, &out, 1);
	if (!w) {
		snprintf(err, errlen, "cannot encode %s: %s", format,
			 sf_strerror(NULL));
		rc = -EIO;
		goto out;
	}
	/* Move samples in their own type (short for 16-bit, int for 24 and
	 * 32, float otherwise): through float, 16-bit audio would not come
	 * back bit for bit from a lossless FLAC. */
	buf = malloc((size_t)BLOCK_FRAMES * fmt->channels *
		     mem_sample(fmt->enc));
	if (!buf) {
		rc = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	while (done < total_frames) {
		sf_count_t n = read_frames(r, fmt->enc, buf, BLOCK_FRAMES);

		if (n <= 0)
			break;
		if (write_frames(w, fmt->enc, buf, n) != n) {
			snprintf(err, errlen, "cannot encode %s: %s", format,
				 sf_strerror(w));
			rc = -EIO;
			goto out;
		}
		done += (uint64_t)n;
		if (progress)
			*progress = done;
	}
	if (done != total_frames) {
		snprintf(err, errlen, "joined audio ended after %llu of %llu "
			 "frames", (unsigned long long)done,
			 (unsigned long long)total_frames);
		rc = -EIO;
	}
out:
	free(buf);
	if (w && sf_close(w) != 0 && !rc) {
		snprintf(err, errlen, "cannot finish %s", format);
		rc = -EIO;
	}
	sf_close(r);
	return rc;
}
