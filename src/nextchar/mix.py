"""`nextchar mix`: two predictors (a Transformer and a count model, or an n-gram) combined by a rule fitted on dev.

Methods (engine.mixture_backend.Rule applies them; measured against each other in docs/quality.md):
- "linear": one global weight, p = w·p_a + (1 − w)·p_b (the grid WEIGHT_GRID, least dev cross-entropy);
- "cells": a linear weight per cell of the parts' confidences (CELLS), each cell's weight the exact grid minimum
  of its own dev positions (cells are disjoint, so each is fitted alone, as adapt.tune and ppm.tune_weights do);
- "loglinear": log p = θa·log p_a + θb·log p_b + θm·log p_lin − log Z per cell, fitted by Newton's method on the
  dev log-likelihood (concave in θ), first over all positions, then per cell from there.

Fitting reads the dev split at `fit_positions` (interleaved with the positions `nextchar eval` scores, so dev
evaluation is not scored on the very positions the rule was fitted on); a cell with fewer than MIN_CELL
positions keeps the global values. The fit is deterministic: fixed grids, fixed starting point, fixed order.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nextchar import engine, safefs
from nextchar.data import DataSet, open_data
from nextchar.engine.folder import component_path, data_dir, describe, write_description
from nextchar.engine.mixture_backend import Rule
from nextchar.errors import UserError, check_int

METHODS = ("linear", "cells", "loglinear")
WEIGHT_GRID = [i / 20 for i in range(1, 20)]  # candidate global weights of the first part
CELL_GRID = np.linspace(0.0, 1.0, 41)  # candidate weights of one cell (a cell may drop a part entirely)
# cell axes: where each part's largest probability falls (chosen on Dasher dev among the parts' confidences, the
# count model's longest matched order, its language posterior's entropy and its most probable language)
CELLS = (("a_max", (0.3, 0.5, 0.7, 0.9)), ("b_max", (0.3, 0.5, 0.7, 0.9)))
MIN_CELL = 100  # dev positions a cell needs to get values of its own
NEWTON_STEPS = 50
CHUNK = 4096  # rows per block in the log-linear fit: bounds the (rows, V) arrays held at once
LN2 = math.log(2)


def fit_positions(n_tokens: int, n: int) -> np.ndarray:
    """n positions floor(i·L/n), i < n: halfway between those of data.eval_positions (all of 0..L-1 when n >= L)."""
    if n <= 0 or n_tokens <= 0:
        return np.zeros(0, dtype=np.int64)
    if n >= n_tokens:
        return np.arange(n_tokens, dtype=np.int64)
    return (np.arange(n, dtype=np.int64) * n_tokens) // n


def component_logprobs(pred: engine.Predictor, ds: DataSet, split: str, positions: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-probabilities (N, V) float32, targets (N,) and language index (N,) at fit_positions of every language."""
    lps, ys, langs = [], [], []
    for li, lang in enumerate(ds.languages):
        arr = ds.split(lang, split)
        pos = fit_positions(len(arr), positions)
        for lo in range(0, len(pos), 1024):
            chunk = pos[lo:lo + 1024].tolist()
            lps.append(pred.logprobs([arr[:p] for p in chunk]).astype(np.float32))  # histories are views
        ys.append(arr[pos].astype(np.int64))
        langs.append(np.full(len(pos), li, dtype=np.int64))
    if not ys or sum(len(y) for y in ys) == 0:
        raise UserError(f"{ds.path}: the {split} split is empty for every language")
    return np.concatenate(lps), np.concatenate(ys), np.concatenate(langs)


def macro_bpc(lp_true: np.ndarray, lang: np.ndarray) -> float:
    """Mean over languages of each language's bits per character, from log p of the true ids (N,)."""
    return float(np.mean([-lp_true[lang == li].mean() for li in np.unique(lang)]) / LN2)


# ------------------------------------------------------------------------------------------ fitting


def _global_weight(ta: np.ndarray, tb: np.ndarray) -> tuple[float, dict[float, float]]:
    """The WEIGHT_GRID weight of part a with the least cross-entropy (nats) of the true ids' log-probs ta, tb."""
    scores = {w: float(-np.logaddexp(ta + math.log(w), tb + math.log1p(-w)).mean()) for w in WEIGHT_GRID}
    return min(scores, key=scores.get), scores


def _cell_weights(ta: np.ndarray, tb: np.ndarray, cell: np.ndarray, n: int, w0: float, min_cell: int
                  ) -> tuple[float, ...]:
    with np.errstate(divide="ignore"):
        la_g, lb_g = np.log(CELL_GRID), np.log1p(-CELL_GRID)  # (G,)
    out = []
    for c in range(n):
        sel = cell == c
        if sel.sum() < max(min_cell, 1):
            out.append(w0)
            continue
        nll = -np.logaddexp(ta[sel][None] + la_g[:, None], tb[sel][None] + lb_g[:, None]).sum(axis=1)  # (G,)
        out.append(float(CELL_GRID[int(np.argmin(nll))]))
    return tuple(out)


def _stats(rule: Rule, la: np.ndarray, lb: np.ndarray, y: np.ndarray, rows: np.ndarray, th: np.ndarray
           ) -> tuple[float, np.ndarray, np.ndarray]:
    """(negative log-likelihood, gradient (3,), Hessian (3, 3)) of the log-linear rule θ = th over `rows`."""
    nll, g, h = 0.0, np.zeros(3), np.zeros((3, 3))
    for lo in range(0, len(rows), CHUNK):
        r = rows[lo:lo + CHUNK]
        x = rule.loglinear_inputs(la[r], lb[r])  # (3, n, V)
        z = np.tensordot(th, x, axes=1)  # (n, V)
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        s = p.sum(axis=1, keepdims=True)
        p /= s
        idx = np.arange(len(r))
        nll -= float((z[idx, y[r]] - np.log(s[:, 0])).sum())
        e = (p[None] * x).sum(axis=2)  # (3, n) the inputs' expectations under the combined distribution
        g += (x[:, idx, y[r]] - e).sum(axis=1)
        exx = np.einsum("inv,jnv,nv->ij", x, x, p, optimize=True)  # (3, 3) sum over rows of E[x_i x_j]
        h -= exx - e @ e.T
    return nll, g, h


def _newton(rule: Rule, la: np.ndarray, lb: np.ndarray, y: np.ndarray, rows: np.ndarray, th: np.ndarray
            ) -> np.ndarray:
    """Maximize the log-likelihood over θ (3,) from th by Newton steps, halving a step that does not improve."""
    nll, g, h = _stats(rule, la, lb, y, rows, th)
    for _ in range(NEWTON_STEPS):
        step = np.linalg.solve(h - 1e-9 * len(rows) * np.eye(3), -g)
        t = 1.0
        while t > 1e-4:
            cand = th + t * step
            c_nll, c_g, c_h = _stats(rule, la, lb, y, rows, cand)
            if c_nll <= nll:
                break
            t /= 2
        else:
            break  # no step improves: at the optimum within float precision
        done = nll - c_nll < 1e-9 * len(rows)
        th, nll, g, h = cand, c_nll, c_g, c_h
        if done:
            break
    return th


def fit_rule(la: np.ndarray, lb: np.ndarray, y: np.ndarray, method: str = "loglinear",
             cells: tuple = CELLS, min_cell: int = MIN_CELL) -> tuple[Rule, dict]:
    """The rule of `method` fitted to the parts' log-distributions la, lb (N, V) at targets y (N,).

    Returns the rule and what the fit saw: positions, the global weight's grid of cross-entropies (nats).
    """
    if method not in METHODS:
        raise UserError(f"--method {method!r}: choose from {', '.join(METHODS)}")
    idx = np.arange(len(y))
    ta, tb = la[idx, y].astype(np.float64), lb[idx, y].astype(np.float64)
    w0, scores = _global_weight(ta, tb)
    info = {"positions": int(len(y)), "ce_by_weight": {str(k): v for k, v in scores.items()}}
    if method == "linear":
        return Rule("linear", w0), info
    base = Rule("linear", w0, cells)
    n = base.n_cells
    cell = np.concatenate([base.cell(la[r:r + CHUNK].astype(np.float64), lb[r:r + CHUNK].astype(np.float64))
                           for r in range(0, len(y), CHUNK)]) if len(y) else np.zeros(0, dtype=np.int64)
    if method == "cells":
        return Rule("linear", w0, cells, _cell_weights(ta, tb, cell, n, w0, min_cell)), info
    glob = _newton(base, la, lb, y, idx, np.array([0.0, 0.0, 1.0]))  # from the linear mixture itself
    coef = []
    for c in range(n):
        rows = np.flatnonzero(cell == c)
        th = glob if len(rows) < max(min_cell, 1) else _newton(base, la, lb, y, rows, glob.copy())
        coef.append(tuple(float(x) for x in th))
    return Rule("loglinear", w0, cells, coef=tuple(coef)), info


# ------------------------------------------------------------------------------------------ the job


def make_mixture(transformer: str | Path, other: str | Path, out: str | Path, data: str | Path | None = None,
                 positions: int = 2000, method: str = "loglinear") -> dict:
    """Write a mixture folder of a Transformer and a count model (or n-gram) folder, its rule fitted on dev.

    Parts inside `out` are stored relative to it, so the folder can move. positions: dev positions per language
    (fit_positions). Raises UserError when `out` holds a model, the parts differ in vocabulary or the data is
    missing.
    """
    out = Path(out)
    positions = check_int(positions, "positions")
    if method not in METHODS:
        raise UserError(f"--method {method!r}: choose from {', '.join(METHODS)}")
    if (out / "config.json").exists():
        raise UserError(f"{out}: already holds a run (use another --out)")
    a, b = engine.load(transformer), engine.load(other)
    if a.vocab.hash != b.vocab.hash:
        raise UserError(f"{other}: another vocabulary than {transformer}")
    ds = open_data(data_dir(describe(engine.resolve(transformer)), data))
    ds.check_vocab(a.vocab, "the models'")
    la, y, lang = component_logprobs(a, ds, "dev", positions)
    lb, _, _ = component_logprobs(b, ds, "dev", positions)
    rule, info = fit_rule(la, lb, y, method)
    lp = np.concatenate([rule.combine(la[r:r + CHUNK], lb[r:r + CHUNK])[np.arange(len(y[r:r + CHUNK])), y[r:r + CHUNK]]
                         for r in range(0, len(y), CHUNK)])
    idx = np.arange(len(y))
    info["dev_bpc"] = {"a": macro_bpc(la[idx, y].astype(np.float64), lang),
                       "b": macro_bpc(lb[idx, y].astype(np.float64), lang), "mixture": macro_bpc(lp, lang)}
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: is a file, not a run directory (use another --out)")
    out.mkdir(parents=True, exist_ok=True)
    with safefs.locked(out / "train.lock", "nextchar mix"):  # one writer per run directory
        if (out / "config.json").exists():
            raise UserError(f"{out}: already holds a run (use another --out)")
        a.vocab.save(out / "vocab.json")
        langs = describe(engine.resolve(other)).config.get("languages") or describe(
            engine.resolve(transformer)).config.get("languages") or list(ds.languages)
        cfg = {"model_type": "mixture", "components": [component_path(transformer, out), component_path(other, out)],
               "rule": rule.to_dict(), "weight": rule.weight, "data": str(Path(ds.path).resolve()),
               "vocab_hash": a.vocab.hash, "languages": langs, "fit": {"split": "dev", "method": method, **info}}
        write_description(out, cfg)
    bpc = info["dev_bpc"]
    print(f"{method} rule fitted on {info['positions']:,} dev positions: {bpc['mixture']:.3f} bpc (parts "
          f"{bpc['a']:.3f}, {bpc['b']:.3f}; global weight {rule.weight:.2f}); wrote {out}")
    return cfg
