"""CharTransformer: exact parameter counts, equivalence with PyTorch's encoder layer, causality, KV cache."""

import pytest
import torch

from nextchar.config import ModelConfig, load
from nextchar.model import CharTransformer

torch.set_num_threads(1)

# The founding study's counts with a 78-character vocabulary (docs/architecture-study.md).
STUDY_COUNTS = {
    "seed-12l": 2_399_310,
    "seed-4l": 813_134,
    "seed-ffn1024": 679_758,
    "seed-2l": 416_590,
    "seed-emb32": 80_398,
    "seed-small": 209_998,
    "seed-8l": 1_606_222,  # the study says "~1.6M"
    "seed-emb256": 4_256_846,  # the study says "~3M"; 256 wide x 8 layers with FF 512 is this
}


def build(preset: str, vocab: int = 78, **over) -> CharTransformer:
    cfg = load(preset).model
    cfg.vocab_size = vocab
    for k, v in over.items():
        setattr(cfg, k, v)
    return CharTransformer(cfg)


@pytest.mark.parametrize("preset,count", STUDY_COUNTS.items())
def test_seed_parameter_counts_match_the_study(preset, count):
    assert build(preset).num_params() == count


def test_seed_layer_equals_pytorch_encoder_layer():
    """Our hand-written post-LN block computes exactly what nn.TransformerEncoderLayer computes."""
    torch.manual_seed(0)
    m = build("seed-2l", vocab=50).eval()
    ref = torch.nn.TransformerEncoderLayer(128, 4, 512, 0.1, batch_first=True).eval()
    b = m.blocks[0]
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(b.attn.qkv.weight)
        ref.self_attn.in_proj_bias.copy_(b.attn.qkv.bias)
        ref.self_attn.out_proj.weight.copy_(b.attn.proj.weight)
        ref.self_attn.out_proj.bias.copy_(b.attn.proj.bias)
        for a, c in ((ref.linear1, b.fc1), (ref.linear2, b.fc2), (ref.norm1, b.norm1), (ref.norm2, b.norm2)):
            a.weight.copy_(c.weight)
            a.bias.copy_(c.bias)
    x = torch.randn(3, 17, 128)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(17)
    want = ref(x, src_mask=mask, is_causal=True)
    got, _ = b(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("preset,pos", [("seed-2l", "learned"), ("modern-2l", "learned"), ("modern-2l", "rope")])
def test_causality(preset, pos):
    """Changing a later character never changes an earlier prediction."""
    torch.manual_seed(1)
    m = build(preset, vocab=40, n_layers=2, d_model=32, d_ff=64, pos=pos).eval()
    x = torch.randint(0, 40, (2, 24))
    y = x.clone()
    y[:, 15:] = torch.randint(0, 40, (2, 9))
    with torch.no_grad():
        a, _ = m(x)
        b, _ = m(y)
    torch.testing.assert_close(a[:, :15], b[:, :15])
    assert not torch.allclose(a[:, 15:], b[:, 15:])


@pytest.mark.parametrize("preset,pos", [("seed-2l", "learned"), ("modern-2l", "learned"), ("modern-2l", "rope")])
def test_kv_cache_matches_full_forward(preset, pos):
    """Feeding characters a few at a time through the cache gives the full forward's logits."""
    torch.manual_seed(2)
    m = build(preset, vocab=40, d_model=32, d_ff=64, pos=pos).eval()
    x = torch.randint(0, 40, (2, 20))
    with torch.no_grad():
        full, _ = m(x)
        cache: list = []
        parts = [m(x[:, a:b], cache=cache)[0] for a, b in ((0, 7), (7, 8), (8, 15), (15, 20))]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-4, atol=1e-5)


def test_at_selects_one_position_per_row():
    torch.manual_seed(3)
    m = build("modern-2l", vocab=30, d_model=32, d_ff=64).eval()
    x = torch.randint(0, 30, (3, 10))
    with torch.no_grad():
        full, _ = m(x)
        sel, _ = m(x, at=torch.tensor([9, 0, 4]))
    torch.testing.assert_close(sel[:, 0], full[torch.arange(3), torch.tensor([9, 0, 4])])


def test_loss_is_cross_entropy_and_context_limit():
    m = build("modern-2l", vocab=30, d_model=32, d_ff=64, context=16)
    x = torch.randint(0, 30, (2, 16))
    logits, loss = m(x, x)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(logits.reshape(-1, 30), x.reshape(-1)).item())
    with pytest.raises(ValueError, match="context"):
        m(torch.zeros(1, 17, dtype=torch.long))


def test_gradient_checkpointing_gives_equal_gradients():
    torch.manual_seed(4)
    m = build("modern-2l", vocab=30, d_model=32, d_ff=64, dropout=0.0)
    x = torch.randint(0, 30, (2, 12))
    m(x, x)[1].backward()
    want = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    m.grad_checkpoint = True
    m(x, x)[1].backward()
    for g, w in zip((p.grad for p in m.parameters()), want):
        torch.testing.assert_close(g, w)


def test_modern_ties_embeddings_and_drops_biases():
    # embedding 78x128 (shared with the output) + per layer qkv/proj 4*128^2, MLP 2*128*512, 2 norms; final norm
    assert build("modern-2l", pos="rope").num_params() == 78 * 128 + 2 * (4 * 128**2 + 2 * 128 * 512 + 2 * 128) + 128
    assert build("modern-2l", pos="learned").num_params() == build("modern-2l", pos="rope").num_params() + 128 * 128


def test_config_rejects_all_problems_at_once():
    from nextchar.errors import UserError

    with pytest.raises(UserError) as e:
        ModelConfig(d_model=30, n_heads=4, dropout=1.5, variant="big")
    msg = str(e.value)
    assert "variant" in msg and "dropout" in msg and "divisible" in msg
    with pytest.raises(UserError, match="ngram_order must be 2 to 8.*|ngram_buckets must be >= 0"):
        ModelConfig(ngram_buckets=-1, ngram_order=9)


def test_hashed_ngram_inputs_are_causal_and_feed_through_the_cache():
    """Each position adds its hashed 2..4-grams: later ids never change earlier logits, and feeding the cache
    with the ids before each piece (`prev`) gives the full forward's logits."""
    from nextchar.model import ngram_buckets

    torch.manual_seed(5)
    m = build("modern-2l", vocab=40, d_model=32, d_ff=64, ngram_buckets=97, ngram_order=4).eval()
    assert not m.ngram.weight.any()  # starts at zero (see reset_parameters); random rows here, as if trained
    torch.nn.init.normal_(m.ngram.weight)
    assert m.num_params() == build("modern-2l", vocab=40, d_model=32, d_ff=64).num_params() + 97 * 32
    x = torch.randint(0, 40, (2, 20))
    rows = ngram_buckets(x, None, 40, 4, 97)  # (3, 2, 20)
    assert rows.shape == (3, 2, 20) and 0 <= rows.min() and rows.max() < 97
    # a position's 2-gram row depends on its id and the one before, not on ids further back
    y = x.clone()
    y[:, 5] = (x[:, 5] + 1) % 40
    diff = ngram_buckets(y, None, 40, 4, 97) != rows
    assert not diff[0, :, 7:].any() and not diff[:, :, :5].any()
    with torch.no_grad():
        full, _ = m(x)
        other, _ = m(y)
        torch.testing.assert_close(full[:, :5], other[:, :5])
        assert not torch.allclose(full[:, 5:8], other[:, 5:8])
        cache: list = []
        parts = []
        for a, b in ((0, 7), (7, 8), (8, 15), (15, 20)):
            prev = torch.nn.functional.pad(x[:, :a], (3, 0), value=40)[:, -3:]  # the 3 ids before x[:, a]
            parts.append(m(x[:, a:b], cache=cache, prev=prev)[0])
        with pytest.raises(ValueError, match="prev"):
            m(x[:, :1], cache=cache)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-4, atol=1e-5)
