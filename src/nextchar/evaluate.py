"""Per-language evaluation through the engine contract: top-1/top-3 accuracy, cross-entropy, bits per character.

Static (`evaluate`): evenly spaced positions, each predicted from the split's past alone. Streaming
(`evaluate_stream`): each language's text read in order from its start, every character predicted and then
learned by the session's adaptation (adapt.py), as a user's typing session would.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from nextchar import engine, models
from nextchar.data import DataSet, eval_positions, open_data
from nextchar.engine.base import top_ids
from nextchar.engine.folder import data_dir, describe
from nextchar.errors import UserError, check_int
from nextchar.files import atomic_write_json

SPLITS = ("dev", "test", "train")


def evaluate(pred: engine.Predictor, ds: DataSet, split: str = "dev", positions: int = 2000,
             batch_size: int = 256, progress: Callable[[str, int], None] | None = None) -> dict:
    """Metrics per language on N evenly spaced positions, each predicted from the same split's past only.

    Position p of a split is predicted from its history split[:p] (the paragraph start before the split's first
    character), read through the predictor's own window. A hit at top-k is the true id among the k ids the
    engine would suggest there (Predictor.suggestible_after and base.top_ids, the ranking every surface uses:
    specials and control characters never are, a mark only where it can attach, so a true newline or <unk> is
    always a miss). ce is in nats per character, bpc = ce / ln 2; macro is the mean over languages, micro over
    all positions. progress(lang, n) is called after each batch of n positions. Raises UserError for another
    vocabulary, an empty split, or positions / batch_size below 1.
    """
    positions = check_int(positions, "positions")
    batch_size = check_int(batch_size, "batch_size")
    ds.check_vocab(pred.vocab)
    langs = {}
    for lang in ds.languages:
        arr = ds.split(lang, split)
        pos = eval_positions(len(arr), positions)
        if len(pos) == 0:
            continue
        ce = top1 = top3 = 0.0
        for i in range(0, len(pos), batch_size):
            chunk = pos[i:i + batch_size]
            hist = [arr[:p] for p in chunk.tolist()]  # histories are views, never copied
            lp = pred.logprobs(hist)  # (n, V)
            y = arr[chunk].astype(np.int64)  # (n,)
            ce -= lp[np.arange(len(chunk)), y].sum()
            top = top_ids(np.exp(lp), pred.suggestible_after(hist), 3)  # (n, 3) what the engine suggests
            top1 += (top[:, 0] == y).sum()
            top3 += (top == y[:, None]).any(axis=1).sum()
            if progress is not None:
                progress(lang, len(chunk))
        n = len(pos)
        langs[lang] = {"n": n, "top1": float(top1 / n), "top3": float(top3 / n), "ce": float(ce / n),
                       "bpc": float(ce / n / math.log(2))}
    if not langs:
        raise UserError(f"{ds.path}: the {split} split is empty for every language")
    macro, micro = _summary(langs)
    return {"split": split, "positions": positions, "languages": langs, "macro": macro, "micro": micro}


def stream_stride(pred: engine.Predictor) -> int:
    """The typing window's stride a streaming evaluation reads through by default: half the longest context."""
    return max(1, pred.context // 2)


def suggestion_hits(lp: np.ndarray, y: np.ndarray, ok: np.ndarray) -> tuple[float, float, float]:
    """(top-1 hits, top-3 hits, nats) of log-probabilities lp (n, V) for targets y (n,), as `evaluate` counts;
    ok: the suggestible masks (n, V)."""
    top = top_ids(np.exp(lp), ok, 3)  # (n, 3) what the engine suggests
    return (float((top[:, 0] == y).sum()), float((top == y[:, None]).any(axis=1).sum()),
            float(-lp[np.arange(len(y)), y].sum()))


def _row(sums: np.ndarray, n: int) -> dict:
    """A language's metrics from (top-1 hits, top-3 hits, nats) summed over its n positions."""
    return {"n": n, "top1": sums[0] / n, "top3": sums[1] / n, "ce": sums[2] / n, "bpc": sums[2] / n / math.log(2)}


def _summary(langs: dict) -> tuple[dict, dict]:
    keys = ("top1", "top3", "ce", "bpc")
    total = sum(m["n"] for m in langs.values())
    macro = {k: float(np.mean([m[k] for m in langs.values()])) for k in keys}
    micro = {k: float(sum(m[k] * m["n"] for m in langs.values()) / total) for k in keys}
    return macro, micro


def evaluate_stream(pred: engine.Predictor, ds: DataSet, split: str = "test", chars: int = 20000,
                    stride: int | None = None, adapt: bool = True, batch_size: int = 2048) -> dict:
    """Metrics per language reading the first `chars` characters of each split in order (all when shorter).

    Position t is predicted from START + text[:t] through the typing window of `stride` (default
    stream_stride: what a typing session with that stride shows), then adapted by a fresh session that has
    read START + text[:t] (adapt.stream_probs: what adapt.AdaptiveSession gives for that prefix); hits and
    bits are counted as `evaluate` counts them. Each language's row holds the adapted metrics and, under
    "static", the same positions without adaptation (adapt=False: static only). Raises UserError for another
    vocabulary or an empty split.
    """
    from nextchar import adapt as adapt_mod

    ds.check_vocab(pred.vocab)
    chars = check_int(chars, "--chars")
    stride = stream_stride(pred) if stride is None else stride
    win = pred.windowed(stride)
    n_special = adapt_mod.count_specials(pred.vocab)
    langs, static = {}, {}
    for lang in ds.languages:
        ids = np.asarray(ds.split(lang, split)[:chars], dtype=np.int64)
        if len(ids) == 0:
            continue
        sums, sums_static = np.zeros(3), np.zeros(3)
        for lo in range(0, len(ids), batch_size):
            pos = range(lo, min(len(ids), lo + batch_size))
            hist = [ids[:p] for p in pos]  # histories are views of the text
            lp = win.logprobs(hist)  # (n, V)
            ok = pred.suggestible_after(hist)  # (n, V) the engine's ranking rules, as `evaluate` applies them
            y = ids[lo:pos.stop]
            sums_static += suggestion_hits(lp, y, ok)
            if adapt:
                probs = adapt_mod.stream_probs(np.exp(lp), ids, lo, pred.start_id, n_special)  # (n, V)
                with np.errstate(divide="ignore"):
                    sums += suggestion_hits(np.log(probs), y, ok)
        static[lang] = _row(sums_static, len(ids))
        langs[lang] = dict(_row(sums, len(ids)), static=static[lang]) if adapt else static[lang]
    if not langs:
        raise UserError(f"{ds.path}: the {split} split is empty for every language")
    macro, micro = _summary(langs)
    out = {"split": split, "mode": "stream", "chars": chars, "stride": stride, "adapt": adapt, "languages": langs,
           "macro": macro, "micro": micro}
    if adapt:
        out["macro_static"], out["micro_static"] = _summary(static)
    return out


def count_positions(ds: DataSet, split: str, positions: int) -> int:
    """How many positions evaluate() reads (all languages): the total of a progress bar."""
    return sum(len(eval_positions(len(ds.split(lang, split)), positions)) for lang in ds.languages)


@contextlib.contextmanager
def progress_bar(what: str, total: int, enabled: bool = True) -> Iterator[Callable[[str, int], None] | None]:
    """A progress bar with the rate and the time left on stderr (rich, which the CLI's typer brings), as the
    `progress` callback of evaluate(); None when disabled. Off a terminal it prints the finished bar once."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("positions"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(what, total=total)

        def advance(lang: str, n: int) -> None:
            bar.update(task, advance=n, description=f"{what} {lang}")

        yield advance
        bar.update(task, description=what)


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


def results_path(folder: Path, split: str, out: str | Path | None = None) -> Path:
    """Where `nextchar eval` writes: --out (a file, or a folder to hold eval_<split>.json); by default the run
    folder, except for a model shipped inside the package (never written to), whose results go to the current
    folder."""
    name = f"eval_{split}.json"
    if out is not None:
        out = Path(out)
        return out / name if out.is_dir() else out
    return Path.cwd() / name if models.is_shipped(folder) else folder / name


def eval_run(run: str | Path, split: str = "test", data: str | Path | None = None, positions: int = 2000,
             backend: str = "auto", device: str = "cpu", out: str | Path | None = None,
             threads: int | None = None, progress: bool = False, stream: bool = False, chars: int = 20000,
             stride: int | None = None) -> dict:
    """`nextchar eval`: evaluate a run (or a model by name) on a split and write the results (see results_path).

    stream=True: the streaming evaluation (evaluate_stream, the first `chars` characters of each language) into
    eval_stream_<split>.json. The result carries "run", "data" and, once written, "out" (the file's path).
    progress: a progress bar with the time left on stderr (the static evaluation).
    """
    if split not in SPLITS:
        raise UserError(f"--split {split!r}: choose dev or test")
    positions = check_int(positions, "--positions")
    folder = engine.resolve(run)
    pred = engine.load(folder, backend=backend, device=device, threads=threads)
    data = data_dir(describe(folder), data)
    ds = open_data(data)
    if stream:
        res = evaluate_stream(pred, ds, split, chars, stride)
    else:
        with progress_bar(f"eval {split}", count_positions(ds, split, positions), progress) as tick:
            res = evaluate(pred, ds, split, positions, progress=tick)
    res["run"] = str(run)
    res["data"] = str(data)
    path = results_path(folder, f"stream_{split}" if stream else split, out)
    atomic_write_json(path, res)
    res["out"] = str(path)
    return res
