"""The count-model backend: the language-aware count model (nextchar.counts) behind the contract (numpy, no torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nextchar.counts import CountModel, CountState, load_model
from nextchar.engine.base import Predictor, window


class CountsPredictor(Predictor):
    """Reads the last `context` ids of START + history (the language posterior's window and the longest order).

    The typing state is the count model's own (its per-language likelihoods of the window, kept as it reads)
    with the distribution after it: a keystroke costs one walk per language instead of the whole window.
    feed and truncate give exactly `logprobs` of the whole history (bit for bit: tests/test_counts.py).
    """

    incremental = True

    def __init__(self, model: CountModel, run_id: str = ""):
        super().__init__(model.vocab, model.context, run_id)
        self.model = model

    @classmethod
    def from_folder(cls, folder: str | Path) -> CountsPredictor:
        """A count model folder (config.json "model_type": "counts"), tables memory-mapped."""
        return cls(load_model(folder), Path(folder).name)

    def logprobs(self, contexts: list[np.ndarray]) -> np.ndarray:
        if not contexts:
            return np.zeros((0, self.vocab.size))
        return self.model.logprobs([window(h, self.context, self.start_id) for h in contexts])

    # The state: (CountState of START + history, its logprobs (V,) or None when not computed yet).
    def start(self) -> tuple[CountState, np.ndarray]:
        return self.model.feed(self.model.start(), np.array([self.start_id]))

    def feed(self, state: tuple[CountState, np.ndarray | None], ids: np.ndarray
             ) -> tuple[tuple[CountState, np.ndarray], np.ndarray]:
        st, lp = state
        if len(ids) == 0:
            lp = self.model.state_logprobs(st) if lp is None else lp
            return (st, lp), lp
        st, lp = self.model.feed(st, np.asarray(ids, dtype=np.int64))
        return (st, lp), lp

    def truncate(self, state: tuple[CountState, np.ndarray | None], n: int) -> tuple[CountState, None]:
        return self.model.truncate(state[0], int(n) + 1), None  # + 1: START is the state's first id
