"""Study sweep: a resumable tiny sweep whose points are run directories, and the report written from it."""

import csv
import json
import shutil

import pytest
import torch
from test_study_grid import ARGS, TINY_GRID, write
from typer.testing import CliRunner

from nextchar import checkpoint
from nextchar.cli import app
from nextchar.errors import UserError
from nextchar.study import COLUMNS, run_study, write_report

torch.set_num_threads(1)
PNG = b"\x89PNG\r\n\x1a\n"


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
    import nextchar.train
    import nextchar.train_ngram

    monkeypatch.setattr(nextchar.train, "train", boom)
    monkeypatch.setattr(nextchar.train_ngram, "train_ngram", boom)
    monkeypatch.setattr(nextchar.evaluate, "eval_run", boom)
    monkeypatch.setattr("nextchar.study.sweep.measure_latency", boom)
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


def test_report_reads_only_the_study_files(study, tmp_path):
    _, out = study
    small = tmp_path / "small"  # what results.py lists: no checkpoints, weights, configs or vocabularies
    for f in [out / "study.json", *out.glob("*/result.json"), *out.glob("*/eval_test.json"),
              *out.glob("*/latency.json"), *out.glob("*/metrics.jsonl")]:
        (small / f.relative_to(out)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, small / f.relative_to(out))
    assert len(list(small.rglob("*"))) == 1 + 3 + 3 * 3 + 2  # study.json, 3 folders, their files, 2 curves
    write_report(small)
    for name in ("report.md", "results.csv"):
        assert (small / name).read_bytes() == (out / name).read_bytes(), name


def test_interrupted_point_resumes_from_its_checkpoint(tiny_data_dir, tmp_path, fail_at_batch, capsys):
    grid = write(tmp_path / "grid.toml", TINY_GRID)
    out = tmp_path / "st"
    fail_at_batch(3)  # Ctrl-C during step 3 of the first point
    with pytest.raises(KeyboardInterrupt):
        run_study(grid, tiny_data_dir, out, ngram=False, **{**ARGS, "progress": True})
    assert "run the same command again to resume" in capsys.readouterr().out
    # (step 2 was saved twice, at its evaluation and on Ctrl-C: the second copy goes to a folder of its own)
    assert checkpoint.load(checkpoint.find(out / "modern-tiny-two", "latest"))[2]["step"] == 2
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



def test_one_sweep_per_study_folder(tiny_data_dir, tmp_path):
    """Two `study run` on one folder would train (or clear) the same point at once: the second is refused."""
    import os

    from nextchar import safefs

    out = tmp_path / "st"
    out.mkdir()
    with safefs.RunLock(out / "study.lock", "nextchar study run"):
        with pytest.raises(UserError, match=rf"study.lock: in use by pid {os.getpid()} on "):
            run_study(write(tmp_path / "grid.toml", TINY_GRID), tiny_data_dir, out, ngram=False, **ARGS)
    assert sorted(p.name for p in out.iterdir()) == []
