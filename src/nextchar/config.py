"""Typed configs (model, training), presets, and loading them from TOML plus key=value overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from nextchar.errors import UserError


@dataclass
class ModelConfig:
    """Shape of a CharTransformer; `variant` picks the study's exact recipe or the modern one."""

    vocab_size: int = 0  # characters + specials; set from the data's vocabulary
    d_model: int = 128  # embedding dim
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 512  # feed-forward hidden dim
    dropout: float = 0.1
    context: int = 128  # characters of context the model sees
    variant: str = "modern"  # "seed" (post-LN, as in the study) or "modern" (pre-norm)
    # modern only: "rope" (rotary) or "learned"; rope reached dev loss 2.53 vs 2.63 for learned after the same
    # 2M characters (docs/recipe.md), and its relative positions suit the typing session's sliding window.
    pos: str = "rope"
    # Hashed n-gram inputs: every position also adds the embeddings of its last 2..ngram_order ids, hashed into
    # a table of ngram_buckets rows, so the model sees local context from its first step (0 = off). Costs no
    # matmul; on CPU it was the largest gain per second of training (docs/recipe.md).
    ngram_buckets: int = 0
    ngram_order: int = 4

    def __post_init__(self) -> None:
        raise_all(type_problems(self), "model")
        problems = []
        if self.variant not in ("seed", "modern"):
            problems.append(f"variant must be 'seed' or 'modern', not {self.variant!r}")
        if self.pos not in ("learned", "rope"):
            problems.append(f"pos must be 'learned' or 'rope', not {self.pos!r}")
        for name in ("d_model", "n_layers", "n_heads", "d_ff", "context"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, not {getattr(self, name)}")
        if self.n_heads >= 1 and self.d_model % self.n_heads:
            problems.append(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.pos == "rope" and self.n_heads >= 1 and (self.d_model // self.n_heads) % 2:
            problems.append("pos='rope' needs an even head dim (d_model / n_heads)")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), not {self.dropout}")
        if self.vocab_size < 0:
            problems.append(f"vocab_size must be >= 0, not {self.vocab_size}")
        if self.ngram_buckets < 0:
            problems.append(f"ngram_buckets must be >= 0, not {self.ngram_buckets}")
        if not 2 <= self.ngram_order <= 8:
            problems.append(f"ngram_order must be 2 to 8, not {self.ngram_order}")
        raise_all(problems, "model")


@dataclass
class TrainConfig:
    """How to train: budget, batch, optimizer, schedule, evaluation and logging cadence."""

    max_steps: int = 0  # optimizer steps; 0 = derived from max_tokens or max_minutes
    max_tokens: int = 0  # target characters seen; 0 = unused
    max_minutes: float = 0.0  # wall-clock budget; 0 = unused
    batch_size: int = 32  # sequences per optimizer step (global, across ranks and accumulation)
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 3e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # final lr = lr * min_lr_ratio (cosine floor)
    warmup_steps: int = 100  # optimizer steps of linear warmup
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    lang_temperature: float = 1.0  # sample language with p ~ size^T (1 proportional, 0 uniform)
    eval_every: int = 200  # optimizer steps between dev evaluations
    eval_positions: int = 200  # dev positions per language for the periodic evaluation
    # most dev positions per language for result.json (as `nextchar eval`); a short run reads fewer, in proportion
    # to what it trained on (train.final_positions); 0 = none beyond the periodic evaluation of the best step
    final_eval_positions: int = 2000
    log_every: int = 10  # optimizer steps between metrics.jsonl lines
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch threads; 0 = all cores
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    compile: bool | None = None  # torch.compile the model; None = on for CUDA, off on CPU (where it measured slower)
    grad_checkpoint: bool = False  # recompute each layer in the backward pass: less activation memory, more time
    grow: str = ""  # "LAYERS@FRACTION", e.g. "4@0.3": LAYERS deep for that fraction of the budget, then model.n_layers
    augment_lower: float = 0.0  # probability per training sequence of lower-casing it (as people type)
    augment_strip_accents: float = 0.0  # probability per training sequence of dropping its accents

    def __post_init__(self) -> None:
        raise_all(type_problems(self), "train")
        problems = []
        for name in ("max_steps", "max_tokens", "warmup_steps", "threads", "final_eval_positions"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, not {getattr(self, name)}")
        for name in ("batch_size", "grad_accum", "eval_every", "log_every", "eval_positions"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, not {getattr(self, name)}")
        if self.max_minutes < 0:
            problems.append(f"max_minutes must be >= 0, not {self.max_minutes}")
        if self.lr <= 0:
            problems.append(f"lr must be > 0, not {self.lr}")
        if self.batch_size % self.grad_accum:
            problems.append(f"batch_size ({self.batch_size}) must be divisible by grad_accum ({self.grad_accum})")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"device must be auto, cpu or cuda, not {self.device!r}")
        if self.lang_temperature < 0:
            problems.append(f"lang_temperature must be >= 0, not {self.lang_temperature}")
        for name in ("augment_lower", "augment_strip_accents"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} must be a probability in [0, 1], not {getattr(self, name)}")
        if self.grow:
            try:
                parse_grow(self.grow)
            except ValueError as e:
                problems.append(str(e))
        raise_all(problems, "train")


def parse_grow(spec: str) -> tuple[int, float]:
    """ "4@0.3" -> (4, 0.3): layers to start with, and the fraction of the budget trained at that depth."""
    layers, sep, frac = spec.partition("@")
    try:
        n, f = int(layers), float(frac)
    except ValueError:
        n, f = 0, -1.0
    if not sep or n < 1 or not 0 < f < 1:
        raise ValueError(f"grow must be LAYERS@FRACTION with LAYERS >= 1 and 0 < FRACTION < 1, e.g. 4@0.3; "
                         f"not {spec!r}")
    return n, f


@dataclass
class RunConfig:
    """Everything a run needs: model shape and training settings (the data path lives beside it)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return cls(model=build(ModelConfig, d.get("model", {}), "model"),
                   train=build(TrainConfig, d.get("train", {}), "train"))


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
_NAMES = {"int": "a whole number", "float": "a number", "str": "a string", "bool": "true or false"}


def type_problems(cfg: Any) -> list[str]:
    """Fields of a config dataclass whose value is not of the declared type (a bool is no number; an int is a
    float), so `batch_size = "8"` is named instead of failing in a comparison."""
    out = []
    for f in fields(cfg):
        kinds = [k.strip() for k in str(f.type).split("|")]
        value = getattr(cfg, f.name)
        if value is None and "None" in kinds:
            continue
        ok = [t for k in kinds if k in _TYPES for t in _TYPES[k]]
        if ok and (not isinstance(value, tuple(ok)) or (isinstance(value, bool) and bool not in ok)):
            want = " or ".join(_NAMES[k] for k in kinds if k in _NAMES)
            out.append(f"{f.name} must be {want}, not {type(value).__name__} {value!r:.40}")
    return out


def raise_all(problems: list[str], section: str) -> None:
    """Raise one UserError naming every problem in a config section at once."""
    if problems:
        raise UserError(f"invalid {section} config: " + "; ".join(problems))


def build(cls: type, values: dict[str, Any], section: str):
    """Construct a config dataclass, naming unknown keys instead of a TypeError."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"unknown {section} key(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return cls(**values)


# The study's shapes (docs/architecture-study.md). "seed-*" are its exact recipe; "modern-*" the same
# widths with our recipe. `quick` is tuned for accuracy per CPU second, `best` for a GPU (see docs/recipe.md).
_SHAPES: dict[str, dict[str, Any]] = {
    "12l": dict(d_model=128, n_layers=12, n_heads=4, d_ff=512, dropout=0.1),
    "8l": dict(d_model=128, n_layers=8, n_heads=4, d_ff=512, dropout=0.1),
    "6l": dict(d_model=128, n_layers=6, n_heads=4, d_ff=512, dropout=0.1),
    "4l": dict(d_model=128, n_layers=4, n_heads=4, d_ff=512, dropout=0.1),
    "2l": dict(d_model=128, n_layers=2, n_heads=4, d_ff=512, dropout=0.1),
    "ffn1024": dict(d_model=128, n_layers=2, n_heads=4, d_ff=1024, dropout=0.1),
    "emb32": dict(d_model=32, n_layers=2, n_heads=4, d_ff=512, dropout=0.1),
    "emb256": dict(d_model=256, n_layers=8, n_heads=4, d_ff=512, dropout=0.1),
    "small": dict(d_model=64, n_layers=4, n_heads=4, d_ff=256, dropout=0.1),
}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {}
for _name, _shape in _SHAPES.items():
    PRESETS[f"seed-{_name}"] = {"model": dict(_shape, variant="seed")}
    PRESETS[f"modern-{_name}"] = {"model": dict(_shape, variant="modern")}
# Small and fast on CPU: the quickstart model. Tuned for accuracy per CPU second (docs/recipe.md).
PRESETS["quick"] = {
    "model": dict(d_model=128, n_layers=4, n_heads=4, d_ff=512, dropout=0.0, context=64, variant="modern", pos="rope",
                  ngram_buckets=32768, ngram_order=4),
    "train": dict(batch_size=64, lr=6e-3, warmup_steps=100, eval_every=500, eval_positions=100),
}
# The GPU recipe meant to beat the Kneser-Ney n-gram: the study's recommended 12 layers, twice its width,
# a 256-character context and big batches (docs/recipe.md has its measurements).
PRESETS["best"] = {
    "model": dict(d_model=256, n_layers=12, n_heads=8, d_ff=1024, dropout=0.1, context=256, variant="modern",
                  pos="rope"),
    "train": dict(batch_size=256, lr=3e-3, warmup_steps=200, eval_every=250, eval_positions=200, log_every=25),
}
# Tiny model for tests and smoke runs.
PRESETS["tiny"] = {
    "model": dict(d_model=16, n_layers=2, n_heads=2, d_ff=32, dropout=0.0, context=32, variant="modern"),
    "train": dict(batch_size=8, warmup_steps=2, eval_every=5, eval_positions=20, log_every=1),
}


def parse_value(text: str) -> Any:
    """Parse the value of a --set key=value as TOML (numbers, booleans, quoted strings), else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def load(preset: str | None = None, path: str | Path | None = None, overrides: list[str] | None = None,
         base: dict[str, Any] | None = None) -> RunConfig:
    """Build a RunConfig: preset (or `base`), then a TOML file, then `section.key=value` overrides, in that order."""
    d: dict[str, dict[str, Any]] = {"model": {}, "train": {}}

    def merge(src: dict[str, Any], origin: str) -> None:
        for section, values in src.items():
            if section not in d or not isinstance(values, dict):
                raise UserError(f"{origin}: unknown section {section!r} (expected [model] or [train])")
            d[section].update(values)

    if base is not None:
        merge(base, "base config")
    if preset is not None:
        if preset not in PRESETS:
            raise UserError(f"unknown preset {preset!r} (choose from: {', '.join(sorted(PRESETS))})")
        merge(PRESETS[preset], f"preset {preset}")
    if path is not None:
        p = Path(path)
        try:
            merge(tomllib.loads(p.read_text(encoding="utf-8")), str(p))
        except OSError as e:
            raise UserError(f"{p}: cannot read config ({e.strerror})") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{p}: not valid TOML ({e})") from None
    for item in overrides or []:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot:
            raise UserError(f"--set {item!r}: expected section.key=value, e.g. model.n_layers=4")
        merge({section: {name: parse_value(value.strip())}}, f"--set {item}")
    return RunConfig.from_dict(d)


def replace(cfg: Any, **changes: Any) -> Any:
    """dataclasses.replace that re-runs validation."""
    return dataclasses.replace(cfg, **changes)


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The [model]/[train] sections of a run's config.json."""
    from nextchar.files import read_json

    d = read_json(Path(run_dir) / "config.json", "run config")
    return {"model": d["model"], "train": d["train"]}
