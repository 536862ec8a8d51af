"""`memr1 train loop`: the two stages alternated, each round evaluated.

``out`` (default ``runs/loop/{backbone}-{algo}``) holds ``round-N/`` with ``manager/`` and
``answer/`` (training folders of :mod:`memory_r1.train.runner`), ``banks/`` and ``banks.json`` (the
train and val banks rebuilt with the round's manager), ``eval/`` (a ``memr1 eval`` folder) and
``round.json``; ``summary.md`` is the table of all rounds' val scores. Finished steps are reused.

The loop evaluates every round with ``memr1 eval`` (:mod:`memory_r1.eval.runner`, imported when a
round reaches its eval): the one import from ``train`` into ``eval``, by what the loop is.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from memory_r1.runs import atomic_write
from memory_r1.train.runner import TrainError, TrainRequest, _has_run, _trained, resolve_recipe, run_training

log = logging.getLogger(__name__)


@dataclass
class LoopRequest:
    """``memr1 train loop``: ``rounds`` x (manager stage -> rebuild banks -> answer stage -> eval on val)."""

    backbone: str = "smollm2-135m"
    algo: str = "grpo"
    rounds: int = 1
    out: Path | None = None
    ray_address: str | None = None
    overrides: list[str] = field(default_factory=list)  # applied to both stages
    data: Path | None = None
    judge: str | None = None  # eval's judge (default: the eval recipe's)
    eval_overrides: list[str] = field(default_factory=list)


def _train_or_reuse(req: TrainRequest) -> Path:
    done = _trained(Path(req.out))  # type: ignore[arg-type]
    if done is not None:
        log.info("reusing the finished %s stage in %s", req.stage, req.out)
        return done
    req.resume = _has_run(Path(req.out))  # type: ignore[arg-type]
    result = run_training(req)
    if result.hf_checkpoint is None:
        raise TrainError(f"the {req.stage} stage in {result.out} wrote no HF checkpoint")
    return result.hf_checkpoint


def run_loop(req: LoopRequest) -> list[dict]:
    """Alternate the two stages for ``rounds`` rounds, each in ``out/round-N``:

    1. ``manager/``: train the Memory Manager (from the previous round's manager; its episodes'
       states are built by that manager when the recipe's source is ``pipeline``);
    2. ``banks/``: rebuild the train and val banks with the trained manager (the eval recipe's
       ingestion settings);
    3. ``answer/``: train the Answer Agent (from the previous round's) on those banks;
    4. ``eval/``: ``memr1 eval`` on the val split with both checkpoints.

    A finished step is reused when the loop is run again with the same ``out``. Returns one record
    per round (checkpoints, eval folder, scores), also written to ``round-N/round.json``; the
    table of all rounds' val scores is ``out/summary.md``."""
    from memory_r1.data import load_split
    from memory_r1.eval.report import rounds_markdown
    from memory_r1.eval.runner import EvalRequest, run_eval
    from memory_r1.train.stages.banks import rebuild_banks

    if req.rounds < 1:
        raise TrainError(f"--rounds must be >= 1, got {req.rounds}")
    out = Path(req.out or Path("runs") / "loop" / f"{Path(req.backbone).name}-{req.algo}").resolve()
    manager_ckpt: Path | None = None
    answer_ckpt: Path | None = None
    records = []
    for r in range(1, req.rounds + 1):
        rd = out / f"round-{r}"
        t0 = time.perf_counter()
        mreq = TrainRequest(stage="manager", backbone=req.backbone, algo=req.algo,
                            init=str(manager_ckpt) if manager_ckpt else None, out=rd / "manager",
                            ray_address=req.ray_address, overrides=list(req.overrides), data=req.data)
        mrecipe, _ = resolve_recipe(mreq)
        if manager_ckpt is not None and mrecipe["episodes"]["source"] == "pipeline":
            mreq.manager = str(manager_ckpt)
        manager_ckpt = _train_or_reuse(mreq)

        banks = rd / "banks"
        marker = banks.parent / "banks.json"
        if not marker.exists():
            convs = list(load_split("train", req.data).conversations) + list(load_split("val", req.data).conversations)
            stats = rebuild_banks(req.backbone, str(manager_ckpt), convs, banks)
            atomic_write(marker, json.dumps({"manager": str(manager_ckpt), "ingest": stats}, indent=2, default=str))

        areq = TrainRequest(stage="answer", backbone=req.backbone, algo=req.algo,
                            init=str(answer_ckpt) if answer_ckpt else None, banks=banks, out=rd / "answer",
                            ray_address=req.ray_address, overrides=list(req.overrides), data=req.data)
        answer_ckpt = _train_or_reuse(areq)

        folder = run_eval(EvalRequest(backbone=req.backbone, split="val", manager=str(manager_ckpt),
                                      answer=str(answer_ckpt), judge=req.judge, out=rd / "eval", data=req.data,
                                      overrides=list(req.eval_overrides), show_progress=False))
        summary = json.loads((folder / "summary.json").read_text())
        record = {"round": r, "manager": str(manager_ckpt), "answer": str(answer_ckpt), "banks": str(banks),
                  "eval": str(folder), "scores": summary.get("rows"), "seconds": round(time.perf_counter() - t0, 1)}
        atomic_write(rd / "round.json", json.dumps(record, indent=2, default=str))
        records.append(record)
        atomic_write(out / "summary.md", rounds_markdown(
            records, f"memr1 train loop: {Path(req.backbone).name}, {req.algo}, val split"))
        log.info("round %d done in %.0f s: %s", r, record["seconds"], folder)
    return records
