"""Checkpoints: round trip, atomic pointers, pruning, and clear errors for damaged files."""


import pytest
import torch

from nextchar import checkpoint
from nextchar.errors import UserError


def make(tmp_path, step, tags=("latest",)):
    m = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(m.parameters())
    m(torch.randn(2, 4)).sum().backward()
    opt.step()
    checkpoint.save(tmp_path, m.state_dict(), opt.state_dict(), {"step": step, "vocab_hash": "x"}, tags)
    return m, opt


def test_round_trip_model_and_optimizer(tmp_path):
    m, opt = make(tmp_path, 7)
    w, o, st = checkpoint.load(checkpoint.find(tmp_path))
    assert st["step"] == 7
    for k, v in m.state_dict().items():
        assert torch.equal(w[k], v)
    m2 = torch.nn.Linear(4, 3)
    opt2 = torch.optim.AdamW(m2.parameters())
    opt2.load_state_dict(o)
    for a, b in zip(opt.state_dict()["state"].values(), opt2.state_dict()["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and float(a["step"]) == float(b["step"])


def test_pointers_and_pruning(tmp_path):
    make(tmp_path, 1, ("latest", "best"))
    make(tmp_path, 2, ("latest",))
    make(tmp_path, 3, ("latest",))
    assert checkpoint.find(tmp_path, "best").name == "step-0000001"
    assert checkpoint.find(tmp_path, "latest").name == "step-0000003"
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == ["step-0000001", "step-0000003"]


def test_truncated_weights_are_reported(tmp_path):
    make(tmp_path, 1)
    f = checkpoint.find(tmp_path) / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(UserError, match="model.safetensors.*truncated or corrupt"):
        checkpoint.load(checkpoint.find(tmp_path))


def test_unreadable_state_is_reported(tmp_path):
    make(tmp_path, 1)
    (checkpoint.find(tmp_path) / "state.json").write_text("{not json")
    with pytest.raises(UserError, match="state.json: unreadable"):
        checkpoint.load(checkpoint.find(tmp_path))
