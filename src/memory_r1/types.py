"""Typed records shared by every layer: LoCoMo dialogue, QA, memories and memory operations.

Pure data (pydantic v2); no I/O, no heavy imports.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: Category labels as Memory-R1 / Mem0 print them (LoCoMo's own code names them differently).
CATEGORY_LABELS: dict[int, str] = {
    1: "Single Hop",
    2: "Temporal",
    3: "Multi-Hop",
    4: "Open Domain",
    5: "Adversarial",
}


class Turn(BaseModel):
    """One utterance of a LoCoMo session."""

    model_config = ConfigDict(frozen=True)

    dia_id: str
    speaker: str
    text: str
    image_caption: str | None = None
    image_url: str | None = None
    session: int
    session_date: str = ""

    def render(self) -> str:
        """The turn as a line an LLM reads, with the shared image's caption when present."""
        if self.image_caption:
            return f'{self.speaker}: {self.text} [shares an image: "{self.image_caption}"]'
        return f"{self.speaker}: {self.text}"


class Session(BaseModel):
    model_config = ConfigDict(frozen=True)

    index: int
    date_time: str
    turns: list[Turn]


def make_qid(conversation_id: str, index: int) -> str:
    """The id of a LoCoMo question: its conversation and its 0-based place in that conversation's
    ``qa`` list (adversarial questions count), as :attr:`QA.qid` and the gold audit name it.

    >>> make_qid("conv-26", 2)
    'conv-26/q2'
    """
    return f"{conversation_id}/q{index}"


class QA(BaseModel):
    """A LoCoMo question with its gold answer (always a string) and linked evidence turns."""

    model_config = ConfigDict(frozen=True)

    conversation_id: str
    index: int  # position in the conversation's `qa` list
    question: str
    answer: str
    category: int = Field(ge=1, le=5)
    evidence: list[str] = Field(default_factory=list)
    adversarial_answer: str | None = None

    @property
    def qid(self) -> str:
        return make_qid(self.conversation_id, self.index)

    @property
    def category_label(self) -> str:
        return CATEGORY_LABELS[self.category]


class Conversation(BaseModel):
    model_config = ConfigDict(frozen=True)

    conversation_id: str
    speaker_a: str
    speaker_b: str
    sessions: list[Session]
    qa: list[QA]

    @property
    def speakers(self) -> tuple[str, str]:
        return (self.speaker_a, self.speaker_b)

    @property
    def turns(self) -> list[Turn]:
        return [t for s in self.sessions for t in s.turns]

    def turn_index(self) -> dict[str, Turn]:
        return {t.dia_id: t for t in self.turns}

    def evidence_turns(self, qa: QA) -> list[Turn]:
        """The turns a QA's evidence ids point at (ids the data set leaves dangling are skipped)."""
        index = self.turn_index()
        return [index[e] for e in qa.evidence if e in index]


class MemoryItem(BaseModel):
    """One stored memory as the bank returns it."""

    id: str
    text: str
    namespace: str
    created_at: str
    updated_at: str
    timestamp: str = ""  # dialogue time the memory refers to (session date), shown to the Answer Agent
    metadata: dict = Field(default_factory=dict)
    score: float | None = None  # set by search


class HistoryEvent(BaseModel):
    """Append-only log entry of a memory's life."""

    memory_id: str
    op: Literal["ADD", "UPDATE", "DELETE"]
    old_text: str | None
    new_text: str | None
    time: str
    actor: str


class OpKind(str, Enum):
    ADD = "ADD"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    NOOP = "NOOP"


class MemoryOp(BaseModel):
    """An operation the Memory Manager proposes. `id` is the bank id after mapping from prompt ids."""

    op: OpKind
    id: str | None = None
    text: str | None = None
