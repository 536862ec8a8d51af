"""Recipes: YAML files under `recipes/` hold every hyperparameter; code reads them through here.

`load_recipe(path, overrides)` reads a YAML mapping and applies dotted ``key=value`` overrides
(values parsed as YAML, so ``answer.top_k=10`` gives an int and ``judge.backend=none`` a string).
`load_eval_recipe` then validates it against the schema in :mod:`memory_r1.recipes` (every default
filled in), as :func:`memory_r1.train.stages.train_recipe` does a training recipe against the model
its stage declares (both through :func:`validate_recipe`); a key the schema does not have, a value of the
wrong type or a key of another LLM backend is a :class:`RecipeError` of one line naming the file,
the override if one caused it, and the dotted key::

    recipes/smollm2-135m/eval.yaml: unknown key answer_agent.topk (answer_agent has: ...)
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

import yaml

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

    from memory_r1.recipes import EvalRecipe

    M = TypeVar("M", bound=BaseModel)


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


# ---------------------------------------------------------------------------------- validation


def _section_fields(model: type, loc: Sequence[str]) -> list[str] | None:
    """The keys of the section at ``loc`` of ``model`` (None when that is no single section)."""
    import typing

    from pydantic import BaseModel

    node: Any = model
    for part in loc:
        field = node.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        models = [a for a in typing.get_args(ann) or (ann,) if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(models) != 1:
            return None
        node = models[0]
    return list(node.model_fields)


def _dotted(loc: Sequence[Any]) -> list[str]:
    """pydantic's error location as our key path: the LLM backend a union error is tagged with is
    not a key, a list index is written ``[i]``.

    >>> _dotted(("llm", "hf", "dtype")), _dotted(("ingest", "extract", "stop", 0))
    (['llm', 'dtype'], ['ingest', 'extract', 'stop[0]'])
    """
    from memory_r1.recipes import LLM_OPTIONS

    parts: list[str] = []
    for i, p in enumerate(loc):
        if isinstance(p, int) and parts:
            parts[-1] += f"[{p}]"
        elif not (i == 1 and loc[0] == "llm" and p in LLM_OPTIONS):
            parts.append(str(p))
    return parts


def describe_errors(exc: ValidationError, model: type) -> tuple[str, set[str]]:
    """One line for all of a validation's errors, each naming its dotted key, and the keys named."""
    import re

    out, keys = [], set()
    for err in exc.errors(include_url=False):
        parts = _dotted(err["loc"])
        path = ".".join(parts)
        keys.add(path)
        got = err.get("input")
        if err["type"] == "extra_forbidden":
            have = _section_fields(model, parts[:-1])
            where = ".".join(parts[:-1]) or "the recipe"
            out.append(f"unknown key {path}" + (f" ({where} has: {', '.join(have)})" if have else ""))
        elif err["type"] == "missing":
            out.append(f"missing key {path}")
        elif err["type"] == "recipe":  # ours: it names its keys when it is about several
            keys.update(re.findall(r"[A-Za-z_]\w*(?:\.\w+)+", err["msg"]))
            out.append(err["msg"] if not path or path.split(".")[0] in err["msg"] else f"{path}: {err['msg']}")
        elif err["type"] in ("model_type", "dict_type", "model_attributes_type"):
            out.append(f"{path} is a section (a mapping of keys), got {got!r}")
        else:
            out.append(f"{path}: {err['msg'][0].lower()}{err['msg'][1:]}, got {got!r}")
    return "; ".join(out), keys


def _culprits(keys: set[str], overrides: Sequence[str]) -> list[str]:
    """The overrides that set one of ``keys``, or a key above or below one.

    >>> _culprits({"llm.dtyp"}, ["judge.backend=none", "llm.dtyp=x", "llm={backend: hf}"])
    ['llm.dtyp=x', 'llm={backend: hf}']
    """
    hits = []
    for item in overrides:
        key = item.split("=", 1)[0].strip().lstrip("+")
        if any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in keys):
            hits.append(item)
    return hits


def validate_recipe(model: type[M], raw: dict, where: str | Path, overrides: Sequence[str] = (),
                    apply: Callable[[dict, list[str]], dict] | None = None) -> M:
    """``raw`` (a recipe file's mapping), then with ``overrides`` applied (by ``apply``, default
    :func:`apply_overrides`), validated against ``model``; a refusal is a :class:`RecipeError` naming
    ``where`` and, when the file itself passes, the override(s) that broke it.

    >>> from memory_r1.recipes import EvalRecipe
    >>> validate_recipe(EvalRecipe, {"answer_agent": {"top_k": 30}}, "r.yaml", ["answer_agent.topk=5"])
    Traceback (most recent call last):
    ...
    memory_r1.config.RecipeError: r.yaml, override answer_agent.topk=5: unknown key answer_agent.topk (answer_agent has: top_k, distill, temperature, max_new_tokens, top_p, seed, stop, questions_per_batch, context_margin)
    """
    from pydantic import ValidationError

    try:
        model.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(f"{where}: {describe_errors(exc, model)[0]}") from None
    if not overrides:
        return model.model_validate(raw)
    merged = (apply or apply_overrides)(raw, list(overrides))
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        msg, keys = describe_errors(exc, model)
        named = _culprits(keys, overrides)
        label = f"override{'s' if len(named) > 1 else ''} {' '.join(named)}" if named else "with its overrides"
        raise RecipeError(f"{where}, {label}: {msg}") from None


def _read(path: Path | str) -> dict:
    return load_recipe(path)


def load_eval_recipe(path: Path | str, overrides: Sequence[str] = ()) -> EvalRecipe:
    """An eval recipe file with ``key=value`` overrides, validated (:class:`memory_r1.recipes.EvalRecipe`)."""
    from memory_r1.recipes import EvalRecipe

    return validate_recipe(EvalRecipe, _read(path), path, overrides)

