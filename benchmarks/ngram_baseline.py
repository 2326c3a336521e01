"""Kneser-Ney n-gram baseline on a prepared data dir: fit time/memory, dev metrics per order, test at the best order."""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np

from nextchar.ngram import NGramModel

START = "\n"  # the protocol's start-of-text: position 0 is predicted from ["\n"]


def read_data(data: Path) -> tuple[dict, list[str], dict[str, dict[str, np.ndarray]]]:
    """stats.json, vocab chars and {lang: {split: ids}}, read straight from the files (no project reader)."""
    try:
        stats = json.loads((data / "stats.json").read_text(encoding="utf-8"))
        chars = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["chars"]
        dtype = np.dtype(stats["dtype"]).newbyteorder("<")
        splits = {
            lang: {
                sp: np.fromfile(data / lang / f"{sp}.bin", dtype=dtype).astype(np.int64)
                for sp in ("train", "dev", "test")
            }
            for lang in stats["languages"]
        }
    except (OSError, KeyError, ValueError, TypeError) as e:
        sys.exit(f"{data}: not a readable prepared data dir ({type(e).__name__}: {e})")
    for lang, counts in stats["languages"].items():
        for sp in ("train", "dev", "test"):
            if splits[lang][sp].size != counts[sp]:
                sys.exit(f"{data / lang / sp}.bin: {splits[lang][sp].size} ids, stats.json says {counts[sp]}")
    return stats, chars, splits


def eval_positions(length: int, n: int) -> np.ndarray:
    """floor((i + 0.5) * L / n) for i < n, in exact integer arithmetic; every position when L <= n."""
    if length <= n:
        return np.arange(length, dtype=np.int64)
    i = np.arange(n, dtype=np.int64)
    return ((2 * i + 1) * length) // (2 * n)


def evaluate(
    model: NGramModel,
    splits: dict[str, dict[str, np.ndarray]],
    split: str,
    n_pos: int,
    start_id: int,
    never: np.ndarray,
    chunk: int = 500,
) -> dict[str, dict[str, float]]:
    """Per-language top-1 / top-3 (never-suggested ids excluded) / nats / bpc, plus the macro mean."""
    keep = max(model.order - 1, 0)
    out: dict[str, dict[str, float]] = {}
    for lang, sp in splits.items():
        arr = sp[split]
        pos = eval_positions(arr.size, n_pos)
        if pos.size == 0:
            continue
        ext = np.concatenate([[start_id], arr])  # ext[p + 1] = arr[p]; ext[:p + 1] is the context of p
        top1 = top3 = nats = 0.0
        for lo in range(0, pos.size, chunk):
            p = pos[lo : lo + chunk]
            probs = model.dist_batch([ext[max(0, q + 1 - keep) : q + 1] for q in p])  # (n, V)
            y = arr[p]  # (n,)
            nats -= np.log(probs[np.arange(p.size), y]).sum()
            probs[:, never] = -1.0  # specials are never suggested, so a true <unk> is always a miss
            top = (
                np.argpartition(-probs, 3, axis=1)[:, :3]
                if probs.shape[1] > 3
                else np.argsort(-probs, axis=1)
            )
            top1 += (probs.argmax(axis=1) == y).sum()
            top3 += (top == y[:, None]).any(axis=1).sum()
        n = pos.size
        out[lang] = {"top1": top1 / n, "top3": top3 / n, "nats": nats / n, "bpc": nats / n / math.log(2)}
    out["macro"] = {k: float(np.mean([m[k] for m in out.values()])) for k in ("top1", "top3", "nats", "bpc")}
    return out


def row(name: str, m: dict[str, float]) -> str:
    return f"{name:<8}{m['top1']:>9.2%}{m['top3']:>9.2%}{m['nats']:>8.3f}{m['bpc']:>8.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--data", type=Path, required=True, help="prepared data dir (stats.json, vocab.json, <lang>/*.bin)"
    )
    ap.add_argument("--orders", default="3,4,5,6,7,8", help="comma-separated n-gram orders to compare on dev")
    ap.add_argument("--positions", type=int, default=2000, help="evaluation positions per language")
    ap.add_argument("--per-language", action="store_true", help="also print the per-language test table")
    args = ap.parse_args()
    try:
        orders = sorted({int(x) for x in args.orders.split(",") if x.strip()})
    except ValueError:
        sys.exit(f"--orders: expected comma-separated integers, got {args.orders!r}")
    if not orders or orders[0] < 1 or args.positions < 1:
        sys.exit("--orders must be >= 1 and --positions >= 1")

    stats, chars, splits = read_data(args.data)
    v = int(stats["vocab_size"])
    if START not in chars:
        sys.exit(f"{args.data / 'vocab.json'}: no {START!r} in the vocabulary to start contexts with")
    start_id = chars.index(START)
    specials = json.loads((args.data / "vocab.json").read_text(encoding="utf-8")).get("specials", ["<unk>"])
    never = np.array([i for i, c in enumerate(chars) if c in specials] or [0])
    n_train = sum(sp["train"].size for sp in splits.values())
    print(f"data {args.data}: {len(splits)} languages, V={v}, {n_train:,} training ids")

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    full = NGramModel.fit([sp["train"] for sp in splits.values()], vocab_size=v, order=orders[-1])
    fit_s = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"fit order {orders[-1]}: {fit_s:.1f} s, peak RSS {rss1:.0f} MB ({rss0:.0f} MB before fitting)")

    print(f"\ndev, {args.positions} positions per language (macro over languages)")
    print(f"{'order':<8}{'top-1':>9}{'top-3':>9}{'nats':>8}{'bpc':>8}{'eval s':>8}")
    dev: dict[int, dict] = {}
    for n in orders:
        t0 = time.perf_counter()
        dev[n] = evaluate(full.with_order(n), splits, "dev", args.positions, start_id, never)
        print(f"{row(str(n), dev[n]['macro'])}{time.perf_counter() - t0:>8.1f}")
    best = min(orders, key=lambda n: dev[n]["macro"]["bpc"])
    model = full.with_order(best)
    test = evaluate(model, splits, "test", args.positions, start_id, never)
    print(f"\ntest at the best dev order ({best}, by bpc)")
    print(f"{'lang':<8}{'top-1':>9}{'top-3':>9}{'nats':>8}{'bpc':>8}")
    if args.per_language:
        for lang in splits:
            if lang in test:
                print(row(lang, test[lang]))
    print(row("macro", test["macro"]))

    rng = np.random.default_rng(0)
    dev_all = [sp["dev"] for sp in splits.values() if sp["dev"].size]
    ctxs = []
    for _ in range(2000):
        arr = dev_all[int(rng.integers(len(dev_all)))]
        p = int(rng.integers(arr.size))
        ctxs.append(arr[max(0, p - 20) : p])
    print()
    for n in sorted({best, orders[-1]}):
        m = full.with_order(n)
        m.dist(ctxs[0])  # warm caches before timing
        t0 = time.perf_counter()
        for c in ctxs:
            m.dist(c)
        per = (time.perf_counter() - t0) / len(ctxs) * 1e6
        t0 = time.perf_counter()
        m.dist_batch(ctxs)
        per_b = (time.perf_counter() - t0) / len(ctxs) * 1e6
        print(f"order {n}: {per:.0f} us per dist call, {per_b:.0f} us per context in dist_batch")


if __name__ == "__main__":
    main()
