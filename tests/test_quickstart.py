"""The quickstart job's wiring on the tiny corpus: train both parts, combine, evaluate on test, suggest, reuse the run."""

import json
import shutil

import numpy as np
import pytest

from nextchar import engine
from nextchar.counts import CountsConfig, PosteriorConfig
from nextchar.errors import UserError
from nextchar.quickstart import EXAMPLES, quickstart

SMALL = CountsConfig(order=4, posterior=PosteriorConfig(window=16))


def test_quickstart_trains_combines_evaluates_and_suggests(tiny_data_dir, tmp_path, capsys):
    run = quickstart(tiny_data_dir, tmp_path / "run", preset="tiny", minutes=0.02, threads=1, counts_config=SMALL,
                     fit_positions=60)
    out = capsys.readouterr().out
    assert (run / "transformer" / "result.json").exists() and (run / "counts" / "tables").is_dir()
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model_type"] == "mixture" and cfg["components"] == ["transformer", "counts"]
    assert cfg["rule"]["method"] == "loglinear" and cfg["fit"]["split"] == "dev"
    assert json.loads((run / "eval_test.json").read_text())["split"] == "test"
    assert "macro" in out and str(run.resolve()) in out
    assert sum(1 for line in out.splitlines() if "->" in line) == len(EXAMPLES)
    mtime = (run / "transformer" / "result.json").stat().st_mtime
    quickstart(tiny_data_dir, run, preset="tiny", minutes=0.02, threads=1, counts_config=SMALL, fit_positions=60)
    assert "already trained" in capsys.readouterr().out
    assert (run / "transformer" / "result.json").stat().st_mtime == mtime
    # The mixture names its parts relative to itself, so the folder can move.
    before = engine.load(run).dist(["Hello wor"])
    moved = shutil.move(run, tmp_path / "moved")
    np.testing.assert_array_equal(engine.load(moved).dist(["Hello wor"]), before)


def test_quickstart_refuses_a_run_folder_that_is_not_a_mixture(tiny_data_dir, tiny_run):
    with pytest.raises(UserError, match="not a quickstart mixture"):
        quickstart(tiny_data_dir, tiny_run, preset="tiny", minutes=0.02, threads=1)
