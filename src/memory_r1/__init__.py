"""memory-r1: RL-trained memory agents (Memory Manager + Answer Agent) reproduced on LoCoMo."""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# Idle OpenMP threads sleep instead of spinning: with the spin default, 2 torch threads ran 7-20x
# slower than 1 whenever another process was runnable; passive, 2 were never slower than 1
# (memory_r1.threads, benchmarks/threads.py). OpenMP reads this when torch loads, so it is set here,
# before any module of ours imports torch; a policy the user set is kept.
_WAIT_POLICY_BEFORE_TORCH = "torch" not in _sys.modules or "OMP_WAIT_POLICY" in _os.environ
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
