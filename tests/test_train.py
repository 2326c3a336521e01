"""Training loop: loss falls, exact resume (also after Ctrl-C), budgets, run directory contents."""

import json

import pytest
import torch

from nextchar import checkpoint
from nextchar.config import load
from nextchar.data import BatchSampler
from nextchar.errors import UserError
from nextchar.train import lr_at, train

torch.set_num_threads(1)


def tiny(**train_over):
    cfg = load("tiny")
    cfg.train.threads = 1
    cfg.train.device = "cpu"
    for k, v in train_over.items():
        setattr(cfg.train, k, v)
    return cfg


def weights(run):
    return checkpoint.load(checkpoint.find(run, "latest"), with_optimizer=False)[0]


def test_loss_falls_and_run_dir_describes_itself(tiny_data_dir, tmp_path):
    run = tmp_path / "run"
    res = train(tiny_data_dir, run, tiny(max_steps=60, lr=1e-2, eval_every=30), progress=False)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if "loss" in x]
    assert len(losses) == 60
    assert sum(losses[-10:]) / 10 < 0.75 * sum(losses[:5]) / 5
    evals = [x for x in lines if "dev_loss" in x]
    assert [e["step"] for e in evals] == [30, 60] and set(evals[0]["dev_lang_loss"]) == set(res["dev_languages"])
    assert res["steps"] == 60 and res["tokens"] == 60 * 8 * 32
    assert 0 <= res["top1"] <= res["top3"] <= 1
    assert res["best_dev_loss"] == min(e["dev_loss"] for e in evals)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["vocab_size"] == res["config"]["model"]["vocab_size"] > 10
    assert (run / "vocab.json").exists() and json.loads((run / "result.json").read_text())["steps"] == 60
    assert checkpoint.find(run, "best") is not None


def test_resume_is_exact(tiny_data_dir, tmp_path):
    """10 steps straight == 5 steps, save, resume, 5 more steps (dropout on, so RNG state matters too)."""
    cfg = tiny(max_steps=10, eval_every=5)
    cfg.model.dropout = 0.1
    train(tiny_data_dir, tmp_path / "straight", cfg, progress=False)
    half = tiny(max_steps=10, eval_every=5)
    half.model.dropout = 0.1
    # Stop after step 5 the way a user would: Ctrl-C during step 6 saves the state at the step-5 boundary.
    calls = {"n": 0}
    orig = BatchSampler.next_batch

    def interrupt(self):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return orig(self)

    BatchSampler.next_batch = interrupt
    try:
        with pytest.raises(KeyboardInterrupt):
            train(tiny_data_dir, tmp_path / "resumed", half, progress=False)
    finally:
        BatchSampler.next_batch = orig
    assert json.loads((tmp_path / "resumed/checkpoints/latest.json").read_text())["step"] == 5
    train(tiny_data_dir, tmp_path / "resumed", half, resume=True, progress=False)
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_existing_run_needs_resume(tiny_data_dir, tmp_path):
    train(tiny_data_dir, tmp_path / "r", tiny(max_steps=2), progress=False)
    with pytest.raises(UserError, match="--resume"):
        train(tiny_data_dir, tmp_path / "r", tiny(max_steps=2), progress=False)


def test_resume_with_another_model_is_refused(tiny_data_dir, tmp_path):
    train(tiny_data_dir, tmp_path / "r", tiny(max_steps=2), progress=False)
    other = tiny(max_steps=4)
    other.model.n_layers = 3
    with pytest.raises(UserError, match="different model config"):
        train(tiny_data_dir, tmp_path / "r", other, resume=True, progress=False)


def test_budget_required_and_tokens_budget(tiny_data_dir, tmp_path):
    with pytest.raises(UserError, match="budget"):
        train(tiny_data_dir, tmp_path / "a", tiny(), progress=False)
    res = train(tiny_data_dir, tmp_path / "b", tiny(max_tokens=3 * 8 * 32 - 5), progress=False)
    assert res["steps"] == 3


def test_lr_schedule_warmup_then_cosine_to_floor():
    cfg = tiny(lr=1.0, warmup_steps=4, min_lr_ratio=0.1).train
    assert [lr_at(cfg, s, 0.0) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(cfg, 10, 0.5) == pytest.approx(0.55)
    assert lr_at(cfg, 10, 1.0) == pytest.approx(0.1)
