"""engine.load: a folder or a model name -> a Predictor, dispatching on the folder's own description.

Backends are imported only when a folder needs them, so predicting from an ONNX export or a count model never
imports torch.
"""

from __future__ import annotations

from pathlib import Path

from nextchar import models
from nextchar.engine.base import Predictor
from nextchar.engine.folder import describe, onnx_form
from nextchar.errors import UserError, check_int
from nextchar.vocab import Vocab

# auto: an export or a packaged ONNX form runs with onnxruntime (no torch to import: a fast start), a training
# run with PyTorch; torch / onnx / onnx-int8 ask for one.
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")


def resolve(path_or_name: str | Path) -> Path:
    """The folder of a path, or of a shipped model's name (`default`); UserError naming both when neither."""
    if not isinstance(path_or_name, str | Path):
        raise UserError(f"path_or_name: expected a folder or a model name, got {type(path_or_name).__name__}")
    path = Path(path_or_name)
    if path.is_dir():
        return path
    name = str(path_or_name)
    found = models.find(name) if name and "/" not in name and "\\" not in name else None
    if found is not None:
        return found
    known = ", ".join(models.names()) or "none"
    raise UserError(f"{path}: run directory not found (nor a shipped model name: {known})")


def load(path_or_name: str | Path, backend: str = "auto", device: str = "cpu", threads: int | None = None,
         tag: str = "best", stride: int = 1) -> Predictor:
    """Open a run, model or export folder (or a shipped model by name) for prediction.

    backend: see BACKENDS. device: cpu or cuda (PyTorch only). threads: onnxruntime's intra-op threads (default
    1), or torch's process-wide threads when given for a PyTorch backend (0 = all cores). tag: the checkpoint
    of a training run (best, else latest). stride: the typing window's stride (base.window_start; 1 = the
    exact last-context window). Raises UserError for a missing or unusable folder.
    """
    if backend not in BACKENDS:
        raise UserError(f"--backend {backend!r}: unknown backend (choose from {', '.join(BACKENDS)})")
    if device not in ("cpu", "cuda"):
        raise UserError(f"--device {device!r}: choose cpu or cuda")
    if threads is not None:
        check_int(threads, "threads", 0, 4096)
    check_int(stride, "stride")
    if tag not in ("best", "latest"):
        raise UserError(f"tag {tag!r}: choose best or latest")
    folder = resolve(path_or_name)
    if backend.startswith("onnx") and not (folder / "config.json").is_file():
        raise UserError(f"{folder}: not an export folder (no config.json); write one with `nextchar export`")
    return _load(folder, backend, device, threads, tag, stride)


def _load(folder: Path, backend: str, device: str, threads: int | None, tag: str, stride: int) -> Predictor:
    desc = describe(folder)
    onnx = backend.startswith("onnx")
    if desc.kind == "onnx":
        if device != "cpu":
            raise UserError(f"--device {device}: an ONNX export runs on the CPU")
        from nextchar.engine.onnx_backend import OnnxPredictor

        return OnnxPredictor(folder, int8=backend == "onnx-int8", threads=1 if threads is None else threads,
                             stride=stride)
    if desc.kind == "mixture":
        from nextchar.engine.mixture_backend import MixturePredictor, Rule

        cfg = desc.config
        # a mixture written before learned rules stores only its global linear weight
        rule = Rule.from_dict(cfg["rule"] if isinstance(cfg.get("rule"), dict) else {"weight": cfg.get("weight")})
        # `/` keeps an absolute component path as it is; a relative one is inside the mixture's folder.
        a, b = (_load(_component(folder, p), backend, device, threads, tag, stride) for p in cfg["components"])
        return MixturePredictor(a, b, rule, folder.name)
    if desc.kind == "counts":
        from nextchar.engine.counts_backend import CountsPredictor

        return CountsPredictor.from_folder(folder)
    if desc.kind == "ngram":
        from nextchar.engine.ngram_backend import NGramPredictor
        from nextchar.ngram import NGramModel

        return NGramPredictor(NGramModel.load(folder / "model.npz"), Vocab.load(folder / "vocab.json"), folder.name)
    form = onnx_form(folder)
    if onnx or (backend == "auto" and form is not None and device == "cpu"):
        if form is None:
            raise UserError(f"{folder}: not an export folder but a training run; export it first "
                            f"(nextchar export --run {folder} --out DIR) to use --backend {backend}")
        pred = _load(form, backend if onnx else "onnx", device, threads, tag, stride)
        pred.run_id = folder.name
        return pred
    try:
        from nextchar.engine.torch_backend import TorchPredictor
    except ModuleNotFoundError as e:
        if e.name not in ("torch", "safetensors"):
            raise
        raise UserError(f"{folder}: a PyTorch run needs torch (pip install 'nextchar[train]'), or an ONNX form "
                        f"of it (nextchar export, or nextchar package --onnx)") from None
    if threads is not None:
        from nextchar.runtime import set_threads

        set_threads(threads)
    return TorchPredictor.from_run(folder, desc.config, Vocab.load(folder / "vocab.json"), device, tag, stride)


def _component(folder: Path, part: str) -> Path:
    path = folder / part
    if not path.is_dir():
        raise UserError(f"{folder / 'config.json'}: mixture component {part} not found")
    return path
