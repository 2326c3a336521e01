"""Dev metrics of runs on dev text as written, lower-cased and without accents (text as people often type it).

The variants use the same id -> id maps as training's `--augment-lower` / `--augment-strip-accents`, so a run
trained with an augmentation can be compared with one trained without on the text it was meant for:

    python benchmarks/augment_eval.py --run runs/plain --run runs/lower --run runs/accents [--positions 300]

Prints the macro table, then per language top-3 for each variant.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from nextchar import engine, files
from nextchar.data import case_maps, open_data
from nextchar.evaluate import evaluate


class MappedSplits:
    """A DataSet seen through an id -> id map (the evaluation reads only languages, vocab, path and split)."""

    def __init__(self, ds, table: np.ndarray):
        self.ds, self.table = ds, table
        self.languages, self.vocab, self.path = ds.languages, ds.vocab, ds.path

    def split(self, lang: str, split: str) -> np.ndarray:
        return self.table[self.ds.split(lang, split)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, action="append", required=True, help="run directory (repeatable)")
    ap.add_argument("--data", type=Path, default=None, help="data directory (default: the first run's)")
    ap.add_argument("--positions", type=int, default=300, help="dev positions per language")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = args.data or Path(files.read_json(args.run[0] / "config.json", "run config")["data"])
    ds = open_data(data)
    lower, strip = case_maps(ds.vocab)
    variants = {"as written": ds, "lower case": MappedSplits(ds, lower), "no accents": MappedSplits(ds, strip)}
    res = {}
    print(f"{'run':<28} {'dev text':<11} {'top-3':>7} {'bpc':>6}")
    for run in args.run:
        pred = engine.load(run)
        for name, d in variants.items():
            r = res[run, name] = evaluate(pred, d, "dev", args.positions)
            print(f"{str(run)[-28:]:<28} {name:<11} {r['macro']['top3']:>7.2%} {r['macro']['bpc']:>6.3f}", flush=True)
    for name in variants:
        print(f"\ntop-3 per language, dev text {name}")
        print("lang " + " ".join(f"{run.name[-12:]:>12}" for run in args.run))
        for lang in ds.languages:
            print(f"{lang:<4} " + " ".join(f"{res[run, name]['languages'][lang]['top3']:>12.2%}" for run in args.run))


if __name__ == "__main__":
    main()
