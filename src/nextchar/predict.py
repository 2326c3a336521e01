"""Predictor: load a run once, then rank next characters for prefixes (single, batched, file mode)."""

from __future__ import annotations

import json
import math
import unicodedata
from pathlib import Path

import numpy as np
import torch

from nextchar import checkpoint
from nextchar.config import ModelConfig
from nextchar.errors import UserError
from nextchar.model import CharTransformer
from nextchar.vocab import Vocab

START = "\n"  # the context of an empty prefix: the start of a paragraph
# Unicode categories never offered as a suggestion: controls (newline, tab), line/paragraph separators,
# surrogates, private use, unassigned. A suggestion line in file mode can then never break.
NEVER_SUGGESTED = {"Cc", "Zl", "Zp", "Cs", "Co", "Cn"}


def context_ids(vocab: Vocab, prefix: str, n: int) -> np.ndarray:
    """The last n ids of START + prefix: what a model with context n sees for this prefix."""
    return vocab.encode(START + prefix[-n:])[-n:]


def split_context(arr: np.ndarray, p: int, n: int, start_id: int) -> np.ndarray:
    """Context for predicting arr[p] from the same split only: START + arr[:p], last n ids."""
    if p >= n:
        return arr[p - n:p].astype(np.int64)
    return np.concatenate(([start_id], arr[:p])).astype(np.int64)


class Predictor:
    """Next-character distributions from a trained run; subclasses implement `logprobs` for a backend."""

    vocab: Vocab
    context: int  # ids of context the backend uses
    run_id: str

    def logprobs(self, contexts: list[np.ndarray]) -> np.ndarray:
        """Natural-log next-id distributions (N, V) for contexts of ids (each at most `context` long)."""
        raise NotImplementedError

    @staticmethod
    def load(path: str | Path, backend: str = "torch", device: str = "cpu", tag: str = "best") -> "Predictor":
        """Open a run directory (Transformer or n-gram) for prediction."""
        path = Path(path)
        if not path.is_dir():
            raise UserError(f"{path}: run directory not found")
        cfg = checkpoint.read_json(path / "config.json", "run config")
        vocab = Vocab.load(path / "vocab.json")
        if cfg.get("model_type", "transformer") == "ngram":
            from nextchar.ngram import NGramModel

            return NGramPredictor(NGramModel.load(path / "model.npz"), vocab, path.name)
        if backend != "torch":
            raise UserError(f"--backend {backend!r}: unknown backend for a training run (use torch)")
        return TorchPredictor.from_run(path, cfg, vocab, device, tag)

    # -- ranking ------------------------------------------------------------------------------------
    def suggestible(self) -> np.ndarray:
        """Boolean mask (V,) of ids that may be suggested: no specials, no newline or other control character."""
        if getattr(self, "_ok", None) is None:
            ok = np.array([not self.vocab.is_special(i) and unicodedata.category(c) not in NEVER_SUGGESTED
                           for i, c in enumerate(self.vocab.chars)])
            self._ok = ok
        return self._ok

    def dist(self, prefixes: list[str]) -> np.ndarray:
        """Probabilities (N, V) of the next id after each prefix."""
        return np.exp(self.logprobs([context_ids(self.vocab, p, self.context) for p in prefixes]))

    def topk_batch(self, prefixes: list[str], k: int = 3, batch_size: int = 512) -> list[list[tuple[str, float]]]:
        """The k most likely distinct suggestible characters with probabilities, best first, per prefix."""
        if k < 1:
            raise UserError(f"-k {k}: must be at least 1")
        ok = self.suggestible()
        k = min(k, int(ok.sum()))
        out: list[list[tuple[str, float]]] = []
        for i in range(0, len(prefixes), batch_size):
            probs = self.dist(prefixes[i:i + batch_size])  # (n, V)
            probs[:, ~ok] = -1.0
            top = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # (n, k)
            for row, ids in zip(probs, top):
                out.append([(self.vocab.chars[j], float(row[j])) for j in ids])
        return out

    def topk(self, prefix: str, k: int = 3) -> list[tuple[str, float]]:
        return self.topk_batch([prefix], k)[0]


class TorchPredictor(Predictor):
    """A CharTransformer in eval mode (CPU or CUDA)."""

    def __init__(self, model: CharTransformer, vocab: Vocab, run_id: str = "", device: str = "cpu"):
        self.model = model.eval()
        self.vocab = vocab
        self.context = model.cfg.context
        self.run_id = run_id
        self.device = torch.device(device)

    @classmethod
    def from_run(cls, path: Path, cfg: dict, vocab: Vocab, device: str = "cpu", tag: str = "best"):
        ck = checkpoint.find(path, tag) or checkpoint.find(path, "latest")
        if ck is None:
            raise UserError(f"{path}: run has no checkpoint yet (train it first)")
        weights, _, state = checkpoint.load(ck, with_optimizer=False)
        if state.get("vocab_hash") != vocab.hash:
            raise UserError(f"{ck}: checkpoint was trained with another vocabulary than {path / 'vocab.json'}")
        mcfg = ModelConfig(**cfg["model"])
        model = CharTransformer(mcfg)
        try:
            model.load_state_dict(weights)
        except RuntimeError as e:
            raise UserError(f"{ck}: weights do not fit the run's model config ({str(e).splitlines()[0]})") from None
        return cls(model.to(device), vocab, path.name, device)

    @torch.no_grad()
    def logprobs(self, contexts: list[np.ndarray]) -> np.ndarray:
        if not contexts:
            return np.zeros((0, self.vocab.size))
        lens = np.array([len(c) for c in contexts])
        T = int(lens.max())
        x = np.zeros((len(contexts), T), dtype=np.int64)  # left-aligned; padding after the end is never seen
        for i, c in enumerate(contexts):
            x[i, : len(c)] = c
        idx = torch.from_numpy(x).to(self.device)
        at = torch.from_numpy(lens - 1).to(self.device)
        logits, _ = self.model(idx, at=at)  # (N, 1, V)
        return torch.log_softmax(logits[:, 0].float(), dim=-1).cpu().numpy()


class NGramPredictor(Predictor):
    """The Kneser-Ney character n-gram behind the same interface."""

    def __init__(self, model, vocab: Vocab, run_id: str = ""):
        self.model = model
        self.vocab = vocab
        self.context = max(1, model.order - 1)
        self.run_id = run_id

    def logprobs(self, contexts: list[np.ndarray]) -> np.ndarray:
        if not contexts:
            return np.zeros((0, self.vocab.size))
        return np.log(self.model.dist_batch(contexts))


def predict_file(pred: Predictor, input_path: str | Path, output_path: str | Path, k: int = 3,
                 as_json: bool = False) -> int:
    """One prefix per input line (newline stripped, trailing spaces kept) -> one line of k characters each."""
    input_path = Path(input_path)
    try:
        raw = input_path.read_bytes()
    except OSError as e:
        raise UserError(f"{input_path}: cannot read input ({e.strerror})") from None
    text = raw.decode("utf-8", errors="replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # a final newline ends the last line rather than starting an empty one
    prefixes = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    rows = pred.topk_batch(prefixes, k)
    if as_json:
        out = "".join(json.dumps({"prefix": p, "chars": [c for c, _ in r], "probs": [round(q, 6) for _, q in r]},
                                 ensure_ascii=False) + "\n" for p, r in zip(prefixes, rows))
    else:
        out = "".join("".join(c for c, _ in r) + "\n" for r in rows)
    checkpoint.atomic_write_bytes(output_path, out.encode("utf-8"))
    return len(prefixes)


def bits(nats: float) -> float:
    return nats / math.log(2)
