"""The ``hf`` rollout's two verl-side halves around :class:`~.rollout_server.HFRolloutServer`.

- :class:`HFReplica` (``verl.workers.rollout.replica.RolloutReplicaRegistry``) starts one server
  per replica, as a named Ray actor on the node of the replica's first training worker;
- :class:`HFServerAdapter` (the rollout class of verl's hybrid training worker, which verl's
  checkpoint-engine backend ``naive`` calls to sync weights) receives the actor's full weights and
  loads them into the replica's server. Full-weight sync only (LoRA needs ``model.lora.merge=True``).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any, Optional

import torch
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica

from memory_r1.train.verl.cpu.rollout_server import HFRolloutServer, rollout_dtype
from memory_r1.train.verl.cpu.settings import ROLLOUT_NAME, get_logger

log = get_logger(__name__)

SERVER_NAME_PREFIX = f"{ROLLOUT_NAME}_server_"


def server_actor_name(replica_rank: int, name_suffix: str = "") -> str:
    return f"{SERVER_NAME_PREFIX}{replica_rank}_0{name_suffix}"


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
        self.dtype = rollout_dtype(self.config.dtype)
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

