"""Adaptation: cache counts, mixed distributions, repeated words, independent and bounded sessions, tuning."""

import numpy as np
import pytest
import torch

from nextchar import engine
from nextchar.adapt import (
    WEIGHTS,
    AdaptiveSession,
    SessionStore,
    Weights,
    cache_counts,
    column,
    format_weights,
    mix,
    stream_probs,
    stream_true,
    tune,
)
from nextchar.errors import UserError

torch.set_num_threads(1)

# An unusual word made of characters the tiny corpus has: the model alone cannot know how it goes on.
WORD = "vizqubel"


@pytest.fixture(scope="module")
def pred(tiny_run):
    return engine.load(tiny_run)


def test_cache_counts_follow_each_suffix_of_the_context():
    # ids: START=1 a=2 b=3 c=4; text "abcab": the context "ab" was followed by c once, "b" by c once
    ids = np.array([1, 2, 3, 4, 2, 3])
    c = cache_counts(ids, 5, max_order=6)
    assert c is not None and c.order == 2 and c.count == 1
    assert c.counts[0].tolist() == [0, 0, 2, 2, 1]
    assert c.counts[1].tolist() == [0, 0, 0, 0, 1] and c.counts[2].tolist() == [0, 0, 0, 0, 1]
    p = c.probs(2.0)
    assert p.sum() == pytest.approx(1.0) and p.argmax() == 4
    assert cache_counts(np.array([1]), 5) is None  # nothing observed yet
    assert cache_counts(np.array([1, 0, 0]), 5) is None  # only <unk> followed: never counted


def test_distributions_sum_to_one_and_keep_every_character(pred):
    s = AdaptiveSession(pred)
    s.observe("Hello world, hello again. שלום עולם")
    d = s.dist_batch(["", "Hello wor", "שלום עו", "\U0001D11E\U0001D11E", "x" * 300])
    np.testing.assert_allclose(d.sum(axis=1), 1.0, rtol=1e-6)
    assert (d[:, 1:] > 0).all()  # the uniform floor: every non-special character stays reachable
    for prefix in ["", "Hello wor", "\U0001D11E"]:
        chars = [c for c, _ in s.topk(prefix, 10)]
        assert len(set(chars)) == 10 and "<unk>" not in chars and "\n" not in chars


def test_cache_raises_a_repeated_unusual_word(pred):
    prefix = f"I met {WORD} today. Later {WORD[:-2]}"
    nxt = pred.vocab.stoi[WORD[-2]]
    plain = pred.dist([prefix])[0, nxt]
    fresh = AdaptiveSession(pred)
    assert fresh.dist(prefix)[nxt] > max(2 * plain, 0.3)  # seen earlier in the same text
    assert fresh.topk(prefix, 1)[0][0] == WORD[-2]
    told = AdaptiveSession(pred)
    told.observe(f"Say hi to {WORD}.")
    short = f"Later {WORD[:-2]}"
    assert told.dist(short)[nxt] > max(2 * pred.dist([short])[0, nxt], 0.3)  # seen in an earlier message
    assert AdaptiveSession(pred).dist(short)[nxt] < told.dist(short)[nxt]


def test_sessions_are_independent(pred):
    store = SessionStore(pred, max_sessions=4)
    a, b = store.get("alice"), store.get("bob")
    a.observe(f"{WORD} {WORD} {WORD}")
    b.observe("the quick brown fox")
    prefix = WORD[:4]
    assert not np.allclose(a.dist(prefix), b.dist(prefix))
    assert store.get("alice") is a and store.get("bob") is b
    assert b.history_chars == len("the quick brown fox") + 1  # + the START that separates pieces


def test_no_cache_and_model_rows_given(pred):
    # before anything is typed the cache is empty: the model plus the floor, exactly
    s = AdaptiveSession(pred)
    m = pred.dist([""])[0]
    np.testing.assert_allclose(s.dist(""), mix(m, None, WEIGHTS), rtol=1e-12)
    np.testing.assert_allclose(s.dist("", model_probs=m), s.dist(""), rtol=1e-12)


def test_session_store_evicts_least_recently_used(pred):
    store = SessionStore(pred, max_sessions=2)
    store.get("a"), store.get("b"), store.get("a"), store.get("c")
    assert len(store) == 2 and "a" in store and "c" in store and "b" not in store
    assert store.forget("a") and not store.forget("a") and len(store) == 1
    for bad in ["", "x" * 65, "a b", "ä", "../x"]:
        with pytest.raises(UserError, match="session"):
            store.get(bad)


def test_text_per_session_is_bounded(pred):
    s = AdaptiveSession(pred, max_text=50)
    for _ in range(10):
        s.observe("abcdefghij" * 7)
    assert s.history_chars == 50
    assert s.cache_ids("z" * 500).size == 51  # history + START + prefix, newest kept
    assert s.cache_ids("").size == 51 and s.cache_ids("")[-1] == pred.vocab.stoi["\n"]
    s.forget()
    assert s.history_chars == 0


def test_weights_are_checked():
    with pytest.raises(UserError, match="uniform"):
        Weights(WEIGHTS.cache, uniform=0.0)
    with pytest.raises(UserError, match="cache"):
        Weights(((0.5, 0.5),))
    with pytest.raises(UserError, match="cache"):
        Weights(((0.99,) + (0.0,) * 9,), uniform=0.02)
    assert WEIGHTS.max_order == len(WEIGHTS.cache) - 1


def test_tune_finds_weights_no_worse_than_none(pred, tiny_data_dir):
    w, summary = tune(pred, tiny_data_dir, chars=150, escapes=(1.0,), uniforms=(1e-3,), max_order=3,
                      min_positions=20, stride=16)
    assert w.max_order == 3 and w.escape == 1.0 and w.uniform == 1e-3
    assert 0 < summary["positions"] <= 9 * 150 and summary["languages"] == 9
    # λc = 0 is on the grid, so the cache can only help (the tiny corpus repeats itself a lot)
    assert summary["bpc_adapted"] < summary["bpc_plain"]
    assert "CACHE_WEIGHTS = (" in format_weights(w)


def test_bad_arguments_are_user_errors_naming_them(pred):
    for kw, needle in ((dict(uniform="x"), "uniform: expected a finite number"), (dict(uniform=0), "uniform 0"),
                       (dict(escape=-1.0), "escape -1"), (dict(cache=(("a", 0, 0),)), "cache")):
        with pytest.raises(UserError, match=needle):
            Weights(**{"cache": WEIGHTS.cache, **kw})
    for call, needle in ((lambda: SessionStore(pred).get(123), "session '123'"),
                         (lambda: SessionStore(pred, max_sessions=0), "max_sessions 0"),
                         (lambda: AdaptiveSession(pred, max_text=2.5), "max_text: expected a whole number"),
                         (lambda: AdaptiveSession(pred).observe(None), "text: expected a string"),
                         (lambda: AdaptiveSession(pred).topk_batch("ab"), "prefixes: expected a list")):
        with pytest.raises(UserError, match=needle):
            call()


def test_observed_text_is_read_as_a_prefix_is(pred):
    """Normalized like every prefix; trailing whitespace dropped, so each observed text is one paragraph."""
    a, b = AdaptiveSession(pred), AdaptiveSession(pred)
    a.observe("Le cha\u0302teau\r\n\r\nest  vieux\t \r\n")
    b.observe("Le château\nest vieux")
    assert a.history_chars == b.history_chars == 1 + len("Le château\nest vieux")
    np.testing.assert_array_equal(a.cache_ids("x"), b.cache_ids("x"))


def test_columns_split_counts_and_one_follower_contexts():
    assert [column(c, d) for c, d in [(1, 1), (1, 2), (3, 1), (3, 2), (16, 1), (100, 5)]] == [1, 0, 3, 2, 9, 8]
    w = Weights(tuple(tuple(0.01 * (10 * r + c) for c in range(10)) for r in range(3)))
    assert w.cache_weight(2, 5, 1) == pytest.approx(0.25) and w.cache_weight(1, 1, 1) == pytest.approx(0.11)


def test_streaming_session_equals_a_hand_computation():
    # V = 5 (<unk>=0, START=1, a=2, b=3, c=4), text "abab", the model uniform over a, b, c at every position
    ids = np.array([2, 3, 2, 3])
    w = Weights(tuple((0.5,) * 10 for _ in range(4)), uniform=0.01, escape=1.0)
    static = np.tile([0.0, 0.0, 1 / 3, 1 / 3, 1 / 3], (4, 1))
    # t0: "" has no cache: .99 * 1/3 + .01 / 4
    # t1: after START a, the cache knows only order 0: {a: 1} (START is no observation): p(b) = .49/3 + .0025
    # t2: after START a b, order 0 {a: 1, b: 1}, "b" never followed: p(a) = .49/3 + .5 * .5 + .0025
    # t3: after START a b a, "a" was followed by b once: order 1 {b: 1} over order 0 {a: 2, b: 1} (escape 1,
    #     one follower: weight 1/2): p(b) = (1 + 1/3) / 2 = 2/3, so .49/3 + .5 * 2/3 + .0025
    want = [0.99 / 3 + 0.0025, 0.49 / 3 + 0.0025, 0.49 / 3 + 0.25 + 0.0025, 0.49 / 3 + 0.5 * 2 / 3 + 0.0025]
    np.testing.assert_allclose(stream_true(static[np.arange(4), ids], ids, 1, 5, 1, w), want, rtol=1e-12)
    full = stream_probs(static, ids, 0, 1, 1, w)
    np.testing.assert_allclose(full[np.arange(4), ids], want, rtol=1e-12)
    np.testing.assert_allclose(full.sum(axis=1), 1.0, rtol=1e-12)
    # a chunk that starts later reads the same text before it
    np.testing.assert_allclose(stream_probs(static[2:], ids, 2, 1, 1, w), full[2:], rtol=1e-15)
