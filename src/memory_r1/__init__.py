"""memory-r1: RL-trained memory agents (Memory Manager + Answer Agent) reproduced on LoCoMo."""

__version__ = "0.1.0"
