"""Training rows of the real train conversation (conv-26) with LoCoMo's observation facts as the bank
source, built once for the session: the stage tests and the verl row tests read the same rows."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def train(locomo_path):
    from memory_r1.data import load_split

    return load_split("train", locomo_path)


@pytest.fixture(scope="session")
def embedder():
    from memory_r1.memory import CachingEmbedder, MiniLMEmbedder

    return CachingEmbedder(MiniLMEmbedder())


@pytest.fixture(scope="session")
def manager_episodes(train, embedder, locomo_path):
    from memory_r1.train.stages.manager import manager_rows

    return manager_rows(train, source="observations", answer_top_k=5, embedder=embedder, data=locomo_path)


@pytest.fixture(scope="session")
def answer_episodes(train, embedder, locomo_path):
    from memory_r1.memory import BankFactory
    from memory_r1.train.stages.answer import answer_rows
    from memory_r1.train.stages.banks import observation_banks

    with BankFactory.open(path=":memory:", embedder=embedder) as factory:
        sizes = observation_banks(train.conversations, factory, locomo_path)
        rows = answer_rows(train, factory, top_k=5, distill=False, source="observations")
    return rows, sizes
