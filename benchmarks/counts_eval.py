"""Measure the language-aware count model: oracles by order, posterior tuning, size vs quality, streaming vs PPMd, cost.

Subcommands (each prints a table; --json writes the numbers):
  oracle   per-language KN and Dasher-PPM told the language, orders --orders, on --split
  tune     grid over the posterior's window/decay/temperature/floor/prior/id-order on dev (model without language)
  size     size-vs-quality table over orders, cutoffs and quantization (dev)
  static   per-language and macro top-1/top-3/bpc on dev and test: multilingual KN8, per-language KN/PPM oracles,
           the language-aware model(s) (a saved --model folder and/or a --config built here)
  stream   streaming bpc (first --chars characters of each language's test text, read in order): the count model
           static and adapting (the session's cache model, adapt.py), PPMd var. H (pyppmd) primed on the
           language's own / all languages' training text
  cost     load time, size on disk, RSS, ms per keystroke (p50/p99, one thread) and prefixes/s in batch

Every evaluation uses the positions of `nextchar eval` (data.eval_positions: floor((i + 0.5) L / N)), each predicted
from the same split's preceding text only (START + split[:p]).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from nextchar.counts import CountModel, CountsConfig, load_model, tail
from nextchar.data import eval_positions, open_data
from nextchar.files import folder_bytes
from nextchar.streaming import CountStream, ppmd_bits, ppmd_size, stream_ids
from nextchar.train_counts import build_model, fit_languages

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
    
    start = ds.vocab.stoi["\n"]
    seqs = [np.concatenate(([start], ds.split(lang, "train"))).astype(np.int64) for lang in ds.languages]
    m = NGramModel.fit(seqs, ds.vocab.size, order)
    never = never_mask(ds.vocab)
    out = {}
    for lang in ds.languages:
        arr = ds.split(lang, split)
        pos = eval_positions(len(arr), positions)
        lp = np.log(m.dist_batch([tail(arr, int(p), order - 1, start) for p in pos]))
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
            cm = build_model(models, vocab, langs, CountsConfig(order=n, kind=kind, bits=32, prune=0.0), sizes)
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


def cmd_tune(args) -> dict:
    """The posterior's settings on dev, the model's tables fixed: quality (static eval) and batch cost."""
    from dataclasses import replace as dc_replace

    ds = open_data(args.data)
    base = load_model(args.model)
    p0 = base.config.posterior
    res = {}
    print(f"{'window':>6} {'decay':>6} {'temp':>5} {'floor':>7} {'prior':>7} {'id':>3} {'minw':>6} | "
          f"{'top1':>7} {'top3':>7} {'bpc':>7} | {'s':>5}")
    for spec in args.grid.split(";"):
        kv = dict(x.split("=") for x in spec.split(",") if x)
        typed = {k: (type(getattr(p0, k))(v)) for k, v in kv.items()}
        post = dc_replace(p0, **typed)
        m = base.with_posterior(post)
        t0 = time.time()
        r = aware_eval(m, ds, args.split, args.positions)
        dt = time.time() - t0
        mm = r["macro"]
        res[spec] = {**r, "seconds": dt, "posterior": vars(post)}
        print(f"{post.window:>6} {post.decay:>6} {post.temperature:>5} {post.floor:>7} {post.prior:>7} "
              f"{post.id_order:>3} {post.min_weight:>6} | {mm['top1']:>7.2%} {mm['top3']:>7.2%} {mm['bpc']:>7.4f} | "
              f"{dt:>5.0f}", flush=True)
    return res


def cmd_static(args) -> dict:
    """Per-language and macro top-1/top-3/bpc on each of --splits for every system, one table per split."""
    ds = open_data(args.data)
    models, langs, vocab, sizes = fit_languages(args.data, 8)
    oracles = {"KN8 told the language": CountsConfig(order=8, kind="kn", bits=32, prune=0.0),
               "PPM6 (Dasher) told": CountsConfig(order=6, kind="ppm", bits=32, prune=0.0),
               "PPM8 (Dasher rules) told": CountsConfig(order=8, kind="ppm", bits=32, prune=0.0)}
    out = {}
    for split in args.splits.split(","):
        res = {"multilingual KN8": multilingual_kn(ds, split, args.positions)}
        for name, cfg in oracles.items():
            res[name] = oracle_eval(build_model(models, vocab, langs, cfg, sizes), ds, split, args.positions)
        full = build_model(models, vocab, langs, CountsConfig(order=8, kind="kn", bits=32, prune=0.0), sizes)
        shipped = load_model(args.model)
        res["aware KN8 full, no language"] = aware_eval(full.with_posterior(shipped.config.posterior), ds, split,
                                                        args.positions)
        res[f"aware {Path(args.model).name}"] = aware_eval(shipped, ds, split, args.positions)
        print(table(f"{split}: {args.positions} positions per language", res), flush=True)
        out[split] = res
    return out


def cmd_switch(args) -> dict:
    """Language switches: 300 test characters of A, then B's test text; characters of B until the posterior's
    most probable language is B (and stays B for the rest of the measured 120 characters), every ordered pair."""
    ds = open_data(args.data)
    m = load_model(args.model)
    start_b, horizon = 300, 120
    res = {}
    for a in m.languages:
        for b in m.languages:
            if a == b:
                continue
            sa, sb = ds.split(a, "test")[:start_b], ds.split(b, "test")[:horizon]
            seq = np.concatenate([sa, sb]).astype(np.int64)
            pos = np.arange(sa.size, seq.size + 1)  # after 0, 1, ... characters of B (position p predicts seq[p])
            _, f = m.logprobs_at(np.concatenate([seq, [0]]), pos, with_features=True)
            top = f["posterior"].argmax(axis=1) == m.languages.index(b)
            wrong = np.flatnonzero(~top)
            res[f"{a}>{b}"] = int(wrong[-1] + 1) if wrong.size else 0  # characters of B after which it is on top
    v = np.array(list(res.values()))
    worst = sorted(res.items(), key=lambda kv: -kv[1])[:8]
    print(f"{len(v)} switches: characters of the new language until it leads the posterior for good: median "
          f"{np.median(v):.0f}, 90th percentile {np.percentile(v, 90):.0f}, max {v.max()} (never within {horizon}: "
          f"{int((v > horizon).sum())}); worst: {worst}")
    return {"pairs": res, "median": float(np.median(v)), "p90": float(np.percentile(v, 90)), "max": int(v.max())}


# ------------------------------------------------------------------------------------------ streaming


def static_streams(model: CountModel, ds, split: str, chars: int, cache: Path | None = None) -> dict:
    """Per language: the count model's log p of each id reading the text in order, and the oracle's (told)."""
    if cache is not None and cache.exists():
        z = np.load(cache)
        return {lang: {"lp": z[f"{lang}_lp"], "oracle": z[f"{lang}_oracle"]} for lang in model.languages}
    out = {}
    for li, lang in enumerate(model.languages):
        t0 = time.time()
        lp, _, full = model.stream_logprobs(stream_ids(ds.split(lang, split), chars))
        out[lang] = {"lp": lp, "oracle": full[:, li]}
        print(f"  {lang}: static stream {lp.size} chars {-lp.mean() / LN2:.3f} bpc ({time.time() - t0:.1f}s)",
              flush=True)
    if cache is not None:
        np.savez(cache, **{f"{lang}_{k}": v for lang, d in out.items() for k, v in d.items()})
    return out


def ppmd_rows(ds, split: str, chars: int, cache: Path) -> dict:
    """PPMd var. H order 12 bits per character per language: primed on its own training text, on all languages'
    (concatenated in language order, one newline between), and not primed; cached (it takes minutes)."""
    if cache.exists():
        return json.loads(cache.read_text())
    all_prime = "\n".join(ds.text(lang, "train") for lang in ds.languages).encode("utf-8")
    all_size = ppmd_size(all_prime)
    out = {}
    for lang in ds.languages:
        ids = stream_ids(ds.split(lang, split), chars)
        text = ds.vocab.decode(ids).encode("utf-8")
        n = ids.size
        out[lang] = {"ppmd own": ppmd_bits(ds.text(lang, "train").encode("utf-8"), text) / n,
                     "ppmd all": ppmd_bits(all_prime, text, prime_size=all_size) / n,
                     "ppmd none": ppmd_bits(b"", text) / n}
        print(f"  {lang}: " + " ".join(f"{k} {v:.3f}" for k, v in out[lang].items()), flush=True)
    cache.write_text(json.dumps(out))
    return out


def cmd_stream(args) -> dict:
    """Streaming bpc per language: count model static and adapting (with and without the language), PPMd.

    Adapting = the session's cache model (adapt.py, its module weights) reading the text as it goes."""
    from nextchar.adapt import WEIGHTS, count_specials, stream_true

    ds = open_data(args.data)
    model = load_model(args.model)
    tag = Path(args.model).name
    cache_dir = Path(args.cache)
    cache_dir.mkdir(parents=True, exist_ok=True)
    start, ns = model.vocab.stoi["\n"], count_specials(model.vocab)

    def adapted(ids, lp):
        return np.log(stream_true(np.exp(lp), ids, start, model.vocab.size, ns, WEIGHTS))

    print(f"static streams ({args.split}) of {args.model}", flush=True)
    test = static_streams(model, ds, args.split, args.chars, cache_dir / f"{tag}_{args.split}_{args.chars}.npz")
    ppmd = ppmd_rows(ds, args.split, args.chars, cache_dir / f"ppmd_{args.split}_{args.chars}.json") \
        if args.ppmd else {}
    rows = {}
    for lang in model.languages:
        ids = stream_ids(ds.split(lang, args.split), args.chars)
        d = test[lang]
        r = {"chars": int(ids.size),
             "counts static": CountStream.bpc(d["lp"]),
             "counts adapting": CountStream.bpc(adapted(ids, d["lp"])),
             "counts oracle static": CountStream.bpc(d["oracle"]),
             "counts oracle adapting": CountStream.bpc(adapted(ids, d["oracle"])),
             **ppmd.get(lang, {})}
        rows[lang] = r
    systems = [k for k in next(iter(rows.values())) if k != "chars"]
    mac = {k: float(np.mean([r[k] for r in rows.values()])) for k in systems}
    print(f"## streaming bpc, {args.split}: the first {args.chars} characters of each language (all when shorter)")
    print(f"{'lang':<6}{'chars':>7}" + "".join(f"{k:>24}" for k in systems))
    for lang, r in list(rows.items()) + [("macro", {"chars": "", **mac})]:
        print(f"{lang:<6}{r['chars']:>7}" + "".join(f"{r[k]:>24.3f}" for k in systems))
    return {"model": args.model, "split": args.split, "chars": args.chars, "session": repr(WEIGHTS), "languages": rows,
            "macro": mac}


# ------------------------------------------------------------------------------------------ cost


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cmd_cost(args) -> dict:
    """Load time, size on disk, RSS, ms per keystroke (one thread) and prefixes/s in batch, on test text."""
    ds = open_data(args.data)
    rss0 = rss_mb()
    t0 = time.perf_counter()
    model = load_model(args.model)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    langs = model.languages
    # typing: each language's test text from its start, one key at a time (feed), after a warm-up
    per_key = []
    for lang in langs:
        ids = ds.split(lang, "test")[:args.keys].astype(np.int64)
        st, _ = model.feed(model.start(), np.array([model.vocab.stoi["\n"]]))
        for x in ids:
            t = time.perf_counter()
            st, _ = model.feed(st, np.array([x]))
            per_key.append(time.perf_counter() - t)
    per_key = np.array(per_key[len(langs):]) * 1e3
    # batch: random full-length test contexts (no shared windows), and typing traces (every prefix of a text)
    ctx = []
    for lang in langs:
        arr = ds.split(lang, "test")
        for p in rng.integers(model.context, len(arr), size=args.batch // len(langs)):
            ctx.append(arr[p - model.context:p].astype(np.int64))
    t = time.perf_counter()
    model.logprobs(ctx)
    rand_ps = len(ctx) / (time.perf_counter() - t)
    seq = ds.split("en", "test")[:args.batch].astype(np.int64)
    t = time.perf_counter()
    model.logprobs_at(seq, np.arange(seq.size))
    long_ps = seq.size / (time.perf_counter() - t)
    
    trace = [tail(seq, p, model.context, model.vocab.stoi["\n"]) for p in range(seq.size)]
    t = time.perf_counter()
    model.logprobs(trace)
    trace_ps = seq.size / (time.perf_counter() - t)
    res = {"model": args.model, "load_s": load_s, "disk_mb": folder_bytes(args.model) / 1e6,
           "rss_mb_after_load": rss0 and rss_mb(), "rss_mb_growth": rss_mb() - rss0,
           "key_ms_p50": float(np.percentile(per_key, 50)), "key_ms_p99": float(np.percentile(per_key, 99)),
           "keys": int(per_key.size), "batch_random_prefixes_per_s": rand_ps, "batch_trace_prefixes_per_s": trace_ps,
           "long_text_positions_per_s": long_ps, "load_avg_1min": os.getloadavg()[0],
           "context": model.context}
    for k, v in res.items():
        print(f"{k:>30}: {v:.3f}" if isinstance(v, float) else f"{k:>30}: {v}")
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["oracle", "tune", "size", "static", "stream", "cost", "switch"])
    ap.add_argument("--data", default="/work/main/data/dasher")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--positions", type=int, default=2000)
    ap.add_argument("--orders", default="5,6,7,8,9,10,12")
    ap.add_argument("--kinds", default="kn,ppm")
    ap.add_argument("--cutoffs", default=";".join(CUTOFF_SETS))
    ap.add_argument("--bits", default="32,16,8")
    ap.add_argument("--prune", default="0")
    ap.add_argument("--model", default="/work/runs/counts/kn8_p045")
    ap.add_argument("--chars", type=int, default=20000)
    ap.add_argument("--cache", default="/work/runs/counts/cache")
    ap.add_argument("--ppmd", action="store_true")
    ap.add_argument("--splits", default="dev,test", help="static: the splits to report")
    ap.add_argument("--grid", default="window=128;window=64;window=32;window=64,id_order=4;window=64,id_order=3;"
                    "window=64,id_order=3,min_weight=0.001;window=64,id_order=3,min_weight=0.01",
                    help="tune: ';'-separated posterior settings (k=v,...) over the model's own")
    ap.add_argument("--keys", type=int, default=300, help="cost: keystrokes per language")
    ap.add_argument("--batch", type=int, default=2400, help="cost: prefixes in the batch measurements")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    res = {"oracle": cmd_oracle, "size": cmd_size, "tune": cmd_tune, "static": cmd_static, "switch": cmd_switch, "stream": cmd_stream, "cost": cmd_cost}[args.cmd](args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
