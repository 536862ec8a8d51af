"""Helpers of the ablation tests: a plan written to a temporary folder, and a stand-in for the child
``memr1`` processes a plan runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from memory_r1.eval import ablate
from memory_r1.eval.plan import Plan, load_plan
from memory_r1.metrics import answer_scores


@pytest.fixture
def make_plan(tmp_path):
    """``make_plan(rows, **plan keys)``: a plan over the val split with its folders under tmp_path/ab."""

    def make(rows, **extra) -> Plan:
        raw = {"backbone": "smollm2-135m", "base": "base", "out": str(tmp_path / "ab"),
               "slices": {"val": {"split": "val"}}, "rows": rows, **extra}
        p = tmp_path / "plan.yaml"
        p.write_text(yaml.safe_dump(raw))
        return load_plan(p)

    return make


class ScriptedMemr1:
    """Stands in for the child `memr1` processes: a train step writes a finished training folder, an
    eval step an eval folder (right answers on every `period`-th question) with the manifest the
    real command would write."""

    def __init__(self, questions, periods, fail_on=None):
        self.questions, self.periods, self.fail_on = questions, periods, fail_on
        self.calls: list[list[str]] = []

    def __call__(self, args):
        self.calls.append(args)
        opts, _ = ablate._parse_eval_args(args[1:] if args[0] == "train" else args)
        out = Path(opts["--out"])
        if self.fail_on and self.fail_on in str(out):
            return 3
        if args[0] == "train":
            hf = (out / "checkpoints" / "global_step_2" / "actor" / "huggingface").resolve()
            hf.mkdir(parents=True)
            (out / "result.json").write_text(json.dumps({"dry_run": False, "hf_checkpoint": str(hf)}))
            return 0
        period = self.periods[out.parent.name]
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "predictions.jsonl", "w") as f:
            for i, q in enumerate(self.questions):
                pred = q.answer if i % period == 0 else "no idea"
                f.write(json.dumps({"qid": q.qid, "question": q.question, "gold": q.answer, "category": q.category,
                                    "prediction": pred, **answer_scores(pred, q.answer), "judge": None}) + "\n")
        (out / "manifest.json").write_text(json.dumps({"config": ablate._eval_config(args, None)}))
        (out / "summary.json").write_text("{}")
        return 0


@pytest.fixture
def scripted_memr1():
    return ScriptedMemr1


@pytest.fixture
def base_rag_ans(make_plan, locomo_path):
    """A plan of three rows (the base, rag-turns, an Answer Agent trained by GRPO) over val, and a
    scripted ``memr1`` answering right every 3rd / 2nd / every question, and the options of a smoke
    run (no judge, one session ingested): ``(plan, fake, opts)``."""
    from memory_r1.data import load_split

    plan = make_plan([{"name": "base"}, {"name": "rag", "method": "rag-turns"},
                      {"name": "ans", "train": {"stage": "answer", "algo": "grpo"}, "answer": "train"}])
    return (plan, ScriptedMemr1(load_split("val", locomo_path).questions(), {"base": 3, "rag": 2, "ans": 1}),
            ablate.Options(judge="none", overrides=["ingest.max_sessions=1"]))
