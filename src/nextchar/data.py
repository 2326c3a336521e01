"""The prepared data dir on disk (vocab.json, stats.json, <lang>/<split>.bin token arrays) and the batch sampler."""

from __future__ import annotations

import json
import os
import re
import unicodedata
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nextchar.errors import UserError
from nextchar.files import atomic_write_bytes as atomic_write
from nextchar.vocab import Vocab

SPLITS = ("train", "dev", "test")


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

    def check_vocab(self, vocab: Vocab, whose: str = "the model's") -> None:
        """UserError unless this data was encoded with `vocab` (its hash): ids would mean other characters."""
        if self.vocab.hash != vocab.hash:
            raise UserError(f"{self.path}: data vocabulary ({self.vocab.hash}) differs from {whose} ({vocab.hash})")

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
        if not re.fullmatch(r"[A-Za-z0-9_-]+", lang):
            return f"language label {lang!r} is not a folder name (letters, digits, - and _)"
        if not isinstance(counts, dict) or not all(type(counts.get(s)) is int and counts[s] >= 0 for s in SPLITS):
            return f"language {lang!r} lacks integer train/dev/test counts"
    return None


# SplitMix64 constants: the golden-ratio increment and the two multipliers of its output mix.
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_DRAWS = 4  # random numbers per sequence: language, offset, lower-case?, strip accents?


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function: a bijective scramble of uint64s (numpy wraps on overflow)."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def case_maps(vocab: Vocab) -> tuple[np.ndarray, np.ndarray]:
    """id -> id maps (V,) for typing as people do: lower case, and accents dropped (NFD minus combining marks).

    A character whose variant is not one character of the vocabulary maps to itself, so ids never leave it.
    """
    lower = np.arange(vocab.size, dtype=np.int64)
    strip = np.arange(vocab.size, dtype=np.int64)
    for i, c in enumerate(vocab.chars):
        if vocab.is_special(i):
            continue
        low = c.lower()
        bare = unicodedata.normalize("NFC", "".join(m for m in unicodedata.normalize("NFD", c)
                                                    if not unicodedata.combining(m)))
        lower[i] = vocab.stoi.get(low, i)
        strip[i] = vocab.stoi.get(bare, i)
    return lower, strip


class BatchSampler:
    """Random training windows: per sequence a language (p ~ n_chars^lang_temperature), then a uniform offset.

    Sequences form one global stream: sequence r's random numbers are a pure function of (seed, r), and each call
    hands rank k of W the slice [k*b, (k+1)*b) of the next W*b sequences. So W ranks with micro-batch b see exactly
    the sequences of one process drawing W*b at a time, at any gradient accumulation, and the state (a sequence
    count) resumes on any number of ranks.
    """

    def __init__(self, ds: DataSet, split: str = "train", context: int = 128, batch_size: int = 32, seed: int = 0,
                 lang_temperature: float = 1.0, rank: int = 0, world_size: int = 1, augment_lower: float = 0.0,
                 augment_strip_accents: float = 0.0) -> None:
        if context < 1 or batch_size < 1:
            raise ValueError("context and batch_size must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        if seed < 0 or lang_temperature < 0:
            raise ValueError("seed and lang_temperature must be >= 0")
        if not (0 <= augment_lower <= 1 and 0 <= augment_strip_accents <= 1):
            raise ValueError("augmentation probabilities must be in [0, 1]")
        self.ds, self.split, self.context, self.batch_size = ds, split, context, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        # A window needs context+1 tokens (inputs plus the shifted targets).
        self.langs = [lang for lang in ds.languages if ds.n_tokens(lang, split) >= context + 1]
        if not self.langs:
            raise UserError(f"context {context} is longer than every language's {split} text; lower model.context")
        sizes = np.array([ds.n_tokens(lang, split) for lang in self.langs], dtype=np.float64)
        weights = sizes ** lang_temperature
        self._probs = weights / weights.sum()
        self._cdf = np.cumsum(self._probs)
        self.lang_probs: dict[str, float] = {lang: float(p) for lang, p in zip(self.langs, self._probs)}
        # Windows are read with pread where there is one: through the memmap, each page fault maps a whole
        # page-cache folio (megabytes), and a few hundred windows put much of a large corpus in resident memory.
        self._fds = [os.open(ds.bin_path(lang, split), os.O_RDONLY) for lang in self.langs] \
            if hasattr(os, "pread") else []
        weakref.finalize(self, _close_all, self._fds)
        self._arrays = [] if self._fds else [ds.split(lang, split) for lang in self.langs]
        self._dtype = ds.dtype.newbyteorder("<")
        self._highs = sizes.astype(np.int64) - context  # offsets are in [0, n - context)
        self._window = np.arange(context + 1)
        self.augment = (augment_lower, augment_strip_accents)
        self._maps = case_maps(ds.vocab) if augment_lower or augment_strip_accents else None
        self._key = _mix64(np.array([seed], dtype=np.uint64) * _GAMMA)
        self.rows = 0  # sequences of the global stream consumed so far (all ranks together)
        self.batches = 0

    def _uniform(self, rows: np.ndarray, k: int) -> np.ndarray:
        """Uniform floats in [0, 1): draw k of each global sequence index in rows (SplitMix64, counter-based)."""
        z = self._key + (rows.astype(np.uint64) * np.uint64(_DRAWS) + np.uint64(k + 1)) * _GAMMA
        return (_mix64(z) >> np.uint64(11)).astype(np.float64) * 2.0**-53

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y): int64 arrays of shape (batch_size, context); y is x shifted left by one."""
        start = self.rows + self.rank * self.batch_size
        rows = np.arange(start, start + self.batch_size, dtype=np.int64)  # (b,) global sequence indices
        which = np.minimum(np.searchsorted(self._cdf, self._uniform(rows, 0), side="right"), len(self.langs) - 1)
        highs = self._highs[which]
        offsets = np.minimum((self._uniform(rows, 1) * highs).astype(np.int64), highs - 1)  # (b,)
        out = np.empty((self.batch_size, self.context + 1), dtype=np.int64)  # (b, T+1)
        for k in np.unique(which):
            sel = np.flatnonzero(which == k)
            if self._fds:
                size = self._dtype.itemsize
                for r in sel:
                    buf = os.pread(self._fds[k], (self.context + 1) * size, int(offsets[r]) * size)
                    out[r] = np.frombuffer(buf, dtype=self._dtype)
            else:
                out[sel] = self._arrays[k][offsets[sel, None] + self._window]
        if self._maps is not None:
            for draw, (p, table) in enumerate(zip(self.augment, self._maps), start=2):
                hit = np.flatnonzero(self._uniform(rows, draw) < p)
                out[hit] = table[out[hit]]
        self.rows += self.batch_size * self.world_size
        self.batches += 1
        return np.ascontiguousarray(out[:, :-1]), np.ascontiguousarray(out[:, 1:])

    def state_dict(self) -> dict:
        """JSON-serializable state for resuming the exact stream (on any number of ranks)."""
        return {"rows": self.rows, "batches": self.batches, "seed": self.seed}

    def load_state_dict(self, d: dict) -> None:
        if "rows" not in d:
            raise ValueError("sampler state from an older nextchar (no global sequence count)")
        self.rows = int(d["rows"])
        self.batches = int(d["batches"])


def eval_positions(n_tokens: int, n: int) -> np.ndarray:
    """n evenly spaced positions floor((i + 0.5) * L / n), i < n, in [0, L); all of 0..L-1 when n >= L."""
    if n <= 0 or n_tokens <= 0:
        return np.zeros(0, dtype=np.int64)
    if n >= n_tokens:
        return np.arange(n_tokens, dtype=np.int64)
    i = np.arange(n, dtype=np.int64)
    return ((2 * i + 1) * n_tokens) // (2 * n)  # exact integer form of floor((i + 0.5) * L / n)
