"""verl 0.9.1's own trainer on CPU (memory_r1.train.verl.cpu): a real 2-step GRPO run with the
SmolLM2-135M backbone, checked through the saved HF checkpoint and verl's JSONL metrics."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

pytest.importorskip("verl")

REWARD_FN = '''
def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    return 1.0 if ground_truth.lower() in solution_str.lower() else 0.0
'''

QA = [
    ("the sky on a clear day", "blue"),
    ("fresh grass", "green"),
    ("snow", "white"),
    ("coal", "black"),
    ("a ripe banana", "yellow"),
    ("blood", "red"),
    ("a carrot", "orange"),
    ("chocolate", "brown"),
]


def write_dataset(path: Path) -> Path:
    """A tiny parquet in verl's RL dataset schema."""
    import pandas as pd

    rows = [
        {
            "data_source": "colours",
            "prompt": [{"role": "user", "content": f"Answer with one word: what colour is {thing}?"}],
            "ability": "qa",
            "reward_model": {"style": "rule", "ground_truth": colour},
            "extra_info": {"index": i, "split": "train"},
        }
        for i, (thing, colour) in enumerate(QA)
    ]
    pd.DataFrame(rows).to_parquet(path)
    return path


def _ray_descendants() -> list:
    import psutil

    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if "ray" in cmd or "raylet" in cmd or "gcs_server" in cmd:
            out.append(p)
    return out


@pytest.fixture
def clean_env():
    """run_verl sets VERL_PLATFORM etc. in this process; give the rest of the session its env back,
    and make sure no Ray cluster or Ray process outlives the test."""
    saved = dict(os.environ)
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()
    os.environ.clear()
    os.environ.update(saved)
    leftovers = _ray_descendants()
    deadline = time.time() + 20
    while leftovers and time.time() < deadline:
        time.sleep(1)
        leftovers = _ray_descendants()
    for p in leftovers:  # only our own children
        p.kill()
    assert not leftovers, f"Ray processes left behind: {[p.pid for p in leftovers]}"


@pytest.mark.slow
def test_hf_rollout_server_batches_and_reports_trainer_log_probs() -> None:
    """The rollout server alone (no Ray): concurrent requests become one batch, the returned
    log-probs are the trainer's ``log_softmax(logits / T)`` of the sampled tokens, greedy is
    deterministic, and a weight update changes the policy and the reported weight version."""
    import asyncio

    import torch
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from memory_r1.backbones import resolve_backbone
    from memory_r1.llm.hf import ensure_hf_checkpoint
    from memory_r1.train.verl.cpu.rollout_server import HFRolloutServer

    path = str(ensure_hf_checkpoint(resolve_backbone("smollm2-135m")))
    cfg = OmegaConf.create({"prompt_length": 64, "response_length": 12, "dtype": "float32", "max_num_seqs": 64})
    server = HFRolloutServer(config=cfg, model_config=OmegaConf.create({"path": path}))
    assert server.model.config._attn_implementation == "memr1_cpu"  # sdpa's math, the CPU attention
    tok = AutoTokenizer.from_pretrained(path)
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, return_dict=False)
        for q in ("What colour is snow?", "Name a fruit.", "Say hi.")
    ]
    sampling = {"temperature": 0.7, "top_p": 0.9, "top_k": 20, "logprobs": True, "max_tokens": 12}

    greedy_params = {"temperature": 0, "max_tokens": 8}

    async def sample():
        outs = await asyncio.gather(
            *[server.generate(prompt_ids=p, sampling_params=dict(sampling)) for p in prompts * 2]
        )
        greedy = await asyncio.gather(
            *[server.generate(prompt_ids=prompts[0], sampling_params=dict(greedy_params)) for _ in range(2)]
        )
        return outs, greedy

    outs, greedy = asyncio.run(sample())
    assert server.stats["batches"] == 2  # 6 sampled requests in one batch, 2 greedy in another
    # each prompt's samples share it whole: computed once per prompt (kv_cache.prefix_plan), and the
    # log-probs below still match teacher forcing
    assert server.stats["prefix_batches"] == 2
    for prompt, out in zip(prompts * 2, outs):
        assert 1 <= len(out.token_ids) <= 12
        assert out.extra_fields["global_steps"] is None and out.stop_reason == "completed"
        ids = torch.tensor([prompt + out.token_ids])
        with torch.no_grad():
            logits = server.model(ids).logits[0, len(prompt) - 1 : -1].float() / 0.7
        ref = logits.log_softmax(-1).gather(1, torch.tensor(out.token_ids)[:, None]).squeeze(1)
        assert torch.allclose(torch.tensor(out.log_probs), ref, atol=1e-3)
        if server.eos_ids[0] in out.token_ids:  # stops at (and keeps) the end-of-turn token
            assert out.token_ids.index(server.eos_ids[0]) == len(out.token_ids) - 1
    assert greedy[0].token_ids == greedy[1].token_ids and greedy[0].log_probs is None

    async def update():
        torch.manual_seed(0)
        state = {  # a full update, as verl sends; layer 0 perturbed
            k: (v + 0.05 * torch.randn_like(v)) if "layers.0." in k else v.clone()
            for k, v in server.model.state_dict().items()
        }
        info = await server.update_weights(state, global_steps=7)
        after = await server.generate(prompt_ids=prompts[0], sampling_params=dict(greedy_params))
        return info, after

    info, after = asyncio.run(update())
    assert info["tensors"] == len(server.model.state_dict()) and info["missing"] == 0
    assert after.extra_fields["global_steps"] == 7
    assert after.token_ids != greedy[0].token_ids


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_verl_grpo_on_cpu_updates_weights_and_logs(tmp_path: Path, clean_env) -> None:
    import torch
    from safetensors.torch import load_file

    from memory_r1.backbones import resolve_backbone
    from memory_r1.llm.hf import ensure_hf_checkpoint
    from memory_r1.train.verl.launch import run_verl

    model_dir = ensure_hf_checkpoint(resolve_backbone("smollm2-135m"))
    data = write_dataset(tmp_path / "colours.parquet")
    reward = tmp_path / "reward.py"
    reward.write_text(REWARD_FN)
    ckpt = tmp_path / "ckpt"
    steps = 2

    t0 = time.perf_counter()
    run = run_verl(
        [
            "algorithm.adv_estimator=grpo",
            f"data.train_files={data}",
            f"data.val_files={data}",
            "data.train_batch_size=2",
            "data.max_prompt_length=256",
            "data.max_response_length=16",
            f"actor_rollout_ref.model.path={model_dir}",
            "actor_rollout_ref.model.enable_gradient_checkpointing=False",
            "actor_rollout_ref.actor.optim.lr=1e-5",
            "actor_rollout_ref.actor.ppo_mini_batch_size=2",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
            "actor_rollout_ref.actor.use_kl_loss=False",
            "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
            "actor_rollout_ref.rollout.n=2",
            f"reward.custom_reward_function.path={reward}",
            "reward.custom_reward_function.name=compute_score",
            "trainer.val_before_train=False",
            "trainer.test_freq=-1",
            f"trainer.total_training_steps={steps}",
            f"trainer.save_freq={steps}",
            f"trainer.default_local_dir={ckpt}",
            f"trainer.rollout_data_dir={tmp_path / 'rollouts'}",
            "actor_rollout_ref.actor.checkpoint.save_contents=[hf_model]",
            "trainer.project_name=memr1_test",
            "trainer.experiment_name=grpo_cpu",
        ],
        metrics_path=tmp_path / "metrics.jsonl",
    )
    wall = time.perf_counter() - t0
    print(f"verl GRPO on CPU: {wall:.1f} s, s/step {run.step_seconds()}, peak memory {run.peak_memory_gb} GB")

    # metrics: one record per step, with verl's reward and timing keys
    assert [m["step"] for m in run.metrics] == list(range(1, steps + 1))
    for m in run.metrics:
        for key in (
            "critic/rewards/mean",
            "critic/score/mean",
            "timing_s/gen",
            "timing_s/old_log_prob",
            "timing_s/update_actor",
            "timing_s/update_weights",
            "timing_s/step",
            "actor/pg_loss",
            "response_length/mean",
        ):
            assert key in m, f"{key} missing from step {m['step']}: {sorted(m)}"
        assert 0.0 <= m["critic/rewards/mean"] <= 1.0
        # rollout (transformers, in the dtype auto picks) and trainer log-probs agree
        assert m["rollout_corr/kl"] < 0.05

    # every step's rollouts are dumped by verl: prompt, completion and its score
    dumps = sorted((tmp_path / "rollouts").glob("*.jsonl"))
    assert [p.stem for p in dumps] == [str(s) for s in range(1, steps + 1)]
    rows = [json.loads(line) for line in dumps[0].read_text().splitlines()]
    assert rows and all({"input", "output", "score"} <= set(r) for r in rows)

    # the saved HF checkpoint loads and differs from the initial weights
    from transformers import AutoModelForCausalLM

    hf_dir = ckpt / f"global_step_{steps}" / "actor" / "huggingface"
    assert (hf_dir / "config.json").exists(), sorted(p.name for p in hf_dir.parent.iterdir())
    trained = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32, local_files_only=True)
    initial = load_file(str(next(Path(model_dir).glob("*.safetensors"))))
    state = trained.state_dict()
    changed = [k for k, v in initial.items() if k in state and not torch.equal(state[k].float(), v.float())]
    assert len(changed) > len(initial) // 2, f"only {len(changed)} of {len(initial)} tensors changed"
    assert all(torch.isfinite(v).all() for v in state.values())
    # the update is an optimizer step of lr 1e-5, not a corruption
    diffs = [(state[k].float() - initial[k].float()).abs().max().item() for k in changed]
    assert max(diffs) < 1e-2


def test_running_out_of_memory_is_one_line_and_resumes_with_smaller_micro_batches(tmp_path: Path, clean_env,
                                                                                   monkeypatch) -> None:
    """Ray's memory monitor killing verl's task runner (as it did to a 2,048-token-prompt run on 24 GB)
    is one line saying what to lower, and the stopped run resumes with smaller micro-batches, not with
    another learning rate."""
    import ray.exceptions
    import verl.trainer.main_ppo as main_ppo
    from typer.testing import CliRunner

    from memory_r1.cli import app

    reached = []

    def killed(config, task_runner_class=None):
        reached.append(config.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu)
        oom = ray.exceptions.OutOfMemoryError("Memory on the node was 22.5GB / 23.5GB (0.96), exceeds 0.95")
        raise ray.exceptions.RayTaskError("TaskRunnerV1.run", "Traceback ...", oom).as_instanceof_cause()

    monkeypatch.setattr(main_ppo, "run_ppo", killed)
    out = tmp_path / "run"
    cmd = ["train", "answer", "--backbone", "smollm2-135m", "--algo", "grpo", "--out", str(out),
           "episodes.max_val_rows=4", "verl.trainer.total_training_steps=2"]

    def error_line(args: list[str]) -> str:
        res = CliRunner().invoke(app, args)
        lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]  # verl's warnings aside
        assert res.exit_code == 2 and len(lines) == 1, res.stderr
        return lines[0]

    line = error_line(cmd)
    assert "verl ran out of memory after 0 logged step(s)" in line
    assert "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu" in line and "--resume" in line
    assert "Traceback" not in line and (out / "recipe.yaml").exists()  # the folder is kept to resume
    smaller = ["--resume", "verl.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
               "verl.actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1"]
    assert "ran out of memory" in error_line(cmd + smaller)  # verl reached again, with micro-batches of 1
    assert reached == [2, 1]
    assert "trained with another recipe" in error_line(cmd + ["--resume", "verl.actor_rollout_ref.actor.optim.lr=1e-5"])
    assert reached == [2, 1]
