"""Streaming evaluation: read a text in order, predict each character, then let the predictor learn it.

Bits per character of the count model (static, and adapting through the session's cache model, adapt.py, as
`nextchar eval --stream` reads it) and of PPMd var. H (`pyppmd`, the 7-Zip PPMd) on exactly the same characters.
The text is the first N characters of a split (the whole split when shorter), read as "\\n" + text like every
prediction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nextchar.adapt import WEIGHTS, Weights, count_specials, stream_true

LN2 = math.log(2)
PPMD_ORDER = 12
PPMD_MEM = 1 << 30  # never restarted on the 24-language priming text (256 MiB already gives the same bits)


def stream_ids(split_ids: np.ndarray, chars: int) -> np.ndarray:
    """The first `chars` ids of a split (all of them when shorter): the same characters for every system."""
    return np.asarray(split_ids[:chars], dtype=np.int64)


@dataclass
class CountStream:
    """Per-position natural-log probabilities of the true ids for one text."""

    static: np.ndarray  # (T,) the count model, no learning
    adapting: np.ndarray  # (T,) with the session (adapt.py) learning each character after predicting it
    oracle_static: np.ndarray | None = None  # (T,) the true language's own model
    oracle_adapting: np.ndarray | None = None

    @staticmethod
    def bpc(lp: np.ndarray) -> float:
        return float(-lp.mean() / LN2) if lp.size else float("nan")


def stream_counts(model, ids: np.ndarray, lang: int | None = None, weights: Weights = WEIGHTS) -> CountStream:
    """Stream a text through a CountModel: static and adapting log p per position (and the oracle's when the
    language index `lang` is given); the same numbers as `nextchar eval --stream` of the count model."""
    lp, _, full = model.stream_logprobs(ids)
    start, v, ns = model.vocab.stoi["\n"], model.vocab.size, count_specials(model.vocab)
    out = CountStream(lp, np.log(stream_true(np.exp(lp), ids, start, v, ns, weights)))
    if lang is not None:
        o = full[:, lang]
        out.oracle_static = o
        out.oracle_adapting = np.log(stream_true(np.exp(o), ids, start, v, ns, weights))
    return out


def ppmd_size(data: bytes, order: int = PPMD_ORDER, mem: int = PPMD_MEM) -> int:
    """Bytes of the complete PPMd var. H stream of data (flushed)."""
    import pyppmd

    e = pyppmd.Ppmd7Encoder(order, mem)
    return len(e.encode(data)) + len(e.flush())


def ppmd_bits(prime: bytes, text: bytes, order: int = PPMD_ORDER, mem: int = PPMD_MEM,
              prime_size: int | None = None) -> float:
    """Bits PPMd var. H spends on `text` after reading `prime` (UTF-8 bytes), adapting as it reads.

    pyppmd exposes no per-symbol probabilities, so this is the size of the compressed stream of prime + text
    minus that of prime alone (prime_size, computed when not given), times 8: the priming bytes are excluded, and
    the range coder's few bytes in flight make it exact to about +-32 bits (0.002 bpc over 20,000 characters).
    Divide by characters, not bytes, for bits per character.
    """
    base = ppmd_size(prime, order, mem) if prime_size is None and prime else (prime_size or 0)
    return 8.0 * (ppmd_size(prime + text, order, mem) - base)
