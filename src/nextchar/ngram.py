"""Interpolated modified Kneser-Ney character n-gram model (Chen & Goodman) over integer token ids, in numpy."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from nextchar.errors import UserError

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

# Used for a discount whose Chen & Goodman estimate is undefined (a zero count-of-counts) or outside (0, k):
# the same defaults KenLM's --discount_fallback uses. Only tiny or degenerate corpora hit this.
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)
_FORMAT = "nextchar-ngram"
_VERSION = 1
_BATCH_ROWS = 1024  # dist_batch works in chunks of this many contexts to bound its temporaries
_INT64_MAX = np.iinfo(np.int64).max

# Notation: level m holds the n-grams of order m+1, i.e. (context of m ids, next id). A context of level m
# has an id = its index in that level's sorted `ctx_keys`, where key = (id of the context without its
# OLDEST id) * V + oldest id. The trie is thus built right-to-left, so one walk from the most recent id
# backwards finds every suffix of a query context: suffix m+1 is one searchsorted away from suffix m.


def estimate_discounts(counts: npt.NDArray[np.integer]) -> tuple[float, float, float]:
    """D1, D2, D3+ from count-of-counts n1..n4 (Chen & Goodman 1998, eq. 26), with per-value fallbacks."""
    n = np.bincount(np.minimum(np.asarray(counts, dtype=np.int64), 5), minlength=6).astype(np.float64)
    n1, n2, n3, n4 = n[1], n[2], n[3], n[4]
    y = n1 / (n1 + 2 * n2) if n1 + 2 * n2 > 0 else np.nan
    est = (
        1 - 2 * y * n2 / n1 if n1 > 0 else np.nan,
        2 - 3 * y * n3 / n2 if n2 > 0 else np.nan,
        3 - 4 * y * n4 / n3 if n3 > 0 else np.nan,
    )
    # a discount of k or more would give n-grams seen k times no mass of their own; NaN compares False
    return tuple(  # type: ignore[return-value]
        float(d) if 0 < d < k else fb for k, (d, fb) in enumerate(zip(est, FALLBACK_DISCOUNTS), start=1)
    )


@dataclass(frozen=True)
class _Level:
    """Counts of one n-gram order; shared between a model and its with_order views."""

    ctx_keys: IntArray  # (C,) sorted; (parent context id) * V + oldest id; level 0: [0] (the empty context)
    pair_keys: IntArray  # (P,) sorted; context id * V + next id
    raw: npt.NDArray[np.int32]  # (P,) occurrences of the n-gram
    cont: npt.NDArray[np.int32] | None  # (P,) distinct left extensions (start of a sequence counts as one)


@dataclass(frozen=True)
class _Stats:
    """What interpolation needs for one level under one count kind (raw when it is the top order)."""

    counts: npt.NDArray[np.int32]  # (P,) raw or cont of the level
    dtab: FloatArray  # (4,) discount by min(count, 3); dtab[0] unused
    total: FloatArray  # (C,) sum of counts per context
    gamma: FloatArray  # (C,) backoff weight: sum of discounts per context / total


def _compute_stats(
    level: _Level, counts: npt.NDArray[np.int32], disc: tuple[float, float, float], v: int
) -> _Stats:
    dtab = np.array([0.0, *disc])  # (4,)
    pair_ctx = level.pair_keys // v  # (P,)
    n_ctx = level.ctx_keys.size
    total = np.bincount(pair_ctx, weights=counts, minlength=n_ctx)  # (C,)
    taken = np.bincount(pair_ctx, weights=dtab[np.minimum(counts, 3)], minlength=n_ctx)  # (C,)
    with np.errstate(invalid="ignore", divide="ignore"):
        gamma = taken / total  # (C,) every stored context has total >= 1, so no NaN survives a lookup
    return _Stats(counts, dtab, total, gamma)


class NGramModel:
    """Interpolated modified Kneser-Ney n-gram over ids 0..V-1, down to a uniform 1/V floor.

    The highest order uses raw counts; lower orders use continuation counts (distinct left neighbours;
    the start of a training sequence counts as one distinct neighbour, so every seen n-gram has one).
    Deviations from the textbook: a context never seen in training (as a context, i.e. followed by
    something) gets backoff weight 1, so the distribution is that of its longest seen suffix; discounts
    whose estimate is undefined or outside (0, k) fall back to FALLBACK_DISCOUNTS.
    """

    order: int
    vocab_size: int

    def __init__(
        self,
        levels: list[_Level],
        vocab_size: int,
        disc_raw: list[tuple[float, float, float]],
        disc_cont: list[tuple[float, float, float] | None],
        _cache: dict[tuple[int, str], _Stats] | None = None,
    ) -> None:
        self.order = len(levels)
        self.vocab_size = vocab_size
        self._levels = levels
        self._disc_raw = disc_raw
        self._disc_cont = disc_cont
        self._cache: dict[tuple[int, str], _Stats] = {} if _cache is None else _cache
        self._stats = [
            self._level_stats(m, "raw" if m == self.order - 1 else "cont") for m in range(self.order)
        ]

    def _level_stats(self, m: int, kind: str) -> _Stats:
        if (m, kind) not in self._cache:
            lv = self._levels[m]
            counts, disc = (lv.raw, self._disc_raw[m]) if kind == "raw" else (lv.cont, self._disc_cont[m])
            assert counts is not None and disc is not None
            self._cache[(m, kind)] = _compute_stats(lv, counts, disc, self.vocab_size)
        return self._cache[(m, kind)]

    @property
    def discounts(self) -> list[tuple[float, float, float]]:
        """(D1, D2, D3+) per order 1..order, as this model uses them."""
        return [tuple(float(d) for d in s.dtab[1:]) for s in self._stats]  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"NGramModel(order={self.order}, vocab_size={self.vocab_size})"

    def num_entries(self) -> int:
        """Stored n-grams over all orders: the model's size in the study's "parameters" column."""
        return int(sum(len(lv.pair_keys) for lv in self._levels))

    # ---------------------------------------------------------------- fitting

    @classmethod
    def fit(cls, sequences: list[np.ndarray], vocab_size: int, order: int = 8) -> NGramModel:
        """Count n-grams of every order up to `order` within each sequence (never across two)."""
        v = int(vocab_size)
        if v < 1:
            raise UserError(f"ngram: vocab_size must be >= 1, not {vocab_size}")
        if int(order) < 1:
            raise UserError(f"ngram: order must be >= 1, not {order}")
        seqs = [_check_ids(x, v, f"training sequence {i}") for i, x in enumerate(sequences)]
        if not seqs or sum(x.size for x in seqs) == 0:
            raise UserError("ngram: no training tokens to fit on")
        s = np.concatenate(seqs)  # (T,) all sequences back to back
        pos = np.concatenate([np.arange(x.size, dtype=np.int32) for x in seqs])  # (T,) index in own sequence
        del seqs

        counts0 = np.bincount(s, minlength=v)  # (V,)
        seen = np.flatnonzero(counts0)
        levels_raw: list[tuple[IntArray, IntArray, npt.NDArray[np.int32]]] = [
            (np.zeros(1, dtype=np.int64), seen.astype(np.int64), counts0[seen].astype(np.int32))
        ]
        conts: list[npt.NDArray[np.int32] | None] = []

        # Positions still in play at level m: j whose m preceding ids lie in j's own sequence.
        at = np.arange(s.size, dtype=np.int64)  # (T_m,) positions
        ctx = np.zeros(s.size, dtype=np.int64)  # (T_m,) id of the level-(m-1) context of each position
        for m in range(1, int(order)):
            prev_ctx_keys, prev_pairs, _ = levels_raw[m - 1]
            starts = pos[at] < m  # these have exactly m-1 ids of context: the sequence start is their left
            bos_pairs = np.unique(
                ctx[starts] * v + s[at[starts]]
            )  # (B,) level m-1 pairs with a start extension
            at, ctx = at[~starts], ctx[~starts]
            if (prev_ctx_keys.size + 1) * v > _INT64_MAX // v:
                raise UserError(f"ngram: order {order} with vocab_size {v} overflows 64-bit n-gram keys")
            n_at = at.size
            # 1) contexts of level m = (parent context, oldest id). A plain sort with each position's index
            # packed into the low bits is ~2x faster than argsort, so use it whenever the bits fit.
            ck = ctx * v + s[at - m]  # (T_m,)
            shift = max(int(n_at - 1).bit_length(), 1)
            if prev_ctx_keys.size * v <= 1 << (63 - shift):
                packed = np.sort((ck << shift) | np.arange(n_at, dtype=np.int64))  # (T_m,)
                ck_sorted, perm = packed >> shift, packed & ((1 << shift) - 1)
                del packed
            else:
                perm = np.argsort(ck)
                ck_sorted = ck[perm]
            del ck
            new_ctx = np.ones(n_at, dtype=bool)
            np.not_equal(ck_sorted[1:], ck_sorted[:-1], out=new_ctx[1:])
            ctx_keys = ck_sorted[new_ctx]  # (C_m,)
            rank = np.cumsum(new_ctx.view(np.uint8), dtype=np.int32)  # (T_m,) int32 cumsum: ~10x faster
            rank -= 1
            ctx = np.empty(n_at, dtype=np.int64)  # (T_m,) level-m context id of each position
            ctx[perm] = rank
            del ck_sorted, new_ctx, rank, perm
            # 2) n-grams of level m = (context id, next id), with raw counts
            key = np.sort(ctx * v + s[at])  # (T_m,)
            new_pair = np.ones(n_at, dtype=bool)
            np.not_equal(key[1:], key[:-1], out=new_pair[1:])
            first = np.flatnonzero(new_pair)  # (P,) first sorted occurrence of each distinct n-gram
            raw = np.diff(np.append(first, n_at)).astype(np.int32)  # (P,)
            pairs = key[first]  # (P,)
            del key, new_pair, first
            # continuation counts of level m-1: each distinct n-gram here is one distinct left extension
            # of the m-gram obtained by dropping its oldest id, plus one for each sequence start
            parent = (ctx_keys[pairs // v] // v) * v + pairs % v  # (P,) level m-1 pair keys
            cont = np.bincount(np.searchsorted(prev_pairs, parent), minlength=prev_pairs.size)
            cont[np.searchsorted(prev_pairs, bos_pairs)] += 1
            conts.append(cont.astype(np.int32))
            levels_raw.append((ctx_keys, pairs, raw))
            del parent, cont
        conts.append(None)  # the top order only ever uses raw counts

        levels = [_Level(ck, pk, raw, cont) for (ck, pk, raw), cont in zip(levels_raw, conts)]
        disc_raw = [estimate_discounts(lv.raw) for lv in levels]
        disc_cont = [estimate_discounts(lv.cont) if lv.cont is not None else None for lv in levels]
        return cls(levels, v, disc_raw, disc_cont)

    def with_order(self, n: int) -> NGramModel:
        """The model an order-n fit of the same data gives, sharing this one's arrays."""
        if not 1 <= int(n) <= self.order:
            raise UserError(f"ngram: with_order needs 1 <= n <= {self.order}, not {n}")
        n = int(n)
        if n == self.order:
            return self
        return NGramModel(
            self._levels[:n], self.vocab_size, self._disc_raw[:n], self._disc_cont[:n], self._cache
        )

    # ---------------------------------------------------------------- querying

    def dist(self, context: np.ndarray) -> FloatArray:
        """(V,) P(next id | context); only the last order-1 ids of the context matter."""
        h = _check_ids(context, self.vocab_size, "context")
        v = self.vocab_size
        ids = [0]  # context id per level, as deep as the context is seen
        c = 0
        for m in range(1, min(h.size, self.order - 1) + 1):
            keys = self._levels[m].ctx_keys
            key = c * v + int(h[-m])
            i = int(np.searchsorted(keys, key))
            if i == keys.size or keys[i] != key:
                break
            c = i
            ids.append(c)
        p = np.full(v, 1.0 / v)  # (V,)
        for m, c in enumerate(ids):
            pk, st = self._levels[m].pair_keys, self._stats[m]
            a, b = np.searchsorted(pk, (c * v, c * v + v))
            cnt = st.counts[a:b]  # (K,) the seen next ids of this context
            p *= st.gamma[c]
            p[pk[a:b] - c * v] += (cnt - st.dtab[np.minimum(cnt, 3)]) / st.total[c]
        return p

    def dist_batch(self, contexts: list[np.ndarray]) -> FloatArray:
        """(N, V) dist of each context, vectorized over contexts."""
        k = self.order - 1
        n = len(contexts)
        hist = np.zeros((n, max(k, 1)), dtype=np.int64)  # (N, k) hist[i, j] = id j+1 places back
        lens = np.zeros(n, dtype=np.int64)  # (N,)
        for i, c in enumerate(contexts):
            h = _check_ids(c, self.vocab_size, f"context {i}")
            t = min(h.size, k)
            if t:
                hist[i, :t] = h[::-1][:t]
            lens[i] = t
        out = np.empty((n, self.vocab_size))  # (N, V)
        base = self.dist(np.zeros(0, dtype=np.int64))  # (V,) what every context's walk starts from
        for lo in range(0, n, _BATCH_ROWS):
            hi = min(n, lo + _BATCH_ROWS)
            out[lo:hi] = base
            self._scatter_levels(out[lo:hi], self._walk(hist[lo:hi], lens[lo:hi]))
        return out

    def logprob_next(self, seq: np.ndarray, positions: np.ndarray) -> FloatArray:
        """(N,) natural log P(seq[p] | seq[:p]) for each p in positions."""
        v = self.vocab_size
        s = _check_ids(seq, v, "seq")
        p = np.asarray(positions)
        if p.ndim != 1 or (p.size and not np.issubdtype(p.dtype, np.integer)):
            raise UserError("ngram: positions must be a 1-D integer array")
        p = p.astype(np.int64)
        if p.size and (p.min() < 0 or p.max() >= s.size):
            raise UserError(f"ngram: positions must lie in [0, {s.size}) for a sequence of that length")
        k = self.order - 1
        back = p[:, None] - np.arange(1, max(k, 1) + 1)  # (N, k) index of the id j+1 places back
        hist = s[np.maximum(back, 0)]  # (N, k)
        walk = self._walk(hist, np.minimum(p, k))
        target = s[p]  # (N,)
        prob = np.full(p.size, 1.0 / v)  # (N,)
        for m, (found, ids) in enumerate(walk):
            pk, st = self._levels[m].pair_keys, self._stats[m]
            key = ids * v + target  # (N,)
            i = np.minimum(np.searchsorted(pk, key), pk.size - 1)  # (N,)
            hit = pk[i] == key
            cnt = np.where(hit, st.counts[i], 0)  # (N,)
            own = (cnt - st.dtab[np.minimum(cnt, 3)]) / st.total[ids]  # dtab[0] = 0 keeps misses at 0
            prob = np.where(found, st.gamma[ids] * prob + own, prob)
        return np.log(prob)

    def _walk(self, hist: IntArray, lens: IntArray) -> list[tuple[npt.NDArray[np.bool_], IntArray]]:
        """Per level: (found (N,), context id (N,), 0 where not found) for histories hist (N, k)."""
        v = self.vocab_size
        n = hist.shape[0]
        ids = np.zeros(n, dtype=np.int64)  # (N,)
        found = np.ones(n, dtype=bool)  # (N,)
        out = [(found, ids)]
        for m in range(1, self.order):
            keys = self._levels[m].ctx_keys
            ok = found & (lens >= m)
            if keys.size == 0 or not ok.any():
                break
            key = ids * v + hist[:, m - 1]  # (N,)
            i = np.minimum(np.searchsorted(keys, key), keys.size - 1)  # (N,)
            found = ok & (keys[i] == key)
            ids = np.where(found, i, 0)
            out.append((found, ids))
        return out

    def _scatter_levels(self, out: FloatArray, walk: list[tuple[npt.NDArray[np.bool_], IntArray]]) -> None:
        """Apply levels 1.. of the interpolation in place to out (N, V), which holds level 0's result."""
        v = self.vocab_size
        for m, (found, ids) in enumerate(walk[1:], start=1):
            pk, st = self._levels[m].pair_keys, self._stats[m]
            rows = np.flatnonzero(found)  # (R,)
            if rows.size == 0:
                break
            c = ids[rows]  # (R,)
            out[rows] *= st.gamma[c][:, None]
            a = np.searchsorted(pk, c * v)  # (R,) each context's children are pk[a:b]
            b = np.searchsorted(pk, c * v + v)
            span = b - a  # (R,)
            ends = np.cumsum(span)
            idx = np.arange(ends[-1]) + np.repeat(a - (ends - span), span)  # (S,) all children, row by row
            crep = np.repeat(c, span)  # (S,)
            cnt = st.counts[idx]
            # one context never lists the same next id twice, so this fancy += has no collisions
            out[np.repeat(rows, span), pk[idx] - crep * v] += (cnt - st.dtab[np.minimum(cnt, 3)]) / st.total[
                crep
            ]

    # ---------------------------------------------------------------- persistence

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write one .npz (atomically): counts per level plus metadata (order, vocab_size, discounts)."""
        path = Path(path)
        v = self.vocab_size
        small = np.uint16 if v <= 65536 else np.int32
        arrays: dict[str, np.ndarray] = {}
        for m, lv in enumerate(self._levels):
            # keys split into (id, symbol) parts: smaller on disk than the int64 keys
            arrays[f"ctx_parent_{m}"] = (lv.ctx_keys // v).astype(np.int32)
            arrays[f"ctx_sym_{m}"] = (lv.ctx_keys % v).astype(small)
            arrays[f"pair_ctx_{m}"] = (lv.pair_keys // v).astype(np.int32)
            arrays[f"pair_next_{m}"] = (lv.pair_keys % v).astype(small)
            arrays[f"raw_{m}"] = lv.raw
            if lv.cont is not None:
                arrays[f"cont_{m}"] = lv.cont
        meta = {
            "format": _FORMAT,
            "version": _VERSION,
            "order": self.order,
            "vocab_size": v,
            "discounts_raw": [list(d) for d in self._disc_raw],
            "discounts_cont": [list(d) if d is not None else None for d in self._disc_cont],
        }
        arrays["meta"] = np.array(json.dumps(meta))
        fd, tmp = tempfile.mkstemp(
            dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NGramModel:
        """Read a model written by save; UserError naming the file if it is missing or corrupt."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: n-gram model file not found")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"][()]))
                if meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
                    raise ValueError("not a nextchar n-gram model of a known version")
                order, v = int(meta["order"]), int(meta["vocab_size"])
                if order < 1 or v < 1 or len(meta["discounts_raw"]) != order:
                    raise ValueError("bad order / vocab_size in metadata")
                levels = []
                for m in range(order):
                    ctx_keys = z[f"ctx_parent_{m}"].astype(np.int64) * v + z[f"ctx_sym_{m}"]
                    pair_keys = z[f"pair_ctx_{m}"].astype(np.int64) * v + z[f"pair_next_{m}"]
                    raw = z[f"raw_{m}"].astype(np.int32)
                    cont = z[f"cont_{m}"].astype(np.int32) if f"cont_{m}" in z.files else None
                    if m < order - 1 and cont is None:
                        raise ValueError(f"continuation counts of order {m + 1} missing")
                    _check_level(ctx_keys, pair_keys, raw, cont, m, v, levels[-1] if levels else None)
                    levels.append(_Level(ctx_keys, pair_keys, raw, cont))
                disc_raw = [_check_disc(d) for d in meta["discounts_raw"]]
                disc_cont = [None if d is None else _check_disc(d) for d in meta["discounts_cont"]]
                if len(disc_cont) != order or any(d is None for d in disc_cont[: order - 1]):
                    raise ValueError("continuation discounts missing from metadata")
        except UserError:
            raise
        except (
            OSError,
            ValueError,
            KeyError,
            TypeError,
            EOFError,
            zipfile.BadZipFile,
            json.JSONDecodeError,
        ) as e:
            raise UserError(f"{path}: not a readable n-gram model ({type(e).__name__}: {e})") from None
        return cls(levels, v, disc_raw, disc_cont)


def _check_ids(x: np.ndarray, v: int, what: str) -> IntArray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise UserError(f"ngram: {what} must be a 1-D array of token ids, not shape {a.shape}")
    if a.size == 0:
        return a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        raise UserError(f"ngram: {what} must hold integer token ids, not {a.dtype}")
    if a.min() < 0 or a.max() >= v:
        raise UserError(f"ngram: {what} has ids outside [0, {v})")
    return a.astype(np.int64, copy=False)


def _check_disc(d: object) -> tuple[float, float, float]:
    if not isinstance(d, list) or len(d) != 3:
        raise ValueError(f"bad discounts {d!r}")
    out = tuple(float(x) for x in d)
    if not all(0 < x < k for k, x in enumerate(out, start=1)):
        raise ValueError(f"discounts {d!r} outside (0, k)")
    return out  # type: ignore[return-value]


def _check_level(
    ctx_keys: IntArray,
    pair_keys: IntArray,
    raw: npt.NDArray[np.int32],
    cont: npt.NDArray[np.int32] | None,
    m: int,
    v: int,
    below: _Level | None,
) -> None:
    """Structural checks so a damaged file fails at load, not with a wrong answer later."""
    n_ctx = ctx_keys.size
    if m == 0 and not np.array_equal(ctx_keys, [0]):
        raise ValueError("order 1 must have exactly the empty context")
    if below is not None and ctx_keys.size and ctx_keys[-1] >= below.ctx_keys.size * v:
        raise ValueError(f"order {m + 1} contexts refer to unknown shorter contexts")
    if np.any(np.diff(ctx_keys) <= 0) or np.any(np.diff(pair_keys) <= 0):
        raise ValueError(f"order {m + 1} keys are not strictly increasing")
    if pair_keys.size and (pair_keys[0] < 0 or pair_keys[-1] >= n_ctx * v):
        raise ValueError(f"order {m + 1} n-grams refer to unknown contexts")
    if pair_keys.size and np.count_nonzero(np.diff(pair_keys // v)) + 1 != n_ctx:
        raise ValueError(f"order {m + 1} has contexts without n-grams")
    for c in (raw, cont):
        if c is not None and (c.shape != pair_keys.shape or (c.size and c.min() < 1)):
            raise ValueError(f"order {m + 1} counts do not match its n-grams")
