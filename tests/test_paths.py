"""Where things are found: the LoCoMo file's resolution order and the user cache."""

from __future__ import annotations

import pytest

from memory_r1 import paths
from memory_r1.paths import DataNotFoundError, resolve_locomo_path


def test_order_explicit_then_env_then_shared(tmp_path, monkeypatch, locomo_path):
    a = tmp_path / "a.json"
    b = tmp_path / "b.json"
    a.write_text("[]")
    b.write_text("[]")
    monkeypatch.setenv("MEMR1_LOCOMO", str(b))
    assert resolve_locomo_path(a) == a
    assert resolve_locomo_path() == b
    monkeypatch.delenv("MEMR1_LOCOMO")
    assert resolve_locomo_path() == paths.repo_root().parent / "shared/data/locomo/locomo10.json"


def test_missing_explicit_path_is_an_error(tmp_path):
    with pytest.raises(DataNotFoundError, match="--data does not exist"):
        resolve_locomo_path(tmp_path / "nope.json")


def test_cache_is_last_resort(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "repo_root", lambda: tmp_path / "repo")  # no ../shared there
    monkeypatch.setenv("MEMR1_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MEMR1_LOCOMO", raising=False)
    with pytest.raises(DataNotFoundError, match="memr1 data download"):
        resolve_locomo_path()
    cached = tmp_path / "cache" / "data" / "locomo10.json"
    cached.parent.mkdir(parents=True)
    cached.write_text("[]")
    assert resolve_locomo_path() == cached


def test_repo_root_is_the_checkout():
    assert (paths.repo_root() / "pyproject.toml").is_file()
    assert (paths.repo_root() / "src" / "memory_r1" / "paths.py").is_file()
