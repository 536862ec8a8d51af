"""The Memory-R1 pipeline over LoCoMo conversations.

Two banks per conversation, one per speaker (as in Mem0's LoCoMo harness), namespaced
``{conversation_id}/{speaker}``. Sessions are processed in order; within a step, the LLM calls of all
conversations and both speakers go out as one batch (extraction, then the Memory Manager), which is
the only ordering the banks require.

Methods (the same harness for each):
- ``memory-r1``: extractor -> Memory Manager ops -> banks; Answer Agent over top-k per speaker.
- ``rag-turns``: raw turns stored as memories (no LLM at ingestion); same Answer Agent.
- ``full-context``: no memory; the whole dialogue in the prompt, cut to the model's window.

Tracing: ``Pipeline(..., trace=callback)`` hands the callback one plain dict (JSON-ready) per event,
in the order things happen; without a callback nothing extra is read or built. Events (key
``event``):

- ``facts``: one per extracted turn: ``step``, ``conversation_id``, ``namespace``, ``session_date``,
  ``dia_id``, ``turn`` (the line the extractor read), ``completion``, ``facts``, ``parsed``;
- ``known_facts``: facts already stored verbatim and not sent to the manager (``skip_known_facts``):
  ``step``, ``namespace``, ``facts``;
- ``manager``: one per Memory Manager call: ``step``, ``namespace``, ``session_date``, ``facts``,
  ``related`` (the memories it was shown, with their ``prompt_id``), ``completion``, ``parsed``,
  ``invalid_ids``, ``malformed``, ``ops`` (each op's outcome, see
  :func:`memory_r1.agents.manager.apply_operations`) and the bank as ``bank_before`` / ``bank_after``
  the ops (``id``, ``text``, ``timestamp`` per memory, oldest first);
- ``answer``: one per question: ``qid``, ``question``, ``retrieved`` (``speaker``, ``id``, ``text``,
  ``timestamp``, ``score`` per memory, in prompt order) and ``prompt`` (the chat messages). The
  record :meth:`Pipeline.answer` returns is the row ``memr1 eval`` writes to ``predictions.jsonl``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

from memory_r1.agents._text import drop_cut_line
from memory_r1.agents.answerer import (
    build_answer_messages,
    build_context_messages,
    parse_answer,
)
from memory_r1.agents.extractor import build_extraction_messages, parse_facts
from memory_r1.agents.manager import (
    ApplyStats,
    apply_operations,
    build_manager_messages,
    parse_operations,
)
from memory_r1.agents.retrieval import bank_namespace, per_speaker, related_memories
from memory_r1.llm.base import LLM, SamplingParams
from memory_r1.recipes import pipeline_config
from memory_r1.types import QA, Conversation, Turn

log = logging.getLogger(__name__)

METHODS = ("memory-r1", "rag-turns", "full-context")


def _memories(items) -> list[dict]:
    return [{"id": m.id, "text": m.text, "timestamp": m.timestamp} for m in items]


def sampling(cfg: dict) -> SamplingParams:
    """SamplingParams from a recipe section (temperature, top_p, max_new_tokens, seed, stop); a key
    the section leaves unset (None) keeps SamplingParams' own default."""
    keys = ("temperature", "top_p", "max_new_tokens", "seed", "stop")
    return SamplingParams(**{k: cfg[k] for k in keys if cfg.get(k) is not None})


@dataclass
class IngestStats:
    chunks: int = 0
    extraction_calls: int = 0
    extraction_unparsed: int = 0
    facts: int = 0
    facts_known: int = 0  # facts already stored verbatim, not sent to the manager (skip_known_facts)
    manager_calls: int = 0
    manager_unparsed: int = 0
    manager_invalid_ids: int = 0
    manager_malformed: int = 0
    ops: ApplyStats = field(default_factory=ApplyStats)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    turns: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def session_chunks(
    conv: Conversation, turns_per_chunk: int, max_sessions: int | None = None
) -> list[tuple[str, list[Turn]]]:
    """(session date, turns) chunks in dialogue order; 0 = one chunk per session; `max_sessions`
    keeps only the first sessions (quick smoke runs)."""
    out = []
    for s in conv.sessions[: max_sessions or None]:
        size = turns_per_chunk or max(len(s.turns), 1)
        for i in range(0, len(s.turns), size):
            out.append((s.date_time, s.turns[i : i + size]))
    return out


class Pipeline:
    """Runs one method over conversations. ``bank_for(namespace)`` gives a MemoryBank; ``trace``
    (optional) receives one dict per ingestion and answering event (see the module docstring)."""

    def __init__(self, llm: LLM, bank_for: Callable[[str], object], cfg: dict, method: str = "memory-r1",
                 manager_llm: LLM | None = None, answer_llm: LLM | None = None,
                 trace: Callable[[dict], None] | None = None):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        self.llm = llm
        self.manager_llm = manager_llm or llm
        self.answer_llm = answer_llm or llm
        self.bank_for = bank_for
        self.cfg = pipeline_config(cfg)  # ingest and answer sections, validated, every default filled in
        self.method = method
        self.trace = trace

    # ---- ingestion --------------------------------------------------------------------------

    def ingest(self, conversations: list[Conversation], on_step: Callable[[int], None] | None = None) -> IngestStats:
        stats = IngestStats()
        t0 = time.perf_counter()
        if self.method == "rag-turns":
            for conv in conversations:
                n = self._ingest_turns(conv)
                stats.turns += n
                if on_step:
                    on_step(n)
        elif self.method == "memory-r1":
            self._ingest_memory_r1(conversations, stats, on_step)
        stats.seconds = time.perf_counter() - t0
        return stats

    def _ingest_turns(self, conv: Conversation) -> int:
        max_sessions = self.cfg["ingest"]["max_sessions"]
        all_turns = [t for _, chunk in session_chunks(conv, 0, max_sessions) for t in chunk]
        for speaker in conv.speakers:
            turns = [t for t in all_turns if t.speaker == speaker]
            if turns:
                self.bank_for(bank_namespace(conv.conversation_id, speaker)).add_many(
                    [t.render() for t in turns],
                    timestamps=[t.session_date for t in turns],
                    metadatas=[{"dia_id": t.dia_id} for t in turns],
                    actor="ingest",
                )
        return len(all_turns)

    def _ingest_memory_r1(self, conversations, stats: IngestStats, on_step) -> None:
        """Per chunk of turns (in dialogue order, all conversations side by side): extract facts from
        each turn, then one Memory Manager call per (conversation, speaker, fact group) with that
        speaker's new facts and the memories related to them (:class:`MemoryR1Ingestion`)."""
        MemoryR1Ingestion(self, conversations, stats).run(on_step)

    # ---- answering --------------------------------------------------------------------------

    def answer(self, conv: Conversation, questions: list[QA]) -> list[dict]:
        """One record per question: prediction, distilled memories, retrieved ids, tokens, latency
        (the batch's retrieval and generation time over its questions)."""
        t0 = time.perf_counter()
        acfg = self.cfg["answer"]
        params = sampling(acfg)
        a, b = conv.speakers
        texts = [q.question for q in questions]
        retrieved: list[tuple[list, list]] = []
        if self.method == "full-context":
            context = self._full_context(conv, acfg)
            prompts = [build_context_messages(q.question, context) for q in questions]
            retrieved = [([], [])] * len(questions)
        else:
            k = acfg["top_k"]
            retrieved = per_speaker(self.bank_for(bank_namespace(conv.conversation_id, a)),
                                    self.bank_for(bank_namespace(conv.conversation_id, b)), texts, k)
            prompts = [
                build_answer_messages(q.question, a, ma, b, mb, distill=acfg["distill"])
                for q, (ma, mb) in zip(questions, retrieved)
            ]
        if self.trace:
            for q, (ma, mb), msgs in zip(questions, retrieved, prompts):
                self.trace({"event": "answer", "qid": q.qid, "question": q.question,
                            "retrieved": [{"speaker": who, **m, "score": item.score}
                                          for who, items in ((a, ma), (b, mb))
                                          for item, m in zip(items, _memories(items))],
                            "prompt": msgs})
        gens = self.answer_llm.generate(prompts, params)
        per_q = (time.perf_counter() - t0) / max(len(questions), 1)
        out = []
        for q, g, (ma, mb) in zip(questions, gens, retrieved):
            parsed = parse_answer(g.text)
            out.append(
                {
                    "qid": q.qid,
                    "conversation_id": q.conversation_id,
                    "question": q.question,
                    "gold": q.answer,
                    "category": q.category,
                    "prediction": parsed.answer,
                    "answer_format_ok": parsed.ok,
                    "distilled": parsed.distilled,
                    "completion": g.text,
                    "retrieved_ids": [m.id for m in ma] + [m.id for m in mb],
                    "n_retrieved": len(ma) + len(mb),
                    "latency_s": round(per_q, 4),
                    "prompt_tokens": g.prompt_tokens,
                    "completion_tokens": g.completion_tokens,
                }
            )
        return out

    def _full_context(self, conv: Conversation, acfg: dict) -> str:
        lines = []
        for s in conv.sessions:
            lines.append(f"[{s.date_time}]")
            lines += [t.render() for t in s.turns]
        budget = self.answer_llm.context_window - acfg["max_new_tokens"] - acfg["context_margin"]
        text = "\n".join(lines)
        n = self.answer_llm.count_tokens([{"role": "user", "content": text}])
        if n <= budget:
            return text
        # keep the most recent part of the dialogue that fits (token count ~ proportional to chars)
        keep = max(1, int(len(lines) * budget / n))
        while keep > 1:
            cut = "\n".join(lines[-keep:])
            if self.answer_llm.count_tokens([{"role": "user", "content": cut}]) <= budget:
                break
            keep = int(keep * 0.95)
        log.warning(
            "full-context: %s has %d tokens, the window allows %d; kept the last %d of %d lines",
            conv.conversation_id, n, budget, keep, len(lines),
        )
        return "\n".join(lines[-keep:])


@dataclass(frozen=True)
class IngestSettings:
    """The ``ingest`` recipe section as the memory-r1 ingestion uses it (read in one place)."""

    extract: SamplingParams
    manager: SamplingParams
    related_k: int
    max_related: int
    max_facts: int  # facts per Memory Manager call
    skip_known: bool  # facts already stored verbatim are not sent to the manager
    turns_per_chunk: int
    max_sessions: int | None
    ahead_turns: int  # extraction runs this many turns ahead of the manager (0: one chunk at a time)

    @classmethod
    def from_section(cls, icfg: dict) -> IngestSettings:
        m = icfg["manager"]
        return cls(extract=sampling(icfg["extract"]), manager=sampling(m), related_k=m["related_k"],
                   max_related=m["max_related"], max_facts=m["max_facts_per_call"],
                   skip_known=m["skip_known_facts"], turns_per_chunk=icfg["turns_per_chunk"],
                   max_sessions=icfg["max_sessions"], ahead_turns=icfg["extract"]["ahead_turns"])


class MemoryR1Ingestion:
    """One ``memory-r1`` ingestion pass of a :class:`Pipeline` over conversations side by side.

    Step by step (a step is each conversation's next chunk of turns): :meth:`extract_from` (facts
    per turn; extraction does not read the bank, so it runs ahead of the manager in windows of
    ``ahead_turns`` turns, full batches instead of one short batch per session), :meth:`collect_facts`
    (each speaker's new facts), :meth:`manager_calls` (known facts dropped, the rest in groups of
    ``max_facts``), :meth:`manage` (one Memory Manager call per group, its operations applied)."""

    def __init__(self, pipe: Pipeline, conversations: list[Conversation], stats: IngestStats):
        self.pipe, self.conversations, self.stats = pipe, conversations, stats
        self.settings = IngestSettings.from_section(pipe.cfg["ingest"])
        self.chunks = {c.conversation_id: session_chunks(c, self.settings.turns_per_chunk, self.settings.max_sessions)
                       for c in conversations}
        self.steps = max((len(v) for v in self.chunks.values()), default=0)
        self._extracted: dict[int, list] = {}

    def run(self, on_step: Callable[[int], None] | None = None) -> None:
        stats = self.stats
        for step in range(self.steps):
            turns, gens = self.step_turns(step), self.extract_from(step)
            stats.extraction_calls += len(gens)
            todo = self.manager_calls(step, self.collect_facts(step, turns, gens))
            stats.facts += sum(len(f) for _, _, f in todo)
            self.manage(step, todo)
            stats.turns += len(turns)
            stats.chunks += 1
            log.info(
                "ingest step %d/%d: %d turns, %d facts so far, %d manager calls, ops so far %s",
                step + 1, self.steps, len(turns), stats.facts, stats.manager_calls, stats.ops,
            )
            if on_step:
                on_step(len(turns))

    def step_turns(self, step: int) -> list[tuple[Conversation, str, Turn]]:
        """(conversation, session date, turn) of every conversation's ``step``-th chunk."""
        out = []
        for conv in self.conversations:
            if step < len(self.chunks[conv.conversation_id]):
                date, chunk = self.chunks[conv.conversation_id][step]
                out += [(conv, date, t) for t in chunk]
        return out

    def extract_from(self, step: int) -> list:
        """The extractor's generations for the turns of ``step``; when none are waiting, one backend
        call extracts the turns of as many steps from ``step`` on as make ``ahead_turns``."""
        if step not in self._extracted:
            window, n = [], 0
            for s in range(step, self.steps):
                if window and n >= self.settings.ahead_turns:
                    break
                window.append((s, self.step_turns(s)))
                n += len(window[-1][1])
            msgs = [build_extraction_messages(t, d) for _, ts in window for _, d, t in ts]
            gens = self.pipe.manager_llm.generate(msgs, self.settings.extract) if msgs else []
            i = 0
            for s, ts in window:
                self._extracted[s], i = gens[i : i + len(ts)], i + len(ts)
        return self._extracted.pop(step)

    def collect_facts(self, step: int, turns: list, gens: list) -> dict[str, tuple[str, list[str]]]:
        """``{namespace: (session date, new facts)}``: each turn's facts in its speaker's bank,
        without repeats."""
        stats, trace = self.stats, self.pipe.trace
        facts_by_ns: dict[str, tuple[str, list[str]]] = {}
        for (conv, date, turn), g in zip(turns, gens):
            stats.prompt_tokens += g.prompt_tokens
            stats.completion_tokens += g.completion_tokens
            parsed = parse_facts(drop_cut_line(g.text, g.finish_reason), turn.speaker)
            if not parsed.ok:
                stats.extraction_unparsed += 1
                log.debug("extractor output without facts for %s: %r", turn.dia_id, g.text[:200])
            ns = bank_namespace(conv.conversation_id, turn.speaker)
            if trace:
                trace({"event": "facts", "step": step, "conversation_id": conv.conversation_id,
                       "namespace": ns, "session_date": date, "dia_id": turn.dia_id,
                       "turn": turn.render(), "completion": g.text, "facts": list(parsed.facts),
                       "parsed": parsed.ok})
            bucket = facts_by_ns.setdefault(ns, (date, []))[1]
            bucket += [f for f in parsed.facts if f not in bucket]
        return facts_by_ns

    def manager_calls(self, step: int, facts_by_ns: dict) -> list[tuple[str, str, list[str]]]:
        """(namespace, date, facts) per Memory Manager call: facts already held verbatim left out
        (``skip_known``), the rest in groups of ``max_facts``."""
        todo = []
        for ns, (date, facts) in facts_by_ns.items():
            if self.settings.skip_known and facts:
                held = {_norm(m.text) for m in self.pipe.bank_for(ns).list()}
                known = [f for f in facts if _norm(f) in held]
                self.stats.facts_known += len(known)
                if self.pipe.trace and known:
                    self.pipe.trace({"event": "known_facts", "step": step, "namespace": ns, "facts": known})
                facts = [f for f in facts if _norm(f) not in held]
            for i in range(0, len(facts), self.settings.max_facts):
                todo.append((ns, date, facts[i : i + self.settings.max_facts]))
        return todo

    def manage(self, step: int, todo: list[tuple[str, str, list[str]]]) -> None:
        """One Memory Manager call per group (with the owner's memories related to its facts, all in
        one batch), then each call's operations applied to its bank."""
        s = self.settings
        prompts, maps, shown = [], [], []
        for ns, _, facts in todo:
            related = related_memories(self.pipe.bank_for(ns), facts, s.related_k, s.max_related)
            msgs, id_map = build_manager_messages(facts, related, owner=ns.split("/", 1)[1])
            prompts.append(msgs)
            maps.append(id_map)
            shown.append(related)
        gens = self.pipe.manager_llm.generate(prompts, s.manager) if prompts else []
        self.stats.manager_calls += len(gens)
        for (ns, date, facts), id_map, related, g in zip(todo, maps, shown, gens):
            self.apply(step, ns, date, facts, id_map, related, g)

    def apply(self, step: int, ns: str, date: str, facts: list[str], id_map: dict, related: list, g) -> None:
        """Parse one Memory Manager completion and apply its operations (ids it was not shown are
        rejected and counted); traced with the bank before and after."""
        stats, bank = self.stats, self.pipe.bank_for(ns)
        stats.prompt_tokens += g.prompt_tokens
        stats.completion_tokens += g.completion_tokens
        parsed = parse_operations(drop_cut_line(g.text, g.finish_reason), id_map)
        stats.manager_invalid_ids += len(parsed.invalid_ids)
        stats.manager_malformed += parsed.malformed
        if parsed.invalid_ids:
            log.info("manager used ids not in its prompt (%s) for %s: rejected", parsed.invalid_ids, ns)
        event = None
        if self.pipe.trace:
            event = {"event": "manager", "step": step, "namespace": ns, "session_date": date,
                     "facts": list(facts),
                     "related": [{"prompt_id": i, **m} for i, m in enumerate(_memories(related))],
                     "completion": g.text, "parsed": parsed.parsed,
                     "invalid_ids": list(parsed.invalid_ids), "malformed": parsed.malformed,
                     "ops": [], "bank_before": _memories(bank.list())}
        if not parsed.parsed:
            stats.manager_unparsed += 1
            log.debug("unparseable manager output for %s: %r", ns, g.text[:200])
        else:
            stats.ops.merge(apply_operations(bank, parsed.ops, timestamp=date,
                                             outcomes=None if event is None else event["ops"]))
        if event is not None:
            event["bank_after"] = _memories(bank.list())
            self.pipe.trace(event)


def batched(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
