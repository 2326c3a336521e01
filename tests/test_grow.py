"""Progressive growth: new layers start as the identity, the optimizer carries on, checkpoints work across it."""

import json

import pytest
import torch

from nextchar import checkpoint, engine, files
from nextchar.config import load
from nextchar.errors import UserError
from nextchar.model import CharTransformer
from nextchar.train import at_depth, grow_model, make_optimizer, train

torch.set_num_threads(1)


def build(pos="learned", layers=2, dropout=0.0, variant="modern"):
    cfg = load("modern-2l").model
    cfg.vocab_size, cfg.d_model, cfg.d_ff, cfg.n_layers, cfg.pos = 40, 32, 64, layers, pos
    cfg.dropout, cfg.variant = dropout, variant
    return CharTransformer(cfg)


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_growth_preserves_predictions(pos):
    torch.manual_seed(0)
    m = build(pos)
    x = torch.randint(0, 40, (3, 20))
    # train a little first, so the old layers are not at their init
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    for _ in range(3):
        m(x, x)[1].backward()
        opt.step()
        opt.zero_grad()
    m.eval()
    with torch.no_grad():
        before = m(x)[0]
        new = m.grow(5)
        after = m(x)[0]
        cache: list = []
        parts = [m(x[:, a:b], cache=cache)[0] for a, b in ((0, 9), (9, 10), (10, 20))]
    assert len(m.blocks) == 5 and m.cfg.n_layers == 5 and len(cache) == 5
    assert len(new) == 3 * len(list(m.blocks[0].parameters()))
    torch.testing.assert_close(after, before, rtol=0, atol=0)  # the new blocks add exactly zero
    torch.testing.assert_close(torch.cat(parts, dim=1), after, rtol=1e-4, atol=1e-5)
    # and the new layers do learn: their input-side weights get gradients once the projections move
    m.train()
    m(x, x)[1].backward()
    assert m.blocks[4].fc2.weight.grad.abs().sum() > 0


def test_seed_variant_cannot_grow(tiny_data_dir, tmp_path):
    with pytest.raises(ValueError, match="post-LN"):
        build(variant="seed").grow(4)
    cfg = load("tiny", overrides=['model.variant="seed"', 'train.grow="1@0.5"'])
    cfg.train.max_steps, cfg.train.threads, cfg.train.device = 2, 1, "cpu"
    with pytest.raises(UserError, match="post-LN"):
        train(tiny_data_dir, tmp_path / "r", cfg, progress=False)


@pytest.mark.parametrize("spec,msg", [("2@0.5", "must start below model.n_layers"), ("4", "LAYERS@FRACTION"),
                                      ("1@1.5", "LAYERS@FRACTION"), ("0@0.5", "LAYERS@FRACTION")])
def test_bad_grow_specs(spec, msg, tiny_data_dir, tmp_path):
    with pytest.raises(UserError, match=msg):
        cfg = load("tiny", overrides=[f'train.grow="{spec}"'])
        cfg.train.max_steps, cfg.train.threads, cfg.train.device = 2, 1, "cpu"
        train(tiny_data_dir, tmp_path / "r", cfg, progress=False)


def test_optimizer_state_carries_over():
    torch.manual_seed(1)
    m = build(layers=1)
    tc = load("tiny").train
    opt = make_optimizer(m, tc, "cpu")
    x = torch.randint(0, 40, (2, 12))
    m(x, x)[1].backward()
    opt.step()
    old = {p: {k: v.clone() for k, v in opt.state[p].items()} for p in m.parameters()}
    opt = grow_model(m, opt, 3, tc, "cpu")
    params = list(m.parameters())
    assert sum(len(g["params"]) for g in opt.param_groups) == len(params)
    for p in params:
        if p in old:
            assert all(torch.equal(opt.state[p][k], v) for k, v in old[p].items())
        else:
            assert not opt.state.get(p)  # fresh AdamW state: created on its first step
    opt.zero_grad()
    m(x, x)[1].backward()
    opt.step()
    assert all(int(opt.state[p]["step"]) == (2 if p in old else 1) for p in params)


def tiny(**over):
    cfg = load("tiny", overrides=['train.grow="1@0.5"', "model.dropout=0.1"])  # dropout: RNG state matters
    cfg.train.max_steps, cfg.train.eval_every, cfg.train.threads, cfg.train.device = 8, 4, 1, "cpu"
    cfg.train.final_eval_positions = 50
    return cfg


def interrupted(data, run, at_call, fail_at_batch):
    fail_at_batch(at_call)
    with pytest.raises(KeyboardInterrupt):
        train(data, run, tiny(), progress=False)


@pytest.fixture(scope="module")
def straight(tiny_data_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("grow") / "straight"
    train(tiny_data_dir, run, tiny(), progress=False)
    return run


@pytest.mark.parametrize("stop", [3, 6])  # before and after growth at step 4
def test_resume_across_growth_is_exact(straight, tiny_data_dir, tmp_path, stop, fail_at_batch):
    run = tmp_path / "r"
    interrupted(tiny_data_dir, run, stop + 1, fail_at_batch)
    state = files.read_json(checkpoint.find(run, "latest") / "state.json")
    assert state["step"] == stop and state["n_layers"] == (1 if stop < 4 else 2)
    train(tiny_data_dir, run, tiny(), resume=True, progress=False)
    a = checkpoint.load(checkpoint.find(straight, "latest"))
    b = checkpoint.load(checkpoint.find(run, "latest"))
    for k in a[0]:
        assert torch.equal(a[0][k], b[0][k]), k
    assert a[1]["param_groups"] == b[1]["param_groups"]
    grows = [x for x in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "grow" in x]
    assert grows == [{"step": 4, "tokens": 4 * 8 * 32, "grow": [1, 2]}]


def test_checkpoint_before_growth_loads_at_full_depth(tiny_data_dir, tmp_path, fail_at_batch):
    """Checkpoints always hold the configured depth (inert blocks padded in), so predict/eval can use them."""
    run = tmp_path / "r"
    interrupted(tiny_data_dir, run, 3, fail_at_batch)
    weights = checkpoint.load(checkpoint.find(run, "latest"), with_optimizer=False)[0]
    cfg = tiny().model
    cfg.vocab_size, cfg.n_layers = int(weights["tok.weight"].shape[0]), 1
    shallow = CharTransformer(cfg).eval()
    shallow.load_state_dict(at_depth(weights, 1))
    pred = engine.load(run, tag="latest")
    assert len(pred.model.blocks) == 2
    x = torch.randint(0, cfg.vocab_size, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(pred.model(x)[0], shallow(x)[0], rtol=0, atol=0)
