"""Study findings: Pareto fronts, anomalies beyond the test noise, rank correlation and identical rows."""

import pytest

from nextchar.study import Row, anomalies, identical, pareto, spearman


def fake(name: str, params: int, top3: float, seconds: float, d: int = 128) -> Row:
    return Row(name=name, dir=name, variant="seed", model={"d_model": d, "n_layers": 2, "n_heads": 4, "d_ff": 512,
               "dropout": 0.1}, params=params, top1=top3 / 2, top3=top3, test_bpc=2.0, dev_loss=1.5,
               train_seconds=seconds, tokens=1, steps=1, n_test=10_000, langs={}, dev_curve=[], train_curve=[],
               latency_ms=1.0, device="cpu", threads=1)


def test_pareto_anomalies_and_rank_correlation():
    a, b, c, d = fake("a", 100, 0.50, 10), fake("b", 200, 0.60, 20), fake("c", 300, 0.55, 30), fake("d", 400, 0.70, 5)
    assert [r.name for r in pareto([a, b, c, d], "params")] == ["a", "b", "d"]
    assert [r.name for r in pareto([a, b, c, d], "train_seconds")] == ["d"]
    # c is bigger than b at the same width and 5 points worse (noise ~1.4): flagged against b
    assert [(x.name, y.name) for x, y in anomalies([a, b, c, d])] == [("c", "b")]
    assert anomalies([a, b, fake("e", 300, 0.595, 30)]) == []  # within the noise
    assert anomalies([b, fake("w", 300, 0.50, 30, d=256)]) == []  # another width
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    a.langs = b.langs = {"en": {"top1": 0.1, "top3": 0.3, "n": 5}}
    c.langs = {"en": {"top1": 0.1, "top3": 0.4, "n": 5}}
    assert identical([a, b, c, d]) == [[a, b]]  # d has no per-language results: never grouped
