/*
 * audio.h - audio chunks through libsndfile.
 *
 * An audio job keeps each chunk's samples as a headerless object: the
 * worker's file is read with libsndfile (any format it knows, including a
 * streamed WAV whose header sizes are placeholders) and its samples are
 * written raw, little-endian, in one of five encodings. The WAV files a
 * user reads (chunks/NNNN.wav and output.wav) are a header made here in
 * memory followed by those samples served in place, so output.wav is ready
 * the moment its last chunk commits, whatever its length.
 */
#ifndef JOBFS_AUDIO_H
#define JOBFS_AUDIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum audio_enc {
	AUDIO_S16 = 1,
	AUDIO_S24 = 2,
	AUDIO_S32 = 3,
	AUDIO_F32 = 4,
	AUDIO_F64 = 5,
};

struct audio_fmt {
	uint32_t rate;
	uint16_t channels;
	uint16_t enc;        /* enum audio_enc */
	uint64_t frames;
};

#define AUDIO_HEADER_MAX 96
#define AUDIO_MAX_RATE 768000      /* the highest rate a chunk may have */
#define AUDIO_MAX_CHANNELS 64

/* Bytes per sample of an encoding (0 for an unknown one). */
unsigned audio_sample_bytes(unsigned enc);
const char *audio_enc_name(unsigned enc);

/*
 * Check the file open as in_fd with libsndfile and write its samples to
 * out_fd (positioned at 0, empty) in their own encoding (8-bit and
 * compressed encodings become 16-bit). Fills *fmt. A file libsndfile
 * cannot read, or one with no frames, is -EINVAL with the reason in err:
 * "output is not audio: Format not recognised." / "output has no audio
 * frames". I/O errors are negative errnos with a message too.
 */
int audio_normalize(int in_fd, int out_fd, struct audio_fmt *fmt, char *err,
		    size_t errlen);

/*
 * Write the header of a WAV file holding `frames` frames of fmt's rate,
 * channels and encoding into buf (AUDIO_HEADER_MAX bytes); returns its
 * length. Data larger than a RIFF size can hold gets an RF64 header.
 */
size_t audio_wav_header(const struct audio_fmt *fmt, uint64_t frames,
			uint8_t *buf);

/*
 * Read bytes [off, off + len) of a raw object in src's encoding as if it
 * were in encoding dst (same rate and channels), converting through
 * libsndfile. off and len need not be frame-aligned. Returns the bytes
 * read or a negative errno.
 */
ssize_t audio_read_converted(int fd, const struct audio_fmt *src,
			     unsigned dst, uint64_t off, char *buf,
			     size_t len);

/*
 * Encode `total_frames` frames, obtained by calling read_fn for successive
 * byte ranges of the raw stream in fmt's encoding, into out_fd as FLAC
 * (format "flac") or Ogg Vorbis ("ogg"). progress (may be NULL) is told
 * the frames done so far. Returns 0 or a negative errno with err set.
 */
typedef ssize_t (*audio_read_fn)(void *arg, char *buf, size_t len,
				 uint64_t off);
int audio_encode(const char *format, const struct audio_fmt *fmt,
		 uint64_t total_frames, audio_read_fn read_fn, void *arg,
		 int out_fd, volatile uint64_t *progress, char *err,
		 size_t errlen);

/* 1 if libsndfile here can write that format ("flac", "ogg"). */
int audio_can_encode(const char *format);

#endif
