"""Study report: a committed study, copied anywhere, re-reports from its own small files to the same report.md and results.csv."""

import shutil
from pathlib import Path

from typer.testing import CliRunner

from nextchar.cli import app

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs/studies/cpu-300k"


def test_committed_study_re_reports_identically_from_a_copy(tmp_path, monkeypatch):
    # no weights or checkpoints travel with it: the report needs only study.json and each point's JSON files
    assert sorted({p.name for p in COMMITTED.glob("*/*") if p.parent.name != "plots"}) == [
        "eval_test.json", "latency.json", "result.json"]
    assert len(list(COMMITTED.glob("*/result.json"))) == 26 + 1  # 13 shapes x 2 recipes and the n-gram
    copy = tmp_path / "elsewhere" / "cpu-300k"
    shutil.copytree(COMMITTED, copy)
    monkeypatch.chdir(tmp_path)  # nothing the study names relatively (data/dasher, studies/) is found from here
    r = CliRunner().invoke(app, ["study", "report", str(copy)])
    assert r.exit_code == 0, r.output
    for name in ("report.md", "results.csv"):  # plots may differ in bytes across matplotlib versions
        assert (copy / name).read_bytes() == (COMMITTED / name).read_bytes(), name
