"""`memr1 eval`: build the banks, answer, judge, score, and write a resumable output folder.

Folder layout::

    manifest.json        resolved config, seed, versions, data sha256, git commit (fingerprint checked on resume)
    banks/               the Qdrant banks (two per conversation)
    state/ingested-<id>.json   written atomically once a conversation's banks are complete (named by
                         `memory_r1.runs.data_path`: whatever the sample_id, never outside the folder)
    predictions.jsonl    one JSON line per question (appended per batch, fsynced), with its own
                         f1, bleu1, em and judge label (anyone can re-aggregate)
    summary.json / summary.md   the standard score and, labelled apart, the score without the
                         questions whose gold answer gold_audit.json marks wrong

Resume: a conversation without its ingestion marker has its banks cleared and rebuilt; questions
already in predictions.jsonl are not asked again; a half-written last line (a killed run) is dropped.
``summary.json``'s ``timings_s`` covers every process that worked on the folder (see `run_timings`);
``this_process_s`` only the last one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from memory_r1.runs import atomic_write, differing_keys, drop_nulls

log = logging.getLogger(__name__)

#: config keys that must agree for a folder to be resumed
FINGERPRINT_KEYS = (
    "backbone", "split", "method", "conversations", "limit_questions", "manager", "answer",
    "judge", "ingest", "answer_agent", "data_sha256", "llm",
)


class EvalFolderError(RuntimeError):
    """An output folder that belongs to another configuration."""


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


def ingest_marker(state: Path, conversation_id: str) -> Path:
    """The file saying a conversation's banks are complete, named through `memory_r1.runs.data_path`
    (so inside `state` whatever the id). A folder written before names were hashed keeps its plain
    ``ingested-<id>.json``: used when the id is a plain name and the marker names this conversation.

    >>> ingest_marker(Path("out/state"), "x/../../escaped").parent.as_posix()
    'out/state'
    """
    from memory_r1.runs import data_path

    path = data_path(state, "ingested", conversation_id)
    legacy = state / f"ingested-{conversation_id}.json"
    if not path.exists() and re.fullmatch(r"[A-Za-z0-9_-]{1,40}", conversation_id) and legacy.is_file():
        try:
            if json.loads(legacy.read_text()).get("conversation") == conversation_id:
                return legacy
        except (OSError, ValueError, AttributeError):
            pass
    return path


def complete_json_lines(raw: bytes) -> tuple[list[dict], int]:
    """The JSON lines of ``raw`` up to the first torn or broken one, and the byte length they cover.

    >>> complete_json_lines(b'{"a": 1}\\n{"b": 2}\\n{"c"')
    ([{'a': 1}, {'b': 2}], 18)
    """
    rows, good_end, pos = [], 0, 0
    for line in raw.splitlines(keepends=True):
        pos += len(line)
        if not line.endswith(b"\n"):
            break
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
        good_end = pos
    return rows, good_end


def read_predictions(path: Path, repair: bool = True) -> list[dict]:
    """Complete JSON lines; a torn last line (killed mid-write) is cut off the file (``repair``) or
    only skipped (``repair=False``: reading never changes the folder)."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    rows, good_end = complete_json_lines(raw)
    if good_end != len(raw) and repair:
        log.warning("dropping %d bytes of a half-written line at the end of %s", len(raw) - good_end, path)
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return rows


def append_predictions(path: Path, rows: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def resolve_config(req: EvalRequest) -> dict:
    from memory_r1.config import load_recipe, recipe_path

    path = req.recipe or recipe_path(req.backbone, "eval")
    cfg = load_recipe(path, req.overrides)
    cfg["recipe_path"] = str(path)
    cfg["backbone"] = req.backbone
    cfg["split"] = req.split
    cfg["method"] = req.method
    cfg["conversations"] = req.conversations
    cfg["limit_questions"] = req.limit_questions
    cfg["manager"] = req.manager
    cfg["answer"] = req.answer
    # the recipe's "answer" section describes the Answer Agent's settings
    cfg["answer_agent"] = cfg.pop("answer_agent", None) or {}
    if req.judge is not None:
        cfg["judge"] = {**cfg.get("judge", {}), "backend": req.judge}
    from memory_r1.eval.judge import judge_prompt_name

    # named even when the recipe relies on the default, so the fingerprint holds it
    cfg["judge"] = {**cfg.get("judge", {}), "prompt": judge_prompt_name(cfg.get("judge"))}
    if req.qdrant_url:
        cfg.setdefault("store", {})["url"] = req.qdrant_url
    return cfg


def default_out_dir(cfg: dict) -> Path:
    """``runs/eval/<backbone>-<method>-<split>``, always under ``runs/eval`` (a backbone given as a
    path or ``org/name`` contributes its last part, as in the train runner).

    >>> default_out_dir({"backbone": "/models/../x/Qwen2.5-7B", "method": "memory-r1", "split": "val"}).as_posix()
    'runs/eval/Qwen2.5-7B-memory-r1-val'
    """
    name = Path(str(cfg["backbone"])).name
    return Path("runs") / "eval" / f"{name if name not in ('', '.', '..') else 'model'}-{cfg['method']}-{cfg['split']}"


def fingerprint_value(config: dict, key: str):
    """A config value as the resume check compares it. A judge section written before judge prompts
    were named was scored with the default prompt; a setting that is null (off) compares as absent, so
    a recipe key added later with a null default does not orphan the folders written before it.

    >>> fingerprint_value({"judge": {"backend": "self"}}, "judge")
    {'backend': 'self', 'prompt': 'mem0'}
    >>> fingerprint_value({"llm": {"dtype": "auto", "quantize": None}}, "llm")
    {'dtype': 'auto'}
    """
    value = drop_nulls(config.get(key))
    if key == "judge" and isinstance(value, dict) and "prompt" not in value:
        from memory_r1.eval.judge import DEFAULT_JUDGE_PROMPT

        value = {**value, "prompt": DEFAULT_JUDGE_PROMPT}
    return value


def check_or_write_manifest(out: Path, manifest: dict) -> None:
    """Write the folder's manifest; a folder holding a run whose :data:`FINGERPRINT_KEYS` differ is
    refused (:class:`EvalFolderError`)."""
    from memory_r1.runs import write_manifest

    def same_fingerprint(old: dict) -> None:
        diff = differing_keys(old.get("config", {}), manifest["config"], FINGERPRINT_KEYS, fingerprint_value)
        if diff:
            raise EvalFolderError(
                f"{out} holds a run with another configuration (differs in: {', '.join(diff)}); "
                "use another --out or delete the folder"
            )

    write_manifest(out, manifest, check=same_fingerprint)


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


#: config keys that decide what ingestion builds: two folders that agree on all of them build the same banks
INGEST_KEYS = ("backbone", "split", "method", "conversations", "manager", "ingest", "llm", "store", "data_sha256")


def reuse_banks(src: Path, out: Path, cfg: dict) -> int:
    """Start ``out`` from the finished banks of another eval folder ``src`` built with the same
    :data:`INGEST_KEYS` (rows that change only the Answer Agent or the judge need not ingest again).

    Copies ``src/banks`` and its ingestion markers into ``out`` when ``out`` has no banks yet;
    returns how many conversations came ready (0, logged, when ``src`` has none finished or ``out``
    already has banks). A ``src`` built with other ingestion settings is refused."""
    import shutil

    if (cfg.get("store") or {}).get("url"):
        raise EvalFolderError("--reuse-banks works with banks on disk, not with a Qdrant server")
    try:
        other = json.loads((src / "manifest.json").read_text())["config"]
    except (OSError, ValueError, KeyError) as exc:
        raise EvalFolderError(f"--reuse-banks {src}: not an eval folder ({exc})") from None
    differ = differing_keys(other, cfg, INGEST_KEYS, fingerprint_value)
    if differ:
        raise EvalFolderError(f"--reuse-banks {src}: its banks were built with another {', '.join(differ)}")
    markers = sorted((src / "state").glob("ingested-*.json")) if (src / "state").is_dir() else []
    if not markers or not (src / "banks").is_dir():
        log.info("--reuse-banks %s: no finished ingestion there; building the banks here", src)
        return 0
    if (out / "banks").exists() or any((out / "state").glob("ingested-*.json")):
        log.info("%s already has banks of its own; not reusing %s", out, src)
        return 0
    tmp = out / ".banks-copy"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src / "banks", tmp, ignore=shutil.ignore_patterns(".lock"))
    os.replace(tmp, out / "banks")
    (out / "state").mkdir(exist_ok=True)
    for m in markers:  # markers after the banks: a kill in between leaves banks without markers (rebuilt)
        shutil.copy2(m, out / "state" / m.name)
    log.info("reused the banks of %d conversation(s) from %s", len(markers), src)
    return len(markers)


def _open_store(cfg: dict, out: Path):
    """The banks of this run: local mode under out/banks by default, or a Qdrant server by URL."""
    from memory_r1.memory import BankFactory

    scfg = cfg.get("store") or {}
    url = scfg.get("url")
    return BankFactory.open(
        path=None if url else str(out / "banks"), url=url, backend=scfg.get("backend", "qdrant")
    )


def _load_llms(cfg: dict):
    """(main LLM, manager LLM, answer LLM); checkpoints given by --manager/--answer load beside it."""
    from memory_r1.llm import load_llm

    lcfg = dict(cfg["llm"])
    kind = lcfg.pop("backend", "hf")
    main = load_llm(kind, cfg["backbone"], **lcfg)
    manager = load_llm(kind, cfg["manager"], **lcfg) if cfg.get("manager") else main
    answer = load_llm(kind, cfg["answer"], **lcfg) if cfg.get("answer") else main
    return main, manager, answer


def _load_judge(cfg: dict, main_llm, out: Path):
    from memory_r1.agents.pipeline import sampling
    from memory_r1.eval.judge import Judge, JudgeCache
    from memory_r1.paths import cache_dir

    jcfg = cfg.get("judge") or {}
    backend = str(jcfg.get("backend", "none"))
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
        from memory_r1.llm import load_llm

        lcfg = dict(cfg["llm"])
        kind = lcfg.pop("backend", "hf")
        llm, name = load_llm(kind, backend, **lcfg), backend
    cache = JudgeCache(Path(jcfg.get("cache") or cache_dir() / "judge" / "judgments.sqlite"))
    return Judge(llm, sampling(jcfg), cache, model_name=llm.name, prompt=jcfg["prompt"]), name


def ingest_batches(ingest_stats: dict) -> list[dict]:
    """The distinct ingestion batches behind per-conversation stats: conversations ingested side by
    side share one batch and record the same stats, so each batch is listed once.

    >>> b = {"turns": 10, "seconds": 40.0}
    >>> ingest_batches({"conv-1": b, "conv-2": dict(b), "conv-3": {"turns": 5, "seconds": 9.0}})
    [{'turns': 10, 'seconds': 40.0}, {'turns': 5, 'seconds': 9.0}]
    """
    return list({json.dumps(b, sort_keys=True): b for b in ingest_stats.values()}.values())


def run_timings(records: list[dict], ingest_stats: dict, this_process: dict, control_s: float = 0.0) -> dict:
    """Seconds per stage for the whole folder, over every process that worked on it (a resumed run
    keeps the time its earlier processes spent): ingestion from the clocks of its
    :func:`ingest_batches`, answering and judging from the per-question latencies, plus this
    process's load time and judge control pairs. Rows written before the judge
    time was recorded per question add no judge time; the result is never below this process's own
    judge clock.

    >>> recs = [{"latency_s": 2.0, "judge_latency_s": 0.5}, {"latency_s": 3.0}]
    >>> batch = {"turns": 10, "seconds": 40.0}
    >>> run_timings(recs, {"conv-1": batch, "conv-2": dict(batch)},
    ...             {"load_s": 5.0, "ingest_s": 0.0, "answer_s": 3.0, "judge_s": 1.5}, control_s=1.0)
    {'load_s': 5.0, 'ingest_s': 40.0, 'answer_s': 5.0, 'judge_s': 1.5}
    """
    ingest = sum(float(b.get("seconds", 0.0)) for b in ingest_batches(ingest_stats))
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


def run_eval(req: EvalRequest) -> Path:
    """Run (or resume) one evaluation; returns the output folder."""
    from memory_r1.agents.pipeline import Pipeline, batched, session_chunks
    from memory_r1.agents.retrieval import bank_namespace
    from memory_r1.data import load_split
    from memory_r1.eval.judge import control_accuracy
    from memory_r1.eval.report import summary_markdown, summary_table
    from memory_r1.metrics import answer_scores
    from memory_r1.paths import resolve_locomo_path
    from memory_r1.runs import new_manifest, seed_everything, update_manifest

    cfg = resolve_config(req)
    data_path = resolve_locomo_path(req.data)
    cfg["data_sha256"] = _data_sha(data_path)
    split = load_split(req.split, req.data, conversations=req.conversations)
    out = Path(req.out or default_out_dir(cfg))
    out.mkdir(parents=True, exist_ok=True)
    manifest = new_manifest({"config": cfg}, seed=cfg.get("seed", 0), data_path=data_path,
                            data_sha256=cfg["data_sha256"], dtype=(cfg.get("llm") or {}).get("dtype", "auto"))
    check_or_write_manifest(out, manifest)
    if req.reuse_banks is not None:
        n = reuse_banks(Path(req.reuse_banks), out, cfg)
        if n:
            update_manifest(out, reused_banks={"from": str(req.reuse_banks), "conversations": n})
    seed_everything(int(cfg.get("seed", 0)), torch=True)

    # questions of this run (in split order, limited per conversation when asked)
    plan: list[tuple] = []
    for conv in split.conversations:
        qs = [q for q in split.questions() if q.conversation_id == conv.conversation_id]
        if req.limit_questions is not None:
            qs = qs[: req.limit_questions]
        plan.append((conv, qs))

    preds_path = out / "predictions.jsonl"
    done = {r["qid"] for r in read_predictions(preds_path)}
    timings = {"load_s": 0.0, "ingest_s": 0.0, "answer_s": 0.0, "judge_s": 0.0}
    t = time.perf_counter()
    main_llm, manager_llm, answer_llm = _load_llms(cfg)
    judge, judge_name = _load_judge(cfg, main_llm, out)
    store = _open_store(cfg, out)
    timings["load_s"] = time.perf_counter() - t
    pipe = Pipeline(main_llm, store.bank, {"ingest": cfg.get("ingest", {}), "answer": cfg["answer_agent"]},
                    method=req.method, manager_llm=manager_llm, answer_llm=answer_llm)
    state = out / "state"
    state.mkdir(exist_ok=True)
    ingest_stats = {}
    control_s = 0.0
    try:
        with _Progress(req.show_progress) as progress:
            pending = [c for c, qs in plan if not ingest_marker(state, c.conversation_id).exists()
                       and any(q.qid not in done for q in qs)]
            if pending and req.method != "full-context":
                for conv in pending:  # a killed ingestion left partial banks: start them again
                    for sp in conv.speakers:
                        store.bank(bank_namespace(conv.conversation_id, sp)).clear()
                max_sessions = (cfg.get("ingest") or {}).get("max_sessions")
                total = sum(len(t) for c in pending for _, t in session_chunks(c, 0, max_sessions))
                step = progress.task("ingest turns", total)
                t = time.perf_counter()
                st = pipe.ingest(pending, on_step=step)
                timings["ingest_s"] += time.perf_counter() - t
                for conv in pending:
                    atomic_write(ingest_marker(state, conv.conversation_id),
                                 json.dumps({"conversation": conv.conversation_id, "batch_stats": st.as_dict()}))
            for c, _ in plan:
                marker = ingest_marker(state, c.conversation_id)
                if marker.exists():
                    ingest_stats[c.conversation_id] = json.loads(marker.read_text())["batch_stats"]

            todo = [(c, [q for q in qs if q.qid not in done]) for c, qs in plan]
            step = progress.task("answer questions", sum(len(qs) for _, qs in todo))
            bs = int(cfg["answer_agent"].get("questions_per_batch", 16))
            for conv, qs in todo:
                for chunk in batched(qs, bs):
                    t = time.perf_counter()
                    rows = pipe.answer(conv, chunk)
                    timings["answer_s"] += time.perf_counter() - t
                    for r in rows:
                        r.update(answer_scores(r["prediction"], r["gold"]))
                    if judge is not None:
                        t = time.perf_counter()
                        js = judge.judge([(r["question"], r["gold"], r["prediction"]) for r in rows])
                        dt = time.perf_counter() - t
                        timings["judge_s"] += dt
                        per_q = dt / max(len(rows), 1)
                        for r, j in zip(rows, js):
                            r["judge"] = j.correct
                            r["judge_parsed"] = j.parsed
                            r["judge_latency_s"] = round(per_q, 4)
                    else:
                        for r in rows:
                            r["judge"] = None
                    append_predictions(preds_path, rows)
                    step(len(rows))
        wanted = {q.qid for _, qs in plan for q in qs}
        records = [r for r in read_predictions(preds_path) if r["qid"] in wanted]
        control = None
        if judge is not None:
            t = time.perf_counter()
            control = control_accuracy(judge, records, int((cfg.get("judge") or {}).get("control_pairs", 20)))
            control_s = time.perf_counter() - t
            timings["judge_s"] += control_s
    finally:
        store.close()
        if judge is not None:
            judge.cache.close()

    rows = summary_table(records)
    audit = _gold_audit_view(records, req)
    judge_prompt = None if judge is None else judge.prompt
    n_unparsed_judge = sum(1 for r in records if r.get("judge") is not None and not r.get("judge_parsed", True))
    summary = {
        "backbone": cfg["backbone"], "method": req.method, "split": req.split,
        "judge": judge_name, "judge_prompt": judge_prompt, "questions": len(records), "rows": rows,
        "rows_without_wrong_golds": audit["rows"],
        "gold_audit": {k: v for k, v in audit.items() if k != "rows"},
        "answer_format_failures": sum(1 for r in records if not r.get("answer_format_ok", True)),
        "judge_unparsed": n_unparsed_judge,
        "judge_control": control,
        "ingest": ingest_stats,
        "timings_s": run_timings(records, ingest_stats, timings, control_s),
        "this_process_s": {k: round(v, 2) for k, v in timings.items()},
    }
    atomic_write(out / "summary.json", json.dumps(summary, indent=2))
    notes = [
        f"backbone: {cfg['backbone']}; method: {req.method}; split: {req.split} "
        f"({', '.join(split.conversation_ids)}); {len(records)} questions",
        f"judge: {judge_name}" + (f", {judge_prompt} prompt" if judge_prompt else "")
        + (f" ({n_unparsed_judge} unreadable judge outputs scored WRONG)" if n_unparsed_judge else ""),
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
    atomic_write(out / "summary.md", summary_markdown(
        rows, f"LoCoMo {req.split}: {cfg['backbone']} / {req.method}", notes, judge_prompt=judge_prompt,
        audit=audit))
    log.info("wrote %s", out)
    return out
