"""Path resolution order and the pinned, checksummed download (file:// URLs stand in for the web)."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from memory_r1.data import paths
from memory_r1.data.paths import (
    DataNotFoundError,
    DownloadError,
    download_locomo,
    resolve_locomo_path,
)


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


def test_download_checks_sha256(tmp_path, locomo_path):
    dest = tmp_path / "cache" / "locomo10.json"
    old = os.umask(0o022)
    try:
        got = download_locomo(dest, url=locomo_path.as_uri())
    finally:
        os.umask(old)
    assert got == dest and paths.sha256_file(dest) == paths.LOCOMO_SHA256
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644  # the umask's mode, not mkstemp's 0600


def test_download_refuses_other_bytes(tmp_path):
    src = tmp_path / "evil.json"
    src.write_text("[]")
    dest = tmp_path / "cache" / "locomo10.json"
    with pytest.raises(DownloadError, match="sha256 .* != pinned"):
        download_locomo(dest, url=src.as_uri(), sha256=hashlib.sha256(b"x").hexdigest())
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_download_without_network_says_so(tmp_path):
    with pytest.raises(DownloadError, match="no network"):
        download_locomo(tmp_path / "x.json", url="http://127.0.0.1:9/locomo10.json", timeout=2)
