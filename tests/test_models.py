"""Models shipped in the package: found by name, small, and never written into."""

from nextchar import engine, models


def test_shipped_default_model_loads_by_name_and_is_small():
    assert models.default_model() == models.DEFAULT and "default" in models.names()
    assert models.find("default") == models.DEFAULT and models.find("nope") is None and models.find("..") is None
    pred = engine.load("default")
    assert len(pred.topk("Happy New Yea", 3)) == 3 and pred.run_id == "default"
    assert sum(f.stat().st_size for f in models.DEFAULT.rglob("*") if f.is_file()) <= 10 * 2**20
    card = (models.DEFAULT / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "nextchar train" in card and len(pred.vocab.chars) == pred.vocab.size


def test_is_shipped(tmp_path):
    assert models.is_shipped(models.DEFAULT / "config.json") and not models.is_shipped(tmp_path)
