"""Verdicts against the paper's directions, from a publication folder as `memr1 ablate --publish`
writes it (per-row predictions and summaries, the compare table against the base row)."""

from __future__ import annotations

import json
import random

import pytest

from memory_r1.eval import paper
from memory_r1.eval.compare import BootstrapSettings, compare_folders, compare_runs, load_run
from memory_r1.metrics import answer_scores

N = 60
SETTINGS = BootstrapSettings(resamples=500, seed=0)


def _row(folder, name, right: set[int], rng_seed: int = 0):
    out = folder / name / "val"
    out.mkdir(parents=True)
    rng = random.Random(rng_seed)
    with open(out / "predictions.jsonl", "w") as f:
        for i in range(N):
            gold = f"answer {i}"
            pred = gold if i in right else rng.choice(["no idea", f"answer {i + 1}"])
            f.write(json.dumps({"qid": f"conv-t/q{i}", "question": f"question {i}?", "gold": gold,
                                "category": 1 + i % 4, "prediction": pred, **answer_scores(pred, gold),
                                "judge": None}) + "\n")
    (out / "summary.json").write_text(json.dumps({"rows": []}))


@pytest.fixture
def published(tmp_path):
    folder = tmp_path / "pub"
    _row(folder, "base", set(range(0, N, 3)))
    _row(folder, "good", set(range(N)))  # right everywhere: far above the base
    _row(folder, "same", set(range(0, N, 3)), rng_seed=1)  # the base's right answers: no difference
    _row(folder, "bad", set())
    compare_folders(folder / "base" / "val", [folder / "good" / "val", folder / "bad" / "val"],
                    names=["base", "good", "bad"], out=folder / "compare-val", settings=SETTINGS)
    return folder


def test_differences_from_the_compare_table_and_from_predictions(published):
    assert paper.published_rows(published, "val") == ["bad", "base", "good", "same"]
    d = paper.difference(published, "val", "good", "base")
    assert d.source == "compare.json" and d.questions == N
    cmp = json.loads((published / "compare-val" / "compare.json").read_text())
    overall = next(g for g in cmp["views"]["standard"]["groups"] if g["label"] == "Overall")
    assert d.diffs["f1"] == overall["runs"]["good"]["diff"]["f1"]
    assert paper.verdict(d.diffs["f1"]) == paper.SAME and d.diffs["judge"] is None

    # the base as the better row: the interval turned around
    r = paper.difference(published, "val", "base", "bad")
    bad = overall["runs"]["bad"]["diff"]["f1"]
    assert (r.diffs["f1"]["mean"], r.diffs["f1"]["lo"], r.diffs["f1"]["hi"]) == (-bad["mean"], -bad["hi"], -bad["lo"])
    assert "-0.00" not in paper.sentence(paper.difference(published, "val", "base", "same"), None)
    assert paper.verdict(r.diffs["f1"]) == paper.SAME
    assert paper.verdict(paper.difference(published, "val", "bad", "base").diffs["f1"]) == paper.OPPOSITE

    # neither is the base: recomputed from the published predictions with the table's settings
    g = paper.difference(published, "val", "good", "bad")
    direct = compare_runs(load_run(published / "bad" / "val", "bad"), [load_run(published / "good" / "val", "good")],
                          settings=SETTINGS)
    want = next(x for x in direct["views"]["standard"]["groups"] if x["label"] == "Overall")["runs"]["good"]["diff"]
    assert g.source == "predictions" and g.diffs["f1"] == want["f1"] and g.diffs["bleu1"] == want["bleu1"]
    s = paper.difference(published, "val", "same", "base")
    assert paper.verdict(s.diffs["f1"]) == paper.NOT_MEASURABLE
    assert "F1: not measurable at this scale" in paper.sentence(s, paper.RL)


def test_missing_rows_and_unpublished_predictions(published):
    d = paper.difference(published, "val", "answer-grpo", "base")
    assert not d.ok and d.missing == ("answer-grpo",)
    text = paper.sentence(d, paper.RL, "memr1 ablate --plan p.yaml --rows answer-grpo --slices val")
    assert text.startswith("answer-grpo vs base on val: not run (answer-grpo)")
    assert text.endswith("Run it: memr1 ablate --plan p.yaml --rows answer-grpo --slices val")
    (published / "good" / "val" / "predictions.jsonl").unlink()
    d = paper.difference(published, "val", "good", "bad")
    assert not d.ok and "not published" in d.note
    assert paper.difference(published, "val", "good", "base").ok  # the compare table still has it
    assert paper.published_rows(published / "nowhere", "val") == []


def test_claims_name_rows_of_the_cpu_plan():
    from memory_r1.config import recipe_path
    from memory_r1.eval.plan import load_plan

    rows = {r.name for r in load_plan(recipe_path("smollm2-135m", "ablations")).rows}
    assert {c.better for c in paper.CLAIMS} | {c.worse for c in paper.CLAIMS} <= rows
    assert {c.statement for c in paper.CLAIMS} == {paper.RL, paper.MEMORY, paper.DISTILL, paper.GRPO}
    grpo = next(r for r in paper.PAPER_TABLE1 if r.method == "Memory-R1-GRPO" and r.backbone == "LLaMA-3.1-8B")
    assert (grpo.f1, grpo.bleu1, grpo.judge) == (45.02, 37.51, 62.74)


def test_levers_of_the_cpu_plan_are_read_against_every_run_of_their_reference():
    from memory_r1.config import recipe_path
    from memory_r1.eval.plan import load_plan

    plan = load_plan(recipe_path("smollm2-135m", "ablations"))
    rows = {r.name: r for r in plan.rows}
    assert paper.is_replicate(plan, rows["answer-grpo-40min-seed1"])
    assert paper.is_replicate(plan, rows["answer-grpo-40min-fp32"])  # another training precision
    assert not paper.is_replicate(plan, rows["answer-grpo-40min-short"])  # another response length
    assert paper.references(plan, rows["answer-grpo-40min-short"]) == [
        "answer-grpo-40min", "answer-grpo-40min-seed1", "answer-grpo-40min-fp32"]
    assert paper.references(plan, rows["answer-grpo-40min-seed1"]) == ["answer-grpo-40min", "answer-grpo-40min-fp32"]
    assert paper.references(plan, rows["both-40min"]) == ["answer-grpo-40min-clean-golds"]  # no re-seeding of it
    assert paper.references(plan, rows["memr1-untrained"]) == []


def test_a_lever_is_a_change_only_against_every_reference(published):
    helped = [paper.difference(published, "val", "good", ref) for ref in ("base", "same")]
    assert paper.across_references(helped) == paper.SAME
    assert paper.references_sentence(helped) == "Against every run of its reference (base, same), F1: the change helped."
    # better than one reference, worse than the other: not a change one can name
    mixed = [paper.difference(published, "val", "same", ref) for ref in ("bad", "good")]
    assert [paper.verdict(d.diffs["f1"]) for d in mixed] == [paper.SAME, paper.OPPOSITE]
    assert paper.across_references(mixed) == paper.NOT_MEASURABLE
    assert "within what a new seed or precision alone moves" in paper.references_sentence(mixed)
    # one reference not run: no verdict across them, and no sentence
    unrun = [helped[0], paper.difference(published, "val", "good", "nope")]
    assert paper.across_references(unrun) is None and paper.references_sentence(unrun) == ""
