"""Tests for the data dir (token files, open_data), the batch sampler and eval positions."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import TINY_TEXTS

from nextchar.corpus import normalize, split_text
from nextchar.data import BatchSampler, case_maps, eval_positions, open_data, read_tokens, write_tokens
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


def test_ranks_and_micro_batches_slice_one_stream(tiny_data_dir):
    """W ranks x b rows == one process drawing W*b rows, at any accumulation; the state resumes on any W."""
    ds = open_data(tiny_data_dir)
    one = BatchSampler(ds, context=32, batch_size=8, seed=5, lang_temperature=0.3)
    ranks = [BatchSampler(ds, context=32, batch_size=4, seed=5, lang_temperature=0.3, rank=r, world_size=2)
             for r in range(2)]
    micro = BatchSampler(ds, context=32, batch_size=4, seed=5, lang_temperature=0.3)
    for _ in range(3):
        x, y = one.next_batch()
        parts = [s.next_batch() for s in ranks]
        assert (np.concatenate([p[0] for p in parts]) == x).all() and (np.concatenate([p[1] for p in parts]) == y).all()
        assert (np.concatenate([micro.next_batch()[0], micro.next_batch()[0]]) == x).all()
    assert ranks[0].state_dict() == ranks[1].state_dict() and ranks[0].state_dict()["rows"] == one.rows == 24
    solo = BatchSampler(ds, context=32, batch_size=8, seed=5, lang_temperature=0.3)
    solo.load_state_dict(json.loads(json.dumps(ranks[1].state_dict())))
    assert (solo.next_batch()[0] == one.next_batch()[0]).all()
    with pytest.raises(ValueError, match="older"):
        solo.load_state_dict({"rng": {}, "batches": 3})


def accent_data(tmp_path):
    from nextchar.corpus import prepare

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "xx.txt").write_text("Éa éa Ea ea Ωω ß\n\n" * 300, encoding="utf-8")
    prepare(tmp_path / "d", tmp_path / "c")
    return open_data(tmp_path / "d")


def test_case_maps_stay_in_the_vocabulary(tmp_path):
    ds = accent_data(tmp_path)
    lower, strip = case_maps(ds.vocab)
    c = ds.vocab.stoi
    assert lower[c["É"]] == c["é"] and lower[c["E"]] == c["e"] and lower[c["Ω"]] == c["ω"]
    assert strip[c["É"]] == c["E"] and strip[c["é"]] == c["e"] and strip[c["ω"]] == c["ω"]
    assert lower[c["ß"]] == c["ß"] and lower[0] == 0 and strip[c["a"]] == c["a"]
    assert set(lower.tolist()) <= set(range(ds.vocab.size))


def test_augmented_batches_type_like_people(tmp_path):
    ds = accent_data(tmp_path)

    def texts(**aug):
        s = BatchSampler(ds, context=6, batch_size=200, seed=1, **aug)
        x, y = s.next_batch()
        assert (x[:, 1:] == y[:, :-1]).all()  # inputs and targets get the same variant
        return [ds.vocab.decode(np.concatenate([r, t[-1:]])) for r, t in zip(x, y)]

    plain = texts()
    assert texts(augment_lower=0.0, augment_strip_accents=0.0) == plain
    low = texts(augment_lower=1.0)
    assert [t.lower() for t in plain] == low
    bare = texts(augment_strip_accents=1.0)
    assert bare == [t.replace("É", "E").replace("é", "e") for t in plain]
    both = texts(augment_lower=1.0, augment_strip_accents=1.0)
    assert both == [t.lower().replace("é", "e") for t in plain]  # "Éa" typed as "ea"
    half = texts(augment_lower=0.5)
    changed = sum(a != b for a, b in zip(plain, half))
    cased = sum(a != a.lower() for a in plain)
    assert 0.3 * cased < changed < 0.7 * cased  # about half of the rows that have capitals


# ---------------------------------------------------------------- streaming prepare (corpus.prepare)

NASTY = ["a", "b", "é", "e\u0301", "\u0301", " ", "  ", "\t", "\n", "\n\n", "\r\n", "\r", "\x85", "\u2028",
         "\u2029", "\u00a0", "\u3000", "\ufeff", "\x92", "\x1b", "ж", "日本", "\u1100", "\u1161", "\u11a8", "가",
         "\U0001f600", "\x0b", "\x0c", "\u0301" * 35, "\u0316\u0301" * 12, "\u0f73" * 20, "\x01\u0301" * 20]
BAD_BYTES = [b"\xff", b"\xc3", b"\xe2\x82", "\ufffd".encode()]


def nasty_bytes(rng, n):
    parts = []
    for _ in range(n):
        parts.append(rng.choice(BAD_BYTES) if rng.random() < 0.03 else rng.choice(NASTY).encode())
    return b"".join(parts)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 20])
def test_stream_normalize_equals_normalize(tmp_path, chunk):
    """Cut anywhere (inside UTF-8 sequences, CRLF, combining sequences, words, blank lines): the same text."""
    import random

    from nextchar.corpus import normalize, stream_normalize

    rng = random.Random(chunk)
    for i in range(40):
        raw = nasty_bytes(rng, rng.randrange(0, 300))
        p = tmp_path / f"{i}.txt"
        p.write_bytes(raw)
        assert "".join(stream_normalize([p], chunk)) == normalize(raw, str(p)), raw


@pytest.mark.parametrize("chunk", [63, 64, 65, 1000])
def test_stream_normalize_cuts_inside_endless_marks(tmp_path, chunk):
    """A line that is one long run of marks (no safe cut anywhere) is still streamed piece by piece, equal to
    the whole: each piece ends a run over 30 marks, and the next piece's marks are dropped."""
    from nextchar import corpus

    raw = ("a" + "\u0301\u0316" * 3000 + "\x01\u0301" * 50 + "\u1161" * 40 + "\u0f73" * 500 + " b").encode()
    p = tmp_path / "marks.txt"
    p.write_bytes(raw)
    pieces = list(corpus.stream_normalize([p], chunk))
    assert "".join(pieces) == corpus.normalize(raw, str(p))
    assert len(pieces) > 1  # cut before the end of the line


def test_stream_normalize_joins_files_as_paragraphs_and_checks_each(tmp_path):
    import random

    from nextchar.corpus import normalize, stream_normalize

    rng = random.Random(9)
    files = []
    for i in range(6):
        files.append(tmp_path / f"{i}.txt")
        files[-1].write_bytes(nasty_bytes(rng, 80) if i != 2 else b" \n\t ")  # one empty after normalization
    want = "\n".join(t for t in (normalize(f.read_bytes(), str(f)) for f in files) if t)
    assert "".join(stream_normalize(files, 5)) == want
    bad = tmp_path / "bin.txt"
    bad.write_bytes(b"ok " * 5000 + b"\x00" * 100)  # NULs after the first 8000 bytes, but too many
    with pytest.raises(UserError, match=f"^{bad}: looks binary"):
        list(stream_normalize([files[0], bad], 64))


def test_prepare_streams_to_the_same_data_dir(tiny_corpus_dir, tmp_path, monkeypatch, capsys):
    """Tiny chunks and blocks give byte-identical files; a language may be a folder of shards."""
    from nextchar import corpus

    whole = tmp_path / "whole"
    stats = corpus.prepare(whole, tiny_corpus_dir)
    monkeypatch.setattr(corpus, "CHUNK_BYTES", 7)
    monkeypatch.setattr(corpus, "BLOCK_CHARS", 61)
    # split en.txt into shards at paragraph breaks: the shards joined as paragraphs are the same text
    text = (tiny_corpus_dir / "en.txt").read_text(encoding="utf-8")
    paras = text.split("\n\n")
    (tiny_corpus_dir / "en.txt").unlink()
    (tiny_corpus_dir / "en" / "zz-more").mkdir(parents=True)  # files are taken in sorted path order
    for k in range(0, len(paras), 4):
        where = tiny_corpus_dir / "en" / ("zz-more" if k >= len(paras) // 2 else "") / f"part-{k:03d}.txt"
        where.write_text("\n\n".join(paras[k:k + 4]), encoding="utf-8")
    shards = tmp_path / "shards"
    assert corpus.prepare(shards, tiny_corpus_dir)["languages"] == stats["languages"]
    for f in sorted(whole.rglob("*")):
        if f.is_file() and f.name != "stats.json":
            assert f.read_bytes() == (shards / f.relative_to(whole)).read_bytes(), f
    assert not [p for p in shards.rglob(".*")]


def test_prepare_failure_leaves_nothing(tiny_corpus_dir, tmp_path):
    from nextchar.corpus import prepare

    (tiny_corpus_dir / "xx.txt").write_bytes(b"\x00binary")
    with pytest.raises(UserError, match="looks binary"):
        prepare(tmp_path / "new", tiny_corpus_dir)
    assert not (tmp_path / "new").exists()
    (tiny_corpus_dir / "xx.txt").unlink()
    (tiny_corpus_dir / "xx").mkdir()
    with pytest.raises(UserError, match="language folder has no .txt files"):
        prepare(tmp_path / "new", tiny_corpus_dir)
