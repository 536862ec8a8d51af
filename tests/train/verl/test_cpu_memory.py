"""``empty_cache()`` on the CPU device gives the allocator's free pages back (glibc ``malloc_trim``):
without it verl's actor worker kept ~7 GB of freed memory after 23 answer GRPO steps."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import platform

import pytest

pytest.importorskip("verl")

GLIBC = platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's; elsewhere empty_cache releases nothing and says 0")
def test_empty_cache_returns_freed_heap_to_the_system():
    from memory_r1.train.verl.cpu.platform import PlatformCPU, _CPUDeviceModule
    from memory_r1.train.verl.cpu.settings import release_free_memory, rss_bytes

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    release_free_memory()
    # 3,000 heap blocks of 64 KiB (below glibc's mmap threshold), each touched; the last one stays
    # allocated, so the freed ones sit below it and plain free() cannot shrink the heap
    blocks = [libc.malloc(64 * 1024) for _ in range(3000)]
    for b in blocks:
        ctypes.memset(b, 1, 64 * 1024)
    for b in blocks[:-1]:
        libc.free(b)
    gc.collect()
    held = rss_bytes()
    _CPUDeviceModule.empty_cache()  # what verl calls after each weight sync
    after = rss_bytes()
    libc.free(blocks[-1])
    assert held - after > 100 * 2**20, f"RSS {held / 2**20:.0f} -> {after / 2**20:.0f} MiB: free heap kept"
    PlatformCPU().empty_cache()  # the platform's own entry point does the same, and a second call is harmless
    assert release_free_memory() >= 0
