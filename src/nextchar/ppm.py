"""PPM with Dasher's rules (blending, update exclusion), learning as it reads, over any base distribution.

Dasher's PPM language model (Ward & MacKay's Dasher; its defaults: alpha 0.49, beta 0.77, update exclusion on,
symbol exclusion off) predicts from the contexts of the last 0..order-1 symbols that were seen before, longest
last: a context with total count T and n distinct followers gives a symbol seen c times (c - beta) / (T + alpha)
of the mass still unassigned, and passes (alpha + beta n) / (T + alpha) of it on to the next shorter context;
what the empty context leaves goes to the base distribution (uniform in Dasher). Learning a symbol increments
its count in the longest context, and in each shorter one only while the symbol was new in the longer one
(update exclusion), which makes lower-order counts the Kneser-Ney continuation counts.

`SessionPPM` is a literal, sequential PPM learning one symbol at a time over any base distribution: the
hand-checkable reference of `CountsConfig(kind="ppm")` tables in tests. (It was also measured as a session's
adaptation over the count model; the cache model of adapt.py did as well on dev streams for a fraction of
the state per session, and is the one mechanism: docs/quality.md.) Every change is logged so `truncate` undoes
learning exactly.
"""

from __future__ import annotations

import numpy as np

# Dasher's defaults (settings LMAlpha = 49 and LMBeta = 77 in hundredths; LMMaxOrder = 5 context symbols, i.e.
# n-gram order 6; LMUpdateExclusion on; LMExclusion off)
DASHER_ALPHA = 0.49
DASHER_BETA = 0.77


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
