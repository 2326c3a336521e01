"""Which session adaptation to keep: the cache model (adapt.py) against a session PPM over the model, on dev streams.

    python benchmarks/adaptation_choice.py --model MIX --data data/dasher [--chars 20000]

Each language's dev text (its first --chars characters) is read in order by a fresh session over the model's
static distribution (MIX: any folder; the shipped combination for the choice), and each mechanism is tuned on
half of the languages and scored on the other half (two folds, so no mechanism is scored where it was tuned):
- cache model (adapt.py): Witten-Bell cache n-grams of the session's text, p = (1 - λc - λu) p_model + λc p_cache
  + λu uniform, λc per (longest seen context, column) - variants of its longest context, escape and columns
  (count bins; count bins × "one follower only");
- session PPM: Dasher's PPM (ppm.SessionPPM: blending, update exclusion) learning the session's text over the
  model as its base, p = (1 - λ) p_model + λ p_ppm, λ per (longest seen context, count bins × one follower), with
  and without moving each session's own λ online (step eta on the log-loss gradient, clipped to [0, 0.98]).
Also the state one session holds after 20,000 characters, for the server (tracemalloc).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import tracemalloc

import numpy as np

from nextchar import adapt, engine
from nextchar.data import open_data
from nextchar.ppm import SessionPPM

LN2 = math.log(2)
GRID = np.round(np.arange(0.0, 0.96, 0.05), 2)
PPM_EDGES = (1, 2, 4, 8, 16)


def ppm_column(total: int, syms: int) -> int:
    return 2 * (int(np.searchsorted(PPM_EDGES, total, side="right")) - 1) + int(syms == 1)


def ppm_terms(ids: np.ndarray, p_model: np.ndarray, order: int) -> dict[str, np.ndarray]:
    """Per position: the session PPM's probability of the true id over the model's, and its weight cell."""
    ppm = SessionPPM(order)
    n = len(ids)
    out = {"pp": np.empty(n), "row": np.empty(n, dtype=np.int64), "col": np.empty(n, dtype=np.int64)}
    for t, x in enumerate(ids.tolist()):
        m, tot, k = ppm.match()
        out["row"][t], out["col"][t] = m, ppm_column(tot, k) if m >= 0 else 0
        out["pp"][t] = ppm.prob(x, p_model[t]) if m >= 0 else p_model[t]
        ppm.learn(x)
    return out


def tune_table(pm, pc, row, col, rows: int, cols: int, floor_u: float = 0.0, floor: float = 0.0) -> np.ndarray:
    """λ per (row, col): the exact grid minimum of each cell's positions; sparse cells copy the row above."""
    table = np.zeros((rows, cols))
    for r in range(rows):
        for c in range(cols):
            sel = (row == r) & (col == c)
            if sel.sum() < 50:
                table[r, c] = table[r - 1, c] if r else 0.0
                continue
            g = GRID[GRID + floor_u < 1]
            nll = -np.log((1 - g - floor_u)[:, None] * pm[sel] + g[:, None] * pc[sel] + floor_u * floor).sum(axis=1)
            table[r, c] = g[int(nll.argmin())]
    return table


def ppm_online(pm, terms, table, eta: float) -> np.ndarray:
    """The session PPM's adapted probabilities with each session's own λ moved online (eta 0: the table)."""
    w = table.copy()
    out = np.empty(len(pm))
    for t in range(len(pm)):
        r, c = int(terms["row"][t]), int(terms["col"][t])
        if r < 0:
            out[t] = pm[t]
            continue
        r = min(r, w.shape[0] - 1)
        lam = w[r, c]
        p = (1 - lam) * pm[t] + lam * terms["pp"][t]
        out[t] = p
        if eta > 0:
            w[r, c] = min(0.98, max(0.0, lam + eta * (terms["pp"][t] - pm[t]) / p))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--chars", type=int, default=20000)
    ap.add_argument("--cache-orders", default="6,10,12")
    ap.add_argument("--ppm-order", type=int, default=12)
    args = ap.parse_args()
    t0 = time.time()
    ds = open_data(args.data)
    pred = engine.load(args.model, threads=1).windowed(max(1, engine.load(args.model).context // 2))
    langs = ds.languages
    V, ns = ds.vocab.size, adapt.count_specials(ds.vocab)
    ids = {lang: ds.split(lang, "dev")[:args.chars].astype(np.int64) for lang in langs}
    pm = {}
    for lang in langs:
        lp = np.concatenate([pred.logprobs([ids[lang][:p] for p in range(lo, min(len(ids[lang]), lo + 2048))])
                             for lo in range(0, len(ids[lang]), 2048)])
        pm[lang] = np.exp(lp[np.arange(len(ids[lang])), ids[lang]])
    print(f"static dev streams: {np.mean([-np.log(pm[x]).mean() for x in langs]) / LN2:.4f} bpc "
          f"({time.time() - t0:.0f} s)", flush=True)
    folds = [langs[0::2], langs[1::2]]
    results = {}

    # the cache model: one pass per position at the longest order, shorter orders read from it
    orders = [int(o) for o in args.cache_orders.split(",")]
    rec = {lang: {"pc": {}, "row": {}, "cnt": {}, "dist": {}} for lang in langs}
    for lang in langs:
        n = len(ids[lang])
        for mo in orders:
            for key in ("row", "cnt", "dist"):
                rec[lang][key][mo] = np.full(n, -1 if key == "row" else 0, dtype=np.int64)
            for e in (1.0, 2.0):
                rec[lang]["pc"][(mo, e)] = np.zeros(n)
        for t, c in enumerate(adapt.stream_caches(ids[lang], 0, n, ds.vocab.stoi["\n"], V, ns, max(orders))):
            if c is None:
                continue
            for mo in orders:
                cc = adapt.CacheCounts(c.counts[:mo + 1], min(c.order, mo))
                rec[lang]["row"][mo][t], rec[lang]["cnt"][mo][t], rec[lang]["dist"][mo][t] = cc.order, cc.count, cc.distinct
                for e in (1.0, 2.0):
                    rec[lang]["pc"][(mo, e)][t] = cc.probs(e)[ids[lang][t]]
    floor, u = 1.0 / (V - ns), adapt.UNIFORM
    def bins(c, d):
        return np.maximum(np.searchsorted(adapt.COUNT_EDGES, c, side="right") - 1, 0)

    def bins_one(c, d):
        return np.array([adapt.column(a, b) for a, b in zip(c, d)], dtype=np.int64)

    for mo in orders:
        for e in (1.0, 2.0):
            for name, colf, cols in (("count bins", bins, 5), ("count bins x one follower", bins_one, 10)):
                pc = {x: rec[x]["pc"][(mo, e)] for x in langs}
                row = {x: rec[x]["row"][mo] for x in langs}
                col = {x: colf(rec[x]["cnt"][mo], rec[x]["dist"][mo]) for x in langs}
                held = []
                for k in range(2):
                    tune_on = folds[k]
                    table = tune_table(*(np.concatenate([d[x] for x in tune_on]) for d in (pm, pc, row, col)),
                                       mo + 1, cols, u, floor)
                    for x in folds[1 - k]:
                        lam = np.where(row[x] >= 0, table[np.maximum(row[x], 0), col[x]], 0.0)
                        held.append(-np.log((1 - lam - u) * pm[x] + lam * pc[x] + u * floor).mean() / LN2)
                key = f"cache model, contexts up to {mo}, escape {e}, columns: {name}"
                results[key] = float(np.mean(held))
                print(f"{key}: {results[key]:.4f}", flush=True)

    # the session PPM
    terms = {x: ppm_terms(ids[x], pm[x], args.ppm_order) for x in langs}
    pp = {x: terms[x]["pp"] for x in langs}
    prow = {x: terms[x]["row"] for x in langs}
    pcol = {x: terms[x]["col"] for x in langs}
    for eta in (0.0, 0.005):
        held = []
        for k in range(2):
            table = tune_table(*(np.concatenate([d[x] for x in folds[k]]) for d in (pm, pp, prow, pcol)),
                               args.ppm_order, 10)
            for x in folds[1 - k]:
                held.append(-np.log(ppm_online(pm[x], terms[x], table, eta)).mean() / LN2)
        key = f"session PPM order {args.ppm_order}, online step {eta}"
        results[key] = float(np.mean(held))
        print(f"{key}: {results[key]:.4f}", flush=True)

    # state per session after 20,000 characters
    text = ds.split(langs[4], "train")[:20000].astype(np.int64)
    tracemalloc.start()
    s = SessionPPM(args.ppm_order)
    for x in text.tolist():
        s.learn(x)
    ppm_mb = tracemalloc.get_traced_memory()[0] / 1e6
    tracemalloc.stop()
    print(f"state after 20,000 characters: session PPM {ppm_mb:.0f} MB; cache model {text.nbytes / 1e6:.2f} MB "
          f"(its ids)\n{time.time() - t0:.0f} s", file=sys.stdout)


if __name__ == "__main__":
    main()
