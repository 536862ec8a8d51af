"""The Answer Agent stage: its rows, its reward names and its scoring.

**Rows** (:func:`answer_rows`): one per question of a split; the prompt is
:func:`~memory_r1.agents.answerer.build_answer_messages` over the ``top_k`` + ``top_k`` memories
retrieved *by the question* from the two speakers' banks (:func:`memory_r1.agents.retrieval.per_speaker`,
as evaluation retrieves them); ``ground_truth`` is the gold answer; ``extra_info`` adds ``qid``,
``question``, ``answer``, ``category``, ``top_k``, ``distill``, ``memory_ids``. The banks come from
any source (:mod:`memory_r1.train.stages.banks`): ``observations``, ``pipeline`` (built into
``<run>/banks``) or ready ``banks``.

**Rewards** (:data:`REWARDS`): the text after the last ``Answer:`` scored against the gold answer,
``answer_em`` (exact match, the paper's) or ``answer_f1`` (token-set F1, denser: the CPU recipes').
A completion without ``Answer:`` scores 0.0 and counts as unparsed.

>>> import asyncio
>>> asyncio.run(score("Answer: a dog named Rex", "Rex", {"qid": "conv-26/q1"}, reward="answer_f1"))
Scored(score=0.4, parsed=True, id='conv-26/q1', details={})
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memory_r1.recipes import AnswerRecipe
from memory_r1.rewards.answer import answer_em_reward, answer_f1_reward
from memory_r1.train.stages.base import EpisodeError, EpisodeRequest, Scored, Stage, questions_of

if TYPE_CHECKING:  # pragma: no cover
    from memory_r1.data.splits import Split
    from memory_r1.memory import BankFactory

DATA_SOURCE = "memr1/answer"
ABILITY = "memory_qa"
#: reward.name -> ``(completion, gold) -> float``; the first is the paper's
REWARDS = {"answer_em": answer_em_reward, "answer_f1": answer_f1_reward}


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
    the question from ``factory``'s banks (already filled: :mod:`memory_r1.train.stages.banks`).
    Questions in ``exclude_qids`` get no row (e.g. the audited-wrong gold answers,
    :mod:`memory_r1.data.audit`)."""
    from memory_r1.agents.answerer import build_answer_messages
    from memory_r1.agents.retrieval import bank_namespace, per_speaker
    from memory_r1.train.verl.rows import make_row

    if top_k < 0:
        raise EpisodeError(f"top_k must be >= 0, got {top_k}")
    rows: list[dict] = []
    for conv in split.conversations:
        qs = questions_of(split, conv, exclude_qids)
        a, b = conv.speakers
        hits = per_speaker(factory.bank(bank_namespace(conv.conversation_id, a)),
                           factory.bank(bank_namespace(conv.conversation_id, b)), [q.question for q in qs], top_k)
        for q, (ma, mb) in zip(qs, hits, strict=True):
            rows.append(make_row(DATA_SOURCE, build_answer_messages(q.question, a, ma, b, mb, distill=distill),
                                 ABILITY, q.answer, {
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
                                 }))
            if max_questions is not None and len(rows) >= max_questions:
                return rows
    return rows


def _open_banks(req: EpisodeRequest) -> BankFactory:
    from memory_r1.memory import BankFactory

    if req.source == "observations":
        return BankFactory.open(path=":memory:")
    if req.source == "banks":
        banks = req.banks if req.banks is not None else req.episodes["banks_path"]
        if not banks:
            raise EpisodeError("episodes.source=banks needs a banks folder (--banks DIR or episodes.banks_path)")
        if not Path(banks).is_dir():
            raise EpisodeError(f"banks folder not found: {banks}")
        req.info["banks_path"] = str(banks)
        return BankFactory.open(path=str(banks))
    if req.source == "pipeline":
        path = Path(req.out_dir) / "banks"
        req.info["banks_path"] = str(path)
        return BankFactory.open(path=str(path))
    raise EpisodeError(f"unknown episodes.source {req.source!r}")


def build(req: EpisodeRequest) -> tuple[list[dict], list[dict]]:
    """Train and validation rows: fill (or check) the banks of both splits' conversations from the
    request's source, then one row per question."""
    from memory_r1.train.stages.banks import (
        check_banks,
        eval_settings,
        load_manager_llm,
        observation_banks,
        pipeline_banks,
    )

    convs = list(req.train_split.conversations) + (list(req.val_split.conversations) if req.val_split else [])
    factory = _open_banks(req)
    try:
        if req.source == "observations":
            req.info["bank_sizes"] = observation_banks(convs, factory, req.data)
        elif req.source == "banks":
            req.info["bank_sizes"] = check_banks(convs, factory)
        else:
            ev = eval_settings(req.backbone, req.episodes["eval_recipe"])
            llm = load_manager_llm(req.backbone, req.manager, ev["llm"])
            try:
                req.info["ingest"] = pipeline_banks(convs, factory, llm, ev["ingest"])
            finally:
                llm.close()
            req.info["bank_sizes"] = check_banks(convs, factory)
        kw = {"top_k": req.episodes["top_k"], "distill": req.episodes["distill"], "source": req.source}
        train = answer_rows(req.train_split, factory, exclude_qids=req.exclude_qids, **kw)
        val = answer_rows(req.val_split, factory, max_questions=req.max_val, **kw) if req.val_split else []
    finally:
        factory.close()
    return train, val


async def score(solution_str: str, ground_truth: Any, extra_info: Mapping, *, reward: str, **_: Any) -> Scored:
    """One Answer Agent completion scored with the reward ``reward`` (a name of :data:`REWARDS`)."""
    from memory_r1.agents.answerer import parse_answer

    return Scored(float(REWARDS[reward](solution_str, str(ground_truth))), parse_answer(solution_str).ok,
                  extra_info.get("qid"))


def row_stats(rows: Sequence[dict]) -> dict:
    """Memories per row (min, max, mean)."""
    mem = [len(r["extra_info"]["memory_ids"]) for r in rows if "memory_ids" in r["extra_info"]]
    if not mem:
        return {}
    return {"memories_per_row": {"min": min(mem), "max": max(mem), "mean": round(sum(mem) / len(mem), 2)}}


STAGE = Stage(
    name="answer",
    data_source=DATA_SOURCE,
    description="Train the Answer Agent with RL (verl): episodes from the train split, held-out val, HF checkpoint.",
    rewards=tuple(REWARDS),
    eval_flag="--answer",
    recipe=AnswerRecipe,
    build=build,
    score=score,
    row_stats=row_stats,
    sources=("observations", "pipeline", "banks"),
)
