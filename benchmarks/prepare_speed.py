"""Seconds per MB of `prepare` on ordinary and pathological text: time must stay linear in the input on any text.

    nice -n 5 python benchmarks/prepare_speed.py                # each case at 1 MB and 4 MB
    nice -n 5 python benchmarks/prepare_speed.py --mb 2 8 --cases dasher marks-alt

Each case is one language file of the given size, prepared (normalize, split, vocabulary, encode, write) into a
fresh data dir under --dir in this process; the line printed is the wall time over the input's size. Linear time
means the same s/MB at every size. "dasher" is the Dasher training texts of all 24 languages, concatenated and
repeated (fetched into the nextchar cache if needed); the others are single long lines a user could hand us by
mistake: combining-mark runs (sorted by NFC in time quadratic in the run: issue 14, fault 6, 78 s for 640 KB before
the mark cap), marks hidden between deleted control characters, a decomposing mark (U+0F73), Hangul vowel jamo and
Indic vowel signs (no place to cut the line between chunks), whitespace runs and bare carriage returns.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path


def _dasher() -> str:
    from nextchar.corpus import dasher_sources

    return "\n\n".join(files[0].read_bytes().decode("utf-8", "replace").replace("\x00", "")
                       for _, files in sorted(dasher_sources().items()))


# name -> (unit text to repeat, what it stands for)
CASES = {
    "dasher": (None, "the 24 Dasher texts (ordinary text)"),
    "marks-alt": ("\u0301\u0316", "one line alternating U+0301/U+0316 (the issue's example)"),
    "marks-base": ("a\u0301\u0316\u0301\u0316\u0301", "short runs on a base letter, no spaces"),
    "marks-ctrl": ("\u0301\x01\u0316\x02", "marks between control characters that prepare deletes"),
    "tibetan-0f73": ("\u0f73", "U+0F73: class 0 but decomposes into two marks"),
    "hangul-v": ("\u1161", "a line of Hangul vowel jamo (never a safe cut)"),
    "tamil-signs": ("\u0bbe\u0bd7", "a line of Tamil vowel signs (never a safe cut)"),
    "han-no-space": ("\u5317\u4eac\u662f\u4e2d\u56fd\u7684\u9996\u90fd", "Chinese without spaces or newlines"),
    "spaces": (" \t\u3000", "one whitespace run"),
    "cr": ("\r", "bare carriage returns (each a line break)"),
    "blank-lines": ("\n \n\t", "blank lines"),
}


def make_text(case: str, n_bytes: int, dasher: str | None) -> bytes:
    unit = CASES[case][0]
    if unit is None:
        base = dasher.encode("utf-8")
        data = base * (n_bytes // len(base) + 1)
        return data[:n_bytes].rsplit(b"\n", 1)[0]  # whole lines only
    # a few words around the pathological part, so every split and the vocabulary have something to hold
    body = unit * (n_bytes // len(unit.encode("utf-8")))
    return ("lorem ipsum dolor sit amet " * 40 + body + " consectetur adipiscing elit" * 40).encode("utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, nargs="+", default=[1.0, 4.0], help="input sizes in MB (1e6 bytes)")
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temp dir, deleted)")
    args = ap.parse_args()

    import torch  # noqa: F401  (imported by nextchar anyway; keep it out of the first timing)

    from nextchar.corpus import prepare
    from nextchar.text import _mark_table

    _mark_table()  # built once per process (~0.2 s): not part of any case
    dasher = _dasher() if "dasher" in args.cases else None
    scratch = Path(tempfile.mkdtemp(prefix="prepare-speed-", dir=args.dir))
    print(f"{'case':<14} {'MB':>6} {'seconds':>8} {'s/MB':>7}  what")
    try:
        for case in args.cases:
            for mb in args.mb:
                corpus = scratch / "corpus"
                shutil.rmtree(corpus, ignore_errors=True)
                corpus.mkdir()
                raw = make_text(case, int(mb * 1e6), dasher)
                (corpus / "xx.txt").write_bytes(raw)
                out = scratch / "data"
                t0 = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    prepare(out, corpus)
                dt = time.perf_counter() - t0
                size = len(raw) / 1e6
                print(f"{case:<14} {size:6.2f} {dt:8.2f} {dt / size:7.3f}  {CASES[case][1]}", flush=True)
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
