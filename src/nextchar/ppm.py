"""PPM with Dasher's rules (blending, update exclusion), learning as it reads, over any base distribution.

Dasher's PPM language model (Ward & MacKay's Dasher; its defaults: alpha 0.49, beta 0.77, update exclusion on,
symbol exclusion off) predicts from the contexts of the last 0..order-1 symbols that were seen before, longest
last: a context with total count T and n distinct followers gives a symbol seen c times (c - beta) / (T + alpha)
of the mass still unassigned, and passes (alpha + beta n) / (T + alpha) of it on to the next shorter context;
what the empty context leaves goes to the base distribution (uniform in Dasher). Learning a symbol increments
its count in the longest context, and in each shorter one only while the symbol was new in the longer one
(update exclusion), which makes lower-order counts the Kneser-Ney continuation counts.

Here the same rules drive two things: `SessionPPM`, the model of what has been typed in a session, whose base
is the static count model (so a context seen only in this session is predicted from the session, everything
else from the count model), and the hand-checkable reference of `CountsConfig(kind="ppm")` tables in tests.
Every change is logged so `truncate` undoes learning exactly (backspace and edits while typing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Dasher's defaults (settings LMAlpha = 49 and LMBeta = 77 in hundredths; LMMaxOrder = 5 context symbols, i.e.
# n-gram order 6; LMUpdateExclusion on; LMExclusion off)
DASHER_ALPHA = 0.49
DASHER_BETA = 0.77


@dataclass(frozen=True)
class SessionConfig:
    """The session PPM and how much of it is mixed in.

    p = (1 - lam) * p_static + lam * p_ppm, where p_ppm is the session PPM over base p_static and lam depends on
    the longest context M of the session seen before: its length (row, 0..order-1), its total count (by
    COUNT_EDGES) and whether one symbol only ever followed it (column = 2 * count column + deterministic) - tuned
    on dev streams by `tune_weights`.
    """

    order: int = 7  # n-gram order: contexts of up to order-1 symbols
    alpha: float = DASHER_ALPHA
    beta: float = DASHER_BETA
    weights: tuple[tuple[float, ...], ...] | None = None  # lam by [M][column]; None: 1 everywhere
    # online step size: after each symbol the session's own copy of its cell's lam moves along the gradient of
    # the log-loss, (p_ppm - p_static) / p, clipped to [0, LAM_MAX], so a text where the session misleads soon
    # trusts it less (0: the tuned table as is)
    eta: float = 0.0


LAM_MAX = 0.98
COUNT_EDGES = (1, 2, 4, 8, 16)  # count column j holds context totals in [COUNT_EDGES[j], COUNT_EDGES[j + 1])
N_COLUMNS = 2 * len(COUNT_EDGES)


def count_column(total: int) -> int:
    return int(np.searchsorted(COUNT_EDGES, total, side="right")) - 1


def column(total: int, syms: int) -> int:
    """Weight column of a longest context with this total count and number of distinct followers."""
    return 2 * count_column(total) + int(syms == 1)


class SessionPPM:
    """A PPM over ids that learns symbol by symbol, with an exact undo log.

    counts[ctx] is {symbol: count} for a context ctx (a tuple of ids, oldest first); totals[ctx] its sum.
    """

    def __init__(self, order: int = 7, alpha: float = DASHER_ALPHA, beta: float = DASHER_BETA) -> None:
        if order < 1:
            raise ValueError("order must be >= 1")
        self.order, self.alpha, self.beta = int(order), float(alpha), float(beta)
        self.counts: dict[tuple[int, ...], dict[int, int]] = {}
        self.totals: dict[tuple[int, ...], int] = {}
        self.history: list[int] = []
        self._log: list[list[tuple[tuple[int, ...], int]]] = []  # per learned symbol: (context, symbol) increments

    def __len__(self) -> int:
        return len(self.history)

    def contexts(self, history: list[int] | None = None) -> list[tuple[int, ...]]:
        """The seen contexts of a history (default: what was learned), shortest first; the seen contexts are
        suffix-closed, so the walk stops at the first miss."""
        h = self.history if history is None else list(history)
        out = []
        for k in range(0, min(self.order - 1, len(h)) + 1):
            ctx = tuple(h[len(h) - k:]) if k else ()
            if ctx not in self.counts:
                break
            out.append(ctx)
        return out

    def learn(self, sym: int) -> None:
        """Count sym after the current history (update exclusion), then append it."""
        h, s = self.history, int(sym)
        incs = []
        for k in range(min(self.order - 1, len(h)), -1, -1):
            ctx = tuple(h[len(h) - k:]) if k else ()
            d = self.counts.get(ctx)
            if d is None:
                d = self.counts[ctx] = {}
                self.totals[ctx] = 0
            seen = s in d
            d[s] = d.get(s, 0) + 1
            self.totals[ctx] += 1
            incs.append((ctx, s))
            if seen:
                break  # update exclusion: shorter contexts already know s
        h.append(s)
        self._log.append(incs)

    def truncate(self, n: int) -> None:
        """Undo learning back to the first n symbols."""
        while len(self.history) > n:
            self.history.pop()
            for ctx, s in reversed(self._log.pop()):
                d = self.counts[ctx]
                d[s] -= 1
                self.totals[ctx] -= 1
                if d[s] == 0:
                    del d[s]
                if not d:
                    del self.counts[ctx]
                    del self.totals[ctx]

    def match(self) -> tuple[int, int, int]:
        """(length of the longest seen context, its total count, its distinct symbols); (-1, 0, 0) when nothing
        was learned."""
        ctxs = self.contexts()
        if not ctxs:
            return -1, 0, 0
        return len(ctxs[-1]), self.totals[ctxs[-1]], len(self.counts[ctxs[-1]])

    def prob(self, sym: int, base_p: float, history: list[int] | None = None) -> float:
        """P(sym | history) with base_p the base distribution's probability of sym (blending, no exclusion)."""
        q = float(base_p)
        a, b = self.alpha, self.beta
        for ctx in self.contexts(history):
            d, t = self.counts[ctx], self.totals[ctx]
            c = d.get(int(sym), 0)
            q = (a + b * len(d)) / (t + a) * q + ((c - b) / (t + a) if c else 0.0)
        return q

    def dist(self, base: np.ndarray, history: list[int] | None = None) -> np.ndarray:
        """(V,) P(. | history) over a base distribution (V,) (history: default what was learned)."""
        q = np.array(base, dtype=np.float64)
        a, b = self.alpha, self.beta
        for ctx in self.contexts(history):
            d, t = self.counts[ctx], self.totals[ctx]
            q *= (a + b * len(d)) / (t + a)
            syms = np.fromiter(d.keys(), dtype=np.int64, count=len(d))
            cnt = np.fromiter(d.values(), dtype=np.float64, count=len(d))
            q[syms] += (cnt - b) / (t + a)
        return q


def lam(cfg: SessionConfig, m: int, total: int, syms: int) -> float:
    """The session's weight for a longest seen context of length m (-1: none), total count and distinct followers."""
    if m < 0:
        return 0.0
    if cfg.weights is None:
        return 1.0
    return float(cfg.weights[min(m, len(cfg.weights) - 1)][column(total, syms)])


class AdaptiveSession:
    """What a typing session (or a streaming evaluation) adds to a static model: p = (1 - lam) p_static + lam p_ppm.

    Holds the session PPM and the session's own copy of the weight table (moved online when cfg.eta > 0); both
    are undone exactly by truncate, so a session that was edited equals one that typed the final text directly.
    """

    def __init__(self, cfg: SessionConfig) -> None:
        self.cfg = cfg
        self.ppm = SessionPPM(cfg.order, cfg.alpha, cfg.beta)
        self.w = None if cfg.weights is None else np.array(cfg.weights, dtype=np.float64)  # (rows, N_COLUMNS)
        self._undo: list[tuple[int, int, float] | None] = []  # per learned symbol: (row, column, old lam)

    def __len__(self) -> int:
        return len(self.ppm)

    def _cell(self) -> tuple[int, int, float]:
        """(row, column, lam) for the next symbol; row -1 when the session has learned nothing."""
        m, t, k = self.ppm.match()
        if m < 0:
            return -1, 0, 0.0
        if self.w is None:
            return m, 0, 1.0
        r, c = min(m, self.w.shape[0] - 1), column(t, k)
        return r, c, float(self.w[r, c])

    def dist(self, base: np.ndarray) -> np.ndarray:
        """(V,) the adapted distribution after the learned text, base (V,) being the static one there."""
        _, _, w = self._cell()
        if w == 0.0:
            return np.array(base, dtype=np.float64)
        return (1.0 - w) * base + w * self.ppm.dist(base)

    def prob(self, sym: int, base_p: float) -> float:
        """The adapted probability of sym, base_p being the static model's."""
        _, _, w = self._cell()
        return (1.0 - w) * base_p + w * self.ppm.prob(sym, base_p) if w else float(base_p)

    def learn(self, sym: int, base_p: float) -> float:
        """Score sym (returns its adapted probability), then learn it: weight step, then PPM counts."""
        r, c, w = self._cell()
        pp = self.ppm.prob(sym, base_p) if r >= 0 else float(base_p)
        p = (1.0 - w) * base_p + w * pp
        undo = None
        if r >= 0 and self.w is not None and self.cfg.eta > 0:
            undo = (r, c, w)
            self.w[r, c] = min(LAM_MAX, max(0.0, w + self.cfg.eta * (pp - base_p) / p))
        self._undo.append(undo)
        self.ppm.learn(sym)
        return p

    def truncate(self, n: int) -> None:
        """Undo learning back to the first n symbols."""
        while len(self._undo) > n:
            u = self._undo.pop()
            if u is not None:
                self.w[u[0], u[1]] = u[2]
        self.ppm.truncate(n)


def stream_adapted(ids: np.ndarray, p_static: np.ndarray, cfg: SessionConfig) -> np.ndarray:
    """(T,) the adapted probability of each true id, reading ids in order and learning each after scoring it."""
    sess = AdaptiveSession(cfg)
    return np.array([sess.learn(x, p) for x, p in zip(np.asarray(ids).tolist(), np.asarray(p_static).tolist())])


def stream_terms(ids: np.ndarray, p_static: np.ndarray, cfg: SessionConfig) -> dict[str, np.ndarray]:
    """Read ids in order, learning each after predicting it: per position the session PPM's probability of the
    true id over p_static (the static model's probability of it, (T,)), the longest seen context and its total."""
    ppm = SessionPPM(cfg.order, cfg.alpha, cfg.beta)
    n = len(ids)
    p_ppm = np.empty(n)
    m_len = np.empty(n, dtype=np.int64)
    m_tot = np.empty(n, dtype=np.int64)
    m_syms = np.empty(n, dtype=np.int64)
    for t, x in enumerate(np.asarray(ids).tolist()):
        m_len[t], m_tot[t], m_syms[t] = ppm.match()
        p_ppm[t] = ppm.prob(x, p_static[t])
        ppm.learn(x)
    return {"p_ppm": p_ppm, "m_len": m_len, "m_tot": m_tot, "m_syms": m_syms}


def mix_stream(p_static: np.ndarray, terms: dict[str, np.ndarray], cfg: SessionConfig) -> np.ndarray:
    """(T,) adapted probability of each true id, (1 - lam) p_static + lam p_ppm, with the table as is (no online
    steps: for tuning; equals stream_adapted when cfg.eta == 0)."""
    w = np.array([lam(cfg, int(m), int(t), int(k)) for m, t, k in
                  zip(terms["m_len"], terms["m_tot"], terms["m_syms"])])
    return (1.0 - w) * p_static + w * terms["p_ppm"]


MIN_CELL = 50  # dev positions a weight cell needs to be tuned on its own


def tune_weights(streams: list[tuple[np.ndarray, dict[str, np.ndarray]]], order: int,
                 grid: np.ndarray | None = None, min_cell: int = MIN_CELL) -> tuple[tuple[float, ...], ...]:
    """lam per (longest context length, column) that minimizes the total log-loss of dev streams.

    Each cell's positions are disjoint, so the cells are tuned independently by an exact grid search
    (streams: (p_static (T,), stream_terms output) pairs read with the same order). A cell seen fewer than
    min_cell times takes the value of the same column one context shorter (0 in the first row).
    """
    grid = np.linspace(0.0, 1.0, 41) if grid is None else grid
    ps = np.concatenate([s[0] for s in streams])
    pp = np.concatenate([s[1]["p_ppm"] for s in streams])
    ml = np.concatenate([s[1]["m_len"] for s in streams])
    cols = np.concatenate([[column(int(t), int(k)) for t, k in zip(s[1]["m_tot"], s[1]["m_syms"])]
                           for s in streams]).astype(np.int64)
    out = []
    for m in range(order):
        row = []
        for c in range(N_COLUMNS):
            sel = (ml == m) & (cols == c)
            if sel.sum() < min_cell:
                row.append(out[m - 1][c] if m else 0.0)
                continue
            loss = [-np.log((1 - g) * ps[sel] + g * pp[sel]).sum() for g in grid]
            row.append(float(grid[int(np.argmin(loss))]))
        out.append(tuple(row))
    return tuple(out)
