"""Gain of per-session adaptation: simulate a user typing text; top-1/top-3 and bpc with and without the cache."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nextchar import engine
from nextchar.adapt import WEIGHTS, format_weights, mix, simulate_typing, tune
from nextchar.data import open_data
from nextchar.errors import UserError

# Text an AAC user might write over a day: a few unusual names, places and drug names, each coming back.
PASSAGES = {
    "names-en": (
        "Dear Xiomara, thank you for visiting on Sunday. Dr. Okonkwo-Reyes says the levetiracetam dose stays "
        "the same until Thursday. Please ask Thorbjørn whether he can drive me to Llanfairfechan on Friday; "
        "if Thorbjørn is busy, Zbigniew offered to take me instead. Xiomara, could you bring the blue folder "
        "from Dr. Okonkwo-Reyes's office? Zbigniew thinks the appointment in Llanfairfechan is at ten. "
        "I told Dr. Okonkwo-Reyes that the levetiracetam makes me tired in the mornings. Thorbjørn and "
        "Xiomara both said I should write it down, so here it is: levetiracetam, 500 mg, twice a day. "
        "Zbigniew will call Thorbjørn tonight. Love to Xiomara and to Zbigniew, and see you in Llanfairfechan."
    ),
    "names-de": (
        "Liebe Wiebke, morgen kommt Frau Grzybowski-Haverkamp um neun. Sie bringt die Unterlagen von "
        "Dr. Tschirnhaus mit. Wiebke, kannst du bitte Frau Grzybowski-Haverkamp sagen, dass Dr. Tschirnhaus "
        "das Rezept für Pregabalin schon geschickt hat? Das Pregabalin hole ich in Quedlinburg ab. Am Samstag "
        "fahren Wiebke und ich nach Quedlinburg, und Dr. Tschirnhaus meint, das sei eine gute Idee. "
        "Grüße an Frau Grzybowski-Haverkamp und bis bald in Quedlinburg, Wiebke!"
    ),
}


def score(pred: engine.Predictor, ids: np.ndarray, specials: np.ndarray, stride: int | None = None
          ) -> dict[str, dict[str, float]]:
    """Typing ids from an empty session: top-1/top-3/bpc of the plain model and of the adapted mixture."""
    sums = {"plain": np.zeros(3), "adapted": np.zeros(3)}  # top-1 hits, top-3 hits, nats
    n_special = int(specials.sum())
    for step in simulate_typing(pred, ids, WEIGHTS.max_order, stride=stride):
        adapted = np.stack([mix(m, c, WEIGHTS, n_special) for m, c in zip(step.model, step.caches)])  # (n, V)
        rows = np.arange(step.targets.size)
        for name, probs in (("plain", step.model), ("adapted", adapted)):
            p_true = probs[rows, step.targets]
            ranked = np.where(specials, -1.0, probs)  # a special is never suggested (as in `nextchar eval`)
            top = np.argsort(-ranked, axis=1, kind="stable")[:, :3]  # (n, 3)
            sums[name] += [(top[:, 0] == step.targets).sum(), (top == step.targets[:, None]).any(axis=1).sum(),
                           -np.log(np.maximum(p_true, 1e-300)).sum()]
    n = max(ids.size, 1)
    return {name: {"top1": s[0] / n, "top3": s[1] / n, "bpc": s[2] / n / math.log(2)} for name, s in sums.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", type=Path, required=True, help="Run directory (Transformer or n-gram).")
    ap.add_argument("--data", type=Path, help="Prepared data dir (default: the one the run was trained on).")
    ap.add_argument("--split", default="test", help="Split whose text is typed (default test; tuning uses dev).")
    ap.add_argument("--chars", type=int, default=3000, help="Characters typed per language, from the split's start.")
    ap.add_argument("--langs", help="Comma-separated languages (default: all).")
    ap.add_argument("--tune", action="store_true", help="Re-tune the weights on dev first and print them.")
    ap.add_argument("--tune-chars", type=int, default=20000, help="Dev characters per language for --tune.")
    ap.add_argument("--stride", type=int, default=0,
                    help="Typing window stride for the model (0: half its context, as `nextchar eval --stream`).")
    ap.add_argument("--json", type=Path, help="Also write the results here.")
    args = ap.parse_args()
    torch.set_num_threads(1)
    try:
        pred = engine.load(args.run)
        data = args.data or Path(json.loads((args.run / "config.json").read_text(encoding="utf-8"))["data"])
        if args.tune:
            t = time.perf_counter()
            w, summary = tune(pred, data, chars=args.tune_chars, stride=args.stride or max(1, pred.context // 2))
            print(f"tuned on dev in {time.perf_counter() - t:.0f}s: {summary}\n{format_weights(w)}\n")
            print("(the table below still uses the module's weights; paste the above into adapt.py to use these)\n")
        ds = open_data(data)
        langs = args.langs.split(",") if args.langs else ds.languages
        texts = {lang: np.asarray(ds.split(lang, args.split)[:args.chars]) for lang in langs}
    except UserError as e:
        sys.exit(f"error: {e}")
    texts.update({name: pred.vocab.encode(text) for name, text in PASSAGES.items()})
    specials = np.array([pred.vocab.is_special(i) for i in range(pred.vocab.size)])

    print(f"model {pred.run_id}, {args.split} text: first {args.chars} characters per language, fresh session each")
    print(f"{'text':<10}{'n':>6}  {'top-1 plain':>11} {'adapted':>8}  {'top-3 plain':>11} {'adapted':>8}  "
          f"{'bpc plain':>9} {'adapted':>8}")
    results, t0 = {}, time.perf_counter()
    for name, ids in texts.items():
        r = results[name] = {**score(pred, ids, specials, args.stride or max(1, pred.context // 2)),
                             "n": int(ids.size)}
        p, a = r["plain"], r["adapted"]
        print(f"{name:<10}{ids.size:>6}  {p['top1']:>11.2%} {a['top1']:>8.2%}  {p['top3']:>11.2%} {a['top3']:>8.2%}  "
              f"{p['bpc']:>9.3f} {a['bpc']:>8.3f}", flush=True)
    corpus = [n for n in results if n not in PASSAGES]
    if corpus:
        macro = {k: {m: float(np.mean([results[n][k][m] for n in corpus])) for m in ("top1", "top3", "bpc")}
                 for k in ("plain", "adapted")}
        p, a = macro["plain"], macro["adapted"]
        print(f"{'macro':<10}{'':>6}  {p['top1']:>11.2%} {a['top1']:>8.2%}  {p['top3']:>11.2%} {a['top3']:>8.2%}  "
              f"{p['bpc']:>9.3f} {a['bpc']:>8.3f}   (over the {len(corpus)} {args.split} texts)")
        results["macro"] = macro
    print(f"{time.perf_counter() - t0:.0f}s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
