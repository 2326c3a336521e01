"""The mixture backend: the interpolation is a distribution, and its typing state is the pair of its parts'."""

import numpy as np
import pytest

from nextchar import engine
from nextchar.engine.mixture_backend import MixturePredictor
from nextchar.errors import UserError


def test_mixture_is_the_weighted_sum(tiny_run, tiny_ngram_run):
    a, b = engine.load(tiny_run), engine.load(tiny_ngram_run)
    m = MixturePredictor(a, b, 0.3)
    prefixes = ["", "Hello wor", "Привет", "x" * 300]
    want = 0.3 * a.dist(prefixes) + 0.7 * b.dist(prefixes)
    np.testing.assert_allclose(m.dist(prefixes), want, rtol=1e-6)
    np.testing.assert_allclose(m.dist(prefixes).sum(axis=1), 1.0, rtol=1e-6)
    assert m.context == max(a.context, b.context) and m.incremental


def test_mixture_session_is_the_mix_of_the_parts_while_typing(tiny_run, tiny_ngram_run):
    a, b = engine.load(tiny_run, stride=16), engine.load(tiny_ngram_run)
    m = MixturePredictor(a, b, 0.3)
    assert m.incremental and a.context > b.context and m.stride == 16
    text = "Hello world, this line is longer than the tiny context of thirty-two ids. Привет!"
    prefixes = [text[:i] for i in range(len(text) + 1)]
    prefixes[40:40] = [text[:38], text[:35] + "x"]  # a backspace and an edit inside the window
    ms, as_ = m.session(), a.session()
    for p in prefixes:
        # The Transformer part is its own session's window (stride 16), the n-gram part its last 3 ids.
        want = 0.3 * as_.dist(p) + 0.7 * b.dist([p])[0]
        np.testing.assert_allclose(ms.dist(p), want, rtol=1e-5, atol=1e-7)
    assert ms.recomputes == as_.recomputes < len(prefixes) // 4


def test_parts_must_share_a_vocabulary_and_the_weight_a_range(tiny_run, tiny_ngram_run):
    a, b = engine.load(tiny_run), engine.load(tiny_ngram_run)
    with pytest.raises(UserError, match=r"mixture weight 1: must be in \(0, 1\)"):
        MixturePredictor(a, b, 1.0)
    with pytest.raises(UserError, match="mixture weight: expected a finite number, got str"):
        MixturePredictor(a, b, "0.5")
    b.vocab = type(b.vocab)(["<unk>", "\n", "x"])
    with pytest.raises(UserError, match="different vocabularies"):
        MixturePredictor(a, b, 0.5)
