"""Training rows in verl's RL dataset schema (``RLHFDataset``), as parquet files.

A row is one episode of one stage (:mod:`memory_r1.train.stages`): ``data_source`` (the stage's,
which the reward entry :func:`memory_r1.train.verl.reward.compute_score` dispatches on),
``prompt`` (chat messages), ``ability``, ``reward_model = {"style": "rule", "ground_truth": ...}``
and ``extra_info`` (``index``, ``split``, ``conversation_id``, ``speakers``, ``source`` and the
stage's own fields). Everything a reward needs travels in the row, so rewards are stateless and
replayable.

>>> row = make_row("memr1/answer", [{"role": "user", "content": "q"}], "memory_qa", "Rex", {"index": 0})
>>> row["reward_model"], sorted(row)
({'style': 'rule', 'ground_truth': 'Rex'}, ['ability', 'data_source', 'extra_info', 'prompt', 'reward_model'])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


class RowsError(ValueError):
    """Rows that cannot be written as asked."""


def make_row(data_source: str, prompt: list[dict], ability: str, ground_truth: Any, extra_info: dict) -> dict:
    """One row of verl's RL dataset."""
    return {
        "data_source": data_source,
        "prompt": prompt,
        "ability": ability,
        "reward_model": {"style": "rule", "ground_truth": ground_truth},
        "extra_info": extra_info,
    }


def write_rows(rows: Sequence[dict], path: str | Path) -> Path:
    """Write rows as parquet (verl's ``data.train_files`` / ``data.val_files``), whole or not at all
    (:func:`memory_r1.runs.atomic_write`); returns the path."""
    import io

    import pandas as pd

    from memory_r1.runs import atomic_write

    if not rows:
        raise RowsError(f"no episodes to write to {path}")
    buf = io.BytesIO()
    pd.DataFrame(list(rows)).to_parquet(buf, index=False)
    atomic_write(Path(path), buf.getvalue())
    return Path(path)


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a parquet file as plain Python (lists, dicts, str)."""
    import pyarrow.parquet as pq

    return pq.read_table(str(path)).to_pylist()


def common_stats(rows: Sequence[dict]) -> dict:
    """Counts every row has: rows, data sources, bank sources (a stage adds its own,
    :func:`memory_r1.train.stages.row_stats`)."""
    out: dict[str, Any] = {"rows": len(rows)}
    if rows:
        out["data_sources"] = sorted({r["data_source"] for r in rows})
        out["sources"] = sorted({r["extra_info"]["source"] for r in rows})
    return out
