"""The ``hf`` rollout server: token-in/token-out generation with transformers, as a Ray actor.

verl's agent loop sends one request per sample (and per ``n``) to a rollout *server*; its registry
has only vllm/sglang/trtllm. :class:`HFRolloutServer` holds a copy of the policy in
``rollout.dtype``, batches concurrent requests into left-padded ``model.generate`` calls
(temperature, top-p, top-k, max tokens, repetition penalty, ignore-eos), returns verl's
:class:`TokenOutput` with ``extra_fields={"global_steps": ...}`` and, when asked, each sampled
token's log-probability under ``softmax(logits / temperature)`` — what the actor computes as
``old_log_prob``. It generates with the CPU paths of :mod:`memory_r1.llm` (the samples of one
prompt prefill it once). :mod:`memory_r1.train.verl.cpu.rollout_adapter` starts it (the replica)
and feeds it the trainer's weights (the server adapter).

Precision follows the CPU (``rollout.dtype``; ``auto``: :func:`memory_r1.hardware.resolve_cpu_dtype`):
bf16 where it is native (AMX, AVX512-BF16), fp32 where it is emulated. The rollout-vs-trainer
log-prob KL is ~3e-3 in bf16 and ~1e-5 in fp32.

Limits: text-only; a running batch cannot be aborted (fine for verl's synchronous trainer;
partial-rollout async modes untested).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

import torch
from verl.workers.rollout.replica import RolloutMode, TokenOutput

from memory_r1.llm.batcher import AsyncBatcher
from memory_r1.threads import configure_threads, worker_threads
from memory_r1.train.verl.cpu.settings import cfg_get, get_logger, peak_rss_bytes

log = get_logger(__name__)


def rollout_dtype(name: Any) -> torch.dtype:
    """A rollout dtype from verl's config; ``auto`` (or unset) is what this CPU runs fastest."""
    from memory_r1.llm.hf import resolve_dtype

    return resolve_dtype(name or "auto", "cpu")


@dataclass
class _Request:
    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    ignore_eos: bool
    logprobs: bool

    def key(self) -> tuple:
        return (
            self.max_tokens,
            self.temperature,
            self.top_p,
            self.top_k,
            self.repetition_penalty,
            self.ignore_eos,
        )


class _LogprobRecorder:
    """Logits processor (first in the chain, before temperature/top-k/top-p) that records the
    log-probability of each sampled token under ``softmax(logits / temperature)`` — what verl's actor
    computes for ``old_log_prob`` — holding one ``[batch, vocab]`` tensor at a time."""

    def __init__(self, temperature: float) -> None:
        self.inv_t = 1.0 / temperature if temperature and temperature > 0 else 1.0
        self.steps: list[torch.Tensor] = []
        self._pending: Optional[torch.Tensor] = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._pending is not None:
            self._take(input_ids[:, -1])
        self._pending = torch.log_softmax(scores.float() * self.inv_t, dim=-1)
        return scores

    def _take(self, chosen: torch.Tensor) -> None:
        assert self._pending is not None
        self.steps.append(self._pending.gather(1, chosen[:, None].to(self._pending.device)).squeeze(1))
        self._pending = None

    def finish(self, sequences: torch.Tensor, prompt_len: int) -> torch.Tensor:
        """``[batch, generated]`` log-probs once ``generate`` returned ``sequences`` (new tokens from
        ``prompt_len`` on)."""
        if self._pending is not None:
            pos = prompt_len + len(self.steps)
            if pos < sequences.shape[1]:
                self._take(sequences[:, pos])
            else:
                self._pending = None
        if not self.steps:
            return torch.zeros(sequences.shape[0], 0)
        return torch.stack(self.steps, dim=1)


class HFRolloutServer:
    """Token-in/token-out generation server on transformers (a Ray actor; verl's agent loop calls
    :meth:`generate` concurrently, one request per sample and per ``n``).

    Requests that arrive together are generated as one batch (:class:`memory_r1.llm.batcher.AsyncBatcher`:
    it waits until no new request came for ``batch_idle_s``, at most ``batch_max_wait_s``, then takes
    up to ``rollout.max_num_seqs`` requests sharing sampling parameters) by
    :func:`memory_r1.llm.hf_generate.generate_and_cut`, in a thread so the actor keeps accepting
    requests meanwhile.
    """

    batch_idle_s = 0.05
    batch_max_wait_s = 1.0

    def __init__(
        self,
        config: Any,
        model_config: Any,
        rollout_mode: RolloutMode = RolloutMode.HYBRID,
        replica_rank: int = 0,
        node_rank: int = 0,
        **_: Any,
    ) -> None:
        from verl.utils.config import omega_conf_to_dataclass

        self.config = omega_conf_to_dataclass(config) if not hasattr(config, "response_length") else config
        self.model_config = model_config
        self.rollout_mode = rollout_mode
        self.replica_rank = replica_rank
        self.node_rank = node_rank
        self.global_steps: Optional[int] = None
        self._lock = threading.Lock()  # generate vs. weight update
        self.stats = {"requests": 0, "batches": 0, "prefix_batches": 0, "generated_tokens": 0, "generate_s": 0.0,
                      "weight_syncs": 0}

        threads = configure_threads(worker_threads())
        seed = int(cfg_get(self.config, "seed", 0) or 0) + replica_rank
        torch.manual_seed(seed)
        self.dtype = rollout_dtype(cfg_get(self.config, "dtype", "auto"))
        self.model = self._load_model()
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.model.config.eos_token_id
        self.eos_ids: list[int] = [eos] if isinstance(eos, int) else list(eos or [])
        pad = gen.pad_token_id if gen.pad_token_id is not None else self.model.config.pad_token_id
        self.pad_id: int = pad if pad is not None else (self.eos_ids[0] if self.eos_ids else 0)
        prompt_len = int(cfg_get(self.config, "prompt_length", 512))
        response_len = int(cfg_get(self.config, "response_length", 512))
        self.max_model_len = int(cfg_get(self.config, "max_model_len", None) or prompt_len + response_len)
        self.max_batch = max(1, int(cfg_get(self.config, "max_num_seqs", 256) or 256))
        self._batcher = AsyncBatcher(self._generate_batch, max_batch=self.max_batch, idle_s=self.batch_idle_s,
                                     max_wait_s=self.batch_max_wait_s, key=_Request.key, name="hf rollout batch")
        log.info(
            "hf rollout server %d: %s in %s, %d threads, eos %s, max batch %d",
            replica_rank,
            type(self.model).__name__,
            self.dtype,
            threads,
            self.eos_ids,
            self.max_batch,
        )

    # -- model ----------------------------------------------------------------------------------------

    def _model_path(self) -> str:
        path = cfg_get(self.model_config, "local_path") or cfg_get(self.model_config, "path")
        if path is None:
            raise ValueError("rollout model config has no path")
        from verl.utils.fs import copy_to_local

        return copy_to_local(os.path.expanduser(str(path)), use_shm=bool(cfg_get(self.model_config, "use_shm", False)))

    def _load_model(self) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM

        from memory_r1.llm import cpu_attention, cpu_linear, kv_cache

        override = cfg_get(self.model_config, "override_config", None) or {}
        if hasattr(override, "items"):
            override = {k: v for k, v in override.items()}
        attn = override.pop("attn_implementation", None) or "sdpa"
        if attn == "sdpa":  # generation only: the same math, faster on left-padded CPU batches
            attn = cpu_attention.register()
        t0 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(
            self._model_path(),
            dtype=self.dtype,
            attn_implementation=attn,
            trust_remote_code=bool(cfg_get(self.model_config, "trust_remote_code", False)),
            local_files_only=True,
        )
        model.eval()
        model.requires_grad_(False)
        fast = attn == cpu_attention.NAME
        # packing is bit-identical to the plain matmul in bf16 and within ~3e-6 in fp32 (it halves the
        # 49k-vocab head's time in both); weights synced later (in place) are packed again on first use
        if fast:
            cpu_linear.pack_linears(model)
        self.fast_cpu = fast and kv_cache.supports(model.config)
        log.info("hf rollout server loaded the policy in %.1f s", time.perf_counter() - t0)
        return model

    # -- generation -----------------------------------------------------------------------------------

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str = "",
        image_data: Optional[list[Any]] = None,
        video_data: Optional[list[Any]] = None,
        audio_data: Optional[list[Any]] = None,
        mm_processor_kwargs: Optional[dict[str, Any]] = None,
        priority: int = 0,
        **_: Any,
    ) -> TokenOutput:
        if image_data or video_data or audio_data:
            raise NotImplementedError("the hf CPU rollout is text-only")
        from verl.utils import normalize_token_ids

        prompt_ids = list(normalize_token_ids(prompt_ids))
        params = dict(sampling_params)
        room = self.max_model_len - len(prompt_ids)
        if room < 1:
            raise ValueError(f"prompt of {len(prompt_ids)} tokens leaves no room in max_model_len {self.max_model_len}")
        if "max_tokens" in params:
            max_tokens = params.pop("max_tokens")
        elif "max_new_tokens" in params:
            max_tokens = params.pop("max_new_tokens")
        else:
            max_tokens = min(
                self.config.response_length, self.config.prompt_length + self.config.response_length - len(prompt_ids)
            )
        max_tokens = max(1, min(int(max_tokens), room))
        top_k = params.get("top_k", -1)
        req = _Request(
            prompt_ids=prompt_ids,
            max_tokens=max_tokens,
            temperature=float(params.get("temperature", 1.0) or 0.0),
            top_p=float(params.get("top_p", 1.0) if params.get("top_p") is not None else 1.0),
            top_k=int(top_k) if top_k is not None and int(top_k) > 0 else 0,
            repetition_penalty=float(
                params.get("repetition_penalty", cfg_get(self.config, "repetition_penalty", 1.0)) or 1.0
            ),
            ignore_eos=bool(params.get("ignore_eos", cfg_get(self.config, "ignore_eos", False))),
            logprobs=bool(params.get("logprobs", False)),
        )
        token_ids, logprobs = await self._batcher.submit(req)
        return TokenOutput(
            token_ids=token_ids,
            log_probs=logprobs,
            stop_reason="completed",
            num_preempted=0,
            extra_fields={"global_steps": self.global_steps},
        )

    @torch.inference_mode()
    def _generate_batch(self, batch: list[_Request]) -> list[tuple[list[int], Optional[list[float]]]]:
        from transformers import GenerationConfig, LogitsProcessorList

        from memory_r1.llm.hf_generate import generate_and_cut

        first = batch[0]
        sample = first.temperature > 0
        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": first.max_tokens,
            "do_sample": sample,
            "num_beams": 1,
            "repetition_penalty": first.repetition_penalty,
            "eos_token_id": self.eos_ids or None,
            "pad_token_id": self.pad_id,
            "use_cache": True,
        }
        if sample:  # top_k=0: transformers' default is 50, verl's -1 means off
            gen_kwargs.update(temperature=first.temperature, top_p=first.top_p, top_k=first.top_k)
        if first.ignore_eos:
            gen_kwargs["min_new_tokens"] = first.max_tokens
        recorder = _LogprobRecorder(first.temperature)
        t0 = time.perf_counter()
        with self._lock:
            # the GRPO samples of one prompt share all of it: computed once
            rows = generate_and_cut(
                self.model, [r.prompt_ids for r in batch], [first.max_tokens] * len(batch),
                pad_id=self.pad_id, eos_ids=self.eos_ids, padded_cache=self.fast_cpu,
                share_prefixes=self.fast_cpu, stop_at_eos=not first.ignore_eos,
                generation_config=GenerationConfig(**gen_kwargs), logits_processor=LogitsProcessorList([recorder]),
            )
        seconds = time.perf_counter() - t0
        width = rows.width
        self.stats["prefix_batches"] += int(rows.shared_prefix)
        logprobs = recorder.finish(rows.sequences, width)
        results = [(ids, logprobs[i, : len(ids)].tolist() if r.logprobs else None)
                   for i, (r, ids) in enumerate(zip(batch, rows.tokens, strict=True))]
        n_tokens = sum(len(ids) for ids in rows.tokens)
        self.stats["requests"] += len(batch)
        self.stats["batches"] += 1
        self.stats["generated_tokens"] += n_tokens
        self.stats["generate_s"] += seconds
        log.info(
            "hf rollout: batch of %d (prompt width %d) -> %d tokens in %.2f s",
            len(batch),
            width,
            n_tokens,
            seconds,
        )
        return results

    # -- weights ----------------------------------------------------------------------------------------

    def _load_state(self, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
        with self._lock, torch.no_grad():
            result = self.model.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not (k == "lm_head.weight" and self._tied())]
        return missing, list(result.unexpected_keys)

    def _tied(self) -> bool:
        return bool(getattr(self.model.config, "tie_word_embeddings", False))

    async def update_weights(self, state: dict[str, torch.Tensor], global_steps: Optional[int] = None) -> dict:
        """Load a full state dict (HF names) sent by :class:`~memory_r1.train.verl.cpu.rollout_adapter.HFServerAdapter`."""
        t0 = time.perf_counter()
        missing, unexpected = await asyncio.to_thread(self._load_state, state)
        if unexpected:
            raise ValueError(f"hf rollout: unexpected weights {unexpected[:5]} (of {len(unexpected)})")
        if missing:
            log.warning("hf rollout: %d weights were not updated, e.g. %s", len(missing), missing[:5])
        if global_steps is not None:
            self.global_steps = global_steps
        self.stats["weight_syncs"] += 1
        seconds = time.perf_counter() - t0
        log.info("hf rollout: loaded %d tensors (step %s) in %.2f s", len(state), global_steps, seconds)
        return {"tensors": len(state), "seconds": seconds, "missing": len(missing)}

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps

    async def get_stats(self) -> dict:
        return dict(self.stats, global_steps=self.global_steps, peak_rss_gb=peak_rss_bytes() / 2**30)

    # -- lifecycle hooks verl calls on every server (nothing to free on CPU) --------------------------

    async def wake_up(self, tags: Optional[list[str]] = None) -> None:
        return None

    async def sleep(self) -> None:
        return None

    async def clear_kv_cache(self) -> None:
        return None

    async def release_kv_cache(self) -> None:
        return None

    async def resume_kv_cache(self) -> None:
        return None

    async def wait_for_requests_to_drain(self) -> None:
        await self._batcher.drain()

    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False) -> dict:
        # batches are short and cannot be interrupted; callers (weight sync) wait for them instead
        await self.wait_for_requests_to_drain()
        return {"aborted_count": 0, "request_ids": []}

    async def abort_request(self, request_id: str, reset_prefix_cache: bool = True) -> dict:
        return {"aborted": False, "request_id": request_id}

    async def resume_generation(self) -> None:
        return None

    async def resume_engine_generation(self) -> None:
        return None

    async def open_submission_gate(self) -> None:
        return None

    async def start_profile(self, **kwargs: Any) -> None:
        return None

    async def stop_profile(self) -> None:
        return None

    def get_rollout_config(self) -> Any:
        return self.config

