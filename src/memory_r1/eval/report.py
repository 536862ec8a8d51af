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
