"""A model folder's self-description (config.json): the one writer and the one reader.

Every folder the engine loads says what it is in config.json: a training run of a Transformer ("model_type":
"transformer", with checkpoints/), an n-gram run ("ngram", model.npz), a mixture ("mixture", its components'
paths relative to the folder), or an ONNX export (an "export" entry). A Transformer folder may also carry an
ONNX form of itself in onnx/ (written by `nextchar package --onnx`), which a torch-free install runs. The
data path stored there is a hint (where the folder was made): `data_dir` looks for it next to the folder
and in the current folder, and asks for --data when it is not found.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nextchar.errors import UserError
from nextchar.files import atomic_write_json, read_json

KINDS = ("transformer", "ngram", "counts", "mixture", "onnx")
ONNX_FORM = "onnx"  # the sub-folder holding a Transformer folder's ONNX form


def kind_of(cfg: dict) -> str:
    """transformer, ngram, counts, mixture or onnx (an export) for a config.json's contents."""
    if "export" in cfg:
        return "onnx"
    return cfg.get("model_type", "transformer")


@dataclass(frozen=True)
class Description:
    """What config.json says about a folder."""

    folder: Path
    kind: str  # one of KINDS
    config: dict  # the whole config.json


def describe(folder: str | Path) -> Description:
    """Read folder/config.json; UserError when it is missing, unreadable or names no known kind."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: run directory not found")
    path = folder / "config.json"
    if not path.is_file():
        raise UserError(f"{folder}: no config.json (not a run, model or export folder)")
    cfg = read_json(path, "run config")
    if isinstance(cfg, dict) and kind_of(cfg) in KINDS:
        from nextchar.runfiles import check_run_config

        check_run_config(path, cfg)  # a damaged file is a one-line error naming it, not a KeyError later
    if not isinstance(cfg, dict) or kind_of(cfg) not in KINDS:
        what = cfg.get("model_type") if isinstance(cfg, dict) else type(cfg).__name__
        raise UserError(f"{path}: unknown kind of model ({what!r}; expected one of {', '.join(KINDS)})")
    return Description(folder, kind_of(cfg), cfg)


def write_description(folder: str | Path, cfg: dict) -> None:
    """Write folder/config.json atomically; cfg must say which kind of folder it is."""
    if kind_of(cfg) not in KINDS:
        raise ValueError(f"config of unknown kind {kind_of(cfg)!r}")
    atomic_write_json(Path(folder) / "config.json", cfg)


def onnx_form(folder: str | Path) -> Path | None:
    """The ONNX form packaged inside a Transformer folder, or None."""
    sub = Path(folder) / ONNX_FORM
    if not (sub / "config.json").is_file():
        return None
    try:
        return sub if kind_of(read_json(sub / "config.json")) == "onnx" else None
    except UserError:
        return None


def component_path(component: str | Path, out: str | Path) -> str:
    """How a mixture in `out` stores a component: relative to the mixture's folder when inside it, so the folder
    can move; otherwise absolute."""
    c, o = Path(component).resolve(), Path(out).resolve()
    return str(c.relative_to(o)) if c.is_relative_to(o) else str(c)


def data_dir(desc: Description, given: str | Path | None = None) -> Path:
    """The data directory for a folder: `given` (--data), else the stored hint if it is found as it is, next to
    the folder or in the current folder; UserError asking for --data otherwise."""
    if given is not None:
        return Path(given)
    hint = desc.config.get("data") or desc.config.get("source", {}).get("data")
    if hint:
        for cand in (Path(hint), desc.folder / hint, desc.folder.parent / hint):
            if cand.is_dir():
                return cand
    where = f"its training data ({hint}) is not here" if hint else "it names no data directory"
    raise UserError(f"{desc.folder}: {where}; pass --data DIR (a prepared data directory with the same vocabulary)")
