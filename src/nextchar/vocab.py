"""The character vocabulary: token ids <-> characters, built from training-split character counts."""

from __future__ import annotations

import collections
import hashlib
import json
from pathlib import Path

import numpy as np

from nextchar.errors import UserError
from nextchar.files import atomic_write_bytes, dumps

SPECIALS = ["<unk>"]
UNK = 0
REPLACEMENT = "\ufffd"  # what <unk> decodes to
# Below this length a dict lookup beats building numpy arrays (matters per keystroke).
_SHORT = 48


class Vocab:
    """chars[id] is the token's string; ids < len(SPECIALS) are specials, the rest single characters by code point."""

    SPECIALS = SPECIALS

    def __init__(self, chars: list[str], min_count: int = 2) -> None:
        if list(chars[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"vocabulary must start with the specials {SPECIALS}")
        rest = chars[len(SPECIALS):]
        if any(len(c) != 1 for c in rest) or len(set(rest)) != len(rest):
            raise ValueError("vocabulary entries after the specials must be distinct single characters")
        self.chars: list[str] = list(chars)
        self.min_count = min_count
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(self.chars)}
        self._decode_table = [REPLACEMENT] * len(SPECIALS) + rest
        # Dense code point -> id table; the extra last slot (id 0) catches every code point above the largest.
        cps = np.array([ord(c) for c in rest], dtype=np.int64)
        top = int(cps.max()) + 1 if len(cps) else 0
        self._table = np.zeros(top + 1, dtype=self.dtype)
        self._table[cps] = np.arange(len(SPECIALS), len(self.chars), dtype=self.dtype)
        self._hash = _hash_chars(self.chars)

    @classmethod
    def build(cls, counts: collections.Counter, min_count: int = 2) -> Vocab:
        """Every character counted at least min_count times, plus "\\n" (the start-of-text context), by code point.

        U+FFFD is left out: it marks bytes that were not valid UTF-8, which is exactly what <unk> stands for.
        """
        if min_count < 1:
            raise UserError(f"min_count: must be >= 1, not {min_count}")
        keep = {c for c, n in counts.items() if n >= min_count and len(c) == 1 and c != REPLACEMENT}
        keep.add("\n")
        return cls(SPECIALS + sorted(keep, key=ord), min_count=min_count)

    @property
    def size(self) -> int:
        return len(self.chars)

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint16) if len(self.chars) <= 65535 else np.dtype(np.uint32)

    @property
    def hash(self) -> str:
        return self._hash

    def is_special(self, id: int) -> bool:
        return 0 <= int(id) < len(SPECIALS)

    def encode(self, text: str) -> np.ndarray:
        """Token ids for each character of text (unknown characters -> 0, <unk>)."""
        if len(text) < _SHORT:
            get = self.stoi.get
            return np.array([get(c, UNK) for c in text], dtype=self.dtype)
        # surrogatepass: a lone surrogate (e.g. from a badly decoded keystroke) becomes <unk>, not an exception
        cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        return self._table[np.minimum(cps, len(self._table) - 1)]

    def decode(self, ids) -> str:
        """The text for a sequence of ids; specials and out-of-range ids decode to U+FFFD."""
        table = self._decode_table
        n = len(table)
        return "".join(table[i] if 0 <= i < n else REPLACEMENT for i in np.asarray(ids).ravel().tolist())

    def to_dict(self) -> dict:
        return {"specials": list(SPECIALS), "chars": self.chars, "min_count": self.min_count, "hash": self.hash}

    def save(self, path: str | Path) -> None:
        """Write vocab JSON atomically."""
        atomic_write_bytes(path, dumps(self.to_dict(), indent=0).encode("utf-8"))

    @classmethod
    def from_dict(cls, d: dict, origin: str = "vocabulary") -> Vocab:
        """Rebuild from to_dict() output (also used for vocabularies stored inside checkpoints)."""
        try:
            chars, specials, stored = d["chars"], d["specials"], d["hash"]
            min_count = int(d.get("min_count", 2))
            if specials != SPECIALS:
                raise ValueError(f"specials are {specials}, expected {SPECIALS}")
            if not isinstance(chars, list) or not all(isinstance(c, str) for c in chars):
                raise ValueError("'chars' is not a list of strings")
            vocab = cls(chars, min_count=min_count)
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{origin}: not a valid vocabulary ({type(e).__name__}: {e})") from None
        if vocab.hash != stored:
            raise UserError(f"{origin}: vocabulary hash mismatch (stored {stored}, contents give {vocab.hash}); "
                            "the file was edited or is corrupt")
        return vocab

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        p = Path(path)
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{p}: vocabulary file not found") from None
        except OSError as e:
            raise UserError(f"{p}: cannot read vocabulary ({e.strerror})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{p}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise UserError(f"{p}: not a valid vocabulary (expected a JSON object)")
        return cls.from_dict(d, origin=str(p))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.chars == other.chars

    def __hash__(self) -> int:
        return hash(self._hash)

    def __repr__(self) -> str:
        return f"Vocab(size={self.size}, hash={self.hash})"


def _hash_chars(chars: list[str]) -> str:
    return hashlib.sha256(json.dumps(chars, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]
