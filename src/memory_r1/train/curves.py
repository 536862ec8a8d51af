"""Reward curves of a training run: per-step mean training reward, held-out (val) reward and the
rollouts' mean response length (tokens) and clip ratio (share of responses cut at the length
limit), read from verl's file-logger records (``metrics*.jsonl``) and written as JSON and a PNG."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

TRAIN_KEY = "critic/score/mean"  # mean outcome reward of the step's rollouts
#: per-step rollout statistics kept beside the rewards: curve name -> verl metric
ROLLOUT_KEYS = {"response_length": "response_length/mean", "response_clip_ratio": "response_length/clip_ratio"}


def _val_key(data: dict) -> str | None:
    return next((k for k in data if k.startswith("val-core/") and "/reward/mean" in k), None)


def read_curves(folder: Path) -> dict:
    """{"train": [[step, reward], ...], "val": [[step, reward], ...], "response_length": [[step,
    tokens], ...], "response_clip_ratio": [[step, share], ...]} over metrics.jsonl and the records of
    earlier (resumed) runs, metrics.1.jsonl, ...; later records win for a step.

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> _ = (d / "metrics.jsonl").write_text(
    ...     '{"step": 1, "data": {"critic/score/mean": 0.1, "val-core/a/reward/mean@1": 0.2,'
    ...     ' "response_length/mean": 33.5, "response_length/clip_ratio": 0.25}}\\n'
    ...     '{"step": 2, "data": {"critic/score/mean": 0.3, "response_length/mean": 14.0}}\\n')
    >>> read_curves(d)  # doctest: +NORMALIZE_WHITESPACE
    {'train': [[1, 0.1], [2, 0.3]], 'val': [[1, 0.2]], 'response_length': [[1, 33.5], [2, 14.0]],
     'response_clip_ratio': [[1, 0.25]]}
    """
    train: dict[int, float] = {}
    val: dict[int, float] = {}
    rollout: dict[str, dict[int, float]] = {name: {} for name in ROLLOUT_KEYS}
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
            for name, key in ROLLOUT_KEYS.items():
                if key in data:
                    rollout[name][step] = float(data[key])
    out = {"train": [[s, train[s]] for s in sorted(train)], "val": [[s, val[s]] for s in sorted(val)]}
    for name, points in rollout.items():
        out[name] = [[s, points[s]] for s in sorted(points)]
    return out


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
    lengths = curves["response_length"]
    fig, axes = plt.subplots(1, 2 if lengths else 1, figsize=(10 if lengths else 6, 3.5), squeeze=False)
    ax = axes[0][0]
    if curves["train"]:
        ax.plot(*zip(*curves["train"]), marker="o", label="train (rollouts, mean)")
    if curves["val"]:
        ax.plot(*zip(*curves["val"]), marker="s", linestyle="--", label="held-out val (greedy)")
    ax.set_xlabel("step")
    ax.set_ylabel(reward_name)
    ax.set_title(title)
    ax.legend()
    if lengths:
        axes[0][1].plot(*zip(*lengths), marker="o", color="tab:green")
        axes[0][1].set_xlabel("step")
        axes[0][1].set_ylabel("mean response length (tokens)")
        axes[0][1].set_title("rollout response length")
    fig.tight_layout()
    out = folder / "reward_curve.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
