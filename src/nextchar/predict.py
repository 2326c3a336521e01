"""Predictor: load a run or an ONNX export once, then rank next characters (single, batched, file, incremental)."""

from __future__ import annotations

import gc
import json
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
BACKENDS = ("torch", "onnx", "onnx-int8")
# Positions per forward pass when whole windows are computed: bounds the (B, T, V) logits held at once.
TOKENS_PER_FORWARD = 16384


def context_ids(vocab: Vocab, prefix: str, n: int) -> np.ndarray:
    """The last n ids of START + prefix: what a model with context n sees for this prefix."""
    return vocab.encode(START + prefix[-n:])[-n:]


def split_context(arr: np.ndarray, p: int, n: int, start_id: int) -> np.ndarray:
    """Context for predicting arr[p] from the same split only: START + arr[:p], last n ids."""
    if p >= n:
        return arr[p - n:p].astype(np.int64)
    return np.concatenate(([start_id], arr[:p])).astype(np.int64)


def window_start(n: int, context: int, stride: int) -> int:
    """Where the model's window starts among the n ids of START + prefix: 0 while they fit, else a multiple of stride.

    The smallest multiple of `stride` that leaves at most `context` ids, so the start stays put while typing goes
    on (the cached keys/values stay valid) and jumps `stride` ids ahead when the window is full: the model then sees
    the last context - stride + 1 .. context ids. stride 1 is the exact last-`context` window of `context_ids`.
    """
    if n <= context:
        return 0
    return -(-(n - context) // stride) * stride


def window_ids(vocab: Vocab, prefix: str, context: int, stride: int = 1) -> np.ndarray:
    """The ids a model with `context` sees for prefix when its window moves by `stride` (see window_start)."""
    a = window_start(len(prefix) + 1, context, stride)
    return vocab.encode(START + prefix if a == 0 else prefix[a - 1:])


def check_stride(stride: int | None, context: int) -> int:
    if stride is None:
        return 1
    if not 1 <= stride <= context:
        raise UserError(f"stride {stride}: must be between 1 and the model's context ({context})")
    return stride


def rank(probs: np.ndarray, ok: np.ndarray, chars: list[str], k: int) -> list[list[tuple[str, float]]]:
    """The k most likely ids with ok[id] per row of (N, V) probabilities, best first; equal ones by lower id."""
    if k < 1:
        raise UserError(f"-k {k}: must be at least 1")
    k = min(k, int(ok.sum()))
    p = np.where(ok, probs, -1.0)  # (N, V)
    if k <= 8:
        # k argmax passes are linear in V where a sort is not; argmax picks the first (lowest) of equal ids,
        # the order of a stable sort.
        top = np.empty((len(p), k), dtype=np.int64)
        rows = np.arange(len(p))
        for j in range(k):
            top[:, j] = p.argmax(axis=1)
            p[rows, top[:, j]] = -2.0  # below every probability: never picked again
    else:
        top = np.argsort(-p, axis=1, kind="stable")[:, :k]  # (N, k)
    vals = np.take_along_axis(probs, top, axis=1)  # (N, k) all suggestible: k <= ok.sum()
    # Tens of thousands of new lists would set off full garbage collections over every object of torch and
    # onnxruntime (up to half a second in file mode); none of these can form a cycle.
    paused = gc.isenabled() and len(top) > 1000
    if paused:
        gc.disable()
    try:
        return [[(chars[j], q) for j, q in zip(ids, qs)] for ids, qs in zip(top.tolist(), vals.tolist())]
    finally:
        if paused:
            gc.enable()


def share_windows(contexts: list[np.ndarray]) -> np.ndarray:
    """For each context, the index of a context that begins with it (itself if none): one forward answers both.

    Fixed-width big-endian bytes sort like the id sequences, and every context that begins with a given one
    follows it directly in sorted order, so one backward pass over the sorted keys links each to its longest.
    """
    keys = [np.asarray(c, dtype=">u4").tobytes() for c in contexts]
    owner = np.arange(len(keys))
    nxt = -1
    for j in sorted(range(len(keys)), key=keys.__getitem__, reverse=True):
        if nxt >= 0 and keys[nxt].startswith(keys[j]):
            owner[j] = owner[nxt]
        nxt = j
    return owner


def prev_ids(cfg: ModelConfig, before: np.ndarray) -> np.ndarray | None:
    """The ids (K,) before the next ones for a model with hashed n-gram inputs (padded), else None."""
    if not cfg.ngram_buckets:
        return None
    K = cfg.ngram_order - 1
    return np.concatenate([np.full(K, cfg.vocab_size, dtype=np.int64), before.astype(np.int64)])[-K:]


class Predictor:
    """Next-character distributions from a trained run; subclasses implement `logprobs` for a backend.

    Backends with a key/value cache set `incremental` and implement _start/_feed/_truncate for `Session`.
    """

    vocab: Vocab
    context: int  # ids of context the backend uses
    run_id: str
    incremental = False  # has a key/value cache (see Session)
    shares_windows = False  # implements _positions (see _shared_logprobs)

    def logprobs(self, contexts: list[np.ndarray]) -> np.ndarray:
        """Natural-log next-id distributions (N, V) for contexts of ids (each 1 to `context` long)."""
        raise NotImplementedError

    @staticmethod
    def load(path: str | Path, backend: str = "torch", device: str = "cpu", tag: str = "best",
             threads: int = 1) -> Predictor:
        """Open a run directory (Transformer or n-gram) or an export folder (ONNX) for prediction.

        An export folder is recognized by its config.json and runs with onnxruntime whatever `backend` says,
        except that "onnx-int8" picks the int8 model; `threads` is onnxruntime's intra-op threads (torch's are
        global: see train.set_threads).
        """
        path = Path(path)
        if backend not in BACKENDS:
            raise UserError(f"--backend {backend!r}: unknown backend (choose from {', '.join(BACKENDS)})")
        if not path.is_dir():
            raise UserError(f"{path}: run directory not found")
        onnx = backend.startswith("onnx")
        if onnx and not (path / "config.json").is_file():
            raise UserError(f"{path}: not an export folder (no config.json); write one with `nextchar export`")
        cfg = checkpoint.read_json(path / "config.json", "run config")
        if isinstance(cfg, dict) and "export" in cfg:
            if device != "cpu":
                raise UserError(f"--device {device}: an ONNX export runs on the CPU")
            from nextchar.export import OnnxPredictor

            return OnnxPredictor(path, int8=backend == "onnx-int8", threads=threads)
        if onnx:
            raise UserError(f"{path}: not an export folder but a training run; export it first "
                            f"(nextchar export --run {path} --out DIR) to use --backend {backend}")
        vocab = Vocab.load(path / "vocab.json")
        if cfg.get("model_type", "transformer") == "ngram":
            from nextchar.ngram import NGramModel

            return NGramPredictor(NGramModel.load(path / "model.npz"), vocab, path.name)
        if cfg.get("model_type") == "mixture":
            from nextchar.mixture import load_mixture

            return load_mixture(path, cfg)
        return TorchPredictor.from_run(path, cfg, vocab, device, tag)

    def session(self, stride: int | None = None) -> Session:
        """A new typing session (incremental state for one user)."""
        return Session(self, stride)

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

    def topk_batch(self, prefixes: list[str], k: int = 3, batch_size: int = 512,
                   stride: int | None = None) -> list[list[tuple[str, float]]]:
        """The k most likely distinct suggestible characters with probabilities, best first, per prefix.

        Prefixes whose windows begin one another (typing traces) share one forward pass. `stride` gives every
        prefix the window a typing `Session` with that stride shows (default: the last `context` ids).
        """
        if k < 1:
            raise UserError(f"-k {k}: must be at least 1")
        s = check_stride(stride, self.context)
        ok, out = self.suggestible(), []
        chunk = max(batch_size, 8192)  # bounds the (chunk, V) distributions held at once
        for i in range(0, len(prefixes), chunk):
            ctx = [window_ids(self.vocab, p, self.context, s) for p in prefixes[i:i + chunk]]
            if self.shares_windows:
                lp = self._shared_logprobs(ctx, batch_size)
            else:
                lp = np.concatenate([self.logprobs(ctx[j:j + batch_size]) for j in range(0, len(ctx), batch_size)])
            out.extend(rank(np.exp(lp), ok, self.vocab.chars, k))
        return out

    def topk(self, prefix: str, k: int = 3) -> list[tuple[str, float]]:
        return self.topk_batch([prefix], k)[0]

    # -- windows shared between contexts, for backends that give logits at any position ---------------
    def _positions(self, ids: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Log-probabilities (M, V) after ids[rows[m], :cols[m] + 1] of a right-padded batch ids (B, T)."""
        raise NotImplementedError

    def _shared_logprobs(self, contexts: list[np.ndarray], max_rows: int = 512) -> np.ndarray:
        """logprobs through _positions: one row per distinct window, longest first so padding stays small."""
        n = len(contexts)
        out = np.zeros((n, self.vocab.size), dtype=np.float32)
        if n == 0:
            return out
        lens = np.array([len(c) for c in contexts])
        if lens.min() < 1 or lens.max() > self.context:
            raise ValueError(f"contexts must hold 1 to {self.context} ids")
        owner = share_windows(contexts)  # (N,)
        owners = np.unique(owner)
        owners = owners[np.argsort(-lens[owners], kind="stable")]
        slot = np.empty(n, dtype=np.int64)
        slot[owners] = np.arange(len(owners))
        member_slot = slot[owner]  # (N,) row of each context's window in `owners`
        members = np.argsort(member_slot, kind="stable")  # contexts grouped by window
        sorted_slots = member_slot[members]
        s0 = 0
        while s0 < len(owners):
            T = int(lens[owners[s0]])
            s1 = min(len(owners), s0 + max_rows, s0 + max(1, TOKENS_PER_FORWARD // T))
            ids = np.zeros((s1 - s0, T), dtype=np.int64)  # (B, T) right-padded; padding is never attended to
            for r, o in enumerate(owners[s0:s1]):
                ids[r, :lens[o]] = contexts[o]
            lo, hi = np.searchsorted(sorted_slots, [s0, s1])
            m = members[lo:hi]
            out[m] = self._positions(ids, sorted_slots[lo:hi] - s0, lens[m] - 1)
            s0 = s1
        return out

    # -- incremental interface (see Session) --------------------------------------------------------
    def _start(self):
        """An empty cache."""
        raise NotImplementedError

    def _feed(self, state, ids: np.ndarray, before: np.ndarray):
        """(state, logprobs (V,) after the last id) with ids (T,) appended to the cache; `before` holds the
        window's ids already in it (what hashed n-gram inputs and an n-gram part read)."""
        raise NotImplementedError

    def _truncate(self, state, n: int):
        """The cache of its first n ids (attention is causal, so they do not depend on what follows); a new
        object, or `state` itself when `_feed` never changes its argument."""
        raise NotImplementedError

    def _feed_many(self, states: list, ids: np.ndarray, befores: list[np.ndarray]) -> tuple[list, np.ndarray]:
        """One new id per cache: (new states, logprobs (N, V)) for ids (N,) fed after states[i], whose window
        holds befores[i]. The given states are left as they were (word completion branches from them). Backends
        that can batch it override this loop; all states then hold the same number of ids."""
        out, rows = [], []
        for st, i, b in zip(states, ids.tolist(), befores):
            st, lp = self._feed(self._truncate(st, len(b)), np.array([i], dtype=np.int64), b)
            out.append(st)
            rows.append(lp)
        return out, np.stack(rows) if rows else np.zeros((0, self.vocab.size), dtype=np.float32)


class Session:
    """One typing session: per keystroke the model reads only what changed since the last prefix (KV cache).

    The model sees `window_ids(vocab, prefix, context, stride)`: START + the whole prefix while it fits the
    context, so results equal Predictor.topk there; past the context the window keeps its start while typing
    goes on and jumps `stride` ids ahead when full (context - stride + 1 .. context ids), one recompute every
    `stride` keystrokes. stride 1 equals Predictor.topk always but recomputes every keystroke past the context.
    An edit or backspace inside the window truncates the cache to the part before it. Backends without a cache
    (n-gram, an export without a step graph) compute each prefix afresh with the exact last-context window.
    Holds one user's state: create one per typing session, never share one between users or threads.
    """

    def __init__(self, pred: Predictor, stride: int | None = None):
        self.pred = pred
        C = pred.context
        if not pred.incremental:
            self.stride = 1
        else:
            self.stride = check_stride(stride, C) if stride is not None else max(1, C // 2)
        self.recomputes = 0  # windows fed from their start (first keystroke, jumps, edits before the window)
        self.fed = 0  # ids fed to the model so far
        self.reset()

    def reset(self) -> None:
        self._text: str | None = None  # the prefix the cache holds the window of
        self._anchor = 0
        self._state = None
        self._ids = np.zeros(0, dtype=np.int64)  # the window's ids in the cache
        self._last: np.ndarray | None = None  # logprobs (V,) after _text

    def window(self, prefix: str) -> np.ndarray:
        """The ids the model sees for this prefix in this session."""
        return window_ids(self.pred.vocab, prefix, self.pred.context, self.stride)

    def logprobs(self, prefix: str) -> np.ndarray:
        """Natural-log distribution (V,) of the next id after prefix."""
        pred = self.pred
        if not pred.incremental:
            return pred.logprobs([self.window(prefix)])[0]
        if prefix == self._text:
            return self._last.copy()
        n = len(prefix) + 1  # ids of START + prefix
        a = window_start(n, pred.context, self.stride)
        keep = 0
        if self._state is not None and a == self._anchor:
            keep = min(self._common(prefix, a) + 1 - a, n - a - 1)  # at least one id is fed, for its logits
        # A new cache or a truncated copy: if feeding fails, the session still holds its last consistent state.
        state = pred._truncate(self._state, keep) if keep > 0 else pred._start()
        before = self._ids[:max(keep, 0)]
        j = a + len(before)  # first id to feed, counted in START + prefix
        new = pred.vocab.encode(START + prefix if j == 0 else prefix[j - 1:])
        state, lp = pred._feed(state, new, before)
        self.recomputes += int(keep <= 0)
        self.fed += len(new)
        self._state, self._text, self._anchor, self._last = state, prefix, a, lp
        self._ids = np.concatenate([before, new.astype(np.int64)])
        return lp.copy()

    def _common(self, prefix: str, a: int) -> int:
        """Characters prefix shares with the fed text from the window start (char a - 1) on: index of the first
        difference."""
        old, lo = self._text, max(a - 1, 0)
        if len(prefix) >= len(old) and prefix.startswith(old[lo:], lo):
            return len(old)  # typing on: the usual case
        if old.startswith(prefix[lo:], lo):
            return len(prefix)  # backspace
        end, j = min(len(old), len(prefix)), lo
        while j < end and old[j] == prefix[j]:
            j += 1
        return j

    def dist(self, prefix: str) -> np.ndarray:
        return np.exp(self.logprobs(prefix))

    def topk(self, prefix: str, k: int = 3) -> list[tuple[str, float]]:
        """What Predictor.topk shows, from this session's window (see the class docstring)."""
        return rank(self.dist(prefix)[None], self.pred.suggestible(), self.pred.vocab.chars, k)[0]


class TorchPredictor(Predictor):
    """A CharTransformer in eval mode (CPU or CUDA)."""

    incremental = True
    shares_windows = True

    def __init__(self, model: CharTransformer, vocab: Vocab, run_id: str = "", device: str = "cpu"):
        self.model = model.eval()
        self.vocab = vocab
        self.context = model.cfg.context
        self.run_id = run_id
        self.device = torch.device(device)
        self.checkpoint: Path | None = None  # the folder the weights came from, when loaded from a run

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
        pred = cls(model.to(device), vocab, path.name, device)
        pred.checkpoint = ck
        return pred

    def logprobs(self, contexts: list[np.ndarray]) -> np.ndarray:
        return self._shared_logprobs(contexts)

    @torch.inference_mode()
    def _positions(self, ids: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        idx = torch.from_numpy(ids).to(self.device)  # (B, T)
        c = torch.from_numpy(cols).to(self.device)  # (M,)
        if len(rows) == len(ids) and (rows == np.arange(len(ids))).all():
            logits = self.model(idx, at=c)[0][:, 0]  # (B, V): the output layer only where asked
        else:
            logits = self.model(idx)[0][torch.from_numpy(rows).to(self.device), c]  # (M, V)
        return torch.log_softmax(logits.float(), dim=-1).cpu().numpy()

    def _start(self):
        return []

    @torch.inference_mode()
    def _feed(self, state, ids: np.ndarray, before: np.ndarray):
        tail = prev_ids(self.model.cfg, before)
        prev = None if tail is None else torch.from_numpy(tail)[None].to(self.device)  # (1, K)
        idx = torch.from_numpy(ids.astype(np.int64))[None].to(self.device)  # (1, T)
        logits, _ = self.model(idx, cache=state, last_only=True, prev=prev)  # (1, 1, V); state is replaced in place
        return state, torch.log_softmax(logits[0, 0].float(), dim=-1).cpu().numpy()

    @torch.inference_mode()
    def _truncate(self, state, n: int):
        return [(k[:, :, :n], v[:, :, :n]) for k, v in state]  # (1, H, n, Dh) each

    @torch.inference_mode()
    def _feed_many(self, states: list, ids: np.ndarray, befores: list[np.ndarray]) -> tuple[list, np.ndarray]:
        if len({len(b) for b in befores}) != 1 or not states or not states[0]:
            return super()._feed_many(states, ids, befores)
        cache = [(torch.cat([st[layer][0] for st in states]), torch.cat([st[layer][1] for st in states]))
                 for layer in range(len(states[0]))]  # (N, H, T, Dh) each: one forward for all N
        prev = None
        if self.model.cfg.ngram_buckets:
            prev = torch.from_numpy(np.stack([prev_ids(self.model.cfg, b) for b in befores])).to(self.device)  # (N, K)
        idx = torch.from_numpy(ids.astype(np.int64))[:, None].to(self.device)  # (N, 1)
        logits, _ = self.model(idx, cache=cache, last_only=True, prev=prev)  # (N, 1, V)
        out = [[(k[n:n + 1], v[n:n + 1]) for k, v in cache] for n in range(len(states))]  # views, (1, H, T+1, Dh)
        return out, torch.log_softmax(logits[:, 0].float(), dim=-1).cpu().numpy()


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
                 as_json: bool = False, stride: int | None = None) -> int:
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
    prefixes = [ln.removesuffix("\r") for ln in lines]
    rows = pred.topk_batch(prefixes, k, stride=stride)
    if as_json:
        out = "".join(json.dumps({"prefix": p, "chars": [c for c, _ in r], "probs": [round(q, 6) for _, q in r]},
                                 ensure_ascii=False) + "\n" for p, r in zip(prefixes, rows))
    else:
        out = "".join("".join(c for c, _ in r) + "\n" for r in rows)
    checkpoint.atomic_write_bytes(output_path, out.encode("utf-8"))
    return len(prefixes)
