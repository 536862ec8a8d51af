"""Shared fixtures: the real LoCoMo file (read from ../shared or $MEMR1_LOCOMO, never from the repo)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def locomo_path() -> Path:
    from memory_r1.paths import resolve_locomo_path

    return resolve_locomo_path()


@pytest.fixture(scope="session")
def locomo_raw(locomo_path: Path) -> list:
    return json.loads(locomo_path.read_text())


@pytest.fixture(scope="session")
def conversations(locomo_path: Path):
    from memory_r1.data import load_locomo

    return load_locomo(locomo_path)
