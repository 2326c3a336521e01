"""Measure the language-aware count model: oracles by order, posterior tuning, size vs quality, streaming vs PPMd, cost.

Subcommands (each prints a table; --json writes the numbers):
  oracle   per-language KN and Dasher-PPM told the language, orders --orders, on --split
  tune     grid over the posterior's window/decay/temperature/floor/prior/id-order on dev (model without language)
  size     size-vs-quality table over orders, cutoffs and quantization (dev)
  static   per-language and macro top-1/top-3/bpc on dev and test: multilingual KN8, per-language KN/PPM oracles,
           the language-aware model(s) (a saved --model folder and/or a --config built here)
  stream   streaming bpc (first --chars characters of each language's test text, read in order): the count model
           static and adapting, PPMd var. H (pyppmd) primed on the language's own / all languages' training text
  cost     load time, size on disk, RSS, ms per keystroke (p50/p99, one thread) and prefixes/s in batch

Every evaluation uses the positions of `nextchar eval` (data.eval_positions: floor((i + 0.5) L / N)), each predicted
from the same split's preceding text only (START + split[:p]).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from nextchar.counts import (
    CountModel,
    CountsConfig,
    PosteriorConfig,
    build_model,
    fit_languages,
    folder_bytes,
    load_model,
    save_model,
)
from nextchar.data import eval_positions, open_data

LN2 = math.log(2)


def never_mask(vocab) -> np.ndarray:
    return np.array([vocab.is_special(i) for i in range(vocab.size)])


def metrics(lp: np.ndarray, y: np.ndarray, never: np.ndarray) -> dict:
    """top-1, top-3, bpc of log-probability rows lp (N, V) for targets y, as `nextchar eval` counts them."""
    ce = -lp[np.arange(len(y)), y].sum()
    q = lp.copy()
    q[:, never] = -np.inf
    top = np.argpartition(-q, 3, axis=1)[:, :3]
    return {"n": int(len(y)), "top1": float((q.argmax(1) == y).mean()), "top3": float((top == y[:, None]).any(1).mean()),
            "bpc": float(ce / len(y) / LN2)}


def macro(rows: dict) -> dict:
    return {k: float(np.mean([r[k] for r in rows.values()])) for k in ("top1", "top3", "bpc")}


def table(title: str, results: dict[str, dict]) -> str:
    """Per-language rows, one column group per system: top-1 / top-3 / bpc."""
    systems = list(results)
    langs = sorted({lang for r in results.values() for lang in r["languages"]})
    head = f"{'lang':<6}" + "".join(f" | {s[:26]:>26}" for s in systems)
    sub = f"{'':<6}" + "".join(f" | {'top1':>8}{'top3':>9}{'bpc':>9}" for _ in systems)
    lines = [f"## {title}", head, sub, "-" * len(sub)]
    for lang in langs + ["macro"]:
        if lang == "macro":
            lines.append("-" * len(sub))
        cells = []
        for s in systems:
            r = results[s]["macro"] if lang == "macro" else results[s]["languages"].get(lang)
            cells.append(f" | {r['top1']:>8.2%}{r['top3']:>9.2%}{r['bpc']:>9.3f}" if r else f" | {'':>26}")
        lines.append(f"{lang:<6}" + "".join(cells))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ oracles


def oracle_eval(model: CountModel, ds, split: str, positions: int) -> dict:
    """Each language's own table (told the language) at the eval positions."""
    tab, never = model.tables, never_mask(model.vocab)
    start = model.vocab.stoi["\n"]
    k = max(model.order - 1, 1)
    out = {}
    for li, lang in enumerate(model.languages):
        arr = ds.split(lang, split).astype(np.int64)
        pos = eval_positions(arr.size, positions)
        s = np.concatenate(([start], arr))
        p1 = pos + 1
        back = p1[:, None] - np.arange(1, k + 1)
        hist, lens = s[np.maximum(back, 0)], np.minimum(p1, k)
        walk = tab.walk(hist, lens, np.full(pos.size, li), model.order)
        lp = np.log(tab.dists(walk, pos.size))
        out[lang] = metrics(lp, arr[pos], never)
    return {"languages": out, "macro": macro(out)}


def multilingual_kn(ds, split: str, positions: int, order: int = 8) -> dict:
    """Today's baseline: one KN model of all languages (NGramModel, as `nextchar train --model ngram`)."""
    from nextchar.ngram import NGramModel
    from nextchar.predict import split_context

    start = ds.vocab.stoi["\n"]
    seqs = [np.concatenate(([start], ds.split(lang, "train"))).astype(np.int64) for lang in ds.languages]
    m = NGramModel.fit(seqs, ds.vocab.size, order)
    never = never_mask(ds.vocab)
    out = {}
    for lang in ds.languages:
        arr = ds.split(lang, split)
        pos = eval_positions(len(arr), positions)
        lp = np.log(m.dist_batch([split_context(arr, int(p), order - 1, start) for p in pos]))
        out[lang] = metrics(lp, arr[pos].astype(np.int64), never)
    return {"languages": out, "macro": macro(out)}


def cmd_oracle(args) -> dict:
    ds = open_data(args.data)
    orders = [int(o) for o in args.orders.split(",")]
    t0 = time.time()
    models, langs, vocab, sizes = fit_languages(args.data, max(orders))
    print(f"fitted {len(langs)} languages to order {max(orders)} in {time.time() - t0:.1f}s", flush=True)
    res = {}
    for kind in args.kinds.split(","):
        for n in orders:
            cm = build_model(models, vocab, langs, CountsConfig(order=n, kind=kind, bits=32), sizes)
            r = oracle_eval(cm, ds, args.split, args.positions)
            res[f"{kind}{n}"] = r
            m = r["macro"]
            print(f"{kind} order {n:>2}: {args.split} top-1 {m['top1']:.2%} top-3 {m['top3']:.2%} bpc {m['bpc']:.3f}"
                  f"  entries {cm.tables.n_entries:,}", flush=True)
    return res


# ------------------------------------------------------------------------------------------ static, language-aware


def aware_eval(model: CountModel, ds, split: str, positions: int) -> dict:
    """The language-aware model without the language, at the eval positions (logprobs_at == logprobs)."""
    never = never_mask(model.vocab)
    out = {}
    for lang in model.languages:
        arr = ds.split(lang, split).astype(np.int64)
        pos = eval_positions(arr.size, positions)
        lp = model.logprobs_at(arr, pos)
        out[lang] = metrics(lp, arr[pos], never)
    return {"languages": out, "macro": macro(out)}


CUTOFF_SETS = {
    "none": (),
    "2@4": (1, 1, 1, 2),
    "2@3": (1, 1, 2),
    "2@4,3@6": (1, 1, 1, 2, 2, 3),
    "2@3,3@5": (1, 1, 2, 2, 3),
    "2@3,3@5,4@7": (1, 1, 2, 2, 3, 3, 4),
    "2@3,3@4,5@6": (1, 1, 2, 3, 3, 5),
}


def parse_cutoffs(name: str, order: int) -> tuple[int, ...]:
    """A named cutoff set, continued at its last value up to `order` (cutoffs never fall with the order)."""
    c = CUTOFF_SETS[name]
    return tuple(c) + (c[-1],) * (order - len(c)) if c else ()


def cmd_size(args) -> dict:
    """Size vs quality: each (order, cutoffs, bits) built from the same fits, told the language (the posterior
    matches the oracle within 0.002 bpc, see `tune`), bytes = what the tables take on disk."""
    ds = open_data(args.data)
    orders = [int(o) for o in args.orders.split(",")]
    models, langs, vocab, sizes = fit_languages(args.data, max(orders))
    res = {}
    print(f"{'order':>5} {'cutoffs':>14} {'prune':>6} {'bits':>4} {'entries':>11} {'MB':>7} {'top1':>7} {'top3':>7} {'bpc':>7}")
    for n in orders:
        for cname in args.cutoffs.split(";"):
          for th in [float(x) for x in args.prune.split(",")]:
            for bits in [int(b) for b in args.bits.split(",")]:
                cfg = CountsConfig(order=n, kind="kn", bits=bits, cutoffs=parse_cutoffs(cname, n), prune=th)
                cm = build_model(models, vocab, langs, cfg, sizes)
                m = oracle_eval(cm, ds, args.split, args.positions)["macro"]
                mb = cm.tables.nbytes() / 1e6
                key = f"kn{n} {cname} prune {th} {bits}b"
                res[key] = {"order": n, "cutoffs": cname, "prune": th, "bits": bits, "entries": cm.tables.n_entries,
                            "mb": mb, **m}
                print(f"{n:>5} {cname:>14} {th:>6} {bits:>4} {cm.tables.n_entries:>11,} {mb:>7.1f} {m['top1']:>7.2%} "
                      f"{m['top3']:>7.2%} {m['bpc']:>7.3f}", flush=True)
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["oracle", "tune", "size", "static", "stream", "cost"])
    ap.add_argument("--data", default="/work/main/data/dasher")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--positions", type=int, default=2000)
    ap.add_argument("--orders", default="5,6,7,8,9,10,12")
    ap.add_argument("--kinds", default="kn,ppm")
    ap.add_argument("--cutoffs", default=";".join(CUTOFF_SETS))
    ap.add_argument("--bits", default="32,16,8")
    ap.add_argument("--prune", default="0")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    res = {"oracle": cmd_oracle, "size": cmd_size}[args.cmd](args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
