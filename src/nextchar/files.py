"""File helpers every module may use: atomic writes, JSON read/write with one-line errors, SHA-256 (no torch)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from nextchar import safefs
from nextchar.errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file through a temp name in the same folder and rename it over the target.

    A kill at any moment leaves either the old file or the new one, never half of one. Raises UserError
    naming the file when it cannot be written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        if safefs.is_no_space(e):
            raise safefs.no_space_error(path, len(data)) from None
        raise UserError(f"{path}: cannot write ({e.strerror})") from None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode a plain open() would
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if safefs.is_no_space(e):  # one line with the space needed, not "cannot write (No space left...)"
            raise safefs.no_space_error(path, len(data)) from None
        if isinstance(e, OSError):
            raise UserError(f"{path}: cannot write ({e.strerror})") from None
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """obj as indented UTF-8 JSON, written atomically (see atomic_write_bytes)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def read_json(path: str | Path, what: str = "file") -> Any:
    """Load JSON, turning a missing or corrupt file into a one-line UserError naming it as `what`."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable {what} ({e})") from None


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
