"""Tests for the data dir (token files, open_data), the batch sampler and eval positions."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import TINY_TEXTS

from nextchar.corpus import normalize, split_text
from nextchar.data import BatchSampler, eval_positions, open_data, read_tokens, write_tokens
from nextchar.errors import UserError


def test_eval_positions():
    assert eval_positions(10, 4).tolist() == [1, 3, 6, 8]
    assert eval_positions(5, 10).tolist() == [0, 1, 2, 3, 4]
    assert eval_positions(5, 5).tolist() == [0, 1, 2, 3, 4]
    assert eval_positions(0, 3).tolist() == [] and eval_positions(7, 0).tolist() == []
    rng = np.random.default_rng(0)
    for _ in range(200):
        L, n = int(rng.integers(1, 10**6)), int(rng.integers(1, 3000))
        pos = eval_positions(L, n)
        if n < L:
            assert pos.tolist() == np.floor((np.arange(n) + 0.5) * L / n).astype(np.int64).tolist()
        assert len(pos) == min(n, L) and (np.diff(pos) > 0).all() and pos[0] >= 0 and pos[-1] < L


def test_write_read_tokens(tmp_path):
    p = tmp_path / "x.bin"
    write_tokens(p, np.array([1, 2, 65535], dtype=np.uint16))
    assert p.read_bytes() == b"\x01\x00\x02\x00\xff\xff"
    assert read_tokens(p, "uint16").tolist() == [1, 2, 65535]
    write_tokens(p, np.array([], dtype=np.uint16))
    assert read_tokens(p, "uint16").tolist() == []
    assert [f.name for f in tmp_path.iterdir()] == ["x.bin"]


def test_data_dir_round_trip(tiny_data_dir):
    ds = open_data(tiny_data_dir)
    assert ds.languages == sorted(TINY_TEXTS) and ds.path == tiny_data_dir
    assert ds.stats["vocab_hash"] == ds.vocab.hash and ds.stats["vocab_size"] == ds.vocab.size
    for lang in ds.languages:
        parts = split_text(normalize(TINY_TEXTS[lang].encode(), lang))
        for split, text in zip(("train", "dev", "test"), parts):
            arr = ds.split(lang, split)
            assert isinstance(arr, np.memmap) and arr.dtype == np.uint16 and not arr.flags.writeable
            assert arr.tolist() == ds.vocab.encode(text).tolist()
            assert ds.stats["languages"][lang][split] == len(text)
            expected = "".join(c if c in ds.vocab.stoi else "\ufffd" for c in text)
            assert ds.text(lang, split) == expected
        assert ds.split(lang, "train") is ds.split(lang, "train")  # cached
    with pytest.raises(UserError, match="no language 'xx'"):
        ds.split("xx", "train")


@pytest.fixture
def data_copy(tiny_data_dir, tmp_path):
    return shutil.copytree(tiny_data_dir, tmp_path / "data")


def test_open_data_errors_name_the_file(data_copy, tmp_path):
    with pytest.raises(UserError, match=f"^{tmp_path / 'none'}: data dir not found"):
        open_data(tmp_path / "none")
    bin_path = data_copy / "en" / "dev.bin"
    bin_path.write_bytes(bin_path.read_bytes()[:-2])
    with pytest.raises(UserError, match=f"^{bin_path}: .*stats.json says"):
        open_data(data_copy)
    (data_copy / "vocab.json").write_text("[]")
    with pytest.raises(UserError, match=f"^{data_copy / 'vocab.json'}: not a valid vocabulary"):
        open_data(data_copy)
    (data_copy / "vocab.json").unlink()
    with pytest.raises(UserError, match=f"^{data_copy / 'vocab.json'}: vocabulary file not found"):
        open_data(data_copy)
    (data_copy / "stats.json").write_text("{oops")
    with pytest.raises(UserError, match=f"^{data_copy / 'stats.json'}: not valid JSON"):
        open_data(data_copy)
    (data_copy / "stats.json").write_text('{"dtype": "uint16"}')
    with pytest.raises(UserError, match=f"^{data_copy / 'stats.json'}: missing key"):
        open_data(data_copy)
    (data_copy / "stats.json").unlink()
    with pytest.raises(UserError, match=f"^{data_copy / 'stats.json'}: not found"):
        open_data(data_copy)


def test_open_data_vocab_mismatch(data_copy):
    stats = json.loads((data_copy / "stats.json").read_text())
    stats["vocab_hash"] = "0" * 16
    (data_copy / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(UserError, match="vocab.json: does not match stats.json"):
        open_data(data_copy)


def test_sampler_batches(tiny_data_dir):
    ds = open_data(tiny_data_dir)
    s = BatchSampler(ds, context=32, batch_size=16, seed=3)
    streams = {lang: ds.split(lang, "train").astype(np.int64).tobytes() for lang in ds.languages}
    for _ in range(5):
        x, y = s.next_batch()
        assert x.shape == y.shape == (16, 32) and x.dtype == y.dtype == np.int64
        assert (x[:, 1:] == y[:, :-1]).all()
        for row in np.concatenate([x, y[:, -1:]], axis=1):
            # every row is a contiguous window of one language's train split
            assert any(stream.find(row.tobytes()) % 8 == 0 for stream in streams.values()
                       if row.tobytes() in stream)
    assert s.state_dict()["batches"] == 5


def test_sampler_language_probs(tiny_data_dir):
    ds = open_data(tiny_data_dir)
    uniform = BatchSampler(ds, context=32, lang_temperature=0.0).lang_probs
    assert sorted(uniform) == ds.languages
    assert all(p == pytest.approx(1 / len(ds.languages)) for p in uniform.values())
    prop = BatchSampler(ds, context=32, lang_temperature=1.0).lang_probs
    total = sum(ds.stats["languages"][lang]["train"] for lang in ds.languages)
    for lang, p in prop.items():
        assert p == pytest.approx(ds.stats["languages"][lang]["train"] / total)
    # only languages with at least context + 1 tokens take part
    dev = {lang: ds.stats["languages"][lang]["dev"] for lang in ds.languages}
    ctx = sorted(dev.values())[len(dev) // 2]
    s = BatchSampler(ds, split="dev", context=ctx, batch_size=4)
    assert sorted(s.lang_probs) == sorted(lang for lang, n in dev.items() if n >= ctx + 1)
    x, _y = s.next_batch()
    assert x.shape == (4, ctx)
    with pytest.raises(UserError, match="context 5000 is longer than every language's dev text; lower model.context"):
        BatchSampler(ds, split="dev", context=5000)


def test_sampler_resume_exact(tiny_data_dir):
    ds = open_data(tiny_data_dir)
    a = BatchSampler(ds, context=32, batch_size=8, seed=7, lang_temperature=0.5)
    for _ in range(3):
        a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))
    after = [a.next_batch() for _ in range(2)]
    b = BatchSampler(ds, context=32, batch_size=8, seed=7, lang_temperature=0.5)
    b.load_state_dict(state)
    for (xa, ya), (xb, yb) in zip(after, [b.next_batch() for _ in range(2)]):
        assert (xa == xb).all() and (ya == yb).all()
    assert b.batches == a.batches == 5


def test_sampler_seed_and_rank(tiny_data_dir):
    ds = open_data(tiny_data_dir)

    def first(**kw):
        return BatchSampler(ds, context=32, batch_size=8, **kw).next_batch()[0]

    assert (first(seed=1) == first(seed=1)).all()
    assert not (first(seed=1) == first(seed=2)).all()
    assert not (first(seed=1, rank=0, world_size=2) == first(seed=1, rank=1, world_size=2)).all()
