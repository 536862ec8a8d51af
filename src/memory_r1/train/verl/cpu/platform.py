"""The ``cpu`` device platform for verl (``verl.plugin.platform``, selected by ``VERL_PLATFORM=cpu``).

Every ``verl.utils.device`` helper (device name, the ``torch.cuda`` stand-in, device id, collective
backend, Ray resource name) asks the platform, so this is how verl learns that "the device" is the
CPU: device ``cpu``, gloo collectives, ``current_device() -> torch.device("cpu")`` (verl passes it
to ``.to()``; an int would mean ``cuda:<int>``), a device module whose memory queries report the
worker's RSS (so verl's ``perf/max_memory_allocated_gb`` is the training worker's peak RAM), and
logical Ray ``GPU`` slots as the placement unit of verl's resource pools.

Traps handled here:

- verl initialises the default process group with backend ``f"cpu:gloo,{device}:{backend}"``; for
  device ``cpu`` that is ``"cpu:gloo,cpu:gloo"``, which torch rejects ("Duplicate device type cpu").
  The helper only initialises when no group exists and asks the platform for the backend name right
  before, so :meth:`PlatformCPU.communication_backend_name` first creates the default group on gloo
  from the rendezvous variables verl has already set (``RANK``, ``WORLD_SIZE``, ``MASTER_*``).
- Ray starts actors with ``OMP_NUM_THREADS=1``: creating the platform sets torch's threads by the one
  thread policy for workers (:func:`memory_r1.threads.worker_threads`, ``$MEMR1_CPU_THREADS``,
  default all cores; their environment sleeps idle OpenMP threads, :func:`memory_r1.threads.worker_env`).
"""

from __future__ import annotations

import os
import types
from contextlib import contextmanager
from typing import Any, Optional

import torch
from verl.plugin.platform import PlatformBase

from memory_r1.threads import configure_threads, worker_threads
from memory_r1.train.verl.cpu.settings import get_logger, peak_rss_bytes, release_free_memory, rss_bytes

log = get_logger(__name__)


class _CPUDeviceModule(types.ModuleType):
    """Stands in for ``torch.cuda`` (what verl calls ``get_torch_device()``).

    Streams, events, ``is_available`` and friends come from ``torch.cpu``; memory queries report the
    process's RSS (``max_memory_allocated`` = peak RSS), so verl's ``perf/max_memory_*`` metrics mean
    "peak RAM of the training worker" on CPU; ``empty_cache`` returns the allocator's free pages to the
    system; IPC calls are no-ops.
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
        """verl empties the device cache after each weight sync: on CPU the allocator's free pages go
        back to the system (:func:`~memory_r1.train.verl.cpu.settings.release_free_memory`)."""
        freed = release_free_memory()
        if freed > 64 * 2**20:
            log.debug("empty_cache: %.2f GB of free heap returned to the system", freed / 2**30)

    @staticmethod
    def ipc_collect() -> None:
        return None

    @staticmethod
    def set_per_process_memory_fraction(fraction: float, device: Any = None) -> None:
        return None

    @staticmethod
    def memory_allocated(device: Any = None) -> int:
        return rss_bytes()

    @staticmethod
    def memory_reserved(device: Any = None) -> int:
        return rss_bytes()

    @staticmethod
    def max_memory_allocated(device: Any = None) -> int:
        return peak_rss_bytes()

    @staticmethod
    def max_memory_reserved(device: Any = None) -> int:
        return peak_rss_bytes()

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
        configure_threads(worker_threads())

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
        _CPUDeviceModule.empty_cache()

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

