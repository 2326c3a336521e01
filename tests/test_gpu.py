"""CUDA paths: bf16 autocast, torch.compile, gradient checkpointing, prediction and training on a GPU.

Skipped where no CUDA device is present (CI has none); benchmarks/gpu_session.sh runs them on a lent GPU.
"""

import json

import numpy as np
import pytest
import torch

from nextchar import checkpoint, engine
from nextchar.config import load
from nextchar.model import CharTransformer
from nextchar.train import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
torch.set_num_threads(1)


def model_and_batch(layers: int = 4, dropout: float = 0.0):
    cfg = load("tiny").model
    cfg.vocab_size, cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout = 50, layers, 64, 4, 128, dropout
    torch.manual_seed(0)
    m = CharTransformer(cfg)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 50, (4, cfg.context), generator=g)
    y = torch.randint(0, 50, (4, cfg.context), generator=g)
    return m, x, y


def test_cuda_fp32_matches_cpu_and_bf16_is_close():
    m, x, y = model_and_batch()
    cpu_logits, cpu_loss = m(x, y)
    g = m.cuda()
    with torch.no_grad():
        logits, loss = g(x.cuda(), y.cuda())
        with torch.autocast("cuda", dtype=torch.bfloat16):
            _, bf_loss = g(x.cuda(), y.cuda())
    torch.testing.assert_close(logits.cpu(), cpu_logits.detach(), atol=1e-4, rtol=1e-4)
    assert abs(bf_loss.item() - cpu_loss.item()) / cpu_loss.item() < 2e-2


def test_compiled_model_matches_eager_on_cuda():
    m, x, y = model_and_batch()
    m = m.cuda()
    x, y = x.cuda(), y.cuda()
    eager_logits, eager_loss = m(x, y)
    eager_loss.backward()
    want = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    logits, loss = torch.compile(m)(x, y)
    loss.backward()
    torch.testing.assert_close(logits, eager_logits, atol=1e-4, rtol=1e-4)
    for g, w in zip((p.grad for p in m.parameters()), want):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-3)


def test_grad_checkpoint_gives_the_same_gradients_on_cuda():
    m, x, y = model_and_batch(dropout=0.1)
    m = m.cuda()
    x, y = x.cuda(), y.cuda()
    torch.manual_seed(5)
    m(x, y)[1].backward()
    want = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    m.grad_checkpoint = True
    torch.manual_seed(5)  # checkpointing replays the dropout masks from the saved RNG state
    m(x, y)[1].backward()
    for g, w in zip((p.grad for p in m.parameters()), want):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)


def test_predictor_on_cuda_equals_cpu(tiny_run):
    prefixes = ["", "Hello wor", "Привет, ми", "שלו", "北京是"]
    a = engine.load(tiny_run).dist(prefixes)
    b = engine.load(tiny_run, device="cuda").dist(prefixes)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert np.allclose(b.sum(axis=1), 1.0, atol=1e-4)


def test_training_on_cuda_compiles_logs_mfu_and_resumes(tiny_data_dir, tmp_path, fail_at_batch):
    """A compiled bf16 run on the GPU: device and MFU in the logs; 6 steps == 3 + Ctrl-C + resume + 3 (to rounding)."""
    def cfg():
        c = load("tiny")
        c.train.max_steps, c.train.eval_every, c.train.device, c.train.threads = 6, 3, "cuda", 1
        return c

    res = train(tiny_data_dir, tmp_path / "straight", cfg(), progress=False)
    assert res["device"] == torch.cuda.get_device_name()
    lines = [json.loads(x) for x in (tmp_path / "straight/metrics.jsonl").read_text().splitlines()]
    if any(k in torch.cuda.get_device_name().upper() for k in ("H100", "H200", "A100")):
        assert all(0 < r["mfu"] < 1 for r in lines if "loss" in r)
    fail_at_batch(4)  # Ctrl-C during step 4 saves the state at the step-3 boundary
    with pytest.raises(KeyboardInterrupt):
        train(tiny_data_dir, tmp_path / "resumed", cfg(), progress=False)
    train(tiny_data_dir, tmp_path / "resumed", cfg(), resume=True, progress=False)
    a = checkpoint.load(checkpoint.find(tmp_path / "straight", "latest"), with_optimizer=False)[0]
    b = checkpoint.load(checkpoint.find(tmp_path / "resumed", "latest"), with_optimizer=False)[0]
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
