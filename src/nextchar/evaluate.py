"""Per-language evaluation: top-1/top-3 accuracy, cross-entropy and bits per character on a split."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nextchar import checkpoint
from nextchar.data import DataSet, eval_positions, open_data
from nextchar.errors import UserError
from nextchar.predict import START, Predictor, split_context


def evaluate(pred: Predictor, ds: DataSet, split: str = "dev", positions: int = 2000,
             batch_size: int = 256) -> dict:
    """Metrics per language on N evenly spaced positions, each predicted from the same split's past only."""
    if pred.vocab.hash != ds.vocab.hash:
        raise UserError(f"{ds.path}: data vocabulary ({ds.vocab.hash}) differs from the model's ({pred.vocab.hash})")
    start_id = pred.vocab.stoi[START]
    never = np.array([pred.vocab.is_special(i) for i in range(pred.vocab.size)])
    langs = {}
    for lang in ds.languages:
        arr = ds.split(lang, split)
        pos = eval_positions(len(arr), positions)
        if len(pos) == 0:
            continue
        ce = top1 = top3 = 0.0
        for i in range(0, len(pos), batch_size):
            chunk = pos[i:i + batch_size]
            lp = pred.logprobs([split_context(arr, int(p), pred.context, start_id) for p in chunk])  # (n, V)
            y = arr[chunk].astype(np.int64)  # (n,)
            ce -= lp[np.arange(len(chunk)), y].sum()
            lp[:, never] = -np.inf  # a special is never suggested, so a true <unk> is always a miss
            top = np.argpartition(-lp, 3, axis=1)[:, :3] if lp.shape[1] > 3 else np.argsort(-lp, axis=1)
            best = lp.argmax(axis=1)
            top1 += (best == y).sum()
            top3 += (top == y[:, None]).any(axis=1).sum()
        n = len(pos)
        langs[lang] = {"n": n, "top1": float(top1 / n), "top3": float(top3 / n), "ce": float(ce / n),
                       "bpc": float(ce / n / math.log(2))}
    if not langs:
        raise UserError(f"{ds.path}: the {split} split is empty for every language")
    keys = ("top1", "top3", "ce", "bpc")
    total = sum(m["n"] for m in langs.values())
    macro = {k: float(np.mean([m[k] for m in langs.values()])) for k in keys}
    micro = {k: float(sum(m[k] * m["n"] for m in langs.values()) / total) for k in keys}
    return {"split": split, "positions": positions, "languages": langs, "macro": macro, "micro": micro}


def format_table(res: dict) -> str:
    """The per-language table printed by `nextchar eval`."""
    lines = [f"{'lang':<8}{'n':>6}{'top-1':>9}{'top-3':>9}{'nats':>8}{'bpc':>8}"]
    rows = list(res["languages"].items()) + [("macro", res["macro"]), ("micro", res["micro"])]
    for name, m in rows:
        if name == "macro":
            lines.append("-" * len(lines[0]))
        n = f"{m['n']:>6}" if "n" in m else " " * 6
        lines.append(f"{name:<8}{n}{m['top1']:>9.2%}{m['top3']:>9.2%}{m['ce']:>8.3f}{m['bpc']:>8.3f}")
    return "\n".join(lines)


def eval_run(run: str | Path, split: str = "test", data: str | Path | None = None, positions: int = 2000,
             backend: str = "torch", device: str = "cpu") -> dict:
    """`nextchar eval`: evaluate a run's best checkpoint on a split and write RUN/eval_<split>.json."""
    if split not in ("dev", "test", "train"):
        raise UserError(f"--split {split!r}: choose dev or test")
    run = Path(run)
    pred = Predictor.load(run, backend=backend, device=device)
    cfg = checkpoint.read_json(run / "config.json", "run config")
    data = Path(data) if data is not None else Path(cfg.get("data", ""))
    ds = open_data(data)
    res = evaluate(pred, ds, split, positions)
    res["run"] = str(run)
    res["data"] = str(data)
    checkpoint.atomic_write_json(run / f"eval_{split}.json", res)
    return res
