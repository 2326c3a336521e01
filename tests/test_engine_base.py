"""The shared rules of engine/base.py: the typing window, suggestion masks, ranking, the one entry for text."""

import numpy as np
import pytest

from nextchar.engine import base
from nextchar.engine.base import START, Predictor, rank, top_ids, window, window_start
from nextchar.errors import UserError
from nextchar.vocab import Vocab

VOCAB = Vocab(["<unk>", "\t", "\n", " ", "a", "b", "c", "\u2028"])


class Table(Predictor):
    """A toy backend: the next-id distribution depends on the last id only (START before an empty history)."""

    def __init__(self):
        super().__init__(VOCAB, context=2)
        rng = np.random.default_rng(0)
        self.table = np.log(rng.dirichlet(np.ones(VOCAB.size), size=VOCAB.size))  # (V, V)

    def logprobs(self, contexts):
        return np.stack([self.table[window(h, 1, self.start_id)[-1]] for h in contexts])


def test_window_is_start_plus_history_cut_by_the_stride_rule():
    arr = np.arange(10, 20)
    assert window(arr[:0], 4, 1).tolist() == [1]
    assert window(arr[:2], 4, 1).tolist() == [1, 10, 11]
    assert window(arr[:3], 4, 1).tolist() == [1, 10, 11, 12]
    assert window(arr[:4], 4, 1).tolist() == [10, 11, 12, 13]
    assert window(arr, 4, 1).tolist() == [16, 17, 18, 19]
    # stride 3: the start stays put, then jumps 3 ids when the window is full
    starts = [window_start(n, 4, 3) for n in range(1, 12)]
    assert starts == [0, 0, 0, 0, 3, 3, 3, 6, 6, 6, 9]
    for n in range(1, 40):
        a = window_start(n, 8, 3)
        assert a % 3 == 0 and 8 - 3 < n - a <= 8 or (a == 0 and n <= 8)


def test_suggestible_mask_drops_specials_and_controls():
    assert base.suggestible_mask(VOCAB).tolist() == [False, False, False, True, True, True, True, False]


def test_rank_breaks_ties_by_lower_id_like_a_stable_sort():
    rng = np.random.default_rng(0)
    probs = rng.integers(0, 4, size=(200, 12)).astype(np.float32) / 10  # many ties
    ok = np.ones(12, dtype=bool)
    ok[[0, 5]] = False
    letters = [chr(65 + i) for i in range(12)]
    want = np.argsort(-np.where(ok, probs, -1.0), axis=1, kind="stable")
    for k in (3, 9):  # the argmax passes and the sort
        got = rank(probs, ok, letters, k)
        assert [[c for c, _ in r] for r in got] == [[letters[j] for j in row] for row in want[:, :k]]
        assert top_ids(probs, ok, k).tolist() == want[:, :k].tolist()
    with pytest.raises(UserError, match="at least 1"):
        rank(probs, ok, letters, 0)


def test_encode_is_the_one_entry_for_text(monkeypatch):
    p = Table()
    assert p.encode("ab\U0001D11E").tolist() == [4, 5, 0]
    monkeypatch.setattr(base, "prepare_prefix", lambda s: s.replace("c", "a"))
    assert p.encode("cab").tolist() == [4, 4, 5]
    assert p.topk("c", 3) == p.topk("a", 3)  # every surface goes through it
    assert p.session().topk("xc", 2) == p.topk("xa", 2)


def test_the_default_incremental_interface_is_the_history():
    p = Table()
    state, lp = p.feed(p.start(), np.array([4, 5]))
    assert state.tolist() == [4, 5] and p.truncate(state, 1).tolist() == [4]
    np.testing.assert_array_equal(lp, p.table[5])
    np.testing.assert_array_equal(p.feed(p.start(), np.zeros(0, dtype=np.int64))[1], p.table[VOCAB.stoi[START]])
    s = p.session()
    for prefix in ["a", "ab", "a", "", "cab"]:
        np.testing.assert_array_equal(s.logprobs(prefix), p.logprobs([p.encode(prefix)])[0])
    assert (s.recomputes, s.fed, s.stride) == (0, 0, 1) and p.windowed(2) is p


def test_topk_of_a_toy_table_by_hand():
    p = Table()
    d = np.exp(p.table[VOCAB.stoi["a"]])
    order = [i for i in np.argsort(-d, kind="stable") if i >= 3 and i != 7][:3]
    assert [c for c, _ in p.topk("ba", 3)] == [VOCAB.chars[i] for i in order]
    np.testing.assert_allclose([q for _, q in p.topk("ba", 3)], d[order])
