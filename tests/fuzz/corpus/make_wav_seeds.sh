#!/bin/sh
# make_wav_seeds.sh - (re)make the seeds of corpus/fuzz_wav with sox and
# espeak-ng. The files are kept in the tree; run this only to change them.
#
#   tests/fuzz/corpus/make_wav_seeds.sh
#
# Every seed is a few KB at most: libFuzzer takes its default -max_len from
# the largest seed, and small inputs keep the target fast.
set -eu

out=$(cd "$(dirname "$0")" && pwd)/fuzz_wav
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 20 ms of a 440 Hz tone at 8 kHz: 160 frames
tone() { # tone FILE [sox output options...]
	f=$1
	shift
	sox -n -r 8000 -c 1 "$@" "$out/$f" synth 0.02 sine 440 vol 0.5
}

tone wav-s16-mono.wav -b 16 -e signed-integer
tone wav-u8-mono.wav -b 8 -e unsigned-integer
tone wav-s24-mono.wav -b 24 -e signed-integer
tone wav-s32-mono.wav -b 32 -e signed-integer
tone wav-f32-mono.wav -b 32 -e floating-point
tone wav-f64-mono.wav -b 64 -e floating-point
tone wav-ulaw.wav -e u-law
tone wav-alaw.wav -e a-law
tone wav-ima-adpcm.wav -e ima-adpcm
tone wav-ms-adpcm.wav -e ms-adpcm
tone wav-gsm.wav -e gsm-full-rate
# stereo and 6 channels (WAVE_FORMAT_EXTENSIBLE)
sox -n -r 8000 -c 2 -b 16 "$out/wav-s16-stereo.wav" synth 0.01 sine 440 sine 660
sox -n -r 8000 -c 6 -b 24 "$out/wav-s24-6ch-extensible.wav" synth 0.005 sine 440
# other containers libsndfile reads
tone aiff-s16.aiff -b 16
tone aifc-float.aifc -b 32 -e floating-point
tone au-s16.au -b 16
tone w64-s16.w64 -b 16
tone caf-s16.caf -b 16
tone flac-s16.flac -b 16
tone voc-u8.voc -b 8
tone ircam-s16.sf -b 16
tone nist-s16.nist -b 16
sox -n -r 8000 -c 1 "$out/ogg-vorbis.ogg" synth 0.1 sine 440 vol 0.5
# an odd rate with one frame, and a high rate
sox -n -r 11025 -c 1 -b 16 "$out/wav-11025-one-frame.wav" synth 0.0001 sine 440
sox -n -r 96000 -c 1 -b 16 "$out/wav-96k.wav" synth 0.002 sine 1000

# espeak-ng writing to a pipe: a streamed WAV whose RIFF and data sizes are
# placeholders, as a worker's stdout would hold it; cut to its first 2 KB
espeak-ng --stdout "Hi." | cat >"$tmp/stream.wav"
head -c 2048 "$tmp/stream.wav" >"$out/espeak-streamed.wav"
# the same file written to disk: real sizes, cut after the header
espeak-ng -w "$tmp/file.wav" "Hi."
head -c 1024 "$tmp/file.wav" >"$out/espeak-file-cut.wav"

# broken on purpose
head -c 44 "$out/wav-s16-mono.wav" >"$out/wav-header-only.wav"
head -c 30 "$out/wav-s16-mono.wav" >"$out/wav-truncated-fmt.wav"
printf 'RIFF\044\000\000\000WAVEfmt \020\000\000\000\001\000\000\000\100\037\000\000\200\076\000\000\002\000\020\000data\000\000\000\000' \
	>"$out/wav-zero-channels.wav"
printf 'not audio at all\n' >"$out/not-audio.txt"
: >"$out/empty"

ls -l "$out"
