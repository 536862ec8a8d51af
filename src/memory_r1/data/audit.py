"""Known wrong gold answers of LoCoMo (``gold_audit.json``, a third-party audit; see its SOURCE.md).

Each entry names a question by ``sample_id`` and ``qa_index`` (its 0-based place in that
conversation's ``qa`` list, the index of :attr:`memory_r1.types.QA.qid`) and repeats the question
text, which is checked against the data in use: an entry whose question differs is reported as a
mismatch and not used (an audit of another version of the file).

Use: the standard score keeps every question (the paper's protocol); reports add, labelled apart,
the score without these questions; a training recipe may keep the wrong train golds out of the RL
reward (``episodes.drop_wrong_golds``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from memory_r1.types import QA, make_qid

log = logging.getLogger(__name__)


class GoldAuditError(ValueError):
    """An audit file that cannot be read."""


@dataclass(frozen=True)
class AuditEntry:
    qid: str
    question: str
    category: int
    error_type: str
    gold: str
    corrected: str


@dataclass(frozen=True)
class GoldAudit:
    """The audited-wrong gold answers, keyed by question id."""

    path: Path
    entries: tuple[AuditEntry, ...]
    mismatched: tuple[str, ...] = field(default=())  # qids whose question text differs from the data

    @property
    def wrong_qids(self) -> frozenset[str]:
        return frozenset(e.qid for e in self.entries)

    def wrong_among(self, qids: Iterable[str]) -> list[str]:
        """The audited-wrong ones among ``qids``, in their order.

        >>> a = GoldAudit(Path("a.json"), (AuditEntry("c/q1", "?", 1, "x", "g", "c"),))
        >>> a.wrong_among(["c/q0", "c/q1", "c/q2"])
        ['c/q1']
        """
        wrong = self.wrong_qids
        return [q for q in qids if q in wrong]


def parse_gold_audit(raw: Mapping, path: Path, questions: Mapping[str, str] | None = None) -> GoldAudit:
    """An audit from its JSON (``{"entries": [...]}``). ``questions`` (``{qid: question text}`` of the
    data in use), when given, is checked: entries naming another question are left out as mismatched.

    >>> raw = {"entries": [{"sample_id": "conv-1", "qa_index": 0, "question": "Where?", "category": 1,
    ...                     "error_type": "hallucination", "gold": "Rome", "corrected": "Paris"},
    ...                    {"sample_id": "conv-1", "qa_index": 1, "question": "When?", "category": 2,
    ...                     "error_type": "temporal_error", "gold": "May", "corrected": "June"}]}
    >>> a = parse_gold_audit(raw, Path("gold_audit.json"), {"conv-1/q0": "Where?", "conv-1/q1": "Who?"})
    >>> sorted(a.wrong_qids), a.mismatched
    (['conv-1/q0'], ('conv-1/q1',))
    """
    entries = raw.get("entries") if isinstance(raw, Mapping) else None
    if not isinstance(entries, list):
        raise GoldAuditError(f"{path}: no 'entries' list")
    kept, mismatched = [], []
    for i, e in enumerate(entries):
        try:
            entry = AuditEntry(
                qid=make_qid(str(e["sample_id"]), int(e["qa_index"])),
                question=str(e["question"]),
                category=int(e["category"]),
                error_type=str(e.get("error_type", "")),
                gold=str(e.get("gold", "")),
                corrected=str(e.get("corrected", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise GoldAuditError(f"{path}: entries[{i}] is not an audit entry ({exc})") from None
        if questions is not None and " ".join(questions.get(entry.qid, "").split()) != " ".join(entry.question.split()):
            mismatched.append(entry.qid)
            continue
        kept.append(entry)
    if mismatched:
        log.warning("%s: %d entries name questions that are not in the data in use (left out): %s",
                    path, len(mismatched), ", ".join(mismatched[:5]))
    return GoldAudit(path, tuple(kept), tuple(mismatched))


def load_gold_audit(path: str | Path, questions: Iterable[QA] | None = None) -> GoldAudit:
    """Read an audit file; ``questions`` (e.g. every question of the LoCoMo file in use) to check it."""
    from memory_r1.data.locomo import LocomoDataError, read_json

    path = Path(path)
    try:  # the loader's reader: deep nesting, huge numbers, bad bytes are one line naming the place
        raw = read_json(path)
    except LocomoDataError as exc:
        raise GoldAuditError(f"cannot read the gold audit: {exc}") from None
    texts = None if questions is None else {q.qid: q.question for q in questions}
    return parse_gold_audit(raw, path, texts)


def find_gold_audit(
    explicit: str | Path | None = None, data: str | Path | None = None, check: bool = True
) -> GoldAudit | None:
    """The audit found as the data file is (:func:`~memory_r1.paths.resolve_gold_audit_path`),
    checked against every question of the LoCoMo file in use when ``check``; None when there is none."""
    from memory_r1.paths import resolve_gold_audit_path

    path = resolve_gold_audit_path(explicit, data)
    if path is None:
        return None
    questions = None
    if check:
        from memory_r1.data import load_locomo
        from memory_r1.paths import resolve_locomo_path

        questions = [q for c in load_locomo(resolve_locomo_path(data)) for q in c.qa]
    return load_gold_audit(path, questions)
