"""LoCoMo's own per-session observations: ``[fact, dia_id(s)]`` per speaker, each stamped with its
session's date. The cheap bank source of the CPU training recipes (no LLM).

>>> Observation("Sam", "Sam adopted a dog.", ("D1:3",), 1, "8 May, 2023").last_turn({"D1:3": 2})
2
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Observation:
    """One LoCoMo observation: a fact about ``speaker`` made from the turns ``dia_ids``."""

    speaker: str
    text: str
    dia_ids: tuple[str, ...]
    session: int
    date: str

    def last_turn(self, positions: dict[str, int]) -> int | None:
        """Position (in dialogue order) of the latest turn it was made from; None if none is known."""
        known = [positions[d] for d in self.dia_ids if d in positions]
        return max(known) if known else None


def load_observations(
    conversation_ids: Iterable[str] | None = None, data: str | Path | None = None
) -> dict[str, list[Observation]]:
    """``{conversation_id: [Observation, ...]}`` from the raw LoCoMo file (sessions in order).

    The file is found like every LoCoMo read (:func:`~memory_r1.paths.resolve_locomo_path`).
    Evidence-style ids are normalised (``D30:05`` -> ``D30:5``); a fact may cite several turns. A
    conversation id the file does not have raises :class:`~memory_r1.data.locomo.LocomoDataError`."""
    from memory_r1.data.locomo import LocomoDataError, normalise_evidence, read_json
    from memory_r1.paths import resolve_locomo_path

    path = resolve_locomo_path(data)
    raw = read_json(path)  # a file that cannot be read or decoded: one LocomoDataError naming the place
    wanted = set(conversation_ids) if conversation_ids is not None else None
    out: dict[str, list[Observation]] = {}
    for conv in raw:
        cid = conv.get("sample_id")
        if wanted is not None and cid not in wanted:
            continue
        dialogue = conv.get("conversation") or {}
        sessions = []
        for key, value in (conv.get("observation") or {}).items():
            try:
                n = int(key.split("_")[1])
            except (IndexError, ValueError):
                log.warning("%s: ignoring observation key %r", cid, key)
                continue
            sessions.append((n, value or {}))
        facts: list[Observation] = []
        for n, by_speaker in sorted(sessions, key=lambda s: s[0]):
            date = str(dialogue.get(f"session_{n}_date_time", ""))
            for speaker, items in by_speaker.items():
                for item in items or []:
                    if not isinstance(item, (list, tuple)) or not item or not str(item[0]).strip():
                        continue
                    refs = item[1] if len(item) > 1 else []
                    refs = refs if isinstance(refs, list) else [refs]
                    ids = tuple(i for r in refs for i in normalise_evidence(str(r)))
                    facts.append(Observation(speaker, " ".join(str(item[0]).split()), ids, n, date))
        out[cid] = facts
    if wanted is not None and (missing := wanted - set(out)):
        raise LocomoDataError(path, "observations", f"no conversation {sorted(missing)}")
    return out
