"""The Memory-R1 split of LoCoMo as named data: train = conv-26, val = conv-30, test = the other eight."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from memory_r1.types import QA, Conversation

SPLITS: dict[str, tuple[str, ...] | None] = {
    "train": ("conv-26",),
    "val": ("conv-30",),
    "test": None,  # every conversation not in train or val
}
ADVERSARIAL = 5


@dataclass(frozen=True)
class Split:
    name: str
    conversations: tuple[Conversation, ...]
    include_adversarial: bool = False

    @property
    def conversation_ids(self) -> list[str]:
        return [c.conversation_id for c in self.conversations]

    def questions(self) -> list[QA]:
        return [
            q
            for c in self.conversations
            for q in c.qa
            if self.include_adversarial or q.category != ADVERSARIAL
        ]

    def stats(self) -> dict:
        by_cat: dict[str, int] = {}
        for q in self.questions():
            by_cat[str(q.category)] = by_cat.get(str(q.category), 0) + 1
        cats = range(1, 6) if self.include_adversarial else range(1, 5)
        return {
            "qa": sum(by_cat.values()),
            "by_category": {str(k): by_cat.get(str(k), 0) for k in cats},
            "conversations": self.conversation_ids,
            "sessions": sum(len(c.sessions) for c in self.conversations),
            "turns": sum(len(c.turns) for c in self.conversations),
        }


def split_conversations(
    conversations: list[Conversation], name: str, include_adversarial: bool = False
) -> Split:
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; choose from {', '.join(SPLITS)}")
    by_id = {c.conversation_id: c for c in conversations}
    ids = SPLITS[name]
    if ids is None:
        held = {i for v in SPLITS.values() if v for i in v}
        chosen = [c for c in conversations if c.conversation_id not in held]
    else:
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise ValueError(f"split {name!r} needs {missing}, not in the data")
        chosen = [by_id[i] for i in ids]
    return Split(name, tuple(chosen), include_adversarial)


def load_split(
    name: str,
    data: str | Path | None = None,
    include_adversarial: bool = False,
    conversations: list[str] | None = None,
) -> Split:
    """Resolve the LoCoMo file, load it and return the named split (optionally a subset of it)."""
    from memory_r1.data.locomo import load_locomo
    from memory_r1.paths import resolve_locomo_path

    split = split_conversations(load_locomo(resolve_locomo_path(data)), name, include_adversarial)
    if conversations:
        unknown = [c for c in conversations if c not in split.conversation_ids]
        if unknown:
            raise ValueError(f"conversations {unknown} are not in split {name!r} ({split.conversation_ids})")
        keep = tuple(c for c in split.conversations if c.conversation_id in conversations)
        split = Split(name, keep, include_adversarial)
    return split
