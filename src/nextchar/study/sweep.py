"""The sweep: train, test and time every point of the grids on one budget, resumably, then write the report."""

# The study's only uses of training, evaluation and prediction are in this file, imported inside `run_study`
# and `measure_latency` (so `study report` never loads them).

from __future__ import annotations

import contextlib
import copy
import math
import shlex
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nextchar import files
from nextchar.config import RunConfig
from nextchar.errors import UserError
from nextchar.study.grid import Point, load_grid, parse_sets
from nextchar.study.report import write_report
from nextchar.study.results import LATENCY_PREFIXES, NGRAM_DIR, POINT_FILE, STUDY_FILE, budget_text

LATENCY_LENGTHS = (2, 9, 25, 60, 140)  # characters typed so far: word starts to long sentences


def train_flops(cfg: RunConfig, params: int) -> float:
    """Rough FLOPs per training character: 6 x params plus attention over the context (an ETA proxy only)."""
    m = cfg.model
    return 6.0 * params + 12.0 * m.n_layers * m.context * m.d_model


def latency_prefixes(ds: Any, n: int = LATENCY_PREFIXES) -> list[str]:
    """Realistic typed prefixes: test text cut at spread-out places, round-robin over languages and lengths."""
    langs = sorted(ds.languages)
    texts = {lang: ds.text(lang, "test") for lang in langs}
    out = []
    for i in range(n):
        text = texts[langs[i % len(langs)]]
        length = LATENCY_LENGTHS[i % len(LATENCY_LENGTHS)]
        room = max(1, len(text) - length)
        end = length + (i * 7919) % room  # a large prime stride spreads the cut points over the text
        out.append(text[max(0, end - length):end])
    return out


def measure_latency(run: Path, prefixes: list[str]) -> dict:
    """Median milliseconds of Predictor.topk(prefix, 3) with 1 CPU thread: the per-keystroke cost."""
    import torch

    from nextchar import engine
    from nextchar.runtime import device_name

    pred = engine.load(run)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for p in prefixes[:5]:
            pred.topk(p, 3)  # warm-up: the first calls allocate buffers
        times = []
        for p in prefixes:
            t0 = time.perf_counter()
            pred.topk(p, 3)
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        torch.set_num_threads(old)
    times.sort()
    res = {"median_ms": statistics.median(times), "p90_ms": times[int(0.9 * (len(times) - 1))],
           "prefixes": len(times), "k": 3, "threads": 1, "device": device_name("cpu")}
    files.atomic_write_json(run / "latency.json", res)
    return res


def _finished(run: Path) -> bool:
    return all((run / f).exists() for f in ("result.json", "eval_test.json", "latency.json"))


def _all_finished(out: Path, st: dict) -> bool:
    return (all(_finished(out / p["dir"]) for p in st["points"])
            and (not st["ngram"] or _finished(out / NGRAM_DIR)))


def _add_wall(run: Path, name: str, seconds: float) -> None:
    p = run / POINT_FILE
    old = files.read_json(p, "study point").get("wall_seconds", 0.0) if p.exists() else 0.0
    files.atomic_write_json(p, {"name": name, "wall_seconds": old + seconds})


def _fmt_eta(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def config_diff(old: dict, new: dict) -> list[str]:
    """'section.key: old -> new' for each setting that changes what a point trains.

    Left out: threads, device and compile (how, not what), and model.pos for the seed variant, which always
    uses sinusoidal positions (so a change of the modern default does not disturb seed points).
    """
    skip = {("train", "threads"), ("train", "device"), ("train", "compile")}
    if old.get("model", {}).get("variant") == "seed" == new.get("model", {}).get("variant"):
        skip.add(("model", "pos"))
    out = []
    for section in ("model", "train"):
        a, b = old.get(section, {}), new.get(section, {})
        for key in sorted(set(a) | set(b)):
            if (section, key) not in skip and a.get(key, "(unset)") != b.get(key, "(unset)"):
                out.append(f"{section}.{key}: {a.get(key, '(unset)')!r} -> {b.get(key, '(unset)')!r}")
    return out


def _command(grids: list[Path], data: Path, out: Path, budget: dict, eval_positions: int, dev_evals: int,
             ngram: bool, threads: int, sets: list[str]) -> str:
    """The `nextchar study run` line that reproduces (or resumes) this study."""
    args = ["nextchar", "study", "run", *map(str, grids), "--data", str(data), "--out", str(out)]
    args += ["--budget-tokens", str(budget["tokens"])] if "tokens" in budget else ["--budget-minutes",
                                                                                   str(budget["minutes"])]
    args += ["--eval-positions", str(eval_positions), "--dev-evals", str(dev_evals), "--threads", str(threads)]
    for item in sets:
        args += ["--set", item]
    if not ngram:
        args.append("--no-ngram")
    return shlex.join(args)


def run_study(grid: str | Path | list[str | Path], data: str | Path, out: str | Path, **options) -> Path:
    """`nextchar study run`: validate every grid, train each point that is not finished, write the report.

    One study run per folder at a time: out/study.lock (pid, host) refuses a second with a one-line UserError
    (a lock whose process is gone is taken over), so two sweeps never train, or clear, the same point at once."""
    from nextchar import safefs

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: is a file, not a study folder (use another --out)")
    made = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{out}: cannot create ({e.strerror or e})") from None
    try:
        with safefs.locked(out / "study.lock", "nextchar study run"):
            return _run_study(grid, data, out, **options)
    finally:
        if made:
            with contextlib.suppress(OSError):
                out.rmdir()  # a study that failed before writing anything leaves no empty folder


def _run_study(grid: str | Path | list[str | Path], data: str | Path, out: str | Path,
               budget_tokens: int | None = None, budget_minutes: float | None = None,
               eval_positions: int | None = None, ngram: bool = True, threads: int = 0, dev_evals: int | None = None,
               sets: list[str] | None = None, progress: bool = True) -> Path:
    from nextchar import evaluate
    from nextchar import train as train_mod
    from nextchar import train_ngram as ngram_mod
    from nextchar.data import open_data
    from nextchar.model import CharTransformer

    grids = [Path(g) for g in (grid if isinstance(grid, list) else [grid])]
    data, out = Path(data), Path(out)
    # -- validate everything before anything is trained ---------------------------------------------
    extra = parse_sets(sets or [])
    points: list[Point] = []
    grid_meta = []
    for g in grids:
        meta, pts = load_grid(g, extra)
        grid_meta.append(meta)
        for p in pts:
            clash = next((q for q in points if q.dir == p.dir), None)
            if clash is not None:
                raise UserError(f"{g}: configuration {p.name!r} ({p.dir}) is also in {clash.grid}")
            points.append(p)
    st_path = out / STUDY_FILE
    st = files.read_json(st_path, "study description") if st_path.exists() else None
    if budget_tokens is not None and budget_minutes is not None:
        raise UserError("--budget-tokens and --budget-minutes: give one budget, not both")
    if budget_tokens is not None and budget_tokens < 1 or budget_minutes is not None and budget_minutes <= 0:
        raise UserError("--budget-tokens/--budget-minutes: the budget must be positive")
    budget = ({"tokens": budget_tokens} if budget_tokens is not None else
              {"minutes": budget_minutes} if budget_minutes is not None else st["budget"] if st else None)
    if budget is None:
        raise UserError("no budget: give --budget-tokens N or --budget-minutes M (the same for every point)")
    eval_positions = eval_positions if eval_positions is not None else st["eval_positions"] if st else 2000
    if eval_positions < 1:
        raise UserError(f"--eval-positions {eval_positions}: must be at least 1")
    dev_evals = dev_evals if dev_evals is not None else st.get("dev_evals", 5) if st else 5
    if dev_evals < 1:
        raise UserError(f"--dev-evals {dev_evals}: must be at least 1")
    if st is not None:
        for key, now in (("budget", budget), ("eval_positions", eval_positions), ("dev_evals", dev_evals)):
            if st.get(key, now) != now:
                raise UserError(f"{st_path}: this study used {key} {st[key]}, not {now}; a fair study keeps "
                                f"one setting for every point (use another --out for a new study)")
    ds = open_data(data)
    if st is not None and st["vocab_hash"] != ds.vocab.hash:
        raise UserError(f"{data}: vocabulary {ds.vocab.hash} differs from the study's ({st['vocab_hash']})")
    known = {p["dir"]: p for p in st["points"]} if st else {}
    params: dict[str, int] = {}
    kept: set[str] = set()
    notes: list[str] = []
    for p in points:
        cfg = p.cfg
        cfg.model.vocab_size = ds.vocab.size
        cfg.train.max_steps, cfg.train.max_tokens, cfg.train.max_minutes = 0, 0, 0.0
        if "tokens" in budget:
            cfg.train.max_tokens = budget["tokens"]
            if "eval_every" not in p.overrides["train"]:
                steps = math.ceil(budget["tokens"] / (cfg.train.batch_size * cfg.model.context))
                cfg.train.eval_every = max(1, math.ceil(steps / dev_evals))
        else:
            cfg.train.max_minutes = budget["minutes"]
        cfg.train.threads = threads
        if hasattr(cfg.train, "final_eval_positions") and "final_eval_positions" not in p.overrides["train"]:
            cfg.train.final_eval_positions = cfg.train.eval_positions  # the study's numbers come from test
        old = known.get(p.dir)
        run_cfg = out / p.dir / "config.json"
        ran = files.read_json(run_cfg, "run config") if run_cfg.exists() else None
        diff = (config_diff(old["config"], cfg.to_dict()) if old is not None else
                config_diff({"model": ran["model"], "train": ran["train"]}, cfg.to_dict()) if ran is not None else [])
        if diff and _finished(out / p.dir):
            # a finished point is a fact: keep it (and its recorded config) rather than refuse the whole study
            kept.add(p.dir)
            if old is None:  # a finished run directory the study has not recorded yet: record what it ran
                p.cfg = RunConfig.from_dict({"model": ran["model"], "train": ran["train"]})
            notes.append(f"note: {p.name!r} ({p.dir}) is kept as it was run; the grid now gives {'; '.join(diff)}")
        elif diff:
            raise UserError(f"{old and st_path or run_cfg}: configuration {p.name!r} ({p.dir}) was started with "
                            f"another config ({'; '.join(diff)}); pin the old values with set/--set, or use "
                            f"another --out")
        params[p.dir] = CharTransformer(p.cfg.model).num_params()

    # -- describe the study (points of earlier grids are kept: the report covers them all) ----------
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    cmd = _command(grids, data, out, budget, eval_positions, dev_evals, ngram, threads, sets or [])
    st = st or {"version": 1, "created": today, "finished": None, "data": str(data), "vocab_hash": ds.vocab.hash,
                "data_stats": {lang: {s: int(ds.stats["languages"][lang][s]) for s in ("train", "dev", "test")}
                               for lang in ds.languages},
                "budget": budget, "eval_positions": eval_positions, "dev_evals": dev_evals, "ngram": False,
                "grids": [], "points": [], "commands": []}
    st["ngram"] = st["ngram"] or ngram
    if cmd not in st["commands"]:
        st["commands"].append(cmd)
    for meta in grid_meta:
        if meta["path"] not in [g["path"] for g in st["grids"]]:
            st["grids"].append(meta)
    for p in points:
        if p.dir in kept and p.dir in known:
            continue  # keeps the config it was run with
        rec = {"name": p.name, "dir": p.dir, "grid": p.grid, "preset": p.preset, "set": p.overrides,
               "founding": p.founding, "config": p.cfg.to_dict(), "params": params[p.dir]}
        known[p.dir] = rec
    st["points"] = list(known.values())
    if not _all_finished(out, st):
        st["finished"] = None  # kept when a finished study is re-run, so its report does not change
    out.mkdir(parents=True, exist_ok=True)
    files.atomic_write_json(st_path, st)

    # -- the sweep -------------------------------------------------------------------------------------
    eval_device = train_mod.resolve_device(points[0].cfg.train.device) if points else "cpu"
    prefixes = latency_prefixes(ds)

    def say(msg: str) -> None:
        if progress:
            print(f"[study] {msg}", flush=True)

    for note in notes:
        say(note)

    def finish(run: Path, name: str, t0: float) -> None:
        if not (run / "eval_test.json").exists():
            evaluate.eval_run(run, "test", data=data, positions=eval_positions, device=eval_device)
        if not (run / "latency.json").exists():
            lat = measure_latency(run, prefixes)
            say(f"{name}: {lat['median_ms']:.2f} ms per keystroke (median, 1 thread)")
        _add_wall(run, name, time.time() - t0)

    def point_seconds(p: Point) -> float | None:
        f = out / p.dir / POINT_FILE
        return files.read_json(f, "study point")["wall_seconds"] if _finished(out / p.dir) and f.exists() else None

    cost = {p.dir: train_flops(p.cfg, params[p.dir]) if "tokens" in budget else 1.0 for p in points}
    try:
        if st["ngram"]:
            run = out / NGRAM_DIR
            if not _finished(run):
                t0 = time.time()
                if not (run / "result.json").exists():
                    if run.exists():
                        # an n-gram fit cannot resume; only this baseline's own half-written folder goes
                        import shutil

                        shutil.rmtree(run)
                    say("n-gram baseline: counting the training split and choosing the order on dev")
                    dev_positions = max(p.cfg.train.eval_positions for p in points) if points else eval_positions
                    ngram_mod.train_ngram(data, run, final_positions=dev_positions)
                finish(run, "n-gram baseline", t0)
        todo = [p for p in points if not _finished(out / p.dir)]
        say(f"{len(points)} configurations, {len(points) - len(todo)} already finished, {len(todo)} to run; "
            f"budget {budget_text(budget)} each")
        for i, p in enumerate(points, 1):
            run = out / p.dir
            if _finished(run):
                continue
            done = [(point_seconds(q), cost[q.dir]) for q in points if point_seconds(q) is not None]
            rate = sum(s for s, _ in done) / sum(c for _, c in done) if done else math.nan
            left = [q for q in points if not _finished(out / q.dir)]
            eta = rate * sum(cost[q.dir] for q in left)
            say(f"point {i}/{len(points)}: {p.name} ({p.cfg.model.variant}, {params[p.dir]:,} params) | "
                f"{len(left)} left including this one | study ETA {_fmt_eta(eta)}")
            t0 = time.time()
            if not (run / "result.json").exists():
                resume = (run / "config.json").exists()
                train_mod.train(data, run, copy.deepcopy(p.cfg), resume=resume, preset=p.preset,
                                progress=progress)
            finish(run, p.name, t0)
    except KeyboardInterrupt:
        say(f"interrupted; run the same command again to resume: {cmd}")
        raise
    if _all_finished(out, st) and not st["finished"]:
        st["finished"] = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        files.atomic_write_json(st_path, st)
    return write_report(out)

