"""Fixtures for the memory-bank tests: the real MiniLM embedder (loaded once per session) and real
stores (qdrant-client local mode, qdrant-edge) in tmp folders."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from memory_r1.memory import MemoryBank, MiniLMEmbedder, open_bank

try:
    import qdrant_edge  # noqa: F401

    HAVE_EDGE = True
except ImportError:  # the optional [edge] extra
    HAVE_EDGE = False

BACKENDS = [
    "qdrant",
    pytest.param("edge", marks=pytest.mark.skipif(not HAVE_EDGE, reason="qdrant-edge-py not installed")),
]


@pytest.fixture(scope="session")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder().load()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_bank(
    tmp_path: Path, backend: str, embedder: MiniLMEmbedder
) -> Iterator[Callable[..., MemoryBank]]:
    """make_bank(namespace="conv-26/Caroline", path=None|":memory:"|folder) -> an open bank, closed
    at teardown. The default path is one folder per test, so banks of one test share a store."""
    opened: list[MemoryBank] = []

    def make(namespace: str = "conv-26/Caroline", path: str | Path | None = None) -> MemoryBank:
        bank = open_bank(namespace, path=str(path or tmp_path / "store"), backend=backend, embedder=embedder)
        opened.append(bank)
        return bank

    yield make
    for b in opened:
        b.close()
