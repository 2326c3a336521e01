"""Count tables of all languages in one flat trie: interpolation terms from fitted counts (Kneser-Ney or Dasher's
PPM), likelihood pruning, log-domain quantization, and vectorized queries (walk, one symbol, full distributions)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from nextchar.errors import UserError
from nextchar.ngram import NGramModel, estimate_discounts
from nextchar.ppm import DASHER_ALPHA, DASHER_BETA

KINDS = ("kn", "ppm")

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _key_dtype(n_parents: int, v: int) -> np.dtype:
    """uint32 when every key parent * v + sym (parent < n_parents) fits, else int64."""
    return np.dtype(np.uint32) if n_parents * v < 2**32 else np.dtype(np.int64)


@dataclass
class _LevelTerms:
    """One level of one language before merging: context keys, n-gram keys and their interpolation terms."""

    ctx_keys: IntArray  # (C,) sorted, parent * V + oldest id (level 0: [0])
    pair_keys: IntArray  # (P,) sorted, context id * V + next id
    own: FloatArray  # (P,) p_m(next | context) before backoff mass


def language_terms(model: NGramModel, order: int, kind: str, alpha: float = DASHER_ALPHA,
                   beta: float = DASHER_BETA, cutoffs: tuple[int, ...] = (), prune: float = 0.0
                   ) -> list[_LevelTerms]:
    """Interpolation terms of one language's order-`order` model from its fitted counts, pruned by raw count.

    Counts are raw at the top order and continuation counts below (distinct left extensions, a sequence start
    counting as one): Kneser-Ney's counts, and also exactly the counts Dasher's PPM keeps with update exclusion
    (a lower-order count grows only when the symbol is new in the longer context). KN: own = (c - D(c)) / T with
    D1, D2, D3+ estimated per order (Chen & Goodman eq. 26); PPM: own = (c - beta) / (T + alpha). T and D come from
    the counts before pruning; a pruned n-gram's term goes to its context's backoff weight.

    Likelihood pruning (prune > 0, orders >= 3) scores an n-gram (h, c) seen n times by what new text would
    lose when h backs off for c, (n - D(n)) * log(P(c | h) / ((gamma(h) + own(c | h)) * P(c | suffix of h))),
    with P the full interpolated probability and n - D(n) the KN-discounted count, i.e. the count expected in
    new text (a relative-entropy criterion in the spirit of Seymore & Rosenfeld 1996 and Stolcke 1998, ignoring
    the gain of h's other symbols and interactions between pruned n-grams). On Dasher dev it beats raw-count
    weighting by ~0.008 bpc at equal size and count cutoffs by ~0.4 points of top-3 (benchmarks/counts_eval.py size).
    """
    if not 1 <= order <= model.order:
        raise UserError(f"counts: order {order} is above the fitted order {model.order}")
    levels = model._levels[:order]
    v = model.vocab_size
    terms: list[_LevelTerms] = []
    keep_pair: list[npt.NDArray[np.bool_]] = []
    for m, lv in enumerate(levels):
        counts = lv.raw if m == order - 1 else lv.cont
        assert counts is not None
        c = counts.astype(np.float64)  # (P,)
        pctx = lv.pair_keys // v  # (P,)
        total = np.bincount(pctx, weights=c, minlength=lv.ctx_keys.size)  # (C,)
        if kind == "kn":
            dtab = np.array([0.0, *estimate_discounts(counts)])  # (4,)
            own = (c - dtab[np.minimum(counts, 3)]) / total[pctx]
        else:
            own = (c - beta) / (total[pctx] + alpha)
        terms.append(_LevelTerms(lv.ctx_keys, lv.pair_keys, own))
        cut = int(cutoffs[m]) if m < len(cutoffs) else 1
        keep_pair.append(lv.raw >= cut if m > 0 else np.ones(lv.raw.size, dtype=bool))
    if prune > 0:
        full = None  # (P_m,) interpolated P(c | h) of every n-gram of the level below
        for m, t in enumerate(terms):
            pctx = t.pair_keys // v
            gamma = 1.0 - np.bincount(pctx, weights=t.own, minlength=t.ctx_keys.size)  # (C,)
            if m == 0:
                low = np.full(t.own.size, 1.0 / v)
            else:
                # the suffix n-gram (parent context, c) is always stored: every seen n-gram's suffix was seen
                sk = (terms[m - 1].pair_keys)
                q = (t.ctx_keys[pctx] // v) * v + t.pair_keys % v  # (P,) keys of the suffix n-grams
                low = full[np.searchsorted(sk, q)]
            p_here = t.own + gamma[pctx] * low
            if m >= 2:
                p_off = (gamma[pctx] + t.own) * low
                # weighted by the count expected in new text, the KN-discounted count (singletons count ~0.5)
                raw = levels[m].raw
                dt = np.array([0.0, *estimate_discounts(raw)])  # (4,)
                n_eff = raw - dt[np.minimum(raw, 3)]  # (P,)
                loss = n_eff * np.log(p_here / p_off)  # (P,) nats lost on c without this n-gram
                keep_pair[m] &= loss >= prune
            full = p_here
    # A context stays while it has a kept n-gram or a kept longer context below it in the trie; with cutoffs
    # that do not fall with the order every kept n-gram's suffix n-gram is kept too, so the walk never misses.
    keep_ctx: list[npt.NDArray[np.bool_]] = [np.zeros(0, dtype=bool)] * order
    for m in range(order - 1, -1, -1):
        t = terms[m]
        k = np.zeros(t.ctx_keys.size, dtype=bool)
        k[t.pair_keys[keep_pair[m]] // v] = True
        if m + 1 < order:
            k[terms[m + 1].ctx_keys[keep_ctx[m + 1]] // v] = True
        if m == 0:
            k[:] = True
        keep_ctx[m] = k
    out = []
    new_id_prev = None
    for m, t in enumerate(terms):
        kc = keep_ctx[m]
        new_id = np.cumsum(kc) - 1  # (C,) renumbered context ids
        ck = t.ctx_keys[kc]
        if m > 0:
            ck = new_id_prev[ck // v] * v + ck % v
        kp = keep_pair[m] & kc[t.pair_keys // v]
        pk = t.pair_keys[kp]
        pk = new_id[pk // v] * v + pk % v
        out.append(_LevelTerms(ck.astype(np.int64), pk.astype(np.int64), t.own[kp]))
        new_id_prev = new_id
    return out


def _round_down_f32(x: FloatArray) -> npt.NDArray[np.float32]:
    """float32 values never above x, so the backoff weight 1 - sum(own) stays positive."""
    f = x.astype(np.float32)
    up = f.astype(np.float64) > x
    f[up] = np.nextafter(f[up], np.float32(0))
    return f


def make_codebook(own: FloatArray, bits: int) -> FloatArray:
    """Sorted code values (K,) for log-domain floor quantization of terms in (0, 1].

    8 bits: the smallest value of each of 256 equal-count bins of log(own) (data values, so frequent exact values
    like (1 - D1) / 1 are represented exactly); 16 bits: a uniform log grid. Values are rounded DOWN to a code, so
    a context's terms never sum above what they were and its backoff weight stays positive.
    """
    k = 1 << bits
    x = np.log(own)
    lo, hi = float(x.min()), float(x.max())
    if bits == 16 or x.size <= k:
        grid = np.unique(x) if x.size <= k else np.linspace(lo, hi, k)
    else:
        grid = np.unique(np.quantile(x, np.linspace(0.0, 1.0, k), method="inverted_cdf"))
    grid[0] = lo
    book = np.exp(grid)
    book = np.minimum(book, own.max())
    return np.unique(book)


def quantize(own: FloatArray, book: FloatArray) -> npt.NDArray[np.integer]:
    """Index of the largest code value <= each term (floor quantization)."""
    idx = np.searchsorted(book, own, side="right") - 1
    idx = np.maximum(idx, 0)  # the smallest code is the smallest value, so this never rounds up
    return idx.astype(np.uint8 if book.size <= 256 else np.uint16)


class CountTables:
    """All languages' interpolated count tables in one right-to-left trie (level m = n-grams of order m+1).

    Level 0 has one context per language, whose id is the language's index; a level-m context (m >= 1) has
    key = (parent id) * V + oldest id, the parent being the level-(m-1) context without that oldest id, and
    languages follow each other in id order, so one vectorized walk from the most recent id backwards finds
    every suffix of a history for every language at once. An n-gram (context id, next id) has key
    context id * V + next id and its interpolation term own (stored as float32 or as codes into a per-level
    codebook). A context's backoff weight is what its terms leave, gamma = 1 - sum(own), computed at load:
    every distribution sums to 1 by construction, after pruning and quantization too.
    """

    def __init__(self, vocab_size: int, n_lang: int, ctx_keys: list[np.ndarray], pair_keys: list[np.ndarray],
                 own: list[np.ndarray], books: list[np.ndarray | None]) -> None:
        self.vocab_size = v = int(vocab_size)
        self.n_lang = int(n_lang)
        self.order = len(pair_keys)
        self.ctx_keys, self.pair_keys, self.own, self.books = ctx_keys, pair_keys, own, books
        self.gamma: list[FloatArray] = []
        for m in range(self.order):
            n_ctx = ctx_keys[m].size
            terms = self.terms(m, slice(None))  # (P,)
            pctx = (pair_keys[m] // v).astype(np.int64)
            g = 1.0 - np.bincount(pctx, weights=terms, minlength=n_ctx)  # (C,)
            self.gamma.append(g)

    def terms(self, m: int, idx) -> FloatArray:
        """Interpolation terms (float64) of level m at idx."""
        book = self.books[m]
        raw = self.own[m][idx]
        return book[raw] if book is not None else raw.astype(np.float64)

    @property
    def n_entries(self) -> int:
        return int(sum(p.size for p in self.pair_keys))

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (*self.ctx_keys, *self.pair_keys, *self.own))
                   + sum(b.nbytes for b in self.books if b is not None))

    @classmethod
    def merge(cls, per_lang: list[list[_LevelTerms]], vocab_size: int, bits: int = 32) -> CountTables:
        """One table from each language's terms (same order), ids offset language by language."""
        v = int(vocab_size)
        n_lang = len(per_lang)
        order = len(per_lang[0])
        ctx_keys, pair_keys, own, books = [], [], [], []
        prev_off = np.arange(n_lang + 1)  # level-0 context ids: the language index
        for m in range(order):
            sizes = np.array([t[m].ctx_keys.size for t in per_lang])
            off = np.concatenate(([0], np.cumsum(sizes)))  # (L+1,) first context id of each language
            if m == 0:
                ck = np.arange(n_lang, dtype=np.int64)
            else:
                ck = np.concatenate([(t[m].ctx_keys // v + prev_off[i]) * v + t[m].ctx_keys % v
                                     for i, t in enumerate(per_lang)])
            pk = np.concatenate([(t[m].pair_keys // v + off[i]) * v + t[m].pair_keys % v
                                 for i, t in enumerate(per_lang)])
            o = np.concatenate([t[m].own for t in per_lang])
            n_parents = int(prev_off[-1]) if m > 0 else n_lang
            ctx_keys.append(ck.astype(_key_dtype(max(n_parents, 1), v)))
            pair_keys.append(pk.astype(_key_dtype(int(off[-1]), v)))
            if bits == 32:
                own.append(_round_down_f32(o))
                books.append(None)
            else:
                book = make_codebook(o, bits)
                own.append(quantize(o, book))
                books.append(book)
            prev_off = off
        tab = cls(v, n_lang, ctx_keys, pair_keys, own, books)
        bad = [m for m, g in enumerate(tab.gamma) if g.size and g.min() <= 0]
        if bad:
            raise UserError(f"counts: backoff weights not positive at orders {[m + 1 for m in bad]}")
        return tab

    # ---------------------------------------------------------------- queries

    def walk(self, hist: IntArray, lens: IntArray, langs: IntArray, depth: int
             ) -> list[tuple[npt.NDArray[np.bool_], IntArray]]:
        """Per level < depth: (found (R,), context id (R,)) of each row's history in its language's trie.

        hist (R, k): hist[r, j] is the id j+1 places back; lens (R,): usable history length; langs (R,).
        """
        v = self.vocab_size
        ids = langs.astype(np.int64)  # (R,)
        found = np.ones(ids.size, dtype=bool)
        out = [(found, ids)]
        for m in range(1, min(depth, self.order)):
            keys = self.ctx_keys[m]
            ok = found & (lens >= m)
            if keys.size == 0 or not ok.any():
                break
            key = (ids * v + hist[:, m - 1]).astype(keys.dtype)  # (R,)
            i = np.minimum(np.searchsorted(keys, key), keys.size - 1)  # (R,)
            found = ok & (keys[i] == key)
            ids = np.where(found, i, 0)
            out.append((found, ids))
        return out

    def symbol_probs(self, walk: list[tuple[npt.NDArray[np.bool_], IntArray]], target: IntArray) -> FloatArray:
        """(R,) p_l(target | history) of each walked row."""
        v = self.vocab_size
        prob = np.full(target.size, 1.0 / v)  # (R,)
        for m, (found, ids) in enumerate(walk):
            pk = self.pair_keys[m]
            key = (ids * v + target).astype(pk.dtype)  # (R,)
            i = np.minimum(np.searchsorted(pk, key), pk.size - 1)  # (R,)
            hit = found & (pk[i] == key)
            own = np.zeros(target.size)
            if hit.any():
                own[hit] = self.terms(m, i[hit])
            prob = np.where(found, self.gamma[m][ids] * prob + own, prob)
        return prob

    def dists(self, walk: list[tuple[npt.NDArray[np.bool_], IntArray]], n_rows: int) -> FloatArray:
        """(R, V) full distribution of each walked row."""
        v = self.vocab_size
        out = np.full((n_rows, v), 1.0 / v)  # (R, V)
        for m, (found, ids) in enumerate(walk):
            pk = self.pair_keys[m]
            rows = np.flatnonzero(found)  # (Q,)
            if rows.size == 0:
                break
            c = ids[rows]  # (Q,)
            out[rows] *= self.gamma[m][c][:, None]
            a = np.searchsorted(pk, (c * v).astype(pk.dtype))  # (Q,) each context's n-grams are pk[a:b]
            b = np.searchsorted(pk, (c * v + v).astype(pk.dtype))
            span = b - a  # (Q,)
            ends = np.cumsum(span)
            if ends.size == 0 or ends[-1] == 0:
                continue
            idx = np.arange(ends[-1]) + np.repeat(a - (ends - span), span)  # (S,) all n-grams, row by row
            nxt = (pk[idx] % v).astype(np.int64)  # (S,)
            # one context never lists the same next id twice, so this fancy += has no collisions
            out[np.repeat(rows, span), nxt] += self.terms(m, idx)
        return out

    def dists_few(self, hist: IntArray, lens: IntArray, langs: IntArray, depth: int
                  ) -> tuple[FloatArray, IntArray]:
        """walk + dists + deepest for a few rows, with scalar lookups (a keystroke needs one or two languages).

        The same floating-point operations as the vectorized path (scale by gamma, then add the terms), so the
        same bits; (R, V) distributions and (R,) longest matched orders.
        """
        v = self.vocab_size
        out = np.full((langs.size, v), 1.0 / v)  # (R, V)
        deep = np.ones(langs.size, dtype=np.int64)
        for r in range(langs.size):
            c = int(langs[r])
            row = out[r]
            for m in range(min(depth, self.order)):
                if m:
                    if m > lens[r]:
                        break
                    keys = self.ctx_keys[m]
                    key = c * v + int(hist[r, m - 1])
                    i = int(keys.searchsorted(keys.dtype.type(key)))
                    if i == keys.size or int(keys[i]) != key:
                        break
                    c = i
                    deep[r] = m + 1
                pk = self.pair_keys[m]
                row *= self.gamma[m][c]
                a = int(pk.searchsorted(pk.dtype.type(c * v)))
                b = int(pk.searchsorted(pk.dtype.type(c * v + v)))
                if b > a:
                    row[(pk[a:b] % v).astype(np.int64)] += self.terms(m, slice(a, b))
        return out, deep

    def deepest(self, walk: list[tuple[npt.NDArray[np.bool_], IntArray]]) -> IntArray:
        """(R,) the longest matched order (1 = unigram only) of each walked row."""
        d = np.ones(walk[0][0].size, dtype=np.int64)
        for m, (found, _) in enumerate(walk[1:], start=2):
            d[found] = m
        return d

    # ---------------------------------------------------------------- persistence

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for m in range(self.order):
            out[f"ctx_{m}"] = self.ctx_keys[m]
            out[f"pair_{m}"] = self.pair_keys[m]
            out[f"own_{m}"] = self.own[m]
            if self.books[m] is not None:
                out[f"book_{m}"] = self.books[m]
        return out


def history_matrix(ids: IntArray, pos: IntArray, k: int) -> tuple[IntArray, IntArray]:
    """History matrix (N, k) of ids before each position (hist[:, j] = id j+1 places back) and lengths (N,)."""
    k1 = max(k, 1)
    back = pos[:, None] - np.arange(1, k1 + 1)  # (N, k)
    return ids[np.maximum(back, 0)], np.minimum(pos, k)
