"""File mode and the Python API over the engine: one prefix per line in, k suggested characters per line out.

    from nextchar import engine
    p = engine.load("runs/quickstart")   # or a shipped model's name, "default"
    p.topk("Happy New Yea", k=3)
"""

from __future__ import annotations

import json
from pathlib import Path

from nextchar.engine import Predictor
from nextchar.errors import UserError
from nextchar.files import atomic_write_bytes


def predict_file(pred: Predictor, input_path: str | Path, output_path: str | Path, k: int = 3,
                 as_json: bool = False, stride: int | None = None) -> int:
    """One prefix per input line (newline stripped, trailing spaces kept) -> one line of k characters each.

    as_json writes JSON lines {"prefix", "chars", "probs"} instead. stride: see Predictor.topk_batch. Returns the
    number of prefixes; UserError when the input cannot be read. The output is written atomically.
    """
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
    atomic_write_bytes(output_path, out.encode("utf-8"))
    return len(prefixes)
