"""The count model's fitting job: per-language n-gram counts of a data dir -> a count model folder.

`python -m nextchar.train_counts --data DATA --out DIR [options]`; the defaults are the configuration chosen on
Dasher dev (docs/counts.md).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from nextchar import safefs
from nextchar.count_tables import KINDS, CountTables, language_terms
from nextchar.counts import CountModel, CountsConfig, PosteriorConfig, save_model
from nextchar.errors import UserError
from nextchar.files import folder_bytes
from nextchar.ngram import NGramModel
from nextchar.vocab import Vocab


def fit_languages(data: str | Path, max_order: int, languages: list[str] | None = None
                  ) -> tuple[list[NGramModel], list[str], Vocab, list[int]]:
    """One NGramModel per language of a prepared data dir, fitted on START + its train split."""
    from nextchar.data import open_data

    ds = open_data(data)
    langs = languages or ds.languages
    start = ds.vocab.stoi["\n"]
    models, sizes = [], []
    for lang in langs:
        s = np.concatenate(([start], ds.split(lang, "train"))).astype(np.int64)
        models.append(NGramModel.fit([s], ds.vocab.size, max_order))
        sizes.append(int(s.size - 1))
    return models, list(langs), ds.vocab, sizes


def build_model(models: list[NGramModel], vocab: Vocab, languages: list[str], config: CountsConfig,
                lang_chars: list[int] | None = None) -> CountModel:
    """A CountModel of fitted per-language models under config (order, kind, cutoffs, bits, posterior)."""
    config.check()
    terms = [language_terms(m, config.order, config.kind, config.ppm_alpha, config.ppm_beta, config.cutoffs,
                            config.prune) for m in models]
    tables = CountTables.merge(terms, vocab.size, config.bits)
    return CountModel(tables, vocab, languages, config, lang_chars)


def train_counts(data: str | Path, out: str | Path, config: CountsConfig | None = None) -> dict:
    """Fit per-language count tables on a data dir's train splits and write the model folder `out`.

    Returns a summary (languages, entries, bytes on disk, seconds). The folder must not hold a model yet.
    """
    config = config or CountsConfig()
    config.check()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: is a file, not a model folder (use another --out)")
    if (out / "config.json").exists():
        raise UserError(f"{out}: already holds a model (use another --out)")
    t0 = time.time()
    models, langs, vocab, sizes = fit_languages(data, config.order)
    model = build_model(models, vocab, langs, config, sizes)
    fit_s = time.time() - t0
    out.mkdir(parents=True, exist_ok=True)
    with safefs.locked(out / "train.lock", "nextchar train --model counts"):  # one writer per folder
        if (out / "config.json").exists():
            raise UserError(f"{out}: already holds a model (use another --out)")
        save_model(model, out, {"data": str(Path(data).resolve())})  # config.json last: a kill leaves no model
    info = {"out": str(out), "languages": len(langs), "entries": model.tables.n_entries,
            "bytes": folder_bytes(out), "fit_seconds": round(fit_s, 1), "context": model.context}
    print(json.dumps(info))
    return info


def main(argv: list[str] | None = None) -> int:
    """`python -m nextchar.train_counts --data DATA --out DIR [...]`: the fitting job from the command line."""
    import argparse
    import sys

    d = CountsConfig()
    p = PosteriorConfig()
    ap = argparse.ArgumentParser(prog="python -m nextchar.train_counts", description=train_counts.__doc__)
    ap.add_argument("--data", required=True, help="prepared data dir (its language folders are the languages)")
    ap.add_argument("--out", required=True, help="new model folder")
    ap.add_argument("--order", type=int, default=d.order)
    ap.add_argument("--kind", choices=KINDS, default=d.kind)
    ap.add_argument("--prune", type=float, default=d.prune, help="likelihood pruning threshold in nats (0: off)")
    ap.add_argument("--cutoffs", default="", help="minimum raw count per order, comma-separated (e.g. 1,1,1,2)")
    ap.add_argument("--bits", type=int, default=d.bits, choices=(8, 16, 32))
    ap.add_argument("--window", type=int, default=p.window)
    ap.add_argument("--decay", type=float, default=p.decay)
    ap.add_argument("--temperature", type=float, default=p.temperature)
    ap.add_argument("--floor", type=float, default=p.floor)
    ap.add_argument("--prior", choices=("uniform", "size"), default=p.prior)
    ap.add_argument("--id-order", type=int, default=p.id_order)
    ap.add_argument("--min-weight", type=float, default=p.min_weight)
    a = ap.parse_args(argv)
    try:
        cut = tuple(int(x) for x in a.cutoffs.split(",") if x.strip())
    except ValueError:
        print(f"error: --cutoffs {a.cutoffs!r}: comma-separated integers", file=sys.stderr)
        return 2
    try:
        post = PosteriorConfig(a.window, a.decay, a.temperature, a.floor, a.prior, a.id_order, a.min_weight)
        cfg = CountsConfig(order=a.order, kind=a.kind, cutoffs=cut, prune=a.prune, bits=a.bits, posterior=post)
        train_counts(a.data, a.out, cfg)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
