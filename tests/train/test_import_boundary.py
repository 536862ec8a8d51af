"""The verl wing is the only place that imports verl, ray or hydra: an ``ast`` walk of every module of
``src/memory_r1`` (module level and inside functions, ``import x``, ``from x import y``, and
``importlib.import_module("x")`` / ``__import__("x")`` with a literal name) finds such an import
only under ``train/verl/``."""

from __future__ import annotations

import ast
from pathlib import Path

import memory_r1

FRAMEWORKS = ("verl", "ray", "hydra")
PACKAGE = Path(memory_r1.__file__).parent
WING = PACKAGE / "train" / "verl"


def imported_roots(source: str) -> list[tuple[int, str]]:
    """``(line, top-level package)`` of every absolute import in ``source``, however it is written."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value.split(".")[0]))
    return found


def framework_imports(root: Path) -> list[str]:
    """``path:line imports name`` for each verl/ray/hydra import outside ``train/verl/``."""
    out = []
    for path in sorted(root.rglob("*.py")):
        if WING in path.parents:
            continue
        for line, name in imported_roots(path.read_text(encoding="utf-8")):
            if name in FRAMEWORKS:
                out.append(f"{path.relative_to(root)}:{line} imports {name}")
    return out


def test_only_the_verl_wing_imports_verl_ray_or_hydra():
    assert framework_imports(PACKAGE) == []


def test_the_wing_is_where_they_are_imported():
    inside = {name for p in WING.rglob("*.py") for _, name in imported_roots(p.read_text(encoding="utf-8"))}
    assert set(FRAMEWORKS) <= inside


def test_every_form_of_import_is_seen():
    src = (
        "import ray\n"
        "def f():\n"
        "    from verl.trainer import main_ppo\n"
        "    import hydra.core as hc\n"
        "    importlib.import_module('verl.utils')\n"
        "    __import__('ray.util')\n"
        "from . import verl\n"  # a relative import names a module of ours
    )
    assert sorted(imported_roots(src)) == [(1, "ray"), (3, "verl"), (4, "hydra"), (5, "verl"), (6, "ray")]
