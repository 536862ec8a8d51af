"""The pinned, checksummed download (file:// URLs stand in for the web)."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from memory_r1.data.download import LOCOMO_SHA256, DownloadError, download_locomo
from memory_r1.paths import sha256_file


def test_download_checks_sha256(tmp_path, locomo_path):
    dest = tmp_path / "cache" / "locomo10.json"
    old = os.umask(0o022)
    try:
        got = download_locomo(dest, url=locomo_path.as_uri())
    finally:
        os.umask(old)
    assert got == dest and sha256_file(dest) == LOCOMO_SHA256
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
