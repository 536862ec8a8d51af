"""Errors raised by the memory layer (stores, embedders, banks)."""

from __future__ import annotations


class MemoryBankError(Exception):
    """Base class of every error the memory layer raises on purpose."""


class MemoryStoreError(MemoryBankError):
    """The vector store cannot do what was asked: server unreachable, storage locked, store closed,
    a backend call failed. The message names the store location (URL or path)."""


class EmbeddingError(MemoryBankError):
    """The embedder returned something unusable (wrong shape, non-finite values)."""


class UnknownMemoryError(MemoryBankError, KeyError):
    """No memory with this id in the bank's namespace. A KeyError, so `except KeyError` catches it."""

    def __init__(self, memory_id: str, namespace: str | None = None) -> None:
        self.memory_id = memory_id
        self.namespace = namespace
        where = f" in namespace {namespace!r}" if namespace is not None else ""
        super().__init__(f"unknown memory id {memory_id!r}{where}")

    def __str__(self) -> str:  # KeyError's own __str__ would repr() the message
        return str(self.args[0])
