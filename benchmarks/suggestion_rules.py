"""Top-1/top-3 before and after the mark rule (engine.base.AttachRule), in one pass over the same positions.

"Before" ranks with the context-free mask (no specials or controls: what evaluation counted until issue 10's
part 8), "after" with the mask every surface now shows (Predictor.suggestible_after: a mark only where it can
attach). Also counts the positions whose top-3 the rule changes, and the hits it gains or loses there (a hit is
lost only where the text itself has a mark where none can attach).

    python benchmarks/suggestion_rules.py --run default --data data/dasher --split test --positions 2000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from nextchar import engine
from nextchar.data import eval_positions, open_data
from nextchar.engine.base import top_ids
from nextchar.engine.folder import data_dir, describe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="default", help="run or model folder, or a shipped model's name")
    ap.add_argument("--data", default=None, help="data directory (default: the run's own)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--positions", type=int, default=2000, help="evenly spaced positions per language")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()

    folder = engine.resolve(args.run)
    pred = engine.load(folder, threads=args.threads)
    ds = open_data(data_dir(describe(folder), args.data))
    static = pred.suggestible()  # (V,)
    t0 = time.perf_counter()
    rows = []  # (lang, counts: n, top-1 before, top-3 before, top-1 after, top-3 after, changed, lost, gained)
    for lang in ds.languages:
        arr = ds.split(lang, args.split)
        pos = eval_positions(len(arr), args.positions)
        c = np.zeros(8, dtype=np.int64)
        for i in range(0, len(pos), args.batch):
            chunk = pos[i:i + args.batch]
            hist = [arr[:p] for p in chunk.tolist()]
            probs = np.exp(pred.logprobs(hist))  # (n, V)
            y = arr[chunk].astype(np.int64)  # (n,)
            before = top_ids(probs, static, 3)  # (n, 3)
            after = top_ids(probs, pred.suggestible_after(hist), 3)  # (n, 3)
            hb, ha = (before == y[:, None]).any(axis=1), (after == y[:, None]).any(axis=1)  # (n,)
            c += [len(chunk), (before[:, 0] == y).sum(), hb.sum(), (after[:, 0] == y).sum(), ha.sum(),
                  (before != after).any(axis=1).sum(), (hb & ~ha).sum(), (ha & ~hb).sum()]
        rows.append((lang, c))
    print(f"{folder.name}: {args.split} split, {args.positions} positions per language, "
          f"{time.perf_counter() - t0:.0f} s")
    print(f"{'lang':<6}{'n':>6}{'top-1 before':>14}{'after':>8}{'top-3 before':>14}{'after':>8}"
          f"{'top-3 changed':>15}{'hits lost':>11}{'gained':>8}")
    macro = np.zeros(4)
    for lang, c in rows:
        n = c[0]
        r = c[[1, 3, 2, 4]] / n
        macro += r
        print(f"{lang:<6}{n:>6}{r[0]:>14.2%}{r[1]:>8.2%}{r[2]:>14.2%}{r[3]:>8.2%}{c[5]:>15}{c[6]:>11}{c[7]:>8}")
    macro /= len(rows)
    n = sum(c[0] for _, c in rows)
    micro = np.array([sum(c[i] for _, c in rows) for i in (1, 3, 2, 4)]) / n
    changed = [sum(c[i] for _, c in rows) for i in (5, 6, 7)]
    print(f"{'macro':<6}{'':>6}{macro[0]:>14.2%}{macro[1]:>8.2%}{macro[2]:>14.2%}{macro[3]:>8.2%}")
    print(f"{'micro':<6}{n:>6}{micro[0]:>14.2%}{micro[1]:>8.2%}{micro[2]:>14.2%}{micro[3]:>8.2%}"
          f"{changed[0]:>15}{changed[1]:>11}{changed[2]:>8}")


if __name__ == "__main__":
    main()
