"""The study folder and its reading: what `study report` needs from each point, loaded as one Row per point."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nextchar import files

STUDY_FILE = "study.json"  # the study's own description: grids, points, budget, data, commands
NGRAM_DIR = "ngram"  # the baseline's run directory inside a study
POINT_FILE = "study_point.json"  # per point: wall seconds spent by the study (train + test eval + latency)
LATENCY_PREFIXES = 50  # latency.json: the median is over this many typed prefixes

# What a study folder holds for the report, which reads nothing else (never a checkpoint or model weights):
# - study.json: the study's own description (grids, points with their configs, budget, data statistics,
#   commands, dates);
# - per point, <variant>-<slug of name>/ (and ngram/ for the baseline): result.json (config, parameters, best
#   dev loss, training time, tokens, steps, device, threads) and eval_test.json (per-language and macro test
#   metrics), both required for a point to count as finished; latency.json (median ms per keystroke) and
#   metrics.jsonl (training and dev loss curves) when present.


def budget_text(budget: dict) -> str:
    """study.json's budget in words: '300,000 training characters' or '20 minutes'."""
    return f"{budget['tokens']:,} training characters" if "tokens" in budget else f"{budget['minutes']:g} minutes"


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
    res = files.read_json(run / "result.json", "run result")
    ev = files.read_json(run / "eval_test.json", "test evaluation")
    lat = files.read_json(run / "latency.json", "latency") if (run / "latency.json").exists() else {}
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
