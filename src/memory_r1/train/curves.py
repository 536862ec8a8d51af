"""Reward curves of a training run: per-step mean training reward and held-out (val) reward, read
from verl's file-logger records (``metrics*.jsonl``) and written as JSON and a PNG."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

TRAIN_KEY = "critic/score/mean"  # mean outcome reward of the step's rollouts


def _val_key(data: dict) -> str | None:
    return next((k for k in data if k.startswith("val-core/") and "/reward/mean" in k), None)


def read_curves(folder: Path) -> dict:
    """{"train": [[step, reward], ...], "val": [[step, reward], ...]} over metrics.jsonl and the
    records of earlier (resumed) runs, metrics.1.jsonl, ...; later records win for a step.

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> _ = (d / "metrics.jsonl").write_text(
    ...     '{"step": 1, "data": {"critic/score/mean": 0.1, "val-core/a/reward/mean@1": 0.2}}\\n'
    ...     '{"step": 2, "data": {"critic/score/mean": 0.3}}\\n')
    >>> read_curves(d)
    {'train': [[1, 0.1], [2, 0.3]], 'val': [[1, 0.2]]}
    """
    train: dict[int, float] = {}
    val: dict[int, float] = {}
    files = sorted(folder.glob("metrics.*.jsonl"), key=lambda p: int(p.suffixes[0][1:])) + [folder / "metrics.jsonl"]
    for path in files:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            step, data = int(rec.get("step", 0)), rec.get("data", {})
            if TRAIN_KEY in data:
                train[step] = float(data[TRAIN_KEY])
            vk = _val_key(data)
            if vk is not None:
                val[step] = float(data[vk])
    return {"train": [[s, train[s]] for s in sorted(train)], "val": [[s, val[s]] for s in sorted(val)]}


def write_curves(folder: Path, title: str, reward_name: str) -> Path | None:
    """reward_curve.json always; reward_curve.png when matplotlib is installed (the train extra)."""
    curves = read_curves(folder)
    (folder / "reward_curve.json").write_text(json.dumps({"reward": reward_name, **curves}, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib not installed: reward_curve.png not written")
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if curves["train"]:
        ax.plot(*zip(*curves["train"]), marker="o", label="train (rollouts, mean)")
    if curves["val"]:
        ax.plot(*zip(*curves["val"]), marker="s", linestyle="--", label="held-out val (greedy)")
    ax.set_xlabel("step")
    ax.set_ylabel(reward_name)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    out = folder / "reward_curve.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
