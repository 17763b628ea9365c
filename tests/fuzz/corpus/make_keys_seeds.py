#!/usr/bin/env python3
"""make_keys_seeds.py - (re)make the seeds of corpus/fuzz_keys.

fuzz_keys reads its input as a little program (see the top of
tests/fuzz/fuzz_keys.c); the seeds are written here in that encoding so
that each one says what it exercises. Run only to change them:

    tests/fuzz/corpus/make_keys_seeds.py
"""
import os

# indices into pick_job()'s and pick_n()'s tables in fuzz_keys.c
JOB_IDS = [0, 1, 2, 3, 255, 256, 257, 0xffff, 0x10000, 0xffffffff,
           2**32, 2**32 + 1, 0xff00000000000000, 0x00ffffffffffffff,
           0x0100000000000000, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1]
CHUNK_NS = [0, 1, 2, 3, 255, 256, 257, 0xffff, 0x10000, 0xffffff,
            0x1000000, 0x7fffffff, 0x80000000, 2**32 - 2, 2**32 - 1]


def job(v):
    return bytes([JOB_IDS.index(v)])


def n(v):
    if v in CHUNK_NS:
        return bytes([CHUNK_NS.index(v)])
    assert 1 <= v <= 16, v
    return bytes([0x40 + v - 1])     # 0x40..0xdf: 1 + (b & 15)


def err_text(text):
    """An error text taken from the input: b odd, 0x20 <= b < 0xe0,
    length b & 63."""
    if len(text) % 2 == 0:
        text += b'.'
    return bytes([0x20 | len(text)]) + text


NO_ERR = b'\x00'                     # b < 0x20: NULL
LONG_ERR = bytes([0xe1]) + b'x' * 260  # DB_ERR_MAX - 4 + 1 bytes from input


def put(j, c, e=NO_ERR):
    return b'\x00' + job(j) + n(c) + e


def get(j, c):
    return b'\x03' + job(j) + n(c) + b'\x00'


def walk(j, frm, stop=0):
    return bytes([4 | stop << 4]) + job(j) + n(frm) + b'\x00'


def del_all(j):
    return b'\x05' + job(j) + b'\x00'


COMMIT, ABORT, CHECK, NEXT_ID = b'\x8b', b'\x0b', b'\x0a', b'\x8a'


def name(s):
    assert len(s) < 12
    return bytes([len(s)]) + s


def job_put(nm, spec=b''):
    return b'\x06' + name(nm) + b'\xff' + bytes([len(spec)]) + spec


def job_get(nm):
    return b'\x07' + name(nm) + b'\x00'


def job_del(nm):
    return b'\x08' + name(nm) + b'\x00'


def obj(k, plus):
    return b'\x09' + bytes([(k << 1) | (1 if plus else 0)]) + b'\x00\x10'


SEEDS = {
    'adjacent-ids': put(255, 1) + put(255, 2) + put(256, 0) + put(256, 1) +
    put(257, 2**32 - 1) + walk(255, 0) + walk(256, 0) + walk(256, 1) +
    COMMIT + walk(255, 2) + get(256, 0) + get(255, 3),
    'edge-ids': put(2**64 - 1, 2**32 - 1) + put(2**64 - 2, 0) + put(0, 0) +
    put(2**63, 1) + put(2**63 - 1, 2**32 - 1) + walk(2**64 - 1, 0) +
    walk(2**63 - 1, 0) + walk(2**63, 0) + walk(0, 1) + COMMIT + CHECK,
    'order-within-job': put(1, 0x10000) + put(1, 256) + put(1, 0xffff) +
    put(1, 255) + put(1, 0x1000000) + put(1, 0x80000000) + put(1, 1) +
    walk(1, 0) + walk(1, 257) + walk(1, 0, stop=2) + COMMIT,
    'err-texts': put(2, 1, err_text(b'exit 1')) + put(2, 2) +
    put(2, 3, LONG_ERR) + put(2, 2**32 - 1, bytes([0x23]) + b'\x00\x00\x00') +
    get(2, 1) + get(2, 3) + walk(2, 0) + COMMIT + get(2, 3),
    'del-all': put(256, 1) + put(256, 2) + put(255, 9) + put(257, 0) +
    COMMIT + del_all(256) + walk(255, 0) + walk(257, 0) + ABORT +
    walk(256, 0) + del_all(256) + COMMIT + CHECK,
    'abort-reverts': put(3, 1) + COMMIT + put(3, 2) +
    put(3, 1, err_text(b'changed')) + ABORT + get(3, 1) + get(3, 2) + CHECK,
    'overwrite': put(1, 1, err_text(b'first')) +
    put(1, 1, err_text(b'second, longer')) + put(1, 1) + get(1, 1) +
    COMMIT + get(1, 1),
    'jobs': job_put(b'a', b'{"command": "c"}') + job_put(b'b') +
    job_put(b'ab', b'x') + job_put('\u00e9t\u00e9'.encode()) +
    job_get(b'a') + job_get(b'missing') + CHECK + COMMIT + job_del(b'ab') +
    CHECK + job_del(b'nope') + COMMIT,
    'job-empty-name': job_put(b'ok') + COMMIT + job_put(b'') + CHECK,
    # 0xf7: a name of 511 + 4 bytes, past LMDB's key limit
    'job-long-name': job_put(b'ok') + b'\x06\xf7\xff\x00' + CHECK +
    b'\x07\xf4\x00' + CHECK,
    'objects': obj(1, True) + obj(1, True) + obj(2, True) + obj(1, False) +
    COMMIT + obj(1, False) + obj(1, False) + CHECK,
    'next-id': NEXT_ID + NEXT_ID + COMMIT + NEXT_ID + ABORT + NEXT_ID + COMMIT,
    'mixed': put(0xffffffff, 1) + put(2**32, 1) + job_put(b'j1', b'{}') +
    obj(3, True) + NEXT_ID + COMMIT + walk(0xffffffff, 0) + walk(2**32, 0) +
    del_all(2**32) + job_del(b'j1') + obj(3, False) + CHECK,
}


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       'fuzz_keys')
    os.makedirs(out, exist_ok=True)
    for nm, data in SEEDS.items():
        with open(os.path.join(out, nm), 'wb') as f:
            f.write(data)
    print(len(SEEDS), 'seeds in', out)


if __name__ == '__main__':
    main()
