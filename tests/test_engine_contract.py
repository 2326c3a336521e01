"""Every rule of prediction, run against every backend (a new backend added to BACKENDS gets them all).

Rules: an empty prefix is valid; a long prefix is read through the backend's window; unknown characters are
<unk>; specials and control characters are never suggested; the k suggestions are distinct and sorted;
distributions sum to one; a batch answers as single calls do; the public incremental interface (start / feed /
truncate) and a typing session give what topk gives for the whole prefix after every keystroke, backspaces and
edits included.
"""

import unicodedata

import numpy as np
import pytest

from nextchar import engine
from nextchar.engine.base import NEVER_SUGGESTED, START
from nextchar.engine.mixture_backend import MixturePredictor

BACKENDS = ["torch", "torch-hashed", "torch-stride", "onnx", "onnx-stride", "ngram", "mixture", "mixture-stride",
            "counts"]
TEXT = ("Le vieux château dominait la vallée. The quick brown fox jumps over the lazy dog; "
        "Москва — столица России. Η Αθήνα είναι η πρωτεύουσα. 北京是中国的首都。") * 2


@pytest.fixture(scope="module")
def tiny_counts(tiny_data_dir, tmp_path_factory):
    """The language-aware count model of the tiny corpus (order 5, a 24-character posterior window)."""
    from nextchar.counts import CountsConfig, PosteriorConfig
    from nextchar.train_counts import train_counts

    out = tmp_path_factory.mktemp("tiny_counts") / "counts"
    train_counts(tiny_data_dir, out, CountsConfig(order=5, posterior=PosteriorConfig(window=24)))
    return out


@pytest.fixture(scope="module", params=BACKENDS)
def pred(request, tiny_run, tiny_hash_run, tiny_onnx, tiny_ngram_run, tiny_counts):
    name = request.param
    if name == "counts":
        return engine.load(tiny_counts)  # dispatched on its config.json
    stride = 7 if name.endswith("-stride") else 1  # a window that jumps: KV caches are reused while typing
    if name.startswith("torch"):
        return engine.load(tiny_hash_run if name == "torch-hashed" else tiny_run, backend="torch", stride=stride)
    if name.startswith("onnx"):
        return engine.load(tiny_onnx, stride=stride)
    if name == "ngram":
        return engine.load(tiny_ngram_run)
    # A Transformer (context 32) and an n-gram (context 3): parts with different windows.
    return MixturePredictor(engine.load(tiny_run, stride=stride), engine.load(tiny_ngram_run), 0.4, "mix")


def chars(rows):
    return [[c for c, _ in r] for r in rows]


def probs(rows):
    return [[p for _, p in r] for r in rows]


def typed(text, every=(11, 29)):
    """The prefixes of a user typing text with a backspace every 11th key and an edit every 29th."""
    prefix, out = "", []
    for i, ch in enumerate(text):
        if i % every[0] == every[0] - 1:
            prefix = prefix[:-1]
        elif i % every[1] == every[1] - 1 and len(prefix) > 10:
            prefix = prefix[:-9] + "X" + prefix[-8:]  # a correction 9 characters back
        else:
            prefix += ch
        out.append(prefix)
    return out


def test_topk_is_k_distinct_suggestible_characters_sorted(pred):
    for prefix in ["Hello wor", "", "Привет", "\U0001D11E", "a\tb\n"]:
        out = pred.topk(prefix, 10)
        cs, ps = [c for c, _ in out], [p for _, p in out]
        assert len(out) == 10 and len(set(cs)) == 10 and ps == sorted(ps, reverse=True)
        assert all(0 < p <= 1 for p in ps)
        for c in cs:
            assert len(c) == 1 and c != START and unicodedata.category(c) not in NEVER_SUGGESTED
            assert not pred.vocab.is_special(pred.vocab.stoi[c])


def test_k_is_capped_at_the_suggestible_characters(pred):
    out = pred.topk("a", 10_000)
    assert len(out) == int(pred.suggestible().sum()) and len({c for c, _ in out}) == len(out)


def test_distributions_sum_to_one(pred):
    d = pred.dist(["", "Привет", "שלום עול", "x" * 500, "\U0001D11E" * 3])
    assert d.shape == (5, pred.vocab.size)
    np.testing.assert_allclose(d.sum(axis=1), 1.0, rtol=1e-5)
    lp = pred.logprobs([pred.encode("abc"), np.zeros(0, dtype=np.int64)])
    np.testing.assert_allclose(np.exp(lp).sum(axis=1), 1.0, rtol=1e-5)


def test_empty_prefix_is_the_paragraph_start(pred):
    assert len(pred.topk("", 3)) == 3
    np.testing.assert_allclose(pred.dist([""])[0], np.exp(pred.logprobs([np.zeros(0, dtype=np.int64)])[0]),
                               rtol=1e-6)


def test_long_prefix_is_read_through_the_window(pred):
    """A prefix far past the context depends only on its last `context` characters (at the same position)."""
    tail = TEXT[:pred.context]
    a, b = "a" * 10 * pred.context + tail, "b" * 10 * pred.context + tail
    assert chars([pred.topk(a, 5)]) == chars([pred.topk(b, 5)])
    np.testing.assert_allclose(pred.dist([a]), pred.dist([b]), rtol=1e-5, atol=1e-7)
    assert not np.allclose(pred.dist([tail]), pred.dist([tail[:-2] + "zz"]))  # ...and does read them


def test_unknown_characters_are_unk(pred):
    ids = pred.encode("ab\U0001D11E\U0001F9FF")
    assert ids.tolist()[-2:] == [0, 0] and pred.vocab.chars[0] == "<unk>"
    np.testing.assert_allclose(pred.dist(["ab\U0001D11E"]), pred.dist(["ab\U0001F9FF"]), rtol=1e-6)
    assert "<unk>" not in chars([pred.topk("\U0001D11E\U0001D11E", 20)])[0]


def test_batch_equals_single(pred):
    prefixes = [TEXT[:n] for n in range(0, 2 * pred.context + 5, 3)] + ["zz", "", TEXT[:5], "x" * 300]
    batch = pred.topk_batch(prefixes, 3, batch_size=7)
    single = [pred.topk(p, 3) for p in prefixes]
    assert chars(batch) == chars(single)
    np.testing.assert_allclose(probs(batch), probs(single), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(pred.dist(prefixes), pred.dist(prefixes[::-1])[::-1], rtol=1e-4, atol=1e-7)


def test_session_equals_topk_after_every_keystroke(pred):
    s = pred.session()
    prefixes = typed(TEXT[: 3 * pred.context + 20]) + ["", "Le", "Le", TEXT[:40] + "Q" + TEXT[41:90]]
    batch = pred.topk_batch(prefixes, 3)
    for p, want in zip(prefixes, batch):
        got = s.topk(p, 3)
        assert chars([got]) == chars([want]), p
        np.testing.assert_allclose(probs([got]), probs([want]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(s.dist(prefixes[-1]), pred.dist(prefixes[-1:])[0], rtol=1e-4, atol=1e-6)


def test_feed_and_truncate_are_the_whole_history(pred):
    ids = pred.encode(TEXT[: 2 * pred.context + 9])
    want = pred.logprobs([ids, ids[:17], np.zeros(0, dtype=np.int64)])  # (3, V)
    s0 = pred.start()
    state, lp = pred.feed(s0, ids[:5])
    for i in range(5, len(ids), 6):
        state, lp = pred.feed(state, ids[i:i + 6])
    np.testing.assert_allclose(lp, want[0], atol=2e-5)
    cut, lp17 = pred.feed(pred.truncate(state, 17), ids[17:17])  # nothing more to read: the cut's distribution
    np.testing.assert_allclose(lp17, want[1], atol=2e-5)
    np.testing.assert_allclose(pred.feed(cut, ids[17:])[1], want[0], atol=2e-5)
    np.testing.assert_allclose(pred.feed(s0, ids[:0])[1], want[2], atol=2e-5)
    np.testing.assert_allclose(pred.feed(state, ids[:0])[1], want[0], atol=2e-5)  # state was never changed


def test_a_window_stride_is_a_view_sharing_the_model(pred):
    other = pred.windowed(3)
    assert other.vocab is pred.vocab and pred.stride in (1, 7)
    prefix = TEXT[: 2 * pred.context]
    np.testing.assert_allclose(other.session().dist(prefix), other.dist([prefix])[0], rtol=1e-4, atol=1e-6)
