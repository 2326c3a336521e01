"""The mixture backend: two predictors combined by a rule fitted on dev, each part reading its own window.

Two rules (`Rule.method`), both chosen per cell of the context, a cell being where the parts' confidences fall
(the largest probability of each part's distribution, cut at fixed edges):

- "linear": p = w·p_a + (1 − w)·p_b, with one weight w per cell (one cell: one global weight, the classic
  interpolation);
- "loglinear": log p = θa·log p_a + θb·log p_b + θm·log p_lin − log Z, with (θa, θb, θm) per cell, p_lin the
  linear mixture of the global weight and Z the sum over the vocabulary (a product of experts with a linear
  expert among them: geometric mixing, the many-symbol form of the logistic mixing of PAQ-style compressors).

Every combined distribution sums to 1 (linear: a convex sum; loglinear: renormalized). The rule reads only the
parts' distributions, so any two predictors over one vocabulary combine, and a typing state is the pair of the
parts' states: a Transformer part keeps its key/value cache, a count part its own state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nextchar.engine.base import Predictor, check_stride
from nextchar.errors import UserError, check_float

METHODS = ("linear", "loglinear")
FEATURES = ("a_max", "b_max")  # the largest probability of part a's / part b's distribution
LOG_FLOOR = -50.0  # log-probabilities below this enter the log-linear rule as this (a part's exact zeros stay finite)


@dataclass(frozen=True)
class Rule:
    """How two log-distributions become one (see the module docstring); fitted by `nextchar mix` (mix.py).

    cells: one (feature, edges) per axis; a row's cell index runs over the axes in order, each axis cut by
    searchsorted(edges, value, side="right"), so an axis with E edges has E + 1 cells. No axes: one cell.
    weights: linear only, w per cell (empty: `weight` everywhere). coef: loglinear only, (θa, θb, θm) per cell.
    """

    method: str = "linear"
    weight: float = 0.5  # the global linear weight of part a (linear rule; loglinear's third input)
    cells: tuple[tuple[str, tuple[float, ...]], ...] = ()
    weights: tuple[float, ...] = ()
    coef: tuple[tuple[float, float, float], ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if self.method not in METHODS:
            problems.append(f"method {self.method!r} must be one of {', '.join(METHODS)}")
        if not 0.0 < self.weight < 1.0:
            problems.append(f"weight {self.weight} must be between 0 and 1 (exclusive)")
        for feat, edges in self.cells:
            if feat not in FEATURES:
                problems.append(f"cell feature {feat!r} must be one of {', '.join(FEATURES)}")
            if list(edges) != sorted(edges):
                problems.append(f"cell edges of {feat} must be ascending")
        n = self.n_cells
        if self.method == "linear" and self.weights and (len(self.weights) != n
                                                         or not all(0.0 <= w <= 1.0 for w in self.weights)):
            problems.append(f"weights: need {n} values in [0, 1], one per cell")
        if self.method == "loglinear" and (len(self.coef) != n or any(len(c) != 3 for c in self.coef)
                                           or not all(math.isfinite(x) for c in self.coef for x in c)):
            problems.append(f"coef: need {n} finite (a, b, mix) triples, one per cell")
        if problems:
            raise UserError("mixture rule: " + "; ".join(problems))

    @property
    def n_cells(self) -> int:
        return math.prod(len(edges) + 1 for _, edges in self.cells)

    def cell(self, la: np.ndarray, lb: np.ndarray) -> np.ndarray:
        """(N,) cell index of each row of log-distributions la, lb (N, V)."""
        idx = np.zeros(la.shape[0], dtype=np.int64)
        for feat, edges in self.cells:
            value = np.exp((la if feat == "a_max" else lb).max(axis=1))  # (N,)
            idx = idx * (len(edges) + 1) + np.searchsorted(np.asarray(edges), value, side="right")
        return idx

    def linear_mix(self, la: np.ndarray, lb: np.ndarray, w: np.ndarray | float | None = None) -> np.ndarray:
        """log(w·p_a + (1 − w)·p_b) (N, V) for a weight per row (N,) or one weight (default: the global one)."""
        w = np.asarray(self.weight if w is None else w, dtype=np.float64)
        w = w[:, None] if w.ndim else w
        with np.errstate(divide="ignore"):  # a cell weight of 0 or 1 drops a part: log 0 = -inf, added as 0
            return np.logaddexp(la + np.log(w), lb + np.log1p(-w))

    def combine(self, la: np.ndarray, lb: np.ndarray) -> np.ndarray:
        """The combined natural-log distributions (N, V) of the parts' la, lb (N, V) (float64)."""
        la, lb = np.asarray(la, dtype=np.float64), np.asarray(lb, dtype=np.float64)
        if self.method == "linear":
            if not self.weights:
                return self.linear_mix(la, lb)
            return self.linear_mix(la, lb, np.asarray(self.weights)[self.cell(la, lb)])
        th = np.asarray(self.coef)[self.cell(la, lb)]  # (N, 3)
        x = self.loglinear_inputs(la, lb)  # (3, N, V)
        z = th[:, :1] * x[0] + th[:, 1:2] * x[1] + th[:, 2:] * x[2]  # (N, V)
        return z - np.logaddexp.reduce(z, axis=1, keepdims=True)

    def loglinear_inputs(self, la: np.ndarray, lb: np.ndarray) -> np.ndarray:
        """The log-linear rule's inputs (3, N, V) float64: log p_a, log p_b and log p_lin, floored at LOG_FLOOR
        (what combine weighs, and what mix.py's fit differentiates)."""
        la, lb = np.asarray(la, dtype=np.float64), np.asarray(lb, dtype=np.float64)
        return np.maximum(np.stack([la, lb, self.linear_mix(la, lb)]), LOG_FLOOR)

    def to_dict(self) -> dict:
        return {"method": self.method, "weight": self.weight, "cells": [[f, list(e)] for f, e in self.cells],
                "weights": list(self.weights), "coef": [list(c) for c in self.coef]}

    @classmethod
    def from_dict(cls, d: dict) -> Rule:
        """The rule stored in a mixture's config.json; UserError when it is malformed."""
        try:
            return cls(str(d.get("method", "linear")), float(d["weight"]),
                       tuple((str(f), tuple(float(x) for x in e)) for f, e in d.get("cells", [])),
                       tuple(float(w) for w in d.get("weights", [])),
                       tuple(tuple(float(x) for x in c) for c in d.get("coef", [])))
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"mixture rule: malformed ({type(e).__name__}: {e})") from None


class MixturePredictor(Predictor):
    """Two predictors over the same vocabulary, combined by a Rule (or a float: one global linear weight).

    Each part reads the whole history through its own window (a Transformer its last `context` ids, a count
    model or n-gram its own), and a typing state is the pair of the parts' states, so a part with a key/value
    cache keeps it while the other is computed its own way.
    """

    def __init__(self, a: Predictor, b: Predictor, rule: Rule | float, run_id: str = ""):
        if a.vocab.hash != b.vocab.hash:
            raise UserError("mixture components use different vocabularies")
        if not isinstance(rule, Rule):
            rule = Rule("linear", check_float(rule, "mixture weight", 0.0, 1.0, lo_open=True, hi_open=True))
        super().__init__(a.vocab, max(a.context, b.context), run_id)
        self.a, self.b, self.rule = a, b, rule
        self.incremental = a.incremental or b.incremental
        self.stride = max(a.stride, b.stride)

    @property
    def weight(self) -> float:
        """The global linear weight of part a."""
        return self.rule.weight

    def _mix(self, la: np.ndarray, lb: np.ndarray) -> np.ndarray:
        if la.ndim == 1:
            return self.rule.combine(la[None], lb[None])[0]  # (V,)
        return self.rule.combine(la, lb)  # (N, V)

    def logprobs(self, contexts: list[np.ndarray]) -> np.ndarray:
        return self._mix(self.a.logprobs(contexts), self.b.logprobs(contexts))  # (N, V)

    def windowed(self, stride: int) -> MixturePredictor:
        # a part with a shorter context than the stride jumps by its whole context
        stride = check_stride(stride, self.context)
        a, b = self.a.windowed(min(stride, self.a.context)), self.b.windowed(min(stride, self.b.context))
        return self._with(a=a, b=b, stride=max(a.stride, b.stride))

    def start(self) -> tuple:
        return self.a.start(), self.b.start()

    def feed(self, state: tuple, ids: np.ndarray) -> tuple[tuple, np.ndarray]:
        sa, la = self.a.feed(state[0], ids)  # (V,)
        sb, lb = self.b.feed(state[1], ids)  # (V,)
        return (sa, sb), self._mix(la, lb)

    def feed_many(self, states: list[tuple], ids: np.ndarray) -> tuple[list[tuple], np.ndarray]:
        sa, la = self.a.feed_many([s[0] for s in states], ids)  # (N, V)
        sb, lb = self.b.feed_many([s[1] for s in states], ids)  # (N, V)
        return list(zip(sa, sb)), self._mix(la, lb)

    def truncate(self, state: tuple, n: int) -> tuple:
        return self.a.truncate(state[0], n), self.b.truncate(state[1], n)

    def work(self, state: tuple) -> tuple[int, int]:
        (ra, fa), (rb, fb) = self.a.work(state[0]), self.b.work(state[1])
        return ra + rb, fa + fb
