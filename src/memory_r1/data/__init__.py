"""LoCoMo data: loading with validation, path resolution, the Memory-R1 split, episode builders."""

from memory_r1.data.locomo import LocomoDataError, load_locomo
from memory_r1.data.paths import DataNotFoundError, resolve_locomo_path
from memory_r1.data.splits import SPLITS, Split, load_split, split_conversations

__all__ = [
    "SPLITS",
    "DataNotFoundError",
    "LocomoDataError",
    "Split",
    "load_locomo",
    "load_split",
    "resolve_locomo_path",
    "split_conversations",
]
