"""File mode and the Python API over the engine: one prefix per line in, k suggested characters per line out.

    from nextchar import engine
    p = engine.load("runs/quickstart")   # or a shipped model's name, "default"
    p.topk("Happy New Yea", k=3)
"""

from __future__ import annotations

import logging
from pathlib import Path

from nextchar.engine import Predictor
from nextchar.engine.base import MOSTLY_UNKNOWN, unknown_share
from nextchar.errors import UserError, check_int
from nextchar.files import atomic_write_bytes, dumps, read_lines

log = logging.getLogger(__name__)


def record(prefix: str, row: list[tuple[str, float]], share: float) -> dict:
    """The JSON answer for one prefix (file mode's lines, `predict --json`): the prefix as given, the suggested
    characters best first, their probabilities, and how much of the context the model does not know."""
    return {"prefix": prefix, "chars": [c for c, _ in row], "probs": [round(q, 6) for _, q in row],
            "unknown_share": round(share, 4), "mostly_unknown": share >= MOSTLY_UNKNOWN}


def check_file_k(pred: Predictor, k: int) -> int:
    """k for file mode, which writes exactly k characters per line: at most what may follow every prefix."""
    k = check_int(k, "-k")
    most = pred.attach_rule().floor()
    if k > most:
        raise UserError(f"-k {k}: this model can suggest at most {most} characters after every prefix "
                        "(file mode writes exactly k per line)")
    return k


def predict_file(pred: Predictor, input_path: str | Path, output_path: str | Path, k: int = 3,
                 as_json: bool = False, stride: int | None = None) -> int:
    """One prefix per input line -> one line of exactly k characters each, best first.

    Lines are read as Python's universal newlines read them ("\\n", "\\r\\n" or a lone "\\r" ends a line; the line
    ending is not part of the prefix, other whitespace is, as prepare_prefix reads it); UTF-8, or UTF-16/32 with a
    byte-order mark (files.read_lines). as_json writes JSON lines (`record`) instead, with U+2028, U+2029 and
    U+0085 escaped so every reader sees one line per prefix. stride: see Predictor.topk_batch. Prefixes whose
    context is mostly outside the vocabulary are named in one warning (logging). Returns the number of prefixes;
    UserError when the input cannot be read or k is not 1..the characters that may follow every prefix. The
    output is written atomically.
    """
    k = check_file_k(pred, k)
    prefixes = read_lines(input_path)
    rows = pred.topk_batch(prefixes, k, stride=stride)
    shares = [unknown_share(pred.encode(p)) for p in prefixes]
    if as_json:
        out = "".join(dumps(record(p, r, s)) + "\n" for p, r, s in zip(prefixes, rows, shares))
    else:
        out = "".join("".join(c for c, _ in r) + "\n" for r in rows)
    atomic_write_bytes(output_path, out.encode("utf-8"))
    warn_unknown(input_path, shares)
    return len(prefixes)


def warn_unknown(input_path: str | Path, shares: list[float]) -> None:
    """One warning line naming the lines whose context is mostly outside the vocabulary (none: no warning)."""
    bad = [i + 1 for i, s in enumerate(shares) if s >= MOSTLY_UNKNOWN]
    if bad:
        some = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        log.warning("%s: %d of %d prefixes are mostly outside the model's vocabulary (lines %s): their "
                    "suggestions are guesses", input_path, len(bad), len(shares), some)
