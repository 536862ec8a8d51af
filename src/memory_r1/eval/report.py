"""Tables from predictions: summary.json and summary.md (rows: the four categories with the paper's
labels and counts, plus Overall; columns F1, BLEU-1, J)."""

from __future__ import annotations

import math


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


def summary_markdown(rows: list[dict], title: str, notes: list[str]) -> str:
    lines = [f"# {title}", "", "| Category | Count | F1 | BLEU-1 | J |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        name = r["label"] if r["label"] == "Overall" else f"{r['category']} {r['label']}"
        lines.append(f"| {name} | {r['count']} | {_fmt(r['f1'])} | {_fmt(r['bleu1'])} | {_fmt(r['judge'])} |")
    lines.append("")
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


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
