"""Deterministic, backend-safe collection names for bank namespaces.

A namespace is readable (``conv-26/Caroline``) and may hold any character; a collection name must be
safe as a Qdrant collection name *and* as a directory name (qdrant-edge keeps one shard directory per
collection). The name is a readable slug plus a hash of the exact namespace, so two namespaces that
slug alike (``a/b`` and ``a_b``) still get different collections (`memory_r1.runs.safe_key`: the
one function that names things after data, also the files a run writes). The readable namespace
itself is kept inside the store (the bank's meta record).
"""

from __future__ import annotations

from memory_r1.runs import safe_key

PREFIX = "mr1"
KINDS = ("mem", "hist")
_SLUG_MAX = 40


def validate_namespace(namespace: object) -> str:
    """The namespace itself if usable (a non-blank string), else ValueError."""
    if not isinstance(namespace, str) or not namespace.strip():
        raise ValueError(f"namespace must be a non-empty string, got {namespace!r}")
    return namespace


def namespace_key(namespace: str) -> str:
    """Slug + hash shared by a namespace's collections.

    >>> namespace_key("conv-26/Caroline")
    'conv-26_Caroline_a99d473ee733'
    >>> namespace_key("conv-26/Caroline") != namespace_key("conv-26_Caroline")
    True
    """
    validate_namespace(namespace)
    return safe_key(namespace, slug_max=_SLUG_MAX, empty="ns")


def collection_name(namespace: str, kind: str = "mem") -> str:
    """The collection holding one kind of a namespace's records (``mem`` memories, ``hist`` history).

    >>> collection_name("conv-26/Caroline")
    'mr1_mem_conv-26_Caroline_a99d473ee733'
    >>> collection_name("conv-26/Caroline", "hist")
    'mr1_hist_conv-26_Caroline_a99d473ee733'
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return f"{PREFIX}_{kind}_{namespace_key(namespace)}"


def is_collection_of_kind(name: str, kind: str) -> bool:
    return name.startswith(f"{PREFIX}_{kind}_")
