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


# -- learned rules ------------------------------------------------------------------------------------------------

from nextchar.engine.mixture_backend import Rule  # noqa: E402

CELLS = (("a_max", (0.1, 0.3)), ("b_max", (0.2,)))


def _parts(tiny_run, tiny_ngram_run):
    a, b = engine.load(tiny_run), engine.load(tiny_ngram_run)
    prefixes = ["", "Hello wor", "Привет", "x" * 300, "The quick brown fox jumps over the lazy do", "Москва — сто"]
    return a, b, prefixes, a.logprobs([a.encode(p) for p in prefixes]), b.logprobs([b.encode(p) for p in prefixes])


def test_cells_are_where_each_parts_largest_probability_falls(tiny_run, tiny_ngram_run):
    a, b, prefixes, la, lb = _parts(tiny_run, tiny_ngram_run)
    rule = Rule("linear", 0.5, CELLS, weights=(0.1,) * 6)
    pa, pb = np.exp(la).max(axis=1), np.exp(lb).max(axis=1)
    want = np.searchsorted([0.1, 0.3], pa, side="right") * 2 + (pb >= 0.2)
    np.testing.assert_array_equal(rule.cell(la, lb), want)
    assert rule.n_cells == 6


def test_linear_cells_use_their_own_weight(tiny_run, tiny_ngram_run):
    a, b, prefixes, la, lb = _parts(tiny_run, tiny_ngram_run)
    weights = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    m = MixturePredictor(a, b, Rule("linear", 0.5, CELLS, weights=weights))
    w = np.array(weights)[m.rule.cell(la, lb)][:, None]
    np.testing.assert_allclose(m.dist(prefixes), w * np.exp(la) + (1 - w) * np.exp(lb), rtol=1e-6)
    np.testing.assert_allclose(m.dist(prefixes).sum(axis=1), 1.0, rtol=1e-6)


def test_loglinear_is_the_renormalized_weighted_sum_of_logs(tiny_run, tiny_ngram_run):
    a, b, prefixes, la, lb = _parts(tiny_run, tiny_ngram_run)
    coef = tuple((0.3 + 0.1 * i, 0.8 - 0.1 * i, 0.2 * i) for i in range(6))
    m = MixturePredictor(a, b, Rule("loglinear", 0.4, CELLS, coef=coef))
    th = np.array(coef)[m.rule.cell(la, lb)]  # (N, 3)
    lin = np.log(0.4 * np.exp(la) + 0.6 * np.exp(lb))
    z = th[:, :1] * la + th[:, 1:2] * lb + th[:, 2:] * lin
    want = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(m.dist(prefixes), want, rtol=1e-6)
    np.testing.assert_allclose(m.dist(prefixes).sum(axis=1), 1.0, rtol=1e-6)
    # one cell, (0, 0, 1): the linear mixture itself
    same = MixturePredictor(a, b, Rule("loglinear", 0.4, coef=((0.0, 0.0, 1.0),)))
    np.testing.assert_allclose(same.dist(prefixes), MixturePredictor(a, b, 0.4).dist(prefixes), rtol=1e-6)


def test_a_rule_round_trips_and_a_bad_one_is_a_user_error():
    rule = Rule("loglinear", 0.25, CELLS, coef=tuple((0.1 * i, 0.5, 0.5) for i in range(6)))
    assert Rule.from_dict(rule.to_dict()) == rule
    assert Rule.from_dict({"weight": 0.3}) == Rule("linear", 0.3)  # a mixture written before learned rules
    for bad, match in [({"method": "nope", "weight": 0.3}, "method"), ({"weight": 1.5}, "weight"),
                       ({"method": "loglinear", "weight": 0.3, "coef": [[1, 2]]}, "coef"),
                       ({"weight": 0.3, "cells": [["z_max", [0.5]]], "weights": [0.1, 0.2]}, "feature"),
                       ({"weight": 0.3, "cells": [["a_max", [0.5]]], "weights": [0.1]}, "weights"),
                       ({"method": "linear"}, "malformed")]:
        with pytest.raises(UserError, match=match):
            Rule.from_dict(bad)
