"""Predictor: the prediction rules (empty/long/unknown prefixes, no specials, distinct k) and file mode."""

import json

import numpy as np
import pytest
import torch

from nextchar.errors import UserError
from nextchar.predict import START, Predictor, context_ids, predict_file, split_context

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pred(tiny_run):
    return Predictor.load(tiny_run)


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
