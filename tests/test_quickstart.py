"""The quickstart job's wiring on the tiny corpus: train, evaluate on test, show suggestions, reuse the run."""

import json

from nextchar.quickstart import EXAMPLES, quickstart


def test_quickstart_trains_evaluates_and_suggests(tiny_data_dir, tmp_path, capsys):
    run = quickstart(tiny_data_dir, tmp_path / "run", preset="tiny", minutes=0.02, threads=1)
    out = capsys.readouterr().out
    assert (run / "result.json").exists() and (run / "eval_test.json").exists()
    assert json.loads((run / "eval_test.json").read_text())["split"] == "test"
    assert "macro" in out and str(run.resolve()) in out
    assert sum(1 for line in out.splitlines() if "->" in line) == len(EXAMPLES)
    mtime = (run / "result.json").stat().st_mtime
    quickstart(tiny_data_dir, run, preset="tiny", minutes=0.02, threads=1)
    assert "already trained" in capsys.readouterr().out
    assert (run / "result.json").stat().st_mtime == mtime
