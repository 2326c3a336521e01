"""What the PyTorch and ONNX backends share: a Transformer's window over a history, shared batch windows, the KV cache.

A subclass supplies four operations on its runtime's arrays (`_positions`, `_step`, `_empty`, `_slice`); this
class turns them into the contract: `logprobs` of histories through the typing window (base.window_start) with
windows that begin one another sharing one forward pass, and start / feed / truncate over a key/value cache
whose window start stays put until the window is full. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nextchar.engine.base import Predictor, check_stride, window, window_start
from nextchar.vocab import Vocab

# Positions per forward pass when whole windows are computed: bounds the (B, T, V) logits held at once.
TOKENS_PER_FORWARD = 16384
MAX_ROWS = 512  # distinct windows per forward pass


def share_windows(contexts: list[np.ndarray]) -> np.ndarray:
    """For each context, the index of a context that begins with it (itself if none): one forward answers both.

    Fixed-width big-endian bytes sort like the id sequences, and every context that begins with a given one
    follows it directly in sorted order, so one backward pass over the sorted keys links each to its longest.
    """
    keys = [np.asarray(c, dtype=">u4").tobytes() for c in contexts]
    owner = np.arange(len(keys))
    nxt = -1
    for j in sorted(range(len(keys)), key=keys.__getitem__, reverse=True):
        if nxt >= 0 and keys[nxt].startswith(keys[j]):
            owner[j] = owner[nxt]
        nxt = j
    return owner


@dataclass(frozen=True)
class CacheState:
    """A typing state: the history read, and the key/value cache of its window's first `cached` ids.

    The window starts at `anchor` among the ids of START + history (window_start); `last` is the distribution
    after the whole history, or None after a truncation (the next feed computes it).
    """

    history: np.ndarray  # (H,) ids read, START not included
    anchor: int  # window start in START + history
    kv: Any  # the runtime's cache of ids anchor .. anchor + cached - 1, or None
    cached: int
    last: np.ndarray | None  # (V,)
    recomputes: int = 0  # windows fed from their start, summed over the states this one grew from
    fed: int = 0  # ids run through the network, likewise


class WindowedPredictor(Predictor):
    """A causal Transformer with a bounded context behind the contract (subclasses: PyTorch, ONNX)."""

    incremental = True

    def __init__(self, vocab: Vocab, context: int, run_id: str = "", stride: int = 1,
                 ngram_order: int = 0, pad_id: int = 0):
        super().__init__(vocab, context, run_id)
        self.stride = check_stride(stride, self.context)
        # Hashed n-gram inputs read the ngram_order - 1 ids before each fed piece (inside the window; pad_id
        # where the window has none); 0 = the model has none.
        self.prev_len = max(0, ngram_order - 1)
        self.pad_id = pad_id

    # -- the runtime's operations ------------------------------------------------------------------------------
    def _positions(self, ids: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Log-probabilities (M, V) after ids[rows[m], :cols[m] + 1] of a right-padded batch ids (B, T)."""
        raise NotImplementedError

    def _step(self, kv: Any, ids: np.ndarray, prev: np.ndarray | None) -> tuple[Any, np.ndarray]:
        """(cache with ids (T,) appended, logprobs (V,) after the last); prev (K,) the ids before them, or None."""
        raise NotImplementedError

    def _step_many(self, kvs: list[Any], ids: np.ndarray, prevs: np.ndarray | None) -> tuple[list[Any], np.ndarray]:
        """One id per cache, all caches holding the same number of ids: (caches with ids[i] appended, logprobs
        (N, V)); prevs (N, K) the ids before each, or None. Runtimes that cannot batch leave it unimplemented."""
        raise NotImplementedError

    def _empty(self) -> Any:
        """A cache of no ids."""
        raise NotImplementedError

    def _slice(self, kv: Any, n: int) -> Any:
        """The cache of its first n ids (attention is causal: they do not depend on what follows)."""
        raise NotImplementedError

    # -- the contract -------------------------------------------------------------------------------------
    def windowed(self, stride: int) -> WindowedPredictor:
        return self if stride == self.stride else self._with(stride=check_stride(stride, self.context))

    def window(self, history: np.ndarray) -> np.ndarray:
        """The ids (T,) this model reads after history (base.window with this predictor's stride)."""
        return window(history, self.context, self.start_id, self.stride)

    def logprobs(self, contexts: list[np.ndarray]) -> np.ndarray:
        return self.window_logprobs([self.window(h) for h in contexts])

    def window_logprobs(self, windows: list[np.ndarray], max_rows: int = MAX_ROWS) -> np.ndarray:
        """logprobs (N, V) after each window (ids as the model reads them): one row per distinct window, longest
        first so padding stays small."""
        n = len(windows)
        out = np.zeros((n, self.vocab.size), dtype=np.float32)
        if n == 0:
            return out
        lens = np.array([len(c) for c in windows])
        if lens.min() < 1 or lens.max() > self.context:
            raise ValueError(f"windows must hold 1 to {self.context} ids")
        owner = share_windows(windows)  # (N,)
        owners = np.unique(owner)
        owners = owners[np.argsort(-lens[owners], kind="stable")]
        slot = np.empty(n, dtype=np.int64)
        slot[owners] = np.arange(len(owners))
        member_slot = slot[owner]  # (N,) row of each window's owner in `owners`
        members = np.argsort(member_slot, kind="stable")  # windows grouped by owner
        sorted_slots = member_slot[members]
        s0 = 0
        while s0 < len(owners):
            T = int(lens[owners[s0]])
            s1 = min(len(owners), s0 + max_rows, s0 + max(1, TOKENS_PER_FORWARD // T))
            ids = np.zeros((s1 - s0, T), dtype=np.int64)  # (B, T) right-padded; padding is never attended to
            for r, o in enumerate(owners[s0:s1]):
                ids[r, :lens[o]] = windows[o]
            lo, hi = np.searchsorted(sorted_slots, [s0, s1])
            m = members[lo:hi]
            out[m] = self._positions(ids, sorted_slots[lo:hi] - s0, lens[m] - 1)
            s0 = s1
        return out

    # A backend without a step graph (incremental False) keeps the base class's states: each feed afresh.
    def start(self) -> CacheState:
        if not self.incremental:
            return super().start()
        return CacheState(np.zeros(0, dtype=np.int64), 0, None, 0, None)

    def feed(self, state: CacheState, ids: np.ndarray) -> tuple[CacheState, np.ndarray]:
        if not self.incremental:
            return super().feed(state, ids)
        if len(ids) == 0 and state.last is not None:
            return state, state.last
        history = np.concatenate([state.history, np.asarray(ids, dtype=np.int64)]) if len(ids) else state.history
        n = len(history) + 1  # ids of START + history
        a = window_start(n, self.context, self.stride)
        kv, cached = state.kv, state.cached
        if kv is None or a != state.anchor:
            kv, cached = None, 0  # the window moved (or nothing is cached): computed from its start
        elif cached >= n - a:
            cached = n - a - 1  # every id is cached but the distribution is not: run the last id again
            kv = self._slice(kv, cached)
        if kv is None:
            kv = self._empty()
        seq = self.window(history)  # (n - a,) the window's ids
        new = seq[cached:]
        prev = None
        if self.prev_len:
            prev = np.concatenate([np.full(self.prev_len, self.pad_id, dtype=np.int64), seq[:cached]])[-self.prev_len:]
        kv, lp = self._step(kv, new, prev)
        out = CacheState(history, a, kv, n - a, lp, state.recomputes + int(cached == 0), state.fed + len(new))
        return out, lp

    def feed_many(self, states: list[CacheState], ids: np.ndarray) -> tuple[list[CacheState], np.ndarray]:
        # One batched step when every state holds its whole window in its cache, at the same place, and one more
        # id does not move the window; otherwise (or for a runtime without _step_many) one by one.
        ids = np.asarray(ids, dtype=np.int64)
        if not (self.incremental and states and all(st.kv is not None for st in states)):
            return super().feed_many(states, ids)
        n = len(states[0].history) + 1  # ids of START + history
        a = window_start(n + 1, self.context, self.stride)
        if any(len(st.history) + 1 != n or st.anchor != a or st.cached != n - a for st in states):
            return super().feed_many(states, ids)
        prevs = None
        if self.prev_len:
            prevs = np.stack([np.concatenate([np.full(self.prev_len, self.pad_id, dtype=np.int64),
                                              self.window(st.history)])[-self.prev_len:] for st in states])  # (N, K)
        try:
            kvs, lps = self._step_many([st.kv for st in states], ids, prevs)  # (N, V)
        except NotImplementedError:
            return super().feed_many(states, ids)
        out = [CacheState(np.append(st.history, i), a, kv, n + 1 - a, lp, st.recomputes, st.fed + 1)
               for st, i, kv, lp in zip(states, ids.tolist(), kvs, lps)]
        return out, lps

    def truncate(self, state: CacheState, n: int) -> CacheState:
        if not self.incremental:
            return super().truncate(state, n)
        if n >= len(state.history):
            return state
        a = window_start(n + 1, self.context, self.stride)
        keep = min(state.cached, n + 1 - a) if state.kv is not None and a == state.anchor else 0
        kv = self._slice(state.kv, keep) if keep > 0 else None
        return CacheState(state.history[:n], a, kv, keep, None, state.recomputes, state.fed)

    def work(self, state: CacheState) -> tuple[int, int]:
        return (state.recomputes, state.fed) if self.incremental else (0, 0)
