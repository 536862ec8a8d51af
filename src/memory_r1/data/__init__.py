"""LoCoMo data: loading with validation, the Memory-R1 split, the pinned download, the gold audit and
the per-session observations (where the file is found: :mod:`memory_r1.paths`). Training rows are
the training stages' (:mod:`memory_r1.train.stages`)."""

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
