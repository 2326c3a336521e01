"""Checkpoints: safetensors weights + optimizer tensors + a self-describing state.json, written atomically.

Layout inside a run: checkpoints/step-000500/{model.safetensors, optim.safetensors, state.json} and the
pointers checkpoints/latest.json and checkpoints/best.json ({"dir": "step-000500"}). A checkpoint folder is
complete before a pointer names it (pointers are replaced with os.replace), and a folder a pointer names is
never changed or removed while it is named (the same step saved twice goes to a new folder, step-000500-2), so
at every instant both pointers name complete checkpoints and a kill at any moment leaves the run usable.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nextchar import safefs
from nextchar.errors import UserError
from nextchar.files import atomic_write_json, read_json, sha256_file

log = logging.getLogger(__name__)


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    # safetensors refuses shared or non-contiguous storage; a clone per tensor is cheap at these sizes.
    try:
        save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(path))
    except SafetensorError as e:
        # Its I/O errors (a full disk among them) arrive as "I/O error: No space left on device (os error 28)".
        code = re.search(r"os error (\d+)", str(e))
        if code:
            raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from None
        raise UserError(f"{path}: cannot write checkpoint file ({e})") from None
    _fsync_file(path)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # on disk before the folder is renamed into place (a power cut must not undo the order)
    finally:
        os.close(fd)


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


def _nbytes(tensors) -> int:
    return sum(v.numel() * v.element_size() for v in tensors.values() if torch.is_tensor(v))


def save(run_dir: str | Path, model_state: dict[str, torch.Tensor], opt_state: dict | None, state: dict,
         tags: tuple[str, ...] = ("latest",)) -> Path:
    """Write one checkpoint folder and point each tag (latest, best) at it; drop folders no tag names.

    The sequence, each step leaving both pointers on complete checkpoints: (1) write every file into a fresh
    .<name>.tmp folder and fsync it; (2) rename it to a name no folder has (step-N, or step-N-2, ... when this
    step was saved before, e.g. resuming a finished run: the folder the pointers name is never touched);
    (3) replace each pointer atomically; (4) remove the folders and temp folders no pointer names. Raises
    UserError naming the file on a write error; on a full disk also the space needed (the previous checkpoint
    stays the one the pointers name).
    """
    ckdir = Path(run_dir) / "checkpoints"
    base = f"step-{state['step']:07d}"
    name, k = base, 1
    while (ckdir / name).exists() or (ckdir / name).is_symlink():
        k += 1
        name = f"{base}-{k}"
    final = ckdir / name
    tmp = ckdir / f".{name}.tmp"
    # The weights, the optimizer's two moments per weight (AdamW), state.json (its size before the hashes go in),
    # each file rounded up to the usual 4 KB block.
    state = dict(state)
    need = 3 * _nbytes(model_state) + len(json.dumps(state, default=str)) + 4 * 4096
    try:
        safefs.rmtree(tmp)
        tmp.mkdir(parents=True)
        _save_tensors(model_state, tmp / "model.safetensors")
        files = ["model.safetensors"]
        if opt_state is not None:
            opt_tensors, opt_meta = flatten_optimizer(opt_state)
            need += _nbytes(opt_tensors) - 2 * _nbytes(model_state) + len(json.dumps(opt_meta, default=str))
            _save_tensors(opt_tensors, tmp / "optim.safetensors")
            files.append("optim.safetensors")
            state["optimizer"] = opt_meta
        state["files"] = {f: sha256_file(tmp / f) for f in files}
        atomic_write_json(tmp / "state.json", state)
        os.rename(tmp, final)  # final does not exist: nothing a pointer names is replaced
        safefs.fsync_dir(ckdir)
        for tag in tags:
            atomic_write_json(ckdir / f"{tag}.json", {"dir": name, "step": state["step"]})
    except BaseException as e:
        safefs.rmtree(tmp)
        kept = "the run's previous checkpoint is intact"
        if safefs.is_no_space(e):
            raise safefs.no_space_error(Path(e.filename or tmp), need, kept) from None
        if isinstance(e, safefs.NoSpace):  # from a JSON file: the space needed is the checkpoint's
            raise safefs.no_space_error(e.path, need, kept) from None
        if isinstance(e, OSError):
            raise UserError(f"{e.filename or tmp}: cannot write checkpoint ({e.strerror or e}); {kept}") from None
        raise
    _prune(ckdir)
    return final


def _prune(ckdir: Path) -> None:
    """Remove checkpoint folders no pointer names, and temp folders of interrupted saves (the caller holds the
    run's lock, so no other save is in progress)."""
    keep = set()
    for tag in ("latest", "best"):
        p = ckdir / f"{tag}.json"
        if p.exists() or p.is_symlink():
            try:
                keep.add(pointer_dir(p))
            except UserError:
                return  # never delete anything while a pointer is unreadable...
            if not (ckdir / pointer_dir(p)).is_dir():
                return  # ...or names a folder that is gone (a damaged run: keep what is left)
    for d in [*ckdir.glob("step-*"), *ckdir.glob(".step-*.tmp")]:
        if d.name not in keep and (d.is_dir() or d.name.startswith(".")):
            try:
                safefs.rmtree(d)
            except OSError as e:  # housekeeping only: the checkpoint is saved; the next save tries again
                log.warning("%s: could not remove an old checkpoint folder (%s)", d, e.strerror or e)


_DIR_NAME = re.compile(r"step-\d{7,}(-\d+)?")


def pointer_dir(ptr: Path) -> str:
    """The folder name a pointer file ({"dir": "step-0000500", "step": 500}) holds; UserError when it is not
    valid JSON, not an object, or the name is not a checkpoint folder's (so a pointer can never lead outside)."""
    d = read_json(ptr, "checkpoint pointer")
    if not isinstance(d, dict):
        raise UserError(f"{ptr}: checkpoint pointer is not a JSON object (expected {{\"dir\": \"step-NNNNNNN\"}})")
    name = d.get("dir")
    if not isinstance(name, str) or not _DIR_NAME.fullmatch(name):
        raise UserError(f"{ptr}: checkpoint pointer has no valid \"dir\" (got {name!r}, expected \"step-NNNNNNN\")")
    return name


def find(run_dir: str | Path, tag: str = "latest") -> Path | None:
    """The checkpoint folder a tag points to, or None when the run has no such checkpoint yet."""
    ptr = Path(run_dir) / "checkpoints" / f"{tag}.json"
    if not ptr.exists():
        return None
    d = Path(run_dir) / "checkpoints" / pointer_dir(ptr)
    if not d.is_dir():
        raise UserError(f"{ptr}: points to missing checkpoint folder {d.name}")
    return d


def load(ckpt_dir: str | Path, with_optimizer: bool = True) -> tuple[dict[str, torch.Tensor], dict | None, dict]:
    """Read (model tensors, optimizer state_dict or None, state) and verify every file against its hash."""
    from nextchar.runfiles import checkpoint_state  # (imported here: runfiles needs config, not torch)

    ckpt_dir = Path(ckpt_dir)
    state = checkpoint_state(ckpt_dir / "state.json", read_json(ckpt_dir / "state.json", "checkpoint state"))
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
            tensors = load_file(str(ckpt_dir / "optim.safetensors"))
            try:
                opt = unflatten_optimizer(tensors, state["optimizer"])
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise UserError(f"{ckpt_dir / 'state.json'}: checkpoint state: 'optimizer' is damaged "
                                f"({type(e).__name__}: {e})") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{ckpt_dir}: unreadable checkpoint ({e})") from None
    return model_state, opt, state
