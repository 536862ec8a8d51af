"""The pinned LoCoMo download (`memr1 data download`): the one thing fetched from the network, into
the user cache (:func:`memory_r1.paths.cache_dir`), refused unless its sha256 is the pinned one."""

from __future__ import annotations

import hashlib
import logging
import urllib.error
import urllib.request
from pathlib import Path

from memory_r1.paths import LOCOMO_FILENAME, cache_dir, sha256_file
from memory_r1.runs import atomic_write

log = logging.getLogger(__name__)

LOCOMO_SHA256 = "79fa87e90f04081343b8c8debecb80a9a6842b76a7aa537dc9fdf651ea698ff4"
LOCOMO_URL = (
    "https://raw.githubusercontent.com/snap-research/LoCoMo/"
    "3eb6f2c585f5e1699204e3c3bdf7adc5c28cb376/data/locomo10.json"
)


class DownloadError(RuntimeError):
    """The pinned download failed (no network, wrong checksum)."""


def download_locomo(
    dest: Path | None = None,
    url: str = LOCOMO_URL,
    sha256: str = LOCOMO_SHA256,
    timeout: float = 30.0,
) -> Path:
    """Fetch the pinned file into the cache; refuse (and keep nothing of) a file whose sha256 differs."""
    dest = dest or cache_dir() / "data" / LOCOMO_FILENAME
    if dest.is_file() and sha256_file(dest) == sha256:
        log.info("already present with the pinned sha256: %s", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            payload = resp.read()
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"cannot download LoCoMo from {url}: {reason} (no network?)") from exc
    got = hashlib.sha256(payload).hexdigest()
    if got != sha256:
        raise DownloadError(f"refused download from {url}: sha256 {got} != pinned {sha256}")
    atomic_write(dest, payload)  # whole, with the umask's mode (mkstemp would leave it 0600)
    return dest
