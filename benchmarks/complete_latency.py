"""Per-keystroke latency of word completion (3 completions) while typing test text, typing-session style.

    PYTHONPATH=src python benchmarks/complete_latency.py [--run RUN] [--data data/dasher] [--chars 300] [--beam 4]

A user types the first `--chars` characters of the test text of each of `--langs` languages from an empty text
box; every keystroke asks one `Completer` (kept for the whole session, as the server keeps one) for 3
completions of the prefix. Prints wall-clock p50/p90/p99 and this thread's CPU-time p50 in milliseconds (CPU
time is what one core spends; wall time also counts waiting for a busy machine), and how many next-character
distributions the model computed per keystroke (the rest came from the previous keystrokes' search trees).
Target (issue 13): p50 <= 10 ms on one core with the default model.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

from nextchar import engine
from nextchar.complete import Completer, CompletionConfig
from nextchar.data import open_data


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="run or model folder (default: the shipped model)")
    ap.add_argument("--data", default="data/dasher")
    ap.add_argument("--langs", nargs="+", default=["en", "de", "es", "ru", "he", "bn"])
    ap.add_argument("--chars", type=int, default=300, help="characters typed per language")
    ap.add_argument("--beam", type=int, default=CompletionConfig.beam)
    ap.add_argument("--max-chars", type=int, default=CompletionConfig.max_chars)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.run is None:
        from nextchar.models import default_model

        args.run = str(default_model())
    pred = engine.load(args.run)
    ds = open_data(args.data)
    cfg = CompletionConfig(beam=args.beam, max_chars=args.max_chars)
    completer = Completer(pred, cfg)
    completer.complete("Warm up the model. ", 3)
    wall, cpu, computed, calls = [], [], [], []
    for lang in args.langs:
        text = ds.text(lang, "test")[:args.chars]
        for i in range(len(text) + 1):
            prefix = text[:i]
            before, before_calls = completer.computed, completer.calls
            t, c = time.perf_counter(), time.thread_time()
            completer.complete(prefix, 3)
            wall.append(time.perf_counter() - t)
            cpu.append(time.thread_time() - c)
            computed.append(completer.computed - before)
            calls.append(completer.calls - before_calls)
    ms, cms = np.array(wall) * 1e3, np.array(cpu) * 1e3
    print(f"model {pred.run_id} ({type(pred).__name__}), beam {cfg.beam}, max_chars {cfg.max_chars}, "
          f"threads {args.threads}, {len(ms)} keystrokes in {', '.join(args.langs)}")
    print(f"wall ms  p50 {np.percentile(ms, 50):.2f}  p90 {np.percentile(ms, 90):.2f}  p99 {np.percentile(ms, 99):.2f}"
          f"  mean {ms.mean():.2f}")
    print(f"cpu ms   p50 {np.percentile(cms, 50):.2f}  p90 {np.percentile(cms, 90):.2f}")
    print(f"distributions computed per keystroke: mean {np.mean(computed):.1f}, p50 {np.median(computed):.0f}; "
          f"model calls per keystroke: mean {np.mean(calls):.2f}, p50 {np.median(calls):.0f}")
    # the scale of this machine right now: one search step of the model (4 hypotheses, one new id each)
    if pred.incremental:
        ids = pred.encode(ds.text(args.langs[0], "test")[:40])
        state, _ = pred.feed(pred.start(), ids)
        step = np.full(4, int(ids[-1]))
        t = []
        for _ in range(200):
            t0 = time.perf_counter()
            pred.feed_many([state] * 4, step)
            t.append(time.perf_counter() - t0)
        print(f"one batched model step (4 hypotheses, 41 ids of context): p50 {1e3 * np.median(t):.2f} ms, "
              f"min {1e3 * np.min(t):.2f} ms")
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main(sys.argv[1:])
