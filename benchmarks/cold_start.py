"""Cold-start time of `nextchar predict "Hello wor"`: wall and CPU seconds of fresh processes, median of N.

    python benchmarks/cold_start.py --case onnx=/tmp/default-onnx --case ngram=runs/ngram6 \
        --case torch=src/nextchar/models/default:torch [--nextchar .venv/bin/nextchar] [--runs 7]

Each case is NAME=FOLDER[:BACKEND]; the command runs in a new process each time (`--threads 1`), so imports and
model loading count, as they do for a user. CPU time is the child's user + system time, which a busy machine
inflates less than the wall clock. Prints one line per case and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def one_run(cmd: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", action="append", required=True, help="NAME=FOLDER[:BACKEND] (repeatable)")
    ap.add_argument("--nextchar", default=str(Path(sys.executable).parent / "nextchar"), help="the console script")
    ap.add_argument("--prefix", default="Hello wor")
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    print(f"# load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; median of {args.runs} cold runs")
    print(f"{'case':<24}{'wall s':>8}{'cpu s':>8}")
    for case in args.case:
        name, _, spec = case.partition("=")
        folder, _, backend = spec.partition(":")
        cmd = [args.nextchar, "predict", "--run", folder, args.prefix, "--threads", "1",
               "--backend", backend or "auto"]
        runs = [one_run(cmd) for _ in range(args.runs)]
        print(f"{name:<24}{statistics.median(w for w, _ in runs):>8.2f}{statistics.median(c for _, c in runs):>8.2f}",
              flush=True)
    print(f"# load average {os.getloadavg()[0]:.1f} after")


if __name__ == "__main__":
    main()
