"""Training stages: what each policy sees (its episodes) and how it is scored (its reward).

======== ======================================= ================================================
stage    episodes (:mod:`memory_r1.data.episodes`) reward (:mod:`memory_r1.train.verl.reward`)
======== ======================================= ================================================
answer   one per question: question + top-k        ``answer_em`` (paper) / ``answer_f1`` (CPU)
         memories per speaker from the banks
manager  one per evidence turn: bank state before  a frozen Answer Agent answers the linked
         it, the turn's facts, related memories    questions from the edited bank: ``manager_em``
                                                   (paper) / ``manager_f1`` (CPU)
======== ======================================= ================================================

:func:`build_episodes` turns a recipe's ``episodes:`` section into train and validation rows. The
bank source is the recipe's (``observations``, ``pipeline``, ``banks``); a Memory Manager
checkpoint (``manager``) builds the banks of the ``pipeline`` source, and ``banks`` (a folder of
pre-built banks, e.g. ``<eval out>/banks``) switches the answer stage to the ``banks`` source.
``episodes.drop_wrong_golds: true`` keeps the train questions whose gold answer the audit marks
wrong (``gold_audit.json``, :mod:`memory_r1.data.audit`) out of the training rows, so out of the RL
reward; the validation rows keep every question (the standard protocol).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memory_r1.data.episodes import ANSWER_SOURCE, MANAGER_SOURCE, EpisodeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    name: str
    data_source: str
    description: str


STAGES: dict[str, Stage] = {
    "answer": Stage("answer", ANSWER_SOURCE, "Answer Agent: retrieved memories -> answer"),
    "manager": Stage("manager", MANAGER_SOURCE, "Memory Manager: new facts + related memories -> operations"),
}


def get_stage(name: str) -> Stage:
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; choose from {', '.join(STAGES)}")
    return STAGES[name]


@dataclass
class EpisodeSet:
    train: list[dict]
    val: list[dict]
    info: dict[str, Any] = field(default_factory=dict)


def _eval_recipe(backbone: str, eval_recipe: str | Path | None) -> dict:
    """The ``llm`` and ``ingest`` sections the ``pipeline`` source uses (the backbone's eval recipe,
    or ``episodes.eval_recipe``), validated."""
    from memory_r1.config import load_eval_recipe, recipe_path

    path = eval_recipe or recipe_path(backbone, "eval")
    cfg = load_eval_recipe(path)
    return {"llm": cfg.llm, "ingest": cfg.ingest.model_dump(), "path": str(path)}


def _load_manager_llm(backbone: str, manager: str | None, llm_cfg):
    from memory_r1.llm import build_llm

    return build_llm(llm_cfg, manager or backbone)


def build_episodes(
    stage: str,
    episodes: dict,
    *,
    backbone: str,
    out_dir: Path,
    manager: str | None = None,
    banks: str | Path | None = None,
    data: str | Path | None = None,
) -> EpisodeSet:
    """Train and validation rows of a stage from a recipe's ``episodes`` section.

    ``out_dir``: where the ``pipeline`` source keeps the banks it builds (``out_dir/banks``).
    ``manager``: Memory Manager checkpoint for the ``pipeline`` source (default: the backbone).
    ``banks``: pre-built banks (answer stage; sets the source to ``banks``)."""
    from memory_r1.data import load_split
    from memory_r1.recipes import episodes_config

    get_stage(stage)
    episodes = episodes_config(stage, episodes)  # validated, every default filled in
    source = "banks" if banks is not None else episodes["source"]
    if manager is not None and source != "pipeline":
        raise EpisodeError(
            f"--manager builds banks with the Memory Manager, but the episodes' source is {source!r}; "
            "set episodes.source=pipeline"
        )
    train_split = load_split(episodes["train_split"], data)
    val_name = episodes["val_split"]
    val_split = load_split(val_name, data) if val_name else None
    max_val = episodes["max_val_rows"]
    t0 = time.perf_counter()
    info: dict[str, Any] = {"stage": stage, "source": source, "manager": manager,
                            "train_split": train_split.name, "val_split": val_name}
    drop = wrong_gold_qids(train_split, data) if episodes["drop_wrong_golds"] else []
    info["dropped_wrong_golds"] = drop
    if stage == "answer":
        train, val = _answer_episodes(source, episodes, train_split, val_split, max_val, backbone=backbone,
                                      out_dir=out_dir, manager=manager, banks=banks, data=data, info=info,
                                      exclude_qids=frozenset(drop))
    else:
        train, val = _manager_episodes(source, episodes, train_split, val_split, max_val, backbone=backbone,
                                       manager=manager, data=data, info=info, exclude_qids=frozenset(drop))
    info["seconds"] = round(time.perf_counter() - t0, 2)
    log.info("%s episodes: %d train, %d val (%s, %.1f s)", stage, len(train), len(val), source, info["seconds"])
    return EpisodeSet(train, val, info)


def wrong_gold_qids(split, data: str | Path | None = None) -> list[str]:
    """The questions of ``split`` whose gold answer the audit marks wrong (train: 15 of 152). An
    audit that cannot be found is an error here: the recipe asked for these questions to be dropped."""
    from memory_r1.data.audit import find_gold_audit

    audit = find_gold_audit(data=data)
    if audit is None:
        raise EpisodeError("episodes.drop_wrong_golds=true, but no gold_audit.json was found (beside the "
                           "LoCoMo file, in the shared folder or the user cache; or set $MEMR1_GOLD_AUDIT)")
    drop = audit.wrong_among(q.qid for q in split.questions())
    log.info("leaving %d questions with audited-wrong gold answers out of the %s rows (%s)",
             len(drop), split.name, audit.path)
    return drop


def _answer_episodes(source, episodes, train_split, val_split, max_val, *, backbone, out_dir, manager, banks,
                     data, info, exclude_qids=frozenset()) -> tuple[list[dict], list[dict]]:
    from memory_r1.data.episodes import answer_rows, check_banks, observation_banks, pipeline_banks
    from memory_r1.memory import BankFactory

    convs = list(train_split.conversations) + (list(val_split.conversations) if val_split else [])
    if source == "observations":
        factory = BankFactory.open(path=":memory:")
    elif source == "banks":
        if banks is None:
            banks = episodes["banks_path"]
        if not banks:
            raise EpisodeError("episodes.source=banks needs a banks folder (--banks DIR or episodes.banks_path)")
        if not Path(banks).is_dir():
            raise EpisodeError(f"banks folder not found: {banks}")
        factory = BankFactory.open(path=str(banks))
        info["banks_path"] = str(banks)
    elif source == "pipeline":
        path = Path(out_dir) / "banks"
        factory = BankFactory.open(path=str(path))
        info["banks_path"] = str(path)
    else:
        raise EpisodeError(f"unknown episodes.source {source!r}")
    try:
        if source == "observations":
            info["bank_sizes"] = observation_banks(convs, factory, data)
        elif source == "banks":
            info["bank_sizes"] = check_banks(convs, factory)
        else:
            ev = _eval_recipe(backbone, episodes["eval_recipe"])
            llm = _load_manager_llm(backbone, manager, ev["llm"])
            try:
                info["ingest"] = pipeline_banks(convs, factory, llm, ev["ingest"])
            finally:
                llm.close()
            info["bank_sizes"] = check_banks(convs, factory)
        kw = {"top_k": episodes["top_k"], "distill": episodes["distill"],
              "source": source}
        train = answer_rows(train_split, factory, exclude_qids=exclude_qids, **kw)
        val = answer_rows(val_split, factory, max_questions=max_val, **kw) if val_split else []
    finally:
        factory.close()
    return train, val


def _manager_episodes(source, episodes, train_split, val_split, max_val, *, backbone, manager, data,
                      info, exclude_qids=frozenset()) -> tuple[list[dict], list[dict]]:
    from memory_r1.data.episodes import manager_rows
    from memory_r1.memory import CachingEmbedder, MiniLMEmbedder

    kw: dict[str, Any] = {
        "embedder": CachingEmbedder(MiniLMEmbedder()),  # one model for the train and val states
        "source": source,
        "history_turns": episodes["history_turns"],
        "related_k": episodes["related_k"],
        "max_related": episodes["max_related"],
        "answer_top_k": episodes["top_k"],  # the frozen Answer Agent's memories per speaker
        "data": data,
    }
    llm = None
    if source == "pipeline":
        ev = _eval_recipe(backbone, episodes["eval_recipe"])
        llm = _load_manager_llm(backbone, manager, ev["llm"])
        kw.update(llm=llm, ingest=ev["ingest"])
    try:
        train = manager_rows(train_split, exclude_qids=exclude_qids, **kw)
        val = manager_rows(val_split, max_turns=max_val, **kw) if val_split else []
    finally:
        if llm is not None:
            llm.close()
    return train, val


def rebuild_banks(backbone: str, manager: str | None, conversations, folder: str | Path,
                  eval_recipe: str | Path | None = None) -> dict:
    """Build the banks of ``conversations`` in ``folder`` with a Memory Manager checkpoint (the
    backbone's eval recipe gives the LLM and ingestion settings); returns the ingestion statistics.
    ``memr1 train answer --banks folder`` then trains on them."""
    from memory_r1.data.episodes import pipeline_banks
    from memory_r1.memory import BankFactory

    ev = _eval_recipe(backbone, eval_recipe)
    llm = _load_manager_llm(backbone, manager, ev["llm"])
    try:
        with BankFactory.open(path=str(folder)) as factory:
            return pipeline_banks(conversations, factory, llm, ev["ingest"])
    finally:
        llm.close()
