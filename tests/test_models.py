"""Packaging a run as a shippable model: same predictions, no optimizer state, a model card with test metrics."""

import shutil

import numpy as np

from nextchar.evaluate import eval_run
from nextchar.models import DEFAULT, default_model, package_model
from nextchar.predict import Predictor


def test_package_predicts_like_the_run(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    eval_run(run, "test", positions=50)
    out = package_model(run, tmp_path / "pkg", command="nextchar train --preset tiny")
    a, b = Predictor.load(run), Predictor.load(out)
    prefixes = ["", "Hello wor", "Привет, ми", "שלו"]
    np.testing.assert_array_equal(a.dist(prefixes), b.dist(prefixes))
    assert not list(out.glob("checkpoints/*/optim.safetensors"))
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "nextchar train --preset tiny" in card and "| ru |" in card and "**macro**" in card


def test_half_package_is_half_the_size_and_predicts_alike(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    eval_run(run, "test", positions=50)
    full = package_model(run, tmp_path / "full")
    half = package_model(run, tmp_path / "half", half=True)

    def size(p):
        return sum(f.stat().st_size for f in p.glob("checkpoints/*/model.safetensors"))

    assert 0.45 < size(half) / size(full) < 0.55
    prefixes = ["", "Hello wor", "Привет, ми", "שלו", "The quick brown"]
    a, b = Predictor.load(full).dist(prefixes), Predictor.load(half).dist(prefixes)
    assert not np.array_equal(a, b)  # the weights really were rounded
    np.testing.assert_allclose(a, b, atol=2e-3)


def test_shipped_default_model_loads_and_is_small():
    assert default_model() == DEFAULT
    pred = Predictor.load(DEFAULT)
    assert len(pred.topk("Happy New Yea", 3)) == 3
    assert sum(f.stat().st_size for f in DEFAULT.rglob("*") if f.is_file()) <= 10 * 2**20
    card = (DEFAULT / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "nextchar train" in card and len(pred.vocab.chars) == pred.vocab.size
