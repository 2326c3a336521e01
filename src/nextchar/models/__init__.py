"""Models shipped inside the package: `default/` is what commands use when no --run is given."""

from __future__ import annotations

from pathlib import Path

from nextchar.errors import UserError

DEFAULT = Path(__file__).parent / "default"


def default_model() -> Path:
    """The shipped default run directory (config.json, vocab.json, weights)."""
    if not (DEFAULT / "config.json").exists():
        raise UserError(f"no default model is shipped in {DEFAULT}; pass --run RUN_DIR")
    return DEFAULT
