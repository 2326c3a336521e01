"""Models shipped in the package: found by name, small, and never written into."""

import numpy as np

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


def test_shipped_default_is_the_combined_model_and_runs_without_its_torch_weights():
    """The default is the Transformer's ONNX form (float16) and the count model under a fitted rule. Its PyTorch
    weights are not shipped (the size budget), so the export's own parity check against them, made when it was
    packaged, is what vouches for the ONNX form: same top-k on every checked prefix, probabilities within 1e-4."""
    from nextchar.engine.counts_backend import CountsPredictor
    from nextchar.engine.mixture_backend import MixturePredictor
    from nextchar.engine.onnx_backend import OnnxPredictor
    from nextchar.files import read_json

    pred = engine.load("default")
    assert isinstance(pred, MixturePredictor) and pred.rule.method == "loglinear"
    assert isinstance(pred.a, OnnxPredictor) and isinstance(pred.b, CountsPredictor)
    tr = models.DEFAULT / "transformer"
    parity = read_json(onnx_form(tr) / "config.json", "export config")["parity"]
    assert parity["n"] >= 1000 and parity["topk_equal"] == 1.0
    assert parity["max_abs_dp"] < 1e-4 and parity["typing_max_abs_dp"] < 1e-4
    np.testing.assert_allclose(pred.dist(["", "Happy New Yea", "x" * 300]).sum(axis=1), 1.0, rtol=1e-6)
