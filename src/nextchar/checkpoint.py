"""Checkpoints: safetensors weights + optimizer tensors + a self-describing state.json, written atomically.

Layout inside a run: checkpoints/step-000500/{model.safetensors, optim.safetensors, state.json} and the
pointers checkpoints/latest.json and checkpoints/best.json ({"dir": "step-000500"}). A checkpoint folder is
complete before a pointer names it (pointers are replaced with os.replace), so a kill at any moment leaves
the previous checkpoint usable.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nextchar.errors import UserError
from nextchar.files import atomic_write_json, read_json, sha256_file


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    # safetensors refuses shared or non-contiguous storage; a clone per tensor is cheap at these sizes.
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(path))


def flatten_optimizer(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into tensors (for safetensors) and the JSON-able rest."""
    tensors, scalars = {}, {}
    for pid, st in opt_state["state"].items():
        scalars[str(pid)] = {}
        for name, val in st.items():
            if torch.is_tensor(val) and val.dim() > 0:
                tensors[f"{pid}.{name}"] = val
            else:
                scalars[str(pid)][name] = val.item() if torch.is_tensor(val) else val
    return tensors, {"param_groups": opt_state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for pid, vals in meta["scalars"].items():
        state[int(pid)] = {k: torch.tensor(v, dtype=torch.float32) for k, v in vals.items()}
    for key, val in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = val
    return {"state": state, "param_groups": meta["param_groups"]}


def save(run_dir: str | Path, model_state: dict[str, torch.Tensor], opt_state: dict | None, state: dict,
         tags: tuple[str, ...] = ("latest",)) -> Path:
    """Write one checkpoint folder and point each tag (latest, best) at it; drop folders no tag names."""
    ckdir = Path(run_dir) / "checkpoints"
    name = f"step-{state['step']:07d}"
    final = ckdir / name
    tmp = ckdir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _save_tensors(model_state, tmp / "model.safetensors")
    files = ["model.safetensors"]
    state = dict(state)
    if opt_state is not None:
        opt_tensors, opt_meta = flatten_optimizer(opt_state)
        _save_tensors(opt_tensors, tmp / "optim.safetensors")
        files.append("optim.safetensors")
        state["optimizer"] = opt_meta
    state["files"] = {f: sha256_file(tmp / f) for f in files}
    atomic_write_json(tmp / "state.json", state)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for tag in tags:
        atomic_write_json(ckdir / f"{tag}.json", {"dir": name, "step": state["step"]})
    _prune(ckdir)
    return final


def _prune(ckdir: Path) -> None:
    keep = set()
    for tag in ("latest", "best"):
        p = ckdir / f"{tag}.json"
        if p.exists():
            try:
                keep.add(json.loads(p.read_text())["dir"])
            except (ValueError, KeyError):
                return  # never delete anything while a pointer is unreadable
    for d in ckdir.glob("step-*"):
        if d.is_dir() and d.name not in keep:
            shutil.rmtree(d, ignore_errors=True)


def find(run_dir: str | Path, tag: str = "latest") -> Path | None:
    """The checkpoint folder a tag points to, or None when the run has no such checkpoint yet."""
    ptr = Path(run_dir) / "checkpoints" / f"{tag}.json"
    if not ptr.exists():
        return None
    d = Path(run_dir) / "checkpoints" / read_json(ptr, "checkpoint pointer").get("dir", "")
    if not d.is_dir():
        raise UserError(f"{ptr}: points to missing checkpoint folder {d.name}")
    return d


def load(ckpt_dir: str | Path, with_optimizer: bool = True) -> tuple[dict[str, torch.Tensor], dict | None, dict]:
    """Read (model tensors, optimizer state_dict or None, state) and verify every file against its hash."""
    ckpt_dir = Path(ckpt_dir)
    state = read_json(ckpt_dir / "state.json", "checkpoint state")
    for fname, digest in state.get("files", {}).items():
        p = ckpt_dir / fname
        if not p.exists():
            raise UserError(f"{p}: checkpoint file missing")
        if sha256_file(p) != digest:
            raise UserError(f"{p}: checkpoint file is truncated or corrupt (hash mismatch)")
    try:
        model_state = load_file(str(ckpt_dir / "model.safetensors"))
        opt = None
        if with_optimizer and "optimizer" in state:
            opt = unflatten_optimizer(load_file(str(ckpt_dir / "optim.safetensors")), state["optimizer"])
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{ckpt_dir}: unreadable checkpoint ({e})") from None
    return model_state, opt, state
