"""The training loop: one explicit loop for CPU, one GPU or many ranks (torchrun), with exact resume."""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist

from nextchar import checkpoint
from nextchar.config import RunConfig, TrainConfig
from nextchar.data import BatchSampler, DataSet, open_data
from nextchar.errors import UserError
from nextchar.evaluate import evaluate
from nextchar.model import CharTransformer
from nextchar.predict import TorchPredictor

FINAL_EVAL_POSITIONS = 2000  # dev positions per language for result.json (as `nextchar eval`)


# -- ranks ------------------------------------------------------------------------------------------
def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def print0(*args, **kwargs) -> None:
    if is_main():
        print(*args, **kwargs, flush=True)


def setup_distributed(device: str) -> None:
    """Join the process group when launched by torchrun (RANK/WORLD_SIZE set); NCCL on GPU, gloo on CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")


# -- settings ---------------------------------------------------------------------------------------
def set_threads(n: int) -> int:
    """Set torch's CPU threads explicitly (0 = all cores, shared out among local ranks)."""
    if n <= 0:
        n = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(n)
    return n


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return name


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warmup over warmup_steps, then cosine from lr down to lr * min_lr_ratio as progress goes 0 -> 1."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def total_steps(cfg: TrainConfig, tokens_per_step: int) -> int:
    """Optimizer steps the budget allows (0 when only a time budget is given)."""
    steps = [s for s in (cfg.max_steps, math.ceil(cfg.max_tokens / tokens_per_step) if cfg.max_tokens else 0) if s]
    return min(steps) if steps else 0


def rng_state() -> dict:
    st = {"torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}
    if torch.cuda.is_available():
        st["cuda"] = [base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()]
    return st


def set_rng_state(st: dict) -> None:
    def t(s: str) -> torch.Tensor:
        return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)

    torch.set_rng_state(t(st["torch"]))
    if "cuda" in st and torch.cuda.is_available() and len(st["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([t(s) for s in st["cuda"]])


class Progress:
    """One-line progress: bar, step, loss, tokens/s, ETA; redrawn on a terminal, printed now and then otherwise."""

    def __init__(self, total: int, minutes: float, enabled: bool):
        self.total, self.seconds, self.enabled = total, minutes * 60, enabled
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def update(self, step: int, elapsed: float, frac: float, loss: float, tok_s: float, lr: float,
               force: bool = False) -> None:
        now = time.time()
        if not self.enabled or (not force and now - self.last < (0.5 if self.tty else 30)):
            return
        self.last = now
        eta = elapsed * (1 - frac) / frac if frac > 0 else float("nan")
        bar = "#" * int(20 * frac) + "." * (20 - int(20 * frac))
        total = f"/{self.total}" if self.total else ""
        msg = (f"[{bar}] {frac:4.0%} step {step}{total} loss {loss:.3f} | {tok_s / 1000:.1f}k tok/s | "
               f"lr {lr:.1e} | {fmt_time(elapsed)} elapsed, ETA {fmt_time(eta)}")
        sys.stderr.write(("\r" + msg + "\033[K") if self.tty else msg + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


def fmt_time(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


# -- run directory ----------------------------------------------------------------------------------
def prepare_run_dir(out: Path, cfg: RunConfig, ds: DataSet, resume: bool, preset: str | None) -> RunConfig:
    """Write config.json + vocab.json for a new run, or check a resumed run matches the data and model."""
    cfg_path = out / "config.json"
    if cfg_path.exists():
        if not resume:
            raise UserError(f"{out}: run directory already holds a run (use --resume, or another --out)")
        old = checkpoint.read_json(cfg_path, "run config")
        if old.get("vocab_hash") != ds.vocab.hash:
            raise UserError(f"{out}: run was trained with another vocabulary ({old.get('vocab_hash')}) than "
                            f"{ds.path} ({ds.vocab.hash})")
        if old.get("model") != asdict(cfg.model):
            raise UserError(f"{out}: --resume with a different model config than the run's config.json")
    if cfg.model.vocab_size != ds.vocab.size:
        raise UserError(f"model.vocab_size={cfg.model.vocab_size} but {ds.path} has {ds.vocab.size} symbols")
    if is_main():
        out.mkdir(parents=True, exist_ok=True)
        checkpoint.atomic_write_json(cfg_path, {
            "model_type": "transformer", "preset": preset, "data": str(ds.path.resolve()),
            "vocab_hash": ds.vocab.hash, "languages": ds.languages, **cfg.to_dict()})
        ds.vocab.save(out / "vocab.json")
    return cfg


def train(data: str | Path, out: str | Path, cfg: RunConfig, resume: bool = False, preset: str | None = None,
          progress: bool = True) -> dict:
    """Train a CharTransformer on a prepared data dir into a run dir; returns the result.json contents."""
    tc = cfg.train
    device = resolve_device(tc.device)
    setup_distributed(device)
    threads = set_threads(tc.threads)
    out = Path(out)
    ds = open_data(data)
    cfg.model.vocab_size = cfg.model.vocab_size or ds.vocab.size
    if not (tc.max_steps or tc.max_tokens or tc.max_minutes):
        raise UserError("no training budget: give --max-steps, --max-tokens or --max-minutes")
    micro_bs, rem = divmod(tc.batch_size, tc.grad_accum * world())
    if rem or micro_bs < 1:
        raise UserError(f"batch_size {tc.batch_size} must be a multiple of grad_accum x world size "
                        f"({tc.grad_accum} x {world()})")
    prepare_run_dir(out, cfg, ds, resume, preset)

    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.manual_seed(tc.seed)
    raw = CharTransformer(cfg.model).to(device)
    decay = [p for p in raw.parameters() if p.dim() >= 2]
    no_decay = [p for p in raw.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=tc.lr, betas=(tc.beta1, tc.beta2), fused=device == "cuda")
    sampler = BatchSampler(ds, "train", cfg.model.context, micro_bs, tc.seed, tc.lang_temperature, rank(), world())
    step, tokens, train_seconds, best = 0, 0, 0.0, math.inf

    ck = checkpoint.find(out, "latest") if resume else None
    if ck is not None:
        weights, opt_state, state = checkpoint.load(ck)
        if state.get("vocab_hash") != ds.vocab.hash:
            raise UserError(f"{ck}: checkpoint vocabulary differs from {ds.path}")
        raw.load_state_dict(weights)
        if opt_state is not None:
            opt.load_state_dict(opt_state)
        samplers = state.get("sampler", [])
        if len(samplers) == world():
            sampler.load_state_dict(samplers[rank()])
        else:
            print0(f"note: resuming on {world()} ranks from {len(samplers)}: batches are re-seeded")
        set_rng_state(state["rng"])
        step, tokens, train_seconds = state["step"], state["tokens"], state["train_seconds"]
        best = state.get("best_dev_loss", math.inf)
        print0(f"resuming {out} from step {step}")
    elif resume:
        print0(f"note: {out} has no checkpoint yet; starting from scratch")

    model: torch.nn.Module = raw
    if tc.compile:
        model = torch.compile(model)
    if world() > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[torch.cuda.current_device()]
                                                          if device == "cuda" else None)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" and tc.amp else contextlib.nullcontext()
    tokens_per_step = tc.batch_size * cfg.model.context
    n_steps = total_steps(tc, tokens_per_step)
    params = raw.num_params()
    print0(f"model: {params:,} parameters ({cfg.model.variant}, {cfg.model.n_layers} layers, d={cfg.model.d_model})"
           f" | device {device} | threads {threads} | world {world()} | batch {tc.batch_size} x {cfg.model.context}")
    bar = Progress(n_steps, tc.max_minutes, progress and is_main())
    metrics_path = out / "metrics.jsonl"

    def log(rec: dict) -> None:
        if is_main():
            with open(metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")

    def dev_eval(positions: int) -> dict:
        res = evaluate(TorchPredictor(raw, ds.vocab, device=device), ds, "dev", positions)
        raw.train()
        return res

    def save(tags: tuple[str, ...], snap: dict) -> None:
        if not is_main():
            return
        st = dict(snap, vocab_hash=ds.vocab.hash, best_dev_loss=best, config=cfg.to_dict())
        checkpoint.save(out, raw.state_dict(), opt.state_dict(), st, tags)

    def snapshot() -> dict:
        samplers = [sampler.state_dict()]
        if world() > 1:
            samplers = [None] * world()
            dist.all_gather_object(samplers, sampler.state_dict())
        return {"step": step, "tokens": tokens, "train_seconds": train_seconds, "sampler": samplers,
                "rng": rng_state()}

    def progress_frac() -> float:
        fr = [step / n_steps] if n_steps else []
        if tc.max_minutes:
            fr.append(train_seconds / (tc.max_minutes * 60))
        return min(1.0, max(fr))

    raw.train()
    interrupted = False
    t_log, tok_log = time.time(), tokens
    loss_acc = torch.zeros((), device=device)
    snap = snapshot()
    try:
        while progress_frac() < 1.0:
            if step > 0 and step % tc.eval_every == 0 and not (ck is not None and step == state["step"]):
                snap = snapshot()  # collective under DDP: every rank reaches this step together
                if is_main():
                    ev = dev_eval(tc.eval_positions)
                    dev_loss = ev["macro"]["ce"]
                    tags = ("latest", "best") if dev_loss < best else ("latest",)
                    best = min(best, dev_loss)
                    log({"step": step, "tokens": tokens, "dev_loss": dev_loss, "dev_top1": ev["macro"]["top1"],
                         "dev_top3": ev["macro"]["top3"], "dev_lang_loss": {k: v["ce"] for k, v in
                                                                            ev["languages"].items()}})
                    save(tags, snap)
            t0 = time.time()
            lr = lr_at(tc, step, progress_frac())
            for g in opt.param_groups:
                g["lr"] = lr
            for micro in range(tc.grad_accum):
                x, y = sampler.next_batch()
                x = torch.from_numpy(x).to(device, non_blocking=True)
                y = torch.from_numpy(y).to(device, non_blocking=True)
                sync = micro == tc.grad_accum - 1 or world() == 1
                with (contextlib.nullcontext() if sync else model.no_sync()), amp:
                    _, loss = model(x, y)
                    (loss / tc.grad_accum).backward()
                loss_acc += loss.detach() / tc.grad_accum
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(raw.parameters(), tc.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.synchronize()
            step += 1
            tokens += tokens_per_step
            train_seconds += time.time() - t0
            if world() == 1:
                snap = snapshot()  # what Ctrl-C saves: the state at this step boundary
            if step % tc.log_every == 0 or progress_frac() >= 1.0:
                n = step % tc.log_every or tc.log_every
                if world() > 1:
                    dist.all_reduce(loss_acc, op=dist.ReduceOp.AVG)
                loss_val = loss_acc.item() / n
                loss_acc.zero_()
                now = time.time()
                tok_s = (tokens - tok_log) / max(1e-9, now - t_log)
                t_log, tok_log = now, tokens
                log({"step": step, "tokens": tokens, "loss": loss_val, "lr": lr, "tok_per_s": tok_s,
                     "train_seconds": train_seconds})
                bar.update(step, train_seconds, progress_frac(), loss_val, tok_s, lr, force=False)
    except KeyboardInterrupt:
        interrupted = True
    bar.close()
    # The state at the last step boundary: a partial step's micro-batches are replayed on resume.
    if interrupted:
        if world() == 1:
            save(("latest",), snap)
            print0(f"interrupted at step {snap['step']}; saved {out}/checkpoints (continue with --resume)")
        else:
            print0("interrupted; --resume continues from the last evaluation's checkpoint")
        raise KeyboardInterrupt
    result = {}
    snap = snapshot()
    if is_main():
        ev = dev_eval(tc.eval_positions)
        tags = ("latest", "best") if ev["macro"]["ce"] < best else ("latest",)
        best = min(best, ev["macro"]["ce"])
        log({"step": step, "tokens": tokens, "dev_loss": ev["macro"]["ce"], "dev_top1": ev["macro"]["top1"],
             "dev_top3": ev["macro"]["top3"], "dev_lang_loss": {k: v["ce"] for k, v in ev["languages"].items()}})
        save(tags, snap)
        best_ck = checkpoint.find(out, "best")
        raw.load_state_dict(checkpoint.load(best_ck, with_optimizer=False)[0])
        final = dev_eval(tc.final_eval_positions)
        result = {"run": str(out), "preset": preset, "config": cfg.to_dict(), "params": params,
                  "best_dev_loss": best, "best_step": checkpoint.read_json(best_ck / "state.json")["step"],
                  "dev": final["macro"], "dev_languages": final["languages"],
                  "top1": final["macro"]["top1"], "top3": final["macro"]["top3"], "dev_bpc": final["macro"]["bpc"],
                  "train_seconds": train_seconds, "tokens": tokens, "steps": step, "device": device_name(device),
                  "threads": threads, "world_size": world()}
        checkpoint.atomic_write_json(out / "result.json", result)
        print0(f"done: {step} steps, {tokens:,} tokens in {fmt_time(train_seconds)}; best dev loss {best:.4f} "
               f"({best / math.log(2):.3f} bpc), dev top-1 {result['top1']:.2%}, top-3 {result['top3']:.2%}")
    if world() > 1:
        dist.barrier()
    return result


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def train_from_options(data: str, out: str, preset: str | None, config: str | None, sets: list[str],
                       resume: bool = False, budget: dict | None = None) -> dict:
    """CLI glue: build the config (the run's own config.json on resume), apply budget options, train."""
    from nextchar import config as config_mod

    cfg_path = Path(out) / "config.json"
    base = None
    if resume and cfg_path.exists():
        base = config_mod.read_run_config(out)
        preset = checkpoint.read_json(cfg_path, "run config").get("preset")  # already folded into base
        cfg = config_mod.load(None, config, sets, base=base)
    else:
        preset = preset or (None if config else "quick")
        cfg = config_mod.load(preset, config, sets)
    for key, val in (budget or {}).items():
        if val is not None:
            setattr(cfg.train, key, val)
    cfg.train = config_mod.replace(cfg.train)
    return train(data, out, cfg, resume=resume, preset=preset)
