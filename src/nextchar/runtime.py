"""Process helpers: CPU threads, device choice, distributed rank (print0, is_main); torch only when it is loaded.

Nothing here imports torch at module level: a prediction-only process (ONNX, counts) asks for its rank or
threads without paying torch's import. Rank questions read torch.distributed only when torch is already
imported (a process group cannot exist otherwise).
"""

from __future__ import annotations

import os
import platform
import sys

from nextchar.errors import UserError


def _group():
    """torch.distributed when a process group is up, else None (without importing torch)."""
    if "torch" not in sys.modules:
        return None
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def rank() -> int:
    """This process's rank in the process group (0 without one)."""
    g = _group()
    return g.get_rank() if g is not None else 0


def world() -> int:
    """Processes in the group (1 without one)."""
    g = _group()
    return g.get_world_size() if g is not None else 1


def local_rank() -> int:
    """Rank on this machine, as torchrun sets it."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def print0(*args, **kwargs) -> None:
    """print on rank 0 only (flushed: logs of several ranks interleave by line)."""
    if is_main():
        print(*args, **kwargs, flush=True)


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_threads(n: int) -> int:
    """n itself, or for 0 the cores this process may use shared out among the local ranks."""
    if n < 0:
        raise UserError(f"--threads {n}: must be 0 (all cores) or more")
    if n == 0:
        n = max(1, cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return n


def set_threads(n: int) -> int:
    """Set torch's CPU threads explicitly (0 = the cores this process may use, shared out among local ranks).

    Imports torch: call it where torch is needed anyway (training, the PyTorch backend); prediction-only code
    passes its threads to the backend instead (engine.load(threads=...)). Returns the number set.
    """
    import torch

    n = resolve_threads(n)
    torch.set_num_threads(n)
    return n


def resolve_device(name: str) -> str:
    """auto -> cuda when available, else cpu; cuda without a device is a UserError. Imports torch only to look."""
    if name not in ("auto", "cuda"):
        return name  # cpu (the configs validate the names)
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return name


def device_name(device: str) -> str:
    """A readable name of the device: the GPU's model, or the CPU's and its core count."""
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name()
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
