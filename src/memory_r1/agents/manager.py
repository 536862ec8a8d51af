"""Memory Manager: new facts + related memories (shown with per-prompt integer ids) -> operations
ADD / UPDATE / DELETE / NOOP, applied to a bank with history (actor "manager").

Accepted completion formats (tolerant: code fences and prose around them are fine):
- lines: ``ADD: text`` / ``UPDATE 3: text`` / ``DELETE 3`` / ``NONE`` (or ``NOOP``);
- mem0-style JSON: ``{"memory": [{"id": "3", "text": "...", "event": "UPDATE"}, ...]}`` or a bare list.
An id that was not in the prompt is rejected (counted), never applied to another memory; a completion
with no recognisable operation changes nothing (counted as unparseable).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from memory_r1.agents._text import find_json, json_text, strip_fences
from memory_r1.types import MemoryItem, MemoryOp, OpKind

log = logging.getLogger(__name__)

MANAGER_SYSTEM = """You manage a memory of facts about a person. For each NEW FACT write one line:
ADD: <fact>                  if no existing memory holds it
UPDATE <id>: <merged text>   if it changes or adds detail to an existing memory
DELETE <id>                  if it shows an existing memory is false
NONE                         if memory already holds it
Use only ids from EXISTING MEMORIES."""

#: (existing memories, new facts, operations) examples shown before the real request; {me} is the
#: bank owner's name (a small model copies names from examples)
MANAGER_SHOTS = (
    (["{me} has a dog named Rex", "{me} lives in Paris"],
     ["{me} moved from Paris to Rome", "{me} has a dog named Rex", "{me} started learning the guitar"],
     "UPDATE 1: {me} moved from Paris to Rome\nNONE\nADD: {me} started learning the guitar"),
    ([], ["{me} works as a nurse", "{me} visited Japan in May 2022"],
     "ADD: {me} works as a nurse\nADD: {me} visited Japan in May 2022"),
)


def _manager_request(existing: list[str], facts: list[str]) -> str:
    ex = "\n".join(f"{i}: {m}" for i, m in enumerate(existing)) or "(empty)"
    new = "\n".join(f"- {f}" for f in facts)
    return f"EXISTING MEMORIES:\n{ex}\n\nNEW FACTS:\n{new}"


def build_manager_messages(
    facts: list[str], related: list[MemoryItem], owner: str = "Sam"
) -> tuple[list[dict], dict[int, str]]:
    """The prompt and the map from the integer ids it shows to real memory ids. `owner`: whose bank."""
    id_map = {i: m.id for i, m in enumerate(related)}
    msgs = [{"role": "system", "content": MANAGER_SYSTEM}]
    for existing, new, ops in MANAGER_SHOTS:
        req = _manager_request([e.format(me=owner) for e in existing], [n.format(me=owner) for n in new])
        msgs += [{"role": "user", "content": req}, {"role": "assistant", "content": ops.format(me=owner)}]
    msgs.append({"role": "user", "content": _manager_request([m.text for m in related], facts)})
    return msgs, id_map


@dataclass
class ManagerParse:
    ops: list[MemoryOp] = field(default_factory=list)
    invalid_ids: list[str] = field(default_factory=list)  # ids not shown in the prompt
    malformed: int = 0  # op lines/objects that could not be read
    parsed: bool = False  # at least one recognisable operation (NONE counts)


_LINE = re.compile(
    r"^\s*(?:[-*]\s*)?(?P<op>ADD|UPDATE|DELETE|NONE|NOOP)\b\s*(?:\[?(?:id\s*[:=]?\s*)?(?P<id>[^\s:\]]+)\]?)?\s*[:\-]?\s*(?P<text>.*)$",
    re.I,
)


def _map_id(raw, id_map: dict[int, str], result: ManagerParse) -> str | None:
    try:
        key = int(str(raw).strip())
    except (TypeError, ValueError):
        key = None
    if key is None or key not in id_map:
        result.invalid_ids.append(str(raw))
        return None
    return id_map[key]


def _add_op(result: ManagerParse, op: str, raw_id, text: str, id_map: dict[int, str]) -> None:
    op = op.upper()
    text = " ".join((text or "").split()).strip().strip('"')
    if op in ("NONE", "NOOP"):
        result.ops.append(MemoryOp(op=OpKind.NOOP))
        result.parsed = True
        return
    if op == "ADD":
        if not text:
            result.malformed += 1
            return
        result.ops.append(MemoryOp(op=OpKind.ADD, text=text))
        result.parsed = True
        return
    if raw_id is None or str(raw_id).strip() == "" or (op == "UPDATE" and not text):
        result.malformed += 1
        return
    real = _map_id(raw_id, id_map, result)
    result.parsed = True  # a recognised operation, even when its id is rejected
    if real is None:
        return
    if op == "UPDATE":
        result.ops.append(MemoryOp(op=OpKind.UPDATE, id=real, text=text))
    elif op == "DELETE":
        result.ops.append(MemoryOp(op=OpKind.DELETE, id=real))


def parse_operations(text: str, id_map: dict[int, str]) -> ManagerParse:
    """Operations from a manager completion, ids mapped back to bank ids.

    >>> ids = {0: "uuid-a", 1: "uuid-b"}
    >>> r = parse_operations("UPDATE 1: Sam lives in Oslo\\nADD: Sam likes tea\\nDELETE 7", ids)
    >>> [(o.op.value, o.id, o.text) for o in r.ops], r.invalid_ids
    ([('UPDATE', 'uuid-b', 'Sam lives in Oslo'), ('ADD', None, 'Sam likes tea')], ['7'])
    >>> r = parse_operations('```json\\n{"memory": [{"id": "0", "text": "x", "event": "DELETE"}]}\\n```', ids)
    >>> [(o.op.value, o.id) for o in r.ops]
    [('DELETE', 'uuid-a')]
    >>> parse_operations("I think the memories are fine.", ids).parsed
    False
    """
    result = ManagerParse()
    body = strip_fences(text)
    data = find_json(body)
    if isinstance(data, dict):
        data = data.get("memory", data.get("operations", [data]))
    if isinstance(data, list) and data and all(isinstance(x, dict) for x in data):
        for item in data:
            op = (json_text(item.get("event", item.get("op"))) or "").upper()
            if op not in ("ADD", "UPDATE", "DELETE", "NONE", "NOOP"):
                result.malformed += 1
                continue
            _add_op(result, op, item.get("id"), json_text(item.get("text")) or "", id_map)
        if result.parsed:
            return result
        result = ManagerParse(malformed=result.malformed)
    for line in body.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        op, raw_id, rest = m.group("op"), m.group("id"), m.group("text")
        if op.upper() == "ADD" and raw_id is not None:
            # "ADD: text" puts the first word in the id group when there is no colon
            rest = line.split(":", 1)[1] if ":" in line else f"{raw_id} {rest}"
            raw_id = None
        if op.upper() in ("NONE", "NOOP"):
            raw_id = None
        _add_op(result, op, raw_id, rest, id_map)
    return result


@dataclass
class ApplyStats:
    added: int = 0
    updated: int = 0
    deleted: int = 0
    noop: int = 0
    duplicate: int = 0  # ADDs of a text the bank (or the same output) already holds verbatim: skipped
    failed: int = 0  # ops the bank refused (e.g. an id deleted earlier in the same batch)

    def merge(self, other: "ApplyStats") -> None:
        for k in vars(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))


def apply_operations(bank, ops: list[MemoryOp], *, timestamp: str = "", actor: str = "manager",
                     outcomes: list[dict] | None = None) -> ApplyStats:
    """Apply parsed ops to a bank; a refused op is logged and counted and leaves the bank as it was.
    An ADD of a text already stored verbatim (case and spacing aside) is skipped and counted.

    ``outcomes``, when given, gets one record per op, in the order of ``ops``: ``op``, ``id`` (the
    bank id; an ADD's new id), ``text`` (the op's text), ``old_text`` (what an UPDATE replaced or a
    DELETE removed) and ``status``: ``applied``, ``duplicate`` (an ADD of a held text, skipped),
    ``skipped`` (an ADD without text) or ``refused`` (with the bank's ``error``). Updates and
    deletes are applied in order, then the ADDs in one batch."""
    from memory_r1.memory import UnknownMemoryError

    stats = ApplyStats()
    trace = [
        {"op": o.op.value, "id": o.id, "text": o.text, "old_text": None, "status": "applied"} for o in ops
    ] if outcomes is not None else None
    held = {" ".join(m.text.lower().split()) for m in bank.list()} if any(o.op is OpKind.ADD for o in ops) else set()
    adds, add_at = [], []
    for i, o in enumerate(ops):
        if o.op is OpKind.ADD and not o.text and trace is not None:
            trace[i]["status"] = "skipped"  # nothing to store
        if o.op is OpKind.ADD and o.text:
            key = " ".join(o.text.lower().split())
            if key in held:
                stats.duplicate += 1
                if trace is not None:
                    trace[i]["status"] = "duplicate"
            else:
                held.add(key)
                adds.append(o.text)
                add_at.append(i)
    for i, op in enumerate(ops):
        try:
            if op.op is OpKind.UPDATE:
                old = bank.get(op.id).text if trace is not None else None
                bank.update(op.id, op.text, actor=actor, timestamp=timestamp or None)
                stats.updated += 1
                if trace is not None:
                    trace[i]["old_text"] = old
            elif op.op is OpKind.DELETE:
                gone = bank.delete(op.id, actor=actor)
                stats.deleted += 1
                if trace is not None:
                    trace[i]["old_text"] = gone.text
            elif op.op is OpKind.NOOP:
                stats.noop += 1
        except (UnknownMemoryError, ValueError) as exc:
            log.warning("manager op %s on %s refused: %s", op.op.value, op.id, exc)
            stats.failed += 1
            if trace is not None:
                trace[i].update(status="refused", error=str(exc))
    if adds:
        items = bank.add_many(adds, timestamps=[timestamp] * len(adds), actor=actor)
        stats.added += len(adds)
        if trace is not None:
            for i, item in zip(add_at, items, strict=True):
                trace[i]["id"] = item.id
    if outcomes is not None:
        outcomes.extend(trace)
    return stats
