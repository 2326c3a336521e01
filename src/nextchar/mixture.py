"""Mixture runs: a Transformer and the n-gram interpolated, p = w·p_a + (1-w)·p_b, with w tuned on dev."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nextchar import checkpoint
from nextchar.data import open_data
from nextchar.errors import UserError
from nextchar.predict import Predictor

WEIGHT_GRID = [i / 20 for i in range(1, 20)]  # candidate weights of the first component


class MixturePredictor(Predictor):
    """Linear interpolation of two predictors over the same vocabulary (both see their own context)."""

    def __init__(self, a: Predictor, b: Predictor, weight: float, run_id: str = ""):
        if a.vocab.hash != b.vocab.hash:
            raise UserError("mixture components use different vocabularies")
        self.a, self.b, self.weight = a, b, weight
        self.vocab = a.vocab
        self.context = max(a.context, b.context)
        self.run_id = run_id

        # Typing sessions reuse the first component's key/value cache when its window is the whole window;
        # the n-gram part is cheap to compute afresh from the window's last ids.
        self.incremental = a.incremental and a.context >= b.context

    def _mix(self, la: np.ndarray, lb: np.ndarray) -> np.ndarray:
        return np.logaddexp(la + math.log(self.weight), lb + math.log1p(-self.weight))

    def logprobs(self, contexts: list[np.ndarray]) -> np.ndarray:
        la = self.a.logprobs([c[-self.a.context:] for c in contexts])  # (N, V)
        lb = self.b.logprobs([c[-self.b.context:] for c in contexts])  # (N, V)
        return self._mix(la, lb)

    # -- incremental interface (Session): the state is the first component's cache --------------------------
    def _start(self):
        return self.a._start()

    def _feed(self, state, ids: np.ndarray, before: np.ndarray):
        state, la = self.a._feed(state, ids, before)  # (V,)
        window = np.concatenate([before, ids.astype(np.int64)])
        lb = self.b.logprobs([window[-self.b.context:]])[0]  # (V,)
        return state, self._mix(la, lb)

    def _truncate(self, state, n: int):
        return self.a._truncate(state, n)

    def _feed_many(self, states: list, ids: np.ndarray, befores: list[np.ndarray]) -> tuple[list, np.ndarray]:
        states, la = self.a._feed_many(states, ids, befores)  # (N, V)
        windows = [np.append(b, i)[-self.b.context:] for b, i in zip(befores, ids.tolist())]
        return states, self._mix(la, self.b.logprobs(windows))


def component_logprobs(pred: Predictor, ds, split: str, positions: int) -> tuple[list, list]:
    """Log-probabilities and targets per language at the evaluation positions (computed once for tuning)."""
    from nextchar.data import eval_positions
    from nextchar.predict import START, split_context

    start = pred.vocab.stoi[START]
    lps, ys = [], []
    for lang in ds.languages:
        arr = ds.split(lang, split)
        pos = eval_positions(len(arr), positions)
        lps.append(pred.logprobs([split_context(arr, int(p), pred.context, start) for p in pos]))
        ys.append(arr[pos].astype(np.int64))
    return lps, ys


def tune_weight(a: Predictor, b: Predictor, ds, positions: int = 500) -> tuple[float, dict[float, float]]:
    """The weight of `a` with the lowest macro dev cross-entropy on a grid."""
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
    """`nextchar mix`: write a run directory that interpolates a Transformer run and an n-gram run."""
    out = Path(out)
    if (out / "config.json").exists():
        raise UserError(f"{out}: already holds a run (use another --out)")
    a, b = Predictor.load(transformer), Predictor.load(ngram)
    cfg_a = checkpoint.read_json(Path(transformer) / "config.json", "run config")
    ds = open_data(data or cfg_a.get("data", ""))
    w, scores = tune_weight(a, b, ds, positions)
    out.mkdir(parents=True, exist_ok=True)
    a.vocab.save(out / "vocab.json")
    cfg = {"model_type": "mixture", "components": [component_path(transformer, out), component_path(ngram, out)],
           "weight": w, "data": str(Path(ds.path).resolve()), "vocab_hash": a.vocab.hash,
           "dev_ce_by_weight": {str(k): v for k, v in scores.items()}}
    checkpoint.atomic_write_json(out / "config.json", cfg)
    print(f"weight of {transformer}: {w:.2f} (macro dev {scores[w] / math.log(2):.3f} bpc); wrote {out}")
    return cfg


def component_path(component: str | Path, out: Path) -> str:
    """A component inside the mixture's folder is stored relative to it, so the folder can move; others absolute."""
    c, o = Path(component).resolve(), out.resolve()
    return str(c.relative_to(o)) if c.is_relative_to(o) else str(c)


def load_mixture(path: Path, cfg: dict) -> MixturePredictor:
    a, b = (Predictor.load(path / p) for p in cfg["components"])  # `/` keeps an absolute p as it is
    return MixturePredictor(a, b, float(cfg["weight"]), path.name)
