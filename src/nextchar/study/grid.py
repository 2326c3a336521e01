"""Study grids: parse and validate a TOML grid of named configurations into RunConfigs (one error lists all)."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from nextchar.config import PRESETS, RunConfig, load, parse_value
from nextchar.errors import UserError

GRID_KEYS = ("title", "variant", "defaults", "config")
POINT_KEYS = ("name", "preset", "set", "founding_top1", "founding_top3")
# The study owns these so that every point gets the same budget (and the same threads).
STUDY_OWNED = ("max_steps", "max_tokens", "max_minutes", "threads")


@dataclass
class Point:
    """One named configuration of a grid, validated into a RunConfig."""

    name: str
    dir: str  # run directory name inside the study: <variant>-<slug of name>
    grid: str
    preset: str
    overrides: dict[str, dict[str, Any]]  # [defaults], grid variant and `set`, in that order
    cfg: RunConfig
    founding: dict[str, float] = field(default_factory=dict)  # the founding table's numbers, when given


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "point"


def _sections(value: Any, origin: str, problems: list[str]) -> dict[str, dict[str, Any]]:
    """{"model.dropout" = 0.0} or {model = {dropout = 0.0}} -> {"model": {"dropout": 0.0}}."""
    out: dict[str, dict[str, Any]] = {}
    if not isinstance(value, dict):
        problems.append(f"{origin}: must be a table of section.key = value")
        return out

    def add(key: str, v: Any) -> None:
        section, _, name = key.partition(".")
        if not section or not name or "." in name or isinstance(v, dict):
            problems.append(f"{origin}: {key!r} is not section.key (e.g. \"model.dropout\" = 0.0)")
        elif section not in ("model", "train"):
            problems.append(f"{origin}: unknown section {section!r} in {key!r} (expected model or train)")
        elif section == "train" and name in STUDY_OWNED:
            problems.append(f"{origin}: {key!r} is set by the study (--budget-tokens/--budget-minutes, "
                            f"--threads) so every point gets the same")
        else:
            out.setdefault(section, {})[name] = v

    for k, v in value.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                add(f"{k}.{k2}", v2)
        else:
            add(k, v)
    return out


def _merge(*parts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    for p in parts:
        for section, values in p.items():
            out.setdefault(section, {}).update(values)
    return out


def parse_sets(sets: list[str]) -> dict[str, dict[str, Any]]:
    """--set section.key=value options (values parsed as TOML) -> {section: {key: value}}, checked like a grid."""
    flat: dict[str, Any] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set {item!r}: expected section.key=value, e.g. train.warmup_steps=20")
        flat[key.strip()] = parse_value(value.strip())
    problems: list[str] = []
    out = _sections(flat, "--set", problems)
    if problems:
        raise UserError("; ".join(problems))
    return out


def load_grid(path: str | Path, extra: dict[str, dict[str, Any]] | None = None) -> tuple[dict[str, Any], list[Point]]:
    """Parse and validate a grid TOML (every point's RunConfig is built); one UserError lists every problem.

    Each point is its preset, then the grid's [defaults], then `extra` (the command's --set), then the grid's
    `variant`, then the point's own `set`.
    """
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"{path}: cannot read grid ({e.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid TOML ({e})") from None
    problems: list[str] = []
    unknown = sorted(set(doc) - set(GRID_KEYS))
    if unknown:
        problems.append(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(GRID_KEYS)})")
    variant = doc.get("variant")
    if variant is not None and variant not in ("seed", "modern"):
        problems.append(f"variant must be 'seed' or 'modern', not {variant!r}")
        variant = None
    defaults = _sections(doc.get("defaults", {}), "[defaults]", problems)
    entries = doc.get("config", [])
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        problems.append("no configurations: add [[config]] tables with name and preset")
        entries = []
    points: list[Point] = []
    seen: dict[str, str] = {}
    for i, e in enumerate(entries, 1):
        name = e.get("name")
        where = f"config {i}" + (f" ({name!r})" if isinstance(name, str) else "")
        bad = sorted(set(e) - set(POINT_KEYS))
        if bad:
            problems.append(f"{where}: unknown key(s) {', '.join(bad)} (known: {', '.join(POINT_KEYS)})")
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{where}: needs a name")
            continue
        if name in seen:
            problems.append(f"{where}: duplicate name {name!r}")
            continue
        preset = e.get("preset")
        if preset not in PRESETS:
            problems.append(f"{where}: unknown preset {preset!r} (choose from: {', '.join(sorted(PRESETS))})")
            continue
        sets = _sections(e.get("set", {}), f"{where} set", problems)
        founding = {k[len("founding_"):]: e[k] for k in ("founding_top1", "founding_top3") if k in e}
        if not all(isinstance(v, (int, float)) and 0 <= v <= 100 for v in founding.values()):
            problems.append(f"{where}: founding_top1/founding_top3 are percentages (0 to 100)")
        overrides = _merge(defaults, extra or {}, {"model": {"variant": variant}} if variant else {}, sets)
        try:
            cfg = load(None, None, None, base=_merge(copy.deepcopy(PRESETS[preset]), overrides))
        except UserError as err:
            problems.append(f"{where}: {err}")
            continue
        d = f"{cfg.model.variant}-{slug(name)}"
        if d in seen.values():
            problems.append(f"{where}: name {name!r} gives the same directory {d!r} as another configuration")
            continue
        seen[name] = d
        points.append(Point(name, d, str(path), preset, overrides, cfg, {k: float(v) for k, v in founding.items()}))
    if problems:
        raise UserError(f"{path}: " + "; ".join(problems))
    return {"path": str(path), "title": str(doc.get("title", path.stem)), "variant": variant}, points
