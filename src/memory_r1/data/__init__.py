"""LoCoMo data: loading with validation, the Memory-R1 split, the pinned download, episode builders
(where the file is found: :mod:`memory_r1.paths`)."""

from memory_r1.data.locomo import LocomoDataError, load_locomo
from memory_r1.data.splits import SPLITS, Split, load_split, split_conversations

__all__ = [
    "SPLITS",
    "LocomoDataError",
    "Split",
    "load_locomo",
    "load_split",
    "split_conversations",
]
