"""Packaging a run as a shippable model: same predictions, no optimizer state, a model card, an ONNX form."""

import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from nextchar import engine, files
from nextchar.cli import app
from nextchar.engine.onnx_backend import OnnxPredictor
from nextchar.engine.torch_backend import TorchPredictor
from nextchar.errors import UserError
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


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


# ---------------------------------------------------------------- package never loses anything (issue 14, fault 2)


def _snapshot(d):
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_package_out_pointing_at_the_run_is_refused_and_the_run_kept(evaluated_run):
    """The issue's example: `--out` = the run wiped the run. Also the folder holding it, and a folder inside it."""
    run = evaluated_run
    before = _snapshot(run)
    for out, what in ((run, "is the run itself"), (run.parent, "holds the run"), (run / "pkg", "is inside the run")):
        r = cli("package", "--run", run, "--out", out, "--force")
        assert r.exit_code == 2 and r.output == f"error: {out}: --out {what}; package writes a new folder, give one " \
                                                 f"outside {run}\n", r.output
    assert _snapshot(run) == before


def test_package_refuses_a_foreign_folder_unless_forced(evaluated_run, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    r = cli("package", "--run", evaluated_run, "--out", mine)
    assert r.exit_code == 2 and "not empty and not a previous package (it holds 'notes.txt')" in r.output
    assert r.output.count("\n") == 1 and (mine / "notes.txt").read_text() == "keep me"
    f = tmp_path / "file"
    f.write_text("x")
    assert "is a file" in cli("package", "--run", evaluated_run, "--out", f).output and f.read_text() == "x"
    assert cli("package", "--run", evaluated_run, "--out", mine, "--force").exit_code == 0
    assert sorted(p.name for p in mine.iterdir()) == ["MODEL_CARD.md", "checkpoints", "config.json", "vocab.json"]
    # a previous package is replaced without --force, as a whole (no file of the old one stays)
    assert cli("package", "--run", evaluated_run, "--out", mine, "--half").exit_code == 0
    assert "float16" in (mine / "MODEL_CARD.md").read_text()
    assert len(list(mine.glob("checkpoints/step-*"))) == 1 and not [p for p in tmp_path.iterdir()
                                                                     if p.name.startswith(".mine")]


def test_failed_package_leaves_the_previous_one(evaluated_run, tmp_path, monkeypatch):
    out = package_model(evaluated_run, tmp_path / "pkg")
    before = _snapshot(out)
    real = files.atomic_write_bytes

    def fail_on_card(path, data):
        if path.name == "MODEL_CARD.md":  # the last file: everything else is written
            raise OSError(5, "Input/output error", str(path))
        return real(path, data)

    monkeypatch.setattr(files, "atomic_write_bytes", fail_on_card)
    with pytest.raises(UserError, match=f"MODEL_CARD.md: cannot write \\(Input/output error\\); {out} is as it was"):
        package_model(evaluated_run, out, half=True)
    assert _snapshot(out) == before and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_combined_package_travels_and_describes_itself(evaluated_run, tiny_data_dir, tmp_path):
    from nextchar.counts import CountsConfig, PosteriorConfig
    from nextchar.engine.mixture_backend import MixturePredictor
    from nextchar.package import package_combined
    from nextchar.train_counts import train_counts

    counts = tmp_path / "counts"
    train_counts(tiny_data_dir, counts, CountsConfig(order=4, posterior=PosteriorConfig(window=16)))
    out = package_combined(evaluated_run, counts, tmp_path / "default", tiny_data_dir,
                           {"transformer": "nextchar train --preset tiny", "counts": "nextchar train --model counts"},
                           positions=40, stream_chars=50, eval_positions=30)
    assert not (out / "transformer" / "checkpoints").exists() and (out / "transformer" / "onnx").is_dir()
    pred = engine.load(out)
    assert isinstance(pred, MixturePredictor) and isinstance(pred.a, OnnxPredictor)
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "nextchar train --preset tiny" in card and "nextchar train --model counts" in card
    assert "| ru |" in card and "**macro**" in card and "loglinear" in card
    prefixes = ["", "Hello wor", "Привет, ми"]
    before = pred.dist(prefixes)
    np.testing.assert_allclose(before.sum(axis=1), 1.0, rtol=1e-6)
    shutil.copytree(out, tmp_path / "elsewhere" / "m")  # the data is found by --data, the parts by their place
    shutil.rmtree(out)
    np.testing.assert_array_equal(engine.load(tmp_path / "elsewhere" / "m").dist(prefixes), before)


def test_package_names_what_is_wrong_with_the_run(tmp_path):
    """A missing folder and the shipped combined model (no training checkpoints) each get their own one-line
    error, and --out is never created."""
    from nextchar import models

    for run, needle in ((tmp_path / "nope", "run directory not found"),
                        (models.DEFAULT, "a combined model folder, not a training run")):
        r = cli("package", "--run", run, "--out", tmp_path / "pkg")
        assert r.exit_code == 2 and r.output.count("\n") == 1 and needle in r.output, r.output
        assert not (tmp_path / "pkg").exists()
