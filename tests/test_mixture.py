"""Mixture runs: the interpolation is a distribution, its weight is tuned on dev, and it loads like any run."""

import math

import numpy as np
import pytest

from nextchar.data import open_data
from nextchar.evaluate import evaluate
from nextchar.mixture import MixturePredictor, make_mixture
from nextchar.ngram import train_ngram
from nextchar.predict import Predictor


@pytest.fixture(scope="module")
def ngram_run(tiny_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ng") / "ngram"
    train_ngram(tiny_data_dir, out, order=4)
    return out


def test_mixture_is_the_weighted_sum(tiny_run, ngram_run):
    a, b = Predictor.load(tiny_run), Predictor.load(ngram_run)
    m = MixturePredictor(a, b, 0.3)
    prefixes = ["", "Hello wor", "Привет", "x" * 300]
    want = 0.3 * a.dist(prefixes) + 0.7 * b.dist(prefixes)
    np.testing.assert_allclose(m.dist(prefixes), want, rtol=1e-6)
    np.testing.assert_allclose(m.dist(prefixes).sum(axis=1), 1.0, rtol=1e-6)


def test_mix_run_is_no_worse_than_its_parts_on_dev(tiny_run, ngram_run, tiny_data_dir, tmp_path):
    cfg = make_mixture(tiny_run, ngram_run, tmp_path / "mix", tiny_data_dir, positions=100)
    m = Predictor.load(tmp_path / "mix")
    assert isinstance(m, MixturePredictor) and m.weight == cfg["weight"]
    ds = open_data(tiny_data_dir)
    ce = {name: evaluate(p, ds, "dev", 100)["macro"]["ce"]
          for name, p in (("mix", m), ("a", Predictor.load(tiny_run)), ("b", Predictor.load(ngram_run)))}
    # The tuned weight minimizes dev loss over a grid that contains weights near 0 and 1.
    assert ce["mix"] <= min(ce["a"], ce["b"]) + 0.05
    assert min(cfg["dev_ce_by_weight"].values()) == pytest.approx(ce["mix"], rel=1e-6)
    assert math.isfinite(ce["mix"]) and len(m.topk("Hello", 3)) == 3


def test_mixture_session_is_the_mix_of_the_parts_while_typing(tiny_run, ngram_run):
    a, b = Predictor.load(tiny_run), Predictor.load(ngram_run)
    m = MixturePredictor(a, b, 0.3)
    assert m.incremental and a.context > b.context
    text = "Hello world, this line is longer than the tiny context of thirty-two ids. Привет!"
    prefixes = [text[:i] for i in range(len(text) + 1)]
    prefixes[40:40] = [text[:38], text[:35] + "x"]  # a backspace and an edit inside the window
    ms, as_ = m.session(), a.session()
    for p in prefixes:
        # The Transformer part is its own session's window (stride context/2), the n-gram part the last ids.
        want = 0.3 * as_.dist(p) + 0.7 * b.dist([p])[0]
        np.testing.assert_allclose(ms.dist(p), want, rtol=1e-5, atol=1e-7)
    assert ms.recomputes == as_.recomputes < len(prefixes) // 4
