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


def test_lines_are_what_universal_newlines_read(pred, tmp_path):
    """CR-only, CRLF and mixed files: one output line per input line, exactly k characters each."""
    want = ["".join(c for c, _ in pred.topk(p, 3)) for p in ("Hello wor", "Happy New Yea", "", "abc ")]
    for raw in (b"Hello wor\rHappy New Yea\r\rabc \r", b"Hello wor\r\nHappy New Yea\r\n\r\nabc \r\n",
                b"Hello wor\nHappy New Yea\r\rabc ", b"Hello wor\r\nHappy New Yea\n\rabc \n"):
        (tmp_path / "in.txt").write_bytes(raw)
        assert predict_file(pred, tmp_path / "in.txt", tmp_path / "out.txt", 3) == 4
        assert (tmp_path / "out.txt").read_text(encoding="utf-8").split("\n") == want + [""], raw
    (tmp_path / "in.txt").write_bytes(b"")
    assert predict_file(pred, tmp_path / "in.txt", tmp_path / "out.txt", 3) == 0
    assert (tmp_path / "out.txt").read_bytes() == b""


def test_utf16_and_utf32_files_with_a_byte_order_mark_are_decoded(pred, tmp_path):
    prefixes = ["Hello wor", "Привет, ми", "ঢাকা "]
    want = (["".join(c for c, _ in pred.topk(p, 3)) for p in prefixes])
    for codec in ("utf-16", "utf-16-be", "utf-32", "utf-8-sig"):
        data = "\r\n".join(prefixes).encode(codec)
        if codec == "utf-16-be":
            data = b"\xfe\xff" + data
        (tmp_path / "in.txt").write_bytes(data)
        predict_file(pred, tmp_path / "in.txt", tmp_path / "out.txt", 3)
        assert (tmp_path / "out.txt").read_text(encoding="utf-8").splitlines() == want, codec
    (tmp_path / "in.txt").write_bytes("Hello\nwor\n".encode("utf-16-le"))  # no byte-order mark: refused
    with pytest.raises(UserError, match="NUL bytes.*save it as UTF-8"):
        predict_file(pred, tmp_path / "in.txt", tmp_path / "o2.txt", 3)
    assert not (tmp_path / "o2.txt").exists()


def test_every_line_has_exactly_k_characters(pred, tmp_path):
    prefixes = ["", " ", "ঢাকা ", "ঢাক", "12", "İS", "\u2600", "x\u200d", "日本語", "\ud800"]
    (tmp_path / "in.txt").write_text("\n".join(prefixes) + "\n", encoding="utf-8", errors="surrogatepass")
    floor = pred.attach_rule().floor()
    for k in (1, 3, floor):
        predict_file(pred, tmp_path / "in.txt", tmp_path / "out.txt", k)
        lines = (tmp_path / "out.txt").read_text(encoding="utf-8").split("\n")
        assert len(lines) == len(prefixes) + 1 and all(len(x) == k for x in lines[:-1]) and lines[-1] == ""
    with pytest.raises(UserError, match=f"-k {floor + 1}: this model can suggest at most {floor}"):
        predict_file(pred, tmp_path / "in.txt", tmp_path / "out.txt", floor + 1)


def test_json_lines_stay_one_record_per_line_for_every_reader(pred, tmp_path, caplog):
    prefixes = ["a\u2028b", "c\u2029d", "e\x85f", "日本語のテキスト"]
    (tmp_path / "in.txt").write_text("\n".join(prefixes) + "\n", encoding="utf-8")
    predict_file(pred, tmp_path / "in.txt", tmp_path / "out.jsonl", 2, as_json=True)
    out = (tmp_path / "out.jsonl").read_text(encoding="utf-8")
    assert not set(out) & {"\u2028", "\u2029", "\x85"} and "\\u2028" in out and "\\u0085" in out
    rows = [json.loads(x) for x in out.splitlines()]  # str.splitlines() splits at all three
    assert [r["prefix"] for r in rows] == prefixes
    assert [r["mostly_unknown"] for r in rows] == [False, False, False, True] and rows[3]["unknown_share"] == 1.0
    assert "1 of 4 prefixes are mostly outside the model's vocabulary (lines 4)" in caplog.text
