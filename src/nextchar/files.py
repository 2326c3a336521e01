"""File helpers every module may use: atomic writes, JSON (one writer), text files people wrote, SHA-256 (no torch)."""

from __future__ import annotations

import hashlib
import json
import os
import re
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


# Characters that are valid raw inside a JSON string but that some readers take for line breaks: str.splitlines()
# splits at all three, JavaScript before ES2019 rejects U+2028/U+2029 in string literals. Escaped, a JSON line
# stays one line for every reader.
_LINE_BREAKS = re.compile("[\x85\u2028\u2029]")


def dumps(obj: Any, **options: Any) -> str:
    """json.dumps as UTF-8 text (ensure_ascii=False), with U+0085, U+2028 and U+2029 written as escapes: the one
    JSON writer of every output (file mode, --json, HTTP answers, result files). options: json.dumps's."""
    options.setdefault("ensure_ascii", False)
    out = json.dumps(obj, **options)
    return _LINE_BREAKS.sub(lambda m: f"\\u{ord(m.group()):04x}", out) if not out.isascii() else out


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """obj as indented UTF-8 JSON, written atomically (see atomic_write_bytes)."""
    atomic_write_bytes(path, (dumps(obj, indent=2) + "\n").encode("utf-8"))


_NEWLINE = re.compile("\r\n|\r|\n")
_BOMS = ((b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xff\xfe", "utf-16-le"),
         (b"\xfe\xff", "utf-16-be"), (b"\xef\xbb\xbf", "utf-8"))


def decode_text(raw: bytes, name: str) -> str:
    """The text of a file people wrote: UTF-8 (invalid bytes -> U+FFFD), or UTF-16/UTF-32 when it starts with a
    byte-order mark (what Windows Notepad's "Unicode" saves); the mark itself is dropped.

    Raises UserError naming the file for NUL bytes without a byte-order mark (UTF-16 without one, or binary)
    and for bytes that are mostly not UTF-8.
    """
    for bom, codec in _BOMS:
        if raw.startswith(bom):
            return raw[len(bom):].decode(codec, "replace")
    if b"\x00" in raw:
        raise UserError(f"{name}: contains NUL bytes (UTF-16 without a byte-order mark, or not text); save it as "
                        "UTF-8")
    text = raw.decode("utf-8", "replace")
    if text.count("\ufffd") - raw.count("\ufffd".encode("utf-8")) > 0.25 * len(text):
        raise UserError(f"{name}: looks binary (mostly invalid UTF-8); expected UTF-8 text")
    return text


def read_lines(path: str | Path, what: str = "input") -> list[str]:
    """The lines of a text file as Python's universal-newline reading gives them: split at "\\n", "\\r\\n" and a
    lone "\\r", without their line endings; a final line ending ends the last line rather than starting an empty
    one. Decoded by decode_text; UserError naming the file when it cannot be read."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read {what} ({e.strerror})") from None
    lines = _NEWLINE.split(decode_text(raw, str(path)))
    if lines[-1] == "":
        lines.pop()
    return lines


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


def folder_bytes(path: str | Path) -> int:
    """Bytes of every file under a folder (its size on disk, as a model's size budget counts it)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
