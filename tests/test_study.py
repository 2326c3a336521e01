"""Architecture study: grid validation, a resumable tiny sweep, and a report that regenerates identically."""

import csv
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nextchar import checkpoint
from nextchar.cli import app
from nextchar.errors import UserError
from nextchar.study import (
    COLUMNS,
    Row,
    anomalies,
    identical,
    load_grid,
    pareto,
    run_study,
    spearman,
    write_report,
)

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"

TINY_GRID = """
title = "tiny"
variant = "modern"

[defaults]
"train.eval_positions" = 10

[[config]]
name = "Tiny Two"
preset = "tiny"
founding_top1 = 40.0

[[config]]
name = "Tiny One"
preset = "tiny"
set = { model = { n_layers = 1 } }
founding_top1 = 30.0
"""
# tiny preset: batch 8 x context 32 = 256 characters per step, so 1,024 characters = 4 steps
ARGS = {"budget_tokens": 1024, "eval_positions": 15, "threads": 1, "dev_evals": 2, "progress": False}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def study(tiny_data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    grid = write(root / "grid.toml", TINY_GRID)
    out = root / "st"
    run_study(grid, tiny_data_dir, out, **ARGS)
    return grid, out


def table_rows(report: str, first_col: str) -> list[list[str]]:
    lines = report.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(f"| {first_col} "))
    rows = []
    for line in lines[i:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_points_are_run_directories_with_test_metrics_and_latency(study):
    _, out = study
    st = json.loads((out / "study.json").read_text())
    assert [p["dir"] for p in st["points"]] == ["modern-tiny-two", "modern-tiny-one"]
    for d in ("modern-tiny-two", "modern-tiny-one", "ngram"):
        run = out / d
        assert json.loads((run / "eval_test.json").read_text())["positions"] == 15
        assert json.loads((run / "latency.json").read_text())["median_ms"] > 0
    res = json.loads((out / "modern-tiny-one/result.json").read_text())
    assert res["steps"] == 4 and res["tokens"] == 1024 and res["config"]["model"]["n_layers"] == 1
    evals = [json.loads(x) for x in (out / "modern-tiny-one/metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals if "dev_loss" in e] == [2, 4]  # --dev-evals 2
    r = CliRunner().invoke(app, ["predict", "--run", str(out / "modern-tiny-two"), "Hello", "--threads", "1"])
    assert r.exit_code == 0 and len(r.output.strip().splitlines()) == 3


def test_report_table_csv_and_plots(study):
    _, out = study
    report = (out / "report.md").read_text(encoding="utf-8")
    rows = table_rows(report, "Model Configuration")
    assert rows[0] == COLUMNS and len(rows) == 2 + 3  # header, rule, two points and the n-gram row
    names = [r[0] for r in rows[2:]]
    assert set(names) == {"Tiny Two", "Tiny One"} | {n for n in names if n.startswith("Kneser-Ney")}
    top1 = [float(r[COLUMNS.index("Top-1 Accuracy")].strip("*%")) for r in rows[2:]]
    assert top1 == sorted(top1, reverse=True)
    assert any("**" in r[COLUMNS.index("Top-3 Accuracy")] for r in rows[2:])
    for needle in ("1,024 training characters per configuration", "15 evenly spaced test positions",
                   "nextchar study run", "9 languages", "## Key Findings", "## Recommendation",
                   "## Per-language accuracy"):
        assert needle in report, needle
    lang = table_rows(report, "Configuration")
    assert lang[0][-3:] == ["Mean", "Worst", "Gap"] and len(lang) == 2 + 3
    with open(out / "results.csv", encoding="utf-8") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == 3 and {r["variant"] for r in csv_rows} == {"modern", "n-gram"}
    assert all(0 <= float(r["top1"]) <= float(r["top3"]) <= 1 for r in csv_rows)
    import matplotlib.image

    for name in ("top3_vs_params", "top3_vs_time", "learning_curves", "language_heatmap"):
        png = out / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == PNG
        assert matplotlib.image.imread(png).shape[0] > 100
        assert f"plots/{name}.png" in report


def test_rerun_trains_nothing_and_report_is_identical(study, tiny_data_dir, monkeypatch, capsys):
    grid, out = study
    before = (out / "report.md").read_bytes(), (out / "results.csv").read_bytes()

    def boom(*a, **k):
        raise AssertionError("a finished study must not train or evaluate again")

    import nextchar.evaluate
    import nextchar.ngram
    import nextchar.train

    monkeypatch.setattr(nextchar.train, "train", boom)
    monkeypatch.setattr(nextchar.ngram, "train_ngram", boom)
    monkeypatch.setattr(nextchar.evaluate, "eval_run", boom)
    monkeypatch.setattr("nextchar.study.measure_latency", boom)
    run_study(grid, tiny_data_dir, out, **ARGS)
    assert ((out / "report.md").read_bytes(), (out / "results.csv").read_bytes()) == before
    write_report(out)
    assert ((out / "report.md").read_bytes(), (out / "results.csv").read_bytes()) == before
    # the budget comes from the study when not given again
    run_study(grid, tiny_data_dir, out, threads=1, progress=False)
    assert (out / "report.md").read_bytes() == before[0]
    # a default that changed since (here via --set) keeps finished points as they were run, with a note
    st = (out / "study.json").read_bytes()
    run_study(grid, tiny_data_dir, out, **{**ARGS, "sets": ["train.lr=0.01"], "progress": True})
    assert "is kept as it was run; the grid now gives train.lr: 0.003 -> 0.01" in capsys.readouterr().out
    assert json.loads(st)["points"] == json.loads((out / "study.json").read_bytes())["points"]
    after = (out / "report.md").read_text(encoding="utf-8").splitlines()
    assert [x for x in after if not x.startswith("- **Command**")] == [
        x for x in before[0].decode("utf-8").splitlines() if not x.startswith("- **Command**")]
    assert "; then `nextchar study run" in after[2]  # the study records every distinct command


def test_interrupted_point_resumes_from_its_checkpoint(tiny_data_dir, tmp_path, fail_at_batch, capsys):
    grid = write(tmp_path / "grid.toml", TINY_GRID)
    out = tmp_path / "st"
    fail_at_batch(3)  # Ctrl-C during step 3 of the first point
    with pytest.raises(KeyboardInterrupt):
        run_study(grid, tiny_data_dir, out, ngram=False, **{**ARGS, "progress": True})
    assert "run the same command again to resume" in capsys.readouterr().out
    assert checkpoint.find(out / "modern-tiny-two", "latest").name == "step-0000002"
    assert not (out / "modern-tiny-two/result.json").exists()
    with pytest.raises(UserError, match=r"train.lr: 0.003 -> 0.01"):  # a started point keeps its settings
        run_study(grid, tiny_data_dir, out, ngram=False, sets=["train.lr=0.01"], **ARGS)
    run_study(grid, tiny_data_dir, out, ngram=False, **{**ARGS, "progress": True})
    assert "resuming" in capsys.readouterr().out
    for d in ("modern-tiny-two", "modern-tiny-one"):
        assert json.loads((out / d / "result.json").read_text())["steps"] == 4
    assert "Kneser-Ney" not in (out / "report.md").read_text(encoding="utf-8")


def test_changed_budget_is_refused(study, tiny_data_dir):
    grid, out = study
    with pytest.raises(UserError, match="fair study keeps"):
        run_study(grid, tiny_data_dir, out, **{**ARGS, "budget_tokens": 2048})


@pytest.mark.parametrize("text,needle", [
    (TINY_GRID.replace('preset = "tiny"\nfounding_top1 = 40.0', 'preset = "nope"'), "unknown preset 'nope'"),
    (TINY_GRID.replace("n_layers = 1", "wings = 1"), "unknown model key(s): wings"),
    (TINY_GRID.replace("founding_top1 = 30.0", "colour = 1"), "unknown key(s) colour"),
    (TINY_GRID + "\nextra = 1\n", "unknown key(s) extra"),
    (TINY_GRID.replace('"Tiny One"', '"Tiny Two"'), "duplicate name 'Tiny Two'"),
    ('title = "empty"\n', "no configurations"),
    ("title = 'x'\nconfig = []\n", "no configurations"),
    (TINY_GRID.replace("n_layers = 1", "n_layers = 0"), "n_layers must be >= 1"),
    (TINY_GRID.replace('"train.eval_positions" = 10', '"train.max_steps" = 10'), "set by the study"),
    (TINY_GRID.replace('"train.eval_positions"', '"optim.lr"'), "unknown section 'optim'"),
    ("[[config\n", "not valid TOML"),
])
def test_bad_grid_is_one_error_before_training(text, needle, tiny_data_dir, tmp_path):
    grid = write(tmp_path / "bad.toml", text)
    with pytest.raises(UserError) as e:
        run_study(grid, tiny_data_dir, tmp_path / "st", **ARGS)
    assert needle in str(e.value) and str(e.value).startswith(str(grid))
    assert not (tmp_path / "st").exists()


def test_cli_errors_are_one_line(tiny_data_dir, tmp_path, study):
    grid = write(tmp_path / "bad.toml", TINY_GRID.replace('"Tiny One"', '"Tiny Two"'))
    r = CliRunner().invoke(app, ["study", "run", str(grid), "--data", str(tiny_data_dir), "--out",
                                 str(tmp_path / "st"), "--budget-tokens", "1024", "--threads", "1"])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "duplicate name" in r.output
    r = CliRunner().invoke(app, ["study", "run", str(study[0]), "--data", str(tiny_data_dir), "--out",
                                 str(tmp_path / "st2"), "--threads", "1"])
    assert r.exit_code == 2 and "no budget" in r.output
    r = CliRunner().invoke(app, ["study", "report", str(tmp_path)])
    assert r.exit_code == 2 and "not a study directory" in r.output


def test_report_recommends_within_constraints(study, tmp_path):
    _, out = study
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    res = {d: json.loads((copy / d / "result.json").read_text()) for d in ("modern-tiny-two", "modern-tiny-one")}
    small = min(res, key=lambda d: res[d]["params"])
    name = {"modern-tiny-two": "Tiny Two", "modern-tiny-one": "Tiny One"}[small]
    r = CliRunner().invoke(app, ["study", "report", str(copy), "--max-params", str(res[small]["params"])])
    assert r.exit_code == 0, r.output
    text = (copy / "report.md").read_text(encoding="utf-8")
    assert f"I recommend {name} (modern)" in text and "1 of 2 configurations fit" in text
    r = CliRunner().invoke(app, ["study", "report", str(copy), "--max-latency-ms", "0.000001"])
    assert r.exit_code == 0 and "No configuration fits" in (copy / "report.md").read_text(encoding="utf-8")
    with pytest.raises(UserError, match="--max-params"):
        write_report(copy, max_params=0)


def test_shipped_grids_are_the_founding_table_plus_five():
    seed_meta, seed = load_grid(ROOT / "configs/study-seed.toml")
    modern_meta, modern = load_grid(ROOT / "configs/study-modern.toml")
    assert (seed_meta["variant"], modern_meta["variant"]) == ("seed", "modern")
    assert len(seed) == len(modern) == 13 and [p.name for p in seed] == [p.name for p in modern]
    shapes = {p.name: (p.cfg.model.d_model, p.cfg.model.n_layers, p.cfg.model.n_heads, p.cfg.model.d_ff,
                       p.cfg.model.dropout) for p in seed}
    assert shapes["12 Layers (Deep)"] == (128, 12, 4, 512, 0.1)
    assert shapes["Large Embeddings"] == (256, 8, 4, 512, 0.1)
    assert shapes["Small Model"] == (64, 4, 4, 256, 0.1)
    assert shapes["12 Layers, 8 Heads"] == (128, 12, 8, 512, 0.1)
    assert len([p for p in seed if p.founding]) == 8
    assert all(p.cfg.model.variant == "seed" for p in seed) and all(p.cfg.model.variant == "modern" for p in modern)
    assert [shapes[p.name] for p in modern] == [(p.cfg.model.d_model, p.cfg.model.n_layers, p.cfg.model.n_heads,
                                                 p.cfg.model.d_ff, p.cfg.model.dropout) for p in modern]


def fake(name: str, params: int, top3: float, seconds: float, d: int = 128) -> Row:
    return Row(name=name, dir=name, variant="seed", model={"d_model": d, "n_layers": 2, "n_heads": 4, "d_ff": 512,
               "dropout": 0.1}, params=params, top1=top3 / 2, top3=top3, test_bpc=2.0, dev_loss=1.5,
               train_seconds=seconds, tokens=1, steps=1, n_test=10_000, langs={}, dev_curve=[], train_curve=[],
               latency_ms=1.0, device="cpu", threads=1)


def test_pareto_anomalies_and_rank_correlation():
    a, b, c, d = fake("a", 100, 0.50, 10), fake("b", 200, 0.60, 20), fake("c", 300, 0.55, 30), fake("d", 400, 0.70, 5)
    assert [r.name for r in pareto([a, b, c, d], "params")] == ["a", "b", "d"]
    assert [r.name for r in pareto([a, b, c, d], "train_seconds")] == ["d"]
    # c is bigger than b at the same width and 5 points worse (noise ~1.4): flagged against b
    assert [(x.name, y.name) for x, y in anomalies([a, b, c, d])] == [("c", "b")]
    assert anomalies([a, b, fake("e", 300, 0.595, 30)]) == []  # within the noise
    assert anomalies([b, fake("w", 300, 0.50, 30, d=256)]) == []  # another width
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    a.langs = b.langs = {"en": {"top1": 0.1, "top3": 0.3, "n": 5}}
    c.langs = {"en": {"top1": 0.1, "top3": 0.4, "n": 5}}
    assert identical([a, b, c, d]) == [[a, b]]  # d has no per-language results: never grouped
