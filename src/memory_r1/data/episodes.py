"""Training episodes of the two Memory-R1 policies, as rows of verl's RL dataset (parquet).

Both policies emit one completion per episode, so everything a reward needs travels *in the row*:
retrieval is precomputed, and a Memory Manager row carries the bank state it acts on as a JSON
snapshot (rewards are stateless and replayable; no process-global bank).

Row schema (verl's ``RLHFDataset``): ``data_source`` (:data:`ANSWER_SOURCE` / :data:`MANAGER_SOURCE`),
``prompt`` (chat messages), ``ability``, ``reward_model = {"style": "rule", "ground_truth": ...}``,
``extra_info`` (``index``, ``split``, ``conversation_id``, ``speakers``, ``source`` and the
per-stage fields below).

**Answer Agent** (:func:`answer_rows`): one row per question of a split; the prompt is
:func:`~memory_r1.agents.answerer.build_answer_messages` over the ``top_k`` + ``top_k`` memories
retrieved *by the question* from the two speakers' banks; ``ground_truth`` is the gold answer;
``extra_info`` adds ``qid``, ``question``, ``answer``, ``category``, ``top_k``, ``memory_ids``.

**Memory Manager** (:func:`manager_rows`, the paper's Algorithm 1): one row per dialogue turn that
is evidence for a question of the split, in dialogue order. The bank state is built from the turns
*before* it (all of them, or the last ``history_turns``); the facts are those the turn states; the
prompt is :func:`~memory_r1.agents.manager.build_manager_messages` over those facts and the owner's
memories related to them (shown with per-prompt integer ids). ``ground_truth`` is the JSON list of
the linked questions' gold answers; ``extra_info`` adds ``dia_id``, ``owner`` (whose bank the
manager edits: the turn's speaker), ``timestamp`` (the session date, stamped on ADDs), ``facts``,
``facts_source``, ``id_map`` (JSON ``{"0": memory id, ...}``), ``banks`` (JSON ``{speaker:
snapshot}`` of both speakers' banks, without vectors and history), ``questions`` (``qid``,
``question``, ``answer``, ``category`` of every question citing the turn), ``qids`` and ``top_k``
(memories per speaker the frozen Answer Agent retrieves when the reward is computed).

Bank sources (``source``, named in every row):

- ``observations``: LoCoMo's own per-session ``observation`` facts (``[fact, dia_id(s)]`` per
  speaker, stamped with the session date), read from the raw json. No LLM: the cheap source for
  CPU recipes. For a Manager row, the turn's facts are the observations made from it (a turn with
  none gives its own text as the one fact, ``facts_source = "turn"``).
- ``pipeline``: banks built by a Memory Manager with :class:`~memory_r1.agents.pipeline.Pipeline`
  (an LLM: the untrained backbone by default, or a trained manager checkpoint). For Manager rows
  each evidence turn's preceding window is ingested as its own (virtual) conversation, side by side
  in one batched pass, and the turn's facts come from the extractor.
- ``banks``: banks already built, e.g. the ``banks/`` folder of a ``memr1 eval`` run
  (:class:`~memory_r1.memory.BankFactory` path); Answer rows only.

>>> Observation("Sam", "Sam adopted a dog.", ("D1:3",), 1, "8 May, 2023").last_turn({"D1:3": 2})
2
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memory_r1.agents.retrieval import bank_namespace, per_speaker, related_memories
from memory_r1.types import QA, Conversation, MemoryItem, Session, Turn

if TYPE_CHECKING:  # pragma: no cover
    from memory_r1.data.splits import Split
    from memory_r1.llm.base import LLM
    from memory_r1.memory import BankFactory

log = logging.getLogger(__name__)

ANSWER_SOURCE = "memr1/answer"
MANAGER_SOURCE = "memr1/manager"
ANSWER_ABILITY = "memory_qa"
MANAGER_ABILITY = "memory_management"
SOURCES = ("observations", "pipeline", "banks")
OBSERVATION_ACTOR = "locomo-observation"


class EpisodeError(ValueError):
    """Episodes that cannot be built as asked (unknown source, missing banks, ...)."""


# ------------------------------------------------------------------------------ observations


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
    Evidence-style ids are normalised (``D30:05`` -> ``D30:5``); a fact may cite several turns."""
    from memory_r1.data.locomo import normalise_evidence, read_json
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
        raise EpisodeError(f"no conversation {sorted(missing)} in {path}")
    return out


def add_observations(bank, observations: Sequence[Observation]) -> list[MemoryItem]:
    """Store observations in a bank (timestamp = session date, the cited turns as metadata)."""
    if not observations:
        return []
    return bank.add_many(
        [o.text for o in observations],
        timestamps=[o.date for o in observations],
        metadatas=[{"dia_ids": list(o.dia_ids), "source": "observation"} for o in observations],
        actor=OBSERVATION_ACTOR,
    )


# ------------------------------------------------------------------------------ banks


def observation_banks(
    conversations: Sequence[Conversation], factory: BankFactory, data: str | Path | None = None
) -> dict[str, int]:
    """Fill both speakers' banks of each conversation with its observations (banks cleared first).
    Returns ``{namespace: memories}``."""
    obs = load_observations([c.conversation_id for c in conversations], data)
    sizes = {}
    for conv in conversations:
        for speaker in conv.speakers:
            ns = bank_namespace(conv.conversation_id, speaker)
            bank = factory.bank(ns)
            bank.clear()
            add_observations(bank, [o for o in obs[conv.conversation_id] if o.speaker == speaker])
            sizes[ns] = len(bank)
    return sizes


def pipeline_banks(
    conversations: Sequence[Conversation], factory: BankFactory, llm: LLM, ingest: dict
) -> dict:
    """Build both speakers' banks of each conversation with the Memory-R1 pipeline (extractor +
    Memory Manager of ``llm``; ``ingest`` is an eval recipe's ``ingest`` section). Banks are cleared
    first. Returns the pipeline's ingestion statistics."""
    from memory_r1.agents.pipeline import Pipeline

    for conv in conversations:
        for speaker in conv.speakers:
            factory.bank(bank_namespace(conv.conversation_id, speaker)).clear()
    pipe = Pipeline(llm, factory.bank, {"ingest": ingest, "answer": {}}, method="memory-r1")
    return pipe.ingest(list(conversations)).as_dict()


def check_banks(conversations: Sequence[Conversation], factory: BankFactory) -> dict[str, int]:
    """Pre-built banks: every speaker of every conversation must have one. ``{namespace: size}``."""
    present = set(factory.namespaces())
    need = [bank_namespace(c.conversation_id, s) for c in conversations for s in c.speakers]
    missing = [ns for ns in need if ns not in present]
    if missing:
        raise EpisodeError(
            f"the banks at {factory.store.location} lack {', '.join(missing)} "
            f"(they hold {', '.join(sorted(present)) or 'nothing'})"
        )
    return {ns: len(factory.bank(ns)) for ns in need}


# ------------------------------------------------------------------------------ rows


def _questions_of(split: Split, conv: Conversation, exclude_qids: Collection[str] = ()) -> list[QA]:
    return [q for q in split.questions() if q.conversation_id == conv.conversation_id and q.qid not in exclude_qids]


def answer_rows(
    split: Split,
    factory: BankFactory,
    *,
    top_k: int = 30,
    distill: bool = True,
    source: str = "observations",
    max_questions: int | None = None,
    exclude_qids: Collection[str] = (),
) -> list[dict]:
    """One Answer Agent row per question of ``split``: ``top_k`` memories per speaker retrieved by
    the question from ``factory``'s banks (already filled: :func:`observation_banks`,
    :func:`pipeline_banks` or :func:`check_banks`). Questions in ``exclude_qids`` get no row (e.g.
    the audited-wrong gold answers, :mod:`memory_r1.data.audit`)."""
    from memory_r1.agents.answerer import build_answer_messages

    if top_k < 0:
        raise EpisodeError(f"top_k must be >= 0, got {top_k}")
    rows: list[dict] = []
    for conv in split.conversations:
        qs = _questions_of(split, conv, exclude_qids)
        a, b = conv.speakers
        texts = [q.question for q in qs]
        hits = per_speaker(factory.bank(bank_namespace(conv.conversation_id, a)),
                           factory.bank(bank_namespace(conv.conversation_id, b)), texts, top_k)
        for q, (ma, mb) in zip(qs, hits, strict=True):
            rows.append(
                {
                    "data_source": ANSWER_SOURCE,
                    "prompt": build_answer_messages(q.question, a, ma, b, mb, distill=distill),
                    "ability": ANSWER_ABILITY,
                    "reward_model": {"style": "rule", "ground_truth": q.answer},
                    "extra_info": {
                        "index": len(rows),
                        "split": split.name,
                        "conversation_id": conv.conversation_id,
                        "qid": q.qid,
                        "question": q.question,
                        "answer": q.answer,
                        "category": q.category,
                        "speakers": [a, b],
                        "source": source,
                        "top_k": top_k,
                        "distill": distill,
                        "memory_ids": [m.id for m in ma] + [m.id for m in mb],
                    },
                }
            )
            if max_questions is not None and len(rows) >= max_questions:
                return rows
    return rows


@dataclass
class EvidenceTurn:
    """A turn some questions cite as evidence, its position in the dialogue and those questions."""

    turn: Turn
    position: int
    questions: list[QA] = field(default_factory=list)


def evidence_turns(conv: Conversation, questions: Iterable[QA]) -> list[EvidenceTurn]:
    """The turns of ``conv`` cited as evidence by ``questions``, each once (with every question that
    cites it), in dialogue order. Evidence ids that name no turn are skipped."""
    positions = {t.dia_id: i for i, t in enumerate(conv.turns)}
    found: dict[str, EvidenceTurn] = {}
    for q in questions:
        if q.conversation_id != conv.conversation_id:
            continue
        for turn in conv.evidence_turns(q):
            et = found.setdefault(turn.dia_id, EvidenceTurn(turn, positions[turn.dia_id]))
            if q not in et.questions:
                et.questions.append(q)
    return sorted(found.values(), key=lambda e: e.position)


def window_start(position: int, history_turns: int | None) -> int:
    """First turn position of the history window before ``position``.

    >>> window_start(120, 50), window_start(20, 50), window_start(120, None)
    (70, 0, 0)
    """
    if history_turns is None:
        return 0
    if history_turns < 0:
        raise EpisodeError(f"history_turns must be >= 0 or null, got {history_turns}")
    return max(0, position - history_turns)


def window_conversation(conv: Conversation, start: int, stop: int, suffix: str) -> Conversation:
    """The turns ``[start, stop)`` of ``conv`` (sessions kept, with their dates) as a conversation of
    their own, ``{conversation_id}@{suffix}``, without questions."""
    sessions, pos = [], 0
    for s in conv.sessions:
        keep = [t for i, t in enumerate(s.turns, start=pos) if start <= i < stop]
        pos += len(s.turns)
        if keep:
            sessions.append(Session(index=s.index, date_time=s.date_time, turns=keep))
    return Conversation(
        conversation_id=f"{conv.conversation_id}@{suffix}",
        speaker_a=conv.speaker_a,
        speaker_b=conv.speaker_b,
        sessions=sessions,
        qa=[],
    )


def compact_snapshot(snapshot: dict) -> dict:
    """A bank snapshot as carried in a row: memories without history events (a restore gives each
    memory an empty history) and without vectors (re-embedded on restore)."""
    out = dict(snapshot)
    out["history"] = []
    out["memories"] = [{k: v for k, v in m.items() if k != "vector"} for m in snapshot.get("memories", [])]
    return out


def _manager_row(
    index: int,
    split_name: str,
    conv: Conversation,
    et: EvidenceTurn,
    facts: list[str],
    facts_source: str,
    banks: dict[str, Any],
    related_k: int,
    max_related: int,
    answer_top_k: int,
    source: str,
    history_turns: int | None,
) -> dict:
    from memory_r1.agents.manager import build_manager_messages

    owner = et.turn.speaker
    related = related_memories(banks[owner], facts, related_k, max_related)
    msgs, id_map = build_manager_messages(facts, related, owner=owner)
    snaps = {sp: compact_snapshot(banks[sp].snapshot()) for sp in conv.speakers}
    return {
        "data_source": MANAGER_SOURCE,
        "prompt": msgs,
        "ability": MANAGER_ABILITY,
        "reward_model": {"style": "rule", "ground_truth": json.dumps([q.answer for q in et.questions])},
        "extra_info": {
            "index": index,
            "split": split_name,
            "conversation_id": conv.conversation_id,
            "dia_id": et.turn.dia_id,
            "owner": owner,
            "timestamp": et.turn.session_date,
            "speakers": list(conv.speakers),
            "facts": list(facts),
            "facts_source": facts_source,
            "id_map": json.dumps({str(k): v for k, v in id_map.items()}),
            "banks": json.dumps(snaps, ensure_ascii=False),
            "bank_sizes": [len(snaps[sp]["memories"]) for sp in conv.speakers],
            "questions": [
                {"qid": q.qid, "question": q.question, "answer": q.answer, "category": q.category}
                for q in et.questions
            ],
            "qids": [q.qid for q in et.questions],
            "top_k": answer_top_k,
            "source": source,
            "history_turns": -1 if history_turns is None else int(history_turns),
        },
    }


def _scratch_factory(embedder=None) -> BankFactory:
    """An in-memory store for the per-turn bank states; the same facts recur in many states, so the
    default MiniLM embedder is wrapped in a text -> vector cache."""
    from memory_r1.memory import BankFactory, CachingEmbedder, MiniLMEmbedder

    return BankFactory.open(path=":memory:", embedder=embedder or CachingEmbedder(MiniLMEmbedder()))


def manager_rows(
    split: Split,
    *,
    source: str = "observations",
    history_turns: int | None = None,
    related_k: int = 3,
    max_related: int = 10,
    answer_top_k: int = 30,
    llm: LLM | None = None,
    ingest: dict | None = None,
    data: str | Path | None = None,
    embedder=None,
    max_turns: int | None = None,
    exclude_qids: Collection[str] = (),
) -> list[dict]:
    """One Memory Manager row per evidence turn of ``split`` (the paper's Algorithm 1): bank state
    from the preceding turns (``history_turns``: window length, None = all), the turn's facts, the
    owner's related memories, the linked questions with gold answers.

    ``source``: ``observations`` (no LLM) or ``pipeline`` (needs ``llm`` and an ``ingest`` recipe
    section: the manager that builds the states and the extractor that states the turn's facts).
    ``embedder``: for the scratch banks (default MiniLM). ``max_turns``: keep the first N evidence
    turns (smoke runs). ``exclude_qids``: questions left out of every row (their gold answers never
    reach the reward); a turn cited only by such questions gets no row."""
    if source not in ("observations", "pipeline"):
        raise EpisodeError(
            f"Memory Manager episodes need a bank state before each turn: source must be "
            f"observations or pipeline, not {source!r}"
        )
    if source == "pipeline" and (llm is None or ingest is None):
        raise EpisodeError("source=pipeline needs an LLM and an ingest recipe section")
    plan: list[tuple[Conversation, EvidenceTurn]] = []
    for conv in split.conversations:
        for et in evidence_turns(conv, _questions_of(split, conv, exclude_qids)):
            plan.append((conv, et))
    if max_turns is not None:
        plan = plan[:max_turns]
    factory = _scratch_factory(embedder)
    rows: list[dict] = []
    try:
        if source == "observations":
            _observation_states(plan, factory, history_turns, data)
            facts = _observation_facts(plan, data)
        else:
            _pipeline_states(plan, factory, history_turns, llm, ingest)  # type: ignore[arg-type]
            facts = _extracted_facts(plan, llm, ingest)  # type: ignore[arg-type]
        for (conv, et), (fs, fsrc) in zip(plan, facts, strict=True):
            banks = {sp: factory.bank(_state_namespace(conv, et, sp)) for sp in conv.speakers}
            rows.append(
                _manager_row(len(rows), split.name, conv, et, fs, fsrc, banks, related_k, max_related,
                             answer_top_k, source, history_turns)
            )
    finally:
        factory.close()
    log.info("%d Memory Manager episodes (%s) from %s", len(rows), source, split.conversation_ids)
    return rows


def _state_namespace(conv: Conversation, et: EvidenceTurn, speaker: str) -> str:
    return bank_namespace(f"{conv.conversation_id}@{et.turn.dia_id}", speaker)


def _observation_states(plan, factory, history_turns, data) -> None:
    convs = {c.conversation_id: c for c, _ in plan}
    obs = load_observations(list(convs), data)
    for conv, et in plan:
        positions = {t.dia_id: i for i, t in enumerate(conv.turns)}
        start = window_start(et.position, history_turns)
        known = [(o, o.last_turn(positions)) for o in obs[conv.conversation_id]]
        before = [o for o, p in known if p is not None and start <= p < et.position]
        for speaker in conv.speakers:
            add_observations(factory.bank(_state_namespace(conv, et, speaker)),
                             [o for o in before if o.speaker == speaker])


def _observation_facts(plan, data) -> list[tuple[list[str], str]]:
    obs = load_observations(list({c.conversation_id for c, _ in plan}), data)
    out = []
    for conv, et in plan:
        mine = [o.text for o in obs[conv.conversation_id]
                if o.speaker == et.turn.speaker and et.turn.dia_id in o.dia_ids]
        out.append((mine, "observation") if mine else ([et.turn.render()], "turn"))
    return out


def _pipeline_states(plan, factory, history_turns, llm, ingest) -> None:
    from memory_r1.agents.pipeline import Pipeline

    virtual = []
    for conv, et in plan:
        start = window_start(et.position, history_turns)
        virtual.append(window_conversation(conv, start, et.position, et.turn.dia_id))
    pipe = Pipeline(llm, factory.bank, {"ingest": ingest, "answer": {}}, method="memory-r1")
    stats = pipe.ingest([v for v in virtual if v.sessions])
    log.info("bank states for %d evidence turns built by %s: %s", len(plan), llm.name, stats.ops)


def _extracted_facts(plan, llm, ingest) -> list[tuple[list[str], str]]:
    from memory_r1.agents._text import drop_cut_line
    from memory_r1.agents.extractor import build_extraction_messages, parse_facts
    from memory_r1.agents.pipeline import sampling

    gens = llm.generate([build_extraction_messages(et.turn) for _, et in plan], sampling(ingest["extract"]))
    out = []
    for (_, et), g in zip(plan, gens, strict=True):
        parsed = parse_facts(drop_cut_line(g.text, g.finish_reason), et.turn.speaker)
        out.append((parsed.facts, "extractor") if parsed.facts else ([et.turn.render()], "turn"))
    return out


# ------------------------------------------------------------------------------ parquet


def write_rows(rows: Sequence[dict], path: str | Path) -> Path:
    """Write rows as parquet (verl's ``data.train_files`` / ``data.val_files``); returns the path."""
    import pandas as pd

    if not rows:
        raise EpisodeError(f"no episodes to write to {path}")
    import io

    from memory_r1.runs import atomic_write

    buf = io.BytesIO()
    pd.DataFrame(list(rows)).to_parquet(buf, index=False)
    atomic_write(Path(path), buf.getvalue())
    return Path(path)


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a parquet file as plain Python (lists, dicts, str)."""
    import pyarrow.parquet as pq

    return pq.read_table(str(path)).to_pylist()


def row_stats(rows: Sequence[dict]) -> dict:
    """Counts for a manifest: rows, data sources, sources, per-row memories (answer rows) or bank
    sizes and linked questions (manager rows)."""
    out: dict[str, Any] = {"rows": len(rows)}
    if not rows:
        return out
    out["data_sources"] = sorted({r["data_source"] for r in rows})
    out["sources"] = sorted({r["extra_info"]["source"] for r in rows})
    mem = [len(r["extra_info"]["memory_ids"]) for r in rows if "memory_ids" in r["extra_info"]]
    if mem:
        out["memories_per_row"] = {"min": min(mem), "max": max(mem), "mean": round(sum(mem) / len(mem), 2)}
    qs = [len(r["extra_info"]["questions"]) for r in rows if "questions" in r["extra_info"]]
    if qs:
        sizes = [sum(r["extra_info"]["bank_sizes"]) for r in rows if "bank_sizes" in r["extra_info"]]
        out["linked_questions"] = sum(qs)
        out["bank_memories"] = {"min": min(sizes), "max": max(sizes), "mean": round(sum(sizes) / len(sizes), 2)}
        out["facts_sources"] = {
            k: sum(1 for r in rows if r["extra_info"]["facts_source"] == k)
            for k in sorted({r["extra_info"]["facts_source"] for r in rows})
        }
    return out
