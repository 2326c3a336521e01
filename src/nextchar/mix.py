"""`nextchar mix`: a mixture run of a Transformer and the n-gram, p = w·p_a + (1-w)·p_b, with w tuned on dev."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nextchar import engine, safefs
from nextchar.data import eval_positions, open_data
from nextchar.engine.folder import component_path, data_dir, describe, write_description
from nextchar.errors import UserError, check_int

WEIGHT_GRID = [i / 20 for i in range(1, 20)]  # candidate weights of the first component


def component_logprobs(pred: engine.Predictor, ds, split: str, positions: int) -> tuple[list, list]:
    """Log-probabilities (n, V) and targets (n,) per language at the evaluation positions (computed once)."""
    lps, ys = [], []
    for lang in ds.languages:
        arr = ds.split(lang, split)
        pos = eval_positions(len(arr), positions)
        lps.append(pred.logprobs([arr[:p] for p in pos.tolist()]))
        ys.append(arr[pos].astype(np.int64))
    return lps, ys


def tune_weight(a: engine.Predictor, b: engine.Predictor, ds, positions: int = 500
                ) -> tuple[float, dict[float, float]]:
    """The weight of `a` with the lowest macro dev cross-entropy on WEIGHT_GRID, and every grid point's."""
    la, ys = component_logprobs(a, ds, "dev", positions)
    lb, _ = component_logprobs(b, ds, "dev", positions)
    scores = {}
    for w in WEIGHT_GRID:
        ce = [-np.logaddexp(x[np.arange(len(y)), y] + math.log(w), z[np.arange(len(y)), y] + math.log1p(-w)).mean()
              for x, z, y in zip(la, lb, ys)]
        scores[w] = float(np.mean(ce))
    return min(scores, key=scores.get), scores


def make_mixture(transformer: str | Path, ngram: str | Path, out: str | Path, data: str | Path | None = None,
                 positions: int = 500) -> dict:
    """Write a run directory that interpolates a Transformer run and an n-gram run (components stored relative
    to the mixture's folder when inside it, so the folder can move)."""
    positions = check_int(positions, "positions")
    out = Path(out)
    if (out / "config.json").exists():
        raise UserError(f"{out}: already holds a run (use another --out)")
    a, b = engine.load(transformer), engine.load(ngram)
    ds = open_data(data_dir(describe(engine.resolve(transformer)), data))
    w, scores = tune_weight(a, b, ds, positions)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: is a file, not a run directory (use another --out)")
    out.mkdir(parents=True, exist_ok=True)
    with safefs.locked(out / "train.lock", "nextchar mix"):  # one writer per run directory
        if (out / "config.json").exists():
            raise UserError(f"{out}: already holds a run (use another --out)")
        a.vocab.save(out / "vocab.json")
        cfg = {"model_type": "mixture", "components": [component_path(transformer, out), component_path(ngram, out)],
               "weight": w, "data": str(Path(ds.path).resolve()), "vocab_hash": a.vocab.hash,
               "dev_ce_by_weight": {str(k): v for k, v in scores.items()}}
        write_description(out, cfg)
    print(f"weight of {transformer}: {w:.2f} (macro dev {scores[w] / math.log(2):.3f} bpc); wrote {out}")
    return cfg
