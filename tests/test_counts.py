"""Tests of the language-aware count model: hand-computed KN/PPM, the language posterior, the three scoring paths,
compact storage (pruning, quantization, memory-mapping), the reference PPM's undo and the streaming evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nextchar.adapt import WEIGHTS, Weights, cache_counts, count_specials, mix
from nextchar.count_tables import CountTables, language_terms
from nextchar.counts import (
    CountModel,
    CountsConfig,
    PosteriorConfig,
    load_model,
    save_model,
    tail,
)
from nextchar.data import open_data
from nextchar.errors import UserError
from nextchar.files import folder_bytes
from nextchar.ngram import NGramModel
from nextchar.ppm import DASHER_ALPHA as A
from nextchar.ppm import DASHER_BETA as B
from nextchar.ppm import SessionPPM
from nextchar.streaming import CountStream, ppmd_bits, ppmd_size, stream_counts
from nextchar.train_counts import build_model, fit_languages, main
from nextchar.vocab import Vocab

V4 = Vocab(["<unk>", "\n", "a", "b"])  # id 1 = "\n" (START), 2 = a, 3 = b


def _dist(tab: CountTables, hist: list[int], lang: int = 0) -> np.ndarray:
    k = max(tab.order - 1, 1)
    h = np.zeros((1, k), dtype=np.int64)
    rev = hist[::-1][:k]
    h[0, :len(rev)] = rev
    walk = tab.walk(h, np.array([min(len(hist), tab.order - 1)]), np.array([lang]), tab.order)
    return tab.dists(walk, 1)[0]


# ------------------------------------------------------------------------------------------ hand computations


def test_kn_hand_example() -> None:
    # NGramModel's hand example (tests/test_ngram.py): bigram context 1 -> c(1,2)=3, c(1,3)=2, D1=.6 D2=.2
    # D3+=.6 from the bigram count-of-counts; unigram continuation counts 2, 3, 2 with fallback discounts
    # .5 1 1.5 (total 7, gamma .5).
    hand = np.array([2, 1, 2, 1, 2, 1, 3, 2, 3, 1, 2, 1, 3])
    m = NGramModel.fit([hand], vocab_size=4, order=2)
    tab = CountTables.merge([language_terms(m, 2, "kn")], 4, bits=32)
    p1 = np.full(4, 0.5 / 4)
    p1[1:] += np.array([1.0, 1.5, 1.0]) / 7
    want = 0.16 * p1
    want[2] += 2.4 / 5
    want[3] += 1.8 / 5
    assert _dist(tab, [1]) == pytest.approx(want, rel=1e-6)  # float32 terms
    assert _dist(tab, []) == pytest.approx(p1, rel=1e-6)


def test_ppm_hand_example() -> None:
    # START a b a b a learned with Dasher's update exclusion: () {START:1, a:2, b:1}, (a) {b:2}, (b) {a:2},
    # (START) {a:1}. After "...a": the context (a) (T=2, one symbol) keeps (2 - beta) / (2 + alpha) for b and
    # escapes (alpha + beta) / (2 + alpha) to () (T=4, three symbols), which escapes (alpha + 3 beta) / (4 + alpha)
    # to the uniform 1/4.
    seq = [1, 2, 3, 2, 3, 2]
    ref = SessionPPM(order=2)
    for x in seq:
        ref.learn(x)
    assert ref.counts[()] == {1: 1, 2: 2, 3: 1} and ref.counts[(2,)] == {3: 2} and ref.counts[(3,)] == {2: 2}
    root = np.full(4, (A + 3 * B) / (4 + A) / 4)
    root[[1, 2, 3]] += (np.array([1, 2, 1]) - B) / (4 + A)
    want = (A + B) / (2 + A) * root
    want[3] += (2 - B) / (2 + A)
    assert ref.dist(np.full(4, 0.25)) == pytest.approx(want, abs=1e-15)
    assert ref.prob(3, 0.25) == pytest.approx(want[3], abs=1e-15)
    # the same model as count tables: update-exclusion counts are KN continuation counts
    tab = CountTables.merge([language_terms(NGramModel.fit([np.array(seq)], 4, 2), 2, "ppm")], 4, bits=32)
    assert _dist(tab, seq) == pytest.approx(want, rel=1e-6)


def test_ppm_tables_equal_sequential_dasher_ppm(tiny_data_dir) -> None:
    ds = open_data(tiny_data_dir)
    start = ds.vocab.stoi["\n"]
    seq = np.concatenate(([start], ds.split("fr", "train"))).astype(np.int64)
    ref = SessionPPM(order=5)
    for x in seq.tolist():
        ref.learn(x)
    tab = CountTables.merge([language_terms(NGramModel.fit([seq], ds.vocab.size, 5), 5, "ppm")], ds.vocab.size, 32)
    dev = ds.split("fr", "dev").astype(np.int64)
    uniform = np.full(ds.vocab.size, 1.0 / ds.vocab.size)
    for p in (0, 1, 7, 40, 99):
        hist = [start] + dev[:p].tolist()
        assert _dist(tab, hist) == pytest.approx(ref.dist(uniform, hist), rel=2e-6)


def test_kn_tables_equal_ngram_model(tiny_data_dir) -> None:
    models, langs, vocab, _ = fit_languages(tiny_data_dir, 4)
    tab = CountTables.merge([language_terms(m, 4, "kn") for m in models], vocab.size, bits=32)
    ds = open_data(tiny_data_dir)
    for li, lang in enumerate(langs):
        dev = ds.split(lang, "dev").astype(np.int64)
        for p in (0, 3, 50):
            hist = [1] + dev[:p].tolist()
            assert _dist(tab, hist, li) == pytest.approx(models[li].dist(np.array(hist)), rel=1e-6)


# ------------------------------------------------------------------------------------------ the model


@pytest.fixture(scope="module")
def fits(tiny_data_dir):
    return fit_languages(tiny_data_dir, 5)


def _model(fits, **kw) -> CountModel:
    post = kw.pop("posterior", PosteriorConfig(window=48, decay=0.95, id_order=0, min_weight=0.0))
    models, langs, vocab, sizes = fits
    kw.setdefault("prune", 0.0)
    kw.setdefault("bits", 32)
    return build_model(models, vocab, langs, CountsConfig(order=kw.pop("order", 5), posterior=post, **kw), sizes)


def _text(ds, lang: str) -> np.ndarray:
    return np.concatenate([ds.split(lang, "dev"), ds.split(lang, "test")]).astype(np.int64)


def test_posterior_finds_each_language_and_follows_a_switch(fits, tiny_data_dir) -> None:
    ds = open_data(tiny_data_dir)
    m = _model(fits)
    langs = m.languages
    for li, lang in enumerate(langs):
        seq = _text(ds, lang)[:200]
        _, feats = m.logprobs_at(seq, np.array([seq.size - 1]), with_features=True)
        w = feats["posterior"][0]
        assert w.sum() == pytest.approx(1.0, abs=1e-12) and (w > 0).all()
        assert w.argmax() == li and w[li] > 0.9, (lang, w)
    # English, then French: within 100 characters of French the posterior has moved
    en, fr = _text(ds, "en")[:200], _text(ds, "fr")[:100]
    _, feats = m.logprobs_at(np.concatenate([en, fr]), np.array([199, 299]), with_features=True)
    assert feats["posterior"][0].argmax() == langs.index("en")
    assert feats["posterior"][1].argmax() == langs.index("fr") and feats["posterior"][1].max() > 0.9
    assert feats["entropy"][1] < math.log(len(langs))


@pytest.mark.parametrize("kw", [{}, {"prune": 0.5, "bits": 8}, {"cutoffs": (1, 1, 2), "bits": 16, "kind": "ppm"},
                                {"posterior": PosteriorConfig()}, {"order": 3, "posterior": PosteriorConfig()},
                                {"posterior": PosteriorConfig(window=8, id_order=3, prior="size", floor=0.1)},
                                {"posterior": PosteriorConfig(window=20, floor=0.01, min_weight=0.05)}])
def test_distributions_sum_to_one_and_paths_agree(fits, tiny_data_dir, kw) -> None:
    ds = open_data(tiny_data_dir)
    m = _model(fits, **kw)
    seq = _text(ds, "ru")[:90]
    pos = np.arange(seq.size)
    at = m.logprobs_at(seq, pos)  # (T, V)
    batch = m.logprobs([tail(seq, int(p), m.context, 1) for p in pos])
    assert np.abs(np.exp(at).sum(axis=1) - 1).max() < 1e-12
    np.testing.assert_array_equal(at, batch)
    st, lp = m.feed(m.start(), np.array([1]))
    inc = [lp]
    for x in seq[:-1]:
        st, lp = m.feed(st, np.array([x]))
        inc.append(lp)
    np.testing.assert_array_equal(np.array(inc), batch)
    lp_stream, _, _ = m.stream_logprobs(seq)
    np.testing.assert_allclose(lp_stream, at[pos, seq], rtol=0, atol=1e-13)


def test_typing_with_edits_equals_whole_prefix(fits) -> None:
    m = _model(fits, posterior=PosteriorConfig(window=12, decay=0.9, id_order=0))  # context 16: the window slides
    vocab = m.vocab
    trace = []
    text = ""
    for ch in "Le vieux château dominait":
        text += ch
        trace.append(text)
    trace += [text[:-1], text[:-3], text[:-3] + "ai", "Le vieil", "Le vieil homme dominait la vallée", ""]
    st = m.start()
    fed = ""  # the prefix the state holds (after START)
    for prefix in trace:
        common = 0
        while common < min(len(fed), len(prefix)) and fed[common] == prefix[common]:
            common += 1
        keep = min(common, len(prefix) - 1) + 1  # ids kept: START + common characters, at least one id to feed
        if st.ids.size and keep >= 1:
            st = m.truncate(st, keep)
            new = vocab.encode(prefix[keep - 1:])
        else:
            st, new = m.start(), vocab.encode("\n" + prefix)
        st, lp = m.feed(st, new)
        fed = prefix
        whole = vocab.encode("\n" + prefix)[-m.context:]
        np.testing.assert_array_equal(lp, m.logprobs([whole])[0])
        assert abs(np.exp(lp).sum() - 1) < 1e-12


def test_bad_inputs(fits) -> None:
    m = _model(fits)
    with pytest.raises(UserError, match="context 0"):
        m.logprobs([np.zeros(0, dtype=np.int64)])
    with pytest.raises(UserError, match="outside"):
        m.logprobs([np.array([1, 10_000])])
    with pytest.raises(UserError, match="truncate"):
        m.truncate(m.start(), 3)
    with pytest.raises(UserError, match="window"):
        CountsConfig(posterior=PosteriorConfig(window=0)).check()
    with pytest.raises(UserError, match="bits"):
        CountsConfig(bits=4).check()


# ------------------------------------------------------------------------------------------ storage


def test_pruned_quantized_model_saves_and_loads_bit_identically(fits, tiny_data_dir, tmp_path) -> None:
    ds = open_data(tiny_data_dir)
    full = _model(fits, bits=32)
    small = _model(fits, prune=0.5, bits=8, posterior=PosteriorConfig())
    assert small.tables.n_entries < full.tables.n_entries
    save_model(full, tmp_path / "full")
    save_model(small, tmp_path / "small")
    assert folder_bytes(tmp_path / "small") <= folder_bytes(tmp_path / "full")
    loaded = load_model(tmp_path / "small")
    for name, arr in small.tables.arrays().items():
        got = loaded.tables.arrays()[name]
        assert got.dtype == arr.dtype and np.array_equal(got, arr), name
    seq = _text(ds, "el")[:60]
    ctx = [tail(seq, p, small.context, 1) for p in range(0, 60, 7)]
    np.testing.assert_array_equal(loaded.logprobs(ctx), small.logprobs(ctx))
    # memory-mapped tables answer exactly as tables read into memory
    in_mem = load_model(tmp_path / "small", mmap=False)
    assert isinstance(loaded.tables.pair_keys[3].base, np.memmap)  # a view of the map, not a copy
    assert not isinstance(in_mem.tables.pair_keys[3].base, np.memmap)
    np.testing.assert_array_equal(in_mem.logprobs(ctx), loaded.logprobs(ctx))
    st1, a = loaded.feed(loaded.start(), seq[:30])
    st2, b = in_mem.feed(in_mem.start(), seq[:30])
    np.testing.assert_array_equal(a, b)


def test_damaged_folder_is_a_user_error(fits, tmp_path) -> None:
    save_model(_model(fits, prune=0.5, bits=8), tmp_path / "m")
    (tmp_path / "m" / "tables" / "own_3.npy").write_bytes(b"not numpy")
    with pytest.raises(UserError, match="not a readable count model"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text('{"model_type": "ngram"}')
    with pytest.raises(UserError, match="not a nextchar count model"):
        load_model(tmp_path / "m")


def test_quantization_never_rounds_up(fits) -> None:
    m32, m8 = _model(fits, bits=32), _model(fits, bits=8)
    for lvl in range(m8.order):
        exact = m32.tables.terms(lvl, slice(None))
        q = m8.tables.terms(lvl, slice(None))
        assert (q <= exact * (1 + 1e-6)).all() and (m8.tables.gamma[lvl] > 0).all()


def test_train_counts_cli(tiny_data_dir, tmp_path, capsys) -> None:
    out = tmp_path / "m"
    assert main(["--data", str(tiny_data_dir), "--out", str(out), "--order", "4", "--prune", "0.3",
                 "--window", "32"]) == 0
    import json

    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "counts" and cfg["languages"] == open_data(tiny_data_dir).languages
    m = load_model(out)
    assert m.order == 4 and m.context == 32 + 4 - 1
    assert main(["--data", str(tiny_data_dir), "--out", str(out)]) == 2
    assert "already holds" in capsys.readouterr().err
    assert main(["--data", str(tiny_data_dir), "--out", str(tmp_path / "n"), "--window", "0"]) == 2
    assert main(["--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "n")]) == 2


def test_train_counts_has_one_writer_and_refuses_a_file(tiny_data_dir, tmp_path, capsys) -> None:
    """Issue 14's kinds for this job: a file as --out, and a second writer while one holds the folder."""
    import os

    from nextchar import safefs

    f = tmp_path / "f"
    f.write_text("keep")
    assert main(["--data", str(tiny_data_dir), "--out", str(f), "--order", "3"]) == 2
    assert capsys.readouterr().err == f"error: {f}: is a file, not a model folder (use another --out)\n"
    assert f.read_text() == "keep"
    out = tmp_path / "m"
    out.mkdir()
    with safefs.RunLock(out / "train.lock", "the other writer"):
        assert main(["--data", str(tiny_data_dir), "--out", str(out), "--order", "3"]) == 2
        assert f"train.lock: in use by pid {os.getpid()}" in capsys.readouterr().err
    assert not (out / "config.json").exists()
    assert main(["--data", str(tiny_data_dir), "--out", str(out), "--order", "3"]) == 0
    assert not (out / "train.lock").exists() and load_model(out).order == 3


# ------------------------------------------------------------------------------------------ session PPM, streaming


def test_session_ppm_undo_is_exact() -> None:
    rng = np.random.default_rng(0)
    seq = rng.integers(1, 6, size=300).tolist()
    a = SessionPPM(order=4)
    for x in seq:
        a.learn(x)
    b = SessionPPM(order=4)
    for x in seq[:200] + [1, 2, 3, 4] * 5:
        b.learn(x)
    b.truncate(150)
    for x in seq[150:]:
        b.learn(x)
    assert a.counts == b.counts and a.totals == b.totals and a.history == b.history
    b.truncate(0)
    assert b.counts == {} and b.totals == {}


def test_stream_counts_on_tiny_corpus(fits, tiny_data_dir) -> None:
    ds = open_data(tiny_data_dir)
    m = _model(fits)
    ids = _text(ds, "he")[:120]
    s = stream_counts(m, ids, lang=m.languages.index("he"))
    lp_static = m.logprobs_at(ids, np.arange(ids.size))[np.arange(ids.size), ids]
    np.testing.assert_allclose(s.static, lp_static, atol=1e-13)
    # by hand: the session's cache model (adapt.py) over the text read so far, mixed with the static model
    V, ns = m.vocab.size, count_specials(m.vocab)
    want = []
    for t in range(ids.size):
        cache = cache_counts(np.concatenate(([1], ids[:t])), V, WEIGHTS.max_order, ns)
        p = np.exp(m.logprobs([np.concatenate(([1], ids[:t]))[-m.context:]])[0])
        want.append(math.log(mix(p, cache, WEIGHTS, ns)[ids[t]]))
    np.testing.assert_allclose(s.adapting, want, atol=1e-12)
    off = stream_counts(m, ids, weights=Weights(((0.0,) * 10,) * 3, uniform=1e-12))  # lam ~ 0: the static model
    np.testing.assert_allclose(off.adapting, off.static, atol=1e-9)
    assert CountStream.bpc(s.static) == pytest.approx(-lp_static.mean() / math.log(2))
    assert s.oracle_static is not None and s.oracle_static.shape == ids.shape


def test_ppmd_bits_exclude_priming() -> None:
    pytest.importorskip("pyppmd")
    text = ("the cat sat on the mat. " * 20).encode()
    alone = ppmd_bits(b"", text)
    assert alone == 8 * ppmd_size(text)
    primed = ppmd_bits(text, text)  # having read the same text once, PPMd spends far fewer bits on it
    assert 0 < primed < alone / 4
    assert primed == 8 * (ppmd_size(text + text) - ppmd_size(text))


def test_count_model_predicts_without_torch(tiny_data_dir, tmp_path) -> None:
    import subprocess
    import sys

    main(["--data", str(tiny_data_dir), "--out", str(tmp_path / "m"), "--order", "4"])
    code = ("import sys; from nextchar.engine.counts_backend import CountsPredictor; "
            f"p = CountsPredictor.from_folder({str(tmp_path / 'm')!r}); s = p.session(); "
            "a = [c for c, _ in s.topk('Le vieux ch', 3)]; b = [c for c, _ in p.topk('Le vieux ch', 3)]; "
            "print(a == b and len(a) == 3, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split() == ["True", "False"], out.stderr
