"""Packaging a run as a shippable model: same predictions, no optimizer state, a model card, an ONNX form."""

import shutil

import numpy as np
import pytest

from nextchar import engine
from nextchar.engine.onnx_backend import OnnxPredictor
from nextchar.engine.torch_backend import TorchPredictor
from nextchar.evaluate import eval_run
from nextchar.package import package_model


@pytest.fixture(scope="module")
def evaluated_run(tiny_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("pkg") / "run"
    shutil.copytree(tiny_run, run)
    eval_run(run, "test", positions=50)
    return run


def test_package_predicts_like_the_run(evaluated_run, tmp_path):
    out = package_model(evaluated_run, tmp_path / "pkg", command="nextchar train --preset tiny")
    a, b = engine.load(evaluated_run), engine.load(out)
    prefixes = ["", "Hello wor", "Привет, ми", "שלו"]
    np.testing.assert_array_equal(a.dist(prefixes), b.dist(prefixes))
    assert not list(out.glob("checkpoints/*/optim.safetensors"))
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "nextchar train --preset tiny" in card and "| ru |" in card and "**macro**" in card


def test_half_package_is_half_the_size_and_predicts_alike(evaluated_run, tmp_path):
    full = package_model(evaluated_run, tmp_path / "full")
    half = package_model(evaluated_run, tmp_path / "half", half=True)

    def size(p):
        return sum(f.stat().st_size for f in p.glob("checkpoints/*/model.safetensors"))

    assert 0.45 < size(half) / size(full) < 0.55
    prefixes = ["", "Hello wor", "Привет, ми", "שלו", "The quick brown"]
    a, b = engine.load(full).dist(prefixes), engine.load(half).dist(prefixes)
    assert not np.array_equal(a, b)  # the weights really were rounded
    np.testing.assert_allclose(a, b, atol=2e-3)


def test_onnx_form_runs_without_torch_and_matches_the_weights(evaluated_run, tmp_path):
    out = package_model(evaluated_run, tmp_path / "pkg", half=True, onnx=True)
    auto, ref = engine.load(out), engine.load(out, backend="torch")
    assert isinstance(auto, OnnxPredictor) and isinstance(ref, TorchPredictor) and auto.run_id == "pkg"
    prefixes = ["", "Hello wor", "Привет, ми", "שלו", "x" * 100]
    np.testing.assert_allclose(auto.dist(prefixes), ref.dist(prefixes), atol=1e-5)
    assert [c for c, _ in auto.topk("Hello wor", 3)] == [c for c, _ in ref.topk("Hello wor", 3)]
    moved = tmp_path / "moved"
    shutil.move(out, moved)  # the ONNX form travels with its folder
    np.testing.assert_allclose(engine.load(moved).dist(prefixes), auto.dist(prefixes), rtol=1e-6)
