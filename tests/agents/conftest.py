"""Fixtures shared by the pipeline tests: an in-memory bank factory with the real MiniLM embedder."""

from __future__ import annotations

import pytest

from memory_r1.memory import BankFactory, MiniLMEmbedder


@pytest.fixture
def factory():
    f = BankFactory.open(path=":memory:", embedder=MiniLMEmbedder().load())
    yield f
    f.close()
