"""Architecture study: sweep a grid of configurations on one budget (resumable), then write the analysis report."""

from __future__ import annotations

import copy
import csv
import io
import itertools
import json
import math
import re
import shlex
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import tomllib

from nextchar import checkpoint
from nextchar.config import PRESETS, RunConfig, load
from nextchar.errors import UserError

STUDY_FILE = "study.json"  # the study's own description: grids, points, budget, data, commands
NGRAM_DIR = "ngram"  # the baseline's run directory inside a study
POINT_FILE = "study_point.json"  # per point: wall seconds spent by the study (train + test eval + latency)
LATENCY_PREFIXES = 50
LATENCY_LENGTHS = (2, 9, 25, 60, 140)  # characters typed so far: word starts to long sentences
GRID_KEYS = ("title", "variant", "defaults", "config")
POINT_KEYS = ("name", "preset", "set", "founding_top1", "founding_top3")
# The study owns these so that every point gets the same budget (and the same threads).
STUDY_OWNED = ("max_steps", "max_tokens", "max_minutes", "threads")


# == the grid =======================================================================================
@dataclass
class Point:
    """One named configuration of a grid, validated into a RunConfig."""

    name: str
    dir: str  # run directory name inside the study: <variant>-<slug of name>
    grid: str
    preset: str
    overrides: dict[str, dict[str, Any]]  # [defaults], grid variant and `set`, in that order
    cfg: RunConfig
    founding: dict[str, float] = field(default_factory=dict)  # the founding table's numbers, when given


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "point"


def _sections(value: Any, origin: str, problems: list[str]) -> dict[str, dict[str, Any]]:
    """{"model.dropout" = 0.0} or {model = {dropout = 0.0}} -> {"model": {"dropout": 0.0}}."""
    out: dict[str, dict[str, Any]] = {}
    if not isinstance(value, dict):
        problems.append(f"{origin}: must be a table of section.key = value")
        return out

    def add(key: str, v: Any) -> None:
        section, _, name = key.partition(".")
        if not section or not name or "." in name or isinstance(v, dict):
            problems.append(f"{origin}: {key!r} is not section.key (e.g. \"model.dropout\" = 0.0)")
        elif section not in ("model", "train"):
            problems.append(f"{origin}: unknown section {section!r} in {key!r} (expected model or train)")
        elif section == "train" and name in STUDY_OWNED:
            problems.append(f"{origin}: {key!r} is set by the study (--budget-tokens/--budget-minutes, "
                            f"--threads) so every point gets the same")
        else:
            out.setdefault(section, {})[name] = v

    for k, v in value.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                add(f"{k}.{k2}", v2)
        else:
            add(k, v)
    return out


def _merge(*parts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    for p in parts:
        for section, values in p.items():
            out.setdefault(section, {}).update(values)
    return out


def parse_sets(sets: list[str]) -> dict[str, dict[str, Any]]:
    """--set section.key=value options (values parsed as TOML) -> {section: {key: value}}, checked like a grid."""
    from nextchar.config import parse_value

    flat: dict[str, Any] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set {item!r}: expected section.key=value, e.g. train.warmup_steps=20")
        flat[key.strip()] = parse_value(value.strip())
    problems: list[str] = []
    out = _sections(flat, "--set", problems)
    if problems:
        raise UserError("; ".join(problems))
    return out


def load_grid(path: str | Path, extra: dict[str, dict[str, Any]] | None = None) -> tuple[dict[str, Any], list[Point]]:
    """Parse and validate a grid TOML (every point's RunConfig is built); one UserError lists every problem.

    Each point is its preset, then the grid's [defaults], then `extra` (the command's --set), then the grid's
    `variant`, then the point's own `set`.
    """
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"{path}: cannot read grid ({e.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid TOML ({e})") from None
    problems: list[str] = []
    unknown = sorted(set(doc) - set(GRID_KEYS))
    if unknown:
        problems.append(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(GRID_KEYS)})")
    variant = doc.get("variant")
    if variant is not None and variant not in ("seed", "modern"):
        problems.append(f"variant must be 'seed' or 'modern', not {variant!r}")
        variant = None
    defaults = _sections(doc.get("defaults", {}), "[defaults]", problems)
    entries = doc.get("config", [])
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        problems.append("no configurations: add [[config]] tables with name and preset")
        entries = []
    points: list[Point] = []
    seen: dict[str, str] = {}
    for i, e in enumerate(entries, 1):
        name = e.get("name")
        where = f"config {i}" + (f" ({name!r})" if isinstance(name, str) else "")
        bad = sorted(set(e) - set(POINT_KEYS))
        if bad:
            problems.append(f"{where}: unknown key(s) {', '.join(bad)} (known: {', '.join(POINT_KEYS)})")
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{where}: needs a name")
            continue
        if name in seen:
            problems.append(f"{where}: duplicate name {name!r}")
            continue
        preset = e.get("preset")
        if preset not in PRESETS:
            problems.append(f"{where}: unknown preset {preset!r} (choose from: {', '.join(sorted(PRESETS))})")
            continue
        sets = _sections(e.get("set", {}), f"{where} set", problems)
        founding = {k[len("founding_"):]: e[k] for k in ("founding_top1", "founding_top3") if k in e}
        if not all(isinstance(v, (int, float)) and 0 <= v <= 100 for v in founding.values()):
            problems.append(f"{where}: founding_top1/founding_top3 are percentages (0 to 100)")
        overrides = _merge(defaults, extra or {}, {"model": {"variant": variant}} if variant else {}, sets)
        try:
            cfg = load(None, None, None, base=_merge(copy.deepcopy(PRESETS[preset]), overrides))
        except UserError as err:
            problems.append(f"{where}: {err}")
            continue
        d = f"{cfg.model.variant}-{slug(name)}"
        if d in seen.values():
            problems.append(f"{where}: name {name!r} gives the same directory {d!r} as another configuration")
            continue
        seen[name] = d
        points.append(Point(name, d, str(path), preset, overrides, cfg, {k: float(v) for k, v in founding.items()}))
    if problems:
        raise UserError(f"{path}: " + "; ".join(problems))
    return {"path": str(path), "title": str(doc.get("title", path.stem)), "variant": variant}, points


# == the sweep ======================================================================================
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

    from nextchar.predict import Predictor
    from nextchar.train import device_name

    pred = Predictor.load(run)
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
    checkpoint.atomic_write_json(run / "latency.json", res)
    return res


def _finished(run: Path) -> bool:
    return all((run / f).exists() for f in ("result.json", "eval_test.json", "latency.json"))


def _all_finished(out: Path, st: dict) -> bool:
    return (all(_finished(out / p["dir"]) for p in st["points"])
            and (not st["ngram"] or _finished(out / NGRAM_DIR)))


def _add_wall(run: Path, name: str, seconds: float) -> None:
    p = run / POINT_FILE
    old = checkpoint.read_json(p, "study point").get("wall_seconds", 0.0) if p.exists() else 0.0
    checkpoint.atomic_write_json(p, {"name": name, "wall_seconds": old + seconds})


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


def run_study(grid: str | Path | list[str | Path], data: str | Path, out: str | Path,
              budget_tokens: int | None = None, budget_minutes: float | None = None,
              eval_positions: int | None = None, ngram: bool = True, threads: int = 0, dev_evals: int | None = None,
              sets: list[str] | None = None, progress: bool = True) -> Path:
    """`nextchar study run`: validate every grid, train each point that is not finished, write the report."""
    from nextchar import evaluate
    from nextchar import ngram as ngram_mod
    from nextchar import train as train_mod
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
    st = checkpoint.read_json(st_path, "study description") if st_path.exists() else None
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
        ran = checkpoint.read_json(run_cfg, "run config") if run_cfg.exists() else None
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
    checkpoint.atomic_write_json(st_path, st)

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
        return checkpoint.read_json(f, "study point")["wall_seconds"] if _finished(out / p.dir) and f.exists() else None

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
            f"budget {_budget_text(budget)} each")
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
        checkpoint.atomic_write_json(st_path, st)
    return write_report(out)


def _budget_text(budget: dict) -> str:
    return f"{budget['tokens']:,} training characters" if "tokens" in budget else f"{budget['minutes']:g} minutes"


# == reading the results ============================================================================
@dataclass
class Row:
    """One finished point (or the n-gram baseline) as the report sees it."""

    name: str
    dir: str
    variant: str  # seed | modern | n-gram
    model: dict[str, Any]
    params: int
    top1: float
    top3: float
    test_bpc: float
    dev_loss: float
    train_seconds: float
    tokens: int
    steps: int
    n_test: int  # test positions over all languages
    langs: dict[str, dict[str, float]]
    dev_curve: list[tuple[int, float]]  # (tokens seen, dev loss)
    train_curve: list[tuple[int, float]]  # (tokens seen, training loss)
    latency_ms: float | None
    device: str
    threads: int | None
    founding: dict[str, float] = field(default_factory=dict)
    preset: str = ""

    @property
    def is_ngram(self) -> bool:
        return self.variant == "n-gram"

    @property
    def shape(self) -> tuple:
        m = self.model
        return (m.get("d_model"), m.get("n_layers"), m.get("n_heads"), m.get("d_ff"), m.get("dropout"))


def _curves(run: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """Dev and training loss against tokens; a resumed run repeats some steps, the last line of a step wins."""
    dev: dict[int, tuple[int, float]] = {}
    tr: dict[int, tuple[int, float]] = {}
    path = run / "metrics.jsonl"
    if not path.exists():
        return [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if "dev_loss" in rec:
            dev[rec["step"]] = (rec["tokens"], rec["dev_loss"])
        elif "loss" in rec:
            tr[rec["step"]] = (rec["tokens"], rec["loss"])
    return [dev[k] for k in sorted(dev)], [tr[k] for k in sorted(tr)]


def _row(run: Path, name: str, variant: str, founding: dict[str, float], preset: str) -> Row:
    res = checkpoint.read_json(run / "result.json", "run result")
    ev = checkpoint.read_json(run / "eval_test.json", "test evaluation")
    lat = checkpoint.read_json(run / "latency.json", "latency") if (run / "latency.json").exists() else {}
    dev, tr = _curves(run)
    langs = {k: {"top1": v["top1"], "top3": v["top3"], "n": v["n"]} for k, v in ev["languages"].items()}
    return Row(name=name, dir=run.name, variant=variant, model=res["config"]["model"], params=int(res["params"]),
               top1=ev["macro"]["top1"], top3=ev["macro"]["top3"], test_bpc=ev["macro"]["bpc"],
               dev_loss=res["best_dev_loss"], train_seconds=res["train_seconds"], tokens=int(res["tokens"]),
               steps=int(res.get("steps", 0)), n_test=sum(v["n"] for v in langs.values()), langs=langs,
               dev_curve=dev, train_curve=tr, latency_ms=lat.get("median_ms"), device=str(res.get("device", "?")),
               threads=res.get("threads"), founding=founding, preset=preset)


def load_rows(study: Path, st: dict) -> tuple[list[Row], list[str]]:
    """Finished points (grid order, n-gram last) and the names of points not finished yet."""
    rows, missing = [], []
    for p in st["points"]:
        run = study / p["dir"]
        if (run / "result.json").exists() and (run / "eval_test.json").exists():
            rows.append(_row(run, p["name"], p["config"]["model"]["variant"], p.get("founding", {}), p["preset"]))
        else:
            missing.append(f"{p['name']} ({p['config']['model']['variant']})")
    ng = study / NGRAM_DIR
    if st.get("ngram"):
        if (ng / "result.json").exists() and (ng / "eval_test.json").exists():
            row = _row(ng, "n-gram baseline", "n-gram", {}, "")
            row.name = f"Kneser-Ney {row.model.get('order')}-gram (baseline)"
            rows.append(row)
        else:
            missing.append("n-gram baseline")
    return rows, missing


# == numbers ========================================================================================
def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def pts(x: float) -> str:
    return f"{100 * x:+.2f}"


def secs(s: float) -> str:
    """Training time in the founding table's style (26,855s); tenths below 100 s."""
    return f"{s:,.0f}s" if s >= 100 else f"{s:.1f}s"


def dur(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def noise(a: Row, b: Row, key: str = "top3") -> float:
    """Two standard errors of the difference of two accuracies (binomial, over the test positions)."""
    pa, pb = getattr(a, key), getattr(b, key)
    return 2 * math.sqrt(pa * (1 - pa) / max(1, a.n_test) + pb * (1 - pb) / max(1, b.n_test))


def by_accuracy(rows: list[Row], key: str = "top3") -> list[Row]:
    other = "top1" if key == "top3" else "top3"
    return sorted(rows, key=lambda r: (-getattr(r, key), -getattr(r, other), r.name, r.variant))


def pareto(rows: list[Row], cost: str) -> list[Row]:
    """Rows no other row beats on top-3 at a lower or equal cost, cheapest first."""
    front: list[Row] = []
    for r in sorted(rows, key=lambda r: (getattr(r, cost), -r.top3, r.name)):
        if not front or r.top3 > front[-1].top3:
            front.append(r)
    return front


def spearman(xs: list[float], ys: list[float]) -> float:
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.mean(rx), statistics.mean(ry)
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    den = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return num / den if den else math.nan


def anomalies(rows: list[Row]) -> list[tuple[Row, Row]]:
    """(bigger, smaller) pairs of one variant and width where the bigger model is worse beyond the noise."""
    out = []
    for a in by_accuracy([r for r in rows if not r.is_ngram]):
        beaten = [b for b in rows if not b.is_ngram and b.variant == a.variant and b is not a
                  and b.model["d_model"] == a.model["d_model"] and b.params < a.params
                  and b.top3 - a.top3 > noise(a, b)]
        if beaten:
            out.append((a, max(beaten, key=lambda b: (b.top3 - a.top3, b.name))))
    return sorted(out, key=lambda ab: (ab[0].variant, -ab[0].params, ab[0].name))


def label(r: Row) -> str:
    return r.name if r.is_ngram else f"{r.name} ({r.variant})"


def timing_spread(rows: list[Row]) -> tuple[list[Row], float, float | None] | None:
    """The same-compute group (shape without dropout) whose training times differ most, if by over 25%."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        m = r.model
        groups.setdefault((r.variant, m["d_model"], m["n_layers"], m["n_heads"], m["d_ff"], r.tokens), []).append(r)
    worst = None
    for g in groups.values():
        times = [r.train_seconds for r in g]
        if len(g) > 1 and min(times) > 0:
            ratio = max(times) / min(times)
            if ratio > 1.25 and (worst is None or ratio > worst[1]):
                lats = [r.latency_ms for r in g if r.latency_ms]
                lr = max(lats) / min(lats) if len(lats) > 1 and max(lats) / min(lats) > 1.25 else None
                worst = (sorted(g, key=lambda r: r.name), ratio, lr)
    return worst


def identical(rows: list[Row]) -> list[list[Row]]:
    """Groups of two or more rows whose per-language test accuracies are all equal."""
    groups: dict[str, list[Row]] = {}
    for r in rows:
        if not r.langs:
            continue
        key = json.dumps({k: [v["top1"], v["top3"]] for k, v in sorted(r.langs.items())})
        groups.setdefault(key, []).append(r)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: [r.name for r in g])


def loss_path(r: Row) -> str:
    """Training loss early (a tenth into the budget) and late (mean of the last fifth), e.g. '4.93 → 3.74'."""
    c = r.train_curve
    if len(c) < 5:
        return "not logged"
    early = c[max(0, len(c) // 10 - 1)][1]
    late = statistics.mean(v for _, v in c[-max(1, len(c) // 5):])
    return f"{early:.2f} → {late:.2f} nats"


def depth_series(rows: list[Row], variant: str) -> list[Row]:
    """Rows of one variant that differ only in depth, on the most common (width, heads, FF, dropout)."""
    rs = [r for r in rows if r.variant == variant]
    if not rs:
        return []
    keys = [(r.model["d_model"], r.model["n_heads"], r.model["d_ff"], r.model["dropout"]) for r in rs]
    base = max(sorted(set(keys)), key=keys.count)
    series: dict[int, Row] = {}
    for r, k in zip(rs, keys):
        if k == base and r.model["n_layers"] not in series:
            series[r.model["n_layers"]] = r
    return [series[n] for n in sorted(series)] if len(series) >= 3 else []


# == the report =====================================================================================
COLUMNS = ["Model Configuration", "Variant", "Embedding Dim", "Layers", "Heads", "FF Dim", "Dropout", "Parameters",
           "Top-1 Accuracy", "Top-3 Accuracy", "Test bpc", "Training Time", "Dev Loss", "Latency (ms/key)"]


def summary_table(rows: list[Row]) -> list[str]:
    """The founding table's columns in its style (+ variant, test bpc, latency); best values bold."""
    cells = []
    for r in by_accuracy(rows, "top1"):
        m = r.model
        shape = ["—"] * 5 if r.is_ngram else [str(m["d_model"]), str(m["n_layers"]), str(m["n_heads"]),
                                              str(m["d_ff"]), str(float(m["dropout"]))]
        cells.append([r.name, r.variant, *shape, f"{r.params:,}" + (" n-grams" if r.is_ngram else ""),
                      pct(r.top1), pct(r.top3), f"{r.test_bpc:.3f}", secs(r.train_seconds),
                      f"{r.dev_loss:.3f}", "—" if r.latency_ms is None else f"{r.latency_ms:.2f}"])
    # best per column (on the printed value, so a tie is bolded everywhere it shows)
    for col, better in ((8, max), (9, max), (10, min), (11, min), (12, min), (13, min)):
        vals = [float(c[col].rstrip("%s").replace(",", "")) for c in cells if c[col] != "—"]
        if vals:
            best = better(vals)
            for c in cells:
                if c[col] != "—" and float(c[col].rstrip("%s").replace(",", "")) == best:
                    c[col] = f"**{c[col]}**"
    return md_table(COLUMNS, cells)


def md_table(header: list[str], cells: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(header)]
    def line(vals):
        return "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"
    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(c) for c in cells)]


def language_tables(rows: list[Row], langs: list[str]) -> list[str]:
    out = []
    for key, title in (("top3", "Top-3"), ("top1", "Top-1")):
        cells = []
        for r in by_accuracy(rows, key):
            vals = [r.langs[lang][key] for lang in langs if lang in r.langs]
            worst = min(langs, key=lambda lang: (r.langs.get(lang, {}).get(key, math.inf), lang))
            best = max(langs, key=lambda lang: (r.langs.get(lang, {}).get(key, -math.inf), lang))
            cells.append([r.name, r.variant, *(f"{100 * r.langs[lang][key]:.1f}" if lang in r.langs else "—"
                                               for lang in langs),
                          f"{100 * statistics.mean(vals):.1f}", f"{worst} {100 * r.langs[worst][key]:.1f}",
                          f"{100 * (r.langs[best][key] - r.langs[worst][key]):.1f}"])
        out += [f"**{title} accuracy (%) per language** (test; Gap = best language − worst language, in points)", "",
                *md_table(["Configuration", "Variant", *langs, "Mean", "Worst", "Gap"], cells), ""]
    return out


def recipe_table(rows: list[Row]) -> tuple[list[str], list[tuple[Row, Row]]]:
    """Seed vs modern at the same name and shape: what the recipe is worth."""
    pairs = []
    for s in rows:
        if s.variant != "seed":
            continue
        m = next((r for r in rows if r.variant == "modern" and r.name == s.name and r.shape == s.shape), None)
        if m is not None:
            pairs.append((s, m))
    pairs.sort(key=lambda sm: (sm[0].params, sm[0].name))
    cells = [[s.name, f"{s.params:,}", pct(s.top3), pct(m.top3), pts(m.top3 - s.top3), f"{s.test_bpc:.3f}",
              f"{m.test_bpc:.3f}", secs(s.train_seconds), secs(m.train_seconds)] for s, m in pairs]
    head = ["Configuration", "Parameters (seed)", "Top-3 seed", "Top-3 modern", "Δ Top-3 (points)", "bpc seed",
            "bpc modern", "Time seed", "Time modern"]
    return (md_table(head, cells) if pairs else []), pairs


def findings(rows: list[Row], st: dict, langs: list[str]) -> list[str]:
    """Key findings phrased from the numbers."""
    tf = [r for r in rows if not r.is_ngram]
    ng = next((r for r in rows if r.is_ngram), None)
    out: list[str] = []
    if not tf:
        return ["No Transformer configuration has finished yet."]
    best = by_accuracy(tf)[0]
    best1 = by_accuracy(tf, "top1")[0]
    second = by_accuracy(tf)[1] if len(tf) > 1 else None
    out += ["### 1. Best accuracy", "",
            (f"- **{best.name}** ({best.variant}, {best.params:,} parameters) has the best test top-3 accuracy: "
            f"**{pct(best.top3)}** (top-1 {pct(best.top1)}, {best.test_bpc:.3f} bpc), trained in "
            f"{dur(best.train_seconds)}.")]
    if best1 is not best:
        out.append(f"- By top-1 the leader is **{best1.name}** ({best1.variant}): {pct(best1.top1)}.")
    if second is not None:
        gap, nz = best.top3 - second.top3, noise(best, second)
        out.append(f"- The runner-up on top-3, {second.name} ({second.variant}), is {100 * gap:.2f} points behind; "
                   + ("that is within the test noise" if gap <= nz else "beyond the test noise")
                   + f" (±{100 * nz:.2f} points, two standard errors over {best.n_test:,} positions).")
    if ng is not None:
        beat = [r for r in tf if r.top3 > ng.top3]
        d = best.top3 - ng.top3
        out.append(f"- The {ng.name} reaches {pct(ng.top3)} top-3 ({ng.test_bpc:.3f} bpc) from the full training "
                   f"split in {dur(ng.train_seconds)}; {len(beat)} of {len(tf)} Transformer configurations beat it "
                   f"on top-3 at this budget (" + (f"the best by {100 * d:.2f} points)." if d > 0 else
                                                  f"the best trails it by {100 * -d:.2f} points)."))
    out.append("")

    eff = sorted(tf, key=lambda r: (-r.top3 / max(r.train_seconds, 1e-9), r.name))
    out += ["### 2. Best efficiency", "",
            "- Top-3 accuracy per training minute: "
            + "; ".join(f"{r.name} ({r.variant}) {100 * r.top3 / (r.train_seconds / 60):.1f} points/min"
                        for r in eff[:3]) + "."]
    spread = timing_spread(tf)
    if spread is not None:
        group, t_ratio, l_ratio = spread
        out.append(f"- Timing noise: {', '.join(label(r) for r in group)} do the same work per character, yet their "
                   f"training times differ {t_ratio:.1f}×" + (f" and their latencies {l_ratio:.1f}×" if l_ratio else "")
                   + ". The machine was shared while the study ran, so read times and latencies as rough (±that "
                   "factor); accuracies are not affected.")
    for cost, what, fmt in (("train_seconds", "training time", lambda r: dur(r.train_seconds)),
                            ("params", "parameters", lambda r: f"{r.params:,} params")):
        front = pareto(tf, cost)
        out.append(f"- Pareto front of top-3 vs {what} (nothing is more accurate for less): "
                   + " → ".join(f"{r.name} ({r.variant}, {fmt(r)}, {pct(r.top3)})" for r in front) + ".")
    out.append("")

    out += ["### 3. Diminishing returns", ""]
    # front points within 25% of each other's time are one step (the more accurate stands for both): a gain
    # divided by a near-zero number of doublings would say nothing
    front: list[Row] = []
    for r in pareto(tf, "train_seconds"):
        if front and r.train_seconds < 1.25 * front[-1].train_seconds:
            front[-1] = r
        else:
            front.append(r)
    steps = []
    for a, b in itertools.pairwise(front):
        doublings = math.log2(max(b.train_seconds, 1e-9) / max(a.train_seconds, 1e-9))
        steps.append((a, b, (b.top3 - a.top3) / doublings))
    if steps:
        out.append("- Along the time front, top-3 points gained per doubling of training time: "
                   + "; ".join(f"{label(a)} → {label(b)}: {100 * g:+.2f} "
                               f"(×{b.train_seconds / max(a.train_seconds, 1e-9):.1f} time)" for a, b, g in steps)
                   + ".")
        if len(steps) >= 2:
            first, last = steps[0][2], steps[-1][2]
            out.append("- " + ("Returns diminish: the last doubling buys " if last < first else
                               "Returns do not diminish at this budget: the last doubling buys ")
                       + f"{100 * last:.2f} points against {100 * first:.2f} for the first.")
    for variant in ("seed", "modern"):
        series = depth_series(tf, variant)
        if series:
            gains = [(a, b, (b.top3 - a.top3) / (b.model["n_layers"] - a.model["n_layers"]))
                     for a, b in itertools.pairwise(series)]
            out.append(f"- Depth ({variant}, d={series[0].model['d_model']}, FF {series[0].model['d_ff']}): "
                       + ", ".join(f"{r.model['n_layers']} layers {pct(r.top3)}" for r in series)
                       + "; per added layer: "
                       + ", ".join(f"{a.model['n_layers']}→{b.model['n_layers']} {100 * g:+.2f}" for a, b, g in gains)
                       + " points.")
    if not steps and not any(depth_series(tf, v) for v in ("seed", "modern")):
        out.append("- Too few configurations on the accuracy/time front to judge returns.")
    # still learning? the training loss over the last fifth of the budget, for the best few
    slopes = []
    for r in by_accuracy(tf)[:3]:
        c = r.train_curve
        if len(c) >= 10:
            k = max(1, len(c) // 5)
            head, tail = statistics.mean(x[1] for x in c[-2 * k:-k]), statistics.mean(x[1] for x in c[-k:])
            slopes.append(f"{r.name} ({r.variant}) {tail - head:+.3f} nats")
    if slopes:
        out.append("- Still learning at the end of the budget (change of mean training loss between the last two "
                   "fifths of training): " + "; ".join(slopes) + ". A longer budget can reorder the top rows.")
    out.append("")

    out += ["### 4. Anomalies", ""]
    an = anomalies(tf)
    if an:
        # grouped by the smaller model that beats them, so one reference is read once
        refs: list[Row] = []
        for _, b in an:
            if b not in refs:
                refs.append(b)
        for b in refs:
            worse = [a for a, bb in an if bb is b]
            out.append(f"- The smaller **{b.name}** ({b.variant}, {b.params:,} params, top-3 {pct(b.top3)}; training "
                       f"loss {loss_path(b)}) beats {len(worse)} larger configuration(s) of the same width "
                       f"{b.model['d_model']} beyond the test noise:")
            for a in worse:
                out.append(f"  - **{a.name}** ({a.params:,} params): top-3 {pct(a.top3)} "
                           f"({100 * (a.top3 - b.top3):+.2f} points, noise ±{100 * noise(a, b):.2f}); training loss "
                           f"{loss_path(a)}; [learning curves](plots/anomaly-{a.dir}.png).")
    else:
        out.append("- No configuration is worse than a smaller one of the same width beyond the test noise.")
    for group in identical(tf):
        out.append("- " + ", ".join(label(r) for r in group) + " give identical test results "
                   "in every language: they predict the same characters whatever the context, a sign that training "
                   "stalled before the models learned to use it.")
    ref = [r for r in tf if "top1" in r.founding]
    if len(ref) >= 3:
        rho = spearman([r.founding["top1"] for r in ref], [r.top1 for r in ref])
        out.append(f"- Against the founding table ({len(ref)} rows with its numbers): Spearman rank correlation of "
                   f"top-1 = {rho:.2f}.")
        for a in ref:
            smaller = [b for b in ref if a.variant == b.variant and a.model["d_model"] == b.model["d_model"]
                       and a.params > b.params and a.founding["top1"] < b.founding["top1"]]
            if smaller:
                b = max(smaller, key=lambda b: (b.founding["top1"], b.name))  # its most glaring case
                here = "reproduced" if b.top3 - a.top3 > noise(a, b) else "not reproduced"
                out.append(f"  - Its anomaly, {a.name} ({a.founding['top1']:.2f}% top-1) below the smaller {b.name} "
                           f"({b.founding['top1']:.2f}%), is {here} here: {pct(a.top1)} vs {pct(b.top1)} top-1, "
                           f"{pct(a.top3)} vs {pct(b.top3)} top-3.")
    out.append("")

    out += ["### 5. Languages", ""]
    vals = {lang: best.langs[lang]["top3"] for lang in langs if lang in best.langs}
    mean = statistics.mean(vals.values())
    weak = sorted(vals, key=lambda lang: (vals[lang], lang))[:3]
    sizes = st.get("data_stats", {})
    med = statistics.median(v["train"] for v in sizes.values()) if sizes else 0
    def size(lang):
        return f", {sizes[lang]['train']:,} train chars" if lang in sizes else ""
    out.append(f"- Weakest languages for {best.name} ({best.variant}), top-3 against its mean of {pct(mean)}: "
               + "; ".join(f"{lang} {pct(vals[lang])} ({100 * (vals[lang] - mean):+.2f} points{size(lang)})"
                           for lang in weak)
               + (f". The median language has {med:,.0f} train chars." if sizes else "."))
    bottom: dict[str, int] = {}
    for r in rows:
        rv = {lang: r.langs[lang]["top3"] for lang in r.langs}
        for lang in sorted(rv, key=lambda lang: (rv[lang], lang))[:3]:
            bottom[lang] = bottom.get(lang, 0) + 1
    often = sorted(bottom, key=lambda lang: (-bottom[lang], lang))[:3]
    out.append("- Most often among the three weakest, over all rows: "
               + ", ".join(f"{lang} ({bottom[lang]} of {len(rows)})" for lang in often) + ".")
    gaps = {r.name + r.variant: max(x["top3"] for x in r.langs.values()) - min(x["top3"] for x in r.langs.values())
            for r in tf}
    out.append(f"- Best-to-worst language gap in top-3: {100 * min(gaps.values()):.1f} to "
               f"{100 * max(gaps.values()):.1f} points across configurations; {100 * gaps[best.name + best.variant]:.1f} "
               f"for {best.name}.")
    out.append("")

    _, pairs = recipe_table(rows)
    if pairs:
        deltas = [m.top3 - s.top3 for s, m in pairs]
        big = max(pairs, key=lambda sm: (sm[1].top3 - sm[0].top3, sm[0].name))
        small = min(pairs, key=lambda sm: (sm[1].top3 - sm[0].top3, sm[0].name))
        wins = sum(d > 0 for d in deltas)
        out += ["### 6. The modern recipe", "",
                (f"- At the same shape and budget the modern recipe changes top-3 by {100 * statistics.mean(deltas):+.2f}"
                f" points on average ({wins} of {len(pairs)} shapes improve); most at {big[0].name} "
                f"({pts(big[1].top3 - big[0].top3)}), least at {small[0].name} ({pts(small[1].top3 - small[0].top3)})."),
                ""]
    return out


def recommendation(rows: list[Row], st: dict, max_train_minutes: float | None, max_params: int | None,
                   max_latency_ms: float | None) -> list[str]:
    tf = [r for r in rows if not r.is_ngram]
    limits = []
    if max_train_minutes is not None:
        limits.append(f"training time ≤ {max_train_minutes:g} min")
    if max_params is not None:
        limits.append(f"≤ {max_params:,} parameters")
    if max_latency_ms is not None:
        limits.append(f"≤ {max_latency_ms:g} ms per keystroke (1 CPU thread, this machine)")

    def why_not(r: Row) -> list[str]:
        w = []
        if max_train_minutes is not None and r.train_seconds > max_train_minutes * 60:
            w.append(f"trains {dur(r.train_seconds)}")
        if max_params is not None and r.params > max_params:
            w.append(f"{r.params:,} params")
        if max_latency_ms is not None and (r.latency_ms is None or r.latency_ms > max_latency_ms):
            w.append("latency not measured" if r.latency_ms is None else f"{r.latency_ms:.2f} ms/key")
        return w

    fit = by_accuracy([r for r in tf if not why_not(r)])
    given = ", ".join(limits) if limits else "none (see --max-train-minutes, --max-params, --max-latency-ms)"
    out = ["## Recommendation", "",
           (f"Constraints: {given}; {len(fit)} of {len(tf)} configurations fit. Ranked by test top-3 accuracy (the keyboard shows three "
           f"suggestions), then top-1."), ""]
    if not fit:
        return out + ["No configuration fits these constraints; relax one of them.", ""]
    best = fit[0]
    out.append(f"**For deployment under these constraints I recommend {best.name} ({best.variant})** — "
               f"{best.model['d_model']} embedding dim, {best.model['n_layers']} layers, {best.model['n_heads']} "
               f"heads, {best.model['d_ff']} FF dim, {float(best.model['dropout'])} dropout; {best.params:,} parameters.")
    out.append("")
    reasons = [(f"**Accuracy**: {pct(best.top3)} top-3 and {pct(best.top1)} top-1 on test "
               f"({best.test_bpc:.3f} bpc), the best of the {len(fit)} configurations that fit.")]
    ng = next((r for r in rows if r.is_ngram), None)
    if ng is not None:
        reasons.append(f"**Against the baseline**: {100 * (best.top3 - ng.top3):+.2f} top-3 points relative to the "
                       f"{ng.name} ({pct(ng.top3)}).")
    lat = f"{best.latency_ms:.2f} ms per keystroke" if best.latency_ms is not None else "latency not measured"
    reasons.append(f"**Cost**: {dur(best.train_seconds)} of training at this budget, {lat} (median, 1 thread).")
    excluded = [r for r in by_accuracy(tf) if why_not(r) and r.top3 > best.top3]
    if excluded:
        reasons.append("**What the constraints cost**: "
                       + "; ".join(f"{r.name} ({r.variant}) would add {100 * (r.top3 - best.top3):.2f} points but "
                                   f"{', '.join(why_not(r))}" for r in excluded[:3]) + ".")
    out += [f"{i}. {t}" for i, t in enumerate(reasons, 1)] + [""]
    if ng is not None and ng.top3 - best.top3 > noise(best, ng):
        beaten = "every configuration" if all(ng.top3 > r.top3 for r in tf) else "the recommended configuration"
        out += [(f"**The baseline is ahead at this budget**: the {ng.name} beats {beaten} by "
                f"{100 * (ng.top3 - best.top3):.2f}+ top-3 points. Until a Transformer is trained for longer, the "
                f"n-gram is the better predictor to ship; the ranking here says which architecture to train further."),
                ""]
    if len(fit) > 1:
        ru = fit[1]
        gap, nz = best.top3 - ru.top3, noise(best, ru)
        rel_t = ru.train_seconds / max(best.train_seconds, 1e-9)
        rel_p = ru.params / max(best.params, 1)
        text = (f"**Runner-up: {ru.name} ({ru.variant})** — {pct(ru.top3)} top-3, {pct(ru.top1)} top-1, "
                f"{ru.params:,} parameters ({rel_p:.2f}× the recommended), {dur(ru.train_seconds)} of training "
                f"({rel_t:.2f}×)" + (f", {ru.latency_ms:.2f} ms per keystroke" if ru.latency_ms is not None else "")
                + f". It is {100 * gap:.2f} top-3 points behind, ")
        if gap <= nz:
            cheaper = [w for w, yes in (("fewer parameters", rel_p < 1), ("faster training", rel_t < 1),
                                        ("faster keystrokes", ru.latency_ms is not None and best.latency_ms is not None
                                         and ru.latency_ms < best.latency_ms)) if yes]
            text += (f"which is within the test noise (±{100 * nz:.2f}): the two are tied on this evidence"
                     + (f"; prefer the runner-up where its {' and '.join(cheaper)} matter." if cheaper else "."))
        else:
            text += f"beyond the test noise (±{100 * nz:.2f})."
        out += [text, ""]
    budget = st["budget"]
    frac = ""
    if "tokens" in budget and st.get("data_stats"):
        total = sum(v["train"] for v in st["data_stats"].values())
        frac = f" ({100 * budget['tokens'] / total:.1f}% of one pass over the training split)"
    out += [(f"Caveat: every configuration saw the same {_budget_text(budget)}{frac}. Rankings at a short budget "
            f"favour models that learn fast; the founding study trained for hours, so rerun the top rows with a "
            f"larger budget before a final decision."), ""]
    return out


def recipes(rows: list[Row]) -> list[str]:
    """One header line naming what each variant in the study is (from the runs' own configs)."""
    parts = []
    if any(r.variant == "seed" for r in rows):
        parts.append("**seed** = the founding study's recipe (post-LN, sinusoidal positions, separate output layer)")
    pos = sorted({str(r.model.get("pos")) for r in rows if r.variant == "modern"})
    if pos:
        parts.append(f"**modern** = pre-norm, {'/'.join(pos)} positions, output tied to the input embedding")
    return [f"- **Recipes**: {'; '.join(parts)}."] if parts else []


def header(study: Path, st: dict, rows: list[Row]) -> list[str]:
    stats = st.get("data_stats", {})
    langs = sorted(stats)
    train_chars = sum(v["train"] for v in stats.values())
    test_chars = sum(v["test"] for v in stats.values())
    devices = sorted({f"{r.device}, {r.threads} thread(s)" for r in rows if not r.is_ngram})
    titles = [g["title"] for g in st["grids"]]
    pts0 = st["points"]
    dev_pos = sorted({p["config"]["train"]["eval_positions"] for p in pts0})
    dev_every = sorted({p["config"]["train"]["eval_every"] for p in pts0})
    ctx = sorted({p["config"]["model"]["context"] for p in pts0})
    batch = sorted({p["config"]["train"]["batch_size"] for p in pts0})
    lr = sorted({p["config"]["train"]["lr"] for p in pts0})
    warm = sorted({p["config"]["train"]["warmup_steps"] for p in pts0})
    def j(v):
        return ", ".join(map(str, v))
    date = st["created"] + (f" to {st['finished']}" if st.get("finished") and st["finished"] != st["created"] else "")
    return [
        f"# Architecture study: {' + '.join(titles)}", "",
        "- **Command**: " + "; then ".join(f"`{c}`" for c in st["commands"]),
        f"- **Date**: {date}" + ("" if st.get("finished") else " (not finished)"),
        (f"- **Data**: `{st['data']}`: {len(langs)} languages ({', '.join(langs)}); {train_chars:,} train characters, "
        f"{test_chars:,} test characters."),
        (f"- **Budget**: {_budget_text(st['budget'])} per configuration, the same for every point; training time counts "
        f"optimizer steps only (evaluation excluded). Batch {j(batch)} × context {j(ctx)}, peak lr {j(lr)}, warmup "
        f"{j(warm)} steps." + (" The n-gram baseline counts the whole training split (it has no token budget)."
                                if st.get("ngram") else "")),
        f"- **Device**: {'; '.join(devices) if devices else '—'}.",
        *recipes(rows),
        (f"- **Evaluation**: Top-1/Top-3/Test bpc are macro averages over languages of {st['eval_positions']} evenly "
        f"spaced test positions per language (fewer where a test split is shorter). Dev Loss is the best periodic "
        f"dev loss (nats/char; {j(dev_pos)} positions per language every {j(dev_every)} steps and at the end). "
        f"Latency is the median time of one top-3 prediction over {LATENCY_PREFIXES} realistic prefixes, 1 CPU "
        f"thread, measured after each point's training."), ""]


def write_report(study: str | Path, max_train_minutes: float | None = None, max_params: int | None = None,
                 max_latency_ms: float | None = None) -> Path:
    """`nextchar study report`: report.md, results.csv and plots/*.png from the study's files (never trains)."""
    study = Path(study)
    for opt, v in (("--max-train-minutes", max_train_minutes), ("--max-params", max_params),
                   ("--max-latency-ms", max_latency_ms)):
        if v is not None and v <= 0:
            raise UserError(f"{opt} {v}: must be positive")
    if not (study / STUDY_FILE).exists():
        raise UserError(f"{study}: not a study directory (no {STUDY_FILE}; run `nextchar study run` first)")
    st = checkpoint.read_json(study / STUDY_FILE, "study description")
    rows, missing = load_rows(study, st)
    langs = sorted({lang for r in rows for lang in r.langs})
    lines = header(study, st, rows)
    if not rows:
        lines += ["No configuration has finished yet.", ""]
    else:
        lines += ["## Performance Summary Table", "",
                  f"Based on the test results of {len([r for r in rows if not r.is_ngram])} configurations"
                  + (" and the n-gram baseline" if any(r.is_ngram for r in rows) else "")
                  + ", sorted by Top-1 accuracy; best value of each column in bold:", "",
                  *summary_table(rows), ""]
        rt, _ = recipe_table(rows)
        if rt:
            lines += ["## Seed vs modern recipe at the same shape", "", *rt, ""]
        lines += ["## Per-language accuracy", "", *language_tables(rows, langs)]
        lines += ["## Plots", "",
                  "![Top-3 accuracy vs parameters](plots/top3_vs_params.png)", "",
                  "![Top-3 accuracy vs training time](plots/top3_vs_time.png)", "",
                  "![Dev loss vs characters seen](plots/learning_curves.png)", "",
                  "![Top-3 accuracy per language](plots/language_heatmap.png)", ""]
        lines += ["## Key Findings", "", *findings(rows, st, langs)]
        lines += recommendation(rows, st, max_train_minutes, max_params, max_latency_ms)
    if missing:
        lines += ["## Not finished", "",
                  (f"{len(missing)} point(s) have no test results yet: {', '.join(missing)}. Resume with the command "
                  f"above (`nextchar study run` skips finished points and resumes interrupted ones)."), ""]
    checkpoint.atomic_write_bytes(study / "report.md", ("\n".join(lines).rstrip() + "\n").encode("utf-8"))
    checkpoint.atomic_write_bytes(study / "results.csv", results_csv(rows, langs).encode("utf-8"))
    if rows:
        write_plots(study / "plots", rows, langs)
    return study / "report.md"


def results_csv(rows: list[Row], langs: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["name", "variant", "dir", "preset", "d_model", "n_layers", "n_heads", "d_ff", "dropout", "context",
                "params", "top1", "top3", "test_bpc", "dev_loss", "train_seconds", "tokens", "steps", "latency_ms",
                "test_positions", *(f"top1_{lang}" for lang in langs), *(f"top3_{lang}" for lang in langs)])
    for r in by_accuracy(rows, "top1"):
        m = r.model
        w.writerow([r.name, r.variant, r.dir, r.preset, m.get("d_model", ""), m.get("n_layers", ""),
                    m.get("n_heads", ""), m.get("d_ff", ""), m.get("dropout", ""), m.get("context", ""), r.params,
                    f"{r.top1:.6f}", f"{r.top3:.6f}", f"{r.test_bpc:.6f}", f"{r.dev_loss:.6f}",
                    f"{r.train_seconds:.3f}", r.tokens, r.steps, "" if r.latency_ms is None else f"{r.latency_ms:.4f}",
                    r.n_test, *(f"{r.langs[lang]['top1']:.6f}" if lang in r.langs else "" for lang in langs),
                    *(f"{r.langs[lang]['top3']:.6f}" if lang in r.langs else "" for lang in langs)])
    return buf.getvalue()


# == plots ==========================================================================================
def _save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    checkpoint.atomic_write_bytes(path, buf.getvalue())


def write_plots(folder: Path, rows: list[Row], langs: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("anomaly-*.png"):
        old.unlink()  # anomalies of an earlier report may be gone
    tf = [r for r in rows if not r.is_ngram]
    ng = next((r for r in rows if r.is_ngram), None)
    names = sorted({r.name for r in tf})
    cmap = plt.get_cmap("tab20")
    # the dark shade of each tab20 hue first, then the light ones: neighbours in the legend stay distinguishable
    color = {n: cmap((2 * i) % 20 + (2 * i // 20) % 2) for i, n in enumerate(names)}
    marker = {"seed": "o", "modern": "s"}

    for cost, fname, xlabel in (("params", "top3_vs_params.png", "parameters (log scale)"),
                                ("train_seconds", "top3_vs_time.png", "training time, seconds (log scale)")):
        fig, ax = plt.subplots(figsize=(9, 6))
        for variant in ("seed", "modern"):
            rs = [r for r in tf if r.variant == variant]
            if not rs:
                continue
            ax.scatter([getattr(r, cost) for r in rs], [100 * r.top3 for r in rs], marker=marker[variant],
                       c=[color[r.name] for r in rs], edgecolors="black", s=55, label=f"{variant} recipe", zorder=3)
            for r in rs:
                ax.annotate(r.name, (getattr(r, cost), 100 * r.top3), fontsize=7, xytext=(4, 3),
                            textcoords="offset points")
        front = pareto(tf, cost)
        ax.plot([getattr(r, cost) for r in front], [100 * r.top3 for r in front], color="grey", lw=1, ls="-",
                drawstyle="steps-post", label="Pareto front", zorder=2)
        if ng is not None:
            ax.axhline(100 * ng.top3, color="black", ls="--", lw=1, label=ng.name)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test top-3 accuracy (%)")
        ax.set_title("Top-3 accuracy vs " + ("parameters" if cost == "params" else "training time"))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        _save(fig, folder / fname)
        plt.close(fig)

    variants = [v for v in ("seed", "modern") if any(r.variant == v for r in tf)]
    fig, axes = plt.subplots(1, max(1, len(variants)), figsize=(7 * max(1, len(variants)), 5.5), sharey=True,
                             squeeze=False)
    handles: dict[str, Any] = {}
    for ax, variant in zip(axes[0], variants):
        for r in sorted((r for r in tf if r.variant == variant), key=lambda r: r.name):
            if r.train_curve:
                ax.plot([t for t, _ in r.train_curve], [v for _, v in r.train_curve], color=color[r.name], lw=0.8,
                        alpha=0.35, ls=":")
            if r.dev_curve:
                (handles[r.name],) = ax.plot([t for t, _ in r.dev_curve], [v for _, v in r.dev_curve],
                                             color=color[r.name], marker="o", ms=3, lw=1.5)
        if ng is not None:
            handles[ng.name] = ax.axhline(ng.dev_loss, color="black", ls="--", lw=1)
        ax.set_xlabel("training characters seen")
        ax.set_title(f"{variant} recipe: dev loss (solid) and training loss (dotted)")
        ax.grid(True, alpha=0.3)
    dev = [v for r in tf for _, v in r.dev_curve]
    if dev:  # the first steps' losses would squash the part worth reading
        low = min(dev + ([ng.dev_loss] if ng is not None else []))
        axes[0][0].set_ylim(low - 0.2, max(dev) + 0.5)
    axes[0][0].set_ylabel("loss (nats per character)")
    names_in_order = sorted(handles, key=lambda n: (n == (ng.name if ng else None), n))
    fig.legend([handles[n] for n in names_in_order], names_in_order, loc="lower center", ncol=5, fontsize=8,
               bbox_to_anchor=(0.5, -0.02 - 0.035 * math.ceil(len(handles) / 5)))
    _save(fig, folder / "learning_curves.png")
    plt.close(fig)

    ordered = by_accuracy(rows)
    lang_order = sorted(langs, key=lambda lang: (-statistics.mean(r.langs[lang]["top3"] for r in rows
                                                                  if lang in r.langs), lang))
    grid = [[100 * r.langs[lang]["top3"] if lang in r.langs else math.nan for lang in lang_order] for r in ordered]
    fig, ax = plt.subplots(figsize=(0.5 * len(lang_order) + 4, 0.34 * len(ordered) + 1.8))
    im = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(lang_order)), lang_order)
    ax.set_yticks(range(len(ordered)), [r.name if r.is_ngram else f"{r.name} ({r.variant})" for r in ordered],
                  fontsize=7)
    for i, row in enumerate(grid):
        for k, v in enumerate(row):
            if not math.isnan(v):
                ax.text(k, i, f"{v:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if v < (min(map(min, grid)) + max(map(max, grid))) / 2 else "black")
    ax.set_xlabel("language (sorted by mean top-3)")
    ax.set_title("Test top-3 accuracy (%) per language")
    fig.colorbar(im, ax=ax, label="top-3 accuracy (%)")
    _save(fig, folder / "language_heatmap.png")
    plt.close(fig)

    for a, b in anomalies(tf):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r, c in ((a, "tab:red"), (b, "tab:blue")):
            label = f"{r.name} ({r.params:,} params)"
            if r.train_curve:
                ax.plot([t for t, _ in r.train_curve], [v for _, v in r.train_curve], color=c, lw=0.8, alpha=0.5,
                        ls=":", label=f"{label}, training")
            if r.dev_curve:
                ax.plot([t for t, _ in r.dev_curve], [v for _, v in r.dev_curve], color=c, marker="o", ms=3,
                        label=f"{label}, dev")
        ax.set_xlabel("training characters seen")
        ax.set_ylabel("loss (nats per character)")
        ax.set_title(f"Anomaly ({a.variant}): {a.name} vs the smaller {b.name}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        _save(fig, folder / f"anomaly-{a.dir}.png")
        plt.close(fig)

