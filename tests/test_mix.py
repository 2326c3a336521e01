"""`nextchar mix`: the weight is tuned on dev, the run loads like any run, and its folder can move."""

import math
import shutil

import numpy as np
import pytest

from nextchar import engine
from nextchar.data import open_data
from nextchar.engine.mixture_backend import MixturePredictor
from nextchar.errors import UserError
from nextchar.evaluate import evaluate
from nextchar.mix import make_mixture


def test_mix_run_is_no_worse_than_its_parts_on_dev(tiny_run, tiny_ngram_run, tiny_data_dir, tmp_path):
    cfg = make_mixture(tiny_run, tiny_ngram_run, tmp_path / "mix", tiny_data_dir, positions=100)
    m = engine.load(tmp_path / "mix")
    assert isinstance(m, MixturePredictor) and m.weight == cfg["weight"]
    ds = open_data(tiny_data_dir)
    ce = {name: evaluate(p, ds, "dev", 100)["macro"]["ce"]
          for name, p in (("mix", m), ("a", engine.load(tiny_run)), ("b", engine.load(tiny_ngram_run)))}
    # The tuned weight minimizes dev loss over a grid that contains weights near 0 and 1.
    assert ce["mix"] <= min(ce["a"], ce["b"]) + 0.05
    assert min(cfg["dev_ce_by_weight"].values()) == pytest.approx(ce["mix"], rel=1e-6)
    assert math.isfinite(ce["mix"]) and len(m.topk("Hello", 3)) == 3
    with pytest.raises(UserError, match="already holds a run"):
        make_mixture(tiny_run, tiny_ngram_run, tmp_path / "mix", tiny_data_dir)


def test_parts_inside_the_folder_are_stored_relative_to_it(tiny_run, tiny_ngram_run, tiny_data_dir, tmp_path):
    mix = tmp_path / "mix"
    shutil.copytree(tiny_run, mix / "transformer")
    shutil.copytree(tiny_ngram_run, mix / "ngram")
    cfg = make_mixture(mix / "transformer", mix / "ngram", mix, tiny_data_dir, positions=50)
    assert cfg["components"] == ["transformer", "ngram"]
    before = engine.load(mix).dist(["Hello wor"])
    shutil.move(mix, tmp_path / "moved")
    np.testing.assert_array_equal(engine.load(tmp_path / "moved").dist(["Hello wor"]), before)
