"""The training loop: one explicit loop for CPU, one GPU or many ranks (torchrun), with exact resume."""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime
import gc
import json
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist

from nextchar import checkpoint, files, runfiles, safefs
from nextchar.config import RunConfig, TrainConfig, parse_grow, replace
from nextchar.data import BatchSampler, DataSet, open_data
from nextchar.engine.folder import write_description
from nextchar.engine.torch_backend import TorchPredictor
from nextchar.errors import UserError
from nextchar.evaluate import count_positions, evaluate, progress_bar
from nextchar.model import CharTransformer
from nextchar.runtime import (
    device_name,
    is_main,
    local_rank,
    print0,
    rank,
    resolve_device,
    set_threads,
    world,
)

# Rank 0 evaluates and saves while the other ranks wait in a collective; the wait must outlast the final
# evaluation (2000 positions x 24 languages), so the process group's timeout is generous.
DIST_TIMEOUT = datetime.timedelta(minutes=60)

# Dense bf16 tensor-core peaks (TFLOP/s) by device-name substring, most specific first (vendor data sheets).
PEAK_BF16_TFLOPS = (
    ("H100 PCIE", 756.0), ("H100 NVL", 835.0), ("GH200", 989.4), ("H200", 989.4), ("H100", 989.4),
    ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10", 125.0),
)


# -- ranks (rank, world, is_main, print0 live in nextchar.runtime) -----------------------------------
def setup_distributed(device: str) -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); NCCL on GPU, gloo on CPU.

    Returns True when this call created the group (the caller then destroys it).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    if device == "cuda":
        torch.cuda.set_device(local_rank())  # before NCCL starts, so each rank binds its own GPU
        dist.init_process_group("nccl", timeout=DIST_TIMEOUT, device_id=torch.device("cuda", local_rank()))
    else:
        dist.init_process_group("gloo", timeout=DIST_TIMEOUT)
    return True


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def gather(obj) -> list:
    """obj from every rank, in rank order (a list of one without DDP)."""
    if world() == 1:
        return [obj]
    out = [None] * world()
    dist.all_gather_object(out, obj)
    return out


# -- schedule ---------------------------------------------------------------------------------------
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


# -- speed ------------------------------------------------------------------------------------------
def flops_per_token(model: CharTransformer) -> float:
    """Training FLOPs per token ~ 6*N + 12*L*T*d (PaLM's estimate: forward + backward of every matmul).

    N counts the parameters that take part in a matmul: not the learned position table, the hashed n-gram table
    or an untied input embedding (lookups); the tied embedding is the output layer's matrix, so it counts. 12*L*T*d is attention's
    QK^T and AV at full context T (causal masking's skipped half is counted, as is usual).
    """
    c = model.cfg
    n = model.num_params()
    for lookup in ("pos", "ngram"):
        if hasattr(model, lookup):
            n -= getattr(model, lookup).weight.numel()
    if c.variant == "seed":
        n -= model.tok.weight.numel()
    return 6.0 * n + 12.0 * c.n_layers * c.context * c.d_model


def peak_flops(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s of one device by its name, or None when unknown (then MFU is not reported)."""
    name = device_name.upper()
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops * 1e12
    return None


class Progress:
    """One-line progress: bar, step, loss, tokens/s, ETA; redrawn on a terminal, printed now and then otherwise."""

    def __init__(self, total: int, minutes: float, enabled: bool):
        self.total, self.seconds, self.enabled = total, minutes * 60, enabled
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def update(self, step: int, elapsed: float, frac: float, loss: float, tok_s: float, lr: float,
               force: bool = False, mfu: float | None = None) -> None:
        now = time.time()
        if not self.enabled or (not force and now - self.last < (0.5 if self.tty else 30)):
            return
        self.last = now
        eta = elapsed * (1 - frac) / frac if frac > 0 else float("nan")
        bar = "#" * int(20 * frac) + "." * (20 - int(20 * frac))
        total = f"/{self.total}" if self.total else ""
        util = f" ({mfu:.0%} MFU)" if mfu is not None else ""
        msg = (f"[{bar}] {frac:4.0%} step {step}{total} loss {loss:.3f} | {tok_s / 1000:.1f}k tok/s{util} | "
               f"lr {lr:.1e} | {fmt_time(elapsed)} elapsed, ETA {fmt_time(eta)}")
        sys.stderr.write(("\r" + msg + "\033[K") if self.tty else msg + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


def final_positions(tc: TrainConfig, tokens: int, context: int, languages: int) -> int:
    """Dev positions per language of result.json's final evaluation: tc.final_eval_positions, fewer for a short
    run, 0 to skip it (result.json then takes the periodic evaluation of the best step).

    A position costs about one forward pass over `context` characters, a third of what training on them costs,
    so reading at most one position per `context` characters trained on, per language, keeps the evaluation
    within about a third of the training's compute (a 10-step run no longer evaluates for minutes after seconds
    of training); never fewer than the periodic evaluation's eval_positions.
    """
    if tc.final_eval_positions == 0:
        return 0
    return min(tc.final_eval_positions, max(tc.eval_positions, tokens // (context * max(1, languages))))


def fmt_time(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


# -- optimizer and growth ---------------------------------------------------------------------------
def make_optimizer(model: CharTransformer, tc: TrainConfig, device: str) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only; groups list parameters in model order (checkpoints rely on it)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=tc.lr, betas=(tc.beta1, tc.beta2), fused=device == "cuda")


def grow_model(model: CharTransformer, opt: torch.optim.AdamW, n_layers: int, tc: TrainConfig,
               device: str) -> torch.optim.AdamW:
    """Grow model to n_layers (function-preserving) and return an optimizer over all its parameters.

    Existing parameters keep their AdamW moments and step counts; the new ones start with fresh state.
    """
    model.grow(n_layers)
    new = make_optimizer(model, tc, device)
    for g_old, g_new in zip(opt.param_groups, new.param_groups):
        g_new["lr"] = g_old["lr"]
    for p, st in opt.state.items():
        new.state[p] = st
    return new


def full_depth(model: CharTransformer, n_layers: int) -> CharTransformer:
    """model itself at n_layers, else a copy grown to n_layers: the same function, at the run's configured depth.

    Checkpoints store this, so every checkpoint of a growing run loads into the run's model config (predict, eval,
    export); the state's n_layers says how deep training actually was. The copy's new (inert) weights are drawn
    with the RNG forked, so saving never changes the training stream.
    """
    if len(model.blocks) >= n_layers:
        return model
    with torch.random.fork_rng(devices=[]):
        grown = copy.deepcopy(model)
        grown.grow(n_layers)
    return grown


def at_depth(weights: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """A full-depth checkpoint's weights for a model `depth` blocks deep (the inert padding blocks dropped)."""
    return {k: v for k, v in weights.items() if not (k.startswith("blocks.") and int(k.split(".")[1]) >= depth)}


# -- run directory ----------------------------------------------------------------------------------
def prepare_run_dir(out: Path, cfg: RunConfig, ds: DataSet, resume: bool, preset: str | None) -> RunConfig:
    """Write config.json + vocab.json for a new run, or check a resumed run matches the data and model.

    Collective under DDP: every rank checks before rank 0 writes, so no rank mistakes the new run for an old one.
    """
    cfg_path = out / "config.json"
    if cfg_path.exists():
        if not resume:
            raise UserError(f"{out}: run directory already holds a run (use --resume, or another --out)")
        old = runfiles.run_config(out)
        if old.get("vocab_hash") != ds.vocab.hash:
            raise UserError(f"{out}: run was trained with another vocabulary ({old.get('vocab_hash')}) than "
                            f"{ds.path} ({ds.vocab.hash})")
        if old.get("model") != asdict(cfg.model):
            raise UserError(f"{out}: --resume with a different model config than the run's config.json")
    if cfg.model.vocab_size != ds.vocab.size:
        raise UserError(f"model.vocab_size={cfg.model.vocab_size} but {ds.path} has {ds.vocab.size} symbols")
    barrier()
    if is_main():
        out.mkdir(parents=True, exist_ok=True)
        write_description(out, {
            "model_type": "transformer", "preset": preset, "data": str(ds.path.resolve()),
            "vocab_hash": ds.vocab.hash, "languages": ds.languages, **cfg.to_dict()})
        ds.vocab.save(out / "vocab.json")
    barrier()
    return cfg


def train(data: str | Path, out: str | Path, cfg: RunConfig, resume: bool = False, preset: str | None = None,
          progress: bool = True) -> dict:
    """Train a CharTransformer on a prepared data dir into a run dir; returns the result.json contents (rank 0)."""
    device = resolve_device(cfg.train.device)
    created = setup_distributed(device)
    try:
        with run_lock(Path(out)):
            return _train(data, Path(out), cfg, device, resume, preset, progress)
    finally:
        if created:
            dist.destroy_process_group()


LOCK_NAME = "train.lock"


@contextlib.contextmanager
def run_lock(out: Path):
    """Hold out/train.lock (pid, host, command) while training: a second writer on the same run gets a one-line
    UserError instead of racing on its checkpoints; a lock left by a crashed or killed run (its pid gone on this
    host) is taken over. Collective under DDP: rank 0 holds it and every rank raises if it could not."""
    lock, err, made = None, None, False
    if is_main():
        try:
            if out.exists() and not out.is_dir():
                raise UserError(f"{out}: is a file, not a run directory (give another --out)")
            made = not out.exists()
            out.mkdir(parents=True, exist_ok=True)
            lock = safefs.RunLock(out / LOCK_NAME, "nextchar " + " ".join(sys.argv[1:])[:300])
            lock.acquire()
            if lock.took_over:
                print0(f"note: {out / LOCK_NAME} was left by pid {lock.took_over.get('pid')}, which is gone; "
                       "taking it over")
        except UserError as e:
            err, lock = str(e), None
        except OSError as e:
            err, lock = f"{out}: cannot create run directory ({e.strerror or e})", None
    errors = [e for e in gather(err) if e]
    if errors:
        raise UserError(errors[0])
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
            if made:
                with contextlib.suppress(OSError):
                    out.rmdir()  # a run that failed before writing anything leaves no empty folder


def _train(data: str | Path, out: Path, cfg: RunConfig, device: str, resume: bool, preset: str | None,
           progress: bool) -> dict:
    tc = cfg.train
    threads = set_threads(tc.threads)
    ds = open_data(data)
    cfg.model.vocab_size = cfg.model.vocab_size or ds.vocab.size
    if not (tc.max_steps or tc.max_tokens or tc.max_minutes):
        raise UserError("no training budget: give --max-steps, --max-tokens or --max-minutes")
    micro_bs, rem = divmod(tc.batch_size, tc.grad_accum * world())
    if rem or micro_bs < 1:
        raise UserError(f"batch_size {tc.batch_size} must be a multiple of grad_accum x world size "
                        f"({tc.grad_accum} x {world()})")
    grow = parse_grow(tc.grow) if tc.grow else None
    if grow and cfg.model.variant == "seed":
        raise UserError(f"--grow {tc.grow}: the seed variant is post-LN, where a new layer cannot start as the "
                        "identity; grow a modern model (e.g. --preset modern-12l)")
    if grow and grow[0] >= cfg.model.n_layers:
        raise UserError(f"--grow {tc.grow}: must start below model.n_layers ({cfg.model.n_layers})")
    prepare_run_dir(out, cfg, ds, resume, preset)

    ck = checkpoint.find(out, "latest") if resume else None
    weights, opt_state, state = checkpoint.load(ck) if ck is not None else (None, None, {})
    if ck is not None:
        runfiles.checkpoint_state(ck / "state.json", state, training=True)
    if ck is not None and state.get("vocab_hash") != ds.vocab.hash:
        raise UserError(f"{ck}: checkpoint vocabulary differs from {ds.path}")
    # A growing run starts shallow; a resumed one at the depth it had reached.
    depth = grow[0] if grow else cfg.model.n_layers
    if ck is not None:
        depth = state.get("n_layers", cfg.model.n_layers)
    torch.manual_seed(tc.seed)
    raw = CharTransformer(replace(cfg.model, n_layers=depth)).to(device)
    raw.grad_checkpoint = tc.grad_checkpoint
    # Dropout (and growth) draws differ by rank; DDP copies rank 0's weights, so all ranks start equal.
    torch.manual_seed(tc.seed + rank())
    opt = make_optimizer(raw, tc, device)
    sampler = BatchSampler(ds, "train", cfg.model.context, micro_bs, tc.seed, tc.lang_temperature, rank(), world(),
                           tc.augment_lower, tc.augment_strip_accents)
    step, tokens, train_seconds, best = 0, 0, 0.0, math.inf
    best_eval: dict | None = None  # the periodic evaluation that made the best checkpoint (this process's)
    if ck is not None:
        try:
            raw.load_state_dict(at_depth(weights, depth))
        except RuntimeError as e:
            raise UserError(f"{ck / 'model.safetensors'}: weights do not fit the run's model config "
                            f"({str(e).splitlines()[0]})") from None
        if opt_state is not None:
            try:
                opt.load_state_dict(opt_state)
                for p, st in opt.state.items():  # AdamW's moments must have their parameter's shape
                    for name in ("exp_avg", "exp_avg_sq"):
                        if name in st and st[name].shape != p.shape:
                            raise ValueError(f"{name} of shape {tuple(st[name].shape)} for a parameter of shape "
                                             f"{tuple(p.shape)}")
            except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
                raise UserError(f"{ck}: optimizer state does not fit the model (optim.safetensors, state.json: "
                                f"{e}); resume from another checkpoint or start a new run") from None
        try:
            sampler.load_state_dict(state["sampler"])
        except (KeyError, TypeError, ValueError):
            print0("note: the checkpoint's batch stream is from an older nextchar; batches are re-seeded")
        rngs = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]
        if not rngs:
            raise UserError(f"{ck / 'state.json'}: checkpoint state: 'rng' is empty")
        if len(rngs) != world():
            print0(f"note: resuming on {world()} ranks from {len(rngs)}: dropout draws are re-seeded")
        try:
            set_rng_state(rngs[rank()] if len(rngs) == world() else rngs[0])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            raise UserError(f"{ck / 'state.json'}: checkpoint state: 'rng' is damaged ({e})") from None
        step, tokens, train_seconds = state["step"], state["tokens"], state["train_seconds"]
        best = state.get("best_dev_loss", math.inf)
        print0(f"resuming {out} from step {step}")
    elif resume:
        print0(f"note: {out} has no checkpoint yet; starting from scratch")
    resumed_step = step if ck is not None else -1

    use_compile = device == "cuda" if tc.compile is None else tc.compile

    def wrap(m: CharTransformer) -> torch.nn.Module:
        if use_compile:
            m = torch.compile(m)
        if world() > 1:
            m = torch.nn.parallel.DistributedDataParallel(m, device_ids=[local_rank()] if device == "cuda" else None)
        return m

    def to_device(a) -> torch.Tensor:
        t = torch.from_numpy(a)
        # Pinned host memory lets the copy run asynchronously while the GPU is still busy with the last step.
        return t.pin_memory().to(device, non_blocking=True) if device == "cuda" else t

    model = wrap(raw)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" and tc.amp else contextlib.nullcontext()
    tokens_per_step = tc.batch_size * cfg.model.context  # global: all ranks and micro-batches
    n_steps = total_steps(tc, tokens_per_step)
    params = full_depth(raw, cfg.model.n_layers).num_params()
    peak = peak_flops(device_name(device)) if device == "cuda" and tc.amp else None
    notes = [f"model: {params:,} parameters ({cfg.model.variant}, {cfg.model.n_layers} layers, d={cfg.model.d_model})",
             f"device {device_name(device)}", f"threads {threads}", f"world {world()}",
             f"batch {tc.batch_size} x {cfg.model.context} ({micro_bs} per rank x {tc.grad_accum} accumulation)"]
    if depth < cfg.model.n_layers:
        notes.append(f"growing from {depth} layers at {grow[1] if grow else 0:.0%} of the budget")
    notes += ["compiled"] * use_compile + ["grad checkpointing"] * tc.grad_checkpoint
    print0(" | ".join(notes))
    bar = Progress(n_steps, tc.max_minutes, progress and is_main())
    metrics_path = out / "metrics.jsonl"

    def log(rec: dict) -> None:
        if is_main():
            with open(metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")

    def dev_eval(m: CharTransformer, positions: int, tick=None) -> dict:
        res = evaluate(TorchPredictor(m, ds.vocab, device=device), ds, "dev", positions, progress=tick)
        m.train()
        return res

    def snapshot() -> dict:
        """This rank's state at a step boundary (the sampler's is the same on every rank)."""
        return {"step": step, "tokens": tokens, "train_seconds": train_seconds, "sampler": sampler.state_dict(),
                "rng": rng_state()}

    def save(tags: tuple[str, ...], snap: dict) -> None:
        """Collective: rank 0 writes one checkpoint (with every rank's RNG state) while the others wait."""
        rngs = gather(snap["rng"])
        if is_main():
            st = dict(snap, rng=rngs, n_layers=len(raw.blocks), vocab_hash=ds.vocab.hash, best_dev_loss=best,
                      config=cfg.to_dict())
            checkpoint.save(out, full_depth(raw, cfg.model.n_layers).state_dict(), opt.state_dict(), st, tags)
        barrier()

    def eval_and_save(snap: dict) -> None:
        nonlocal best, best_eval
        tags: tuple[str, ...] = ()
        if is_main():
            ev = dev_eval(raw, tc.eval_positions)
            dev_loss = ev["macro"]["ce"]
            tags = ("latest", "best") if dev_loss < best else ("latest",)
            if dev_loss < best:
                best_eval = ev
            best = min(best, dev_loss)
            log({"step": step, "tokens": tokens, "train_seconds": train_seconds, "dev_loss": dev_loss,
                 "dev_top1": ev["macro"]["top1"], "dev_top3": ev["macro"]["top3"],
                 "dev_lang_loss": {k: v["ce"] for k, v in ev["languages"].items()},
                 "dev_lang_top3": {k: v["top3"] for k, v in ev["languages"].items()}})
        save(tags, snap)

    def progress_frac() -> float:
        fr = [step / n_steps] if n_steps else []
        if tc.max_minutes:
            fr.append(train_seconds / (tc.max_minutes * 60))
        return min(1.0, max(fr))

    raw.train()
    interrupted = False
    tok_log, sec_log, acc_steps = tokens, train_seconds, 0
    loss_acc = torch.zeros((), device=device)
    fpt = flops_per_token(raw)
    snap = snapshot()
    try:
        while progress_frac() < 1.0:
            # eval/save every N (not again at the step a resumed run starts from)
            if step > 0 and step % tc.eval_every == 0 and step != resumed_step:
                eval_and_save(snapshot())  # a step boundary on every rank
            # grow to the configured depth once the budget fraction is spent
            if len(raw.blocks) < cfg.model.n_layers and (not grow or progress_frac() >= grow[1]):
                print0(f"step {step}: growing from {len(raw.blocks)} to {cfg.model.n_layers} layers")
                log({"step": step, "tokens": tokens, "grow": [len(raw.blocks), cfg.model.n_layers]})
                del model
                gc.collect()  # the old DDP wrapper's gradient hooks must be gone before the new one hooks in
                opt = grow_model(raw, opt, cfg.model.n_layers, tc, device)
                model = wrap(raw)
                fpt = flops_per_token(raw)
                snap = snapshot()
            t0 = time.time()
            lr = lr_at(tc, step, progress_frac())
            for g in opt.param_groups:
                g["lr"] = lr
            # micro-steps: gradients add up locally and are all-reduced (averaged over ranks) on the last one
            for micro in range(tc.grad_accum):
                x, y = sampler.next_batch()
                x, y = to_device(x), to_device(y)  # (micro_bs, T) each
                sync = world() == 1 or micro == tc.grad_accum - 1
                with contextlib.nullcontext() if sync else model.no_sync():
                    with amp:
                        _, loss = model(x, y)
                    (loss / tc.grad_accum).backward()
                loss_acc += loss.detach() / tc.grad_accum
            # clip/step
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(raw.parameters(), tc.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            tokens += tokens_per_step
            acc_steps += 1
            log_now = step % tc.log_every == 0 or (n_steps and step >= n_steps)
            if device == "cuda" and log_now:
                torch.cuda.synchronize()  # steps in between only queue work; time is settled here
            dt = time.time() - t0
            if world() > 1 and tc.max_minutes:
                # a time budget must end every rank at the same step, so all ranks count the slowest rank's time
                t = torch.tensor([dt], device=device)
                dist.all_reduce(t, op=dist.ReduceOp.MAX)
                dt = t.item()
            train_seconds += dt
            if world() == 1:
                snap = snapshot()  # what Ctrl-C saves: the state at this step boundary
            # log
            if log_now or progress_frac() >= 1.0:
                if world() > 1:
                    dist.all_reduce(loss_acc)  # sum over ranks (gloo has no average)
                    loss_acc /= world()
                loss_val = loss_acc.item() / acc_steps
                loss_acc.zero_()
                tok_s = (tokens - tok_log) / max(1e-9, train_seconds - sec_log)  # all ranks' tokens
                mfu = tok_s * fpt / (peak * world()) if peak else None
                tok_log, sec_log, acc_steps = tokens, train_seconds, 0
                rec = {"step": step, "tokens": tokens, "loss": loss_val, "lr": lr, "tok_per_s": tok_s,
                       "train_seconds": train_seconds}
                log(rec if mfu is None else dict(rec, mfu=mfu))
                bar.update(step, train_seconds, progress_frac(), loss_val, tok_s, lr, mfu=mfu)
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
    eval_and_save(snapshot())
    if is_main():
        best_ck = checkpoint.find(out, "best")
        best_step = files.read_json(best_ck / "state.json")["step"]
        n_final = final_positions(tc, tokens, cfg.model.context, len(ds.languages))
        if best_eval is not None and n_final <= tc.eval_positions:
            final = best_eval  # skipped, or the periodic evaluation of the best step read as many positions
        else:
            n_final = max(n_final, tc.eval_positions)
            final_model = full_depth(raw, cfg.model.n_layers)
            final_model.load_state_dict(checkpoint.load(best_ck, with_optimizer=False)[0])
            short = n_final < tc.final_eval_positions
            print0(f"final evaluation of the best checkpoint (step {best_step}): {n_final} dev positions per language"
                   + (f", in proportion to the {tokens:,} characters trained on" if short else ""))
            with progress_bar("final dev evaluation", count_positions(ds, "dev", n_final), progress) as tick:
                final = dev_eval(final_model, n_final, tick)
        result = {"run": str(out), "preset": preset, "config": cfg.to_dict(), "params": params,
                  "best_dev_loss": best, "best_step": best_step, "final_eval_positions": final["positions"],
                  "dev": final["macro"], "dev_languages": final["languages"],
                  "top1": final["macro"]["top1"], "top3": final["macro"]["top3"], "dev_bpc": final["macro"]["bpc"],
                  "train_seconds": train_seconds, "tokens": tokens, "steps": step, "device": device_name(device),
                  "tok_per_s": tokens / max(1e-9, train_seconds), "threads": threads, "world_size": world()}
        files.atomic_write_json(out / "result.json", result)
        print0(f"done: {step} steps, {tokens:,} tokens in {fmt_time(train_seconds)}; best dev loss {best:.4f} "
               f"({best / math.log(2):.3f} bpc), dev top-1 {result['top1']:.2%}, top-3 {result['top3']:.2%}")
    barrier()  # the other ranks leave only once the run is complete on disk
    return result


def train_from_options(data: str, out: str, preset: str | None, config: str | None, sets: list[str],
                       resume: bool = False, budget: dict | None = None) -> dict:
    """CLI glue: build the config (the run's own config.json on resume), apply budget options, train."""
    from nextchar import config as config_mod

    cfg_path = Path(out) / "config.json"
    base = None
    if resume and cfg_path.exists():
        run_cfg = runfiles.run_config(out)
        runfiles.train_config(cfg_path, run_cfg)  # (model_config is checked by run_config)
        base = {"model": run_cfg["model"], "train": run_cfg["train"]}
        preset = run_cfg.get("preset")  # already folded into base
        cfg = config_mod.load(None, config, sets, base=base)
    else:
        preset = preset or (None if config else "quick")
        cfg = config_mod.load(preset, config, sets)
    for key, val in (budget or {}).items():
        if val is not None:
            setattr(cfg.train, key, val)
    cfg.train = config_mod.replace(cfg.train)
    return train(data, out, cfg, resume=resume, preset=preset)
