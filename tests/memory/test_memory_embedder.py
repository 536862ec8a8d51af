"""The packaged MiniLM embedder: offline, normalised float32, batched, one model load per process."""

from __future__ import annotations

import os

import numpy as np
import pytest

from memory_r1.memory import CachingEmbedder, MiniLMEmbedder
from memory_r1.memory.embedders import cached_model_keys


def test_shape_dtype_norm(embedder):
    v = embedder.embed(["Caroline adopted a dog", "taxes are due", "x"])
    assert v.shape == (3, 384) and v.dtype == np.float32 and v.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)
    with pytest.raises(TypeError):
        embedder.embed("a single string")  # type: ignore[arg-type]


def test_batched_equals_single(embedder):
    texts = ["a short one", "a considerably longer sentence about painting sunsets by the lake"]
    batched = embedder.embed(texts)
    single = np.vstack([embedder.embed([t]) for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_one_model_per_process_and_offline(embedder):
    other = MiniLMEmbedder()
    assert not other.loaded
    assert other.model is embedder.model  # the process-wide cache, not a second load
    assert len([k for k in cached_model_keys() if k[1] == "cpu"]) == 1
    assert os.environ.get("HF_HUB_OFFLINE") == "1" and os.environ.get("TRANSFORMERS_OFFLINE") == "1"


def test_caching_embedder(embedder):
    c = CachingEmbedder(embedder, max_items=2)
    a = c.embed(["one", "two", "one"])
    np.testing.assert_allclose(a[0], a[2])
    assert (c.hits, c.misses) == (0, 2)
    c.embed(["two"])
    assert c.hits == 1
    c.embed(["three"])
    assert len(c) == 2  # LRU bound
    np.testing.assert_allclose(c.embed(["one"])[0], embedder.embed(["one"])[0], atol=1e-5)
