"""Language-aware count model: per-language Kneser-Ney or PPM tables in one flat trie, mixed by a language posterior.

p(c | h) = sum_l p(l | h) p_l(c | h), where p_l is an interpolated count model of language l (modified
Kneser-Ney, Chen & Goodman 1998; or PPM with Dasher's blending and update exclusion) and p(l | h) comes from
the models' own likelihoods of the last `window` characters, exponentially decayed, so a change of language
is followed within a few words. The posterior is a pure function of the last `context` ids, so a batch call
on a prefix, an incremental typing state fed key by key (with truncation for edits) and the scorer of one
long text (`logprobs_at`) give the same numbers.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from nextchar.count_tables import KINDS, CountTables, FloatArray, IntArray, history_matrix
from nextchar.errors import UserError
from nextchar.files import atomic_write_json, read_json
from nextchar.ppm import DASHER_ALPHA, DASHER_BETA
from nextchar.vocab import Vocab

FORMAT = "nextchar-counts"
VERSION = 1
_FEW = 4  # up to this many (context, language) rows, distributions are computed with scalar lookups
_CHUNK = 128  # contexts per block in logprobs: bounds the (rows * L, V) per-language distributions held at once


# ====================================================================================== configuration


@dataclass(frozen=True)
class PosteriorConfig:
    """How p(l | h) follows the text: log p(l | h) = log prior_l + temperature * sum_k decay^k log p_l(x_{n-1-k} | ...).

    The sum runs over the last `window` characters (k < window); `floor` mixes the prior back in, so no
    language is ever ruled out; `id_order` is the order of the models used for these likelihoods (0 or above
    the model's order: the model's own order; lower is cheaper in batch).
    """

    # defaults chosen on Dasher dev (benchmarks/counts_eval.py tune): the same quality as a 128-character window
    # with the full-order models (2.3058 vs 2.3055 bpc) at a third of the batch time
    window: int = 64
    decay: float = 0.95
    temperature: float = 1.0
    floor: float = 1e-3
    prior: str = "uniform"  # or "size": proportional to the language's training characters
    id_order: int = 4
    # languages below this posterior weight are left out of the mixture (the rest renormalized): the same
    # answer in every path, at a fraction of the cost; they stay in the posterior, so a switch is still followed
    min_weight: float = 1e-3

    def check(self, order: int) -> None:
        problems = []
        if self.window < 1:
            problems.append(f"window {self.window} must be >= 1")
        if not 0.0 < self.decay <= 1.0:
            problems.append(f"decay {self.decay} must be in (0, 1]")
        if not self.temperature >= 0.0:
            problems.append(f"temperature {self.temperature} must be >= 0")
        if not 0.0 <= self.floor < 1.0:
            problems.append(f"floor {self.floor} must be in [0, 1)")
        if self.prior not in ("uniform", "size"):
            problems.append(f"prior {self.prior!r} must be uniform or size")
        if self.id_order < 0:
            problems.append(f"id_order {self.id_order} must be >= 0")
        if not 0.0 <= self.min_weight < 0.5:
            problems.append(f"min_weight {self.min_weight} must be in [0, 0.5)")
        if problems:
            raise UserError("counts posterior: " + "; ".join(problems))


@dataclass(frozen=True)
class CountsConfig:
    """What `train_counts` builds: model kind and order, pruning, quantization, and the posterior."""

    # defaults chosen on Dasher dev from the size-vs-quality table (benchmarks/counts_eval.py size): 37 MB on disk,
    # what the default model's 50 MB leave beside the Transformer's ONNX form (10.5 MB); prune 0.5 gives 29 MB
    order: int = 12
    kind: str = "kn"  # "kn": interpolated modified Kneser-Ney; "ppm": Dasher's PPM (blending, update exclusion)
    ppm_alpha: float = DASHER_ALPHA
    ppm_beta: float = DASHER_BETA
    # cutoffs[m]: an n-gram of order m+1 is kept when seen at least that often (raw count); missing = 1
    cutoffs: tuple[int, ...] = ()
    # likelihood pruning: drop an n-gram of order >= 3 when backing off from it loses less than `prune` nats of
    # training log-likelihood (0: off); applied after the cutoffs
    prune: float = 0.35
    bits: int = 8  # storage of the interpolation terms: 8 or 16 (log-domain codes), 32 (float32)
    posterior: PosteriorConfig = field(default_factory=PosteriorConfig)

    def check(self) -> None:
        problems = []
        if not 1 <= self.order <= 16:
            problems.append(f"order {self.order} must be in [1, 16]")
        if self.kind not in KINDS:
            problems.append(f"kind {self.kind!r} must be one of {', '.join(KINDS)}")
        if self.kind == "ppm" and not (self.ppm_alpha >= 0 and 0 <= self.ppm_beta < 1 and self.ppm_alpha + self.ppm_beta > 0):
            problems.append("ppm_alpha >= 0 and 0 <= ppm_beta < 1, not both 0")
        if not self.prune >= 0:
            problems.append(f"prune {self.prune} must be >= 0")
        if any(int(c) < 1 for c in self.cutoffs):
            problems.append("cutoffs must be >= 1")
        if self.bits not in (8, 16, 32):
            problems.append(f"bits {self.bits} must be 8, 16 or 32")
        if problems:
            raise UserError("counts config: " + "; ".join(problems))
        self.posterior.check(self.order)

    def cutoff(self, m: int) -> int:
        """Minimum raw count of an n-gram of order m+1 (level m)."""
        return int(self.cutoffs[m]) if m < len(self.cutoffs) else 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cutoffs"] = list(self.cutoffs)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CountsConfig:
        d = dict(d)
        post = PosteriorConfig(**d.pop("posterior", {}))
        d["cutoffs"] = tuple(int(c) for c in d.get("cutoffs", ()))
        cfg = cls(**d, posterior=post)
        cfg.check()
        return cfg


# ====================================================================================== the model


@dataclass
class CountState:
    """Incremental typing state: the ids fed so far and their per-language log-likelihood rows.

    ell[i] (L,) is log p_l(ids[ell_lo + i] | ids before it) for positions ell_lo.. len(ids)-1 (position 0 has
    none: it is the context's first id). Never changed in place: feed and truncate return new states.
    """

    ids: IntArray
    ell: FloatArray  # (n - ell_lo, L)
    ell_lo: int


class CountModel:
    """The language-aware count model behind the engine contract (vocab, context, logprobs, start/feed/truncate).

    logprobs(contexts) (N, V) natural log for contexts that are tails of up to `context` ids of "\\n" + prefix;
    `logprobs_at(seq, positions)` scores positions of one long text; `features(...)` gives the posterior's
    entropy, the posterior itself and the longest matched order, for a learned combination.
    """

    model_type = "counts"

    def __init__(self, tables: CountTables, vocab: Vocab, languages: list[str], config: CountsConfig,
                 lang_chars: list[int] | None = None, run_id: str = "") -> None:
        if tables.vocab_size != vocab.size:
            raise UserError(f"counts: tables have vocabulary size {tables.vocab_size}, vocab.json {vocab.size}")
        if tables.n_lang != len(languages):
            raise UserError(f"counts: tables hold {tables.n_lang} languages, the config names {len(languages)}")
        config.check()
        self.tables, self.vocab, self.languages, self.config = tables, vocab, list(languages), config
        self.run_id = run_id
        self.order = tables.order
        post = config.posterior
        self.id_order = min(post.id_order or self.order, self.order)
        self.window = post.window
        self.context = max(self.window + self.id_order - 1, self.order - 1, 1)
        self.lang_chars = list(lang_chars) if lang_chars is not None else [1] * tables.n_lang
        L = tables.n_lang
        if post.prior == "size":
            sizes = np.asarray(self.lang_chars, dtype=np.float64)
            self.prior = sizes / sizes.sum()
        else:
            self.prior = np.full(L, 1.0 / L)
        self.log_prior = np.log(self.prior)  # (L,)
        self.decay_w = post.decay ** np.arange(self.window, dtype=np.float64)[::-1].copy()  # (P,) oldest first

    @property
    def n_lang(self) -> int:
        return self.tables.n_lang

    def with_posterior(self, post: PosteriorConfig) -> CountModel:
        """The same tables with another posterior (cheap: for tuning)."""
        return CountModel(self.tables, self.vocab, self.languages, replace(self.config, posterior=post),
                          self.lang_chars, self.run_id)

    # ---------------------------------------------------------------- pieces shared by every path

    def ell_at(self, ids: IntArray, pos: IntArray) -> FloatArray:
        """(N, L) log p_l(ids[p] | ids[:p]) for positions pos, each with the last id_order-1 ids before it."""
        return self._ell_clipped(ids, pos, pos)

    def posterior(self, ell: FloatArray) -> FloatArray:
        """(L,) p(l | h) from the log-likelihood rows (n, L) of the last n <= window positions, oldest first."""
        post = self.config.posterior
        n = ell.shape[0]
        s = (self.decay_w[self.window - n:, None] * np.ascontiguousarray(ell)).sum(axis=0) if n else 0.0  # (L,)
        z = self.log_prior + post.temperature * s  # (L,)
        z = z - z.max()
        w = np.exp(z)
        w /= w.sum()
        return (1.0 - post.floor) * w + post.floor * self.prior

    def _mix(self, w: FloatArray, d: FloatArray) -> FloatArray:
        """(N, V) sum_l w[:, l] d[:, l] with w (N, L) and d (N, L, V), languages added in index order."""
        out = w[:, 0, None] * d[:, 0]
        for li in range(1, self.n_lang):
            out += w[:, li, None] * d[:, li]
        return out

    def mixture_weights(self, w: FloatArray) -> FloatArray:
        """(N, L) the posterior's weights as mixed: languages under min_weight dropped, the rest renormalized."""
        thr = self.config.posterior.min_weight
        if thr <= 0:
            return w
        keep = np.where(w >= thr, w, 0.0)  # the best language is always >= 1/L > min_weight
        return keep / keep.sum(axis=1, keepdims=True)

    def _final(self, hists: list[IntArray], w: FloatArray) -> tuple[FloatArray, IntArray]:
        """(N, V) log mixture after each history (its ids, oldest first) and (N,) longest matched order under the
        most probable language; only languages with a mixture weight are computed."""
        n, k = len(hists), max(self.order - 1, 1)
        hist = np.zeros((n, k), dtype=np.int64)
        lens = np.zeros(n, dtype=np.int64)
        for i, h in enumerate(hists):
            t = min(h.size, self.order - 1)
            if t:
                hist[i, :t] = h[::-1][:t]
            lens[i] = t
        mw = self.mixture_weights(w)  # (N, L)
        ctx_i, lang = np.nonzero(mw)  # (R,) each row a (context, language) with weight, language-ascending
        if ctx_i.size <= _FEW:
            d, deep_rows = self.tables.dists_few(hist[ctx_i], lens[ctx_i], lang, self.order)
        else:
            walk = self.tables.walk(hist[ctx_i], lens[ctx_i], lang, self.order)
            d = self.tables.dists(walk, ctx_i.size)  # (R, V)
            deep_rows = self.tables.deepest(walk)  # (R,)
        d *= mw[ctx_i, lang][:, None]
        # add each context's languages in ascending order: rank r = the r-th language of its context
        first = np.searchsorted(ctx_i, np.arange(n))  # (N,) first row of each context
        rank = np.arange(ctx_i.size) - first[ctx_i]  # (R,)
        out = np.zeros((n, self.vocab.size))
        for r in range(int(rank.max()) + 1 if rank.size else 0):
            sel = rank == r
            out[ctx_i[sel]] += d[sel]
        top = w.argmax(axis=1)  # (N,)
        is_top = lang == top[ctx_i]
        deep = np.ones(n, dtype=np.int64)
        deep[ctx_i[is_top]] = deep_rows[is_top]
        return np.log(out), deep

    def _window_rows(self, n: int) -> tuple[int, int]:
        """Positions [a, n) whose likelihoods enter the posterior after n ids (never position 0)."""
        return max(1, n - self.window), n

    # ---------------------------------------------------------------- batch

    def logprobs(self, contexts: list[np.ndarray]) -> FloatArray:
        """(N, V) natural-log next-id distributions for contexts (tails of "\\n" + prefix, 1..context ids)."""
        return self.logprobs_features(contexts)[0]

    def logprobs_features(self, contexts: list[np.ndarray]) -> tuple[FloatArray, dict[str, np.ndarray]]:
        """logprobs and per context: 'posterior' (N, L), 'entropy' (N,) nats, 'order' (N,) longest matched order
        (under the most probable language)."""
        n_all = len(contexts)
        out = np.empty((n_all, self.vocab.size))
        feats = {"posterior": np.empty((n_all, self.n_lang)), "entropy": np.empty(n_all),
                 "order": np.empty(n_all, dtype=np.int64)}
        for lo in range(0, n_all, _CHUNK):
            ctxs = [self._check(c, lo + i) for i, c in enumerate(contexts[lo:lo + _CHUNK])]
            # every context's window positions, scored in one vectorized pass
            spans = [self._window_rows(c.size) for c in ctxs]
            pos_local = [np.arange(a, b) for a, b in spans]
            ell_all = self._ell_multi(ctxs, pos_local)
            w = np.stack([self.posterior(e) for e in ell_all]) if ctxs else np.zeros((0, self.n_lang))
            lp, deep = self._final(ctxs, w)
            out[lo:lo + len(ctxs)] = lp
            self._features_into(feats, lo, w, deep)
        return out, feats

    def _ell_multi(self, ctxs: list[IntArray], pos_local: list[IntArray]) -> list[FloatArray]:
        """ell_at for several contexts in one pass: (n_i, L) rows per context."""
        sizes = [p.size for p in pos_local]
        if sum(sizes) == 0:
            return [np.zeros((0, self.n_lang)) for _ in ctxs]
        flat = np.concatenate(ctxs)
        starts = np.concatenate(([0], np.cumsum([c.size for c in ctxs])))[:-1]
        pos = np.concatenate([p + s for p, s in zip(pos_local, starts)])
        # histories must not reach into the previous context: clip their lengths at each context's start
        own_start = np.repeat(starts, sizes)
        ell = self._ell_clipped(flat, pos, pos - own_start)
        return np.split(ell, np.cumsum(sizes)[:-1])

    def _ell_clipped(self, ids: IntArray, pos: IntArray, avail: IntArray) -> FloatArray:
        """ell_at where position p may only look back avail[p] ids."""
        return self._ell_clipped_order(ids, pos, avail, self.id_order)

    def _features_into(self, feats: dict, lo: int, w: FloatArray, deep: IntArray) -> None:
        n = w.shape[0]
        feats["posterior"][lo:lo + n] = w
        feats["entropy"][lo:lo + n] = -(w * np.log(w)).sum(axis=1)
        feats["order"][lo:lo + n] = deep

    def _check(self, c: np.ndarray, i: int) -> IntArray:
        a = np.asarray(c)
        if a.ndim != 1 or a.size < 1 or a.size > self.context:
            raise UserError(f"counts: context {i} must hold 1 to {self.context} ids, not shape {a.shape}")
        if not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() >= self.vocab.size:
            raise UserError(f"counts: context {i} has ids outside [0, {self.vocab.size})")
        return a.astype(np.int64)

    # ---------------------------------------------------------------- one long text

    def logprobs_at(self, seq: np.ndarray, positions: np.ndarray, start_id: int | None = None,
                    with_features: bool = False):
        """(N, V) log p(seq[p] = . | START + seq[:p]) for each p: what logprobs gives on tail(seq, p) (the last
        `context` ids of START + seq[:p]).

        The text is read as START + seq (START = "\\n", as for every prediction); each position sees the same
        last `context` ids logprobs would, and the per-position likelihoods are computed once for the whole text.
        """
        start = self.vocab.stoi["\n"] if start_id is None else int(start_id)
        s = np.concatenate(([start], np.asarray(seq, dtype=np.int64)))  # (T+1,) index i+1 = seq[i]
        pos = np.asarray(positions, dtype=np.int64) + 1  # (N,) number of ids before the prediction, START included
        if pos.size and (pos.min() < 1 or pos.max() > s.size - 1 + 1):
            raise UserError(f"counts: positions must lie in [0, {s.size - 1}]")
        need = np.zeros(s.size + 1, dtype=bool)
        C = self.context
        for n in pos:  # the positions whose likelihoods any window uses
            a0 = max(0, n - C)  # the context tail [a0, n); within it, window rows [max(a0+1, n-P), n)
            need[max(a0 + 1, n - self.window):n] = True
        rows = np.flatnonzero(need[:s.size])
        # each row's history may not reach before its window's tail start: rows are shared between positions, so
        # use a history no longer than the model could see from any tail that contains it (id_order - 1 <= C - P)
        ell = np.zeros((s.size, self.n_lang))
        if rows.size:
            ell[rows] = self._ell_clipped(s, rows, rows)
        out = np.empty((pos.size, self.vocab.size))
        feats = {"posterior": np.empty((pos.size, self.n_lang)), "entropy": np.empty(pos.size),
                 "order": np.empty(pos.size, dtype=np.int64)}
        for lo in range(0, pos.size, _CHUNK):
            chunk = pos[lo:lo + _CHUNK]
            hists, ws = [], []
            for n in chunk:
                a0 = max(0, n - C)
                a, b = max(a0 + 1, n - self.window), n
                ws.append(self.posterior(ell[a:b]))
                hists.append(s[a0:n])
            w = np.stack(ws)
            lp, deep = self._final(hists, w)
            out[lo:lo + chunk.size] = lp
            self._features_into(feats, lo, w, deep)
        return (out, feats) if with_features else out

    def stream_logprobs(self, seq: np.ndarray, start_id: int | None = None
                        ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Read START + seq in order: (T,) log p(seq[t] | START + seq[:t]) for every t, the (T, L) posteriors and
        the (T, L) log-probabilities of each language's own model (what an oracle told the language gives).

        The same numbers as logprobs_at(seq, arange(T))[t, seq[t]] (the per-language terms are each language's
        probability of the true id, mixed in the same order), at the cost of one walk per position and language.
        """
        start = self.vocab.stoi["\n"] if start_id is None else int(start_id)
        s = np.concatenate(([start], np.asarray(seq, dtype=np.int64)))  # (T+1,)
        rows = np.arange(1, s.size, dtype=np.int64)
        full = self._ell_clipped_order(s, rows, rows, self.order)  # (T, L) log p_l(true id)
        ell = full if self.id_order == self.order else self._ell_clipped(s, rows, rows)
        ell = np.concatenate([np.zeros((1, self.n_lang)), ell])  # row i = position i of s
        out = np.empty(rows.size)
        posts = np.empty((rows.size, self.n_lang))
        for j, n in enumerate(rows):
            a, b = self._window_rows(int(n))
            w = self.posterior(ell[a:b])
            posts[j] = w
            mw = self.mixture_weights(w[None])  # (1, L)
            out[j] = math.log(float(self._mix(mw, np.exp(full[j])[None, :, None])[0, 0]))
        return out, posts, full

    def _ell_clipped_order(self, ids: IntArray, pos: IntArray, avail: IntArray, order: int) -> FloatArray:
        """(N, L) log p_l(ids[p] | the order-1 ids before p, at most avail[p] of them).

        Rows that ask the same thing (same usable history, same next id) are computed once: the windows of a
        typing trace share nearly all of them, unrelated prefixes the frequent n-grams.
        """
        L = self.n_lang
        hist, lens = history_matrix(ids, pos, order - 1)  # (N, k), (N,)
        lens = np.minimum(lens, avail)
        tgt = ids[pos]
        k = hist.shape[1]
        bits = max(int(self.vocab.size - 1).bit_length(), 1)
        inv = None
        if pos.size > 1 and (k + 1) * bits + 5 <= 63:
            cols = np.arange(k)
            h = np.where(cols[None, :] < lens[:, None], hist, 0)  # ids beyond the usable history do not matter
            key = lens.astype(np.int64)
            for j in range(k):
                key = (key << bits) | h[:, j]
            key = (key << bits) | tgt
            _, first, inv = np.unique(key, return_index=True, return_inverse=True)
            hist, lens, tgt = hist[first], lens[first], tgt[first]
        n = tgt.size
        # rows language-major: each language's searches stay within its own block of the tables
        walk = self.tables.walk(np.tile(hist, (L, 1)), np.tile(lens, L), np.repeat(np.arange(L), n), order)
        out = np.log(self.tables.symbol_probs(walk, np.tile(tgt, L))).reshape(L, n).T  # (n, L)
        return out if inv is None else out[inv.ravel()]

    # ---------------------------------------------------------------- incremental

    def start(self) -> CountState:
        """An empty typing state (feed it "\\n" + the prefix's ids)."""
        return CountState(np.zeros(0, dtype=np.int64), np.zeros((0, self.n_lang)), 0)

    def feed(self, state: CountState, ids: np.ndarray) -> tuple[CountState, FloatArray]:
        """(new state, (V,) log distribution after the last id) with ids (T >= 1,) appended."""
        new = np.asarray(ids, dtype=np.int64)
        if new.ndim != 1 or new.size == 0:
            raise UserError("counts: feed needs at least one id")
        if new.min() < 0 or new.max() >= self.vocab.size:
            raise UserError(f"counts: feed ids outside [0, {self.vocab.size})")
        all_ids = np.concatenate([state.ids, new])
        old_n, n = state.ids.size, all_ids.size
        lo = max(1, n - self.window)  # rows the new state keeps: exactly those its posterior reads
        reuse = state.ell[lo - state.ell_lo:] if lo < old_n else state.ell[:0]  # rows [lo, old_n)
        fresh = self._rows_range(all_ids, max(lo, old_n), n)
        st = CountState(all_ids, np.concatenate([reuse, fresh]), lo)
        return st, self.state_logprobs(st)

    def _rows_range(self, ids: IntArray, a: int, b: int) -> FloatArray:
        """ell rows of positions [a, b) of ids, each seeing what a tail of `context` ids ending at it would."""
        pos = np.arange(max(a, 1), b, dtype=np.int64)
        if pos.size == 0:
            return np.zeros((0, self.n_lang))
        return self._ell_clipped(ids, pos, pos)

    def state_logprobs(self, st: CountState) -> FloatArray:
        """(V,) the log distribution after everything a state has read."""
        n = st.ids.size
        a, b = self._window_rows(n)
        w = self.posterior(st.ell[a - st.ell_lo:b - st.ell_lo])[None]  # (1, L)
        lp, _ = self._final([st.ids[max(0, n - self.context):]], w)
        return lp[0]

    def truncate(self, state: CountState, n: int) -> CountState:
        """The state after its first n ids (n <= ids fed)."""
        n = int(n)
        if not 0 <= n <= state.ids.size:
            raise UserError(f"counts: truncate to {n} ids of a state holding {state.ids.size}")
        ids = state.ids[:n]
        lo = max(1, n - self.window)
        if n <= lo:
            ell = state.ell[:0]
        elif lo >= state.ell_lo:
            ell = state.ell[lo - state.ell_lo:n - state.ell_lo]
        else:
            ell = self._rows_range(ids, lo, n)
        return CountState(ids, ell, lo)


# ====================================================================================== folders


def _atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_model(model: CountModel, out: str | Path, extra: dict | None = None) -> None:
    """Write a self-describing folder: tables/*.npy (memory-mappable), vocab.json, config.json (written last)."""
    out = Path(out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    arrays = model.tables.arrays()
    for name, arr in arrays.items():
        _atomic_save_npy(out / "tables" / f"{name}.npy", arr)
    model.vocab.save(out / "vocab.json")
    cfg = {"model_type": "counts", "format": FORMAT, "version": VERSION, "languages": model.languages,
           "lang_chars": model.lang_chars, "vocab_hash": model.vocab.hash, "vocab_size": model.vocab.size,
           "counts": model.config.to_dict(), "arrays": sorted(arrays), **(extra or {})}
    atomic_write_json(out / "config.json", cfg)


def load_model(path: str | Path, mmap: bool = True) -> CountModel:
    """Open a folder written by save_model (tables memory-mapped unless mmap=False); UserError when damaged."""
    path = Path(path)
    cfg = read_json(path / "config.json", "counts model config")
    if not isinstance(cfg, dict) or cfg.get("model_type") != "counts" or cfg.get("format") != FORMAT:
        raise UserError(f"{path / 'config.json'}: not a nextchar count model")
    if cfg.get("version") != VERSION:
        raise UserError(f"{path / 'config.json'}: count model version {cfg.get('version')} (expected {VERSION})")
    vocab = Vocab.load(path / "vocab.json")
    if vocab.hash != cfg.get("vocab_hash"):
        raise UserError(f"{path / 'vocab.json'}: does not match the model's vocabulary ({cfg.get('vocab_hash')})")
    try:
        config = CountsConfig.from_dict(cfg["counts"])
        langs = list(cfg["languages"])
        arrs = {}
        for name in cfg["arrays"]:
            # a plain ndarray view of the map: np.memmap's subclass hooks cost microseconds on every index
            arrs[name] = np.asarray(np.load(path / "tables" / f"{name}.npy", mmap_mode="r" if mmap else None,
                                            allow_pickle=False))
        order = config.order
        tables = CountTables(vocab.size, len(langs), [arrs[f"ctx_{m}"] for m in range(order)],
                             [arrs[f"pair_{m}"] for m in range(order)], [arrs[f"own_{m}"] for m in range(order)],
                             [np.asarray(arrs[f"book_{m}"]) if f"book_{m}" in arrs else None for m in range(order)])
    except UserError:
        raise
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise UserError(f"{path}: not a readable count model ({type(e).__name__}: {e})") from None
    return CountModel(tables, vocab, langs, config, cfg.get("lang_chars"), path.name)


def tail(seq: np.ndarray, p: int, n: int, start_id: int) -> IntArray:
    """The context logprobs takes for predicting seq[p] from seq[:p]: the last n ids of START + seq[:p]."""
    if p >= n:
        return np.asarray(seq[p - n:p], dtype=np.int64)
    return np.concatenate(([start_id], seq[:p])).astype(np.int64)
