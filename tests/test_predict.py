"""Predictor: the prediction rules (empty/long/unknown prefixes, no specials, distinct k) and file mode."""

import json

import numpy as np
import pytest
import torch

from nextchar.errors import UserError
from nextchar.predict import START, Predictor, context_ids, predict_file, split_context

torch.set_num_threads(1)


@pytest.fixture(scope="module", params=["tiny_run", "tiny_hash_run"])
def pred(request):
    """Each rule holds for a plain model and for one with hashed n-gram inputs (its own typing-session state)."""
    return Predictor.load(request.getfixturevalue(request.param))


def test_topk_is_k_distinct_sorted_probabilities(pred):
    out = pred.topk("Hello wor", 5)
    chars = [c for c, _ in out]
    probs = [p for _, p in out]
    assert len(set(chars)) == 5 and probs == sorted(probs, reverse=True)
    assert all(0 < p <= 1 for p in probs)


def test_distributions_sum_to_one(pred):
    d = pred.dist(["", "Привет", "שלום עול", "x" * 500])
    np.testing.assert_allclose(d.sum(axis=1), 1.0, rtol=1e-5)


def test_empty_prefix_and_long_prefix(pred):
    assert len(pred.topk("", 3)) == 3
    long = "The quick brown fox jumps. " * 20
    assert pred.topk(long, 3) == pred.topk(long[-pred.context:], 3)


def test_unknown_characters_map_to_unk_and_specials_never_suggested(pred):
    ids = context_ids(pred.vocab, "ab\U0001D11E", pred.context)
    assert ids[0] == pred.vocab.stoi[START] and ids[-1] == 0
    for prefix in ["", "\U0001D11E\U0001D11E", "zzz", "日本"]:
        for c, _ in pred.topk(prefix, 10):
            assert c not in ("<unk>", "\n") and len(c) == 1


def test_split_context_uses_only_the_same_split():
    arr = np.arange(10, 20)
    assert split_context(arr, 0, 4, 1).tolist() == [1]
    assert split_context(arr, 2, 4, 1).tolist() == [1, 10, 11]
    assert split_context(arr, 3, 4, 1).tolist() == [1, 10, 11, 12]
    assert split_context(arr, 4, 4, 1).tolist() == [10, 11, 12, 13]
    assert split_context(arr, 9, 4, 1).tolist() == [15, 16, 17, 18]


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


def test_batching_does_not_change_answers(pred):
    prefixes = [f"line {i} of text" for i in range(37)]
    small, big = pred.topk_batch(prefixes, 3, batch_size=5), pred.topk_batch(prefixes, 3, batch_size=512)
    assert [[c for c, _ in r] for r in small] == [[c for c, _ in r] for r in big]
    np.testing.assert_allclose([[p for _, p in r] for r in small], [[p for _, p in r] for r in big], rtol=1e-5)


def test_errors(pred, tmp_path):
    with pytest.raises(UserError, match="at least 1"):
        pred.topk("a", 0)
    with pytest.raises(UserError, match="not found"):
        Predictor.load(tmp_path / "nope")
    with pytest.raises(UserError, match="cannot read"):
        predict_file(pred, tmp_path / "missing.txt", tmp_path / "o.txt")


# -- fast paths: shared windows, incremental sessions ------------------------------------------------

TEXT = ("Le vieux château dominait la vallée. The quick brown fox jumps over the lazy dog; "
        "Москва — столица России. Η Αθήνα είναι η πρωτεύουσα. 北京是中国的首都。") * 3


def probs_of(rows):
    return [[p for _, p in r] for r in rows]


def chars_of(rows):
    return [[c for c, _ in r] for r in rows]


def test_share_windows_links_each_context_to_one_that_begins_with_it():
    from nextchar.predict import share_windows

    ctx = [np.array(c) for c in ([1, 2, 3], [1, 2], [1, 2, 4], [1, 2, 3], [5], [1], [300, 2])]
    owner = share_windows(ctx)
    for i, o in enumerate(owner):
        assert ctx[o][: len(ctx[i])].tolist() == ctx[i].tolist()
    assert owner[1] in (0, 2, 3) and owner[5] in (0, 2, 3) and owner[4] == 4 and owner[6] == 6


def test_rank_breaks_ties_by_lower_id_like_a_stable_sort():
    from nextchar.predict import rank

    rng = np.random.default_rng(0)
    probs = rng.integers(0, 4, size=(200, 12)).astype(np.float32) / 10  # many ties
    ok = np.ones(12, dtype=bool)
    ok[[0, 5]] = False
    chars = [chr(65 + i) for i in range(12)]
    got = rank(probs, ok, chars, 3)
    want = np.argsort(-np.where(ok, probs, -1.0), axis=1, kind="stable")[:, :3]
    assert [[c for c, _ in r] for r in got] == [[chars[j] for j in row] for row in want]


def test_typing_trace_batch_equals_one_prefix_at_a_time(pred):
    """Prefixes that begin one another share a forward pass; the answers are those of single calls."""
    prefixes = [TEXT[:n] for n in range(3 * pred.context)] + ["zz", "", TEXT[:5]]
    batch = pred.topk_batch(prefixes, 3, batch_size=7)
    single = [pred.topk(p, 3) for p in prefixes]
    assert chars_of(batch) == chars_of(single)
    np.testing.assert_allclose(probs_of(batch), probs_of(single), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(pred.dist(prefixes[:40]), pred.dist(prefixes[:40][::-1])[::-1], rtol=1e-4, atol=1e-7)


def keystrokes(text, backspace_every=11):
    """The prefixes a user produces typing text with a backspace now and then."""
    prefix, out = "", []
    for i, ch in enumerate(text):
        prefix = prefix[:-1] if i % backspace_every == backspace_every - 1 else prefix + ch
        out.append(prefix)
    return out


def test_session_equals_predictor_while_the_text_fits_the_context(pred):
    s = pred.session()
    prefixes = keystrokes(TEXT[: pred.context - 1]) + ["Le vieux XYZ", "Le", "Le", "", "Le vieux château"]
    for p in prefixes:
        got, want = s.topk(p, 3), pred.topk(p, 3)
        assert chars_of([got]) == chars_of([want])
        np.testing.assert_allclose(s.dist(p), pred.dist([p])[0], rtol=1e-4, atol=1e-6)
    assert s.recomputes == 2  # the first keystroke and the empty prefix; edits and backspaces truncate the cache


@pytest.mark.parametrize("stride", [None, 1, 5])
def test_session_past_the_context_uses_its_documented_window(pred, stride):
    from nextchar.predict import window_ids

    C = pred.context
    s = pred.session(stride)
    assert s.stride == (stride or C // 2)
    stride = s.stride
    prefixes = keystrokes(TEXT) + [TEXT[:200] + "X" + TEXT[201:260], TEXT[:10] + "Y" + TEXT[11:300]]
    for p in prefixes:
        win = window_ids(pred.vocab, p, C, stride)
        assert C - stride < len(win) <= C or len(win) == len(p) + 1
        np.testing.assert_allclose(s.logprobs(p), pred.logprobs([win])[0], rtol=1e-4, atol=1e-5)
    if stride == 1:
        for p in prefixes[-20:]:
            assert chars_of([s.topk(p, 3)]) == chars_of([pred.topk(p, 3)])
    # typing on recomputes once per `stride` keystrokes past the context, not every keystroke
    s2 = pred.session(stride)
    for n in range(len(TEXT) + 1):
        s2.topk(TEXT[:n])
    assert s2.recomputes == 1 + -(-(len(TEXT) + 1 - C) // stride)  # the first keystroke, then each window jump
    assert s2.fed < len(TEXT) + s2.recomputes * C


def test_file_mode_with_a_stride_shows_what_a_typing_session_shows(pred, tmp_path):
    prefixes = [TEXT[:n] for n in range(0, len(TEXT), 3)]
    s = pred.session()
    typed = [s.topk(p, 3) for p in prefixes]
    batch = pred.topk_batch(prefixes, 3, stride=s.stride)
    assert chars_of(batch) == chars_of(typed)
    np.testing.assert_allclose(probs_of(batch), probs_of(typed), rtol=1e-4, atol=1e-6)
    src = tmp_path / "in.txt"
    src.write_text("\n".join(prefixes) + "\n", encoding="utf-8")
    predict_file(pred, src, tmp_path / "out.txt", 3, stride=s.stride)
    assert (tmp_path / "out.txt").read_text(encoding="utf-8").splitlines() == ["".join(r) for r in chars_of(typed)]
    with pytest.raises(UserError, match="stride"):
        pred.topk_batch(["a"], 3, stride=pred.context + 1)


def test_backends_and_export_folders_errors(tiny_run, tmp_path):
    with pytest.raises(UserError, match="unknown backend"):
        Predictor.load(tiny_run, backend="tensorflow")
    with pytest.raises(UserError, match="not an export folder"):
        Predictor.load(tiny_run, backend="onnx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not an export folder"):
        Predictor.load(tmp_path / "empty", backend="onnx")
