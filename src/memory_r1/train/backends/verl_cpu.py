"""verl 0.9.1's own PPO/GRPO trainer on CPU, through verl's extension points (no verl file is edited).

Stock ``verl.trainer.main_ppo`` stops on a machine without accelerators ("Total available GPUs 0 is
less than total desired GPUs 1"). This module supplies what is missing through the registries and
hooks verl offers for out-of-tree hardware and inference engines. It is imported in *every* verl
process (driver, TaskRunner, training workers, agent-loop and reward workers) by verl itself:
``import verl`` imports the modules named in ``VERL_USE_EXTERNAL_MODULES`` (this one), and
:func:`register` runs at import. :func:`env_for_workers` gives that variable and ``VERL_PLATFORM=cpu``.

Extension points used, and why:

1. **Platform registry** (``verl.plugin.platform.PlatformRegistry``, selected by ``VERL_PLATFORM``):
   :class:`PlatformCPU` as ``cpu``. Every ``verl.utils.device`` helper (device name, the
   ``torch.cuda`` stand-in, device id, collective backend, Ray resource name) asks the platform, so
   this is how verl learns that "the device" is the CPU: device ``cpu``, gloo collectives,
   ``current_device() -> torch.device("cpu")`` (verl passes it to ``.to()``; an int would mean
   ``cuda:<int>``), a device module whose memory queries report the worker's RSS (so verl's
   ``perf/max_memory_allocated_gb`` is the training worker's peak RAM), and logical Ray ``GPU``
   slots as the placement unit of verl's resource pools.
2. **Engine registry** (``verl.workers.engine.EngineRegistry``): verl's FSDP engines
   (``FSDPEngineWithLMHead`` for actor and reference, ``FSDPEngineWithValueHead`` for the critic)
   registered for device ``cpu`` (backends ``fsdp``/``fsdp2``), each with one CPU override
   (:func:`cpu_engines`): forward-only models (the reference policy) are not wrapped in FSDP's
   pinned-memory CPU offloading (needs an accelerator), and the critic is built with the configured
   attention (verl's value-model loader hard-codes ``flash_attention_2``).
3. **Rollout registries** (``verl.workers.rollout.replica.RolloutReplicaRegistry`` and the
   rollout-class table ``verl.workers.rollout.base._ROLLOUT_REGISTRY``, which has no public
   ``register``): a rollout named ``hf`` (``actor_rollout_ref.rollout.name=hf``), generating with
   transformers ``generate`` (verl's registry has only vllm/sglang/trtllm). verl's agent loop sends
   token-in/token-out requests to a rollout *server*; the trainer's weight sync (checkpoint-engine
   backend ``naive``) calls a *server adapter* inside the training worker:

   - :class:`HFRolloutServer` (Ray actor, one per replica) holds a copy of the policy in
     ``rollout.dtype``, batches concurrent requests (one per sample and per ``n``) into left-padded
     ``model.generate`` calls (temperature, top-p, top-k, max tokens, repetition penalty,
     ignore-eos), returns :class:`TokenOutput` with ``extra_fields={"global_steps": ...}`` and, when
     asked, each sampled token's log-probability under ``softmax(logits / temperature)`` — what the
     actor computes as ``old_log_prob``;
   - :class:`HFReplica` starts it on the node of the replica's training worker;
   - :class:`HFServerAdapter` receives the actor's full weights and loads them into the server.

Traps handled here:

- verl initialises the default process group with backend ``f"cpu:gloo,{device}:{backend}"``; for
  device ``cpu`` that is ``"cpu:gloo,cpu:gloo"``, which torch rejects ("Duplicate device type cpu").
  The helper only initialises when no group exists and asks the platform for the backend name right
  before, so :meth:`PlatformCPU.communication_backend_name` first creates the default group on gloo
  from the rendezvous variables verl has already set (``RANK``, ``WORLD_SIZE``, ``MASTER_*``).
- Ray starts actors with ``OMP_NUM_THREADS=1``: the platform sets torch's threads to
  ``$MEMR1_CPU_THREADS`` (default: all cores), and ``OMP_WAIT_POLICY=PASSIVE`` keeps idle OpenMP
  threads from spinning. On a busy machine (more runnable threads than cores) spinning made
  2-thread generation and training 2-4x slower than 1 thread; passive, 2 threads are never worse.
- Precision follows the CPU (:func:`~memory_r1.train.verl_config.precision_overrides`, the recipe's
  ``dtype: auto``): where bf16 is native (AMX, AVX512-BF16) verl's defaults (FSDP mixed precision,
  fp32 master weights with bf16 compute; ``rollout.dtype=bfloat16``), ~1.6x faster per step than
  fp32 there; where bf16 is emulated (~10x slower than fp32) fp32 throughout
  (``+...fsdp_config.mixed_precision={param_dtype:fp32,...}``, ``rollout.dtype=float32``). The
  rollout-vs-trainer log-prob KL is ~3e-3 in bf16 and ~1e-5 in fp32.

Config (:func:`cpu_overrides`, Hydra overrides for verl's ``ppo_trainer``): ``trainer.device=cpu``;
one logical GPU per training rank (``trainer.n_gpus_per_node=1`` + ``ray_init.num_gpus=1``); 16
logical CPUs for Ray (with 2 the TransferQueue storage actors are never scheduled and the run waits
forever, silently); one TransferQueue storage unit; ``fsdp2``; no remove-padding (flash-attn varlen
kernels); no ``torch.compile``; SDPA attention; one agent-loop and one reward worker (not eight); no
Ray dashboard; the environment of :func:`env_for_workers` for every Ray process.

Limits: text-only; full-weight sync only (LoRA needs ``model.lora.merge=True``); a running batch
cannot be aborted (fine for verl's synchronous trainer; partial-rollout async modes untested).

Run it with :func:`memory_r1.train.backends.verl_runner.run_verl`, or by hand::

    os.environ.update(env_for_workers())            # before ray.init / importing verl's trainer
    overrides = cpu_overrides() + ["algorithm.adv_estimator=grpo", ...]

>>> "trainer.device=cpu" in cpu_overrides()
True
>>> env_for_workers()["VERL_PLATFORM"], env_for_workers()["VERL_USE_EXTERNAL_MODULES"]
('cpu', 'memory_r1.train.backends.verl_cpu')
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import threading
import time
import types
from collections.abc import AsyncIterator, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Optional

import torch
from verl.plugin.platform import PlatformBase
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutMode, RolloutReplica, TokenOutput

from memory_r1.threads import WORKER_THREADS_ENV, worker_threads

log = logging.getLogger(__name__)
if os.environ.get("VERL_LOGGING_LEVEL"):  # verl's convention for its own loggers, also in Ray workers
    log.setLevel(os.environ["VERL_LOGGING_LEVEL"].upper())

PLATFORM_NAME = "cpu"
ROLLOUT_NAME = "hf"
MODULE_NAME = __name__  # what VERL_USE_EXTERNAL_MODULES must name
SERVER_NAME_PREFIX = f"{ROLLOUT_NAME}_server_"


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


# ---------------------------------------------------------------------------------------------------
# 1. Platform
# ---------------------------------------------------------------------------------------------------


class _CPUDeviceModule(types.ModuleType):
    """Stands in for ``torch.cuda`` (what verl calls ``get_torch_device()``).

    Streams, events, ``is_available`` and friends come from ``torch.cpu``; memory queries report the
    process's RSS (``max_memory_allocated`` = peak RSS), so verl's ``perf/max_memory_*`` metrics mean
    "peak RAM of the training worker" on CPU; cache/IPC calls are no-ops.
    """

    def __init__(self) -> None:
        super().__init__("memory_r1_cpu_device")

    def __getattr__(self, name: str) -> Any:  # anything else torch.cpu has
        return getattr(torch.cpu, name)

    # device bookkeeping
    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def device_count() -> int:
        return 1

    @staticmethod
    def current_device() -> torch.device:
        return torch.device("cpu")

    @staticmethod
    def set_device(device: Any) -> None:
        return None

    @staticmethod
    def get_device_name(device: Any = None) -> str:
        return "CPU"

    @staticmethod
    def synchronize(device: Any = None) -> None:
        return None

    # memory
    @staticmethod
    def empty_cache() -> None:
        return None

    @staticmethod
    def ipc_collect() -> None:
        return None

    @staticmethod
    def set_per_process_memory_fraction(fraction: float, device: Any = None) -> None:
        return None

    @staticmethod
    def memory_allocated(device: Any = None) -> int:
        return _rss_bytes()

    @staticmethod
    def memory_reserved(device: Any = None) -> int:
        return _rss_bytes()

    @staticmethod
    def max_memory_allocated(device: Any = None) -> int:
        return _peak_rss_bytes()

    @staticmethod
    def max_memory_reserved(device: Any = None) -> int:
        return _peak_rss_bytes()

    @staticmethod
    def reset_peak_memory_stats(device: Any = None) -> None:
        return None

    @staticmethod
    def mem_get_info(device: Any = None) -> tuple[int, int]:
        import psutil

        vm = psutil.virtual_memory()
        return vm.available, vm.total

    # RNG
    @staticmethod
    def manual_seed(seed: int) -> None:
        torch.manual_seed(seed)

    @staticmethod
    def manual_seed_all(seed: int) -> None:
        torch.manual_seed(seed)

    @staticmethod
    def get_rng_state(device: Any = None) -> torch.Tensor:
        return torch.get_rng_state()

    @staticmethod
    def set_rng_state(state: torch.Tensor, device: Any = None) -> None:
        torch.set_rng_state(state)


CPU_DEVICE_MODULE = _CPUDeviceModule()


def _maybe_init_gloo_process_group() -> None:
    """Create the default process group on gloo if this is a verl worker that is about to need one.

    See the module docstring: verl's own initialisation would pass ``"cpu:gloo,cpu:gloo"``."""
    import torch.distributed as dist

    if not dist.is_available() or dist.is_initialized():
        return
    needed = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    if not all(os.environ.get(k) for k in needed):
        return
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    log.info("initialising the default process group on gloo (rank %d of %d)", rank, world)
    dist.init_process_group(backend="gloo", rank=rank, world_size=world)


class PlatformCPU(PlatformBase):
    """verl platform for plain CPUs: device ``cpu``, gloo collectives, logical Ray "GPU" slots.

    Creating it (verl does once per process, on first use) also sets torch's intra-op threads to
    ``$MEMR1_CPU_THREADS`` or all cores: Ray starts actors with ``OMP_NUM_THREADS=1``.
    """

    def __init__(self) -> None:
        threads = worker_threads()
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> types.ModuleType:
        return CPU_DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # never auto-detected: CUDA machines must keep their platform unless VERL_PLATFORM=cpu
        return False

    def current_device(self) -> torch.device:  # type: ignore[override]
        # verl passes this to ``.to(...)`` / ``torch.device(...)``; an int would mean cuda:<int>
        return torch.device("cpu")

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: Optional[int] = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[Optional[int], Optional[int]]:
        return None, None

    def communication_backend_name(self) -> str:
        _maybe_init_gloo_process_group()
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"  # Ray's logical GPU ids land here; harmless on CPU

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"  # logical: ray.init(num_gpus=N) on a CPU-only machine

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        return {"num_gpus": num_gpus}

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


# ---------------------------------------------------------------------------------------------------
# 3. Rollout: transformers generate behind verl's server/replica/adapter interfaces
# ---------------------------------------------------------------------------------------------------

def server_actor_name(replica_rank: int, name_suffix: str = "") -> str:
    return f"{SERVER_NAME_PREFIX}{replica_rank}_0{name_suffix}"


def _dtype(name: Any) -> torch.dtype:
    """A rollout dtype from verl's config; ``auto`` (or unset) is what this CPU runs fastest."""
    if isinstance(name, torch.dtype):
        return name
    from memory_r1.hardware import resolve_cpu_dtype

    return getattr(torch, resolve_cpu_dtype(name or "auto")[0])


def _cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
    if cfg is None:
        return default
    if hasattr(cfg, "get"):
        try:
            return cfg.get(key, default)
        except Exception:  # dataclass configs with a get() of another signature
            pass
    return getattr(cfg, key, default)


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
    future: asyncio.Future

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

    def __init__(self, prompt_len: int, temperature: float) -> None:
        self.prompt_len = prompt_len
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

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """``[batch, generated]`` log-probs once ``generate`` returned ``sequences``."""
        if self._pending is not None:
            pos = self.prompt_len + len(self.steps)
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

    Requests that arrive together are generated as one left-padded batch: the batcher waits until no
    new request came for ``batch_idle_s`` (at most ``batch_max_wait_s``), then takes up to
    ``rollout.max_num_seqs`` requests sharing sampling parameters. ``model.generate`` runs in a thread
    so the actor keeps accepting requests meanwhile.
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
        self._queue: list[_Request] = []
        self._event: Optional[asyncio.Event] = None
        self._batcher: Optional[asyncio.Task] = None
        self._inflight = 0
        self._lock = threading.Lock()  # generate vs. weight update
        self.stats = {"requests": 0, "batches": 0, "prefix_batches": 0, "generated_tokens": 0, "generate_s": 0.0,
                      "weight_syncs": 0}

        threads = worker_threads()
        torch.set_num_threads(threads)
        seed = int(_cfg_get(self.config, "seed", 0) or 0) + replica_rank
        torch.manual_seed(seed)
        self.dtype = _dtype(_cfg_get(self.config, "dtype", "auto"))
        self.model = self._load_model()
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.model.config.eos_token_id
        self.eos_ids: list[int] = [eos] if isinstance(eos, int) else list(eos or [])
        pad = gen.pad_token_id if gen.pad_token_id is not None else self.model.config.pad_token_id
        self.pad_id: int = pad if pad is not None else (self.eos_ids[0] if self.eos_ids else 0)
        prompt_len = int(_cfg_get(self.config, "prompt_length", 512))
        response_len = int(_cfg_get(self.config, "response_length", 512))
        self.max_model_len = int(_cfg_get(self.config, "max_model_len", None) or prompt_len + response_len)
        self.max_batch = max(1, int(_cfg_get(self.config, "max_num_seqs", 256) or 256))
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
        path = _cfg_get(self.model_config, "local_path") or _cfg_get(self.model_config, "path")
        if path is None:
            raise ValueError("rollout model config has no path")
        from verl.utils.fs import copy_to_local

        return copy_to_local(os.path.expanduser(str(path)), use_shm=bool(_cfg_get(self.model_config, "use_shm", False)))

    def _load_model(self) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM

        from memory_r1.llm import cpu_attention, cpu_linear, kv_cache

        override = _cfg_get(self.model_config, "override_config", None) or {}
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
            trust_remote_code=bool(_cfg_get(self.model_config, "trust_remote_code", False)),
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
                params.get("repetition_penalty", _cfg_get(self.config, "repetition_penalty", 1.0)) or 1.0
            ),
            ignore_eos=bool(params.get("ignore_eos", _cfg_get(self.config, "ignore_eos", False))),
            logprobs=bool(params.get("logprobs", False)),
            future=asyncio.get_running_loop().create_future(),
        )
        self._ensure_batcher()
        self._queue.append(req)
        self._inflight += 1
        assert self._event is not None
        self._event.set()
        try:
            token_ids, logprobs = await req.future
        finally:
            self._inflight -= 1
        return TokenOutput(
            token_ids=token_ids,
            log_probs=logprobs,
            stop_reason="completed",
            num_preempted=0,
            extra_fields={"global_steps": self.global_steps},
        )

    def _ensure_batcher(self) -> None:
        if self._batcher is None or self._batcher.done():  # first request (or a new event loop)
            self._event = asyncio.Event()
            self._batcher = asyncio.get_running_loop().create_task(self._batch_loop())

    async def _batch_loop(self) -> None:
        assert self._event is not None
        while True:
            if not self._queue:
                self._event.clear()
                await self._event.wait()
                continue
            # let a burst of requests (one rollout step) arrive before batching
            waited, seen = 0.0, len(self._queue)
            while waited < self.batch_max_wait_s and len(self._queue) < self.max_batch:
                await asyncio.sleep(self.batch_idle_s)
                waited += self.batch_idle_s
                if len(self._queue) == seen:
                    break
                seen = len(self._queue)
            key = self._queue[0].key()
            batch = [r for r in self._queue if r.key() == key][: self.max_batch]
            taken = {id(r) for r in batch}
            self._queue = [r for r in self._queue if id(r) not in taken]
            try:
                results = await asyncio.to_thread(self._generate_batch, batch)
            except Exception as exc:  # fail the requests, keep serving
                log.exception("hf rollout batch of %d failed", len(batch))
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(exc)
                continue
            for r, res in zip(batch, results, strict=True):
                if not r.future.done():
                    r.future.set_result(res)

    @torch.inference_mode()
    def _generate_batch(self, batch: list[_Request]) -> list[tuple[list[int], Optional[list[float]]]]:
        from transformers import GenerationConfig, LogitsProcessorList

        first = batch[0]
        from memory_r1.llm import kv_cache

        # the GRPO samples of one prompt share all of it: computed once
        input_ids, attention, cache, shared = kv_cache.generation_inputs(
            self.model, [r.prompt_ids for r in batch], first.max_tokens, self.pad_id,
            padded_cache=self.fast_cpu, share_prefixes=self.fast_cpu,
        )
        width = input_ids.shape[1]
        self.stats["prefix_batches"] += int(shared)
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
        recorder = _LogprobRecorder(width, first.temperature)
        t0 = time.perf_counter()
        with self._lock:
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention,
                generation_config=GenerationConfig(**gen_kwargs),
                logits_processor=LogitsProcessorList([recorder]),
                **({"past_key_values": cache} if cache is not None else {}),
            )
        seconds = time.perf_counter() - t0
        sequences = out if isinstance(out, torch.Tensor) else out.sequences
        logprobs = recorder.finish(sequences)
        generated = sequences[:, width:]
        results: list[tuple[list[int], Optional[list[float]]]] = []
        n_tokens = 0
        eos = set(self.eos_ids)
        for i, r in enumerate(batch):
            ids = generated[i].tolist()
            cut = len(ids)
            if not r.ignore_eos:
                for j, t in enumerate(ids):
                    if t in eos:
                        cut = j + 1  # keep the stop token, as vLLM does
                        break
            ids = ids[:cut]
            n_tokens += len(ids)
            lp = logprobs[i, :cut].tolist() if r.logprobs else None
            results.append((ids, lp))
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
        """Load a full state dict (HF names) sent by :class:`HFServerAdapter`."""
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
        return dict(self.stats, global_steps=self.global_steps, peak_rss_gb=_peak_rss_bytes() / 2**30)

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
        while self._inflight:
            await asyncio.sleep(0.01)

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


class HFReplica(RolloutReplica):
    """One :class:`HFRolloutServer` per replica, on the node of the replica's first training worker."""

    async def launch_servers(self) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        options: dict[str, Any] = {
            "name": self._server_name(),
            "max_concurrency": self.max_concurrency,
            "num_cpus": 0,
        }
        if self.workers:
            node_id = await self.workers[0].__ray_call__.remote(lambda w: ray.get_runtime_context().get_node_id())
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
        server = (
            ray.remote(HFRolloutServer)
            .options(**options)
            .remote(
                config=self.config,
                model_config=self.model_config,
                rollout_mode=self.rollout_mode,
                replica_rank=self.replica_rank,
                node_rank=0,
            )
        )
        await server.get_stats.remote()  # fail here, not at the first request, if the model cannot load
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"{ROLLOUT_NAME}://replica-{self.replica_rank}{self.name_suffix}"

    def _server_name(self) -> str:
        if self.is_reward_model:
            return f"{SERVER_NAME_PREFIX}reward_{self.replica_rank}_0{self.name_suffix}"
        if self.is_teacher_model:
            return f"{SERVER_NAME_PREFIX}teacher_{self.replica_rank}_0{self.name_suffix}"
        return server_actor_name(self.replica_rank, self.name_suffix)


class HFServerAdapter(BaseRollout):
    """The rollout object inside verl's hybrid training worker: forwards weight updates to the
    replica's :class:`HFRolloutServer` (found by its Ray actor name).

    Every rank consumes the weight generator (with FSDP across several ranks each tensor is an
    all-gather), the replica's first rank sends the tensors, cast to the rollout dtype.
    """

    def __init__(self, config: Any, model_config: Any, device_mesh: Any, replica_rank: int = -1, **kwargs: Any):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        per_replica = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        self.replica_rank = rank // per_replica if replica_rank < 0 else replica_rank
        self.rollout_rank = rank % per_replica
        self.dtype = _dtype(self.config.dtype)
        self.server_handle: Any = None

    def _server(self) -> Any:
        if self.rollout_rank != 0:
            return None
        if self.server_handle is None:
            import ray

            self.server_handle = ray.get_actor(server_actor_name(self.replica_rank))
        return self.server_handle

    async def resume(self, tags: list[str]) -> None:
        return None

    async def release(self) -> None:
        return None

    async def update_weights(
        self,
        weights: Iterable[tuple[str, torch.Tensor]] | AsyncIterator[tuple[str, torch.Tensor]],
        wire_format: str = "named_tensors",
        global_steps: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        if wire_format != "named_tensors":
            raise NotImplementedError(f"hf rollout receives full tensors only, not {wire_format!r}")
        if kwargs.get("peft_config") is not None:
            raise NotImplementedError("hf rollout: LoRA adapters are not supported; use model.lora.merge=True")
        t0 = time.perf_counter()
        server = self._server()
        state: dict[str, torch.Tensor] = {}
        if hasattr(weights, "__aiter__"):
            async for name, tensor in weights:  # type: ignore[union-attr]
                if server is not None:
                    state[name] = self._host(tensor)
        else:
            for name, tensor in weights:  # type: ignore[union-attr]
                if server is not None:
                    state[name] = self._host(tensor)
        if server is None:
            return None
        await server.update_weights.remote(state, global_steps)
        log.info("hf rollout: weights for step %s sent in %.2f s", global_steps, time.perf_counter() - t0)
        return None

    def _host(self, tensor: torch.Tensor) -> torch.Tensor:
        # no copy when the dtype already matches: Ray serialises the arguments when the call is made
        t = tensor.detach()
        if hasattr(t, "full_tensor"):
            t = t.full_tensor()
        if t.is_floating_point() and t.dtype != self.dtype:
            return t.to("cpu", dtype=self.dtype)
        return t.to("cpu")

    def generate_sequences(self, prompts: Any) -> Any:
        raise NotImplementedError("use the server (verl's agent loop) for generation")


# ---------------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------------

_registered: set[str] = set()


def register_platform() -> None:
    """Register :class:`PlatformCPU` as ``cpu`` in verl's platform registry (idempotent)."""
    from verl.plugin.platform import PlatformRegistry

    if PlatformRegistry.get(PLATFORM_NAME) is not PlatformCPU:
        PlatformRegistry.register(platform=PLATFORM_NAME)(PlatformCPU)


def register_rollout() -> None:
    """Register the ``hf`` rollout: replica class and server-adapter class (idempotent)."""
    from verl.workers.rollout import base as rollout_base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    RolloutReplicaRegistry.register(ROLLOUT_NAME, lambda: HFReplica)
    # verl has no public register() for the worker-side class; this dict is what get_rollout_class reads
    rollout_base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = f"{MODULE_NAME}.HFServerAdapter"


_cpu_engine_classes: Optional[tuple[type, type]] = None


class _NoForwardOnlyOffload:
    """Mixin for verl's FSDP engines: wrap forward-only models without CPU offloading (see
    :func:`cpu_engines`)."""

    engine_config: Any

    def _build_fsdp_module(self, module: Any) -> Any:
        if not self.engine_config.forward_only:
            return super()._build_fsdp_module(module)  # type: ignore[misc]
        self.engine_config.forward_only = False  # a mutable field of verl's EngineConfig
        try:
            return super()._build_fsdp_module(module)  # type: ignore[misc]
        finally:
            self.engine_config.forward_only = True


def cpu_engines() -> tuple[type, type]:
    """verl's FSDP engines (``FSDPEngineWithLMHead``, ``FSDPEngineWithValueHead``), each with one
    CPU-specific override, registered for device ``cpu`` by :func:`register_engines`:

    - language model (actor, reference): verl wraps *forward-only* models (the reference policy) in
      FSDP's CPU offloading with pinned memory, which needs an accelerator ("Cannot access
      accelerator device when none is available") and means nothing when the device is the CPU, so
      they are wrapped like trainable models;
    - value model (critic): verl builds critics with ``verl.utils.model.load_valuehead_model``, which
      hard-codes ``attn_implementation="flash_attention_2"`` (no override reaches it), so on CPU the
      critic cannot be built. The override builds verl's first-choice critic architecture,
      ``AutoModelForTokenClassification`` with one label (the value per token), with the attention
      the model config asks for (``model.override_config.attn_implementation``, SDPA by default).

    Everything else (FSDP2 wrapping, mixed precision, losses, checkpoints) is verl's."""
    global _cpu_engine_classes
    if _cpu_engine_classes is not None:
        return _cpu_engine_classes
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

    class CPUFSDPEngineWithLMHead(_NoForwardOnlyOffload, FSDPEngineWithLMHead):
        pass

    class CPUFSDPEngineWithValueHead(_NoForwardOnlyOffload, FSDPEngineWithValueHead):
        def _build_module(self):  # type: ignore[override]
            if self.model_config.model_type != "value_model":
                return super()._build_module()
            import warnings

            from transformers import AutoModelForTokenClassification
            from verl.models.transformers.monkey_patch import apply_monkey_patch
            from verl.utils.fsdp_utils import get_init_weight_context_manager
            from verl.utils.torch_dtypes import PrecisionType

            dtype = PrecisionType.to_dtype(self.engine_config.model_dtype or "fp32")
            hf_config = self.model_config.hf_config
            hf_config.num_labels = 1
            hf_config.classifier_dropout = 0.0
            attn = getattr(hf_config, "_attn_implementation", None) or "sdpa"
            if attn.startswith("flash_attention"):
                attn = "sdpa"
            init_context = get_init_weight_context_manager(
                use_meta_tensor=not hf_config.tie_word_embeddings, mesh=self.device_mesh
            )
            with init_context(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = AutoModelForTokenClassification.from_pretrained(
                    self.model_config.local_path,
                    dtype=dtype,
                    config=hf_config,
                    attn_implementation=attn,
                    trust_remote_code=self.model_config.trust_remote_code,
                )
                apply_monkey_patch(
                    model=module,
                    use_remove_padding=self.use_remove_padding,
                    ulysses_sp_size=self.ulysses_sequence_parallel_size,
                    use_fused_kernels=self.model_config.use_fused_kernels,
                )
                module.to(dtype)
                if self.model_config.enable_gradient_checkpointing:
                    module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            return module

    for cls in (CPUFSDPEngineWithLMHead, CPUFSDPEngineWithValueHead):
        cls.__module__ = MODULE_NAME
        cls.__qualname__ = cls.__name__
    _cpu_engine_classes = (CPUFSDPEngineWithLMHead, CPUFSDPEngineWithValueHead)
    return _cpu_engine_classes


def register_engines() -> None:
    """Register verl's FSDP engines for device ``cpu`` (backends fsdp and fsdp2; idempotent), with
    the two CPU overrides of :func:`cpu_engines`.

    Imports ``verl.workers.engine``, which resolves verl's platform: call with ``VERL_PLATFORM=cpu``
    (or after :func:`use_cpu_platform`)."""
    if "engines" in _registered:
        return
    import warnings

    with warnings.catch_warnings():  # "torchtitan/veomni/megatron engine is not available", once per process
        warnings.filterwarnings("ignore", message=r".* engine is not available", category=UserWarning)
        from verl.workers.engine import EngineRegistry

        lm_engine, value_engine = cpu_engines()

    for model_type, engine in (("language_model", lm_engine), ("value_model", value_engine)):
        table = EngineRegistry._engines.get(model_type, {})
        backends = [b for b in ("fsdp", "fsdp2") if PLATFORM_NAME not in table.get(b, {})]
        if backends:
            EngineRegistry.register(model_type=model_type, backend=backends, device=PLATFORM_NAME)(engine)
    _registered.add("engines")


def use_cpu_platform() -> None:
    """Make this process use the CPU platform now (env + verl's platform singleton) and register
    everything. For the driver process; Ray processes get it from :func:`env_for_workers`."""
    from verl.plugin.platform import get_platform, set_platform

    for key, value in env_for_workers().items():
        if key.startswith("VERL_"):
            os.environ[key] = value
        else:
            os.environ.setdefault(key, value)
    register_platform()
    register_rollout()
    if not isinstance(get_platform(), PlatformCPU):
        set_platform(PlatformCPU())
    register_engines()


def register() -> None:
    """Everything this module adds to verl. Engines only when the CPU platform is selected
    (``VERL_PLATFORM=cpu``): importing the engines fixes verl's platform for the process."""
    register_platform()
    register_rollout()
    if os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM_NAME:
        register_engines()


# ---------------------------------------------------------------------------------------------------
# Config helpers
# ---------------------------------------------------------------------------------------------------


def env_for_workers(threads: Optional[int] = None) -> dict[str, str]:
    """Environment every verl process needs (set it before ``ray.init`` and/or pass it as
    ``ray_kwargs.ray_init.runtime_env.env_vars``)."""
    n = str(threads or worker_threads())
    return {
        "VERL_PLATFORM": PLATFORM_NAME,
        "VERL_USE_EXTERNAL_MODULES": MODULE_NAME,
        WORKER_THREADS_ENV: n,
        "OMP_NUM_THREADS": n,
        # idle OpenMP threads sleep instead of spinning: on a busy machine (more runnable threads than
        # cores) spinning made 2-thread matmuls 2-4x slower than 1 thread; passive keeps 2 threads >= 1
        "OMP_WAIT_POLICY": "PASSIVE",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def cpu_overrides(
    *, critic: bool = True, num_cpus: int = 16, extra_env: Optional[dict[str, str]] = None,
    dtype: str = "auto",
) -> list[str]:
    """Hydra overrides (for verl's ``ppo_trainer`` config) that make the trainer run on CPU.

    ``critic``: also set the critic's engine options (harmless when no critic is used).
    ``extra_env``: more environment variables for every Ray process (``runtime_env.env_vars``).
    ``dtype``: rollout dtype and training precision
    (:func:`~memory_r1.train.verl_config.precision_overrides`; ``auto``: measured on this CPU)."""
    from memory_r1.train.verl_config import precision_overrides

    env = ",".join(f"{k}:'{v}'" for k, v in {**env_for_workers(), **(extra_env or {})}.items())
    out = [
        "trainer.device=cpu",
        "trainer.nnodes=1",
        "trainer.n_gpus_per_node=1",
        "+ray_kwargs.ray_init.num_gpus=1",
        f"ray_kwargs.ray_init.num_cpus={num_cpus}",
        "+ray_kwargs.ray_init.include_dashboard=False",
        f"+ray_kwargs.ray_init.runtime_env.env_vars={{{env}}}",
        "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
        "actor_rollout_ref.actor.strategy=fsdp2",
        "actor_rollout_ref.ref.strategy=fsdp2",
        "actor_rollout_ref.model.use_remove_padding=False",
        "actor_rollout_ref.actor.use_torch_compile=False",
        "actor_rollout_ref.actor.fsdp_config.use_torch_compile=False",
        "actor_rollout_ref.ref.fsdp_config.use_torch_compile=False",
        "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
        f"actor_rollout_ref.rollout.name={ROLLOUT_NAME}",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "reward.num_workers=1",
        "data.dataloader_num_workers=0",
    ]
    out += precision_overrides(dtype, critic=critic)
    if critic:
        out += [
            "critic.strategy=fsdp2",
            "critic.model.use_remove_padding=False",
            "critic.fsdp.use_torch_compile=False",
            "+critic.model.override_config.attn_implementation=sdpa",
        ]
    return out


register()
