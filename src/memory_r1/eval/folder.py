"""An eval run folder: what makes it resumable, read and written in one place.

Folder layout::

    manifest.json        resolved config, seed, versions, data sha256, git commit (fingerprint checked on resume)
    banks/               the Qdrant banks (two per conversation)
    state/ingested-<id>.json   written atomically once a conversation's banks are complete (named by
                         `memory_r1.runs.data_path`: whatever the sample_id, never outside the folder)
    predictions.jsonl    one JSON line per question (appended per batch, fsynced), with its own
                         f1, bleu1, em and judge label (anyone can re-aggregate)
    summary.json / summary.md   the standard score and, labelled apart, the score without the
                         questions whose gold answer gold_audit.json marks wrong

Resume: the manifest's :data:`FINGERPRINT_KEYS` must match or the folder is refused; a conversation
without its ingestion marker has its banks cleared and rebuilt; questions already in
predictions.jsonl are not asked again; a half-written last line (a killed run) is dropped.
``--reuse-banks`` starts a folder from another one's finished banks (:func:`reuse_banks`).
"""

from __future__ import annotations

import json
import logging
import os
import re
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


#: config keys that decide what ingestion builds: two folders that agree on all of them build the same banks
INGEST_KEYS = ("backbone", "split", "method", "conversations", "manager", "ingest", "llm", "store", "data_sha256")


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

    The thread count is how a run executes, not what it is (recorded in ``summary.json``'s
    ``threads_used``), so folders written under the adaptive policy stay resumable with a fixed one:

    >>> fingerprint_value({"llm": {"dtype": "auto", "num_threads": "all"}}, "llm")
    {'dtype': 'auto'}
    """
    value = drop_nulls(config.get(key))
    if key == "llm" and isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != "num_threads"}
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


def reuse_banks(src: Path, out: Path, cfg: dict) -> int:
    """Start ``out`` from the finished banks of another eval folder ``src`` built with the same
    :data:`INGEST_KEYS` (rows that change only the Answer Agent or the judge need not ingest again).

    Copies ``src/banks`` and its ingestion markers into ``out`` when ``out`` has no banks yet;
    returns how many conversations came ready (0, logged, when ``src`` has none finished or ``out``
    already has banks). A ``src`` built with other ingestion settings is refused."""
    import shutil

    if cfg["store"]["url"]:
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
    copied = 0
    for m in markers:  # markers after the banks: a kill in between leaves banks without markers (rebuilt)
        try:
            marker = {**json.loads(m.read_text()), "reused_from": str(src)}  # its seconds were spent there
        except (OSError, ValueError, TypeError):
            log.warning("--reuse-banks %s: unreadable marker %s: that conversation is built here", src, m.name)
            continue
        atomic_write(out / "state" / m.name, json.dumps(marker))
        copied += 1
    log.info("reused the banks of %d conversation(s) from %s", copied, src)
    return copied
