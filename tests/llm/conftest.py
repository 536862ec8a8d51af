"""Fixtures for the LLM / backbone tests: an isolated environment for backbone resolution."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

_RESOLUTION_ENV = (
    "MEMR1_MODELS_DIR",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "XDG_CACHE_HOME",
)


@pytest.fixture
def clean_model_env(monkeypatch, tmp_path):
    """No MEMR1_MODEL_* / MEMR1_MODELS_DIR / HF cache variables, and HOME in tmp_path (so
    ~/.cache/huggingface is empty)."""
    for k in list(os.environ):
        if k.startswith("MEMR1_MODEL_") or k in _RESOLUTION_ENV:
            monkeypatch.delenv(k, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def _make_model_dir(path, max_pos: int | None = 2048, weights: bool = True):
    """A fake HF model directory: config.json + an (empty) safetensors file."""
    import json

    path.mkdir(parents=True, exist_ok=True)
    cfg = {"model_type": "llama"}
    if max_pos is not None:
        cfg["max_position_embeddings"] = max_pos
    (path / "config.json").write_text(json.dumps(cfg))
    if weights:
        (path / "model.safetensors").write_bytes(b"")
    return path


@pytest.fixture
def make_model_dir():
    """``make_model_dir(path, max_pos=2048, weights=True)`` -> a fake HF model directory."""
    return _make_model_dir
