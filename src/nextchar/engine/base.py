"""The prediction contract every backend implements, and the rules all of them share.

One place for each rule:
- text in: `prepare_prefix` (what a surface's prefix becomes before encoding) and `Predictor.encode`;
- the window a model with a bounded context reads: `window_start` / `window` (the typing window);
- what may be suggested and in which order: `suggestible_mask`, `top_ids`, `rank`;
- the typing session (`Session`), built on the public incremental interface start / feed / truncate.

A context (a "history") is the ids of everything typed so far, `encode(prefix)`, without the paragraph start
that precedes every text: backends add START where their window reaches the beginning. Each backend reads
what its window needs of a history (a Transformer its last `context` ids, an n-gram its last order - 1) and
its incremental state remembers what it needs of the past, so components with different windows mix.
"""

from __future__ import annotations

import copy
import gc
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np

from nextchar.errors import UserError
from nextchar.vocab import Vocab

START = "\n"  # the context of an empty prefix: the start of a paragraph
# Unicode categories never offered as a suggestion: controls (newline, tab), line/paragraph separators,
# surrogates, private use, unassigned. A suggestion line in file mode can then never break.
NEVER_SUGGESTED = {"Cc", "Zl", "Zp", "Cs", "Co", "Cn"}
CHUNK = 8192  # prefixes per logprobs call in topk_batch/dist: bounds the (N, V) distributions held at once

State = Any  # a backend's incremental state: opaque to callers, never changed in place by the engine


# -- text in ------------------------------------------------------------------------------------------------


def prepare_prefix(prefix: str) -> str:
    """The text a prefix stands for before encoding: the one place where every surface's input is normalized.

    Today the identity (prefixes are taken as typed); normalization of typed text (issue 10) goes here, and
    with it every surface (CLI, file mode, Python API, server, sessions, adaptation) at once.
    """
    return prefix


# -- the window -----------------------------------------------------------------------------------------------


def window_start(n: int, context: int, stride: int = 1) -> int:
    """Where a model's window starts among the n ids of START + history: 0 while they fit, else a multiple of stride.

    This is the typing window, the one rule for batches and sessions alike: the smallest multiple of `stride`
    that leaves at most `context` ids. While typing goes on the start stays put (cached keys and values stay
    valid) and jumps `stride` ids ahead when the window is full, so the model sees the last context - stride + 1
    .. context ids and recomputes its window once every `stride` keystrokes. stride 1 is the exact last-`context`
    window (what evaluation and a plain `topk` use by default).
    """
    if n <= context:
        return 0
    return -(-(n - context) // stride) * stride


def window(history: np.ndarray, context: int, start_id: int, stride: int = 1) -> np.ndarray:
    """The ids (T,) a model with `context` reads after history (H,): START + history cut by `window_start`."""
    a = window_start(len(history) + 1, context, stride)
    if a == 0:
        return np.concatenate(([start_id], history)).astype(np.int64)
    return np.asarray(history[a - 1:], dtype=np.int64)


def check_stride(stride: int, context: int) -> int:
    if not 1 <= stride <= context:
        raise UserError(f"stride {stride}: must be between 1 and the model's context ({context})")
    return stride


# -- suggestions -----------------------------------------------------------------------------------------------


def suggestible_mask(vocab: Vocab) -> np.ndarray:
    """Boolean mask (V,) of ids that may be suggested: no specials, no newline or other control character."""
    return np.array([not vocab.is_special(i) and unicodedata.category(c) not in NEVER_SUGGESTED
                     for i, c in enumerate(vocab.chars)])


def top_ids(probs: np.ndarray, ok: np.ndarray, k: int) -> np.ndarray:
    """The k most likely ids with ok[id] (N, k) per row of probabilities (N, V), best first.

    Equal probabilities go to the lower id (a stable sort's order); k is capped at the number of suggestible ids.
    """
    if k < 1:
        raise UserError(f"-k {k}: must be at least 1")
    k = min(k, int(ok.sum()))
    p = np.where(ok, probs, -1.0)  # (N, V)
    if k <= 8:
        # k argmax passes are linear in V where a sort is not; argmax picks the first (lowest) of equal ids,
        # the order of a stable sort.
        top = np.empty((len(p), k), dtype=np.int64)
        rows = np.arange(len(p))
        for j in range(k):
            top[:, j] = p.argmax(axis=1)
            p[rows, top[:, j]] = -2.0  # below every probability: never picked again
        return top
    return np.argsort(-p, axis=1, kind="stable")[:, :k]  # (N, k)


def rank(probs: np.ndarray, ok: np.ndarray, chars: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
    """The k most likely ids with ok[id] per row of (N, V) probabilities as (char, prob), best first."""
    top = top_ids(probs, ok, k)  # (N, k)
    vals = np.take_along_axis(probs, top, axis=1)  # (N, k)
    # Tens of thousands of new lists would set off full garbage collections over every object of torch and
    # onnxruntime (up to half a second in file mode); none of these can form a cycle.
    paused = gc.isenabled() and len(top) > 1000
    if paused:
        gc.disable()
    try:
        return [[(chars[j], q) for j, q in zip(ids, qs)] for ids, qs in zip(top.tolist(), vals.tolist())]
    finally:
        if paused:
            gc.enable()


# -- the contract --------------------------------------------------------------------------------------------


class Predictor:
    """Next-character distributions behind one contract; a backend implements `logprobs` (and may cache).

    Construction is shared (`__init__`): a backend passes its vocabulary, the longest window it reads
    (`context`, ids including START) and a name. The public incremental interface is start / feed / truncate:
    the base class gives every backend a correct one (the state is the ids read so far and each feed computes
    the distribution afresh); backends with a key/value cache override the three and set `incremental`.
    """

    incremental = False  # feed() reuses work (a key/value cache) instead of recomputing the window
    stride = 1  # ids a windowed backend's window jumps by (see window_start); 1 for every other backend

    def __init__(self, vocab: Vocab, context: int, run_id: str = ""):
        self.vocab = vocab
        self.context = int(context)  # the longest window (ids, START included) this backend reads
        self.run_id = run_id
        self.start_id = vocab.stoi[START]
        self._ok: np.ndarray | None = None

    # -- what a backend implements ---------------------------------------------------------------------------
    def logprobs(self, contexts: list[np.ndarray]) -> np.ndarray:
        """Natural-log next-id distributions (N, V) after each history (ids of a prefix, START implied)."""
        raise NotImplementedError

    def windowed(self, stride: int) -> Predictor:
        """This predictor with another typing window stride (shares the model). Backends without a window: self."""
        return self

    # -- the incremental interface ------------------------------------------------------------------------
    def start(self) -> State:
        """The state of an empty history (only the paragraph start read)."""
        return np.zeros(0, dtype=np.int64)

    def feed(self, state: State, ids: np.ndarray) -> tuple[State, np.ndarray]:
        """(state after also reading ids (T,), T >= 0; logprobs (V,) after everything read). `state` is unchanged."""
        history = np.concatenate([state, np.asarray(ids, dtype=np.int64)]) if len(ids) else state
        return history, self.logprobs([history])[0]

    def truncate(self, state: State, n: int) -> State:
        """The state after only the first n ids it has read (a new object; `state` is unchanged)."""
        return state[:n]

    def feed_many(self, states: list[State], ids: np.ndarray) -> tuple[list[State], np.ndarray]:
        """One id per state: (the states after also reading ids[i] (N,), logprobs (N, V)); `states` are unchanged.

        What a beam search needs (word completion extends every hypothesis by one id per step). This default
        feeds them one by one; backends with a key/value cache batch the N steps into one forward pass.
        """
        out, rows = [], []
        for st, i in zip(states, np.asarray(ids, dtype=np.int64).tolist()):
            st, lp = self.feed(st, np.array([i], dtype=np.int64))
            out.append(st)
            rows.append(lp)
        return out, (np.stack(rows) if rows else np.zeros((0, self.vocab.size), dtype=np.float32))

    def work(self, state: State) -> tuple[int, int]:
        """(windows computed from their start, ids run through the network) to reach this state; 0s if uncached."""
        return 0, 0

    # -- the rest, shared by every backend --------------------------------------------------------------------
    def encode(self, prefix: str) -> np.ndarray:
        """The history (H,) of a prefix: the one way text enters the engine (`prepare_prefix`, then the vocabulary)."""
        return self.vocab.encode(prepare_prefix(prefix)).astype(np.int64)

    def suggestible(self) -> np.ndarray:
        """Boolean mask (V,) of ids that may be suggested (see suggestible_mask)."""
        if self._ok is None:
            self._ok = suggestible_mask(self.vocab)
        return self._ok

    def dist(self, prefixes: list[str]) -> np.ndarray:
        """Probabilities (N, V) of the next id after each prefix."""
        if not prefixes:
            return np.zeros((0, self.vocab.size))
        return np.concatenate([np.exp(self.logprobs([self.encode(p) for p in prefixes[i:i + CHUNK]]))
                               for i in range(0, len(prefixes), CHUNK)])

    def topk_batch(self, prefixes: list[str], k: int = 3, batch_size: int = 512,
                   stride: int | None = None) -> list[list[tuple[str, float]]]:
        """The k most likely distinct suggestible characters with probabilities, best first, per prefix.

        `stride` reads every prefix through the window a typing `Session` with that stride shows (default: this
        predictor's own). batch_size is a floor on prefixes per logprobs call (at least CHUNK go together, so
        windows of a typing trace can share a forward pass).
        """
        if k < 1:
            raise UserError(f"-k {k}: must be at least 1")
        pred = self if stride is None else self.windowed(stride)
        ok, out = self.suggestible(), []
        chunk = max(batch_size, CHUNK)
        for i in range(0, len(prefixes), chunk):
            lp = pred.logprobs([self.encode(p) for p in prefixes[i:i + chunk]])  # (n, V)
            out.extend(rank(np.exp(lp), ok, self.vocab.chars, k))
        return out

    def topk(self, prefix: str, k: int = 3) -> list[tuple[str, float]]:
        """topk_batch of one prefix."""
        return self.topk_batch([prefix], k)[0]

    def session(self, stride: int | None = None) -> Session:
        """A new typing session (one user's incremental state); `stride` as in topk_batch."""
        return Session(self if stride is None else self.windowed(stride))

    def _with(self, **changes) -> Predictor:
        """A shallow copy with some attributes changed (sharing the model)."""
        other = copy.copy(self)
        other.__dict__.update(changes)
        return other


class Session:
    """One typing session: per keystroke the predictor reads only what changed since the last prefix.

    Each prefix's history is compared with the one read before: the state is truncated to their common part
    (a backspace or an edit) and fed the rest, so the answers are exactly those of `Predictor.topk_batch` of the
    whole prefix (within float rounding) while a backend with a cache recomputes only when its window moves
    (see window_start). Holds one user's state: create one per typing session, never share one between users or
    threads.
    """

    def __init__(self, pred: Predictor):
        self.pred = pred
        self.reset()

    @property
    def stride(self) -> int:
        return self.pred.stride

    @property
    def recomputes(self) -> int:
        """Windows computed from their start so far (first keystroke, window jumps, edits before the window)."""
        return self.pred.work(self._state)[0]

    @property
    def fed(self) -> int:
        """Ids run through the network so far."""
        return self.pred.work(self._state)[1]

    def reset(self) -> None:
        self._state = self.pred.start()
        self._ids = np.zeros(0, dtype=np.int64)  # the history the state has read
        self._last: np.ndarray | None = None  # logprobs (V,) after _ids

    def logprobs(self, prefix: str) -> np.ndarray:
        """Natural-log distribution (V,) of the next id after prefix."""
        ids = self.pred.encode(prefix)
        old = self._ids
        n = min(len(old), len(ids))
        diff = np.flatnonzero(old[:n] != ids[:n])
        j = int(diff[0]) if len(diff) else n  # ids the old and new history share
        if j == len(old) == len(ids) and self._last is not None:
            return self._last.copy()
        # A truncated copy or the state itself (never changed in place): if feeding fails, the session still
        # holds its last consistent state.
        state = self._state if j == len(old) else self.pred.truncate(self._state, j)
        state, lp = self.pred.feed(state, ids[j:])
        self._state, self._ids, self._last = state, ids, lp
        return lp.copy()

    def dist(self, prefix: str) -> np.ndarray:
        return np.exp(self.logprobs(prefix))

    def topk(self, prefix: str, k: int = 3) -> list[tuple[str, float]]:
        """What Predictor.topk shows for this prefix, computed incrementally."""
        return rank(self.dist(prefix)[None], self.pred.suggestible(), self.pred.vocab.chars, k)[0]
