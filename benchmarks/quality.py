"""Every predictor of issue 12 on the same positions: static top-1/top-3/bpc and streaming bpc, per language and macro.

    python benchmarks/quality.py --data data/dasher --transformer RUN --counts RUN [--default MODEL]

Systems (static: the `nextchar eval` positions of --split, 2,000 per language, each predicted from the split's
past alone; hits counted as the engine suggests: specials and control characters are never suggested):
- unigram: character frequencies of all languages' training text (add-one over the vocabulary);
- multilingual KN8: one interpolated Kneser-Ney model of all languages (`nextchar train --model ngram --order 8`);
- KN8 told the language (oracle): each language's own order-8 KN model, unpruned, float32;
- the language-aware count model (--counts), the Transformer alone (--transformer);
- every combination rule of `nextchar mix` (mix.METHODS), each fitted on the dev split (mix.fit_positions) and
  then read on --split: the Transformer with the count model; also the linear rule with multilingual KN8 (the
  quickstart's old mixture);
- the shipped default model (--default, a folder or a name: what `nextchar predict` uses without --run).

Streaming (the first --chars characters of each language's --split text, read in order, `nextchar eval --stream`):
each system's static stream (through the typing window of stride context/2) and adapting (the session's cache
model, adapt.py, learning each character after predicting it); PPMd var. H (pyppmd, order 12) primed on the
language's own training text and on all 24 (benchmarks/counts_eval.py's code and cache).

Heavy intermediate results (log-probabilities, fitted rules, PPMd bits) are cached in --cache; delete it to
recompute. Prints Markdown (docs/quality.md is this script's output).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from nextchar import adapt, engine
from nextchar.data import eval_positions, open_data
from nextchar.engine.base import window
from nextchar.engine.mixture_backend import Rule
from nextchar.evaluate import stream_stride, suggestion_hits
from nextchar.mix import METHODS, component_logprobs, fit_rule

sys.path.insert(0, str(Path(__file__).parent))
from counts_eval import ppmd_rows  # noqa: E402  (benchmarks/ is not a package)

LN2 = math.log(2)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ the systems


class Unigram(engine.Predictor):
    """Character frequencies of every language's training text, add-one smoothed (a context-free floor)."""

    def __init__(self, ds):
        counts = np.ones(ds.vocab.size)
        for lang in ds.languages:
            counts += np.bincount(ds.split(lang, "train"), minlength=ds.vocab.size)
        super().__init__(ds.vocab, 1, "unigram")
        self.lp = np.log(counts / counts.sum())

    def logprobs(self, contexts):
        return np.tile(self.lp, (len(contexts), 1))


class Oracle(engine.Predictor):
    """Each language's own order-8 KN table of a CountModel: told the language (set .lang before use)."""

    def __init__(self, model):
        super().__init__(model.vocab, model.order - 1, "oracle")
        self.model, self.lang = model, 0

    def logprobs(self, contexts):
        k = max(self.model.order - 1, 1)
        hist = np.zeros((len(contexts), k), dtype=np.int64)
        lens = np.zeros(len(contexts), dtype=np.int64)
        for i, h in enumerate(contexts):
            w = window(h, self.context, self.start_id)[::-1][:k]  # newest first
            hist[i, :len(w)], lens[i] = w, len(w)
        tab = self.model.tables
        walk = tab.walk(hist, lens, np.full(len(contexts), self.lang), self.model.order)
        return np.log(tab.dists(walk, len(contexts)))


def multilingual_kn(ds, cache: Path, order: int = 8) -> engine.Predictor:
    from nextchar.engine.ngram_backend import NGramPredictor
    from nextchar.ngram import NGramModel

    path = cache / f"kn{order}_multilingual.npz"
    if path.exists():
        m = NGramModel.load(path)
    else:
        start = ds.vocab.stoi["\n"]
        m = NGramModel.fit([np.concatenate(([start], ds.split(lang, "train"))).astype(np.int64)
                            for lang in ds.languages], ds.vocab.size, order)
        m.save(path)
    return NGramPredictor(m, ds.vocab, f"kn{order}")


def oracle_kn(data) -> Oracle:
    from nextchar.counts import CountsConfig
    from nextchar.train_counts import build_model, fit_languages

    models, langs, vocab, sizes = fit_languages(data, 8)
    return Oracle(build_model(models, vocab, langs, CountsConfig(order=8, kind="kn", bits=32, prune=0.0), sizes))


# ------------------------------------------------------------------------------------------ measuring


def row(h: np.ndarray, n: int) -> dict:
    return {"n": n, "top1": h[0] / n, "top3": h[1] / n, "bpc": h[2] / n / LN2}


def macro(langs: dict) -> dict:
    return {k: float(np.mean([r[k] for r in langs.values()])) for k in ("top1", "top3", "bpc")}


def static_logprobs(pred, ds, split: str, positions: int, lang_index: bool = False) -> dict[str, np.ndarray]:
    """Per language: log-probabilities (N, V) float32 at the eval positions of split."""
    out = {}
    for li, lang in enumerate(ds.languages):
        if lang_index:
            pred.lang = li
        arr = ds.split(lang, split)
        pos = eval_positions(len(arr), positions)
        out[lang] = np.concatenate([pred.logprobs([arr[:p] for p in pos[i:i + 1024].tolist()]).astype(np.float32)
                                    for i in range(0, len(pos), 1024)])
    return out


def cached(path: Path, compute):
    """np.savez cache of a dict of arrays."""
    if path.exists():
        z = np.load(path)
        return {k: z[k] for k in z.files}
    t = time.time()
    res = compute()
    np.savez(path, **res)
    log(f"computed {path.name} in {time.time() - t:.0f}s")
    return res


def score_static(lps: dict, ds, split: str, positions: int, ok) -> dict:
    """ok(histories) -> the suggestible masks (N, V) there (the engine's ranking rules, as `nextchar eval`)."""
    langs = {}
    for lang, lp in lps.items():
        arr = ds.split(lang, split)
        pos = eval_positions(len(arr), positions)
        y = arr[pos].astype(np.int64)
        langs[lang] = row(np.array(suggestion_hits(lp.astype(np.float64), y, ok([arr[:p] for p in pos.tolist()]))), len(y))
    return {"languages": langs, "macro": macro(langs)}


def stream_logprobs(pred, ids: np.ndarray, stride: int) -> np.ndarray:
    """(T, V) float32: every prefix of ids through the typing window of stride."""
    win = pred.windowed(stride)
    return np.concatenate([win.logprobs([ids[:p] for p in range(lo, min(len(ids), lo + 2048))]).astype(np.float32)
                           for lo in range(0, len(ids), 2048)])


def score_stream(lp: np.ndarray, ids: np.ndarray, ok, start_id: int, n_special: int, adapting: bool) -> np.ndarray:
    """hits of the static stream lp (T, V), or of the adapted one (the session's cache model reading the text)."""
    h = np.zeros(3)
    for lo in range(0, len(ids), 2048):
        masks = ok([ids[:p] for p in range(lo, min(len(ids), lo + 2048))])  # (n, V)
        if not adapting:
            h += suggestion_hits(lp[lo:lo + 2048].astype(np.float64), ids[lo:lo + len(masks)], masks)
            continue
        probs = adapt.stream_probs(np.exp(lp[lo:lo + 2048].astype(np.float64)), ids, lo, start_id, n_special)
        with np.errstate(divide="ignore"):
            h += suggestion_hits(np.log(probs), ids[lo:lo + len(probs)], masks)
    return h


# ------------------------------------------------------------------------------------------ tables


def summary_table(static: dict, stream: dict, ppmd: dict) -> str:
    lines = ["| system | top-1 | top-3 | bpc | stream bpc, static | stream bpc, adapting | stream top-3, adapting |",
             "|---|---|---|---|---|---|---|"]
    for name in list(static) + [s for s in stream if s not in static]:
        m = static.get(name, {}).get("macro")
        st = stream.get(name, {})
        cells = [f"{m['top1']:.2%}", f"{m['top3']:.2%}", f"{m['bpc']:.3f}"] if m else ["—"] * 3
        cells += [f"{st['static']['macro']['bpc']:.3f}" if "static" in st else "—",
                  f"{st['adapting']['macro']['bpc']:.3f}" if "adapting" in st else "—",
                  f"{st['adapting']['macro']['top3']:.2%}" if "adapting" in st else "—"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name in ("ppmd own", "ppmd all"):
        if ppmd:
            v = np.mean([r[name] for r in ppmd.values()])
            lines.append(f"| PPMd var. H order 12, primed on {'its own language' if name == 'ppmd own' else 'all 24 languages'}"
                         f" | — | — | — | — | {v:.3f} | — |")
    return "\n".join(lines)


def per_language(title: str, cols: dict[str, dict], key: str, fmt: str) -> str:
    langs = list(next(iter(cols.values())))
    lines = [f"### {title}", "", "| lang | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for lang in langs + ["macro"]:
        vals = [np.mean([r[key] for r in c.values()]) if lang == "macro" else c[lang][key] for c in cols.values()]
        cells = [format(v, fmt) for v in vals]
        lines.append(f"| {'**macro**' if lang == 'macro' else lang} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ main


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--transformer", required=True, help="Transformer run or model folder")
    ap.add_argument("--counts", required=True, help="count model folder")
    ap.add_argument("--default", default="default", help="the shipped default model (folder or name)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--positions", type=int, default=2000, help="static positions per language")
    ap.add_argument("--fit-positions", type=int, default=2000, help="dev positions per language for the rules")
    ap.add_argument("--chars", type=int, default=20000, help="streaming: characters per language")
    ap.add_argument("--cache", default="runs/quality-cache")
    ap.add_argument("--ppmd-cache", default=None, help="PPMd bits JSON (default: in --cache)")
    ap.add_argument("--no-stream", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    t0 = time.time()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    ds = open_data(args.data)
    tr, cm = engine.load(args.transformer, threads=1), engine.load(args.counts)
    default = engine.load(args.default, threads=1)
    ok = tr.suggestible_after  # histories -> masks (N, V): what every surface may suggest there
    sp, n = args.split, args.positions
    tag = lambda p: Path(engine.resolve(p)).resolve().name  # noqa: E731
    T, C = tag(args.transformer), tag(args.counts)

    # -- the rules, fitted on dev
    def dev_parts():
        la, y, _ = component_logprobs(tr, ds, "dev", args.fit_positions)
        lb, _, _ = component_logprobs(cm, ds, "dev", args.fit_positions)
        return {"la": la, "lb": lb, "y": y}

    dev = cached(cache / f"dev_fit_{T}_{C}_{args.fit_positions}.npz", dev_parts)
    rules = {}
    for method in METHODS:
        path = cache / f"rule_{T}_{C}_{method}_{args.fit_positions}.json"
        if not path.exists():
            t = time.time()
            rule, _ = fit_rule(dev["la"], dev["lb"], dev["y"], method)
            path.write_text(json.dumps(rule.to_dict()))
            log(f"fitted {method} in {time.time() - t:.0f}s")
        rules[method] = Rule.from_dict(json.loads(path.read_text()))
    kn8 = multilingual_kn(ds, cache)

    def dev_kn8():
        lb, _, _ = component_logprobs(kn8, ds, "dev", args.fit_positions)
        return {"lb": lb}

    kn8_rule, _ = fit_rule(dev["la"], cached(cache / f"dev_fit_kn8_{args.fit_positions}.npz", dev_kn8)["lb"],
                           dev["y"], "linear")
    del dev

    # -- choosing on dev: each rule read at the dev positions of `nextchar eval` (between those it was fitted on)
    dev_parts_eval = {"tr": cached(cache / f"static_{T}_dev_{n}.npz", lambda: static_logprobs(tr, ds, "dev", n)),
                      "counts": cached(cache / f"static_{C}_dev_{n}.npz", lambda: static_logprobs(cm, ds, "dev", n))}
    choosing = {"Transformer alone": score_static(dev_parts_eval["tr"], ds, "dev", n, ok),
                "language-aware count model": score_static(dev_parts_eval["counts"], ds, "dev", n, ok)}

    # -- static, on the same positions
    def lps_of(name, pred, lang_index=False):
        return cached(cache / f"static_{name}_{sp}_{n}.npz", lambda: static_logprobs(pred, ds, sp, n, lang_index))

    parts = {"tr": lps_of(T, tr), "counts": lps_of(C, cm), "kn8": lps_of("kn8", kn8)}
    static = {"unigram": score_static(lps_of("unigram", Unigram(ds)), ds, sp, n, ok),
              "multilingual KN8": score_static(parts["kn8"], ds, sp, n, ok)}
    oracle_path = cache / f"static_oracle_kn8_{sp}_{n}.npz"
    static["KN8 told the language (oracle)"] = score_static(
        cached(oracle_path, lambda: static_logprobs(oracle_kn(args.data), ds, sp, n, lang_index=True)), ds, sp, n, ok)
    static["language-aware count model"] = score_static(parts["counts"], ds, sp, n, ok)
    static["Transformer alone"] = score_static(parts["tr"], ds, sp, n, ok)
    static["Transformer + multilingual KN8, one weight"] = score_static(
        {lang: kn8_rule.combine(parts["tr"][lang], parts["kn8"][lang]) for lang in ds.languages}, ds, sp, n, ok)
    names = {"linear": "Transformer + counts, one weight", "cells": "Transformer + counts, weight per cell",
             "loglinear": "Transformer + counts, log-linear per cell"}
    for method, rule in rules.items():
        choosing[names[method]] = score_static(
            {lang: rule.combine(dev_parts_eval["tr"][lang], dev_parts_eval["counts"][lang]) for lang in ds.languages},
            ds, "dev", n, ok)
        static[names[method]] = score_static(
            {lang: rule.combine(parts["tr"][lang], parts["counts"][lang]) for lang in ds.languages}, ds, sp, n, ok)
    own = Path(engine.resolve(args.default)) / f"eval_{sp}.json"
    own_res = json.loads(own.read_text()) if own.exists() else {}
    if own_res.get("positions") == n:  # its card's figures: `nextchar eval`, the same positions and rules
        static["shipped default"] = {"languages": own_res["languages"], "macro": macro(own_res["languages"])}
    else:
        static["shipped default"] = score_static(lps_of(f"default_{tag(args.default)}", default), ds, sp, n, ok)

    # -- streaming
    stream, ppmd = {}, {}
    if not args.no_stream:
        start, n_special = tr.start_id, adapt.count_specials(tr.vocab)
        s_tr, s_def = stream_stride(tr), stream_stride(default)
        streams = {"tr": cached(cache / f"stream_{T}_{sp}_{args.chars}_s{s_tr}.npz",
                                lambda: {lang: stream_logprobs(tr, ds.split(lang, sp)[:args.chars].astype(np.int64),
                                                               s_tr) for lang in ds.languages}),
                   "counts": cached(cache / f"stream_{C}_{sp}_{args.chars}.npz",
                                    lambda: {lang: stream_logprobs(cm, ds.split(lang, sp)[:args.chars].astype(np.int64),
                                                                   1) for lang in ds.languages})}
        systems = {"language-aware count model": lambda lang: streams["counts"][lang],
                   "Transformer alone": lambda lang: streams["tr"][lang]}
        for method, rule in rules.items():
            systems[names[method]] = (lambda r: lambda lang: r.combine(streams["tr"][lang], streams["counts"][lang]))(rule)
        own = Path(engine.resolve(args.default)) / f"eval_stream_{sp}.json"
        own_res = json.loads(own.read_text()) if own.exists() else {}
        if own_res.get("chars") == args.chars and own_res.get("stride") == s_def and own_res.get("adapt"):
            # its card's figures: `nextchar eval --stream`, the same characters, window and adaptation
            stream["shipped default"] = {
                "static": {"languages": {k: v["static"] for k, v in own_res["languages"].items()},
                           "macro": own_res["macro_static"]},
                "adapting": {"languages": own_res["languages"], "macro": own_res["macro"]}}
        else:
            def_path = cache / f"stream_default_{tag(args.default)}_{sp}_{args.chars}_s{s_def}.npz"
            streams["default"] = cached(def_path, lambda: {lang: stream_logprobs(
                default, ds.split(lang, sp)[:args.chars].astype(np.int64), s_def) for lang in ds.languages})
            systems["shipped default"] = lambda lang: streams["default"][lang]
        for name, get in systems.items():
            path = cache / f"streamscore_{name.replace(' ', '_').replace(',', '')}_{T}_{C}_{sp}_{args.chars}.json"
            if path.exists() and name != "shipped default":
                stream[name] = json.loads(path.read_text())
                continue
            t = time.time()
            res = {}
            for mode in ("static", "adapting"):
                langs = {}
                for lang in ds.languages:
                    ids = ds.split(lang, sp)[:args.chars].astype(np.int64)
                    langs[lang] = row(score_stream(get(lang), ids, ok, start, n_special, mode == "adapting"), len(ids))
                res[mode] = {"languages": langs, "macro": macro(langs)}
            stream[name] = res
            path.write_text(json.dumps(res))
            log(f"streamed {name} in {time.time() - t:.0f}s")
        ppmd = ppmd_rows(ds, sp, args.chars, Path(args.ppmd_cache) if args.ppmd_cache else
                         cache / f"ppmd_{sp}_{args.chars}.json")

    # -- report
    cmd = "python benchmarks/quality.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"# Quality of every predictor ({sp} split)\n")
    print(f"Command: `{cmd}` ({time.time() - t0:.0f} s with its cache; load average {os.getloadavg()[0]:.1f}).\n")
    print(f"Static: {n} positions per language (`nextchar eval`); streaming: the first {args.chars:,} characters of "
          f"each language's {sp} text read in order (`nextchar eval --stream`; Transformer parts through the typing "
          f"window of stride context/2). Rules fitted on dev ({args.fit_positions} positions per language). "
          f"Macro over {len(ds.languages)} languages.\n")
    print("## Choosing on dev (macro; rules fitted on the dev positions between these)\n")
    print("| system | top-1 | top-3 | bpc |\n|---|---|---|---|")
    for name, r in choosing.items():
        m = r["macro"]
        print(f"| {name} | {m['top1']:.2%} | {m['top3']:.2%} | {m['bpc']:.3f} |")
    print()
    print("## Summary (macro)\n")
    print(summary_table(static, stream, ppmd))
    print()
    print("## Per language\n")
    print(per_language(f"Static top-3 ({sp})", {k: v["languages"] for k, v in static.items()}, "top3", ".2%"))
    print()
    print(per_language(f"Static bits per character ({sp})", {k: v["languages"] for k, v in static.items()}, "bpc",
                       ".3f"))
    if stream:
        print()
        cols = {f"{k}, adapting": v["adapting"]["languages"] for k, v in stream.items()}
        if ppmd:
            cols["PPMd own"] = {lang: {"bpc": r["ppmd own"]} for lang, r in ppmd.items()}
            cols["PPMd all"] = {lang: {"bpc": r["ppmd all"]} for lang, r in ppmd.items()}
        print(per_language(f"Streaming bits per character ({sp}, first {args.chars:,} characters)", cols, "bpc", ".3f"))
    if args.json:
        Path(args.json).write_text(json.dumps({"static": static, "stream": stream, "ppmd": ppmd}, indent=1))


if __name__ == "__main__":
    main()
