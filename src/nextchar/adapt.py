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
# (row), how often that context was seen (COUNT_EDGES) and whether only one character ever followed it
# (column = 2 · count column + deterministic). A name typed once makes M large with count 1 and one
# follower; the model alone never saw it.
#
# The one adaptation mechanism of every surface (server sessions, word completion, the keystroke benchmark,
# `nextchar eval --stream`): a pure function of the session's text (its last MAX_TEXT characters), so a
# request costs one pass over that text per order and a session holds only its text. Chosen on dev streams of
# the shipped combination over a session PPM with online weights (Dasher's PPM blending, update exclusion; it
# needed ~3 KB per character of state): docs/quality.md.
#
# Tuned by `tune()` (an exact per-cell grid search, see there) for the shipped default model on the first
# 20,000 dev characters of each of the 24 Dasher languages, each read in a fresh session. Held-out (test)
# gains: docs/quality.md. Re-tune for another model with `python benchmarks/adaptation.py --run RUN --tune`
# and paste what it prints here.
COUNT_EDGES = (1, 2, 4, 8, 16)  # count column c holds context counts in [COUNT_EDGES[c], COUNT_EDGES[c + 1])
N_COLUMNS = 2 * len(COUNT_EDGES)  # each count column split by "one follower only" (deterministic)
MAX_ORDER = 10  # longest cache context, in characters (cache 11-grams)
ESCAPE = 2.0  # Witten-Bell escape factor: weight of the lower order per distinct follower
UNIFORM = 1e-05  # λu: the floor that keeps every non-special character reachable
CACHE_WEIGHTS = (  # λc by [M][column]
    (0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00),
    (0.00, 0.00, 0.00, 0.05, 0.00, 0.00, 0.00, 0.00, 0.00, 0.10),
    (0.00, 0.00, 0.00, 0.05, 0.00, 0.05, 0.05, 0.05, 0.05, 0.35),
    (0.00, 0.05, 0.05, 0.10, 0.10, 0.15, 0.10, 0.30, 0.15, 0.35),
    (0.00, 0.15, 0.15, 0.25, 0.15, 0.35, 0.20, 0.45, 0.30, 0.55),
    (0.00, 0.20, 0.20, 0.35, 0.20, 0.50, 0.25, 0.70, 0.25, 0.75),
    (0.00, 0.30, 0.20, 0.45, 0.15, 0.70, 0.30, 0.85, 0.35, 0.80),
    (0.00, 0.35, 0.20, 0.55, 0.25, 0.75, 0.25, 0.80, 0.55, 0.80),
    (0.00, 0.35, 0.25, 0.60, 0.25, 0.75, 0.35, 0.80, 0.55, 0.80),
    (0.00, 0.40, 0.25, 0.60, 0.20, 0.75, 0.40, 0.80, 0.55, 0.80),
    (0.00, 0.60, 0.30, 0.80, 0.45, 0.90, 0.50, 0.90, 0.45, 0.15),
)

MAX_TEXT = 20_000  # characters of text a session's cache reads (history + current prefix), newest kept
MAX_SESSIONS = 1_000  # sessions a SessionStore keeps; the least recently used is dropped beyond this
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Weights:
    """The mixing parameters; the number of rows of `cache` fixes the longest cache context."""

    cache: tuple[tuple[float, ...], ...]  # λc by [longest seen context length][column]
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
        if not self.cache or any(len(row) != N_COLUMNS for row in self.cache):
            problems.append(f"cache: need rows of {N_COLUMNS} weights (one per column)")
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

    def cache_weight(self, order: int, count: int, distinct: int) -> float:
        """λc for a longest seen context of this length, count and number of distinct followers."""
        return self.cache[order][column(count, distinct)]


def column(count: int, distinct: int) -> int:
    """Weight column of a longest seen context: 2 · its count column + (one follower only)."""
    return 2 * max(int(np.searchsorted(COUNT_EDGES, count, side="right")) - 1, 0) + int(distinct == 1)


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

    @property
    def distinct(self) -> int:
        """How many different ids followed the longest seen context."""
        return int(np.count_nonzero(self.counts[-1]))

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
    lam_c = 0.0 if cache is None else weights.cache_weight(cache.order, cache.count, cache.distinct)
    out = (1.0 - lam_c - lam_u) * p_model.astype(np.float64) + lam_u * uniform_floor(p_model.size, n_special)
    if lam_c > 0.0 and cache is not None:
        out += lam_c * cache.probs(weights.escape)
    return out


def stream_caches(ids: np.ndarray, lo: int, hi: int, start_id: int, vocab_size: int, n_special: int,
                  max_order: int = MAX_ORDER, max_text: int = MAX_TEXT) -> Iterator[CacheCounts | None]:
    """The cache of each position lo .. hi - 1 of a text ids read in order: position t's reads START + ids[:t]
    (its last max_text + 1 ids), what a fresh AdaptiveSession reads for the prefix ids[:t]."""
    start = np.array([start_id], dtype=np.int64)
    for t in range(lo, hi):
        yield cache_counts(np.concatenate([start, ids[max(0, t - max_text):t]]), vocab_size, max_order, n_special)


def stream_probs(static: np.ndarray, ids: np.ndarray, lo: int, start_id: int, n_special: int,
                 weights: Weights = WEIGHTS, max_text: int = MAX_TEXT) -> np.ndarray:
    """(n, V) adapted distributions at positions lo .. lo + n - 1 of a text ids read in order, static (n, V) the
    model's distributions there (the streaming evaluation's session: see stream_caches)."""
    v = static.shape[1]
    caches = stream_caches(ids, lo, lo + len(static), start_id, v, n_special, weights.max_order, max_text)
    return np.stack([mix(p, c, weights, n_special) for p, c in zip(static, caches)]) if len(static) else \
        np.zeros((0, v))


def stream_true(p_true: np.ndarray, ids: np.ndarray, start_id: int, vocab_size: int, n_special: int,
                weights: Weights = WEIGHTS, max_text: int = MAX_TEXT) -> np.ndarray:
    """(T,) the adapted probability of each true id of a text read in order, p_true (T,) the model's: the mixture is
    linear, so each position needs only the model's probability of what came (a true special gets no floor)."""
    ids = np.asarray(ids, dtype=np.int64)
    out = np.empty(len(ids))
    floor = 1.0 / (vocab_size - n_special)
    for t, c in enumerate(stream_caches(ids, 0, len(ids), start_id, vocab_size, n_special, weights.max_order,
                                        max_text)):
        y = int(ids[t])
        lam_c = 0.0 if c is None else weights.cache_weight(c.order, c.count, c.distinct)
        q = (1.0 - lam_c - weights.uniform) * float(p_true[t]) + (weights.uniform * floor if y >= n_special else 0.0)
        out[t] = q + (lam_c * float(c.probs(weights.escape)[y]) if lam_c > 0.0 else 0.0)
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
                    history: np.ndarray | None = None, batch: int = 256, stride: int | None = None
                    ) -> Iterator[TypingStep]:
    """A user types ids from an empty prefix; at position p the cache reads history + START + ids[:p].

    stride: the model reads each prefix through the typing window of that stride (default: the predictor's own).
    """
    start = pred.vocab.encode(START)
    model_pred = pred if stride is None else pred.windowed(stride)
    hist = history if history is not None else start[:0]
    text = np.concatenate([hist, start, ids])
    specials = count_specials(pred.vocab)
    off = hist.size + 1  # index of ids[0] in text
    for lo in range(0, ids.size, batch):
        pos = range(lo, min(ids.size, lo + batch))
        model = np.exp(model_pred.logprobs([ids[:p] for p in pos]))  # histories: views of ids
        caches = [cache_counts(text[max(0, off + p - max_text - 1):off + p], pred.vocab.size, max_order, specials)
                  for p in pos]
        yield TypingStep(ids[lo:pos.stop].astype(np.intp), model, caches)


def tune(pred: Predictor, data: str | Path, split: str = "dev", chars: int = 20000,
         escapes: Sequence[float] = (1.0, 2.0), uniforms: Sequence[float] = (1e-5, 1e-4, 1e-3),
         grid: Sequence[float] = tuple(np.round(np.arange(0.0, 0.96, 0.05), 2)), max_order: int = MAX_ORDER,
         min_positions: int = 50, stride: int | None = None) -> tuple[Weights, dict]:
    """Grid-search the mixing weights for least cross-entropy on the first `chars` characters of each language.

    Each language's text is read in a fresh session, as `nextchar eval --stream` reads it (the model through
    the typing window of `stride`). For a fixed (escape, λu) the loss splits into one sum per (M, column)
    cell, so each cell's λc is the exact grid minimum of its own positions; cells with fewer than
    min_positions positions copy the same column one context shorter (0 in the first row). Returns the best
    weights and a summary with bpc before and after.
    """
    from nextchar.data import open_data

    ds = open_data(data)
    ds.check_vocab(pred.vocab)
    pm: list[np.ndarray] = []  # p_model(target) per position
    pc: dict[float, list[np.ndarray]] = {e: [] for e in escapes}  # p_cache(target) per escape, 0 without cache
    cell: list[np.ndarray] = []  # (row, col) per position; row -1 without cache
    for lang in ds.languages:
        ids = np.asarray(ds.split(lang, split)[:chars])
        for step in simulate_typing(pred, ids, max_order, stride=stride, batch=2048):
            rows = np.arange(step.targets.size)
            pm.append(step.model[rows, step.targets])
            rc = [(-1, 0) if c is None else (c.order, column(c.count, c.distinct)) for c in step.caches]
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
            table = np.zeros((max_order + 1, N_COLUMNS))
            loss = 0.0
            ok_l = lams[lams + u < 1.0]
            for r in range(-1, max_order + 1):
                for c in range(N_COLUMNS):
                    sel = (cells[:, 0] == r) & (cells[:, 1] == c)
                    if r >= 0 and sel.sum() < min_positions:
                        table[r, c] = table[r - 1, c] if r else 0.0
                    if not sel.any():
                        continue
                    if r < 0 or sel.sum() < min_positions:
                        lam = np.array([0.0 if r < 0 else table[r, c]])
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
