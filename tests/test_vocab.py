"""Tests for the character vocabulary."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from conftest import TINY_TEXTS

from nextchar.corpus import char_counts, normalize
from nextchar.errors import UserError
from nextchar.vocab import SPECIALS, Vocab


def test_build_min_count_sorted_and_newline():
    counts = Counter({"b": 2, "a": 5, "c": 1, "ж": 3, " ": 9, "\ufffd": 9})
    v = Vocab.build(counts)
    assert v.chars == ["<unk>", "\n", " ", "a", "b", "ж"]  # c below min_count; U+FFFD left to <unk>
    assert Vocab.build(counts, min_count=1).chars == ["<unk>", "\n", " ", "a", "b", "c", "ж"]
    assert Vocab.build(counts, min_count=4).chars == ["<unk>", "\n", " ", "a"]
    assert v.size == len(v) == 6 and v.stoi["ж"] == 5 and SPECIALS == ["<unk>"]
    with pytest.raises(UserError, match="min_count"):
        Vocab.build(counts, min_count=0)


def test_unk_mapping_and_decode():
    v = Vocab.build(Counter("aabb"))
    assert v.encode("abz").tolist() == [2, 3, 0]
    assert v.decode([2, 0, 3, 99]) == "a\ufffdb\ufffd"
    assert v.is_special(0) and not v.is_special(1) and not v.is_special(2)
    assert v.encode("a\ud800b").tolist() == [2, 0, 3]  # lone surrogate: <unk>, no exception
    assert v.encode("a\ud800" + "b" * 100).tolist() == [2, 0] + [3] * 100


def test_round_trip_all_scripts():
    texts = {lang: normalize(t.encode(), lang) for lang, t in TINY_TEXTS.items()}
    v = Vocab.build(char_counts(texts.values()), min_count=1)
    for lang, text in texts.items():
        ids = v.encode(text)
        assert ids.dtype == np.uint16 and 0 not in ids.tolist(), lang
        assert v.decode(ids) == text, lang
        # the short-text path (dict) and the long one (lookup table) agree
        for k in (1, 5, 47, 48, 49, 100):
            assert v.encode(text[:k]).tolist() == ids[:k].tolist(), (lang, k)
    assert v.encode("").tolist() == [] and v.decode([]) == ""


def test_large_vocab_uses_uint32():
    chars = [chr(cp) for cp in range(0x10000, 0x10000 + 70000)]
    v = Vocab.build(Counter(chars), min_count=1)
    assert v.size == 70002 and v.dtype == np.uint32
    text = "".join(chars[::997]) * 2
    assert v.decode(v.encode(text)) == text and v.encode(text).dtype == np.uint32


def test_hash_stable():
    v = Vocab.build(Counter("hello world\n"), min_count=1)
    assert v.chars == ["<unk>", "\n", " ", "d", "e", "h", "l", "o", "r", "w"]
    assert v.hash == "895d2d8271473ff7"
    assert Vocab.build(Counter("dlrow olleh\n"), min_count=1).hash == v.hash  # count order does not matter
    assert Vocab.build(Counter("hello world!\n"), min_count=1).hash != v.hash


def test_save_load(tmp_path):
    v = Vocab.build(Counter("ééaabb日日"), min_count=2)
    p = tmp_path / "vocab.json"
    v.save(p)
    d = json.loads(p.read_text(encoding="utf-8"))
    assert d == {"specials": ["<unk>"], "chars": v.chars, "min_count": 2, "hash": v.hash}
    assert "日" in p.read_text(encoding="utf-8")  # stored readable, not \u-escaped
    w = Vocab.load(p)
    assert w == v and w.hash == v.hash and w.min_count == 2
    assert [f.name for f in tmp_path.iterdir()] == ["vocab.json"]


def test_load_errors_name_the_file(tmp_path):
    p = tmp_path / "vocab.json"
    with pytest.raises(UserError, match=f"^{p}: vocabulary file not found"):
        Vocab.load(p)
    p.write_text("{not json")
    with pytest.raises(UserError, match=f"^{p}: not valid JSON"):
        Vocab.load(p)
    p.write_text('{"chars": ["<unk>", "a"]}')
    with pytest.raises(UserError, match=f"^{p}: not a valid vocabulary"):
        Vocab.load(p)
    v = Vocab.build(Counter("aabb"))
    v.save(p)
    d = json.loads(p.read_text())
    d["chars"].append("z")
    p.write_text(json.dumps(d))
    with pytest.raises(UserError, match=f"^{p}: vocabulary hash mismatch"):
        Vocab.load(p)
