"""`nextchar mix`: rules fitted on dev (deterministic, no worse than one weight), folders that load and move."""

import math
import shutil

import numpy as np
import pytest

from nextchar import engine
from nextchar.data import eval_positions, open_data
from nextchar.engine.mixture_backend import MixturePredictor, Rule
from nextchar.errors import UserError
from nextchar.evaluate import evaluate
from nextchar.mix import CELL_GRID, WEIGHT_GRID, component_logprobs, fit_positions, fit_rule, make_mixture


@pytest.fixture(scope="module")
def dev_parts(tiny_run, tiny_counts, tiny_data_dir):
    ds = open_data(tiny_data_dir)
    la, y, lang = component_logprobs(engine.load(tiny_run), ds, "dev", 120)
    lb, y2, _ = component_logprobs(engine.load(tiny_counts), ds, "dev", 120)
    assert (y == y2).all()
    return la, lb, y, lang


def nll(rule, la, lb, y):
    return float(-rule.combine(la, lb)[np.arange(len(y)), y].sum())


def test_fit_positions_lie_between_the_eval_positions():
    fit, ev = fit_positions(1000, 10), eval_positions(1000, 10)
    assert fit.tolist() == list(range(0, 1000, 100)) and (fit < ev).all() and (ev < fit + 100).all()
    assert fit_positions(5, 10).tolist() == [0, 1, 2, 3, 4] and fit_positions(0, 3).size == 0


def test_the_global_weight_is_the_grid_minimum(dev_parts):
    la, lb, y, _ = dev_parts
    rule, info = fit_rule(la, lb, y, "linear")
    assert rule.method == "linear" and rule.weight in WEIGHT_GRID and not rule.cells
    assert min(info["ce_by_weight"].values()) == pytest.approx(nll(rule, la, lb, y) / len(y), rel=1e-6)


def test_each_cell_weight_is_its_own_grid_minimum(dev_parts):
    la, lb, y, _ = dev_parts
    rule, _ = fit_rule(la, lb, y, "cells", min_cell=20)
    cell = rule.cell(la.astype(np.float64), lb.astype(np.float64))
    seen = 0
    for c in np.unique(cell):
        sel = cell == c
        if sel.sum() < 20:
            assert rule.weights[c] == rule.weight
            continue
        seen += 1
        pa = np.exp(la[sel][np.arange(sel.sum()), y[sel]].astype(np.float64))  # (n,) the parts' p of the true ids
        pb = np.exp(lb[sel][np.arange(sel.sum()), y[sel]])
        losses = [float(-np.log(g * pa + (1 - g) * pb).sum()) for g in CELL_GRID]
        assert rule.weights[c] == pytest.approx(CELL_GRID[int(np.argmin(losses))])
    assert seen >= 2  # the tiny models' confidences spread over several cells


def test_loglinear_fits_better_than_one_weight_and_deterministically(dev_parts):
    la, lb, y, _ = dev_parts
    lin, _ = fit_rule(la, lb, y, "linear")
    rule, _ = fit_rule(la, lb, y, "loglinear", min_cell=20)
    again, _ = fit_rule(la, lb, y, "loglinear", min_cell=20)
    assert rule == again  # the same floats: fixed start, grid and order
    assert rule.method == "loglinear" and rule.n_cells == len(rule.coef) > 1
    # Newton starts from the linear mixture itself (0, 0, 1) and only takes steps that lower the loss
    assert nll(rule, la, lb, y) < nll(lin, la, lb, y)
    np.testing.assert_allclose(np.exp(rule.combine(la[:50], lb[:50])).sum(axis=1), 1.0, rtol=1e-9)


def test_unknown_method_is_a_user_error(dev_parts):
    la, lb, y, _ = dev_parts
    with pytest.raises(UserError, match="--method"):
        fit_rule(la, lb, y, "magic")


def test_mixture_folder_with_a_count_model_loads_evaluates_and_moves(tiny_run, tiny_counts, tiny_data_dir, tmp_path):
    mix = tmp_path / "mix"
    shutil.copytree(tiny_run, mix / "transformer")
    shutil.copytree(tiny_counts, mix / "counts")
    cfg = make_mixture(mix / "transformer", mix / "counts", mix, tiny_data_dir, positions=60)
    assert cfg["components"] == ["transformer", "counts"] and cfg["rule"]["method"] == "loglinear"
    assert cfg["languages"] == open_data(tiny_data_dir).languages
    m = engine.load(mix)
    assert isinstance(m, MixturePredictor) and m.rule == Rule.from_dict(cfg["rule"])
    ds = open_data(tiny_data_dir)
    ce = {name: evaluate(p, ds, "dev", 100)["macro"]["ce"]
          for name, p in (("mix", m), ("a", engine.load(tiny_run)), ("b", engine.load(tiny_counts)))}
    assert math.isfinite(ce["mix"]) and ce["mix"] <= min(ce["a"], ce["b"]) + 0.05
    before = m.dist(["Hello wor", ""])
    shutil.copytree(mix, tmp_path / "elsewhere" / "copy")
    shutil.rmtree(mix)
    np.testing.assert_array_equal(engine.load(tmp_path / "elsewhere" / "copy").dist(["Hello wor", ""]), before)
    with pytest.raises(UserError, match="already holds a run"):
        make_mixture(tiny_run, tiny_counts, tmp_path / "elsewhere" / "copy", tiny_data_dir)


def test_linear_mixture_of_the_ngram_still_works(tiny_run, tiny_ngram_run, tiny_data_dir, tmp_path):
    cfg = make_mixture(tiny_run, tiny_ngram_run, tmp_path / "mix", tiny_data_dir, positions=100, method="linear")
    m = engine.load(tmp_path / "mix")
    assert m.weight == cfg["weight"] == cfg["rule"]["weight"] and cfg["components"][1] == str(tiny_ngram_run.resolve())
    assert len(m.topk("Hello", 3)) == 3
