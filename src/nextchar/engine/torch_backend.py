"""The PyTorch backend: a CharTransformer in eval mode (CPU or CUDA) behind the contract, with its KV cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nextchar import checkpoint
from nextchar.engine.windowed import WindowedPredictor
from nextchar.errors import UserError
from nextchar.model import CharTransformer
from nextchar.runfiles import model_config
from nextchar.vocab import Vocab


class TorchPredictor(WindowedPredictor):
    """A CharTransformer in eval mode; typing states hold its per-layer keys and values (1, H, P, Dh)."""

    def __init__(self, model: CharTransformer, vocab: Vocab, run_id: str = "", device: str = "cpu",
                 stride: int = 1):
        cfg = model.cfg
        super().__init__(vocab, cfg.context, run_id, stride, cfg.ngram_order if cfg.ngram_buckets else 0,
                         pad_id=cfg.vocab_size)
        self.model = model.eval()
        self.device = torch.device(device)
        self.checkpoint: Path | None = None  # the folder the weights came from, when loaded from a run

    @classmethod
    def from_run(cls, path: Path, cfg: dict, vocab: Vocab, device: str = "cpu", tag: str = "best",
                 stride: int = 1) -> TorchPredictor:
        """The run's `tag` checkpoint (else its latest); UserError when it has none or it does not fit."""
        ck = checkpoint.find(path, tag) or checkpoint.find(path, "latest")
        if ck is None:
            raise UserError(f"{path}: run has no checkpoint yet (train it first)")
        weights, _, state = checkpoint.load(ck, with_optimizer=False)
        if state.get("vocab_hash") != vocab.hash:
            raise UserError(f"{ck}: checkpoint was trained with another vocabulary than {path / 'vocab.json'}")
        model = CharTransformer(model_config(path / "config.json", cfg))
        try:
            model.load_state_dict(weights)
        except RuntimeError as e:
            raise UserError(f"{ck}: weights do not fit the run's model config ({str(e).splitlines()[0]})") from None
        pred = cls(model.to(device), vocab, path.name, device, stride)
        pred.checkpoint = ck
        return pred

    @torch.inference_mode()
    def _positions(self, ids: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        idx = torch.from_numpy(ids).to(self.device)  # (B, T)
        c = torch.from_numpy(cols).to(self.device)  # (M,)
        if len(rows) == len(ids) and (rows == np.arange(len(ids))).all():
            logits = self.model(idx, at=c)[0][:, 0]  # (B, V): the output layer only where asked
        else:
            logits = self.model(idx)[0][torch.from_numpy(rows).to(self.device), c]  # (M, V)
        return torch.log_softmax(logits.float(), dim=-1).cpu().numpy()

    def _empty(self) -> list:
        return []

    @torch.inference_mode()
    def _step(self, kv: list, ids: np.ndarray, prev: np.ndarray | None) -> tuple[list, np.ndarray]:
        cache = list(kv)  # the model replaces the list's items; the caller's state keeps its own
        p = None if prev is None else torch.from_numpy(prev)[None].to(self.device)  # (1, K)
        idx = torch.from_numpy(ids.astype(np.int64))[None].to(self.device)  # (1, T)
        logits, _ = self.model(idx, cache=cache, last_only=True, prev=p)  # (1, 1, V)
        return cache, torch.log_softmax(logits[0, 0].float(), dim=-1).cpu().numpy()

    @torch.inference_mode()
    def _step_many(self, kvs: list[list], ids: np.ndarray, prevs: np.ndarray | None) -> tuple[list[list], np.ndarray]:
        if not kvs[0]:
            raise NotImplementedError  # empty caches: nothing to batch against
        cache = [(torch.cat([kv[layer][0] for kv in kvs]), torch.cat([kv[layer][1] for kv in kvs]))
                 for layer in range(len(kvs[0]))]  # (N, H, P, Dh) each: one forward for all N
        p = None if prevs is None else torch.from_numpy(prevs).to(self.device)  # (N, K)
        idx = torch.from_numpy(ids.astype(np.int64))[:, None].to(self.device)  # (N, 1)
        logits, _ = self.model(idx, cache=cache, last_only=True, prev=p)  # (N, 1, V)
        out = [[(k[i:i + 1], v[i:i + 1]) for k, v in cache] for i in range(len(kvs))]  # views, (1, H, P + 1, Dh)
        return out, torch.log_softmax(logits[:, 0].float(), dim=-1).cpu().numpy()

    def _slice(self, kv: list, n: int) -> list:
        return [(k[:, :, :n], v[:, :, :n]) for k, v in kv]  # (1, H, n, Dh) each
