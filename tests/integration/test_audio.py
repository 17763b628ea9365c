#!/usr/bin/env python3
"""test_audio.py - audio jobs on a real mount, checked with tools that do
not share jobfs's code: soxi and sox, python's wave module, and a WAV
header parser written here.

What is checked: output.wav is the exact join of the chunks (to the
sample, and to the byte where no conversion is involved), its header
agrees with its size and with what a read returns, streamed WAVs with
placeholder sizes are accepted, mixed encodings are converted to chunk 1's,
bad worker output fails an attempt with a reason, mismatched rates stop
output.wav, it can be listened to while the job renders, it is the same
after a kill -9 and a resume, and output.flac / output.ogg hold the same
samples and follow the chunks they were made from.

Programs under test come from the environment as in harness.py, plus

    JOBFS_WAVWORKER   jobfs-wavworker       (../../build/tools/jobfs-wavworker)

soxi, sox and espeak-ng must be installed.
"""

import array
import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import wave

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

WAVWORKER = os.path.abspath(
    os.environ.get("JOBFS_WAVWORKER") or
    os.path.join(h.BUILD, "tools", "jobfs-wavworker"))

# short paragraphs for espeak-ng: one chunk each, about a second of speech
SPEECH = ("The cat sat on the mat.\n\n"
          "It was a sunny day in the old town.\n\n"
          "Seven ravens flew over the quiet river.\n\n"
          "Nobody knew where the key had gone.\n\n"
          "At last the train arrived, two hours late.\n\n")


# ---------------------------------------------------------------------
# local helpers

def run(argv, cwd=None, env=None, data=None):
    """Run argv; its stdout bytes. Raises with stderr if it fails."""
    r = subprocess.run(argv, cwd=cwd, env=env, input=data,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=60)
    if r.returncode != 0:
        raise AssertionError("%r exited %d: %s" %
                             (argv, r.returncode,
                              r.stderr.decode(errors="replace")))
    return r.stdout


def soxi(path, flag):
    return run(["soxi", flag, path]).decode().strip()


def soxi_samples(path):
    return int(soxi(path, "-s"))


def sha(data):
    return hashlib.sha256(data).hexdigest()


def parse_wav(data):
    """Walk a RIFF/WAVE file's chunks by hand. Returns a dict with the
    RIFF size, the fmt fields, the fact frame count (or None) and the
    offset and declared size of the data chunk."""
    if len(data) < 12 or data[0:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AssertionError("not a RIFF/WAVE file: %r" % data[:12])
    info = {"riff_size": struct.unpack_from("<I", data, 4)[0],
            "fact": None, "chunks": []}
    pos = 12
    while pos + 8 <= len(data):
        cid = data[pos:pos + 4]
        size = struct.unpack_from("<I", data, pos + 4)[0]
        info["chunks"].append(cid.decode("latin-1"))
        if cid == b"fmt ":
            (info["format_tag"], info["channels"], info["rate"],
             info["byte_rate"], info["block_align"],
             info["bits"]) = struct.unpack_from("<HHIIHH", data, pos + 8)
        elif cid == b"fact":
            info["fact"] = struct.unpack_from("<I", data, pos + 8)[0]
        elif cid == b"data":
            info["data_off"] = pos + 8
            info["data_size"] = size
            break
        pos += 8 + size + (size & 1)
    if "data_off" not in info or "rate" not in info:
        raise AssertionError("no fmt or data chunk in %s" % info["chunks"])
    return info


def wav_data(data):
    """The bytes of a WAV's data chunk (as far as the file goes)."""
    info = parse_wav(data)
    return data[info["data_off"]:info["data_off"] + info["data_size"]]


def s16(data):
    a = array.array("h")
    a.frombytes(data[:len(data) // 2 * 2])
    return a


def s24(data):
    """Little-endian 24-bit samples as ints."""
    return [int.from_bytes(data[i:i + 3], "little", signed=True)
            for i in range(0, len(data) - 2, 3)]


def read_in_pieces(path, size, piece=4096):
    """Read path with one descriptor in piece-sized preads from the end
    to the start (backwards, so the kernel's readahead cannot turn them
    into one big read). An error is returned as text in place of bytes,
    so that a comparison shows it."""
    parts = []
    fd = os.open(path, os.O_RDONLY)
    try:
        for off in range((size - 1) // piece * piece, -1, -piece):
            try:
                parts.append(os.pread(fd, piece, off))
            except OSError as e:
                return "pread(%d bytes at %d of %d): %s" % (
                    piece, off, size, os.strerror(e.errno))
    finally:
        os.close(fd)
    return b"".join(reversed(parts))


def chunk_texts(d, job):
    """Each chunk's input text, from the manifest's byte ranges."""
    text = h.read_bytes(d.path(job, "input"))
    return [text[c["start"]:c["end"]] for c in d.manifest(job)["chunks"]]


def local_wavworker(text, chunk, env):
    """What the wavworker writes for a chunk, run here, outside jobfs."""
    e = {"PATH": "/usr/bin:/bin", "JOBFS_CHUNK": str(chunk),
         "JOBFS_ATTEMPT": "1"}
    e.update({k: str(v) for k, v in env.items()})
    return run([WAVWORKER], env=e, data=text)


def sh_wrapper(script):
    """A command running script with /bin/sh, ending by exec'ing the
    wavworker (the worker gets the chunk on stdin, through the exec)."""
    return ["/bin/sh", "-c",
            script + "\nexec %s" % shlex.quote(WAVWORKER)]


def libsndfile_can(fmt_major, fmt_sub):
    """Ask the installed libsndfile (the one jobfs links) whether it can
    write a format: sf_format_check. None if it cannot be loaded."""
    name = ctypes.util.find_library("sndfile") or "libsndfile.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None

    class SFInfo(ctypes.Structure):
        _fields_ = [("frames", ctypes.c_int64), ("samplerate", ctypes.c_int),
                    ("channels", ctypes.c_int), ("format", ctypes.c_int),
                    ("sections", ctypes.c_int), ("seekable", ctypes.c_int)]
    info = SFInfo(0, 22050, 1, fmt_major | fmt_sub, 0, 0)
    return bool(lib.sf_format_check(ctypes.byref(info)))


SF_FORMAT_OGG, SF_FORMAT_VORBIS = 0x200000, 0x0060


def libsndfile_read(path):
    """Open path with libsndfile itself (ctypes) and read every frame as
    float: (frames, rate, channels, frames actually read), or None if
    libsndfile cannot open it."""
    name = ctypes.util.find_library("sndfile") or "libsndfile.so.1"
    lib = ctypes.CDLL(name)

    class SFInfo(ctypes.Structure):
        _fields_ = [("frames", ctypes.c_int64), ("samplerate", ctypes.c_int),
                    ("channels", ctypes.c_int), ("format", ctypes.c_int),
                    ("sections", ctypes.c_int), ("seekable", ctypes.c_int)]
    lib.sf_open.restype = ctypes.c_void_p
    lib.sf_open.argtypes = [ctypes.c_char_p, ctypes.c_int,
                            ctypes.POINTER(SFInfo)]
    lib.sf_readf_float.restype = ctypes.c_int64
    lib.sf_readf_float.argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                   ctypes.c_int64]
    lib.sf_close.argtypes = [ctypes.c_void_p]
    info = SFInfo()
    sf = lib.sf_open(path.encode(), 0x10, ctypes.byref(info))  # SFM_READ
    if not sf:
        return None
    buf = (ctypes.c_float * (4096 * max(info.channels, 1)))()
    got = 0
    while True:
        n = lib.sf_readf_float(sf, buf, 4096)
        if n <= 0:
            break
        got += n
    lib.sf_close(sf)
    return info.frames, info.samplerate, info.channels, got

AUDIO_LINE = re.compile(r"(?m)^audio +(\d+\.\d{3}) s in (\d+) chunks?, "
                        r"(\d+) Hz, (\d+) channels?, (\S+)$")


class Audio(h.JobfsTestCase):

    def setUp(self):
        self.assertTrue(os.access(WAVWORKER, os.X_OK), "no wav worker at %s "
                        "(set JOBFS_WAVWORKER)" % WAVWORKER)
        for tool in ("soxi", "sox", "espeak-ng", "sndfile-info", "ffprobe"):
            self.assertTrue(shutil.which(tool), "%s is not installed" % tool)
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="jobfs-audio-", dir="/tmp")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    # -- checks shared by the tests --

    def check_wav(self, path, pcm=True):
        """The file at path is a WAV whose header tells the truth: stat
        size == bytes read, RIFF size == size - 8, data size == size -
        header, soxi's sample count == the data's frames, and (for PCM)
        python's wave reads the same frames. Returns (bytes, info)."""
        st = os.stat(path)
        data = h.read_bytes(path)
        self.assertEqual(st.st_size, len(data),
                         "%s: stat size and bytes read differ" % path)
        info = parse_wav(data)
        self.assertEqual(info["riff_size"], len(data) - 8,
                         "%s: RIFF size" % path)
        self.assertEqual(info["data_size"], len(data) - info["data_off"],
                         "%s: data size is not file size - header" % path)
        frame = info["channels"] * info["bits"] // 8
        self.assertEqual(info["data_size"] % frame, 0, path)
        frames = info["data_size"] // frame
        info["frames"] = frames
        self.assertEqual(soxi_samples(path), frames,
                         "%s: soxi -s against the data size" % path)
        if info["fact"] is not None:
            self.assertEqual(info["fact"], frames, "%s: fact chunk" % path)
        # sndfile-info and ffprobe agree on the frame count
        out = subprocess.run(["sndfile-info", path], capture_output=True,
                             text=True, timeout=30).stdout
        m = re.search(r"(?m)^Frames\s*:\s*(\d+)", out)
        self.assertTrue(m, "%s: sndfile-info: %s" % (path, out[-300:]))
        self.assertEqual(int(m.group(1)), frames, "%s: sndfile-info" % path)
        out = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                              "stream=duration_ts,sample_rate,channels",
                              "-of", "json", path], capture_output=True,
                             text=True, timeout=30)
        self.assertEqual(out.returncode, 0, "%s: ffprobe: %s" %
                         (path, out.stderr))
        st0 = json.loads(out.stdout)["streams"][0]
        self.assertEqual((int(st0["duration_ts"]), int(st0["sample_rate"]),
                          st0["channels"]),
                         (frames, info["rate"], info["channels"]),
                         "%s: ffprobe" % path)
        # libsndfile itself reads every frame the header promises
        lsf = libsndfile_read(path)
        self.assertIsNotNone(lsf, "%s: libsndfile cannot open it" % path)
        self.assertEqual(lsf, (frames, info["rate"], info["channels"],
                               frames), "%s: libsndfile's view" % path)
        # small reads at scattered offsets on one descriptor, as players
        # and sox do, give the same bytes (soft: the rest still runs)
        with self.subTest(check="small reads", path=path):
            self.assertEqual(read_in_pieces(path, len(data)), data,
                             "%s: small reads give other bytes" % path)
        if pcm:
            with self.subTest(check="python wave", path=path), \
                    wave.open(path, "rb") as w:
                self.assertEqual(w.getnframes(), frames, path)
                self.assertEqual(w.getframerate(), info["rate"], path)
                self.assertEqual(w.getnchannels(), info["channels"], path)
                self.assertEqual(w.getsampwidth() * 8, info["bits"], path)
                self.assertEqual(w.readframes(frames),
                                 data[info["data_off"]:], path)
        return data, info

    def check_durations(self, job, frames, rate, nchunks, per_chunk=None):
        """status, status.json and manifest.json give frames/rate seconds
        to the millisecond (the chunks' audio only: no gaps)."""
        want = frames / rate
        st = self.d.status(job)
        m = AUDIO_LINE.search(st)
        self.assertIsNotNone(m, "no audio line in status:\n" + st)
        self.assertAlmostEqual(float(m.group(1)), want, delta=0.0005 + 1e-9)
        self.assertEqual(int(m.group(2)), nchunks)
        self.assertEqual(int(m.group(3)), rate)
        au = self.d.sj(job)["audio"]
        self.assertAlmostEqual(au["seconds"], want, delta=0.0005 + 1e-9)
        self.assertEqual(au["chunks"], nchunks)
        self.assertEqual(au["rate"], rate)
        man = self.d.manifest(job)
        self.assertAlmostEqual(man["audio_seconds"], want,
                               delta=0.0005 + 1e-9)
        if per_chunk is not None:
            for c, n in zip(man["chunks"], per_chunk):
                self.assertEqual("%.3f" % c["audio_seconds"],
                                 "%.3f" % (n / rate),
                                 "manifest chunk %d" % c["chunk"])
        return st

    def chunk_files(self, job):
        return [self.d.path(job, "chunks", n)
                for n in self.d.chunk_names(job)]

    # -- 1 --

    def test_1_espeak_join_exact(self):
        """espeak-ng writes placeholder sizes; the join is exact."""
        job = self.d.mkjob("speech", {
            "command": "espeak-ng --stdin --stdout", "output": "wav",
            "parallel": 2}, SPEECH)
        self.d.run_job(job, timeout=40)
        names = self.d.chunk_names(job)
        self.assertEqual(names, ["%04d.wav" % i for i in range(1, 6)])

        # each chunk holds exactly the samples espeak-ng makes for its text
        texts = chunk_texts(self.d, job)
        per = []
        for i, (path, text) in enumerate(zip(self.chunk_files(job), texts)):
            raw = run(["espeak-ng", "--stdin", "--stdout"], data=text)
            riff = struct.unpack_from("<I", raw, 4)[0]
            self.assertGreater(riff, len(raw), "espeak-ng no longer writes "
                               "placeholder sizes: the test proves less")
            cdata, cinfo = self.check_wav(path)
            self.assertEqual(cdata[cinfo["data_off"]:], raw[44:],
                             "chunk %d samples differ from espeak-ng's"
                             % (i + 1))
            per.append(soxi_samples(path))
        rate = int(soxi(self.chunk_files(job)[0], "-r"))

        out = self.d.path(job, "output.wav")
        data, info = self.check_wav(out)
        self.assertEqual(soxi_samples(out), sum(per),
                         "output.wav samples vs the chunks' sum")
        self.assertEqual(info["rate"], rate)
        self.assertEqual(data[info["data_off"]:], b"".join(
            wav_data(h.read_bytes(p)) for p in self.chunk_files(job)))

        copy = os.path.join(self.tmp, "copy.wav")
        run(["cp", out, copy])
        self.assertEqual(sha(h.read_bytes(copy)), sha(data), "cp copy")

        st = self.check_durations(job, sum(per), rate, 5, per)
        self.assertRegex(st, r"(?m)^audio .* 1 channel, 16-bit$")

    # -- 2 --

    def test_2_gap(self):
        """join.gap_ms puts floor(rate * gap) zero frames between chunks."""
        rate = 11025  # 0.3 s is 3307.5 frames: the rounding shows
        job = self.d.mkjob("gap", {
            "command": [WAVWORKER], "output": "wav", "parallel": 2,
            "join": {"gap_ms": 300}, "env": {"WW_RATE": str(rate)}},
            h.paragraphs(4))
        self.d.run_job(job)
        chunks = [wav_data(h.read_bytes(p)) for p in self.chunk_files(job)]
        per = [soxi_samples(p) for p in self.chunk_files(job)]
        self.assertEqual(len(per), 4)
        gap = rate * 300 // 1000
        out = self.d.path(job, "output.wav")
        data, info = self.check_wav(out)
        self.assertEqual(soxi_samples(out), sum(per) + 3 * gap)
        want = (b"\0\0" * gap).join(chunks)
        self.assertEqual(len(data) - info["data_off"], len(want))
        self.assertTrue(data[info["data_off"]:] == want,
                        "output.wav is not chunk, silence, chunk, ...")
        # the durations count the chunks only
        self.check_durations(job, sum(per), rate, 4, per)

    # -- 3 --

    def test_3_stream_and_encodings(self):
        """Streamed WAVs are accepted; a float and a 24-bit chunk among
        16-bit ones are converted to 16-bit in output.wav."""
        # streamed: every chunk has placeholder sizes
        raw = local_wavworker(b"hello\n", 1, {"WW_STREAM": "1"})
        self.assertEqual(struct.unpack_from("<I", raw, 40)[0], 0x7ffff000,
                         "wavworker WW_STREAM no longer streams")
        text = h.paragraphs(4)
        job = self.d.mkjob("stream", {
            "command": [WAVWORKER], "output": "wav", "parallel": 2,
            "env": {"WW_STREAM": "1"}}, text)
        self.d.run_job(job)
        ev = self.d.events(job)
        self.assertEqual(h.chunk_events(ev, "failed"), [])
        plain = [wav_data(local_wavworker(t, i + 1, {}))
                 for i, t in enumerate(chunk_texts(self.d, job))]
        for path, want in zip(self.chunk_files(job), plain):
            cdata, cinfo = self.check_wav(path)
            self.assertEqual(cdata[cinfo["data_off"]:], want, path)
        data, info = self.check_wav(self.d.path(job, "output.wav"))
        self.assertEqual(data[info["data_off"]:], b"".join(plain))

        # mixed encodings: chunk 2 float, chunk 3 24-bit, 1 and 4 16-bit
        job = self.d.mkjob("mixed", {
            "command": sh_wrapper(
                'case "$JOBFS_CHUNK" in 2) export WW_FORMAT=float;; '
                '3) export WW_FORMAT=pcm24;; esac'),
            "output": "wav", "parallel": 2}, text)
        self.d.run_job(job)
        files = self.chunk_files(job)
        self.assertEqual(soxi(files[1], "-e"), "Floating Point PCM")
        self.assertEqual(soxi(files[2], "-b"), "24")
        self.assertEqual(soxi(files[0], "-b"), "16")
        c2, i2 = self.check_wav(files[1], pcm=False)
        self.assertEqual(i2["format_tag"], 3, "chunk 2 is not float")
        texts = chunk_texts(self.d, job)
        self.assertEqual(c2[i2["data_off"]:], wav_data(local_wavworker(
            texts[1], 2, {"WW_FORMAT": "float"})), "chunk 2 float samples")
        c3, i3 = self.check_wav(files[2])
        self.assertEqual(c3[i3["data_off"]:], wav_data(local_wavworker(
            texts[2], 3, {"WW_FORMAT": "pcm24"})), "chunk 3 24-bit samples")

        out = self.d.path(job, "output.wav")
        data, info = self.check_wav(out)
        self.assertEqual(info["bits"], 16, "output.wav is not 16-bit")
        self.assertEqual(info["format_tag"], 1)
        self.assertEqual(soxi(out, "-e"), "Signed Integer PCM")
        per = [soxi_samples(p) for p in files]
        self.assertEqual(info["frames"], sum(per))
        got = s16(data[info["data_off"]:])
        start = 0
        for n, path in enumerate(files, 1):
            mine = got[start:start + per[n - 1]]
            start += per[n - 1]
            with self.subTest(chunk=n, enc=soxi(path, "-e")):
                self.check_converted(n, path, mine)
        self.assertRegex(self.d.status(job), r"(?m)^audio .* 16-bit$")

        # chunk 1 24-bit: the 16-bit chunks become 24-bit, exactly
        job = self.d.mkjob("wide", {
            "command": sh_wrapper(
                '[ "$JOBFS_CHUNK" = 1 ] && export WW_FORMAT=pcm24'),
            "output": "wav"}, h.paragraphs(2))
        self.d.run_job(job)
        files = self.chunk_files(job)
        data, info = self.check_wav(self.d.path(job, "output.wav"))
        self.assertEqual(info["bits"], 24)
        got = s24(data[info["data_off"]:])
        first = s24(wav_data(h.read_bytes(files[0])))
        second = s16(wav_data(h.read_bytes(files[1])))
        self.assertEqual(got[:len(first)], first)
        self.assertEqual(got[len(first):], [x * 256 for x in second],
                         "16-bit chunk widened to 24-bit is not x << 8")

    def check_converted(self, n, path, mine):
        """mine, chunk n's samples in a 16-bit output.wav, against the
        chunk file: equal for a 16-bit chunk, within 1 LSB of sox's own
        conversion (without dither, so it is repeatable) for another."""
        if soxi(path, "-b") == "16" and soxi(path, "-e").startswith("Signed"):
            self.assertEqual(mine, s16(wav_data(h.read_bytes(path))),
                             "16-bit chunk %d changed in output.wav" % n)
            return
        ref = os.path.join(self.tmp, "c%d.wav" % n)
        run(["sox", "-D", path, "-b", "16", "-e", "signed-integer", ref])
        want = s16(wav_data(h.read_bytes(ref)))
        self.assertEqual(len(mine), len(want), "chunk %d frames" % n)
        peak_mine = max(abs(x) for x in mine)
        peak_want = max(abs(x) for x in want)
        worst = max(abs(a - b) for a, b in zip(mine, want))
        self.assertLessEqual(worst, 1, "chunk %d (%s) converted to 16-bit "
                             "in output.wav is off by up to %d LSB from "
                             "sox's conversion (peak %d, sox's peak %d)" %
                             (n, soxi(path, "-e"), worst, peak_mine,
                              peak_want))

    # -- 4 --

    def test_4_bad_output_fails_attempts(self):
        """Output that is not audio, is cut short, has no frames, or never
        comes fails the attempt with a reason; attempt 2 is done."""
        knobs = {2: "WW_GARBAGE", 3: "WW_BROKEN", 4: "WW_EMPTY",
                 5: "WW_CRASH", 6: "WW_HANG"}
        script = 'case "$JOBFS_CHUNK" in %s esac' % " ".join(
            "%d) export %s=1;;" % (n, k) for n, k in knobs.items())
        job = self.d.mkjob("bad", {
            "command": sh_wrapper(script), "output": "wav", "parallel": 6,
            "timeout": 1, "env": {"WW_FAIL_ATTEMPTS": "1"},
            "backoff": {"initial": 0.1, "factor": 1, "max": 0.1}},
            h.paragraphs(6))
        self.d.run_job(job, timeout=30)
        ev = self.d.events(job)

        def first_failure(n):
            bad = [e for e in ev if e.get("chunk") == n and
                   e["event"] in ("failed", "timeout")]
            self.assertTrue(bad, "chunk %d (%s) never failed: %s" %
                            (n, knobs[n], [e for e in ev
                                           if e.get("chunk") == n]))
            self.assertEqual(bad[0]["attempt"], 1)
            return bad[0]

        for n in (2, 3):
            e = first_failure(n)
            self.assertEqual(e["event"], "failed")
            self.assertTrue(e.get("error", "").startswith(
                "output is not audio: "), "chunk %d (%s): %r" %
                (n, knobs[n], e))
        e = first_failure(4)
        self.assertEqual(e.get("error"), "output has no audio frames")
        e = first_failure(5)
        self.assertEqual(e.get("error"), "killed by SIGSEGV", e)
        self.assertEqual(e.get("signal"), 11, e)
        e = first_failure(6)
        self.assertEqual(e["event"], "timeout", e)
        self.assertTrue(e.get("error", "").startswith("timeout"), e)
        for n in range(1, 7):
            done = h.chunk_events(ev, "done", n)
            self.assertEqual([d["attempt"] for d in done],
                             [1] if n == 1 else [2],
                             "chunk %d done events" % n)
        # the failures left nothing behind: the join is the 6 good chunks
        files = self.chunk_files(job)
        self.assertEqual(len(files), 6)
        per = [soxi_samples(p) for p in files]
        data, info = self.check_wav(self.d.path(job, "output.wav"))
        self.assertEqual(info["frames"], sum(per))
        self.assertEqual(data[info["data_off"]:], b"".join(
            wav_data(h.read_bytes(p)) for p in files))

    # -- 5 --

    def test_5_mismatched_rate(self):
        """A chunk at another rate: the job is done, output.wav is not
        produced, and status says which chunk and why."""
        job = self.d.mkjob("mis", {
            "command": [WAVWORKER], "output": "wav", "parallel": 2,
            "env": {"WW_RATE_BAD": "16000", "WW_CHUNKS": "3"}},
            h.paragraphs(4))
        sj = self.d.run_job(job)
        self.assertEqual(sj["state"], "done")
        self.assertEqual(self.d.chunk_names(job),
                         ["%04d.wav" % i for i in range(1, 5)])
        self.assertEqual(soxi(self.d.path(job, "chunks", "0003.wav"), "-r"),
                         "16000")
        self.assertNotIn("output.wav", os.listdir(self.d.path(job)))
        self.assertErrno(h.errno_of(os.stat, self.d.path(job, "output.wav")),
                         errno.ENOENT, "stat output.wav")
        self.assertErrno(h.errno_of(h.read_bytes,
                                    self.d.path(job, "output.wav")),
                         errno.ENOENT, "open output.wav")
        st = self.d.status(job)
        lines = [x for x in st.splitlines() if x.startswith("mismatch")]
        self.assertEqual(len(lines), 1, st)
        self.assertTrue(lines[0].startswith("mismatch chunk 3 is 16000 Hz"),
                        lines[0])
        self.assertIn("22050 Hz", lines[0])
        mis = self.d.sj(job)["audio"]["mismatched"]
        self.assertEqual([m["chunk"] for m in mis], [3], mis)
        self.assertEqual(mis[0]["rate"], 16000)

    # -- 6 --

    def test_6_listen_while_rendering(self):
        """While chunk 4 renders, output.wav is a valid WAV of chunks 1-3
        (even with 5 and 6 done); when it is done, of all six."""
        job = self.d.mkjob("live", {
            "command": sh_wrapper('[ "$JOBFS_CHUNK" = 4 ] && sleep 3'),
            "output": "wav", "parallel": 2}, h.paragraphs(6))
        self.d.do(job, "resume")
        before = ["0001.wav", "0002.wav", "0003.wav", "0005.wav",
                  "0006.wav"]
        self.d.wait_until(lambda: self.d.chunk_names(job) == before,
                          timeout=10, what="chunks 1-3, 5, 6 done")
        out = self.d.path(job, "output.wav")
        self.assertIn("output.wav", os.listdir(self.d.path(job)))
        data, info = self.check_wav(out)
        files = self.chunk_files(job)
        per = [soxi_samples(p) for p in files]
        self.assertEqual(self.d.chunk_names(job), before,
                         "chunk 4 finished while output.wav was read: the "
                         "check is void")
        self.assertEqual(soxi_samples(out), sum(per[:3]),
                         "output.wav while chunk 4 runs")
        self.assertEqual(data[info["data_off"]:], b"".join(
            wav_data(h.read_bytes(p)) for p in files[:3]))
        copy = os.path.join(self.tmp, "partial.wav")
        run(["cp", out, copy])
        self.assertEqual(h.read_bytes(copy), data)

        self.d.wait_for(job, "done", timeout=15)
        files = self.chunk_files(job)
        self.assertEqual(len(files), 6)
        per = [soxi_samples(p) for p in files]
        data, info = self.check_wav(out)
        self.assertEqual(info["frames"], sum(per))
        self.assertEqual(data[info["data_off"]:], b"".join(
            wav_data(h.read_bytes(p)) for p in files))

    # -- 7 --

    def test_7_kill9_resume_same_bytes(self):
        """kill -9 mid-render, mount again: the job resumes and output.wav
        is byte-identical to an uninterrupted run's."""
        spec = {"command": sh_wrapper("sleep 0.3"), "output": "wav",
                "parallel": 2}
        text = h.paragraphs(12, tag="k")
        ref = self.new_daemon()
        ref.mkjob("k", spec, text)
        ref.do("k", "resume")
        self.d.mkjob("k", spec, text)
        self.d.do("k", "resume")
        time.sleep(1.0)
        done_before = self.d.chunk_names("k")
        self.assertTrue(0 < len(done_before) < 12,
                        "kill at %d of 12 chunks done proves nothing" %
                        len(done_before))
        self.d.kill9()

        d2 = self.new_daemon(store=self.d.store, mnt=self.d.mnt)
        d2.wait_for("k", "done", timeout=30)
        ref.wait_for("k", "done", timeout=30)
        # chunks done before the kill did not run again
        ev = d2.events("k")
        resumed = [i for i, e in enumerate(ev) if e["event"] == "resumed"]
        self.assertTrue(resumed, "no 'resumed' event after the remount")
        after = ev[resumed[-1]:]
        for name in done_before:
            n = int(name[:4])
            self.assertEqual(h.chunk_events(after, "started", n), [],
                             "chunk %d was done before the kill and ran "
                             "again" % n)
        got = h.read_bytes(d2.path("k", "output.wav"))
        want = h.read_bytes(ref.path("k", "output.wav"))
        self.assertEqual(sha(got), sha(want),
                         "output.wav after kill -9 and resume differs")
        _, info = self.check_wav(d2.path("k", "output.wav"))
        self.assertEqual(info["frames"], sum(
            soxi_samples(d2.path("k", "chunks", n))
            for n in d2.chunk_names("k")))

    # -- 8 --

    def wait_encoded(self, d, job, timeout=20):
        def ready():
            au = d.sj(job)["audio"]
            enc = au and au.get("encoded")
            return enc if enc and enc["state"] == "ready" else None
        return d.wait_until(ready, timeout, "%s encoded" % job)

    def check_flac(self, d, job):
        """output.flac holds exactly output.wav's samples."""
        wav = d.path(job, "output.wav")
        flac = d.path(job, "output.flac")
        self.assertIn("output.flac", os.listdir(d.path(job)))
        self.assertEqual(soxi(flac, "-t"), "flac")
        self.assertEqual(soxi_samples(flac), soxi_samples(wav))
        self.assertEqual(soxi(flac, "-r"), soxi(wav, "-r"))
        dec = os.path.join(self.tmp, "dec.wav")
        run(["sox", flac, dec])
        got = wav_data(h.read_bytes(dec))
        want = wav_data(h.read_bytes(wav))
        self.assertEqual(len(got), len(want), "decoded FLAC length")
        # a soft check: what follows (remount, retry) still runs
        with self.subTest(check="output.flac samples == output.wav's"):
            if got != want:
                a, b = s16(got), s16(want)
                diff = [i for i in range(len(a)) if a[i] != b[i]]
                self.fail("output.flac decodes to other samples than "
                          "output.wav: %d of %d differ, first at frame %d "
                          "(flac %d, wav %d), worst %d LSB, all where "
                          "|wav| >= %d" %
                          (len(diff), len(a), diff[0], a[diff[0]],
                           b[diff[0]],
                           max(abs(a[i] - b[i]) for i in diff),
                           min(abs(b[i]) for i in diff)))
        st = os.stat(flac)
        self.assertEqual(st.st_size, len(h.read_bytes(flac)))
        return sha(h.read_bytes(flac))

    def test_8_flac(self):
        """output.flac: same samples as output.wav, survives a remount,
        goes stale on retry and comes back."""
        flag = os.path.join(self.tmp, "longer")
        job = self.d.mkjob("fl", {
            "command": sh_wrapper(
                '[ "$JOBFS_CHUNK" = 2 ] && [ -e %s ] && '
                '{ sleep 1; export WW_FRAMES=5000; }' % flag),
            "output": "flac", "parallel": 2}, h.paragraphs(4))
        self.d.run_job(job)
        enc = self.wait_encoded(self.d, job)
        self.assertEqual(enc["file"], "flac")
        digest = self.check_flac(self.d, job)
        self.assertEqual(enc["size"],
                         os.stat(self.d.path(job, "output.flac")).st_size)
        self.assertRegex(self.d.status(job),
                         r"(?m)^encode +output\.flac ready \(%d bytes\)$"
                         % enc["size"])
        old_frames = soxi_samples(self.d.path(job, "output.wav"))
        old_c2 = soxi_samples(self.d.path(job, "chunks", "0002.wav"))

        # a clean remount on the same store: still there, not re-encoded
        self.d.stop(keep_dirs=True)
        d = self.new_daemon(store=self.d.store, mnt=self.d.mnt)
        n_encoded = len([e for e in d.events(job)
                         if e["event"] == "encoded"])
        self.assertEqual(d.sj(job)["audio"]["encoded"]["state"], "ready")
        self.assertEqual(self.check_flac(d, job), digest,
                         "output.flac changed across a remount")
        time.sleep(0.3)
        self.assertEqual(len([e for e in d.events(job)
                              if e["event"] == "encoded"]), n_encoded,
                         "encoded again after a remount")

        # retry 2 (which now renders 5000 frames): stale at once
        with open(flag, "w"):
            pass
        d.do(job, "retry 2")
        self.assertNotIn("output.flac", os.listdir(d.path(job)))
        self.assertErrno(h.errno_of(os.stat, d.path(job, "output.flac")),
                         errno.ENOENT, "stat output.flac after retry 2")
        self.assertNotEqual(d.sj(job)["audio"]["encoded"]["state"], "ready")
        d.wait_for(job, "done", timeout=15)
        self.wait_encoded(d, job)
        self.assertNotEqual(self.check_flac(d, job), digest)
        self.assertEqual(soxi_samples(d.path(job, "output.wav")),
                         old_frames - old_c2 + 5000)

    def test_8_ogg(self):
        """output.ogg, if this libsndfile has Vorbis: same length, rate
        and channels as output.wav."""
        can = libsndfile_can(SF_FORMAT_OGG, SF_FORMAT_VORBIS)
        if not can:
            print("SKIP ogg: libsndfile here %s" %
                  ("cannot be loaded" if can is None else "lacks Vorbis"))
            return
        d = self.d
        job = d.mkjob("og", {"command": [WAVWORKER], "output": "ogg",
                             "parallel": 2}, h.paragraphs(3))
        d.run_job(job)
        enc = self.wait_encoded(d, job)
        self.assertEqual(enc["file"], "ogg")
        ogg = d.path(job, "output.ogg")
        wav = d.path(job, "output.wav")
        self.assertIn("output.ogg", os.listdir(d.path(job)))
        self.assertNotIn("output.flac", os.listdir(d.path(job)))
        self.assertEqual(soxi(ogg, "-t"), "vorbis")
        self.assertEqual(soxi_samples(ogg), soxi_samples(wav))
        self.assertEqual(soxi(ogg, "-r"), soxi(wav, "-r"))
        self.assertEqual(soxi(ogg, "-c"), soxi(wav, "-c"))
        self.assertEqual(os.stat(ogg).st_size, enc["size"])
        self.assertEqual(len(h.read_bytes(ogg)), enc["size"])

    # -- 9 --

    def test_9_spec_errors(self):
        """An audio spec with another extension is refused with a reason;
        the spec in force stays."""
        job = self.d.mkjob("sp")
        good = {"command": [WAVWORKER], "output": "wav"}
        self.d.set_spec(job, good)
        before = h.read_bytes(self.d.path(job, "spec"))
        rc = h.write_file(self.d.path(job, "spec"), json.dumps(
            {"command": [WAVWORKER], "output": "wav", "ext": "mp3"}) + "\n")
        self.assertErrno(rc, errno.EINVAL, "spec with ext mp3")
        st = self.d.status(job)
        self.assertRegex(st, r"(?m)^rejected .*'ext'.*\"wav\".*mp3")
        self.assertIn("mp3", self.d.reason(job))
        self.assertEqual(h.read_bytes(self.d.path(job, "spec")), before)
        # gaps apply to audio only
        rc = h.write_file(self.d.path(job, "spec"), json.dumps(
            {"command": "cat", "join": {"gap_ms": 300}}) + "\n")
        self.assertErrno(rc, errno.EINVAL, "join.gap_ms without audio")
        self.assertIn("gap_ms", self.d.reason(job))


if __name__ == "__main__":
    h.main()
