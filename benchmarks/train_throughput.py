"""Training throughput: tokens/s, step time, memory and MFU per preset, vs a plain nn.TransformerEncoder stack.

    python benchmarks/train_throughput.py                      # CPU or the GPU, default rows
    python benchmarks/train_throughput.py --presets modern-12l --seconds 10 --compile

Rows: nextchar's CharTransformer (the training loop's step: AdamW, grad clip, bf16 autocast on CUDA, fused AdamW
and torch.compile on CUDA by default) and a plain implementation of the same shape (token + position embedding,
nn.TransformerEncoderLayer pre-norm GELU stack with a causal mask, linear head, AdamW; no compile, no fusion),
then gradient checkpointing on/off at a long context. Memory is the peak during the timed steps above the level
before them: on CUDA torch.cuda.max_memory_allocated, on CPU the process's peak RSS (Linux: VmHWM, reset through
/proc/self/clear_refs; glibc is told to return large blocks at once, so RSS follows live tensors).
Numbers on a shared machine are noisy: compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

# Big allocations straight from mmap and back on free: CPU peak RSS then measures live tensors, not malloc's cache.
# glibc reads this at start-up, so the script re-runs itself once with it set.
if sys.platform == "linux" and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(1 << 16)
    os.execv(sys.executable, [sys.executable, *sys.argv])

import torch
import torch.nn.functional as F
from torch import nn

from nextchar.config import load
from nextchar.model import CharTransformer
from nextchar.runtime import device_name
from nextchar.train import flops_per_token, peak_flops

VOCAB = 495  # the Dasher vocabulary's size
# Measured on a 2-core CPU, batch 32 x 128, d 128, FF 512, 2 threads (tokens/s), for comparison.
CPU_REFERENCE = {"modern-2l": 26_800, "modern-4l": 15_100, "modern-12l": 5_500}


class Plain(nn.Module):
    """The same shape written the plain way: nn.TransformerEncoder of pre-norm GELU layers and a causal mask."""

    def __init__(self, vocab: int, d: int, layers: int, heads: int, ff: int, context: int, dropout: float):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(context, d)
        layer = nn.TransformerEncoderLayer(d, heads, ff, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context), persistent=False)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor):
        T = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(T, device=idx.device))  # (B, T, C)
        x = self.enc(x, mask=self.mask[:T, :T], is_causal=True)  # (B, T, C)
        logits = self.head(self.norm(x))  # (B, T, V)
        return logits, F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))


def rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak(device: str) -> float:
    """Reset the peak-memory counter; returns the current level (MB)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        return math.nan
    return rss_kb("VmRSS") / 1024


def peak(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return rss_kb("VmHWM") / 1024 if os.path.exists("/proc/self/status") else math.nan


def measure(preset: str, impl: str, device: str, batch: int, context: int, seconds: float, ckpt: bool = False,
            use_compile: bool = False) -> dict:
    cfg = load(preset).model
    cfg.vocab_size, cfg.context = VOCAB, context
    torch.manual_seed(0)
    ours = CharTransformer(cfg)
    fpt = flops_per_token(ours)  # the same estimate for both: same shape, same work
    if impl == "plain":
        model = Plain(VOCAB, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_ff, context, cfg.dropout).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    else:
        model = ours.to(device)
        model.grad_checkpoint = ckpt
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device == "cuda")
    step_model = torch.compile(model) if use_compile else model
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    x = torch.randint(0, VOCAB, (batch, context), device=device)
    y = torch.randint(0, VOCAB, (batch, context), device=device)

    def step() -> None:
        with amp:
            _, loss = step_model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(5 if use_compile else 2):  # warm-up: allocations, optimizer state, compilation
        step()
    base = reset_peak(device)
    n, t0 = 0, time.perf_counter()
    while True:
        step()
        n += 1
        if device == "cuda":
            torch.cuda.synchronize()
        if time.perf_counter() - t0 >= seconds and n >= 2:
            break
    dt = (time.perf_counter() - t0) / n
    tok_s = batch * context / dt
    pk = peak_flops(device_name(device)) if device == "cuda" else None
    return {"preset": preset, "impl": impl, "device": device_name(device), "context": context, "batch": batch,
            "ckpt": ckpt, "compile": use_compile, "tok_s": tok_s, "step_ms": dt * 1000, "peak_mb": peak(device),
            "act_mb": peak(device) - base, "mfu": tok_s * fpt / pk if pk else None}


def table(rows: list[dict]) -> str:
    head = f"{'preset':<11} {'impl':<9} {'T':>4} {'B':>3} {'ckpt':>4} {'compile':>7} {'tok/s':>9} {'step ms':>8} " \
           f"{'peak MB':>8} {'act MB':>7} {'MFU':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        lines.append(f"{r['preset']:<11} {r['impl']:<9} {r['context']:>4} {r['batch']:>3} {'on' if r['ckpt'] else 'off':>4} "
                     f"{'on' if r['compile'] else 'off':>7} {r['tok_s']:>9,.0f} {r['step_ms']:>8.1f} "
                     f"{r['peak_mb']:>8.0f} {r['act_mb']:>7.0f} {mfu:>6}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="modern-2l,modern-4l,modern-12l")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per row (after warm-up)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile on CPU (always on CUDA)")
    ap.add_argument("--ckpt-preset", default="modern-12l", help="preset for the gradient-checkpointing rows")
    ap.add_argument("--ckpt-context", type=int, default=512)
    ap.add_argument("--ckpt-batch", type=int, default=0, help="batch for those rows (0: 8 on CPU, 32 on CUDA)")
    ap.add_argument("--ckpt-eager", action="store_true", help="no torch.compile for those rows on CUDA (saves the "
                    "compile time when the device time is short)")
    args = ap.parse_args()
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else \
        ("cpu" if args.device == "auto" else args.device)
    if device == "cpu":
        torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    print(f"device: {device_name(device)} | threads {torch.get_num_threads()} | torch {torch.__version__}", flush=True)

    rows = []
    compiled = device == "cuda" or args.compile
    for preset in args.presets.split(","):
        variants = [("nextchar", False)] + ([("nextchar", True)] if compiled else []) + [("plain", False)]
        for impl, comp in variants:
            rows.append(measure(preset, impl, device, args.batch, args.context, args.seconds, use_compile=comp))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    print()
    for preset in args.presets.split(","):
        ours = max(r["tok_s"] for r in rows if r["preset"] == preset and r["impl"] == "nextchar")
        plain = next(r["tok_s"] for r in rows if r["preset"] == preset and r["impl"] == "plain")
        ref = f" (2-core reference: {CPU_REFERENCE[preset]:,} tok/s)" if device == "cpu" and preset in CPU_REFERENCE \
            else ""
        print(f"{preset}: nextchar {ours:,.0f} tok/s = {ours / plain:.2f}x the plain nn.TransformerEncoder stack"
              f"{ref}")

    batch = args.ckpt_batch or (32 if device == "cuda" else 8)
    ck = [measure(args.ckpt_preset, "nextchar", device, batch, args.ckpt_context, args.seconds, ckpt=c,
                  use_compile=device == "cuda" and not args.ckpt_eager) for c in (False, True)]
    print()
    print(f"gradient checkpointing, {args.ckpt_preset} at context {args.ckpt_context}, batch {batch}:")
    print(table(ck))
    off, on = ck
    print(f"activation memory {off['act_mb']:.0f} MB -> {on['act_mb']:.0f} MB "
          f"({1 - on['act_mb'] / off['act_mb']:.0%} less); step time {on['step_ms'] / off['step_ms'] - 1:+.0%}")


if __name__ == "__main__":
    main()
