"""The manager stage's frozen Answer Agent: inside each reward worker, or one Ray actor group?

Runs the same short manager GRPO training twice, back to back, on the CPU recipe
(`recipes/smollm2-135m/manager/grpo.yaml`), once per `reward.answerer_server` (`worker`: the model
loaded in each reward worker; `ray`: the job's actor group `memr1-answerer-*`, one copy shared by
every reward worker), and records for each: step seconds and the run's peak memory (the driver's
process tree, the local Ray cluster included). That each mode serves the reward where it says is
tested in tests/train/verl/test_answerer_actor.py.

    .venv/bin/python benchmarks/manager_answerer.py [--steps 6] [--out runs/bench/manager-answerer]
        [--result benchmarks/results/manager_answerer.json]

Real stack (SmolLM2-135M, verl, a local Ray cluster); ~12 min on 2 cores with the default 6 steps
a mode. Run it alone: another job on the machine changes both the step times and the peak memory.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV_BIN = Path(sys.executable).parent
MODES = ("worker", "ray")


def run_mode(mode: str, steps: int, out: Path) -> dict:
    if out.exists():
        shutil.rmtree(out)
    cmd = [str(VENV_BIN / "memr1"), "train", "manager", "--backbone", "smollm2-135m", "--algo", "grpo",
           "--out", str(out), f"reward.answerer_server={mode}",
           f"verl.trainer.total_training_steps={steps}", f"verl.trainer.save_freq={steps}",
           "verl.trainer.test_freq=-1", "verl.trainer.val_before_train=false"]
    log = out.parent / f"{out.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with log.open("w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode
    rec: dict = {"command": " ".join(cmd), "exit_code": rc, "wall_s": round(time.time() - t0, 1), "log": str(log)}
    result = out / "result.json"
    if result.exists():
        r = json.loads(result.read_text())
        s = r.get("step_seconds") or []
        rec.update(steps=r.get("steps"), step_seconds=s, peak_memory_gb=r.get("peak_memory_gb"),
                   median_step_s_after_first=(sorted(s[1:])[len(s[1:]) // 2] if len(s) > 1 else None))
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "manager-answerer")
    ap.add_argument("--result", type=Path, default=HERE / "results" / "manager_answerer.json")
    args = ap.parse_args(argv)
    from memory_r1.hardware import kind_record

    busy = subprocess.run(["pgrep", "-f", "raylet"], capture_output=True, text=True).stdout.split()
    if busy:
        print(f"Ray is already running on this machine (raylet pids {' '.join(busy)}): run this alone", file=sys.stderr)
        return 2
    record: dict = {"cpu": kind_record(), "steps": args.steps, "modes": {}}
    for mode in MODES:
        record["modes"][mode] = run_mode(mode, args.steps, args.out / mode)
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({m: {k: r.get(k) for k in ("exit_code", "median_step_s_after_first", "peak_memory_gb")} for m, r in record["modes"].items()}, indent=2))
    return 0 if all(r["exit_code"] == 0 for r in record["modes"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
