"""The prepared data dir on disk (vocab.json, stats.json, <lang>/<split>.bin token arrays) and the batch sampler."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nextchar.errors import UserError
from nextchar.vocab import Vocab

SPLITS = ("train", "dev", "test")


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write data to path via a temp file in the same dir + os.replace, so a crash never leaves a half file."""
    p = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    except OSError as e:
        raise UserError(f"{p}: cannot write ({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise UserError(f"{p}: cannot write ({e.strerror})") from None
        raise


def write_tokens(path: str | Path, ids: np.ndarray, dtype: np.dtype | str | None = None) -> None:
    """Write token ids as raw little-endian integers (dtype defaults to ids' own), atomically."""
    dt = np.dtype(dtype or np.asarray(ids).dtype).newbyteorder("<")
    atomic_write(path, np.ascontiguousarray(ids, dtype=dt).tobytes())


def read_tokens(path: str | Path, dtype: np.dtype | str) -> np.ndarray:
    """Read-only memmap of a token file (an empty file gives an empty array: numpy cannot map 0 bytes)."""
    dt = np.dtype(dtype).newbyteorder("<")
    if os.path.getsize(path) == 0:
        return np.zeros(0, dtype=dt)
    return np.memmap(path, dtype=dt, mode="r")


@dataclass
class DataSet:
    """An opened data dir; arrays are memory-mapped on first use and cached."""

    path: Path
    vocab: Vocab
    stats: dict
    languages: list[str]
    _arrays: dict = field(default_factory=dict, repr=False)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.stats["dtype"])

    def bin_path(self, lang: str, split: str) -> Path:
        return self.path / lang / f"{split}.bin"

    def n_tokens(self, lang: str, split: str) -> int:
        self._check(lang, split)
        return int(self.stats["languages"][lang][split])

    def split(self, lang: str, split: str) -> np.ndarray:
        """Token ids of one language's split (read-only memmap)."""
        key = (lang, split)
        if key not in self._arrays:
            self._check(lang, split)
            self._arrays[key] = read_tokens(self.bin_path(lang, split), self.dtype)
        return self._arrays[key]

    def text(self, lang: str, split: str) -> str:
        return self.vocab.decode(self.split(lang, split))

    def _check(self, lang: str, split: str) -> None:
        if lang not in self.stats["languages"]:
            raise UserError(f"{self.path}: no language {lang!r} in this data (have: {', '.join(self.languages)})")
        if split not in SPLITS:
            raise UserError(f"split {split!r}: must be one of {', '.join(SPLITS)}")


def open_data(data_dir: str | Path) -> DataSet:
    """Open a data dir written by corpus.prepare(), checking that stats, vocab and .bin sizes agree."""
    root = Path(data_dir)
    hint = "run `nextchar prepare` to create it"
    if not root.exists():
        raise UserError(f"{root}: data dir not found ({hint})")
    if not root.is_dir():
        raise UserError(f"{root}: not a directory")
    stats_path = root / "stats.json"
    try:
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{stats_path}: not found; is {root} a prepared data dir? ({hint})") from None
    except OSError as e:
        raise UserError(f"{stats_path}: cannot read ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{stats_path}: not valid JSON ({e}); re-run `nextchar prepare`") from None
    problem = _stats_problem(stats)
    if problem:
        raise UserError(f"{stats_path}: {problem}; re-run `nextchar prepare`")
    vocab = Vocab.load(root / "vocab.json")
    if vocab.hash != stats["vocab_hash"] or vocab.size != stats["vocab_size"]:
        raise UserError(f"{root / 'vocab.json'}: does not match stats.json (hash {vocab.hash} vs "
                        f"{stats['vocab_hash']}); re-run `nextchar prepare`")
    if np.dtype(stats["dtype"]) != vocab.dtype:
        raise UserError(f"{stats_path}: dtype {stats['dtype']} does not fit vocab size {vocab.size}")
    itemsize = vocab.dtype.itemsize
    for lang, counts in stats["languages"].items():
        for split in SPLITS:
            p = root / lang / f"{split}.bin"
            try:
                size = p.stat().st_size
            except OSError:
                raise UserError(f"{p}: missing; re-run `nextchar prepare`") from None
            if size != counts[split] * itemsize:
                raise UserError(f"{p}: {size} bytes, but stats.json says {counts[split]} tokens of "
                                f"{itemsize} bytes; re-run `nextchar prepare`")
    return DataSet(path=root, vocab=vocab, stats=stats, languages=sorted(stats["languages"]))


def _stats_problem(stats) -> str | None:
    if not isinstance(stats, dict):
        return "expected a JSON object"
    for key in ("dtype", "vocab_size", "vocab_hash", "languages"):
        if key not in stats:
            return f"missing key {key!r}"
    if stats["dtype"] not in ("uint16", "uint32"):
        return f"dtype {stats['dtype']!r} is not uint16 or uint32"
    langs = stats["languages"]
    if not isinstance(langs, dict) or not langs:
        return "'languages' is empty or not an object"
    for lang, counts in langs.items():
        if not isinstance(counts, dict) or not all(isinstance(counts.get(s), int) for s in SPLITS):
            return f"language {lang!r} lacks integer train/dev/test counts"
    return None


class BatchSampler:
    """Random training windows: per sequence a language (p ~ n_chars^lang_temperature), then a uniform offset."""

    def __init__(self, ds: DataSet, split: str = "train", context: int = 128, batch_size: int = 32, seed: int = 0,
                 lang_temperature: float = 1.0, rank: int = 0, world_size: int = 1) -> None:
        if context < 1 or batch_size < 1:
            raise ValueError("context and batch_size must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        if seed < 0 or lang_temperature < 0:
            raise ValueError("seed and lang_temperature must be >= 0")
        self.ds, self.split, self.context, self.batch_size = ds, split, context, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        # A window needs context+1 tokens (inputs plus the shifted targets).
        self.langs = [lang for lang in ds.languages if ds.n_tokens(lang, split) >= context + 1]
        if not self.langs:
            raise UserError(f"context {context} is longer than every language's {split} text; lower model.context")
        sizes = np.array([ds.n_tokens(lang, split) for lang in self.langs], dtype=np.float64)
        weights = sizes ** lang_temperature
        self._probs = weights / weights.sum()
        self.lang_probs: dict[str, float] = {lang: float(p) for lang, p in zip(self.langs, self._probs)}
        self._arrays = [ds.split(lang, split) for lang in self.langs]
        self._highs = sizes.astype(np.int64) - context  # offsets are in [0, n - context)
        self._window = np.arange(context + 1)
        # (seed, rank) -> independent streams, so DDP ranks never draw the same batches.
        self.rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, rank])))
        self.batches = 0

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y): int64 arrays of shape (batch_size, context); y is x shifted left by one."""
        which = self.rng.choice(len(self.langs), size=self.batch_size, p=self._probs)
        offsets = self.rng.integers(0, self._highs[which])
        out = np.empty((self.batch_size, self.context + 1), dtype=np.int64)
        for k in np.unique(which):
            rows = np.flatnonzero(which == k)
            out[rows] = self._arrays[k][offsets[rows, None] + self._window]
        self.batches += 1
        return np.ascontiguousarray(out[:, :-1]), np.ascontiguousarray(out[:, 1:])

    def state_dict(self) -> dict:
        """JSON-serializable state (Python ints are exact in JSON) for resuming the exact batch stream."""
        return {"rng": self.rng.bit_generator.state, "batches": self.batches, "seed": self.seed, "rank": self.rank}

    def load_state_dict(self, d: dict) -> None:
        self.rng.bit_generator.state = d["rng"]
        self.batches = int(d["batches"])


def eval_positions(n_tokens: int, n: int) -> np.ndarray:
    """n evenly spaced positions floor((i + 0.5) * L / n), i < n, in [0, L); all of 0..L-1 when n >= L."""
    if n <= 0 or n_tokens <= 0:
        return np.zeros(0, dtype=np.int64)
    if n >= n_tokens:
        return np.arange(n_tokens, dtype=np.int64)
    i = np.arange(n, dtype=np.int64)
    return ((2 * i + 1) * n_tokens) // (2 * n)  # exact integer form of floor((i + 0.5) * L / n)
