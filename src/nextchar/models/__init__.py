"""Models shipped inside the package, by name: `default/` is what commands use when no --run is given."""

from __future__ import annotations

from pathlib import Path

from nextchar.errors import UserError

ROOT = Path(__file__).parent
DEFAULT = ROOT / "default"


def names() -> list[str]:
    """Names of the shipped models (folders here with a config.json)."""
    return sorted(d.name for d in ROOT.iterdir() if (d / "config.json").is_file())


def find(name: str) -> Path | None:
    """The folder of a shipped model by name, or None."""
    folder = ROOT / name
    return folder if name in names() else None


def default_model() -> Path:
    """The shipped default model's folder (config.json, vocab.json, best weights)."""
    if not (DEFAULT / "config.json").exists():
        raise UserError(f"no default model is shipped in {DEFAULT}; pass --run RUN_DIR")
    return DEFAULT


def is_shipped(path: str | Path) -> bool:
    """Whether path lies inside the installed package's models (never a place to write results)."""
    return Path(path).resolve().is_relative_to(ROOT.resolve())
