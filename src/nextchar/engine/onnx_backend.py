"""The ONNX backend: an export folder run with onnxruntime on the CPU behind the contract (no torch).

An export folder (written by `nextchar export`) holds model.onnx (ids (B, T), rows (M,), cols (M,) ->
log-probabilities (M, V) after ids[rows[m], :cols[m] + 1]); step.onnx (ids (B, T), [prev (B, K)] and past_k0,
past_v0, ... (B, H, P, Dh) per layer -> log-probabilities (B, V) after the last id and present_k0, ... (B, H,
P + T, Dh)); key.onnx (the same for one id of one session); their .int8.onnx twins; vocab.json; config.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nextchar.engine.folder import describe
from nextchar.engine.windowed import WindowedPredictor
from nextchar.errors import UserError
from nextchar.runfiles import model_config, require
from nextchar.vocab import Vocab


def cache_names(n_layers: int, prefix: str) -> list[str]:
    """The graphs' cache inputs (prefix "past") or outputs ("present"): k0, v0, k1, v1, ..."""
    return [f"{prefix}_{kind}{i}" for i in range(n_layers) for kind in "kv"]


class OnnxPredictor(WindowedPredictor):
    """An export folder: model.onnx for batches, key.onnx per keystroke (step.onnx when several ids arrive)."""

    def __init__(self, folder: str | Path, int8: bool = False, threads: int = 1, stride: int = 1):
        import onnxruntime as ort

        folder = Path(folder)
        desc = describe(folder)
        cfg = desc.config
        if desc.kind != "onnx":
            raise UserError(f"{folder}: not an export folder (config.json has no 'export' entry)")
        require(folder / "config.json", "export config", cfg, {"export": dict})
        files = cfg["export"].get("files", {})
        if not isinstance(files, dict) or not all(isinstance(v, str) and v and "/" not in v and not v.startswith(".")
                                                  for v in files.values()):
            raise UserError(f"{folder / 'config.json'}: export config: 'export.files' is not an object of file "
                            "names in the folder")
        if cfg["export"].get("format") != "onnx" or "model" not in files:
            raise UserError(f"{folder}: not an ONNX export (format {cfg['export'].get('format')!r})")
        if int8 and "model_int8" not in files:
            raise UserError(f"{folder}: has no int8 model (export it with --int8)")
        vocab = Vocab.load(folder / "vocab.json")
        if cfg.get("vocab_hash", vocab.hash) != vocab.hash:
            raise UserError(f"{folder / 'vocab.json'}: not the vocabulary the model was exported with")
        mcfg = model_config(folder / "config.json", cfg)
        super().__init__(vocab, mcfg.context, folder.name, stride, mcfg.ngram_order if mcfg.ngram_buckets else 0,
                         pad_id=mcfg.vocab_size)
        self.cfg = mcfg
        self.int8 = int8
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads  # 0 = onnxruntime's default (all cores)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

        self._folder, self._files, self._opts = folder, files, opts
        suffix = "_int8" if int8 else ""
        self._graph_names = {g: g + suffix for g in ("model", "step", "key") if g + suffix in files}
        self._graphs: dict = {}
        self.full = self._graph("model")
        # Without a step graph, typing states fall back to the base class's (each keystroke computed afresh).
        self.incremental = "step" in self._graph_names
        dh = mcfg.d_model // mcfg.n_heads
        self._names = cache_names(mcfg.n_layers, "past")
        self._none = [np.zeros((1, mcfg.n_heads, 0, dh), np.float32)] * (2 * mcfg.n_layers)

    def _graph(self, kind: str):
        """The model, step or key graph's session (None when the folder has none), opened on first use: a single
        prediction loads one graph, a typing session the others when it first feeds (a faster start)."""
        if kind not in self._graphs:
            name = self._graph_names.get(kind)
            session = None
            if name is not None:
                import onnxruntime as ort

                path = self._folder / self._files[name]
                try:
                    session = ort.InferenceSession(str(path), self._opts, providers=["CPUExecutionProvider"])
                except Exception as e:  # noqa: BLE001 - onnxruntime's own types (NoSuchFile, InvalidProtobuf, ...)
                    raise UserError(f"{path}: cannot load ONNX model ({str(e).splitlines()[0][:200]})") from None
            self._graphs[kind] = session
        return self._graphs[kind]

    def _positions(self, ids: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return self.full.run(None, {"ids": ids, "rows": rows.astype(np.int64), "cols": cols.astype(np.int64)})[0]

    def _empty(self) -> list:
        return self._none

    def _step(self, kv: list, ids: np.ndarray, prev: np.ndarray | None) -> tuple[list, np.ndarray]:
        key = self._graph("key") if len(ids) == 1 else None
        graph = key if key is not None else self._graph("step")
        feeds = {"ids": ids.astype(np.int64)[None], **dict(zip(self._names, kv))}
        if prev is not None:
            feeds["prev"] = prev[None]  # (1, K)
        out = graph.run(None, feeds)
        return out[1:], out[0][0]  # the cache as (1, H, P+T, Dh) per layer's keys and values, logprobs (V,)

    def _slice(self, kv: list, n: int) -> list:
        if n == kv[0].shape[2]:
            return kv
        return [np.ascontiguousarray(t[:, :, :n]) for t in kv]
