"""Study grids: every kind of bad grid is one error before anything trains; the shipped grids are the founding table."""

from pathlib import Path

import pytest
import torch

from nextchar.errors import UserError
from nextchar.study import load_grid, run_study

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]

TINY_GRID = """
title = "tiny"
variant = "modern"

[defaults]
"train.eval_positions" = 10

[[config]]
name = "Tiny Two"
preset = "tiny"
founding_top1 = 40.0

[[config]]
name = "Tiny One"
preset = "tiny"
set = { model = { n_layers = 1 } }
founding_top1 = 30.0
"""
# tiny preset: batch 8 x context 32 = 256 characters per step, so 1,024 characters = 4 steps
ARGS = {"budget_tokens": 1024, "eval_positions": 15, "threads": 1, "dev_evals": 2, "progress": False}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("text,needle", [
    (TINY_GRID.replace('preset = "tiny"\nfounding_top1 = 40.0', 'preset = "nope"'), "unknown preset 'nope'"),
    (TINY_GRID.replace("n_layers = 1", "wings = 1"), "unknown model key(s): wings"),
    (TINY_GRID.replace("founding_top1 = 30.0", "colour = 1"), "unknown key(s) colour"),
    (TINY_GRID + "\nextra = 1\n", "unknown key(s) extra"),
    (TINY_GRID.replace('"Tiny One"', '"Tiny Two"'), "duplicate name 'Tiny Two'"),
    ('title = "empty"\n', "no configurations"),
    ("title = 'x'\nconfig = []\n", "no configurations"),
    (TINY_GRID.replace("n_layers = 1", "n_layers = 0"), "n_layers must be >= 1"),
    (TINY_GRID.replace('"train.eval_positions" = 10', '"train.max_steps" = 10'), "set by the study"),
    (TINY_GRID.replace('"train.eval_positions"', '"optim.lr"'), "unknown section 'optim'"),
    ("[[config\n", "not valid TOML"),
])
def test_bad_grid_is_one_error_before_training(text, needle, tiny_data_dir, tmp_path):
    grid = write(tmp_path / "bad.toml", text)
    with pytest.raises(UserError) as e:
        run_study(grid, tiny_data_dir, tmp_path / "st", **ARGS)
    assert needle in str(e.value) and str(e.value).startswith(str(grid))
    assert not (tmp_path / "st").exists()


def test_shipped_grids_are_the_founding_table_plus_five():
    seed_meta, seed = load_grid(ROOT / "configs/study-seed.toml")
    modern_meta, modern = load_grid(ROOT / "configs/study-modern.toml")
    assert (seed_meta["variant"], modern_meta["variant"]) == ("seed", "modern")
    assert len(seed) == len(modern) == 13 and [p.name for p in seed] == [p.name for p in modern]
    shapes = {p.name: (p.cfg.model.d_model, p.cfg.model.n_layers, p.cfg.model.n_heads, p.cfg.model.d_ff,
                       p.cfg.model.dropout) for p in seed}
    assert shapes["12 Layers (Deep)"] == (128, 12, 4, 512, 0.1)
    assert shapes["Large Embeddings"] == (256, 8, 4, 512, 0.1)
    assert shapes["Small Model"] == (64, 4, 4, 256, 0.1)
    assert shapes["12 Layers, 8 Heads"] == (128, 12, 8, 512, 0.1)
    assert len([p for p in seed if p.founding]) == 8
    assert all(p.cfg.model.variant == "seed" for p in seed) and all(p.cfg.model.variant == "modern" for p in modern)
    assert [shapes[p.name] for p in modern] == [(p.cfg.model.d_model, p.cfg.model.n_layers, p.cfg.model.n_heads,
                                                 p.cfg.model.d_ff, p.cfg.model.dropout) for p in modern]


