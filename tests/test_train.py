"""Training loop: loss falls, exact resume (also after Ctrl-C), budgets, accumulation, speed accounting."""

import json
import re

import pytest
import torch

from nextchar import checkpoint
from nextchar.config import load
from nextchar.errors import UserError
from nextchar.model import CharTransformer
from nextchar.train import flops_per_token, lr_at, peak_flops, train

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
    # the ratio is 0.72-0.81 over seeds (batches differ), so the bound leaves room for the draw
    assert sum(losses[-10:]) / 10 < 0.85 * sum(losses[:5]) / 5
    evals = [x for x in lines if "dev_loss" in x]
    assert [e["step"] for e in evals] == [30, 60] and set(evals[0]["dev_lang_loss"]) == set(res["dev_languages"])
    assert res["steps"] == 60 and res["tokens"] == 60 * 8 * 32
    assert 0 <= res["top1"] <= res["top3"] <= 1
    assert res["best_dev_loss"] == min(e["dev_loss"] for e in evals)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["vocab_size"] == res["config"]["model"]["vocab_size"] > 10
    assert (run / "vocab.json").exists() and json.loads((run / "result.json").read_text())["steps"] == 60
    assert checkpoint.find(run, "best") is not None


def test_resume_is_exact(tiny_data_dir, tmp_path, fail_at_batch):
    """10 steps straight == 5 steps, save, resume, 5 more steps (dropout on, so RNG state matters too)."""
    cfg = tiny(max_steps=10, eval_every=5)
    cfg.model.dropout = 0.1
    train(tiny_data_dir, tmp_path / "straight", cfg, progress=False)
    half = tiny(max_steps=10, eval_every=5)
    half.model.dropout = 0.1
    # Stop after step 5 the way a user would: Ctrl-C during step 6 saves the state at the step-5 boundary.
    fail_at_batch(6)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_data_dir, tmp_path / "resumed", half, progress=False)
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


def curve(run):
    return [x["loss"] for x in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in x]


def test_grad_accumulation_equals_one_big_batch(tiny_data_dir, tmp_path):
    """2 micro-batches of 4 == 1 batch of 8: the sampler hands out the same 8 sequences either way."""
    train(tiny_data_dir, tmp_path / "one", tiny(max_steps=6, eval_every=3), progress=False)
    train(tiny_data_dir, tmp_path / "two", tiny(max_steps=6, eval_every=3, grad_accum=2), progress=False)
    # float summation order differs (two backward passes), nothing else: measured ~1e-7
    assert curve(tmp_path / "one") == pytest.approx(curve(tmp_path / "two"), abs=1e-5)
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0)


def test_grad_checkpointing_trains_the_same(tiny_data_dir, tmp_path):
    train(tiny_data_dir, tmp_path / "plain", tiny(max_steps=4, eval_every=2), progress=False)
    train(tiny_data_dir, tmp_path / "ckpt", tiny(max_steps=4, eval_every=2, grad_checkpoint=True), progress=False)
    assert curve(tmp_path / "plain") == pytest.approx(curve(tmp_path / "ckpt"), abs=1e-5)


def test_dev_lines_have_per_language_loss_and_top3(tiny_data_dir, tmp_path):
    run = tmp_path / "r"
    train(tiny_data_dir, run, tiny(max_steps=2, eval_every=2, lang_temperature=0.0, augment_lower=0.5,
                                   augment_strip_accents=0.5), progress=False)
    dev = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if "dev_loss" in x]
    langs = set(json.loads((run / "config.json").read_text())["languages"])
    assert set(dev[-1]["dev_lang_loss"]) == set(dev[-1]["dev_lang_top3"]) == langs
    assert all(0 <= v <= 1 for v in dev[-1]["dev_lang_top3"].values())


def test_peak_flops_by_device_name():
    assert peak_flops("NVIDIA H100 80GB HBM3") == peak_flops("NVIDIA H200") == 989.4e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12 and peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("NVIDIA L40S") == 362e12 and peak_flops("NVIDIA L4") == 121e12
    assert peak_flops("NVIDIA GeForce GTX 1080") is None and peak_flops("cpu (x86_64, 2 cores)") is None


def test_flops_per_token_formula():
    cfg = load("modern-2l", overrides=["model.pos=\"learned\""]).model
    cfg.vocab_size = 78
    m = CharTransformer(cfg)
    n = m.num_params() - 128 * 128  # the learned position table is a lookup
    assert flops_per_token(m) == 6 * n + 12 * 2 * 128 * 128
    seed = load("seed-2l").model
    seed.vocab_size = 78
    assert flops_per_token(CharTransformer(seed)) == 6 * (416_590 - 78 * 128) + 12 * 2 * 128 * 128
    cfg.ngram_buckets = 1000  # the hashed n-gram table is a lookup too
    assert flops_per_token(CharTransformer(cfg)) == flops_per_token(m)


def test_compile_defaults_on_for_cuda_only(tiny_data_dir, tmp_path, monkeypatch):
    import nextchar.train as tr

    calls = []
    monkeypatch.setattr(tr.torch, "compile", lambda m: calls.append(m) or m)
    train(tiny_data_dir, tmp_path / "a", tiny(max_steps=1), progress=False)
    assert calls == []
    train(tiny_data_dir, tmp_path / "b", tiny(max_steps=1, compile=True), progress=False)
    assert len(calls) == 1


def test_crash_resumes_from_the_last_evaluation(tiny_data_dir, tmp_path, fail_at_batch):
    """A crash saves nothing (as a killed DDP rank): --resume continues from the step-5 evaluation's checkpoint."""
    cfg = tiny(max_steps=10, eval_every=5)
    cfg.model.dropout = 0.1
    train(tiny_data_dir, tmp_path / "straight", cfg, progress=False)
    fail_at_batch(8, RuntimeError("node lost"))
    with pytest.raises(RuntimeError):
        train(tiny_data_dir, tmp_path / "crashed", cfg, progress=False)
    assert json.loads((tmp_path / "crashed/checkpoints/latest.json").read_text())["step"] == 5
    train(tiny_data_dir, tmp_path / "crashed", cfg, resume=True, progress=False)
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "crashed")
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------- one writer per run, disk full (issue 14, faults 7, 8)


def test_second_writer_is_refused_and_a_stale_lock_taken_over(tiny_data_dir, tmp_path, capsys):
    import os
    import subprocess
    import sys

    from nextchar import safefs

    run = tmp_path / "run"
    train(tiny_data_dir, run, tiny(max_steps=5), progress=False)
    with safefs.RunLock(run / "train.lock", "nextchar train (the other one)"):
        with pytest.raises(UserError, match=rf"^{run}/train.lock: in use by pid {os.getpid()} on {safefs.HOST} "
                                            r"since .* \(nextchar train \(the other one\)\); wait"):
            train(tiny_data_dir, run, tiny(max_steps=10), resume=True, progress=False)
    assert not (run / "train.lock").exists()
    # a crashed writer's lock (its pid is gone on this host) is taken over, with a note
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    (run / "train.lock").write_text(json.dumps({"pid": int(dead.stdout), "host": safefs.HOST}))
    capsys.readouterr()
    assert train(tiny_data_dir, run, tiny(max_steps=10), resume=True, progress=False)["steps"] == 10
    assert f"was left by pid {int(dead.stdout)}, which is gone; taking it over" in capsys.readouterr().out
    assert not (run / "train.lock").exists()
    # another host's lock cannot be judged from here: refused
    (run / "train.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    with pytest.raises(UserError, match="in use by pid 1 on elsewhere.example"):
        train(tiny_data_dir, run, tiny(max_steps=12), resume=True, progress=False)


def test_two_real_trainings_on_one_run(tiny_data_dir, tmp_path):
    """The issue's case: two `train --resume` of one --out at once; then the first is killed with -9."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from typer.testing import CliRunner

    from nextchar.cli import app

    run = tmp_path / "run"
    train(tiny_data_dir, run, tiny(max_steps=5), progress=False)
    src = str(Path(checkpoint.__file__).parents[1])
    first = subprocess.Popen([sys.executable, "-m", "nextchar", "train", "--data", str(tiny_data_dir), "--out",
                              str(run), "--resume", "--max-steps", "100000", "--threads", "1"],
                             env=dict(os.environ, PYTHONPATH=src), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert first.stdout.readline().startswith(b"resuming")  # it holds the lock from before this line
        r = CliRunner().invoke(app, ["train", "--data", str(tiny_data_dir), "--out", str(run), "--resume",
                                     "--max-steps", "20", "--threads", "1"])
        assert r.exit_code == 2 and r.output.count("\n") == 1 and f"pid {first.pid}" in r.output, r.output
        time.sleep(0.5)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    reached = checkpoint.load(checkpoint.find(run, "latest"))[2]["step"]  # where the killed one got to
    r = CliRunner().invoke(app, ["train", "--data", str(tiny_data_dir), "--out", str(run), "--resume",
                                 "--max-steps", str(reached + 5), "--threads", "1"])
    assert r.exit_code == 0 and "taking it over" in r.output, r.output
    assert checkpoint.read_json(run / "result.json")["steps"] == reached + 5


def test_out_is_a_file(tiny_data_dir, tmp_path):
    f = tmp_path / "F"
    f.touch()
    with pytest.raises(UserError, match=f"^{f}: is a file, not a run directory"):
        train(tiny_data_dir, f, tiny(max_steps=2), progress=False)


def test_disk_full_during_a_checkpoint_on_a_real_small_file_system(tiny_data_dir, tmp_path, small_fs):
    """A 280 KB tmpfs holds the run and one checkpoint (160 KB), not a second one beside it: one-line error,
    exit 2, the first checkpoint intact; with room again, --resume finishes the run."""
    check = ("from nextchar import checkpoint; import sys; d = checkpoint.find(sys.argv[1]); "
             "print(checkpoint.load(d)[2]['step'], sorted(p.name for p in d.parent.iterdir()))")
    r = small_fs(f"""
$PY -m nextchar train --data {tiny_data_dir} --out "$FS/run" --preset tiny --max-steps 12 --threads 1 \
  > /dev/null 2> {tmp_path}/err; echo $? > {tmp_path}/rc
$PY -c "{check}" "$FS/run" > {tmp_path}/after
mount -o remount,size=4m "$FS"
$PY -m nextchar train --data {tiny_data_dir} --out "$FS/run" --resume --threads 1 > {tmp_path}/resumed 2>&1
echo $? >> {tmp_path}/resumed
""", size_kb=280)
    assert r.returncode == 0, r.stderr
    err = (tmp_path / "err").read_text()
    assert (tmp_path / "rc").read_text().strip() == "2" and "Traceback" not in err, err
    assert re.fullmatch(r"error: \S+/fs/run/checkpoints/\.step-0000010\.tmp/\S+: no space left on device \(needs "
                        r"about [\d.]+ KB, [\d.]+ [KB]+ free there\); the run's previous checkpoint is intact",
                        err.splitlines()[-1]), err  # (the lines before are the progress bar's)
    step, names = (tmp_path / "after").read_text().split(" ", 1)
    assert step == "5" and eval(names) == ["best.json", "latest.json", "step-0000005"]  # no half-written folder
    resumed = (tmp_path / "resumed").read_text()
    assert "resuming" in resumed and "done: 12 steps" in resumed and resumed.split()[-1] == "0", resumed


def test_the_final_evaluation_costs_in_proportion_and_says_so(tiny_data_dir, tmp_path, capsys):
    from nextchar.train import final_positions

    tc = tiny().train  # eval_positions 20, final_eval_positions 2000
    assert final_positions(tc, 10_000, 32, 9) == max(20, 10_000 // (32 * 9)) == 34
    assert final_positions(tc, 10**9, 32, 9) == 2000 and final_positions(tc, 100, 32, 9) == 20
    tc.final_eval_positions = 0
    assert final_positions(tc, 10**9, 32, 9) == 0
    res = train(tiny_data_dir, tmp_path / "a", tiny(max_steps=40, eval_every=20), progress=False)
    out = capsys.readouterr().out
    assert res["final_eval_positions"] == 40 * 8 * 32 // (32 * 9) == 35
    assert "final evaluation of the best checkpoint" in out and "35 dev positions per language" in out
    assert "in proportion to the 10,240 characters trained on" in out
    assert {v["n"] for v in res["dev_languages"].values()} <= {35}
    # skipped: result.json takes the periodic evaluation of the best step
    res = train(tiny_data_dir, tmp_path / "b", tiny(max_steps=40, eval_every=20, final_eval_positions=0),
                progress=False)
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    best = min((x for x in lines if "dev_loss" in x), key=lambda x: x["dev_loss"])
    assert "final evaluation" not in capsys.readouterr().out
    assert res["final_eval_positions"] == 20 and res["top3"] == best["dev_top3"] and res["dev"]["ce"] == best["dev_loss"]
