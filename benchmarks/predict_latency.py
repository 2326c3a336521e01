"""Per-keystroke latency (incremental and from scratch) and file-mode prefixes/s per model, backend and threads.

Runs are ordinary run directories; weights do not matter for speed, so throwaway ones do:

    python -m nextchar train --data data/dasher --preset modern-2l --out /tmp/bench-2l --max-steps 50 --threads 1
    (the same for modern-4l and modern-12l), then
    python benchmarks/predict_latency.py --run /tmp/bench-2l --run /tmp/bench-4l --run /tmp/bench-12l

Each run is exported to ONNX (fp32 and int8) in a temporary folder. A keystroke is one `Session.topk(prefix, 3)`
while typing dev text (several languages, past the context, a backspace now and then); "scratch" is
`Predictor.topk(prefix, 3)` on the same prefixes. File mode is `topk_batch` on a typing trace (every prefix of
dev text: exact last-context windows, and the windows of a typing session with stride context/2) and on unrelated
prefixes cut anywhere. Targets (issue 5): keystroke p50 <= 1 ms for modern-12l on 1 thread; file mode >= 20,000
prefixes/s for modern-2l on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nextchar import engine
from nextchar.data import open_data
from nextchar.engine import Predictor
from nextchar.engine.folder import data_dir, describe
from nextchar.export import dev_prefixes, export


def typing_prefixes(ds, chars: int, langs: int = 6) -> list[str]:
    """What a user types through `chars` characters of dev text per language, backspacing every 23rd keystroke."""
    out = []
    for lang in sorted(ds.languages)[:: max(1, len(ds.languages) // langs)][:langs]:
        text = ds.text(lang, "dev")
        start = len(text) // 3
        prefix = text[max(0, start - 40):start]  # mid-text, as after a pause
        for i, ch in enumerate(text[start:start + chars]):
            prefix = prefix[:-1] if i % 23 == 22 else prefix + ch
            out.append(prefix)
    return out


def trace(ds, n: int) -> list[str]:
    """A typing trace for file mode: every prefix of dev paragraphs, round-robin over languages, n in all."""
    out, langs, i = [], sorted(ds.languages), 0
    while len(out) < n:
        text = ds.text(langs[i % len(langs)], "dev")
        start = (i // len(langs)) * 1000 % max(1, len(text) - 1)
        para = text[start:start + 600]
        out.extend(para[:j] for j in range(len(para) + 1))
        i += 1
    return out[:n]


def keystrokes(pred: Predictor, prefixes: list[str], incremental: bool, budget: float, warm: int = 20) -> dict:
    """Wall-clock p50/p99 and this thread's CPU-time p50 (ms) of one topk per prefix, within `budget` seconds."""
    session = pred.session(max(1, pred.context // 2))  # the typing window: one recompute per context/2 keys
    step = session.topk if incremental else pred.topk
    for p in prefixes[:warm]:
        step(p, 3)
    session.reset()
    wall, cpu = [], []
    end = time.perf_counter() + budget
    for p in prefixes:
        t, c = time.perf_counter(), time.thread_time()
        step(p, 3)
        wall.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
        if t > end:
            break
    ms = np.array(wall) * 1e3
    return {"p50": np.percentile(ms, 50), "p99": np.percentile(ms, 99), "cpu50": 1e3 * np.median(cpu), "n": len(ms)}


def rate(pred: Predictor, prefixes: list[str], budget: float, stride: int | None = None, chunk: int = 1000) -> float:
    """File-mode prefixes per second (topk_batch over chunks of the file until `budget` seconds have passed)."""
    pred.topk_batch(prefixes[:100], 3, stride=stride)  # warm-up
    done, t = 0, time.perf_counter()
    while done < len(prefixes) and time.perf_counter() - t < budget:
        done += len(pred.topk_batch(prefixes[done:done + chunk], 3, stride=stride))
    return done / (time.perf_counter() - t)


def open_backend(name: str, run: Path, exported: Path, threads: int) -> Predictor:
    torch.set_num_threads(threads)
    if name == "torch":
        return engine.load(run, backend="torch")
    return engine.load(exported, backend=name, threads=threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, action="append", required=True, help="run directory (repeatable)")
    ap.add_argument("--data", type=Path, default=None, help="data dir for texts (default: the run's)")
    ap.add_argument("--backends", default="torch,onnx,onnx-int8")
    ap.add_argument("--threads", default=f"1,{os.cpu_count()}", help="thread counts, comma-separated")
    ap.add_argument("--chars", type=int, default=250, help="characters typed per language (6 languages)")
    ap.add_argument("--scratch", type=int, default=300, help="keystrokes timed from scratch")
    ap.add_argument("--file-prefixes", type=int, default=6000, help="prefixes per file-mode measurement")
    ap.add_argument("--budget", type=float, default=20.0, help="seconds at most per measurement")
    args = ap.parse_args()

    load = os.getloadavg()[0]
    print(f"# {os.cpu_count()} cores, load average {load:.1f} (other processes share these cores), "
          f"torch {torch.__version__}", flush=True)
    head = (f"{'run':<10}{'backend':<10}{'thr':>3}{'key p50':>9}{'p99':>7}{'cpu50':>7}{'scr p50':>9}{'p99':>7}"
            f"{'cpu50':>7}{'trace/s':>9}{'trace s/s':>10}{'random/s':>9}")
    print("# key = incremental Session.topk per keystroke (stride context/2), scr = Predictor.topk from scratch: wall-clock p50/p99 and\n"
          "# the calling thread's CPU time p50, in ms (CPU time is what a quiet machine's wall clock would show at\n"
          "# 1 thread); trace/s = file mode on every prefix of dev text with the exact last-context window,\n"
          "# trace s/s = the same with the typing session's window (stride context/2), random/s = unrelated\n"
          "# prefixes (0..256 characters) cut anywhere; file rates in prefixes per second")
    print(head, flush=True)
    for run in args.run:
        if not (run / "config.json").is_file():
            print(f"{run}: not a run directory, skipped", file=sys.stderr)
            continue
        ds = open_data(data_dir(describe(run), args.data))
        typed = typing_prefixes(ds, args.chars)
        file_trace = trace(ds, args.file_prefixes)
        file_random = dev_prefixes(ds, args.file_prefixes)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "onnx"
            export(run, out, int8=True, positions=0, parity_prefixes=100)
            for threads in [int(t) for t in args.threads.split(",")]:
                for backend in args.backends.split(","):
                    pred = open_backend(backend, run, out, threads)
                    key = keystrokes(pred, typed, True, args.budget)
                    scr = keystrokes(pred, typed[: args.scratch], False, args.budget)
                    exact = rate(pred, file_trace, args.budget)
                    strided = rate(pred, file_trace, args.budget, stride=pred.context // 2)
                    random = rate(pred, file_random, args.budget)
                    print(f"{run.name:<10}{backend:<10}{threads:>3}{key['p50']:>9.3f}{key['p99']:>7.2f}"
                          f"{key['cpu50']:>7.3f}{scr['p50']:>9.3f}{scr['p99']:>7.2f}{scr['cpu50']:>7.3f}"
                          f"{exact:>9,.0f}{strided:>10,.0f}{random:>9,.0f}", flush=True)
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
