"""`nextchar export`: a trained run as a self-contained ONNX folder (fp32, optionally int8), with its parity check.

The folder holds model.onnx (ids (B, T), rows (M,), cols (M,) -> log-probabilities (M, V) after
ids[rows[m], :cols[m] + 1]); step.onnx (ids (B, T) and past_k0, past_v0, ... (B, H, P, Dh) per layer ->
log-probabilities (B, V) after the last id and present_k0, present_v0, ... (B, H, P + T, Dh): the key/value
cache for typing); key.onnx (the same for one id of one session: the lean per-keystroke graph); their
.int8.onnx twins with --int8; vocab.json; and config.json, whose "export" entry marks
the folder as an export and whose "source" names the run and checkpoint it came from. The runtime that
reads it is nextchar.engine.onnx_backend.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nextchar import runfiles, safefs
from nextchar.engine.base import START, Predictor, rank
from nextchar.engine.folder import data_dir, describe, write_description
from nextchar.engine.onnx_backend import OnnxPredictor, cache_names
from nextchar.engine.torch_backend import TorchPredictor
from nextchar.errors import UserError, check_int
from nextchar.files import atomic_write_bytes, read_json
from nextchar.model import CharTransformer
from nextchar.vocab import Vocab

FORMATS = ("onnx",)
EXPORT_VERSION = 1
OPSET = 17  # the first with LayerNormalization as one op
GRAPHS = ("model", "step", "key")
FILES = {**{g: f"{g}.onnx" for g in GRAPHS}, **{f"{g}_int8": f"{g}.int8.onnx" for g in GRAPHS}}
WEIGHTS = "weights.bin"  # the graphs' shared large tensors (see share_weights)
PARITY_TOL = 1e-4  # largest |probability difference| an fp32 export may show against PyTorch


class _Full(nn.Module):
    """The batch graph: any positions of a right-padded batch, so windows that begin one another share a row."""

    def __init__(self, model: CharTransformer):
        super().__init__()
        self.model = model

    def forward(self, ids, rows, cols):
        logits, _ = self.model(ids)  # (B, T, V)
        return torch.log_softmax(logits[rows, cols], dim=-1)  # (M, V)


class _Step(nn.Module):
    """The typing graph: new ids on top of a key/value cache, one input and one output per layer's keys and values
    (a stacked cache would cost onnxruntime two more copies of it per keystroke)."""

    def __init__(self, model: CharTransformer):
        super().__init__()
        self.model = model

    def forward(self, ids, *past):
        prev = None
        if self.model.cfg.ngram_buckets:  # the ids before `ids` come first (see write_graphs)
            prev, past = past[0], past[1:]
        cache = [(past[2 * i], past[2 * i + 1]) for i in range(self.model.cfg.n_layers)]  # (B, H, P, Dh) each
        logits, _ = self.model(ids, cache=cache, last_only=True, prev=prev)  # (B, 1, V)
        return (torch.log_softmax(logits[:, -1], dim=-1), *[t for kv in cache for t in kv])  # (B, V), (B, H, P+T, Dh)..


def _onnx_export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
                 dynamic: dict) -> None:
    module.eval()  # export restores the train/eval flag recursively, so the wrapper must be in eval too
    with warnings.catch_warnings():
        # The tracer warns about Python ints and shape checks that are exact for these graphs (tested by parity).
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=OPSET, input_names=inputs,
                          output_names=outputs, dynamic_axes=dynamic, do_constant_folding=True)


def write_graphs(model: CharTransformer, folder: Path) -> None:
    """model.onnx, step.onnx and key.onnx for a model, traced with shapes that take its general code paths."""
    cfg = model.cfg
    T = min(4, cfg.context)
    ids = torch.zeros((2, T), dtype=torch.long)
    rows, cols = torch.tensor([0, 1, 1]), torch.tensor([T - 1, 0, T - 1])
    _onnx_export(_Full(model), (ids, rows, cols), folder / FILES["model"], ["ids", "rows", "cols"], ["logprobs"],
                 {"ids": {0: "batch", 1: "seq"}, "rows": {0: "picks"}, "cols": {0: "picks"},
                  "logprobs": {0: "picks"}})
    # Traced with a past and several new ids, the attention takes its masked branch, which is right for any
    # past length (0 included) and any number of new ids.
    dh = cfg.d_model // cfg.n_heads
    P = min(3, cfg.context - 2)
    past = [torch.zeros((1, cfg.n_heads, P, dh)) for _ in range(2 * cfg.n_layers)]
    ins, outs = cache_names(cfg.n_layers, "past"), cache_names(cfg.n_layers, "present")
    dynamic = {"ids": {0: "batch", 1: "seq"}, "logprobs": {0: "batch"}}
    dynamic.update({name: {0: "batch", 2: "past"} for name in ins})
    dynamic.update({name: {0: "batch", 2: "total"} for name in outs})
    # A model with hashed n-gram inputs also takes `prev` (B, ngram_order-1), the ids before `ids`.
    extra, extra_names = [], []
    if cfg.ngram_buckets:
        extra, extra_names = [torch.full((1, cfg.ngram_order - 1), cfg.vocab_size, dtype=torch.long)], ["prev"]
        dynamic["prev"] = {0: "batch"}
    _onnx_export(_Step(model), (torch.zeros((1, 2), dtype=torch.long), *extra, *past), folder / FILES["step"],
                 ["ids", *extra_names, *ins], ["logprobs", *outs], dynamic)
    # The keystroke graph: one new id of one session, so every shape but the past's length is fixed and the
    # shape arithmetic folds away (about half the nodes of step.onnx, each a fixed cost per keystroke). One
    # query needs no mask, whatever the past's length (0 included).
    dynamic = {name: {2: "past"} for name in ins}
    dynamic.update({name: {2: "total"} for name in outs})
    _onnx_export(_Step(model), (torch.zeros((1, 1), dtype=torch.long), *extra, *past), folder / FILES["key"],
                 ["ids", *extra_names, *ins], ["logprobs", *outs], dynamic)
    for name in ("model", "step", "key"):
        fold_shapes(folder / FILES[name])


def fold_shapes(path: Path) -> int:
    """Replace Shape nodes whose answer is known before running by constants; returns how many.

    onnxruntime's symbolic shape inference follows the arithmetic of dynamic dims (a Range from P to P + 1
    has length 1), which ONNX's own inference does not; onnxruntime then folds what depended on the shapes.
    """
    import onnx
    from onnx import helper, numpy_helper
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.load(str(path))
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception:  # noqa: BLE001 - an optimization only: a graph it cannot follow stays as exported
        return 0
    finally:
        root.setLevel(level)
    dims = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            dims[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    nodes, folded = [], 0
    for node in model.graph.node:
        shape = dims.get(node.input[0]) if node.op_type == "Shape" else None
        if shape is not None:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            shape = shape[attrs.get("start", 0):attrs.get("end", len(shape))]  # ONNX clamps like Python slices
            if all(d is not None for d in shape):
                value = numpy_helper.from_array(np.array(shape, dtype=np.int64))
                nodes.append(helper.make_node("Constant", [], [node.output[0]], value=value))
                folded += 1
                continue
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(path))
    return folded


def share_weights(folder: Path, names: list[str], min_size: int = 1024) -> dict:
    """Move the large weights of several graphs into one file, WEIGHTS, each distinct tensor stored once.

    The graphs of one export hold the same weights (the hashed n-gram table alone is most of a model), so they
    point into one shared file (ONNX external data) instead of each carrying a copy. A float32 tensor whose
    values are all exact in float16 (weights packaged with --half) is stored as float16 behind a Cast node,
    which onnxruntime folds back to float32 when it loads the graph: the same numbers at half the bytes.
    Returns {"bytes": size of WEIGHTS, "tensors": distinct tensors stored}.
    """
    import hashlib

    import onnx
    from onnx import helper, numpy_helper

    blob, where = bytearray(), {}
    for name in names:
        model = onnx.load(str(folder / name))
        casts = []
        for init in model.graph.initializer:
            arr = numpy_helper.to_array(init)
            if arr.size < min_size:
                continue
            if arr.dtype == np.float32 and np.array_equal(arr.astype(np.float16).astype(np.float32), arr):
                half = numpy_helper.from_array(arr.astype(np.float16), init.name + "_f16")
                casts.append(helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT))
                init.CopyFrom(half)
                arr = arr.astype(np.float16)
            data = np.ascontiguousarray(arr).tobytes()
            key = hashlib.sha256(data + str((arr.dtype, arr.shape)).encode()).hexdigest()
            if key not in where:
                blob += bytes(-len(blob) % 4096)  # page-aligned, so onnxruntime may map it
                where[key] = (len(blob), len(data))
                blob += data
            init.ClearField("raw_data")
            for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                init.ClearField(field)
            init.data_location = onnx.TensorProto.EXTERNAL
            del init.external_data[:]
            for k, v in (("location", WEIGHTS), ("offset", where[key][0]), ("length", where[key][1])):
                init.external_data.add(key=k, value=str(v))
        if casts:  # Cast nodes read only initializers: they may come first in topological order
            nodes = list(model.graph.node)
            del model.graph.node[:]
            model.graph.node.extend(casts + nodes)
        onnx.save(model, str(folder / name))
    atomic_write_bytes(folder / WEIGHTS, bytes(blob))
    return {"bytes": len(blob), "tensors": len(where)}


def quantize(src: Path, dst: Path) -> None:
    """Weights of every MatMul to int8 (activations quantized on the fly): onnxruntime's dynamic quantization."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it logs a generic "consider pre-processing" warning on every call
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"])
    finally:
        root.setLevel(level)


# -- checks -----------------------------------------------------------------------------------------------


def dev_prefixes(ds, n: int, max_len: int = 256) -> list[str]:
    """n typed prefixes from the dev text, round-robin over languages, lengths 0..max_len, cut points spread out."""
    langs = sorted(ds.languages)
    texts = {lang: ds.text(lang, "dev") for lang in langs}
    out = []
    for i in range(n):
        text = texts[langs[i % len(langs)]]
        length = (i * 37) % (min(max_len, len(text)) + 1)
        end = length + (i * 7919) % (len(text) - length + 1)  # a large prime stride spreads the cut points
        out.append(text[end - length:end])
    return out


def parity(ref: Predictor, other: Predictor, prefixes: list[str], k: int = 3) -> dict:
    """How closely `other` follows `ref`: share of equal top-k lists and the largest probability difference."""
    a, b = ref.dist(prefixes), other.dist(prefixes)  # (N, V)
    ok, chars = ref.suggestible(), ref.vocab.chars
    ta, tb = rank(a, ok, chars, k), rank(b, ok, chars, k)
    same = sum([c for c, _ in x] == [c for c, _ in y] for x, y in zip(ta, tb))
    worst = float(np.abs(a - b).max()) if len(prefixes) else 0.0
    return {"n": len(prefixes), "topk_equal": same / max(1, len(prefixes)), "max_abs_dp": worst}


def typing_parity(ref: Predictor, other: Predictor, text: str) -> float:
    """Largest probability difference between two backends' typing sessions over text (with a few backspaces)."""
    sa, sb = ref.session(), other.session()
    worst, prefix = 0.0, ""
    for i, ch in enumerate(text):
        prefix = prefix[:-2] if i % 17 == 16 else prefix + ch
        worst = max(worst, float(np.abs(sa.dist(prefix) - sb.dist(prefix)).max()))
    return worst


def int8_accuracy(fp32: Predictor, int8: Predictor, data: Path, positions: int) -> dict:
    """Dev top-1/top-3 of the fp32 and int8 exports (evaluate.evaluate), or why it was skipped."""
    from nextchar.data import open_data
    from nextchar.evaluate import evaluate

    if positions < 1:
        return {"skipped": "not asked for (0 positions)"}
    if not data.is_dir():
        return {"skipped": f"data dir {data} not found"}
    try:
        ds = open_data(data)
        res = {name: evaluate(p, ds, "dev", positions) for name, p in (("fp32", fp32), ("int8", int8))}
    except UserError as e:
        return {"skipped": str(e)}
    out = {"data": str(data), "positions": positions}
    for avg in ("micro", "macro"):
        for m in ("top1", "top3"):
            f, q = res["fp32"][avg][m], res["int8"][avg][m]
            out[f"{avg}_{m}"] = {"fp32": f, "int8": q, "delta": q - f}
    return out


# -- export ---------------------------------------------------------------------------------------------


def is_export(folder: Path) -> bool:
    try:
        return describe(folder).kind == "onnx"
    except UserError:
        return False


def export(run: str | Path, out: str | Path, fmt: str = "onnx", int8: bool = False, positions: int = 200,
           parity_prefixes: int = 1000) -> dict:
    """`nextchar export`: write OUT (graphs, vocabulary, config), check parity, measure int8's accuracy change."""
    check_int(positions, "--eval-positions", 0)
    check_int(parity_prefixes, "parity_prefixes", 0)
    run, out = Path(run), Path(out)
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: unknown export format (choose from {', '.join(FORMATS)})")
    if not run.is_dir():
        raise UserError(f"{run}: run directory not found")
    desc = describe(run)
    cfg = desc.config
    if desc.kind == "onnx":
        raise UserError(f"{run}: is an export folder, not a training run")
    if desc.kind != "transformer":
        raise UserError(f"{run}: a {desc.kind} run has no ONNX export (export a Transformer run)")
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or is_export(out))):
        raise UserError(f"{out}: exists and is not an export folder; refusing to overwrite it")
    vocab = Vocab.load(run / "vocab.json")
    ref = TorchPredictor.from_run(run, cfg, vocab, "cpu")
    ref.model.float()
    ds = None
    try:
        data = data_dir(desc)
    except UserError:
        data = Path(str(cfg.get("data", "")))  # int8_accuracy says it was not found
    if data.is_dir():
        from nextchar.data import open_data

        try:
            ds = open_data(data)
        except UserError:
            ds = None
    if ds is not None and ds.vocab.hash != vocab.hash:
        ds = None

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = safefs.staging_dir(out, "export")  # a private folder beside out: two exports never share one
    except OSError as e:
        raise UserError(f"{out}: cannot create ({e.strerror or e})") from None
    try:
        write_graphs(ref.model, tmp)
        files = {name: FILES[name] for name in GRAPHS}
        if int8:
            for name in GRAPHS:
                quantize(tmp / FILES[name], tmp / FILES[f"{name}_int8"])
                files[f"{name}_int8"] = FILES[f"{name}_int8"]
        shared = share_weights(tmp, list(files.values()))
        atomic_write_bytes(tmp / "vocab.json", (run / "vocab.json").read_bytes())
        ck = ref.checkpoint
        state = runfiles.checkpoint_state(ck / "state.json", read_json(ck / "state.json", "checkpoint state"))
        meta = {
            "export": {"format": fmt, "version": EXPORT_VERSION, "opset": OPSET, "files": files, "weights": WEIGHTS,
                       "weights_bytes": shared["bytes"]},
            "model_type": "transformer",
            "data": cfg.get("data"),  # where `nextchar eval --run EXPORT` finds the data by default
            "model": cfg["model"],
            "vocab_hash": vocab.hash,
            "source": {"run": str(run.resolve()), "checkpoint": ck.name, "step": state.get("step"),
                       "data": cfg.get("data")},
        }
        write_description(tmp, meta)

        # Parity: PyTorch against the fp32 graphs, batch and typing; a miss means the export is wrong.
        prefixes = dev_prefixes(ds, parity_prefixes) if ds is not None else _random_prefixes(vocab, parity_prefixes)
        text = prefixes[max(range(len(prefixes)), key=lambda i: len(prefixes[i]))] if prefixes else START
        fp32 = OnnxPredictor(tmp, threads=0)
        meta["parity"] = parity(ref, fp32, prefixes)
        meta["parity"]["typing_max_abs_dp"] = typing_parity(ref, fp32, text[: ref.context + 40])
        worst = max(meta["parity"]["max_abs_dp"], meta["parity"]["typing_max_abs_dp"])
        if worst > PARITY_TOL:
            raise RuntimeError(f"ONNX export of {run} does not match PyTorch (|dp| up to {worst:.2e})")
        if int8:
            q = OnnxPredictor(tmp, int8=True, threads=0)
            meta["int8"] = {"parity": parity(fp32, q, prefixes),
                            "accuracy": int8_accuracy(fp32, q, data, positions)}
        write_description(tmp, meta)
        for f in tmp.iterdir():
            f.chmod(0o644)  # atomic writes create private temp files; an export is meant to be shipped
        safefs.replace_dir(tmp, out)  # out is at every instant the old export, whole, or the new one
    except BaseException as e:
        safefs.rmtree(tmp)
        if safefs.is_no_space(e):
            raise safefs.no_space_error(Path(e.filename or tmp), None, f"{out} is as it was") from None
        raise
    meta["out"] = str(out)
    return meta


def _random_prefixes(vocab: Vocab, n: int) -> list[str]:
    rng = np.random.default_rng(0)
    chars = [c for i, c in enumerate(vocab.chars) if not vocab.is_special(i)]
    return ["".join(rng.choice(chars, size=int(rng.integers(0, 200)))) for _ in range(n)]


def format_summary(res: dict) -> str:
    """What `nextchar export` prints."""
    files = ", ".join(list(res["export"]["files"].values()) + [WEIGHTS, "vocab.json", "config.json"])
    p = res["parity"]
    lines = [f"wrote {res['out']} ({files})",
             (f"parity fp32 vs PyTorch on {p['n']} prefixes: top-3 equal {p['topk_equal']:.2%}, "
              f"max |dp| {p['max_abs_dp']:.1e} (typing {p['typing_max_abs_dp']:.1e})")]
    if "int8" in res:
        q, acc = res["int8"]["parity"], res["int8"]["accuracy"]
        lines.append(f"int8 vs fp32 on {q['n']} prefixes: top-3 equal {q['topk_equal']:.2%}, "
                     f"max |dp| {q['max_abs_dp']:.1e}")
        if "skipped" in acc:
            lines.append(f"int8 accuracy change not measured: {acc['skipped']}")
        else:
            for key in ("micro_top3", "macro_top3", "micro_top1"):
                m = acc[key]
                lines.append(f"int8 dev {key.replace('_', ' ')}: {m['fp32']:.2%} -> {m['int8']:.2%} "
                             f"({100 * m['delta']:+.2f} points; {acc['positions']} positions/language)")
    return "\n".join(lines)
