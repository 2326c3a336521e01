"""Larger-than-memory corpora: generate N GB of text, run prepare and a few training steps, print peak RSS of each.

    python benchmarks/large_corpus.py --gb 0.1 1          # two sizes: memory should not grow with the corpus

The corpus repeats the Dasher training texts (fetched into the nextchar cache if needed) with their lines
shuffled on every repetition, written as one folder of 64 MB shards per language (<lang>/part-NNNN.txt), the
way a large corpus arrives. prepare and train each run in a fresh process that reports its own peak resident set
(resource.getrusage ru_maxrss), so one stage's memory never hides another's. Everything goes under --dir and is
deleted afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

SHARD_BYTES = 64 << 20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def generate(dest: Path, gb: float, seed: int = 0) -> int:
    """Write about gb x 1e9 bytes of shuffled Dasher text as <lang>/part-NNNN.txt shards; returns bytes written."""
    from nextchar.corpus import dasher_sources

    # NULs dropped: a few stray ones are fine in a big text, but shuffled into the first 8000 bytes read as binary
    raws = {lang: files[0].read_bytes().replace(b"\x00", b"") for lang, files in dasher_sources().items()}
    total = sum(len(r) for r in raws.values())
    rng = random.Random(seed)
    written = 0
    for lang, raw in sorted(raws.items()):
        lines = raw.split(b"\n")
        want = int(gb * 1e9 * len(raw) / total)
        (dest / lang).mkdir(parents=True, exist_ok=True)
        n, k = 0, 0
        while n < want:
            with open(dest / lang / f"part-{k:04d}.txt", "wb") as shard:
                size = 0
                while size < SHARD_BYTES and n + size < want:
                    rng.shuffle(lines)  # a perturbed repetition: same language, another order of lines
                    block = b"\n".join(lines) + b"\n\n"
                    shard.write(block)
                    size += len(block)
            n, k = n + size, k + 1
        written += n
    return written


def stage_prepare(corpus: Path, data: Path) -> dict:
    from nextchar.corpus import prepare

    t0 = time.perf_counter()
    stats = prepare(data, corpus)
    chars = sum(e["train"] + e["dev"] + e["test"] for e in stats["languages"].values())
    return {"seconds": time.perf_counter() - t0, "chars": chars, "peak_rss_mb": peak_rss_mb()}


def stage_train(data: Path, run: Path, steps: int) -> dict:
    import torch

    from nextchar.config import load
    from nextchar.train import train

    torch.set_num_threads(1)
    cfg = load("quick")
    t = cfg.train
    t.max_steps, t.threads, t.device, t.eval_every, t.eval_positions, t.final_eval_positions = \
        steps, 1, "cpu", 10**9, 20, 20
    t0 = time.perf_counter()
    res = train(data, run, cfg, progress=False)
    return {"seconds": time.perf_counter() - t0, "tokens": res["tokens"], "peak_rss_mb": peak_rss_mb()}


def run_stage(*args: str) -> dict:
    """Run a stage in a fresh process; its last stdout line is the JSON result."""
    r = subprocess.run([sys.executable, __file__, "--stage", *args], capture_output=True, text=True, check=False)
    if r.returncode:
        sys.exit(f"stage {args[0]} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, nargs="+", default=[1.0], help="corpus size(s) in GB (1e9 bytes)")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/nextchar-large"))
    ap.add_argument("--steps", type=int, default=20, help="training steps after prepare")
    ap.add_argument("--keep", action="store_true", help="keep the generated corpus and data dirs")
    ap.add_argument("--stage", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        kind, *paths = args.stage
        res = stage_prepare(Path(paths[0]), Path(paths[1])) if kind == "prepare" else \
            stage_train(Path(paths[0]), Path(paths[1]), int(paths[2]))
        print(json.dumps(res))
        return

    rows = []
    for gb in args.gb:
        root = args.dir / f"{gb:g}gb"
        shutil.rmtree(root, ignore_errors=True)
        t0 = time.perf_counter()
        size = generate(root / "corpus", gb)
        print(f"{gb:g} GB: wrote {size / 1e9:.2f} GB of text in {time.perf_counter() - t0:.0f}s", flush=True)
        prep = run_stage("prepare", str(root / "corpus"), str(root / "data"))
        print(f"  prepare: {prep['seconds']:.0f}s ({size / 1e6 / prep['seconds']:.1f} MB/s), "
              f"peak RSS {prep['peak_rss_mb']:.0f} MB", flush=True)
        tr = run_stage("train", str(root / "data"), str(root / "run"), str(args.steps))
        print(f"  train {args.steps} steps: {tr['seconds']:.0f}s, peak RSS {tr['peak_rss_mb']:.0f} MB", flush=True)
        rows.append((gb, size, prep["chars"], du(root / "data"), prep, tr))
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print(f"{'corpus':>8} {'chars':>14} {'data dir':>9} {'prepare':>8} {'prepare RSS':>12} {'train RSS':>10}")
    for _gb, size, chars, data_bytes, prep, tr in rows:
        print(f"{size / 1e9:>6.2f}GB {chars:>14,} {data_bytes / 1e9:>7.2f}GB {prep['seconds']:>7.0f}s "
              f"{prep['peak_rss_mb']:>9.0f} MB {tr['peak_rss_mb']:>7.0f} MB")


if __name__ == "__main__":
    main()
