"""What each JSON file of a run holds, checked where it is read: a damaged file is a one-line UserError naming it.

A file that parses can still be wrong: a list where an object belongs, a key missing, a number given as a string,
a shape that does not fit the weights. Readers call these functions instead of indexing what json.loads gave,
so such a file is reported as "<path>: <what> ..." (issue 14, fault 4) instead of a KeyError or AttributeError
deep inside. Schemas list what a reader uses; other keys are left alone (older and newer runs keep working).
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

from nextchar.config import ModelConfig, TrainConfig
from nextchar.errors import UserError
from nextchar.files import read_json

NUMBER = (int, float)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, NUMBER) else type(value).__name__)


def _ok(value: Any, want: Any) -> bool:
    if want is NUMBER:
        return isinstance(value, NUMBER) and not isinstance(value, bool)
    if want is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, want)


def _want(want: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", dict: "an object", list: "a list",
            bool: "true or false"}.get(want, "a number" if want is NUMBER else str(want))


def require(path: Path, what: str, d: Any, schema: dict[str, Any], where: str = "") -> dict:
    """d must be a JSON object whose keys in schema have those types (int, NUMBER, str, dict, list, bool, or a
    nested schema dict for an object); returns d. UserError "<path>: <what> ..." otherwise."""
    if not isinstance(d, dict):
        raise UserError(f"{path}: {what}{where} is {_kind(d)}, expected an object")
    for key, want in schema.items():
        name = f"{where}.{key}" if where else key
        if key not in d:
            raise UserError(f"{path}: {what} has no {name!r}")
        if isinstance(want, dict):
            require(path, what, d[key], want, name)
        elif not _ok(d[key], want):
            raise UserError(f"{path}: {what}: {name!r} is {_kind(d[key])}, expected {_want(want)}")
    return d


def read_object(path: str | Path, what: str, schema: dict[str, Any] | None = None) -> dict:
    """A JSON file that must hold an object with `schema`'s keys and types (see require)."""
    path = Path(path)
    return require(path, what, read_json(path, what), schema or {})


def _typed(cls: type, values: dict, path: Path, what: str) -> Any:
    """cls(**values) for a config dataclass, with every value's type checked first (ints are not floats' kin
    here: a d_model of 128.0 or "128" is a damaged file, not a size)."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in known:
            raise UserError(f"{path}: {what} has an unknown key {key!r}")
        want = hints[key]
        want = NUMBER if want is float else want
        if want in (int, str, bool, NUMBER) and not _ok(value, want):
            raise UserError(f"{path}: {what}: {key!r} is {_kind(value)} {value!r:.40}, expected {_want(want)}")
    try:
        return cls(**values)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


def model_config(path: Path, cfg: dict) -> ModelConfig:
    """The ModelConfig of a run's (or export's) config.json `cfg`, read from `path`."""
    require(path, "run config", cfg, {"model": dict})
    return _typed(ModelConfig, cfg["model"], path, "run config 'model'")


def train_config(path: Path, cfg: dict) -> TrainConfig:
    require(path, "run config", cfg, {"train": dict})
    return _typed(TrainConfig, cfg["train"], path, "run config 'train'")


def run_config(run: str | Path) -> dict:
    """A run's config.json: an object; a Transformer run's `model` (and `train`, when present) valid configs."""
    path = Path(run) / "config.json"
    return check_run_config(path, read_object(path, "run config"))


def check_run_config(path: Path, cfg: Any) -> dict:
    """run_config's checks on config.json's contents `cfg`, read from path (engine.folder.describe calls this)."""
    require(path, "run config", cfg, {})
    kind = cfg.get("model_type", "transformer")
    if not isinstance(kind, str):
        raise UserError(f"{path}: run config: 'model_type' is {_kind(kind)}, expected a string")
    if kind == "transformer" and "export" not in cfg:
        model_config(path, cfg)
        if "train" in cfg:
            train_config(path, cfg)
    if kind == "mixture":
        require(path, "mixture config", cfg, {"components": list, "weight": NUMBER})
        parts = cfg["components"]
        if len(parts) != 2 or not all(isinstance(p, str) and p for p in parts):
            raise UserError(f"{path}: mixture config: 'components' must be two run folders, not {parts!r:.80}")
        if not 0.0 <= cfg["weight"] <= 1.0:
            raise UserError(f"{path}: mixture config: 'weight' is {cfg['weight']}, expected 0 to 1")
    for key in ("data", "vocab_hash", "preset"):
        if cfg.get(key) is not None and not isinstance(cfg[key], str):
            raise UserError(f"{path}: run config: {key!r} is {_kind(cfg[key])}, expected a string")
    if "languages" in cfg and not (isinstance(cfg["languages"], list)
                                   and all(isinstance(x, str) for x in cfg["languages"])):
        raise UserError(f"{path}: run config: 'languages' is not a list of strings")
    return cfg


STATE = {"step": int}  # what every checkpoint's state.json holds (training ones hold more: see TRAINING_STATE)
TRAINING_STATE = {"step": int, "tokens": int, "train_seconds": NUMBER, "rng": (list, str)}


def checkpoint_state(path: Path, d: Any, training: bool = False) -> dict:
    """A checkpoint's state.json `d` (read from path): step, the files' hashes, and for resuming the rest."""
    require(path, "checkpoint state", d, TRAINING_STATE if training else STATE)
    if d["step"] < 0:
        raise UserError(f"{path}: checkpoint state: 'step' is {d['step']}, expected >= 0")
    files = d.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise UserError(f"{path}: checkpoint state: 'files' is not an object of file names to hashes")
    if any("/" in k or "\\" in k or k.startswith(".") for k in files):
        raise UserError(f"{path}: checkpoint state: 'files' names a file outside the checkpoint folder")
    for key in ("vocab_hash",):
        if key in d and not isinstance(d[key], str):
            raise UserError(f"{path}: checkpoint state: {key!r} is {_kind(d[key])}, expected a string")
    if training and "best_dev_loss" in d and not _ok(d["best_dev_loss"], NUMBER):
        raise UserError(f"{path}: checkpoint state: 'best_dev_loss' is {_kind(d['best_dev_loss'])}, expected a number")
    if "n_layers" in d and not (_ok(d["n_layers"], int) and d["n_layers"] >= 1):
        raise UserError(f"{path}: checkpoint state: 'n_layers' is {d['n_layers']!r}, expected a positive integer")
    return d


SCORES = {"top1": NUMBER, "top3": NUMBER, "bpc": NUMBER}
EVAL = {"positions": int, "languages": dict, "macro": SCORES, "micro": SCORES}
RESULT = {"params": int, "train_seconds": NUMBER, "steps": int, "tokens": int, "best_dev_loss": NUMBER}


def eval_result(path: Path) -> dict:
    """An eval_<split>.json: per-language and macro/micro top-1, top-3 and bits per character."""
    d = read_object(path, "evaluation", EVAL)
    for lang, scores in d["languages"].items():
        require(path, "evaluation", scores, SCORES, f"languages.{lang}")
    return d


def train_result(path: Path) -> dict:
    """A run's result.json (what training reports at its end)."""
    return read_object(path, "training result", RESULT)
