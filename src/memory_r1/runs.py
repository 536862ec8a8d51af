"""Run folders: the one way a run names a file after data, and the one way it writes a file whole.

* :func:`safe_key` turns any string (a ``sample_id``, a namespace) into a readable name that is safe
  as a single path component on every filesystem: a slug of its safe characters plus a hash of the
  exact string, so ``x/../../escaped``, a 5,000-character id or one holding a NUL still make a short
  plain name, and two ids that slug alike (``a/b``, ``a_b``) or differ only in case get different ones.
  Bank collections are named with it too (:mod:`memory_r1.memory.naming`).
* :func:`data_path` is the only way to build a path from data: ``folder/<kind>-<safe_key(id)><suffix>``,
  checked to be a direct child of `folder`.
* :func:`atomic_write` replaces a file whole (write a temporary file beside it, fsync, rename): a
  killed process leaves the old file or the new one. The file's mode follows the umask, like every
  other file a run writes.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
SLUG_MAX = 40


def safe_key(text: str, *, slug_max: int = SLUG_MAX, empty: str = "id") -> str:
    """Readable slug + 12 hex digits of the string's sha256; at most ``slug_max + 13`` characters of
    ``[A-Za-z0-9_-]``, never empty, never ``.`` or ``..`` (`empty` is the slug of a string with no
    safe character).

    >>> safe_key("conv-26/Caroline")
    'conv-26_Caroline_a99d473ee733'
    >>> safe_key("x/../../../escaped")
    'x_escaped_ce4956cf9e6f'
    >>> len(safe_key("a" * 5000)), safe_key("\\x00")
    (53, 'id_6e340b9cffb3')
    """
    if not isinstance(text, str):
        raise TypeError(f"expected a string, got {type(text).__name__}")
    slug = _UNSAFE.sub("_", text).strip("_")[:slug_max] or empty
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{slug}_{digest}"


def data_path(folder: Path, kind: str, data_id: str, suffix: str = ".json") -> Path:
    """``folder/<kind>-<safe_key(data_id)><suffix>``: a file named after data, always directly inside
    `folder`. `kind` and `suffix` are the program's own words (checked to be plain).

    >>> data_path(Path("out/state"), "ingested", "conv-26").as_posix()
    'out/state/ingested-conv-26_2aac22fc66ec.json'
    >>> data_path(Path("out/state"), "ingested", "x/../../../escaped").parent.as_posix()
    'out/state'
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]+", kind) or not re.fullmatch(r"(\.[A-Za-z0-9]+)*", suffix):
        raise ValueError(f"kind {kind!r} and suffix {suffix!r} must be plain words")
    path = Path(folder) / f"{kind}-{safe_key(data_id)}{suffix}"
    if path.parent != Path(folder):  # cannot happen by construction; a guard against future edits
        raise ValueError(f"{path} is not directly inside {folder}")
    return path


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write `data` (text as UTF-8) to `path` whole: a killed process leaves the old file or the new
    one, never a mix. The parent folder is created; the file gets mode ``0o666 & ~umask`` as a plain
    ``open()`` would (a temporary file from ``mkstemp`` would stay 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
