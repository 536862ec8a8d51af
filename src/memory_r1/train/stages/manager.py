"""The Memory Manager stage: its rows, its reward names and its scoring.

**Rows** (:func:`manager_rows`, the paper's Algorithm 1): one per dialogue turn that is evidence for
a question of the split, in dialogue order. The bank state is built from the turns *before* it (all
of them, or the last ``history_turns``); the facts are those the turn states; the prompt is
:func:`~memory_r1.agents.manager.build_manager_messages` over those facts and the owner's memories
related to them (:func:`memory_r1.agents.retrieval.related_memories`, shown with per-prompt integer
ids). ``ground_truth`` is the JSON list of the linked questions' gold answers; ``extra_info`` adds
``dia_id``, ``owner`` (whose bank the manager edits: the turn's speaker), ``timestamp`` (the session
date, stamped on ADDs), ``facts``, ``facts_source``, ``id_map`` (JSON ``{"0": memory id, ...}``),
``banks`` (JSON ``{speaker: snapshot}`` of both speakers' banks, without vectors and history),
``questions`` (``qid``, ``question``, ``answer``, ``category`` of every question citing the turn),
``qids`` and ``top_k`` (memories per speaker the frozen Answer Agent retrieves when the reward is
computed). Bank states come from ``observations`` (the turn's facts are the observations made from
it; a turn with none gives its own text as the one fact, ``facts_source = "turn"``) or the
``pipeline`` (each evidence turn's preceding window ingested as its own virtual conversation, side
by side in one batched pass; the turn's facts come from the extractor).

**Rewards** (:data:`REWARDS`): apply the completion's operations to the row's bank snapshot, let a
frozen Answer Agent answer the linked questions from the edited banks
(:func:`memory_r1.rewards.manager.manager_reward`), and score its answers by exact match
(``manager_em``, the paper's) or token-set F1 (``manager_f1``, the CPU recipes').

The frozen Answer Agent runs as its own Ray actor group in the training's cluster, shared by every
reward worker (``reward.answerer_server: ray``, the default: :mod:`memory_r1.train.verl.answerer`),
or is loaded once per reward worker process (``worker``). Its spec is the first of: env
``MEMR1_ANSWERER``, the recipe's ``reward.answerer``, the row's ``extra_info.answerer``, the default
``hf:smollm2-135m``. A spec is ``hf:<backbone or path>`` (transformers on this machine: the CPU
recipes use the untrained SmolLM2), ``openai:<model>@<base_url>`` (a vLLM or any OpenAI-compatible
server: the GPU recipes; the URL may come from ``$MEMR1_ANSWERER_BASE_URL``) or a mapping
``{backend, model, base_url, dtype, max_new_tokens, distill}``.

>>> window_start(120, 50), window_start(20, 50), window_start(120, None)
(70, 0, 0)
>>> parse_answerer_spec("openai:Qwen/Qwen2.5-7B-Instruct@http://gpu:8000/v1")["base_url"]
'http://gpu:8000/v1'
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memory_r1.agents.retrieval import bank_namespace, related_memories
from memory_r1.recipes import ManagerRecipe, ManagerReward
from memory_r1.train.stages.banks import scratch_factory
from memory_r1.train.stages.base import EpisodeError, EpisodeRequest, Scored, Stage, plain, questions_of
from memory_r1.types import QA, Conversation, Session, Turn

if TYPE_CHECKING:  # pragma: no cover
    from memory_r1.data.splits import Split
    from memory_r1.llm.base import LLM

log = logging.getLogger(__name__)

DATA_SOURCE = "memr1/manager"
ABILITY = "memory_management"
#: reward.name -> the metric the frozen Answer Agent's answers are scored with; the first is the paper's
REWARDS = {"manager_em": "em", "manager_f1": "f1"}
ANSWERER_ENV = "MEMR1_ANSWERER"
ANSWERER_URL_ENV = "MEMR1_ANSWERER_BASE_URL"
DEFAULT_ANSWERER = "hf:smollm2-135m"

_answerers: dict[str, Any] = {}
_answerers_lock = threading.Lock()


# ------------------------------------------------------------------------------ rows


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


def manager_row(
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
    from memory_r1.train.verl.rows import make_row

    owner = et.turn.speaker
    related = related_memories(banks[owner], facts, related_k, max_related)
    msgs, id_map = build_manager_messages(facts, related, owner=owner)
    snaps = {sp: compact_snapshot(banks[sp].snapshot()) for sp in conv.speakers}
    return make_row(DATA_SOURCE, msgs, ABILITY, json.dumps([q.answer for q in et.questions]), {
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
    })


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
        for et in evidence_turns(conv, questions_of(split, conv, exclude_qids)):
            plan.append((conv, et))
    if max_turns is not None:
        plan = plan[:max_turns]
    factory = scratch_factory(embedder)
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
                manager_row(len(rows), split.name, conv, et, fs, fsrc, banks, related_k, max_related,
                             answer_top_k, source, history_turns)
            )
    finally:
        factory.close()
    log.info("%d Memory Manager episodes (%s) from %s", len(rows), source, split.conversation_ids)
    return rows


def _state_namespace(conv: Conversation, et: EvidenceTurn, speaker: str) -> str:
    return bank_namespace(f"{conv.conversation_id}@{et.turn.dia_id}", speaker)


def _observation_states(plan, factory, history_turns, data) -> None:
    from memory_r1.data.observations import load_observations
    from memory_r1.train.stages.banks import add_observations

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
    from memory_r1.data.observations import load_observations

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


def build(req: EpisodeRequest) -> tuple[list[dict], list[dict]]:
    """Train and validation rows: one per evidence turn, its bank state from the request's source."""
    from memory_r1.memory import CachingEmbedder, MiniLMEmbedder
    from memory_r1.train.stages.banks import eval_settings, load_manager_llm

    kw: dict[str, Any] = {
        "embedder": CachingEmbedder(MiniLMEmbedder()),  # one model for the train and val states
        "source": req.source,
        "history_turns": req.episodes["history_turns"],
        "related_k": req.episodes["related_k"],
        "max_related": req.episodes["max_related"],
        "answer_top_k": req.episodes["top_k"],  # the frozen Answer Agent's memories per speaker
        "data": req.data,
    }
    llm = None
    if req.source == "pipeline":
        ev = eval_settings(req.backbone, req.episodes["eval_recipe"])
        llm = load_manager_llm(req.backbone, req.manager, ev["llm"])
        kw.update(llm=llm, ingest=ev["ingest"])
    try:
        train = manager_rows(req.train_split, exclude_qids=req.exclude_qids, **kw)
        val = manager_rows(req.val_split, max_turns=req.max_val, **kw) if req.val_split else []
    finally:
        if llm is not None:
            llm.close()
    return train, val


def row_stats(rows: Sequence[dict]) -> dict:
    """Linked questions, bank memories per row (min, max, mean), where the facts came from."""
    qs = [len(r["extra_info"]["questions"]) for r in rows if "questions" in r["extra_info"]]
    if not qs:
        return {}
    sizes = [sum(r["extra_info"]["bank_sizes"]) for r in rows if "bank_sizes" in r["extra_info"]]
    return {
        "linked_questions": sum(qs),
        "bank_memories": {"min": min(sizes), "max": max(sizes), "mean": round(sum(sizes) / len(sizes), 2)},
        "facts_sources": {
            k: sum(1 for r in rows if r["extra_info"]["facts_source"] == k)
            for k in sorted({r["extra_info"]["facts_source"] for r in rows})
        },
    }


# ------------------------------------------------------------------------------ reward


def parse_answerer_spec(spec: str | Mapping | None) -> dict:
    """``hf:NAME`` / ``openai:MODEL@URL`` / a mapping -> ``{backend, model, ...}``."""
    if spec is None or spec == "":
        spec = DEFAULT_ANSWERER
    if isinstance(spec, str) and spec.strip().startswith("{"):
        spec = json.loads(spec)
    if isinstance(spec, Mapping):
        out = plain(spec)
    else:
        backend, sep, rest = str(spec).partition(":")
        if not sep or backend not in ("hf", "openai", "vllm"):
            raise ValueError(f"answerer spec {spec!r}: expected hf:NAME, vllm:NAME or openai:MODEL@URL")
        out = {"backend": backend}
        if backend == "openai":
            model, _, url = rest.partition("@")
            out.update(model=model, base_url=url or None)
        else:
            out["model"] = rest
    if out.get("backend") not in ("hf", "openai", "vllm") or not out.get("model"):
        raise ValueError(f"answerer spec {spec!r} needs a backend (hf, vllm, openai) and a model")
    if out["backend"] == "openai" and not out.get("base_url"):
        out["base_url"] = os.environ.get(ANSWERER_URL_ENV) or os.environ.get("MEMR1_LLM_BASE_URL")
    return out


def get_answerer(spec: str | Mapping | None):
    """The frozen Answer Agent for a spec, built on first use and kept for the process's lifetime."""
    from memory_r1.llm import build_llm
    from memory_r1.llm.base import SamplingParams
    from memory_r1.recipes import AnswererSpec
    from memory_r1.rewards.manager import LLMAnswerer

    cfg = parse_answerer_spec(spec)
    key = json.dumps(cfg, sort_keys=True)
    with _answerers_lock:
        if key not in _answerers:
            t0 = time.perf_counter()
            s = AnswererSpec.model_validate(cfg)  # its defaults: 48 new tokens, no distillation, hf dtype auto
            llm = build_llm(s.llm, s.model)
            params = SamplingParams(temperature=0.0, max_new_tokens=s.max_new_tokens)
            _answerers[key] = LLMAnswerer(llm, params=params, distill=s.distill)
            log.info("frozen Answer Agent %s loaded in %.1f s (pid %d)", cfg, time.perf_counter() - t0, os.getpid())
        return _answerers[key]


#: the ``reward`` keys that say where the frozen Answer Agent runs: the ``answerer_*`` fields of
#: :class:`memory_r1.recipes.ManagerReward`, which holds their defaults
SERVER_KEYS = tuple(f for f in ManagerReward.model_fields if f.startswith("answerer_"))


def reward_kwargs(reward: Mapping) -> dict:
    """The recipe's frozen Answer Agent (``reward.answerer``, when it names one) and where it runs
    (``answerer_server`` and the actor group's size; validated recipes carry all four keys)."""
    out = {k: reward[k] for k in SERVER_KEYS if k in reward}
    if reward.get("answerer"):
        out["answerer"] = reward["answerer"]
    return out


def resolve_answerer(spec: str | Mapping | None, *, answerer_server: str = "worker", answerer_replicas: int = 1,
                     answerer_num_cpus: float = 1.0, answerer_num_gpus: float = 0.0):
    """The frozen Answer Agent a reward call uses: ``answerer_server="ray"`` inside a Ray worker ->
    the job's actor group (:func:`memory_r1.train.verl.answerer.actor_answerer`); an ``openai``
    answerer, ``"worker"``, or a call outside Ray (tests, scripts) -> loaded in this process."""
    cfg = parse_answerer_spec(spec)
    if answerer_server == "ray" and cfg["backend"] != "openai":
        from memory_r1.train.verl.answerer import actor_answerer, in_ray_worker

        if in_ray_worker():
            return actor_answerer(cfg, replicas=answerer_replicas, num_cpus=answerer_num_cpus,
                                  num_gpus=answerer_num_gpus)
    return get_answerer(cfg)


async def score(solution_str: str, ground_truth: Any, extra_info: Mapping, *, reward: str,
                answerer: str | Mapping | None = None, **where: Any) -> Scored:
    """One Memory Manager completion scored with the reward ``reward`` (a name of :data:`REWARDS`)
    by the frozen Answer Agent (see the module docstring for which one; ``where``: the
    :data:`SERVER_KEYS`, see :func:`resolve_answerer`)."""
    from memory_r1.rewards.manager import manager_reward

    spec = os.environ.get(ANSWERER_ENV) or (plain(answerer) if answerer else None) or extra_info.get("answerer")
    frozen = resolve_answerer(spec, **{k: where[k] for k in SERVER_KEYS if k in where})
    result = await manager_reward(solution_str, extra_info, frozen, metric=REWARDS[reward])
    return Scored(float(result.score), result.parsed, extra_info.get("dia_id"),
                  {"ops": result.ops, "invalid_ids": result.invalid_ids, "answers": result.answers})


STAGE = Stage(
    name="manager",
    data_source=DATA_SOURCE,
    description="Train the Memory Manager with RL (verl): one episode per evidence turn, frozen Answer Agent reward.",
    rewards=tuple(REWARDS),
    eval_flag="--manager",
    recipe=ManagerRecipe,
    build=build,
    score=score,
    reward_kwargs=reward_kwargs,
    row_stats=row_stats,
)
