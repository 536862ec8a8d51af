"""Tables from predictions: summary.json and summary.md (rows: the four categories with the paper's
labels and counts, plus Overall; columns F1, BLEU-1, J, the J header naming the judge prompt).

Two views: the standard score (every question, the paper's protocol) and, labelled apart, the score
without the questions whose gold answer the audit marks wrong (:func:`gold_audit_view`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from memory_r1.data.audit import GoldAudit


def summary_table(records: list[dict]) -> list[dict]:
    """Per-category rows plus Overall (question-weighted), scores in percent; J None without a judge."""
    from memory_r1.metrics import score_frame, summarize

    df = summarize(score_frame(records))
    rows = []
    for r in df.to_dict(orient="records"):
        clean = {}
        for k, v in r.items():
            if isinstance(v, float) and math.isnan(v):
                v = None
            clean[k] = v
        rows.append(clean)
    return rows


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def j_header(judge_prompt: str | None) -> str:
    """The J column's header: it names the judge prompt that scored it.

    >>> j_header("strict"), j_header(None)
    ('J (strict prompt)', 'J')
    """
    return f"J ({judge_prompt} prompt)" if judge_prompt else "J"


def _table(rows: list[dict], judge_prompt: str | None) -> list[str]:
    lines = [f"| Category | Count | F1 | BLEU-1 | {j_header(judge_prompt)} |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        name = r["label"] if r["label"] == "Overall" else f"{r['category']} {r['label']}"
        lines.append(f"| {name} | {r['count']} | {_fmt(r['f1'])} | {_fmt(r['bleu1'])} | {_fmt(r['judge'])} |")
    return lines


def summary_markdown(rows: list[dict], title: str, notes: list[str], judge_prompt: str | None = None,
                     audit: dict | None = None) -> str:
    """The summary table (standard score), then, labelled apart, the table without the audited-wrong
    gold answers when ``audit`` (a :func:`gold_audit_view`) has one, or the reason it has none.

    >>> rows = [{"category": None, "label": "Overall", "count": 2, "f1": 50.0, "bleu1": 40.0, "judge": None}]
    >>> print(summary_markdown(rows, "t", ["n"], audit={"status": "absent", "note": "no audit"}))
    # t
    <BLANKLINE>
    Standard score (all questions, the paper's protocol):
    <BLANKLINE>
    | Category | Count | F1 | BLEU-1 | J |
    |---|---:|---:|---:|---:|
    | Overall | 2 | 50.00 | 40.00 | n/a |
    <BLANKLINE>
    Without audited-wrong gold answers: no audit (only the standard score above).
    <BLANKLINE>
    - n
    <BLANKLINE>
    """
    lines = [f"# {title}", ""]
    if audit is not None:
        lines += ["Standard score (all questions, the paper's protocol):", ""]
    lines += _table(rows, judge_prompt)
    lines.append("")
    if audit is not None:
        if audit.get("rows") is not None and not audit["wrong"]:
            lines.append(f"Without audited-wrong gold answers: none of these questions has one "
                         f"({Path(audit['path']).name}), so the score is the standard score above.")
        elif audit.get("rows") is not None:
            lines += [f"{audit_heading(audit)}:", ""]
            lines += _table(audit["rows"], judge_prompt)
        else:
            lines.append(f"Without audited-wrong gold answers: {audit['note']} (only the standard score above).")
        lines.append("")
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def audit_heading(audit: dict) -> str:
    """How the second view is labelled: how many questions it leaves out, and why.

    >>> print(audit_heading({"status": "found", "wrong": ["a", "b"], "path": "/x/gold_audit.json"}))
    Without the 2 questions whose gold answer the audit marks wrong (gold_audit.json; not the paper's protocol)
    """
    n = len(audit["wrong"])
    what = "question whose gold answer the audit marks" if n == 1 else "questions whose gold answer the audit marks"
    return f"Without the {n} {what} wrong ({Path(audit['path']).name}; not the paper's protocol)"


def gold_audit_view(records: list[dict], audit: GoldAudit | None, absent_note: str | None = None) -> dict:
    """The score without the audited-wrong gold answers: ``status`` (found / absent), the audit's
    ``path``, the ``wrong`` question ids among ``records`` and the summary ``rows`` of the others
    (None without an audit, with a ``note`` saying why).

    >>> from pathlib import Path
    >>> from memory_r1.data.audit import AuditEntry, GoldAudit
    >>> recs = [{"qid": "c/q0", "question": "?", "gold": "a", "prediction": "a", "category": 1},
    ...         {"qid": "c/q1", "question": "?", "gold": "b", "prediction": "x", "category": 1}]
    >>> v = gold_audit_view(recs, GoldAudit(Path("/d/gold_audit.json"), (AuditEntry("c/q1", "?", 1, "", "b", "y"),)))
    >>> v["wrong"], v["rows"][-1]["count"], v["rows"][-1]["f1"]
    (['c/q1'], 1, 100.0)
    >>> gold_audit_view(recs, None)["rows"] is None
    True
    """
    if audit is None:
        return {"status": "absent", "path": None, "wrong": [], "rows": None,
                "note": absent_note or "no gold audit file found (gold_audit.json beside the LoCoMo file, "
                                       "in the shared folder or the user cache; or $MEMR1_GOLD_AUDIT)"}
    wrong = audit.wrong_among(r["qid"] for r in records)
    bad = set(wrong)
    return {"status": "found", "path": str(audit.path), "wrong": wrong,
            "rows": summary_table([r for r in records if r["qid"] not in bad])}


def rounds_markdown(records: list[dict], title: str) -> str:
    """One row per round of ``memr1 train loop``: the val scores of its eval (Overall F1, BLEU-1, J
    and F1 per category), from each record's ``scores`` (the eval's summary rows).

    >>> rows = [{"category": 1, "label": "Single Hop", "count": 2, "f1": 10.0, "bleu1": 5.0, "judge": None},
    ...         {"category": None, "label": "Overall", "count": 2, "f1": 10.0, "bleu1": 5.0, "judge": None}]
    >>> print(rounds_markdown([{"round": 1, "scores": rows, "seconds": 61.0}], "loop"))
    # loop
    <BLANKLINE>
    | Round | Questions | F1 | BLEU-1 | J | F1 1 Single Hop | seconds |
    |---:|---:|---:|---:|---:|---:|---:|
    | 1 | 2 | 10.00 | 5.00 | n/a | 10.00 | 61 |
    <BLANKLINE>
    """
    cats: dict[int, str] = {}
    for rec in records:
        for r in rec.get("scores") or []:
            if r.get("label") != "Overall" and r.get("category") is not None:
                cats.setdefault(int(r["category"]), r["label"])
    cats = dict(sorted(cats.items()))
    head = ["Round", "Questions", "F1", "BLEU-1", "J", *[f"F1 {c} {lab}" for c, lab in cats.items()], "seconds"]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for rec in records:
        by_cat = {r.get("category"): r for r in rec.get("scores") or []}
        overall = next((r for r in rec.get("scores") or [] if r.get("label") == "Overall"), {})
        cells = [str(rec["round"]), str(overall.get("count", 0)), _fmt(overall.get("f1")),
                 _fmt(overall.get("bleu1")), _fmt(overall.get("judge")),
                 *[_fmt((by_cat.get(c) or {}).get("f1")) for c in cats], f"{rec.get('seconds', 0):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
