"""`nextchar train --model ngram`: a self-describing n-gram run, the order chosen on dev, errors."""

import json

import pytest

from nextchar import engine
from nextchar.engine.folder import describe
from nextchar.errors import UserError
from nextchar.train_ngram import train_ngram


def test_fit_writes_a_run_the_engine_loads(tiny_data_dir, tmp_path):
    res = train_ngram(tiny_data_dir, tmp_path / "ng", order=3, final_positions=50)
    desc = describe(tmp_path / "ng")
    assert desc.kind == "ngram" and desc.config["model"]["order"] == 3
    assert json.loads((tmp_path / "ng" / "result.json").read_text())["top3"] == res["top3"] > 0.2
    assert engine.load(tmp_path / "ng").context == 2
    with pytest.raises(UserError, match="already holds a run"):
        train_ngram(tiny_data_dir, tmp_path / "ng", order=3)


def test_order_is_chosen_on_dev(tiny_data_dir, tmp_path, capsys):
    res = train_ngram(tiny_data_dir, tmp_path / "ng", max_order=4, select_positions=50, final_positions=50)
    scores = {int(k): v for k, v in res["order_dev_loss"].items()}
    assert set(scores) == {2, 3, 4} and res["config"]["model"]["order"] == min(scores, key=scores.get)
    assert "order 2: dev" in capsys.readouterr().out
    with pytest.raises(UserError, match="--order 13"):
        train_ngram(tiny_data_dir, tmp_path / "x", order=13)
