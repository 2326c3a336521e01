"""`nextchar train --model ngram`: count the interpolated Kneser-Ney n-gram on a data dir into a run directory."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from nextchar import safefs
from nextchar.data import open_data
from nextchar.engine.base import START
from nextchar.engine.folder import write_description
from nextchar.engine.ngram_backend import NGramPredictor
from nextchar.errors import UserError, check_int
from nextchar.evaluate import evaluate
from nextchar.files import atomic_write_json
from nextchar.ngram import NGramModel


def train_ngram(data: str | os.PathLike[str], out: str | os.PathLike[str], order: int | None = None,
                max_order: int = 8, select_positions: int = 500, final_positions: int = 2000) -> dict:
    """`nextchar train --model ngram`: fit on every language's train split; pick the order on dev if not given."""
    out = Path(out)
    if (out / "config.json").exists():
        raise UserError(f"{out}: run directory already holds a run (use another --out)")
    if order is not None:
        check_int(order, "--order", 1, 12)
    check_int(max_order, "max_order", 2, 12)
    check_int(select_positions, "select_positions")
    check_int(final_positions, "final_positions")
    ds = open_data(data)
    start = ds.vocab.stoi[START]
    t0 = time.time()
    # Each language's text starts after START, as every prediction's context does.
    seqs = [np.concatenate(([start], ds.split(lang, "train"))).astype(np.int64) for lang in ds.languages]
    full = NGramModel.fit(seqs, ds.vocab.size, order or max_order)
    fit_seconds = time.time() - t0
    chosen = order
    scores = {}
    if order is None:
        for n in range(2, max_order + 1):
            ev = evaluate(NGramPredictor(full.with_order(n), ds.vocab), ds, "dev", select_positions)
            scores[n] = ev["macro"]["ce"]
            print(f"order {n}: dev {ev['macro']['bpc']:.3f} bpc, top-3 {ev['macro']['top3']:.2%}", flush=True)
        chosen = min(scores, key=scores.get)
    model = full.with_order(chosen)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: is a file, not a run directory (use another --out)")
    out.mkdir(parents=True, exist_ok=True)
    with safefs.locked(out / "train.lock", "nextchar train --model ngram"):  # one writer per run directory
        if (out / "config.json").exists():
            raise UserError(f"{out}: run directory already holds a run (use another --out)")
        model.save(out / "model.npz")
        ds.vocab.save(out / "vocab.json")
        cfg = {"model_type": "ngram", "preset": f"ngram-{chosen}", "data": str(Path(ds.path).resolve()),
               "vocab_hash": ds.vocab.hash, "languages": ds.languages,
               "model": {"order": chosen, "vocab_size": ds.vocab.size, "smoothing": "interpolated modified Kneser-Ney"},
               "train": {"max_order": max_order, "select_positions": select_positions}}
        write_description(out, cfg)
        final = evaluate(NGramPredictor(model, ds.vocab), ds, "dev", final_positions)
        result = {"run": str(out), "preset": cfg["preset"], "config": {"model": cfg["model"], "train": cfg["train"]},
                  "params": model.num_entries(), "best_dev_loss": final["macro"]["ce"], "dev": final["macro"],
                  "dev_languages": final["languages"], "top1": final["macro"]["top1"], "top3": final["macro"]["top3"],
                  "dev_bpc": final["macro"]["bpc"], "train_seconds": fit_seconds,
                  "tokens": int(sum(len(s) for s in seqs)), "order_dev_loss": scores, "device": "cpu"}
        atomic_write_json(out / "result.json", result)
        print(f"done: order {chosen} n-gram fitted in {fit_seconds:.1f}s; dev top-1 {result['top1']:.2%}, "
              f"top-3 {result['top3']:.2%}, {result['dev_bpc']:.3f} bpc; wrote {out}")
        return result
