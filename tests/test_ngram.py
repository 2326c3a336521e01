"""Tests of the modified Kneser-Ney n-gram: hand-computed probabilities, normalization, fast paths, persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nextchar.errors import UserError
from nextchar.ngram import NGramModel, estimate_discounts

# Tiny corpus for the hand computations, V = 4 (id 0 never occurs). Written out, bigram by bigram:
#   2>1 1>2 2>1 1>2 2>1 1>3 3>2 2>3 3>1 1>2 2>1 1>3
HAND = np.array([2, 1, 2, 1, 2, 1, 3, 2, 3, 1, 2, 1, 3])


def _ids(*xs: int) -> np.ndarray:
    return np.array(xs, dtype=np.int64)


def _unigram_by_hand() -> np.ndarray:
    # Continuation counts = distinct left neighbours, the sequence start counting as one ("^"):
    #   1 follows {2, 3} -> 2;  2 follows {^, 1, 3} -> 3;  3 follows {1, 2} -> 2;  0 never occurs.
    # Count-of-counts n1=0 n2=2 n3=1 n4=0: Y = 0/(0+4) = 0 gives D1 = 0, D2 = 2, D3 = 3, none inside (0, k),
    # so every discount falls back to (0.5, 1.0, 1.5).
    total = 2 + 3 + 2
    own = {1: 2 - 1.0, 2: 3 - 1.5, 3: 2 - 1.0}
    gamma = (1.0 + 1.5 + 1.0) / total  # = 0.5
    p = np.full(4, gamma / 4)
    for w, x in own.items():
        p[w] += x / total
    return p


def test_discount_formula() -> None:
    # counts with n1=3, n2=1, n3=1, n4=1: Y = 3/5 = 0.6
    d1, d2, d3 = estimate_discounts(np.array([1, 1, 1, 2, 3, 4]))
    assert d1 == pytest.approx(1 - 2 * 0.6 * 1 / 3)  # 0.6
    assert d2 == pytest.approx(2 - 3 * 0.6 * 1 / 1)  # 0.2
    assert d3 == pytest.approx(3 - 4 * 0.6 * 1 / 1)  # 0.6


def test_hand_example_order2() -> None:
    m = NGramModel.fit([HAND], vocab_size=4, order=2)
    p1 = _unigram_by_hand()
    assert m.dist(_ids()) == pytest.approx(p1, abs=1e-12)
    # Bigram raw counts: (2,1)=4 (1,2)=3 (1,3)=2 (2,3)=1 (3,2)=1 (3,1)=1 -> n1=3 n2=1 n3=1 n4=1,
    # Y = 3/5 = 0.6, D1 = 1 - 2*0.6*1/3 = 0.6, D2 = 2 - 3*0.6*1/1 = 0.2, D3+ = 3 - 4*0.6*1/1 = 0.6
    assert m.discounts[1] == pytest.approx((0.6, 0.2, 0.6))
    # context 1: c(1,2)=3 -> 3-0.6, c(1,3)=2 -> 2-0.2, total 5, gamma = (0.6 + 0.2)/5 = 0.16
    want = 0.16 * p1
    want[2] += 2.4 / 5
    want[3] += 1.8 / 5
    assert m.dist(_ids(1)) == pytest.approx(want, abs=1e-12)
    # context 2: c(2,1)=4 -> 3.4, c(2,3)=1 -> 0.4, total 5, gamma = (0.6 + 0.6)/5 = 0.24
    want = 0.24 * p1
    want[1] += 3.4 / 5
    want[3] += 0.4 / 5
    assert m.dist(_ids(2)) == pytest.approx(want, abs=1e-12)
    # context 3: c(3,1)=c(3,2)=1 -> 0.4 each, total 2, gamma = 1.2/2 = 0.6
    want = 0.6 * p1
    want[1] += 0.4 / 2
    want[2] += 0.4 / 2
    assert m.dist(_ids(3)) == pytest.approx(want, abs=1e-12)
    # context 0 was never seen: back off to the unigram level; older ids don't matter at order 2
    assert m.dist(_ids(0)) == pytest.approx(p1, abs=1e-12)
    assert m.dist(_ids(3, 3, 0, 2)) == pytest.approx(m.dist(_ids(2)), abs=1e-15)


def test_hand_example_order3() -> None:
    m = NGramModel.fit([HAND], vocab_size=4, order=3)
    p1 = _unigram_by_hand()
    # Level 2 continuation counts, left neighbours of each bigram occurrence (^ = sequence start):
    #   (2,1): ^,1,1,1 -> 2   (1,2): 2,2,3 -> 2   (1,3): 2,2 -> 1   (3,2): 1   (2,3): 3   (3,1): 2 -> 1 each
    # n1=4 n2=2 n3=0 n4=0: Y = 4/8 = 0.5, D1 = 1 - 2*0.5*2/4 = 0.5, D2 = 2 - 0 = 2 (not < 2) -> 1.0,
    # D3+ has n3 = 0 in its denominator -> 1.5
    assert m.discounts[1] == pytest.approx((0.5, 1.0, 1.5))
    # context 1 at level 2: (1,2)=2 -> 2-1.0, (1,3)=1 -> 1-0.5, total 3, gamma = (1.0 + 0.5)/3 = 0.5
    p2 = 0.5 * p1
    p2[2] += 1.0 / 3
    p2[3] += 0.5 / 3
    # Trigram raw counts: 212:2 121:3 213:2 132:1 323:1 231:1 312:1 -> n1=4 n2=2 n3=1 n4=0,
    # Y = 4/(4+4) = 0.5, D1 = 1 - 2*0.5*2/4 = 0.5, D2 = 2 - 3*0.5*1/2 = 1.25, D3+ = 3 - 0 = 3 -> 1.5
    assert m.discounts[2] == pytest.approx((0.5, 1.25, 1.5))
    # context (2,1): (2,1,2)=2 and (2,1,3)=2 -> 0.75 each, total 4, gamma = 2*1.25/4 = 0.625
    want = 0.625 * p2
    want[2] += 0.75 / 4
    want[3] += 0.75 / 4
    assert m.dist(_ids(2, 1)) == pytest.approx(want, abs=1e-12)
    # (0,1) was never seen as a context: back off to its longest seen suffix, (1)
    assert m.dist(_ids(0, 1)) == pytest.approx(p2, abs=1e-12)
    assert m.dist(_ids(1)) == pytest.approx(p2, abs=1e-12)


def test_counts_do_not_cross_sequence_boundaries() -> None:
    apart = NGramModel.fit([_ids(1, 2), _ids(3, 1)], vocab_size=4, order=2)
    joined = NGramModel.fit([_ids(1, 2, 3, 1)], vocab_size=4, order=2)
    # 2 is never followed by anything when the sequences are apart, so it backs off to the unigram level
    assert apart.dist(_ids(2)) == pytest.approx(apart.dist(_ids()), abs=1e-15)
    assert joined.dist(_ids(2))[3] > apart.dist(_ids(2))[3] + 0.1


def _markov_corpus(rng: np.random.Generator, v: int, lengths: list[int]) -> list[np.ndarray]:
    """Sequences from a random sparse order-2 chain, so long n-grams repeat like in text."""
    nxt = rng.integers(1, v - 1, size=(v, v, 3))  # ids 0 and v-1 never occur in training
    out = []
    for n in lengths:
        s = [1, 2]
        for _ in range(n - 2):
            s.append(int(nxt[s[-2], s[-1], rng.integers(3)]))
        out.append(np.array(s, dtype=np.uint16))
    return out


@pytest.fixture(scope="module")
def corpus() -> list[np.ndarray]:
    return _markov_corpus(np.random.default_rng(0), 12, [1500, 700, 40, 3])


@pytest.fixture(scope="module")
def model8(corpus: list[np.ndarray]) -> NGramModel:
    return NGramModel.fit(corpus, vocab_size=12, order=8)


def _contexts(corpus: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    ctxs = [_ids(), _ids(0), _ids(11), _ids(11, 11, 11), rng.integers(0, 12, 30)]  # empty, unseen
    for _ in range(60):
        s = corpus[int(rng.integers(2))]
        end = int(rng.integers(0, s.size))
        ctxs.append(s[max(0, end - int(rng.integers(0, 15))) : end])  # seen, of every length incl. > order
        ctxs.append(rng.integers(0, 12, int(rng.integers(0, 10))))  # mostly unseen
    return ctxs


@pytest.mark.parametrize("order", range(1, 9))
def test_distributions_normalized_and_positive(corpus, model8, order) -> None:
    m = model8.with_order(order)
    ctxs = _contexts(corpus, np.random.default_rng(order))
    for c in ctxs:
        p = m.dist(c)
        assert p.shape == (12,) and p.dtype == np.float64
        assert abs(p.sum() - 1) < 1e-9
        assert (p > 0).all()
    batch = m.dist_batch(ctxs)
    assert batch.shape == (len(ctxs), 12)
    np.testing.assert_allclose(batch, np.stack([m.dist(c) for c in ctxs]), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("order", [1, 2, 5, 8])
def test_logprob_next_matches_dist(corpus, model8, order) -> None:
    m = model8.with_order(order)
    seq = np.concatenate([corpus[1][:300], _ids(11, 0), corpus[0][:100]])  # includes unseen ids
    positions = np.arange(seq.size)
    want = [np.log(m.dist(seq[:p])[seq[p]]) for p in positions]
    np.testing.assert_allclose(m.logprob_next(seq, positions), want, rtol=1e-12, atol=1e-12)


def test_only_last_order_minus_one_ids_matter(model8) -> None:
    m = model8.with_order(4)
    ctx = _ids(5, 3, 7, 1, 2, 3, 4)
    assert np.array_equal(m.dist(ctx), m.dist(ctx[-3:]))


@pytest.mark.parametrize("order", range(1, 8))
def test_with_order_equals_direct_fit(corpus, model8, order) -> None:
    direct = NGramModel.fit(corpus, vocab_size=12, order=order)
    view = model8.with_order(order)
    assert view.order == order and view.vocab_size == 12
    np.testing.assert_allclose(view.discounts, direct.discounts, rtol=1e-13)
    for c in _contexts(corpus, np.random.default_rng(100 + order))[:40]:
        np.testing.assert_allclose(view.dist(c), direct.dist(c), rtol=1e-13, atol=0)


def test_save_load_round_trip(tmp_path: Path, corpus, model8) -> None:
    for order in (8, 3):
        m = model8.with_order(order)
        path = tmp_path / f"kn{order}.npz"
        m.save(path)
        back = NGramModel.load(path)
        assert (back.order, back.vocab_size) == (order, 12)
        assert back.discounts == m.discounts
        for c in _contexts(corpus, np.random.default_rng(7))[:50]:
            assert np.array_equal(back.dist(c), m.dist(c))
    assert [p.name for p in tmp_path.iterdir()] != [] and not list(tmp_path.glob("*.tmp"))


def test_load_errors_name_the_file(tmp_path: Path, model8) -> None:
    missing = tmp_path / "nope.npz"
    with pytest.raises(UserError, match="nope.npz"):
        NGramModel.load(missing)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip file")
    with pytest.raises(UserError, match="garbage.npz"):
        NGramModel.load(garbage)
    good = tmp_path / "good.npz"
    model8.with_order(3).save(good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated.npz"):
        NGramModel.load(truncated)
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF  # inside an array: the zip CRC or a structure check must catch it
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(UserError, match="flipped.npz"):
        NGramModel.load(bad)


def test_user_errors_for_bad_input(model8) -> None:
    with pytest.raises(UserError, match="outside"):
        model8.dist(_ids(12))
    with pytest.raises(UserError, match="outside"):
        NGramModel.fit([_ids(1, 2, 5)], vocab_size=4, order=2)
    with pytest.raises(UserError, match="no training tokens"):
        NGramModel.fit([np.zeros(0, dtype=np.int64)], vocab_size=4)
    with pytest.raises(UserError, match="with_order"):
        model8.with_order(9)
    with pytest.raises(UserError, match="positions"):
        model8.logprob_next(_ids(1, 2, 3), _ids(3))
