"""`memr1 eval`: build the banks, answer, judge, score, and write a resumable output folder (its
layout and what makes it resumable: :mod:`memory_r1.eval.folder`).

:func:`run_eval` is a list of named steps: :func:`open_folder` (config, manifest, seed),
:func:`question_plan`, :func:`load_agents`, :func:`ingest_pending`, :func:`answer_questions`,
:func:`judge_control` and :func:`write_summary`. ``summary.json``'s ``timings_s`` covers every
process that worked on the folder (see `run_timings`); ``this_process_s`` only the last one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memory_r1.eval.folder import (
    append_predictions,
    check_or_write_manifest,
    default_out_dir,
    ingest_marker,
    read_predictions,
    reuse_banks,
)
from memory_r1.runs import atomic_write

log = logging.getLogger(__name__)


@dataclass
class EvalRequest:
    backbone: str = "smollm2-135m"
    split: str = "val"
    method: str = "memory-r1"
    conversations: list[str] | None = None
    limit_questions: int | None = None
    manager: str | None = None  # checkpoint for the Memory Manager (and extractor)
    answer: str | None = None  # checkpoint for the Answer Agent
    judge: str | None = None  # None: the recipe's choice; "none"; "self"; a backbone alias/path
    out: Path | None = None
    data: Path | None = None
    recipe: Path | None = None
    overrides: list[str] = field(default_factory=list)
    qdrant_url: str | None = None
    show_progress: bool = True
    reuse_banks: Path | None = None  # another eval folder whose finished banks this one starts from
    gold_audit: Path | None = None  # default: found as the data file is (memory_r1/paths.py)


def resolve_config(req: EvalRequest) -> dict:
    """The eval recipe with the request's overrides, validated (:class:`memory_r1.recipes.EvalRecipe`:
    every key has its value), plus what the request says (backbone, split, method, ...)."""
    from memory_r1.config import load_eval_recipe, recipe_path

    path = req.recipe or recipe_path(req.backbone, "eval")
    cfg = load_eval_recipe(path, req.overrides).model_dump()
    cfg["recipe_path"] = str(path)
    cfg["backbone"] = req.backbone
    cfg["split"] = req.split
    cfg["method"] = req.method
    cfg["conversations"] = req.conversations
    cfg["limit_questions"] = req.limit_questions
    cfg["manager"] = req.manager
    cfg["answer"] = req.answer  # the Answer Agent's checkpoint; its settings are cfg["answer_agent"]
    if req.judge is not None:
        cfg["judge"]["backend"] = req.judge
    from memory_r1.eval.judge import judge_prompt_name

    judge_prompt_name(cfg["judge"])  # a prompt name the judge knows
    if req.qdrant_url:
        cfg["store"]["url"] = req.qdrant_url
    return cfg


class _Progress:
    """rich progress bars when asked for, no-ops otherwise."""

    def __init__(self, enabled: bool):
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                transient=False,
            )

    def __enter__(self):
        if self.bar:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.__exit__(*exc)

    def task(self, description: str, total: int):
        if not self.bar:
            return lambda n=1: None
        tid = self.bar.add_task(description, total=total)
        return lambda n=1: self.bar.advance(tid, n)


def _data_sha(path: Path) -> str:
    from memory_r1.paths import sha256_file

    return sha256_file(path)


def _open_store(cfg: dict, out: Path):
    """The banks of this run: local mode under out/banks by default, or a Qdrant server by URL."""
    from memory_r1.memory import BankFactory

    url = cfg["store"]["url"]
    return BankFactory.open(path=None if url else str(out / "banks"), url=url, backend=cfg["store"]["backend"])


def _load_llms(cfg: dict):
    """(main LLM, manager LLM, answer LLM); checkpoints given by --manager/--answer load beside it."""
    from memory_r1.llm import build_llm

    main = build_llm(cfg["llm"], cfg["backbone"])
    manager = build_llm(cfg["llm"], cfg["manager"]) if cfg["manager"] else main
    answer = build_llm(cfg["llm"], cfg["answer"]) if cfg["answer"] else main
    return main, manager, answer


def _load_judge(cfg: dict, main_llm, out: Path):
    from memory_r1.agents.pipeline import sampling
    from memory_r1.eval.judge import Judge, JudgeCache
    from memory_r1.paths import cache_dir

    jcfg = cfg["judge"]
    backend = jcfg["backend"]
    if backend == "none":
        return None, "none"
    if backend == "self":
        llm, name = main_llm, f"{main_llm.name} (same local backbone as the agents)"
    elif backend.startswith("openai:"):
        from memory_r1.llm import load_llm

        # openai:MODEL@BASE_URL
        model, _, url = backend[len("openai:"):].partition("@")
        llm = load_llm("openai", model, base_url=url)
        name = f"{model} @ {url}"
    else:
        from memory_r1.llm import build_llm

        llm, name = build_llm(cfg["llm"], backend), backend
    cache = JudgeCache(Path(jcfg["cache"] or cache_dir() / "judge" / "judgments.sqlite"))
    return Judge(llm, sampling(jcfg), cache, model_name=llm.name, prompt=jcfg["prompt"]), name


def ingest_batches(ingest_stats: dict) -> list[dict]:
    """The distinct ingestion batches behind per-conversation stats: conversations ingested side by
    side share one batch and record the same stats, so each batch is listed once.

    >>> b = {"turns": 10, "seconds": 40.0}
    >>> ingest_batches({"conv-1": b, "conv-2": dict(b), "conv-3": {"turns": 5, "seconds": 9.0}})
    [{'turns': 10, 'seconds': 40.0}, {'turns': 5, 'seconds': 9.0}]
    """
    return list({json.dumps(b, sort_keys=True): b for b in ingest_stats.values()}.values())


def read_ingest_marker(marker: Path) -> tuple[dict, str | None]:
    """A conversation's ingestion marker: (the stats of the batch that built its banks, the folder
    they were copied from by ``--reuse-banks``, or None when built in this folder)."""
    m = json.loads(marker.read_text())
    return m["batch_stats"], m.get("reused_from")


def run_timings(records: list[dict], ingest_stats: dict, this_process: dict, control_s: float = 0.0,
                reused: frozenset[str] | set[str] = frozenset()) -> dict:
    """Seconds per stage for the whole folder, over every process that worked on it (a resumed run
    keeps the time its earlier processes spent): ingestion from the clocks of its
    :func:`ingest_batches`, answering and judging from the per-question latencies, plus this
    process's load time and judge control pairs. Rows written before the judge
    time was recorded per question add no judge time; the result is never below this process's own
    judge clock. Conversations whose banks came from another folder (``reused``: ``--reuse-banks``)
    add no ingestion time: it was spent there.

    >>> recs = [{"latency_s": 2.0, "judge_latency_s": 0.5}, {"latency_s": 3.0}]
    >>> batch = {"turns": 10, "seconds": 40.0}
    >>> run_timings(recs, {"conv-1": batch, "conv-2": dict(batch)},
    ...             {"load_s": 5.0, "ingest_s": 0.0, "answer_s": 3.0, "judge_s": 1.5}, control_s=1.0)
    {'load_s': 5.0, 'ingest_s': 40.0, 'answer_s': 5.0, 'judge_s': 1.5}
    >>> run_timings(recs, {"conv-1": batch, "conv-2": dict(batch)}, {}, reused={"conv-1", "conv-2"})["ingest_s"]
    0.0
    """
    spent = {c: b for c, b in ingest_stats.items() if c not in reused}
    ingest = sum((float(b.get("seconds", 0.0)) for b in ingest_batches(spent)), 0.0)
    answer = sum(float(r.get("latency_s", 0.0)) for r in records)
    judged = sum(float(r.get("judge_latency_s", 0.0)) for r in records)
    judge = max(judged + control_s, this_process.get("judge_s", 0.0))
    return {"load_s": round(this_process.get("load_s", 0.0), 2), "ingest_s": round(ingest, 2),
            "answer_s": round(answer, 2), "judge_s": round(judge, 2)}


def _gold_audit_view(records: list[dict], req: EvalRequest) -> dict:
    """The score without the audited-wrong gold answers; an absent or unreadable audit is said so in
    the summary, never a failure of the run."""
    from memory_r1.data.audit import GoldAuditError, find_gold_audit
    from memory_r1.eval.report import gold_audit_view
    from memory_r1.paths import DataNotFoundError

    try:
        return gold_audit_view(records, find_gold_audit(req.gold_audit, req.data))
    except (GoldAuditError, DataNotFoundError) as exc:
        log.warning("no score without wrong golds: %s", exc)
        return gold_audit_view(records, None, absent_note=str(exc))


@dataclass
class Agents:
    """What a run loads: the LLMs in a :class:`~memory_r1.agents.pipeline.Pipeline`, the judge (None
    when off) and the bank store; :meth:`close` releases the store and the judge cache."""

    pipeline: Any
    store: Any
    judge: Any
    judge_name: str

    def close(self) -> None:
        self.store.close()
        if self.judge is not None:
            self.judge.cache.close()


@dataclass
class Timings:
    """This process's seconds per stage (``load_s``, ``ingest_s``, ``answer_s``, ``judge_s``)."""

    s: dict[str, float] = field(default_factory=lambda: {"load_s": 0.0, "ingest_s": 0.0, "answer_s": 0.0,
                                                          "judge_s": 0.0})
    control_s: float = 0.0

    def clock(self, stage: str) -> Callable[[], float]:
        """Start a clock for ``stage``; calling the result adds the time since to it and returns it."""
        t = time.perf_counter()

        def stop() -> float:
            dt = time.perf_counter() - t
            self.s[stage] += dt
            return dt

        return stop


def open_folder(req: EvalRequest) -> tuple[dict, Any, Path]:
    """Resolve the config (with the data's sha256), load the split, and create or check the output
    folder (manifest, ``--reuse-banks``); seeds everything. Returns (config, split, folder)."""
    from memory_r1.data import load_split
    from memory_r1.paths import resolve_locomo_path
    from memory_r1.runs import new_manifest, seed_everything, update_manifest

    cfg = resolve_config(req)
    data_path = resolve_locomo_path(req.data)
    cfg["data_sha256"] = _data_sha(data_path)
    split = load_split(req.split, req.data, conversations=req.conversations)
    out = Path(req.out or default_out_dir(cfg))
    out.mkdir(parents=True, exist_ok=True)
    # the openai backend has no dtype: the host records this CPU's "auto"
    manifest = new_manifest({"config": cfg}, seed=cfg["seed"], data_path=data_path,
                            data_sha256=cfg["data_sha256"], dtype=cfg["llm"].get("dtype"))
    check_or_write_manifest(out, manifest)
    if req.reuse_banks is not None:
        n = reuse_banks(Path(req.reuse_banks), out, cfg)
        if n:
            update_manifest(out, reused_banks={"from": str(req.reuse_banks), "conversations": n})
    seed_everything(cfg["seed"], torch=True)
    return cfg, split, out


def question_plan(split, limit_questions: int | None) -> list[tuple]:
    """(conversation, its questions) in split order, limited per conversation when asked."""
    plan: list[tuple] = []
    for conv in split.conversations:
        qs = [q for q in split.questions() if q.conversation_id == conv.conversation_id]
        plan.append((conv, qs if limit_questions is None else qs[:limit_questions]))
    return plan


def load_agents(cfg: dict, out: Path, method: str, timings: Timings) -> Agents:
    """The LLMs, the judge and the store of this run, and the pipeline over them."""
    from memory_r1.agents.pipeline import Pipeline

    stop = timings.clock("load_s")
    main_llm, manager_llm, answer_llm = _load_llms(cfg)
    judge, judge_name = _load_judge(cfg, main_llm, out)
    store = _open_store(cfg, out)
    stop()
    pipe = Pipeline(main_llm, store.bank, {"ingest": cfg["ingest"], "answer": cfg["answer_agent"]},
                    method=method, manager_llm=manager_llm, answer_llm=answer_llm)
    return Agents(pipe, store, judge, judge_name)


def ingest_pending(agents: Agents, plan: list[tuple], done: set[str], state: Path, cfg: dict, progress,
                   timings: Timings) -> tuple[dict, set[str]]:
    """Build the banks of every conversation with questions left and no ingestion marker (a killed
    ingestion's partial banks are cleared first), then mark them; returns each conversation's
    ingestion stats, read from its marker, and the conversations whose banks were copied from
    another folder (:func:`read_ingest_marker`)."""
    from memory_r1.agents.pipeline import session_chunks
    from memory_r1.agents.retrieval import bank_namespace

    state.mkdir(exist_ok=True)
    pending = [c for c, qs in plan if not ingest_marker(state, c.conversation_id).exists()
               and any(q.qid not in done for q in qs)]
    if pending and agents.pipeline.method != "full-context":
        for conv in pending:  # a killed ingestion left partial banks: start them again
            for sp in conv.speakers:
                agents.store.bank(bank_namespace(conv.conversation_id, sp)).clear()
        max_sessions = cfg["ingest"]["max_sessions"]
        total = sum(len(t) for c in pending for _, t in session_chunks(c, 0, max_sessions))
        stop = timings.clock("ingest_s")
        st = agents.pipeline.ingest(pending, on_step=progress.task("ingest turns", total))
        stop()
        for conv in pending:
            atomic_write(ingest_marker(state, conv.conversation_id),
                         json.dumps({"conversation": conv.conversation_id, "batch_stats": st.as_dict()}))
    stats, reused = {}, set()
    for c, _ in plan:
        marker = ingest_marker(state, c.conversation_id)
        if marker.exists():
            stats[c.conversation_id], source = read_ingest_marker(marker)
            if source:
                reused.add(c.conversation_id)
    return stats, reused


def answer_questions(agents: Agents, plan: list[tuple], done: set[str], preds_path: Path, cfg: dict, progress,
                     timings: Timings) -> None:
    """Answer (and judge) the questions not answered yet, a batch at a time, each batch appended
    to ``predictions.jsonl`` as soon as it is scored."""
    from memory_r1.agents.pipeline import batched

    todo = [(c, [q for q in qs if q.qid not in done]) for c, qs in plan]
    step = progress.task("answer questions", sum(len(qs) for _, qs in todo))
    bs = cfg["answer_agent"]["questions_per_batch"]
    for conv, qs in todo:
        for chunk in batched(qs, bs):
            stop = timings.clock("answer_s")
            rows = agents.pipeline.answer(conv, chunk)
            stop()
            score_rows(rows, agents.judge, timings)
            append_predictions(preds_path, rows)
            step(len(rows))


def score_rows(rows: list[dict], judge, timings: Timings) -> None:
    """Add each row's F1, BLEU-1, EM and the judge's label (None when there is no judge)."""
    from memory_r1.metrics import answer_scores

    for r in rows:
        r.update(answer_scores(r["prediction"], r["gold"]))
    if judge is None:
        for r in rows:
            r["judge"] = None
        return
    stop = timings.clock("judge_s")
    js = judge.judge([(r["question"], r["gold"], r["prediction"]) for r in rows])
    per_q = stop() / max(len(rows), 1)
    for r, j in zip(rows, js):
        r["judge"] = j.correct
        r["judge_parsed"] = j.parsed
        r["judge_latency_s"] = round(per_q, 4)


def judge_control(judge, records: list[dict], cfg: dict, timings: Timings) -> dict | None:
    """The judge's accuracy on known pairs (None without a judge); its time counts as judging."""
    from memory_r1.eval.judge import control_accuracy

    if judge is None:
        return None
    t = time.perf_counter()
    control = control_accuracy(judge, records, cfg["judge"]["control_pairs"])
    timings.control_s = time.perf_counter() - t
    timings.s["judge_s"] += timings.control_s
    return control


def run_eval(req: EvalRequest) -> Path:
    """Run (or resume) one evaluation; returns the output folder."""
    cfg, split, out = open_folder(req)
    plan = question_plan(split, req.limit_questions)
    preds_path = out / "predictions.jsonl"
    done = {r["qid"] for r in read_predictions(preds_path)}
    timings = Timings()
    agents = load_agents(cfg, out, req.method, timings)
    try:
        with _Progress(req.show_progress) as progress:
            ingest_stats, reused = ingest_pending(agents, plan, done, out / "state", cfg, progress, timings)
            answer_questions(agents, plan, done, preds_path, cfg, progress, timings)
        wanted = {q.qid for _, qs in plan for q in qs}
        records = [r for r in read_predictions(preds_path) if r["qid"] in wanted]
        control = judge_control(agents.judge, records, cfg, timings)
        banks = bank_fingerprints(agents, [c for c, _ in plan])
    finally:
        agents.close()
    write_summary(out, req, cfg, split, records, agents, ingest_stats, timings, control, banks, reused)
    log.info("wrote %s", out)
    return out


def threads_used(agents: Agents) -> dict[str, int]:
    """Generate calls per torch thread count over the run's local LLMs (``{"2": 310, "1": 12}``): a
    run whose count changed with the machine's load (the adaptive policy) may round bf16 sums
    otherwise than a repeat of it (``llm.num_threads: all`` fixes the count)."""
    pipe, seen, counts = agents.pipeline, set(), {}
    for llm in (pipe.llm, pipe.manager_llm, pipe.answer_llm, getattr(agents.judge, "llm", None)):
        if llm is None or id(llm) in seen:
            continue
        seen.add(id(llm))
        for n, calls in (getattr(llm, "threads_used", None) or {}).items():
            counts[str(n)] = counts.get(str(n), 0) + calls
    return dict(sorted(counts.items()))


def bank_fingerprints(agents: Agents, conversations: list) -> dict[str, str]:
    """Per conversation, a sha256 of what its banks hold (each speaker's memory texts and dialogue
    times, sorted; not ids or clocks): two eval folders with the same fingerprint answered from the
    same memory, wherever they were built. Empty for ``full-context`` (no banks)."""
    import hashlib

    from memory_r1.agents.retrieval import bank_namespace

    if agents.pipeline.method == "full-context":
        return {}
    out = {}
    for conv in conversations:
        held = sorted([sp, m.text, m.timestamp] for sp in conv.speakers
                      for m in agents.store.bank(bank_namespace(conv.conversation_id, sp)).list())
        out[conv.conversation_id] = hashlib.sha256(json.dumps(held).encode()).hexdigest()
    return out


def write_summary(out: Path, req: EvalRequest, cfg: dict, split, records: list[dict], agents: Agents,
                  ingest_stats: dict, timings: Timings, control: dict | None,
                  banks: dict[str, str] | None = None, reused: set[str] | frozenset[str] = frozenset()) -> None:
    """``summary.json`` (scores per category, with and without the audited-wrong gold answers, and
    the run's counts and times) and ``summary.md``."""
    from memory_r1.eval.report import summary_markdown, summary_table

    rows = summary_table(records)
    audit = _gold_audit_view(records, req)
    judge_prompt = None if agents.judge is None else agents.judge.prompt
    n_unparsed_judge = sum(1 for r in records if r.get("judge") is not None and not r.get("judge_parsed", True))
    summary = {
        "backbone": cfg["backbone"], "method": req.method, "split": req.split,
        "judge": agents.judge_name, "judge_prompt": judge_prompt, "questions": len(records), "rows": rows,
        "rows_without_wrong_golds": audit["rows"],
        "gold_audit": {k: v for k, v in audit.items() if k != "rows"},
        "answer_format_failures": sum(1 for r in records if not r.get("answer_format_ok", True)),
        "judge_unparsed": n_unparsed_judge,
        "judge_control": control,
        "ingest": ingest_stats,
        "bank_sha256": banks or {},
        "threads_used": threads_used(agents),
        "timings_s": run_timings(records, ingest_stats, timings.s, timings.control_s, reused),
        "this_process_s": {k: round(v, 2) for k, v in timings.s.items()},
    }
    atomic_write(out / "summary.json", json.dumps(summary, indent=2))
    atomic_write(out / "summary.md", summary_markdown(
        rows, f"LoCoMo {req.split}: {cfg['backbone']} / {req.method}",
        summary_notes(summary, split.conversation_ids), judge_prompt=judge_prompt, audit=audit))


def summary_notes(summary: dict, conversation_ids: list[str]) -> list[str]:
    """The lines under ``summary.md``'s title: what ran, the judge, format failures, time."""
    prompt, unparsed, control = summary["judge_prompt"], summary["judge_unparsed"], summary["judge_control"]
    notes = [
        f"backbone: {summary['backbone']}; method: {summary['method']}; split: {summary['split']} "
        f"({', '.join(conversation_ids)}); {summary['questions']} questions",
        f"judge: {summary['judge']}" + (f", {prompt} prompt" if prompt else "")
        + (f" ({unparsed} unreadable judge outputs scored WRONG)" if unparsed else ""),
        f"answers without an 'Answer:' line: {summary['answer_format_failures']}",
        "time (s, all runs into this folder): " + ", ".join(
            f"{k.removesuffix('_s')} {v:,.0f}" for k, v in summary["timings_s"].items()),
    ]
    if control:
        notes.append(
            f"judge check on {control['pairs']} known pairs: {control['accuracy']:.0f}% right (chance 50%; "
            f"identical answers judged CORRECT {control['identical_judged_correct']:.0f}%, another question's "
            f"answer judged WRONG {control['mismatched_judged_wrong']:.0f}%)"
        )
    return notes
