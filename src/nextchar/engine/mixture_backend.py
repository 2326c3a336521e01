"""The mixture backend: two predictors interpolated, p = w·p_a + (1-w)·p_b, each reading its own window."""

from __future__ import annotations

import math

import numpy as np

from nextchar.engine.base import Predictor
from nextchar.errors import UserError, check_float


class MixturePredictor(Predictor):
    """Linear interpolation of two predictors over the same vocabulary.

    Each part reads the whole history through its own window (a Transformer its last `context` ids, an n-gram
    its last order - 1), and a typing state is the pair of the parts' states, so a part with a key/value cache
    keeps it while the other is computed its own way.
    """

    def __init__(self, a: Predictor, b: Predictor, weight: float, run_id: str = ""):
        if a.vocab.hash != b.vocab.hash:
            raise UserError("mixture components use different vocabularies")
        weight = check_float(weight, "mixture weight", 0.0, 1.0, lo_open=True, hi_open=True)
        super().__init__(a.vocab, max(a.context, b.context), run_id)
        self.a, self.b, self.weight = a, b, weight
        self.incremental = a.incremental or b.incremental
        self.stride = max(a.stride, b.stride)

    def _mix(self, la: np.ndarray, lb: np.ndarray) -> np.ndarray:
        return np.logaddexp(la + math.log(self.weight), lb + math.log1p(-self.weight))

    def logprobs(self, contexts: list[np.ndarray]) -> np.ndarray:
        return self._mix(self.a.logprobs(contexts), self.b.logprobs(contexts))  # (N, V)

    def windowed(self, stride: int) -> MixturePredictor:
        a, b = self.a.windowed(stride), self.b.windowed(stride)
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
