"""The ablation plan file: structure, defaults and one-line refusals (memory_r1.eval.plan)."""

from __future__ import annotations

from pathlib import Path

import pytest

from memory_r1.eval.plan import PlanError, parse_plan


def test_parse_plan_defaults():
    p = parse_plan({"backbone": "b", "base": "x", "slices": {"a": {"split": "val"}, "b": {"split": "test"}},
                    "default_slices": ["b"], "rows": [{"name": "x"}]}, Path("p.yaml"))
    assert p.rows[0].slices == ("b",)
    with pytest.raises(PlanError, match="no row 'y'"):
        parse_plan({"backbone": "b", "base": "y", "slices": {"a": {"split": "val"}}, "rows": [{"name": "x"}]},
                   Path("p.yaml"))


def test_structural_mistakes_are_one_line(make_plan):
    with pytest.raises(PlanError, match="unknown keys"):
        make_plan([{"name": "base", "top_k": 10}])
    with pytest.raises(PlanError, match="folder name"):
        make_plan([{"name": "base"}, {"name": "a/b"}])
    with pytest.raises(PlanError, match="train needs a stage and an algo"):
        make_plan([{"name": "base", "train": {"stage": "answer"}}])
    with pytest.raises(PlanError, match="needs a split"):
        make_plan([{"name": "base"}], slices={"val": {"conversations": ["conv-30"]}})
    with pytest.raises(PlanError, match="row names repeat"):
        make_plan([{"name": "base"}, {"name": "base"}])
