"""Seconds per RL step and samples per second for GRPO and PPO on the CPU default (SmolLM2-135M,
verl's own trainer through memory_r1's cpu platform), with the split between rollout (gen),
log-probs (old_log_prob, ref, values), update (update_actor, update_critic, update_weights) and reward,
written to benchmarks/results/train_step.json.

    python benchmarks/train_step.py [--algos grpo ppo] [--steps 3] [--stage answer]
    python benchmarks/train_step.py --from-runs runs/train/smollm2-135m-answer-grpo ...

Uses the CPU recipes (recipes/smollm2-135m/<stage>/<algo>.yaml) with only the step count, the
validation and the checkpointing changed; the first step (warm-up) is reported apart.
``--from-runs`` reads the same numbers from finished ``memr1 train`` folders instead of training
again (verl's per-step timings in metrics.jsonl, the recipe in recipe.yaml); a step's checkpoint
save is taken out of its time (validation is timed outside the step by verl).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPLIT = {
    "rollout": ["timing_s/gen"],
    "log_prob": ["timing_s/old_log_prob", "timing_s/ref", "timing_s/values"],
    "update": ["timing_s/update_actor", "timing_s/update_critic", "timing_s/update_weights"],
    "reward": ["timing_s/reward"],
}


def _records(folder: Path) -> list[dict]:
    path = folder / "metrics.jsonl"
    return [json.loads(line)["data"] for line in path.read_text().splitlines() if line.strip()]


def summarize(recs: list[dict], recipe: dict, peak_memory_gb: float | None) -> dict:
    """Per-step numbers of one run: the first step apart (warm-up), the mean of the others."""
    v = recipe["verl"]
    samples = int(v["data.train_batch_size"]) * int(v.get("actor_rollout_ref.rollout.n", 1))
    recs = [r for r in recs if "timing_s/step" in r]
    steady = recs[1:] or recs
    per_step = [r["timing_s/step"] - r.get("timing_s/save_checkpoint", 0.0) for r in steady]
    mean = sum(per_step) / len(per_step)
    return {
        "steps": len(recs),
        "samples_per_step": samples,
        "warmup_step_s": round(recs[0]["timing_s/step"], 2),
        "step_s": [round(x, 2) for x in per_step],
        "mean_step_s": round(mean, 2),
        "samples_per_s": round(samples / mean, 3),
        "tokens_per_step": round(sum(r.get("perf/total_num_tokens", 0) for r in steady) / len(steady)),
        "split_s": {
            name: (round(sum(sum(r.get(k, 0.0) for k in keys) for r in steady) / len(steady), 2)
                   if any(k in r for r in steady for k in keys) else None)
            for name, keys in SPLIT.items()
        },
        "split_note": "reward: null when verl scored inside the rollout (agent loop), i.e. within 'rollout'",
        "peak_memory_gb": peak_memory_gb,
        "prompt_length": v.get("data.max_prompt_length"),
        "response_length": v.get("data.max_response_length"),
    }


def from_runs(folders: list[Path]) -> tuple[str, dict]:
    import yaml

    recipes = {folder: yaml.safe_load((folder / "recipe.yaml").read_text()) for folder in folders}
    stages = {r["stage"] for r in recipes.values()}
    # key: the algo for one stage, stage/algo for several; the folder name if two runs still collide
    keys = [r["algo"] if len(stages) == 1 else f'{r["stage"]}/{r["algo"]}' for r in recipes.values()]
    results = {}
    for folder, key in zip(folders, keys):
        res = json.loads((folder / "result.json").read_text()) if (folder / "result.json").exists() else {}
        key = key if keys.count(key) == 1 else folder.name
        results[key] = {**summarize(_records(folder), recipes[folder], res.get("peak_memory_gb")), "run": str(folder)}
    return "/".join(sorted(stages)), results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--algos", nargs="+", default=["grpo", "ppo"])
    ap.add_argument("--stage", default="answer")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "train_step.json")
    ap.add_argument("--from-runs", nargs="+", type=Path, default=None,
                    help="summarise finished `memr1 train` folders instead of training")
    args = ap.parse_args()
    if args.from_runs:
        stage, results = from_runs(args.from_runs)
        write(args.out, stage, results, source="finished runs")
        return

    from memory_r1.train.runner import TrainRequest, run_training

    results = {}
    for algo in args.algos:
        work = Path(tempfile.mkdtemp(prefix=f"memr1-bench-train-{algo}-"))
        try:
            res = run_training(TrainRequest(
                stage=args.stage, algo=algo, out=work, overrides=[
                    f"verl.trainer.total_training_steps={args.steps}",
                    "verl.trainer.val_before_train=false", "verl.trainer.test_freq=-1", "verl.trainer.save_freq=-1",
                ],
            ))
            recs = _records(work)
            recipe = json.loads(json.dumps(__import__("yaml").safe_load((work / "recipe.yaml").read_text())))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        results[algo] = summarize(recs, recipe, res.peak_memory_gb)
    write(args.out, args.stage, results, source=f"{args.steps}-step runs of the CPU recipes")


def write(path: Path, stage: str, results: dict, source: str) -> None:
    out = {
        "benchmark": "train_step",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(),
                 "loadavg_end": os.getloadavg()},
        "stage": stage,
        "source": source,
        "results": results,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
