"""Models shipped in the package: found by name, small, and never written into."""

import numpy as np
import pytest

from nextchar import engine, models
from nextchar.engine.folder import onnx_form


def test_shipped_default_model_loads_by_name_and_is_small():
    assert models.default_model() == models.DEFAULT and "default" in models.names()
    assert models.find("default") == models.DEFAULT and models.find("nope") is None and models.find("..") is None
    pred = engine.load("default")
    assert len(pred.topk("Happy New Yea", 3)) == 3 and pred.run_id == "default"
    files = [f for f in models.DEFAULT.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 50 * 10**6  # the package's budget for its default model
    card = (models.DEFAULT / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "nextchar train" in card and len(pred.vocab.chars) == pred.vocab.size


def test_is_shipped(tmp_path):
    assert models.is_shipped(models.DEFAULT / "config.json") and not models.is_shipped(tmp_path)


def test_shipped_onnx_form_matches_the_weights():
    """When the default model carries its ONNX form (nextchar package --onnx), it predicts as its weights do."""
    if onnx_form(models.DEFAULT) is None:
        pytest.skip("the shipped default model has no ONNX form (package it with --onnx)")
    prefixes = ["", "Happy New Yea", "Здравствуйт", "x" * 300]
    a, b = engine.load("default", backend="onnx"), engine.load("default", backend="torch")
    np.testing.assert_allclose(a.dist(prefixes), b.dist(prefixes), atol=1e-5)
