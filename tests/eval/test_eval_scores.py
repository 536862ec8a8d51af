"""An eval folder written with a scripted LLM (answers and judge): per-row scores, the judge prompt as
a recipe choice (named in the table, part of the fingerprint, used by the control pairs) and the
score without the audited-wrong gold answers."""

from __future__ import annotations

import json

import pytest

from memory_r1.data import load_split
from memory_r1.eval import runner
from memory_r1.eval.folder import EvalFolderError, check_or_write_manifest, read_predictions
from memory_r1.eval.runner import EvalRequest, run_eval
from memory_r1.llm.base import Generation
from memory_r1.metrics import bleu1, exact_match, f1_score

N = 32  # the first 32 val questions hold one audited-wrong gold (conv-30/q31)


class ScriptedLLM:
    """Answers every other question with its gold answer (by question text), the rest "no idea".
    As a judge: CORRECT when the prediction is the gold answer, under the mem0 prompt; always WRONG
    under the strict prompt (so the J column shows which prompt scored it)."""

    name, context_window = "scripted", 8192

    def __init__(self, golds: dict[str, str]):
        self.golds = golds
        self.judge_prompts: list[str] = []

    def generate(self, conversations, params):
        out = []
        for conv in conversations:
            text = conv[-1]["content"]
            if text.startswith("Label a generated answer"):
                strict = "Be strict" in text
                self.judge_prompts.append("strict" if strict else "mem0")
                gold = text.split("Gold answer: ", 1)[1].split("\n", 1)[0]
                pred = text.split("Generated answer: ", 1)[1].split("\n", 1)[0]
                out.append(Generation(json.dumps({"label": "CORRECT" if pred == gold and not strict else "WRONG"}),
                                      10, 3, "stop"))
                continue
            q = next(q for q in self.golds if q in text)
            i = list(self.golds).index(q)
            out.append(Generation(f"Answer: {self.golds[q] if i % 2 == 0 else 'no idea'}", 10, 3, "stop"))
        return out

    def count_tokens(self, messages):
        return sum(len(m["content"].split()) for m in messages)

    def close(self):
        pass


@pytest.fixture
def fake(monkeypatch, locomo_path):
    qs = load_split("val", locomo_path).questions()[:N]
    llm = ScriptedLLM({q.question: q.answer for q in qs})
    monkeypatch.setattr(runner, "_load_llms", lambda cfg: (llm, llm, llm))
    return llm


def _req(tmp_path, out="run", overrides=()):
    return EvalRequest(split="val", method="full-context", limit_questions=N, judge="self", out=tmp_path / out,
                       overrides=[f"judge.cache={tmp_path / 'judge.sqlite'}", *overrides], show_progress=False)


def test_rows_carry_their_scores_and_the_summary_both_views(tmp_path, fake):
    out = run_eval(_req(tmp_path))
    rows = read_predictions(out / "predictions.jsonl")
    assert len(rows) == N
    for r in rows:
        assert r["f1"] == f1_score(r["prediction"], r["gold"])
        assert r["bleu1"] == bleu1(r["prediction"], r["gold"])
        assert r["em"] == exact_match(r["prediction"], r["gold"])
        assert r["judge"] is (r["prediction"] == r["gold"])
    assert sum(r["em"] for r in rows) >= N // 2 - 2  # the scripted answers are right every other time
    summary = json.loads((out / "summary.json").read_text())
    assert summary["judge_prompt"] == "mem0"
    overall = summary["rows"][-1]
    assert overall["count"] == N and overall["f1"] == pytest.approx(100 * sum(r["f1"] for r in rows) / N)
    # without the audited-wrong gold (conv-30/q31): one question fewer, re-aggregated from the rows
    audit = summary["gold_audit"]
    assert audit["status"] == "found" and audit["wrong"] == ["conv-30/q31"]
    clean = [r for r in rows if r["qid"] != "conv-30/q31"]
    clean_overall = summary["rows_without_wrong_golds"][-1]
    assert clean_overall["count"] == N - 1
    assert clean_overall["f1"] == pytest.approx(100 * sum(r["f1"] for r in clean) / (N - 1))
    assert clean_overall["judge"] == pytest.approx(100 * sum(r["judge"] for r in clean) / (N - 1))
    md = (out / "summary.md").read_text()
    assert "Standard score (all questions, the paper's protocol)" in md
    assert "Without the 1 question whose gold answer the audit marks wrong (gold_audit.json" in md
    assert md.count("| J (mem0 prompt) |") == 2 and f"| Overall | {N - 1} |" in md
    assert set(fake.judge_prompts) == {"mem0"}


def test_strict_prompt_scores_control_pairs_and_is_fingerprinted(tmp_path, fake):
    out = run_eval(_req(tmp_path, overrides=["judge.prompt=strict"]))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["judge_prompt"] == "strict" and summary["rows"][-1]["judge"] == 0.0
    n_control = summary["judge_control"]["pairs"]
    # the control pairs too (those equal to an answered question come from the cache)
    assert n_control > 0 and set(fake.judge_prompts) == {"strict"} and len(fake.judge_prompts) > N
    assert summary["judge_control"]["identical_judged_correct"] == 0.0  # the strict script says WRONG
    assert "| J (strict prompt) |" in (out / "summary.md").read_text()
    # the same folder is not resumed with another judge prompt
    with pytest.raises(EvalFolderError, match="differs in: judge"):
        run_eval(_req(tmp_path, overrides=["judge.prompt=mem0"]))
    # and a cached strict judgment is never reused for the mem0 prompt
    fake.judge_prompts.clear()
    out2 = run_eval(_req(tmp_path, out="run2"))
    assert json.loads((out2 / "summary.json").read_text())["rows"][-1]["judge"] > 0
    assert fake.judge_prompts and set(fake.judge_prompts) == {"mem0"}


def test_unknown_judge_prompt_is_refused(tmp_path, fake):
    with pytest.raises(ValueError, match="unknown judge.prompt 'lenient'"):
        run_eval(_req(tmp_path, overrides=["judge.prompt=lenient"]))


def test_a_folder_without_prompt_in_its_manifest_resumes_as_mem0(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    check_or_write_manifest(out, {"config": {"judge": {"backend": "self"}}})
    check_or_write_manifest(out, {"config": {"judge": {"backend": "self", "prompt": "mem0"}}})
    with pytest.raises(EvalFolderError, match="judge"):
        check_or_write_manifest(out, {"config": {"judge": {"backend": "self", "prompt": "strict"}}})


def test_missing_audit_is_said_in_the_summary(tmp_path, fake, monkeypatch):
    from memory_r1 import paths

    monkeypatch.setenv("MEMR1_GOLD_AUDIT", str(tmp_path / "absent.json"))
    out = run_eval(_req(tmp_path))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows_without_wrong_golds"] is None and summary["gold_audit"]["status"] == "absent"
    assert "absent.json" in summary["gold_audit"]["note"]
    md = (out / "summary.md").read_text()
    assert "Without audited-wrong gold answers:" in md and "only the standard score" in md
    monkeypatch.delenv("MEMR1_GOLD_AUDIT")
    monkeypatch.setattr(paths, "resolve_gold_audit_path", lambda *a, **k: None)
    out = run_eval(_req(tmp_path, out="run3"))
    assert "no gold audit file found" in json.loads((out / "summary.json").read_text())["gold_audit"]["note"]
