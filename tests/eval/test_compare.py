"""`memr1 compare` on eval folders built here from the real val questions with scripted answers."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from memory_r1.data import load_split
from memory_r1.eval.compare import (
    BootstrapSettings,
    CompareError,
    bootstrap_settings,
    compare_folders,
    compare_runs,
    load_run,
    paired_bootstrap,
)
from memory_r1.eval.report import summary_table
from memory_r1.metrics import answer_scores


@pytest.fixture(scope="module")
def val(locomo_path):
    return load_split("val", locomo_path).questions()


def make_folder(path, questions, right, *, scores=True, judge=True, prompt="mem0", judge_name="judge-x"):
    """An eval folder: the gold answer where ``right(i)``, else a wrong one; the judge agrees with EM."""
    path.mkdir(parents=True)
    rows = []
    for i, q in enumerate(questions):
        pred = q.answer if right(i) else "something else entirely"
        row = {"qid": q.qid, "conversation_id": q.conversation_id, "question": q.question, "gold": q.answer,
               "category": q.category, "prediction": pred}
        if scores:
            row.update(answer_scores(pred, q.answer))
        row["judge"] = (pred == q.answer) if judge else None
        rows.append(row)
    (path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    jcfg = {"backend": judge_name if judge else "none"}
    if prompt:
        jcfg["prompt"] = prompt
    (path / "manifest.json").write_text(json.dumps({"config": {"judge": jcfg, "split": "val"}}))
    return rows


def overall(view, run):
    return next(g for g in view["groups"] if g["label"] == "Overall")["runs"][run]


def test_scores_match_the_summary_and_old_rows_are_recomputed(tmp_path, val):
    rows = make_folder(tmp_path / "base", val, lambda i: i % 3 == 0)
    make_folder(tmp_path / "old", val, lambda i: i % 3 == 0, scores=False)  # written before rows had scores
    make_folder(tmp_path / "better", val, lambda i: i % 3 == 0 or i % 2 == 0)
    base, old, better = (load_run(tmp_path / n) for n in ("base", "old", "better"))
    assert old.recomputed == len(val) and base.recomputed == 0
    res = compare_runs(base, [old, better], settings=BootstrapSettings(resamples=2000))
    std = res["views"]["standard"]
    want = summary_table(rows)  # the per-category numbers of summary.json
    for g in std["groups"]:
        w = next(r for r in want if r["label"] == g["label"])
        assert g["count"] == w["count"]
        for m in ("f1", "bleu1", "em", "judge"):
            assert g["runs"]["base"][m] == pytest.approx(w[m]), (g["label"], m)
    assert [g["label"] for g in std["groups"]] == ["Single Hop", "Temporal", "Open Domain", "Overall"]  # no cat 3
    same = overall(std, "old")  # identical answers: no difference, every question a tie
    for m in ("f1", "bleu1", "em", "judge"):
        assert same["diff"][m] == {"mean": 0.0, "lo": 0.0, "hi": 0.0, "n": len(val)}
        assert same["wtl"][m] == [0, len(val), 0]
    up = overall(std, "better")
    n_more = sum(1 for i in range(len(val)) if i % 3 != 0 and i % 2 == 0)
    assert up["wtl"]["em"] == [n_more, len(val) - n_more, 0]
    assert up["diff"]["em"]["mean"] == pytest.approx(100 * n_more / len(val))
    assert 0 < up["diff"]["em"]["lo"] < up["diff"]["em"]["mean"] < up["diff"]["em"]["hi"]
    assert res["recomputed_rows"] == {"old": len(val)}


def test_bootstrap_interval_matches_the_normal_approximation():
    import numpy as np

    d = np.random.default_rng(7).normal(2.0, 10.0, size=900)
    ci = paired_bootstrap(d, BootstrapSettings(resamples=4000, seed=3))
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
    assert ci["mean"] == pytest.approx(d.mean())
    assert ci["lo"] == pytest.approx(d.mean() - half, abs=0.12 * half)
    assert ci["hi"] == pytest.approx(d.mean() + half, abs=0.12 * half)
    again = paired_bootstrap(d, BootstrapSettings(resamples=4000, seed=3))
    other = paired_bootstrap(d, BootstrapSettings(resamples=4000, seed=4))
    assert again == ci and other != ci  # seeded


def test_other_question_sets_are_refused_or_intersected(tmp_path, val):
    make_folder(tmp_path / "base", val, lambda i: i % 2 == 0)
    make_folder(tmp_path / "short", val[:30], lambda i: True)
    base, short = load_run(tmp_path / "base"), load_run(tmp_path / "short")
    with pytest.raises(CompareError, match="different questions .*--intersect"):
        compare_runs(base, [short])
    res = compare_runs(base, [short], intersect=True, settings=BootstrapSettings(resamples=2000))
    assert res["questions"] == 30
    assert res["alignment"] == {"base": {"questions": len(val), "dropped": len(val) - 30},
                                "short": {"questions": 30, "dropped": 0}}
    md = json.dumps(res)
    assert '"dropped": 51' in md


def test_another_gold_is_refused(tmp_path, val):
    make_folder(tmp_path / "base", val, lambda i: True)
    make_folder(tmp_path / "other", val, lambda i: True)
    p = tmp_path / "other" / "predictions.jsonl"
    rows = [json.loads(x) for x in p.read_text().splitlines()]
    rows[5]["gold"] = "a different gold"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(CompareError, match="another gold"):
        compare_runs(load_run(tmp_path / "base"), [load_run(tmp_path / "other")])


def test_files_views_and_judges(tmp_path, val):
    make_folder(tmp_path / "a" / "val", val, lambda i: i % 3 == 0)
    make_folder(tmp_path / "b" / "val", val, lambda i: i % 2 == 0, prompt="strict")
    make_folder(tmp_path / "c" / "val", val, lambda i: i % 4 == 0, judge=False)
    out = compare_folders(tmp_path / "a" / "val", [tmp_path / "b" / "val", tmp_path / "c" / "val"],
                          out=tmp_path / "cmp", settings=bootstrap_settings())
    res = json.loads((out / "compare.json").read_text())
    assert res["base"] == "a/val" and res["runs"] == ["b/val", "c/val"]
    assert res["bootstrap"] == {"resamples": 2000, "seed": 0, "confidence": 0.95}  # recipes/compare.yaml
    # the audited-wrong val golds (4 of 81) are left out of the second view only
    assert res["gold_audit"]["status"] == "found" and len(res["gold_audit"]["wrong"]) == 4
    assert res["views"]["without_wrong_golds"]["questions"] == len(val) - 4
    assert res["views"]["standard"]["questions"] == len(val)
    c = overall(res["views"]["standard"], "c/val")
    assert c["judge"] is None and c["diff"]["judge"] is None and c["diff"]["f1"] is not None
    md = (out / "compare.md").read_text()
    assert "## Standard score (all questions, the paper's protocol)" in md
    assert "## Without the 4 questions whose gold answer the audit marks wrong" in md
    assert "J of b/val comes from another judge or judge prompt" in md
    assert "2,000 resamples, seed 0" in md and "| Overall | a/val (base) | 81 |" in md
    png = (out / "compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_no_audit_is_said(tmp_path, val, monkeypatch):
    from memory_r1 import paths

    monkeypatch.setattr(paths, "resolve_gold_audit_path", lambda *a, **k: None)
    make_folder(tmp_path / "a", val, lambda i: True)
    make_folder(tmp_path / "b", val, lambda i: False)
    out = compare_folders(tmp_path / "a", [tmp_path / "b"], out=tmp_path / "cmp")
    res = json.loads((out / "compare.json").read_text())
    assert res["views"]["without_wrong_golds"] is None and res["gold_audit"]["status"] == "absent"
    assert "Not shown: no gold audit file found" in (out / "compare.md").read_text()


def test_cli(tmp_path, val):
    from memory_r1.cli import app

    make_folder(tmp_path / "base", val, lambda i: i % 3 == 0)
    make_folder(tmp_path / "run", val, lambda i: i % 2 == 0)
    make_folder(tmp_path / "short", val[:10], lambda i: True)
    r = CliRunner().invoke(app, ["compare", str(tmp_path / "base"), str(tmp_path / "run"), "--out",
                                 str(tmp_path / "cmp"), "--resamples", "2500", "--seed", "5"])
    assert r.exit_code == 0, r.output
    assert "2,500 resamples, seed 5" in r.output and (tmp_path / "cmp" / "compare.png").exists()
    r = CliRunner().invoke(app, ["compare", str(tmp_path / "base"), str(tmp_path / "short")])
    assert r.exit_code == 2 and "different questions" in r.output
    r = CliRunner().invoke(app, ["compare", str(tmp_path / "base"), str(tmp_path / "short"), "--intersect",
                                 "--out", str(tmp_path / "cmp2")])
    assert r.exit_code == 0 and "aligned on the 10 questions" in r.output and "base 71 of 81" in r.output


def test_a_slice_without_audited_golds_says_so(tmp_path, val):
    from memory_r1.data.audit import find_gold_audit
    from memory_r1.eval.report import gold_audit_view, summary_markdown, summary_table

    first = val[:10]
    assert not find_gold_audit().wrong_among(q.qid for q in first)
    rows = make_folder(tmp_path / "a", first, lambda i: True)
    make_folder(tmp_path / "b", first, lambda i: i % 2 == 0)
    out = compare_folders(tmp_path / "a", [tmp_path / "b"], out=tmp_path / "cmp")
    md = (out / "compare.md").read_text()
    assert "None of these questions has one (gold_audit.json): the standard score above." in md
    assert md.count("| Overall |") == 1  # one table: the second view would repeat it
    view = gold_audit_view(rows, find_gold_audit())
    summary = summary_markdown(summary_table(rows), "t", [], audit=view)
    assert "none of these questions has one (gold_audit.json)" in summary and summary.count("| Overall |") == 1


def test_memory_built_apart_is_said(tmp_path, val):
    """Rows with the base's ingestion settings but other bank fingerprints (rebuilt elsewhere) are
    named in compare.md and compare.json; a row sharing the base's banks or with its own manager is not."""
    folders = {}
    for name, manager, banks in (("base", None, "x"), ("same", None, "x"), ("apart", None, "y"), ("mgr", "ckpt", "z")):
        folders[name] = tmp_path / name / "val"
        make_folder(folders[name], val, lambda i: i % 3 == 0)
        (folders[name] / "manifest.json").write_text(json.dumps(
            {"config": {"judge": {"backend": "judge-x", "prompt": "mem0"}, "split": "val", "method": "memory-r1",
                        "manager": manager}}))
        (folders[name] / "summary.json").write_text(json.dumps({"bank_sha256": {"conv-30": banks}}))
    out = compare_folders(folders["base"], [folders[n] for n in ("same", "apart", "mgr")], out=tmp_path / "cmp",
                          settings=bootstrap_settings(resamples=200))
    res = json.loads((out / "compare.json").read_text())
    assert res["banks"] == {"same/val": "same", "apart/val": "built apart", "mgr/val": "own"}
    md = (out / "compare.md").read_text()
    assert "- memory built apart: apart/val answered from banks built with the same settings as base/val's" in md
    assert "same/val answered" not in md and "mgr/val answered" not in md
