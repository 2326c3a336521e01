"""Evaluation metrics computed by hand on a toy distribution, and where `nextchar eval` writes its results."""

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from nextchar import models
from nextchar.data import DataSet
from nextchar.engine.base import Predictor, window
from nextchar.errors import UserError
from nextchar.evaluate import eval_run, evaluate, format_table, results_path
from nextchar.vocab import Vocab

VOCAB = Vocab(["<unk>", "\n", " ", "a", "b"])  # ids 0..4; the newline (1) is never suggested
# The next-id distribution after each last id (START = "\n" before an empty history).
TABLE = {
    0: [0.2, 0.2, 0.2, 0.2, 0.2],
    1: [0.0, 0.1, 0.2, 0.6, 0.1],  # after the paragraph start: a, space, b
    2: [0.1, 0.1, 0.1, 0.4, 0.3],  # after a space: a, b, space
    3: [0.05, 0.3, 0.1, 0.15, 0.4],  # after a: b, a, space (the newline's 0.3 is never suggested)
    4: [0.0, 0.0, 0.5, 0.25, 0.25],  # after b: space, then a before b (equal: the lower id first)
}


class Toy(Predictor):
    def __init__(self):
        super().__init__(VOCAB, context=1)

    def logprobs(self, contexts):
        with np.errstate(divide="ignore"):
            return np.log(np.array([TABLE[int(window(h, 1, self.start_id)[-1])] for h in contexts]))


def toy_data(texts: dict[str, str]) -> DataSet:
    arrays = {(lang, "dev"): VOCAB.encode(t) for lang, t in texts.items()}
    return DataSet(Path("toy"), VOCAB, {}, list(texts), arrays)


def test_metrics_by_hand():
    ds = toy_data({"xx": "ab a\nb", "yy": "bb"})
    res = evaluate(Toy(), ds, "dev", positions=100)  # more positions than characters: every one
    xx, yy = res["languages"]["xx"], res["languages"]["yy"]
    # xx: a after START (p .6, top-1), b after a (.4, top-1), space after b (.5, top-1), a after space (.4,
    # top-1), newline after a (.3: never suggested, a miss), b after the newline (.1: third)
    assert (xx["n"], xx["top1"], xx["top3"]) == (6, 4 / 6, 5 / 6)
    assert xx["ce"] == pytest.approx(-(math.log(.6) + math.log(.4) + math.log(.5) + math.log(.4) + math.log(.3)
                                       + math.log(.1)) / 6)
    assert xx["bpc"] == pytest.approx(xx["ce"] / math.log(2))
    # yy: b after START (.1, third), b after b (.25: third, after the equal a with the lower id)
    assert (yy["n"], yy["top1"], yy["top3"]) == (2, 0.0, 1.0)
    assert yy["ce"] == pytest.approx(-(math.log(.1) + math.log(.25)) / 2)
    assert res["macro"]["top1"] == pytest.approx((4 / 6 + 0) / 2) and res["micro"]["top1"] == pytest.approx(4 / 8)
    assert res["macro"]["top3"] == pytest.approx((5 / 6 + 1) / 2) and res["micro"]["top3"] == pytest.approx(7 / 8)
    assert res["micro"]["ce"] == pytest.approx((6 * xx["ce"] + 2 * yy["ce"]) / 8)
    table = format_table(res)
    assert "xx" in table and "66.67%" in table and "macro" in table


def test_positions_are_evenly_spaced_and_see_their_own_past_only():
    res = evaluate(Toy(), toy_data({"xx": "ab a\nb"}), "dev", positions=3)  # positions 1, 3, 5
    m = res["languages"]["xx"]
    assert (m["n"], m["top1"], m["top3"]) == (3, 2 / 3, 1.0)
    assert m["ce"] == pytest.approx(-(math.log(.4) + math.log(.4) + math.log(.1)) / 3)


def test_errors():
    other = DataSet(Path("other"), Vocab(["<unk>", "\n", "z"]), {}, ["xx"], {})
    with pytest.raises(UserError, match="differs from the model's"):
        evaluate(Toy(), other, "dev")
    with pytest.raises(UserError, match="empty for every language"):
        evaluate(Toy(), toy_data({"xx": ""}), "dev")


def test_results_go_where_asked_and_never_into_a_shipped_model(tiny_run, tiny_data_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    res = eval_run(run, "dev", tiny_data_dir, positions=10, out=tmp_path / "r.json")
    assert res["out"] == str(tmp_path / "r.json") and (tmp_path / "r.json").exists()
    assert not (run / "eval_dev.json").exists()
    eval_run(run, "dev", positions=10)  # the data found from the run's own description
    assert (run / "eval_dev.json").exists()
    monkeypatch.chdir(tmp_path)
    assert results_path(models.DEFAULT, "test") == tmp_path / "eval_test.json"
    assert results_path(run, "test", tmp_path) == tmp_path / "eval_test.json"
    with pytest.raises(UserError, match="--split"):
        eval_run(run, "valid")


MARKED = Vocab(["<unk>", "\n", " ", "a", "\u0995", "\u09be"])  # Bengali KA and the vowel sign AA (Mc)


class MarkToy(Predictor):
    """Always ranks the vowel sign first, then KA, then a space."""

    def __init__(self):
        super().__init__(MARKED, context=1)

    def logprobs(self, contexts):
        return np.log(np.tile([0.01, 0.04, 0.15, 0.1, 0.3, 0.4], (len(contexts), 1)))


def test_evaluation_scores_what_the_product_can_show():
    """The sign after a space or the paragraph start is never shown, so never a hit; after KA it is."""
    text = "\u0995\u09be \u09be\u0995 a\u09be"
    arr = MARKED.encode(text)
    ds = DataSet(Path("toy"), MARKED, {}, ["bn"], {("bn", "dev"): arr})
    m = evaluate(MarkToy(), ds, "dev", positions=100)["languages"]["bn"]
    # shown: KA, space, a at the start; sign, KA, space after KA; KA, space, a after a space or "a"
    # targets: KA (start: 1st), sign (after KA: 1st), space (after the sign, whose class is Bengali: sign, KA,
    # space: 3rd), sign (after a space: never shown), KA (after the sign: 2nd), space (after KA: 3rd), a (after a
    # space: 3rd), sign (after a Latin letter: never shown)
    assert (m["n"], m["top1"], m["top3"]) == (8, 2 / 8, 6 / 8)
    p = MarkToy()
    prefixes = [text[:i] for i in range(len(text))]
    hits = [text[i] in [c for c, _ in r] for i, r in enumerate(p.topk_batch(prefixes, 3))]
    assert sum(hits) / len(hits) == m["top3"]  # one code path: what topk_batch shows


def test_evaluation_hits_are_the_suggestions_of_topk_batch(tiny_run, tiny_data_dir):
    from nextchar import engine
    from nextchar.data import eval_positions, open_data

    pred, ds = engine.load(tiny_run), open_data(tiny_data_dir)
    res = evaluate(pred, ds, "dev", positions=40)
    for lang in ("bn", "fr", "emoji"):
        arr = ds.split(lang, "dev")
        pos = eval_positions(len(arr), 40).tolist()
        shown = pred.topk_batch([pred.vocab.decode(arr[:p]) for p in pos], 3)
        hits = [pred.vocab.chars[arr[p]] in [c for c, _ in r] for p, r in zip(pos, shown)]
        assert res["languages"][lang]["top3"] == sum(hits) / len(hits), lang


def test_progress_is_reported_per_batch():
    seen = []
    ds = toy_data({"xx": "ab a\nb" * 10, "yy": "bb"})
    evaluate(Toy(), ds, "dev", positions=100, batch_size=16, progress=lambda lang, n: seen.append((lang, n)))
    assert seen == [("xx", 16), ("xx", 16), ("xx", 16), ("xx", 12), ("yy", 2)]
    with pytest.raises(UserError, match="positions 0: must be at least 1"):
        evaluate(Toy(), ds, "dev", positions=0)
    with pytest.raises(UserError, match="batch_size: expected a whole number"):
        evaluate(Toy(), ds, "dev", batch_size=None)


# -- streaming --------------------------------------------------------------------------------------------------


def test_streaming_evaluation_equals_a_hand_computation():
    from nextchar.adapt import WEIGHTS, cache_counts, mix
    from nextchar.engine.base import suggestible_mask
    from nextchar.evaluate import evaluate_stream

    ds = toy_data({"xx": "ab ab aab", "yy": "ba"})
    res = evaluate_stream(Toy(), ds, "dev", chars=7, batch_size=3)
    assert res["mode"] == "stream" and res["chars"] == 7 and res["languages"]["yy"]["n"] == 2
    ok = suggestible_mask(VOCAB)
    for lang, text in (("xx", "ab ab a"), ("yy", "ba")):  # the first 7 characters, all when shorter
        ids = VOCAB.encode(text)
        hits1 = hits3 = nats = s1 = s3 = snats = 0.0
        for t, y in enumerate(ids.tolist()):
            p = np.array(TABLE[int(ids[t - 1]) if t else 1])  # the model after the last id (START first)
            q = mix(p, cache_counts(np.concatenate(([1], ids[:t])), 5, WEIGHTS.max_order, 1), WEIGHTS, 1)
            for dist, acc in ((q, "adapted"), (p, "static")):
                order = [i for i in np.argsort(-dist, kind="stable") if ok[i]][:3]
                h1, h3, nl = float(order[0] == y), float(y in order), -math.log(dist[y])
                if acc == "adapted":
                    hits1, hits3, nats = hits1 + h1, hits3 + h3, nats + nl
                else:
                    s1, s3, snats = s1 + h1, s3 + h3, snats + nl
        n = len(ids)
        got = res["languages"][lang]
        assert got["top1"] == pytest.approx(hits1 / n) and got["top3"] == pytest.approx(hits3 / n)
        assert got["bpc"] == pytest.approx(nats / n / math.log(2), rel=1e-9)
        assert got["static"]["bpc"] == pytest.approx(snats / n / math.log(2), rel=1e-9)
        assert got["static"]["top1"] == pytest.approx(s1 / n)
    assert res["macro"]["bpc"] == pytest.approx(np.mean([r["bpc"] for r in res["languages"].values()]))
    assert evaluate_stream(Toy(), ds, "dev", chars=7, adapt=False)["languages"]["xx"]["bpc"] == pytest.approx(
        res["languages"]["xx"]["static"]["bpc"])


def test_streaming_count_model_equals_the_streaming_module(tiny_data_dir, tmp_path):
    """`nextchar eval --stream` of a count model gives streaming.stream_counts' numbers."""
    from nextchar import engine
    from nextchar.counts import CountsConfig, PosteriorConfig
    from nextchar.data import open_data
    from nextchar.evaluate import evaluate_stream
    from nextchar.streaming import CountStream, stream_counts
    from nextchar.train_counts import train_counts

    train_counts(tiny_data_dir, tmp_path / "c", CountsConfig(order=4, posterior=PosteriorConfig(window=16)))
    pred, ds = engine.load(tmp_path / "c"), open_data(tiny_data_dir)
    res = evaluate_stream(pred, ds, "test", chars=90)
    for lang in ("en", "ru"):
        s = stream_counts(pred.model, ds.split(lang, "test")[:90].astype(np.int64))
        assert res["languages"][lang]["bpc"] == pytest.approx(CountStream.bpc(s.adapting), rel=1e-9)
        assert res["languages"][lang]["static"]["bpc"] == pytest.approx(CountStream.bpc(s.static), rel=1e-9)


def test_evaluation_refuses_data_of_another_vocabulary(tiny_run, tmp_path):
    """Ids of another vocabulary mean other characters: one error naming the data and both hashes, for the
    static and the streaming evaluation alike (DataSet.check_vocab, which mix and adapt.tune use too)."""
    from nextchar import engine
    from nextchar.evaluate import evaluate_stream

    pred = engine.load(tiny_run)
    ds = toy_data({"xx": "ab ab"})
    want = f"{ds.path}: data vocabulary ({ds.vocab.hash}) differs from the model's ({pred.vocab.hash})"
    for call in (lambda: evaluate(pred, ds, "dev"), lambda: evaluate_stream(pred, ds, "dev")):
        with pytest.raises(UserError) as e:
            call()
        assert str(e.value) == want
