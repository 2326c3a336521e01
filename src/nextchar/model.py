"""CharTransformer: the study's exact post-LN model ("seed") and a pre-norm modern variant, with KV cache."""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from nextchar.config import ModelConfig

# One (k, v) pair per layer, each (B, H, T_past, Dh); the cache's length is the number of positions seen.
KVCache = list[tuple[torch.Tensor, torch.Tensor]]

# Hashed n-grams: a polynomial hash modulo a prime below 2**31 (so products fit int64 in torch and ONNX alike).
# A base coprime to the table size matters: an earlier base of vocab_size+1 (even) with a power-of-two table
# kept only the oldest ids' bits, and order 8 then trained worse than no n-grams at all.
HASH_PRIME = 2_147_483_647
HASH_BASE = 1_000_003


def ngram_buckets(idx: torch.Tensor, prev: torch.Tensor | None, vocab_size: int, order: int,
                  buckets: int) -> torch.Tensor:
    """Table rows (order-1, B, T) of each position's 2..order-gram (its id and the ids before it).

    `prev` (B, >= order-1) holds the ids just before idx; None means idx starts the window, and missing ids
    are the pad value vocab_size, as at the start of every training window.
    """
    T = idx.shape[1]
    K = order - 1
    if prev is None:
        full = F.pad(idx.long(), (K, 0), value=vocab_size)  # (B, K+T)
    else:
        full = torch.cat([prev[:, prev.shape[1] - K:].long(), idx.long()], dim=1)  # (B, K+T)
    code = full[:, K:] + 1  # (B, T) the 1-gram
    rows = []
    for n in range(2, order + 1):
        code = (code * HASH_BASE + full[:, K + 1 - n:K + 1 - n + T] + 1) % HASH_PRIME  # (B, T) the n-gram
        rows.append(code % buckets)
    return torch.stack(rows)  # (order-1, B, T)


def sinusoidal(n: int, d: int) -> torch.Tensor:
    """The fixed sine/cosine position table of "Attention is all you need" (the study's encoding)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]  # (n, 1)
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))  # (d/2,)
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: d // 2])
    return pe  # (n, d)


def rope_tables(n: int, dh: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for rotary position embedding over head dim `dh`."""
    inv = 1.0 / base ** (torch.arange(0, dh, 2, dtype=torch.float32) / dh)  # (dh/2,)
    ang = torch.arange(n, dtype=torch.float32)[:, None] * inv[None, :]  # (n, dh/2)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[2i], x[2i+1]) of each head vector by the position's angle."""
    x1, x2 = x[..., 0::2], x[..., 1::2]  # (B, H, T, Dh/2)
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (B, H, T, Dh/2, 2)
    return out.flatten(-2)  # (B, H, T, Dh)


class Attention(nn.Module):
    """Causal multi-head self-attention written out over F.scaled_dot_product_attention."""

    def __init__(self, cfg: ModelConfig, bias: bool):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=bias)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                past: tuple[torch.Tensor, torch.Tensor] | None = None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, Dh)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        P = 0
        if past is not None:
            P = past[0].shape[2]
            k = torch.cat((past[0], k), dim=2)  # (B, H, P+T, Dh)
            v = torch.cat((past[1], v), dim=2)
        drop = self.dropout if self.training else 0.0
        if P == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        elif T == 1:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # one new query sees everything
        else:
            # is_causal aligns the mask top-left; with a cache, query i sits at absolute position P + i.
            mask = torch.ones(T, P + T, dtype=torch.bool, device=x.device).tril(diagonal=P)  # (T, P+T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.proj(y), (k, v)


class SeedBlock(nn.Module):
    """nn.TransformerEncoderLayer's post-LN computation (ReLU, biases, dropout), parameter for parameter."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn = Attention(cfg, bias=True)
        self.fc1 = nn.Linear(cfg.d_model, cfg.d_ff)
        self.fc2 = nn.Linear(cfg.d_ff, cfg.d_model)
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, rope=None, past=None):
        a, kv = self.attn(x, None, past)
        x = self.norm1(x + self.drop(a))
        x = self.norm2(x + self.drop(self.fc2(self.drop(F.relu(self.fc1(x))))))
        return x, kv


class ModernBlock(nn.Module):
    """Pre-norm block: x + attn(norm(x)), x + mlp(norm(x)); GELU; no biases."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.d_model, bias=False)
        self.attn = Attention(cfg, bias=False)
        self.norm2 = nn.LayerNorm(cfg.d_model, bias=False)
        self.fc1 = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.fc2 = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, rope=None, past=None):
        a, kv = self.attn(self.norm1(x), rope, past)
        x = x + self.drop(a)
        x = x + self.drop(self.fc2(F.gelu(self.fc1(self.norm2(x)))))
        return x, kv


class CharTransformer(nn.Module):
    """Causal character language model: ids (B, T) -> next-character logits (B, T, V)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size < 1:
            raise ValueError("ModelConfig.vocab_size must be set from the vocabulary before building a model")
        self.cfg = cfg
        self.grad_checkpoint = False
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        if cfg.ngram_buckets:
            self.ngram = nn.Embedding(cfg.ngram_buckets, cfg.d_model)  # hashed 2..ngram_order-grams, summed
        seed = cfg.variant == "seed"
        self.blocks = nn.ModuleList(SeedBlock(cfg) if seed else ModernBlock(cfg) for _ in range(cfg.n_layers))
        if seed:
            self.register_buffer("pe", sinusoidal(cfg.context, cfg.d_model), persistent=False)
            self.head = nn.Linear(cfg.d_model, cfg.vocab_size)  # untied, with bias, no final norm
        else:
            self.norm = nn.LayerNorm(cfg.d_model, bias=False)
            if cfg.pos == "learned":
                self.pos = nn.Embedding(cfg.context, cfg.d_model)
            else:
                cos, sin = rope_tables(cfg.context, cfg.d_model // cfg.n_heads)
                self.register_buffer("rope_cos", cos, persistent=False)
                self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 style init for modern (residual projections scaled by depth); PyTorch defaults for seed.

        The hashed n-gram table starts at zero: most long n-grams are rare, and random rows that training
        seldom touches would only add noise to every input (order 6 trained worse than none with them).
        """
        if self.cfg.ngram_buckets:
            nn.init.zeros_(self.ngram.weight)
        if self.cfg.variant == "seed":
            # nn.TransformerEncoderLayer initializes in_proj with xavier_uniform and zero bias.
            for b in self.blocks:
                nn.init.xavier_uniform_(b.attn.qkv.weight)
                nn.init.zeros_(b.attn.qkv.bias)
                nn.init.zeros_(b.attn.proj.bias)
            return
        std = 0.02
        for name, p in self.named_parameters():
            if p.dim() < 2 or name == "ngram.weight":
                continue
            scaled = name.endswith("attn.proj.weight") or name.endswith("fc2.weight")
            nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.cfg.n_layers) if scaled else std)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def grow(self, n_layers: int) -> list[nn.Parameter]:
        """Append modern blocks up to n_layers deep that start as the identity, so the function is unchanged.

        A new block's residual branches end in zero-initialized projections (attn.proj, fc2), so it adds nothing
        until trained; the rest is initialized as in reset_parameters. Post-LN (seed) blocks normalize their
        output and cannot be the identity, so they cannot grow. Returns the new parameters (for the optimizer).
        """
        if self.cfg.variant == "seed":
            raise ValueError("the seed (post-LN) variant cannot grow: a post-LN block cannot start as the identity")
        if n_layers < len(self.blocks):
            raise ValueError(f"cannot grow from {len(self.blocks)} to fewer layers ({n_layers})")
        cfg = dataclasses.replace(self.cfg, n_layers=n_layers)
        ref = self.tok.weight
        new: list[nn.Parameter] = []
        for _ in range(n_layers - len(self.blocks)):
            block = ModernBlock(cfg)  # built and initialized on CPU: the same draws whatever the device
            for p in block.parameters():
                if p.dim() >= 2:
                    nn.init.normal_(p, 0.0, 0.02)
            nn.init.zeros_(block.attn.proj.weight)
            nn.init.zeros_(block.fc2.weight)
            block.to(device=ref.device, dtype=ref.dtype).train(self.training)
            self.blocks.append(block)
            new.extend(block.parameters())
        self.cfg = cfg
        return new

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None,
                last_only: bool = False, at: torch.Tensor | None = None, prev: torch.Tensor | None = None):
        """Logits (B, T, V) and the mean cross-entropy when targets are given.

        `last_only` keeps only the last position, `at` (B,) one position per row: logits (B, 1, V) either way,
        which skips the output layer for positions nobody reads. With `cache` (a list, possibly empty), past
        keys/values are reused and the list is replaced in place, so a caller feeds only new characters; a model
        with hashed n-gram inputs then also needs `prev` (B, ngram_order-1), the ids before idx (pad: vocab_size).
        """
        B, T = idx.shape
        P = cache[0][0].shape[2] if cache else 0
        if P + T > self.cfg.context:
            raise ValueError(f"sequence of {P + T} exceeds the model's context of {self.cfg.context}")
        x = self.tok(idx)  # (B, T, C)
        if self.cfg.ngram_buckets:
            if P and prev is None:
                raise ValueError("feeding a cache to a model with hashed n-gram inputs needs `prev`")
            c = self.cfg
            x = x + self.ngram(ngram_buckets(idx, prev, c.vocab_size, c.ngram_order, c.ngram_buckets)).sum(0)
        rope = None
        if self.cfg.variant == "seed":
            x = x * math.sqrt(self.cfg.d_model) + self.pe[P:P + T]  # (B, T, C)
        elif self.cfg.pos == "learned":
            x = x + self.pos(torch.arange(P, P + T, device=idx.device))  # (B, T, C)
        else:
            rope = (self.rope_cos[P:P + T], self.rope_sin[P:P + T])  # (T, Dh/2) each
        x = self.drop(x)
        new_cache: KVCache = []
        for i, block in enumerate(self.blocks):
            past = cache[i] if cache else None
            if self.grad_checkpoint and self.training and torch.is_grad_enabled():
                x, kv = checkpoint(block, x, rope, past, use_reentrant=False)
            else:
                x, kv = block(x, rope, past)
            new_cache.append(kv)
        if cache is not None:
            cache[:] = new_cache
        if at is not None:
            x = x[torch.arange(B, device=x.device), at][:, None, :]  # (B, 1, C)
        elif last_only:
            x = x[:, -1:, :]  # (B, 1, C)
        if self.cfg.variant == "seed":
            logits = self.head(x)  # (B, T, V)
        else:
            logits = F.linear(self.norm(x), self.tok.weight)  # (B, T, V) tied with the input embedding
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss
