"""Per-user adaptation: mix the model's next-character distribution with a cache n-gram over the user's text."""

from __future__ import annotations

import collections
import functools
import math
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nextchar.engine.base import START, Predictor, rank
from nextchar.errors import UserError, check_float, check_int, check_text, check_texts
from nextchar.vocab import Vocab

# p = (1 - λc - λu)·p_model + λc·p_cache + λu·uniform, where p_cache is a Witten-Bell-style interpolation of
# cache n-grams (contexts of 0..MAX_ORDER characters) over the session's text, and λc depends on how much
# the cache knows about the current context: the longest context length M seen before in the session text
# (row) and how often that context was seen (column, COUNT_EDGES). A name typed once makes M large with
# count 1; the model alone never saw it.
#
# Tuned by `tune()` (an exact per-cell grid search, see there) for the n-gram baseline
# (`nextchar train --model ngram --order 6 --data data/dasher`): the first 4,000 dev characters of each of
# the 24 Dasher languages, each typed in a fresh session (93,460 positions): dev bpc 2.544 -> 2.362.
# Held-out (test) gains: benchmarks/adaptation.py. Re-tune for another model with
# `python benchmarks/adaptation.py --run RUN --tune` and paste what it prints here.
COUNT_EDGES = (1, 2, 4)  # column c holds context counts in [COUNT_EDGES[c], COUNT_EDGES[c + 1])
MAX_ORDER = 6  # longest cache context, in characters (cache 7-grams); 5 and 7 differ by < 0.005 bpc
ESCAPE = 2.0  # Witten-Bell escape factor: weight of the lower order per distinct follower
UNIFORM = 1e-05  # λu: the floor that keeps every non-special character reachable
CACHE_WEIGHTS = (  # λc by [M][count column]
    (0.00, 0.00, 0.00),
    (0.00, 0.05, 0.05),
    (0.10, 0.10, 0.15),
    (0.20, 0.30, 0.35),
    (0.35, 0.35, 0.40),
    (0.35, 0.35, 0.30),
    (0.60, 0.65, 0.60),
)

MAX_TEXT = 20_000  # characters of text a session's cache reads (history + current prefix), newest kept
MAX_SESSIONS = 1_000  # sessions a SessionStore keeps; the least recently used is dropped beyond this
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Weights:
    """The mixing parameters; the number of rows of `cache` fixes the longest cache context."""

    cache: tuple[tuple[float, ...], ...]  # λc by [longest seen context length][count column]
    uniform: float = UNIFORM  # λu
    escape: float = ESCAPE  # Witten-Bell escape factor (> 0)

    def __post_init__(self) -> None:
        problems = []
        for name, lo, hi in (("uniform", 0.0, 1.0), ("escape", 0.0, 1e9)):
            try:
                check_float(getattr(self, name), name, lo, hi, lo_open=True, hi_open=True)
            except UserError as e:
                problems.append(str(e))
        try:
            for row in self.cache:
                for w in row:
                    check_float(w, "cache weight", 0.0, 1.0)
        except (UserError, TypeError) as e:
            problems.append(f"cache: rows of numbers in [0, 1] expected ({e})")
        if problems:
            raise UserError("adaptation weights: " + "; ".join(problems))
        if not self.cache or any(len(row) != len(COUNT_EDGES) for row in self.cache):
            problems.append(f"cache: need rows of {len(COUNT_EDGES)} weights (one per count column)")
        elif any(not 0.0 <= w or w + self.uniform >= 1.0 for row in self.cache for w in row):
            problems.append("cache: each weight must be >= 0 with weight + uniform < 1")
        if not 0.0 < self.uniform < 1.0:
            problems.append(f"uniform: {self.uniform} must be in (0, 1) so every character stays reachable")
        if not self.escape > 0.0:
            problems.append(f"escape: {self.escape} must be > 0")
        if problems:
            raise UserError("adaptation weights: " + "; ".join(problems))

    @property
    def max_order(self) -> int:
        return len(self.cache) - 1

    def cache_weight(self, order: int, count: int) -> float:
        col = int(np.searchsorted(COUNT_EDGES, count, side="right")) - 1
        return self.cache[order][max(col, 0)]


WEIGHTS = Weights(CACHE_WEIGHTS, UNIFORM, ESCAPE)


# ------------------------------------------------------------------------------------------ the cache


@dataclass
class CacheCounts:
    """Next-id counts after each suffix of the current context (length 0..order) in a session's text."""

    counts: list[np.ndarray]  # counts[l] (V,): what followed the last l ids wherever they occurred before
    order: int  # the longest context length seen before (len(counts) - 1)

    @property
    def count(self) -> int:
        """How often the longest seen context occurred (with a counted follower)."""
        return int(self.counts[-1].sum())

    def probs(self, escape: float) -> np.ndarray:
        """Interpolated (V,) distribution: p_l = (c_l + e·d_l·p_(l-1)) / (n_l + e·d_l), p_0 = c_0 / n_0."""
        p = self.counts[0] / self.counts[0].sum()
        for c in self.counts[1:]:
            n, d = c.sum(), np.count_nonzero(c)
            p = (c + escape * d * p) / (n + escape * d)
        return p


def cache_counts(ids: np.ndarray, vocab_size: int, max_order: int = MAX_ORDER, n_special: int = 1
                 ) -> CacheCounts | None:
    """Counts for predicting what follows `ids` from `ids` itself; None when it holds no countable pair.

    Every position t >= 1 whose id is not a special is one observation "ids[t] after ids[:t]"; it counts
    for context length l when its l previous ids equal the last l ids of the whole sequence.
    """
    n = ids.size
    if n < 2:
        return None
    tgt = ids[1:].astype(np.intp)  # (n-1,) target t+1 follows ids[..t]
    alive = tgt >= n_special  # (n-1,) still matching the context, and countable
    if not alive.any():
        return None
    match = np.zeros(n - 1, dtype=np.int32)  # (n-1,) matched context length per observation
    for i in range(min(max_order, n - 1)):
        eq = np.zeros(n - 1, dtype=bool)
        eq[i:] = ids[: n - 1 - i] == ids[n - 1 - i]  # the id i places back of each observation vs the context's
        alive &= eq
        if not alive.any():
            break
        match += alive
    keep = tgt >= n_special
    order = int(match[keep].max())
    counts = [np.bincount(tgt[keep & (match >= level)], minlength=vocab_size) for level in range(order + 1)]
    return CacheCounts(counts, order)


def count_specials(vocab: Vocab) -> int:
    """How many ids the specials take (they come first in every vocabulary)."""
    n = 0
    while n < vocab.size and vocab.is_special(n):
        n += 1
    return n


@functools.lru_cache(maxsize=8)
def uniform_floor(vocab_size: int, n_special: int) -> np.ndarray:
    """(V,) uniform over the non-special ids (read-only, shared)."""
    u = np.zeros(vocab_size)
    u[n_special:] = 1.0 / (vocab_size - n_special)
    u.setflags(write=False)
    return u


def mix(p_model: np.ndarray, cache: CacheCounts | None, weights: Weights, n_special: int = 1) -> np.ndarray:
    """(V,) adapted distribution from the model's (V,) and the session's cache counts."""
    lam_u = weights.uniform
    lam_c = 0.0 if cache is None else weights.cache_weight(cache.order, cache.count)
    out = (1.0 - lam_c - lam_u) * p_model.astype(np.float64) + lam_u * uniform_floor(p_model.size, n_special)
    if lam_c > 0.0 and cache is not None:
        out += lam_c * cache.probs(weights.escape)
    return out


# ------------------------------------------------------------------------------------------ sessions


class AdaptiveSession:
    """One user's adapted predictions: the cache reads the observed history, then the current prefix."""

    def __init__(self, predictor: Predictor, weights: Weights = WEIGHTS, max_text: int = MAX_TEXT):
        check_int(max_text, "max_text")
        self.pred = predictor
        self.weights = weights
        self.max_text = max_text
        self.n_special = count_specials(predictor.vocab)
        self._start = predictor.vocab.encode(START)
        self._history = self._start[:0]  # ids of observed text, each piece after START; replaced, never mutated
        self._lock = threading.Lock()

    def observed(self, text: str) -> np.ndarray:
        """The ids a text told to observe adds to the history: START, then the text read as a prefix is
        (Predictor.encode: the training text's normalization) less trailing whitespace, so each observed text is a
        paragraph of its own; at most max_text + 1 ids."""
        ids = self.pred.encode(check_text(text, "text"))
        while len(ids) and self.pred.vocab.chars[ids[-1]] in (" ", START):
            ids = ids[:-1]  # at most one space or line break: prepare_prefix collapsed the run
        return np.concatenate([self._start, ids[-self.max_text:]])

    def observe(self, text: str) -> None:
        """Remember text the user wrote (e.g. a finished message) for later predictions in this session."""
        ids = self.observed(text)
        with self._lock:  # two requests of one session may observe at once; neither may be lost
            self._history = np.concatenate([self._history, ids])[-self.max_text:]

    def forget(self) -> None:
        with self._lock:
            self._history = self._history[:0]

    @property
    def history_chars(self) -> int:
        return int(self._history.size)

    def cache_ids(self, prefix: str) -> np.ndarray:
        """The text the cache reads for this prefix: history, then START + prefix; the last max_text + 1 ids."""
        live = np.concatenate([self._start, self.pred.encode(prefix)[-self.max_text:]])
        hist = self._history  # one read: a concurrent observe swaps in a new array
        return np.concatenate([hist[max(0, hist.size + live.size - self.max_text - 1):], live])

    def dist_batch(self, prefixes: list[str], model_probs: np.ndarray | None = None) -> np.ndarray:
        """(N, V) adapted distributions; model_probs (N, V) may be given when already computed (batched)."""
        if model_probs is None:
            model_probs = self.pred.dist(prefixes)
        v = self.pred.vocab.size
        out = np.empty((len(prefixes), v))
        for i, prefix in enumerate(prefixes):
            cache = cache_counts(self.cache_ids(prefix), v, self.weights.max_order, self.n_special)
            out[i] = mix(model_probs[i], cache, self.weights, self.n_special)
        return out

    def dist(self, prefix: str, model_probs: np.ndarray | None = None) -> np.ndarray:
        """(V,) adapted distribution of the next id after prefix."""
        return self.dist_batch([prefix], None if model_probs is None else model_probs[None])[0]

    def topk_batch(self, prefixes: list[str], k: int = 3) -> list[list[tuple[str, float]]]:
        """Predictor.topk_batch with this session's adaptation mixed in (the same suggestion rules)."""
        prefixes = check_texts(prefixes, "prefixes")
        ok = self.pred.suggestible_after([self.pred.encode(p) for p in prefixes])  # (N, V)
        return rank(self.dist_batch(prefixes), ok, self.pred.vocab.chars, k)

    def topk(self, prefix: str, k: int = 3) -> list[tuple[str, float]]:
        return self.topk_batch([prefix], k)[0]


class SessionStore:
    """Bounded sessions by id: at most max_sessions, least recently used dropped first; thread-safe."""

    def __init__(self, predictor: Predictor, max_sessions: int = MAX_SESSIONS, max_text: int = MAX_TEXT,
                 weights: Weights = WEIGHTS):
        check_int(max_sessions, "max_sessions")
        self.pred = predictor
        self.max_sessions = max_sessions
        self.max_text = max_text
        self.weights = weights
        self._sessions: collections.OrderedDict[str, AdaptiveSession] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, sid: str) -> AdaptiveSession:
        """The session with this id, created empty if new or evicted."""
        if not isinstance(sid, str) or not SESSION_ID.fullmatch(sid):
            raise UserError(f"session {str(sid)[:80]!r}: use 1 to 64 letters, digits, '-' or '_'")
        with self._lock:
            s = self._sessions.get(sid)
            if s is None:
                s = self._sessions[sid] = AdaptiveSession(self.pred, self.weights, self.max_text)
                while len(self._sessions) > self.max_sessions:
                    self._sessions.popitem(last=False)
            else:
                self._sessions.move_to_end(sid)
            return s

    def forget(self, sid: str) -> bool:
        """Drop a session and its text; False when it was not there."""
        with self._lock:
            return self._sessions.pop(sid, None) is not None

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, sid: object) -> bool:
        return sid in self._sessions


# ------------------------------------------------------------------------------------------ tuning


@dataclass
class TypingStep:
    """A chunk of simulated keystrokes: targets (n,), the model's (n, V) and each position's cache counts."""

    targets: np.ndarray
    model: np.ndarray
    caches: list[CacheCounts | None]


def simulate_typing(pred: Predictor, ids: np.ndarray, max_order: int = MAX_ORDER, max_text: int = MAX_TEXT,
                    history: np.ndarray | None = None, batch: int = 256) -> Iterator[TypingStep]:
    """A user types ids from an empty prefix; at position p the cache reads history + START + ids[:p]."""
    start = pred.vocab.encode(START)
    hist = history if history is not None else start[:0]
    text = np.concatenate([hist, start, ids])
    specials = count_specials(pred.vocab)
    off = hist.size + 1  # index of ids[0] in text
    for lo in range(0, ids.size, batch):
        pos = range(lo, min(ids.size, lo + batch))
        model = np.exp(pred.logprobs([ids[:p] for p in pos]))  # histories: views of ids
        caches = [cache_counts(text[max(0, off + p - max_text - 1):off + p], pred.vocab.size, max_order, specials)
                  for p in pos]
        yield TypingStep(ids[lo:pos.stop].astype(np.intp), model, caches)


def tune(pred: Predictor, data: str | Path, split: str = "dev", chars: int = 4000,
         escapes: Sequence[float] = (0.5, 1.0, 2.0), uniforms: Sequence[float] = (1e-5, 1e-4, 1e-3, 1e-2),
         grid: Sequence[float] = tuple(np.round(np.arange(0.0, 0.96, 0.05), 2)), max_order: int = MAX_ORDER,
         min_positions: int = 50) -> tuple[Weights, dict]:
    """Grid-search the mixing weights for least cross-entropy on the first `chars` characters of each language.

    For a fixed (escape, λu) the loss splits into one sum per (M, count) cell, so each cell's λc is the
    exact grid minimum of its own positions; cells with fewer than min_positions positions copy the cell
    to their left (or above). Returns the best weights and a summary with bpc before and after.
    """
    from nextchar.data import open_data

    ds = open_data(data)
    if ds.vocab.hash != pred.vocab.hash:
        raise UserError(f"{ds.path}: data vocabulary ({ds.vocab.hash}) differs from the model's ({pred.vocab.hash})")
    pm: list[np.ndarray] = []  # p_model(target) per position
    pc: dict[float, list[np.ndarray]] = {e: [] for e in escapes}  # p_cache(target) per escape, 0 without cache
    cell: list[np.ndarray] = []  # (row, col) per position; row -1 without cache
    for lang in ds.languages:
        ids = np.asarray(ds.split(lang, split)[:chars])
        for step in simulate_typing(pred, ids, max_order):
            rows = np.arange(step.targets.size)
            pm.append(step.model[rows, step.targets])
            rc = [(-1, 0) if c is None else
                  (c.order, int(np.searchsorted(COUNT_EDGES, c.count, side="right")) - 1) for c in step.caches]
            cell.append(np.array(rc, dtype=np.int64).reshape(-1, 2))
            for e in escapes:
                pc[e].append(np.array([0.0 if c is None else c.probs(e)[y]
                                       for c, y in zip(step.caches, step.targets)]))
    if not pm:
        raise UserError(f"{ds.path}: the {split} split is empty for every language")
    p_model, cells = np.concatenate(pm), np.concatenate(cell)
    floor = 1.0 / (pred.vocab.size - count_specials(pred.vocab))
    lams = np.asarray(grid, dtype=np.float64)
    best: tuple[float, Weights] | None = None
    for e in escapes:
        p_cache = np.concatenate(pc[e])
        for u in uniforms:
            table = np.zeros((max_order + 1, len(COUNT_EDGES)))
            loss = 0.0
            ok_l = lams[lams + u < 1.0]
            for r in range(-1, max_order + 1):
                for c in range(len(COUNT_EDGES)):
                    sel = (cells[:, 0] == r) & (cells[:, 1] == c)
                    if not sel.any():
                        continue
                    if r < 0 or sel.sum() < min_positions:
                        lam = np.array([0.0 if r < 0 else (table[r, c - 1] if c else table[r - 1, c] if r else 0.0)])
                    else:
                        lam = ok_l
                    p = ((1 - lam - u)[:, None] * p_model[sel] + lam[:, None] * p_cache[sel] + u * floor)  # (G, n)
                    nll = -np.log(np.maximum(p, 1e-300)).sum(axis=1)  # (G,)
                    g = int(nll.argmin())
                    loss += float(nll[g])
                    if r >= 0:
                        table[r, c] = lam[g]
            if best is None or loss < best[0]:
                best = (loss, Weights(tuple(tuple(float(x) for x in row) for row in table), u, e))
    assert best is not None
    n = p_model.size
    plain = float(-np.log(p_model).sum() / n / math.log(2))
    summary = {"positions": n, "languages": len(ds.languages), "bpc_plain": plain,
               "bpc_adapted": best[0] / n / math.log(2)}
    return best[1], summary


def format_weights(w: Weights) -> str:
    """The module constants for these weights, to paste above."""
    rows = "\n".join("    (" + ", ".join(f"{x:.2f}" for x in row) + ")," for row in w.cache)
    return (f"MAX_ORDER = {w.max_order}\nESCAPE = {w.escape}\nUNIFORM = {w.uniform}\n"
            f"CACHE_WEIGHTS = (\n{rows}\n)")
