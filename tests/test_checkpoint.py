"""Checkpoints: round trip, atomic pointers, pruning, and clear errors for damaged files."""

import re

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


# ---------------------------------------------------------------- a save killed or failing at any step (issue 14, fault 3)


def _state_of(tmp_path, tag):
    """(step, marker) of the checkpoint a pointer names, loading every file (hash-checked): it must be complete."""
    w, _o, st = checkpoint.load(checkpoint.find(tmp_path, tag))
    return st["step"], float(w["weight"][0, 0])


def _save(tmp_path, step, marker, tags):
    m = torch.nn.Linear(4, 3)
    with torch.no_grad():
        m.weight[0, 0] = marker
    opt = torch.optim.AdamW(m.parameters())
    m(torch.randn(2, 4)).sum().backward()
    opt.step()
    with torch.no_grad():
        m.weight[0, 0] = marker
    return checkpoint.save(tmp_path, m.state_dict(), opt.state_dict(), {"step": step, "vocab_hash": "x"}, tags)


class Steps:
    """Counts the file system steps of a save (every rename, replace, mkdir, removal, fsync, file creation) and
    at each one, before it happens, runs check() (what a kill at that instant would leave) or raises (a failure)."""

    def __init__(self, monkeypatch, check, fail_at=None):
        import os
        import shutil
        import tempfile

        import safetensors.torch

        self.n, self.check, self.fail_at, self.busy = 0, check, fail_at, False
        for mod, name in ((os, "rename"), (os, "replace"), (os, "mkdir"), (os, "unlink"), (os, "rmdir"),
                          (os, "fsync"), (shutil, "rmtree"), (tempfile, "mkstemp"), (checkpoint, "save_file"),
                          (safetensors.torch, "save_file")):
            monkeypatch.setattr(mod, name, self.wrap(getattr(mod, name)))

    def wrap(self, fn):
        def step(*a, **k):
            if not self.busy:
                self.busy = True
                try:
                    self.n += 1
                    self.check()
                    if self.n == self.fail_at:
                        raise OSError(5, "Input/output error (injected)")
                finally:
                    self.busy = False
            return fn(*a, **k)
        return step


@pytest.mark.parametrize("scenario", ["same step again", "next step, both tags", "next step, latest only"])
def test_every_instant_of_a_save_leaves_complete_checkpoints(tmp_path, monkeypatch, scenario):
    """The issue's case first: a step saved a second time (resuming a finished run, Ctrl-C right after a
    checkpoint) used to remove the named folder before renaming the new one in."""
    step, tags = {"same step again": (5, ("latest", "best")), "next step, both tags": (6, ("latest", "best")),
                  "next step, latest only": (6, ("latest",))}[scenario]
    _save(tmp_path, 5, 1.0, ("latest", "best"))
    old = {"latest": (5, 1.0), "best": (5, 1.0)}
    new = {tag: (step, 2.0) if tag in tags else old[tag] for tag in old}

    def complete():
        for tag in ("latest", "best"):
            assert _state_of(tmp_path, tag) in (old[tag], new[tag]), tag

    # a kill before each step: the state on disk at that instant
    kill = Steps(monkeypatch, complete)
    _save(tmp_path, step, 2.0, tags)
    complete()
    assert {t: _state_of(tmp_path, t) for t in old} == new
    n_steps = kill.n
    assert n_steps >= 8
    monkeypatch.undo()
    # a failure at each step: a one-line UserError, the pointers still on complete checkpoints, and the next
    # save succeeds and leaves no stray folder
    for k in range(1, n_steps + 1):
        run = tmp_path / f"fail-{k}"
        _save(run, 5, 1.0, ("latest", "best"))
        steps = Steps(monkeypatch, lambda: None, fail_at=k)
        try:
            _save(run, step, 2.0, tags)
        except UserError as e:
            assert "injected" in str(e) and "\n" not in str(e)
        monkeypatch.undo()
        for tag in ("latest", "best"):
            assert _state_of(run, tag) in (old[tag], new[tag]), (k, tag)
        _save(run, step, 2.0, tags)
        assert {t: _state_of(run, t) for t in old} == new
        names = sorted(p.name for p in (run / "checkpoints").iterdir())
        assert names == sorted({"best.json", "latest.json", checkpoint.find(run, "latest").name,
                                checkpoint.find(run, "best").name}), (k, names)
    assert steps.n >= 1


def test_same_step_saved_twice_keeps_a_valid_folder_name(tmp_path):
    _save(tmp_path, 5, 1.0, ("latest", "best"))
    _save(tmp_path, 5, 2.0, ("latest", "best"))
    assert checkpoint.find(tmp_path, "latest").name == "step-0000005-2"
    _save(tmp_path, 5, 3.0, ("latest",))
    assert checkpoint.find(tmp_path, "latest").name == "step-0000005"  # the name was free again
    assert _state_of(tmp_path, "best") == (5, 2.0) and _state_of(tmp_path, "latest") == (5, 3.0)


@pytest.mark.parametrize("text, message", [
    ("[]", "not a JSON object"), ('{"dir": 5}', "no valid \"dir\""), ('{"dir": "../../etc"}', "no valid \"dir\""),
    ("{}", "no valid \"dir\""), ('{"dir": "step-0000009"}', "points to missing checkpoint folder"),
    ("", "unreadable checkpoint pointer"), ('{"dir": "step-00', "unreadable checkpoint pointer")])
def test_damaged_pointer_is_a_one_line_error(tmp_path, text, message):
    _save(tmp_path, 5, 1.0, ("latest", "best"))
    (tmp_path / "checkpoints" / "best.json").write_text(text)
    with pytest.raises(UserError, match=f"best.json: .*{message}"):
        checkpoint.find(tmp_path, "best")
    _save(tmp_path, 6, 1.0, ("latest",))  # a save never prunes while a pointer is unreadable
    assert (tmp_path / "checkpoints" / "step-0000005").is_dir()


def test_disk_full_in_each_file_of_a_save(tmp_path, small_fs):
    """On a real full tmpfs: whichever file the disk fills in (safetensors reports it as its own error type),
    a one-line UserError naming it, the space a checkpoint needs, and the previous checkpoint still named."""
    script = """
import sys, torch
from nextchar import checkpoint
from nextchar.errors import UserError
m = torch.nn.Linear(100, int(sys.argv[2]))
try:
    checkpoint.save(sys.argv[1], m.state_dict(), None, {"step": 1}, ("latest",))
    checkpoint.save(sys.argv[1], m.state_dict(), None, {"step": 2, "pad": "x" * int(sys.argv[3])}, ("latest",))
except UserError as e:
    print(e)
print(checkpoint.load(checkpoint.find(sys.argv[1]))[2]["step"])
"""
    (tmp_path / "s.py").write_text(script)
    r = small_fs(f"""
$PY {tmp_path}/s.py "$FS/a" 60 0 > {tmp_path}/model      # 24 KB weights: the second does not fit
rm -rf "$FS/a"
$PY {tmp_path}/s.py "$FS/b" 10 40000 > {tmp_path}/state  # 4 KB weights, but a 40 KB state.json
""", size_kb=40)
    assert r.returncode == 0, r.stderr
    for name, file in (("model", "model.safetensors"), ("state", "state.json")):
        err, step = (tmp_path / name).read_text().splitlines()
        assert re.fullmatch(rf"\S+/\.step-0000002\.tmp/{file}: no space left on device \(needs about [\d.]+ KB, "
                            r"[\d.]+ K?B free there\); the run's previous checkpoint is intact", err), err
        assert step == "1"
