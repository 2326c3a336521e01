"""DDP under a real torchrun (2 gloo ranks on CPU) matches one process with the same global batch, and resumes."""

import json
import os
import subprocess
import sys

import pytest
import torch

from nextchar import checkpoint, files
from nextchar.config import load
from nextchar.train import train

torch.set_num_threads(1)

# Rank k of W takes rows [k*b, (k+1)*b) of the very batch one process would draw, gradients are averaged over
# ranks, so the only difference is float summation order: losses agree to ~1e-6 (measured), asserted at 1e-5.
TOL = 1e-5
STEPS = 8
SETS = ["train.eval_every=4", "train.final_eval_positions=50", 'train.grow="1@0.5"']


def tiny():
    cfg = load("tiny", overrides=SETS)
    cfg.train.max_steps, cfg.train.threads, cfg.train.device = STEPS, 1, "cpu"
    return cfg


def torchrun(data, out, *args):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "nextchar",
           "train", "--data", str(data), "--out", str(out), "--device", "cpu", "--threads", "1", *map(str, args)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def metrics(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def weights(run):
    return checkpoint.load(checkpoint.find(run, "latest"), with_optimizer=False)[0]


def assert_same_run(a, b):
    ma, mb = metrics(a), metrics(b)
    assert [sorted(x) for x in ma] == [sorted(x) for x in mb]  # same lines: rank 0 alone logs
    for x, y in zip(ma, mb):
        assert x["step"] == y["step"] and x.get("grow") == y.get("grow")
        for key in ("loss", "dev_loss"):
            if key in x:
                assert x[key] == pytest.approx(y[key], abs=TOL), (x["step"], key)
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=TOL, rtol=0)


@pytest.fixture(scope="module")
def single(tiny_data_dir, tmp_path_factory):
    """One process, batch 8: 4 steps at 1 layer, growth to 2, 4 more steps."""
    run = tmp_path_factory.mktemp("single") / "run"
    train(tiny_data_dir, run, tiny(), progress=False)
    return run


def test_two_ranks_match_one_process(single, tiny_data_dir, tmp_path):
    """Same global batch of 8: 2 ranks x 2 micro-batches of 2 (no_sync, then all-reduce), growth under DDP."""
    out = tmp_path / "ddp"
    log = torchrun(tiny_data_dir, out, "--preset", "tiny", "--max-steps", STEPS, "--set", "train.grad_accum=2",
                   *[a for s in SETS for a in ("--set", s)])
    assert log.count("done:") == 1 and "world 2" in log  # printed once, by rank 0
    assert_same_run(single, out)
    res = json.loads((out / "result.json").read_text())
    assert res["world_size"] == 2 and res["steps"] == STEPS and res["tokens"] == STEPS * 8 * 32
    state = files.read_json(checkpoint.find(out, "latest") / "state.json")
    assert len(state["rng"]) == 2 and state["n_layers"] == 2 and state["sampler"]["rows"] == STEPS * 8


@pytest.mark.slow  # a second torchrun launch: ~10 s of process start-up on 2 cores
def test_resume_on_two_ranks_continues_a_one_process_run(single, tiny_data_dir, tmp_path, fail_at_batch):
    """Ctrl-C a one-process run after step 3 (before growth), resume it under torchrun: same run as straight."""
    out = tmp_path / "resumed"
    fail_at_batch(4)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_data_dir, out, tiny(), progress=False)
    assert files.read_json(checkpoint.find(out, "latest") / "state.json")["n_layers"] == 1
    log = torchrun(tiny_data_dir, out, "--resume")
    assert "resuming" in log and "growing from 1 to 2 layers" in log
    assert_same_run(single, out)
