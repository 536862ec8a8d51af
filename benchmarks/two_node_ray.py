"""Two Ray nodes on one machine: does `memr1 train --ray-address` spread verl's workers over both?

The path a user takes when one machine is not enough: start a Ray head, join a second node to it,
and point `memr1 train` at the head. Here both nodes run on this machine (distinct ports, and the
second node on another loopback address), each declaring its own resources: 1 logical GPU (one
training rank per node on the CPU stack, ``trainer.n_gpus_per_node=1``) and a marker resource
``memr1_node_<name>``. The training run asks for ``trainer.nnodes=2``, so verl's resource pool wants
one rank per node: FSDP over gloo between the two nodes, one rollout replica on each.

While the run goes, Ray's state API is polled for live actors and the node each one sits on;
the JSON result records, per node, the actor classes seen there, the run's exit code, its step
times and checkpoint (from the run's ``result.json``), and the cluster as ``ray status`` saw it.
Ray runs in token-auth mode (a token is generated in ~/.ray/auth_token if there is none).

    .venv/bin/python benchmarks/two_node_ray.py [--steps 2] [--out runs/bench/two-node]
        [--result benchmarks/results/two_node_ray.json] [-- extra train overrides]

Real stack (SmolLM2-135M, the answer GRPO recipe, cut to a few short steps); the Ray nodes are
stopped at the end, also on errors. Takes ~5 min on 2 cores and ~10 GB RAM: run it alone (it refuses to start while any Ray runs here,
since `ray stop` at its end stops every Ray node of the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV_BIN = Path(sys.executable).parent
HEAD_PORT = 6390
NODES = {  # name -> (node ip, node manager port, object manager port, worker port range)
    "head": ("127.0.0.1", 6391, 6392, (21000, 21999)),
    "second": ("127.0.0.2", 6393, 6394, (22000, 22999)),
}
#: the training run: answer GRPO cut to a few small steps, one rank per node
TRAIN_OVERRIDES = [
    "verl.trainer.nnodes=2",
    "verl.trainer.n_gpus_per_node=1",
    "verl.data.train_batch_size=2",
    "verl.actor_rollout_ref.actor.ppo_mini_batch_size=2",
    "verl.actor_rollout_ref.rollout.n=2",
    # 2 prompts x 2 samples = 4 sequences, 2 per rank: every micro-batch must divide a rank's share
    "verl.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    "verl.actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
    "verl.actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2",
    "verl.trainer.test_freq=-1",
    "verl.trainer.val_before_train=false",
    "episodes.max_val_rows=4",
]


def ray(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run([str(VENV_BIN / "ray"), *args], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, timeout=180)
    if check and out.returncode:
        tail = "\n".join((out.stderr or out.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"`ray {' '.join(args)}` failed (exit {out.returncode}):\n{tail}")
    return out


def start_nodes(num_cpus: int) -> str:
    address = f"127.0.0.1:{HEAD_PORT}"
    common = ["--num-cpus", str(num_cpus), "--num-gpus", "1", "--disable-usage-stats"]
    for name, (ip, nm_port, om_port, (lo, hi)) in NODES.items():
        ports = ["--node-ip-address", ip, "--node-manager-port", str(nm_port), "--object-manager-port", str(om_port),
                 "--min-worker-port", str(lo), "--max-worker-port", str(hi),
                 "--resources", json.dumps({f"memr1_node_{name}": 1})]
        if name == "head":
            ray("start", "--head", "--port", str(HEAD_PORT), "--dashboard-host", "127.0.0.1", *ports, *common)
        else:
            ray("start", "--address", address, *ports, *common)
    deadline = time.time() + 60
    while time.time() < deadline:
        if len(alive_nodes(address)) == len(NODES):
            return address
        time.sleep(1)
    raise RuntimeError(f"only {len(alive_nodes(address))} of {len(NODES)} Ray nodes came up")


def alive_nodes(address: str) -> dict[str, str]:
    """node id -> our node name, for the live nodes of the cluster."""
    out = subprocess.run([sys.executable, "-c", (
        "import json, ray; ray.init(address=%r, logging_level='ERROR');"
        "print(json.dumps([[n['NodeID'], n['Resources']] for n in ray.nodes() if n['Alive']]))") % address],
        capture_output=True, text=True, timeout=120)
    try:
        nodes = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {}
    names = {}
    for node_id, res in nodes:
        marker = [k for k in res if k.startswith("memr1_node_")]
        names[node_id] = marker[0].removeprefix("memr1_node_") if marker else node_id[:8]
    return names


def poll_actors(address: str, stop: threading.Event, seen: dict) -> None:
    """Every few seconds: live actors by node (Ray's state API), accumulated into ``seen``."""
    while not stop.is_set():
        out = subprocess.run([str(VENV_BIN / "ray"), "list", "actors", "--address", "http://127.0.0.1:8265",
                              "--format", "json", "--detail", "--limit", "1000"],
                             capture_output=True, text=True, timeout=60)
        try:
            for a in json.loads(out.stdout or "[]"):
                seen[a["actor_id"]] = (a.get("class_name"), a.get("node_id"), a.get("state"))
        except ValueError:
            pass
        stop.wait(5)


def train_result(out: Path) -> dict:
    """What `memr1 train` wrote in its result.json: steps, seconds, per-step seconds, the HF checkpoint."""
    path = out / "result.json"
    if not path.exists():
        return {}
    r = json.loads(path.read_text())
    return {k: r.get(k) for k in ("steps", "seconds", "step_seconds", "hf_checkpoint")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--num-cpus", type=int, default=8, help="logical CPUs each node declares")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "two-node")
    ap.add_argument("--result", type=Path, default=HERE / "results" / "two_node_ray.json")
    ap.add_argument("extra", nargs="*", help="more `memr1 train answer` overrides")
    args = ap.parse_args(argv)
    from memory_r1.hardware import kind_record


    busy = subprocess.run(["pgrep", "-f", "raylet"], capture_output=True, text=True).stdout.split()
    if busy:  # `ray stop` at the end stops every Ray node of this machine: never someone else's
        print(f"Ray is already running on this machine (raylet pids {' '.join(busy)}); stop it first", file=sys.stderr)
        return 2
    if args.out.exists():
        shutil.rmtree(args.out)
    record: dict = {"cpu": kind_record(),
                    "nodes": {n: {"ip": v[0]} for n, v in NODES.items()}}
    t0 = time.time()
    # Ray >= 2.59 turns token authentication on for `ray start --head` whenever ~/.ray/auth_token exists
    # (any earlier local ray.init writes one), and a node or client joining without RAY_AUTH_MODE=token
    # is then refused (InvalidAuthToken). Token mode for every process here, as on a real cluster: the
    # same token file on each machine (`ray get-auth-token --generate` makes it once).
    ray("get-auth-token", "--generate")
    os.environ["RAY_AUTH_MODE"] = "token"
    record["ray_auth_mode"] = "token"
    try:
        address = start_nodes(args.num_cpus)
        record["cluster_up_s"] = round(time.time() - t0, 1)
        names = alive_nodes(address)
        record["ray_status"] = ray("status", "--address", address, check=False).stdout
        seen: dict = {}
        stop = threading.Event()
        poller = threading.Thread(target=poll_actors, args=(address, stop, seen), daemon=True)
        poller.start()
        cmd = [str(VENV_BIN / "memr1"), "train", "answer", "--backbone", "smollm2-135m", "--algo", "grpo",
               "--out", str(args.out), "--ray-address", address,
               f"verl.trainer.total_training_steps={args.steps}", f"verl.trainer.save_freq={args.steps}",
               *TRAIN_OVERRIDES, *args.extra]  # the checkpoint is written by both ranks, one per node
        record["command"] = " ".join(cmd)
        t1 = time.time()
        log = args.out.parent / (args.out.name + ".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as fh:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode
        record["train_s"] = round(time.time() - t1, 1)
        record["train_exit_code"] = rc
        record["train_log"] = str(log)
        stop.set()
        poller.join(timeout=70)
        by_node: dict[str, Counter] = defaultdict(Counter)
        for cls, node_id, _state in seen.values():
            by_node[names.get(node_id, str(node_id)[:8])][cls] += 1
        record["actors_by_node"] = {n: dict(c) for n, c in sorted(by_node.items())}
        record["spread_over_both"] = all(n in by_node for n in NODES)
        record["train_result"] = train_result(args.out)
    finally:
        ray("stop", "--force", check=False)
    record["total_s"] = round(time.time() - t0, 1)
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(json.dumps({k: record.get(k) for k in ("cpu", "train_exit_code", "train_s", "actors_by_node",
                                                  "spread_over_both")}, indent=2))
    return 0 if record.get("train_exit_code") == 0 and record.get("spread_over_both") else 1


if __name__ == "__main__":
    sys.exit(main())
