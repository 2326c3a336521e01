"""The n-gram backend: an interpolated Kneser-Ney character n-gram (nextchar.ngram) behind the contract (numpy)."""

from __future__ import annotations

import numpy as np

from nextchar.engine.base import Predictor, window
from nextchar.ngram import NGramModel
from nextchar.vocab import Vocab


class NGramPredictor(Predictor):
    """Reads the last order - 1 ids of START + history; typing states are the base class's (O(order) per key)."""

    def __init__(self, model: NGramModel, vocab: Vocab, run_id: str = ""):
        super().__init__(vocab, max(1, model.order - 1), run_id)
        self.model = model

    def logprobs(self, contexts: list[np.ndarray]) -> np.ndarray:
        if not contexts:
            return np.zeros((0, self.vocab.size))
        return np.log(self.model.dist_batch([window(h, self.context, self.start_id) for h in contexts]))
