#!/usr/bin/env python3
"""integrity.py - damaged outputs are found by verify, and never served
after it.

Runs a job, then damages random done objects in the store behind the
daemon's back: flips a byte at a random offset, truncates, or removes the
file. Then `echo verify > control` must:

  V1  find every damaged chunk (100 %), each with a "corrupt" event;
  V2  send exactly those chunks back to pending (the others stay done);
  V3  never serve the damaged bytes afterwards: the chunk's file is gone
      from chunks/, output.out stops before it, and a resume rebuilds it
      with the original bytes.

Reads do not verify (docs/reliability.md says why), so this suite does not
claim anything about reads before verify.

  tests/crash/integrity.py [--rounds 20] [--chunks 40] [--seed S]

The last line reads
  integrity: rounds=N damaged=N found=N false_alarms=N served_after=N restored=yes|no
and the exit status is 1 when found < damaged or any other figure misses.
"""

import argparse
import hashlib
import os
import random
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness as h  # noqa: E402


def obj_path(store, sha):
    return os.path.join(store, "objects", sha[:2], sha)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--chunks", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    fig = {"rounds": 0, "damaged": 0, "found": 0, "false_alarms": 0,
           "served_after": 0}
    restored = True
    d = h.Daemon(grace=2)
    d.start()
    try:
        text = h.paragraphs(a.chunks, tag="integ")
        d.mkjob("j", {"command": [h.TESTWORKER], "parallel": 2,
                      "env": {"TW_SIZE": "5000"}}, text)
        d.run_job("j", timeout=120)
        want = h.read_bytes(d.path("j", "output.out"))
        for _ in range(a.rounds):
            fig["rounds"] += 1
            m = d.manifest("j")
            done = [c for c in m["chunks"] if c["state"] == "done"]
            hit = rng.sample(done, rng.randint(1, min(4, len(done))))
            hit_n = set()
            for c in hit:
                p = obj_path(d.store, c["output_sha256"])
                how = rng.choice(("flip", "truncate", "remove"))
                if how == "flip":
                    with open(p, "r+b") as f:
                        data = f.read()
                        i = rng.randrange(len(data))
                        f.seek(i)
                        f.write(bytes([data[i] ^ (1 << rng.randrange(8))]))
                elif how == "truncate":
                    os.truncate(p, rng.randrange(c["size"]))
                else:
                    os.unlink(p)
                hit_n.add(c["chunk"])
            fig["damaged"] += len(hit_n)
            before = len(d.events("j"))
            d.do("j", "verify")
            evs = d.events("j")[before:]
            corrupt = {e["chunk"] for e in evs if e["event"] == "corrupt"}
            fig["found"] += len(corrupt & hit_n)
            fig["false_alarms"] += len(corrupt - hit_n)
            m = d.manifest("j")
            names = set(os.listdir(d.path("j", "chunks")))
            for c in m["chunks"]:
                damaged = c["chunk"] in hit_n
                if damaged and (c["state"] == "done" or
                                "%04d.out" % c["chunk"] in names):
                    fig["served_after"] += 1
                if not damaged and c["state"] != "done":
                    fig["false_alarms"] += 1
            out = h.read_bytes(d.path("j", "output.out"))
            first = min(hit_n)
            if out != want[:len(out)] or len(out) > sum(
                    c["size"] for c in m["chunks"][:first - 1]):
                fig["served_after"] += 1
            d.do("j", "resume")
            d.wait_for("j", "done", 120)
            if h.read_bytes(d.path("j", "output.out")) != want:
                restored = False
            for c in d.manifest("j")["chunks"]:
                p = obj_path(d.store, c["output_sha256"])
                with open(p, "rb") as f:
                    if hashlib.sha256(f.read()).hexdigest() != \
                            c["output_sha256"]:
                        restored = False
    finally:
        d.stop()
    print("integrity: " + " ".join("%s=%d" % kv for kv in fig.items()) +
          " restored=" + ("yes" if restored else "no"))
    ok = (fig["found"] == fig["damaged"] and not fig["false_alarms"] and
          not fig["served_after"] and restored)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
