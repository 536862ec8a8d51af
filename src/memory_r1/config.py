"""Recipes: YAML files under `recipes/` hold every hyperparameter; code reads them through here.

`load_recipe(path, overrides)` reads a YAML mapping and applies dotted ``key=value`` overrides
(values parsed as YAML, so ``answer.top_k=10`` gives an int and ``judge.backend=none`` a string).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml


class RecipeError(ValueError):
    """A recipe that cannot be found, parsed or applied."""


def recipes_dir() -> Path:
    from memory_r1.paths import repo_root

    return repo_root() / "recipes"


def recipe_path(backbone: str, *parts: str) -> Path:
    """`recipes/{backbone}/{parts...}.yaml`, e.g. recipe_path("smollm2-135m", "eval")."""
    p = recipes_dir() / backbone / Path(*parts)
    return p.with_suffix(".yaml")


def set_dotted(cfg: dict, key: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict, creating levels as needed.

    >>> d = {"a": {"b": 1}}
    >>> set_dotted(d, "a.c.d", 2); d
    {'a': {'b': 1, 'c': {'d': 2}}}
    """
    parts = key.split(".")
    node = cfg
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise RecipeError(f"override {key!r}: {p!r} is a value, not a section")
        node = nxt
    node[parts[-1]] = value


def apply_overrides(cfg: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Return a copy of `cfg` with ``key=value`` overrides applied (YAML-typed values).

    >>> apply_overrides({"answer": {"top_k": 30}}, ["answer.top_k=10", "judge.backend=none"])
    {'answer': {'top_k': 10}, 'judge': {'backend': 'none'}}
    """
    out = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise RecipeError(f"override {item!r}: {exc}") from None
        set_dotted(out, key.strip(), value)
    return out


def load_recipe(path: Path | str, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe not found: {path}")
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(cfg, dict):
        raise RecipeError(f"{path}: a recipe is a mapping, got {type(cfg).__name__}")
    return apply_overrides(cfg, overrides)
