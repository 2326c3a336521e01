"""File mode: one prefix per line in, one line of exactly k distinct characters out (or JSON lines)."""

import json

import pytest
import torch

from nextchar import engine
from nextchar.errors import UserError
from nextchar.predict import predict_file

torch.set_num_threads(1)

TEXT = ("Le vieux château dominait la vallée. The quick brown fox jumps over the lazy dog; "
        "Москва — столица России. Η Αθήνα είναι η πρωτεύουσα. 北京是中国的首都。") * 3


@pytest.fixture(scope="module", params=["tiny_run", "tiny_hash_run"])
def pred(request):
    return engine.load(request.getfixturevalue(request.param))


def test_file_mode_keeps_line_format(pred, tmp_path):
    prefixes = ["Hello wor", "", "trailing space ", "Привет, ми", "\t\U0001F600", "שלו"]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(prefixes) + "\n", encoding="utf-8")
    n = predict_file(pred, src, tmp_path / "out.txt", 3)
    lines = (tmp_path / "out.txt").read_text(encoding="utf-8").split("\n")
    assert n == len(prefixes) and lines[-1] == "" and len(lines) == len(prefixes) + 1
    for line, prefix in zip(lines, prefixes):
        assert len(line) == 3 and len(set(line)) == 3
        assert [c for c, _ in pred.topk(prefix, 3)] == list(line)
    predict_file(pred, src, tmp_path / "out.jsonl", 2, as_json=True)
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["prefix"] for r in rows] == prefixes and all(len(r["chars"]) == 2 for r in rows)


def test_crlf_lines_lose_only_the_carriage_return(pred, tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"Hello wor\r\nabc \r\n")
    predict_file(pred, src, tmp_path / "out.txt", 3)
    got = (tmp_path / "out.txt").read_text(encoding="utf-8").splitlines()
    assert got == ["".join(c for c, _ in pred.topk(p, 3)) for p in ("Hello wor", "abc ")]


def test_file_mode_with_a_stride_shows_what_a_typing_session_shows(pred, tmp_path):
    prefixes = [TEXT[:n] for n in range(0, len(TEXT), 3)]
    s = pred.session(pred.context // 2)
    typed = [s.topk(p, 3) for p in prefixes]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(prefixes) + "\n", encoding="utf-8")
    predict_file(pred, src, tmp_path / "out.txt", 3, stride=s.stride)
    assert (tmp_path / "out.txt").read_text(encoding="utf-8").splitlines() == [
        "".join(c for c, _ in r) for r in typed]


def test_errors(pred, tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        predict_file(pred, tmp_path / "missing.txt", tmp_path / "o.txt")
    (tmp_path / "in.txt").write_text("a\n")
    with pytest.raises(UserError, match="at least 1"):
        predict_file(pred, tmp_path / "in.txt", tmp_path / "o.txt", k=0)
    assert not (tmp_path / "o.txt").exists()
