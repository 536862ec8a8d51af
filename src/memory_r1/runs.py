"""Run folders: how a run names a file after data, writes a file whole, records itself and seeds.

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
* :func:`new_manifest` / :func:`write_manifest`: the ``manifest.json`` every run folder holds (what
  the run was asked, seed, data path and sha256, package versions, git commit, host, start time),
  kept across resumes (``started`` stays, ``resumed`` counts).
* :func:`differing_keys`: the resume fingerprint, the config keys on which a folder and a new
  request disagree (a null setting compares as absent).
* :func:`seed_everything`: Python's, numpy's (and on request torch's) random generators.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

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


# ------------------------------------------------------------------------------ manifest

MANIFEST = "manifest.json"


def package_versions() -> dict:
    """Python's version and those of the packages a run's numbers depend on (the installed ones)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("memory-r1", "torch", "transformers", "qdrant-client", "sentence-transformers", "vllm", "verl"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def host_info(dtype: object = "auto", *, measure: bool = True) -> dict:
    """What a run records about its machine: core count, platform and (``measure``) the CPU's
    measured matmul rates with the dtype ``dtype`` resolves to on it and why
    (:func:`memory_r1.hardware.describe`)."""
    info: dict = {"cpus": os.cpu_count(), "platform": platform.platform()}
    if not measure:
        return info
    try:
        from memory_r1 import hardware

        info["cpu"] = hardware.describe(dtype)
        log.info("CPU dtype %s (%s)", info["cpu"]["dtype"], info["cpu"]["dtype_reason"])
    except (ImportError, ValueError) as exc:  # no torch (an openai-only install), or a GPU-only dtype name
        info["cpu"] = {"error": str(exc)}
    return info


def git_commit() -> str | None:
    """The checkout's commit (``+dirty`` when tracked files changed), None outside a git checkout."""
    from memory_r1.paths import repo_root

    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True, text=True, timeout=5
        )
        if res.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo_root(),
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return res.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def new_manifest(
    fields: Mapping[str, Any],
    *,
    seed: int,
    data_path: Path,
    data_sha256: str | None = None,
    dtype: object = "auto",
    measure_host: bool = True,
) -> dict:
    """A run's record: ``fields`` (what it was asked: config or request and recipe), then ``seed``,
    ``data_path`` and ``data_sha256`` (hashed here unless given), ``versions``, ``git_commit``,
    ``host`` (:func:`host_info`) and ``started``."""
    from memory_r1.paths import sha256_file

    return {
        **fields,
        "seed": seed,
        "data_path": str(data_path),
        "data_sha256": data_sha256 or sha256_file(Path(data_path)),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "host": host_info(dtype, measure=measure_host),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def read_manifest(folder: Path) -> dict | None:
    """``folder/manifest.json``, or None when there is none."""
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def write_manifest(
    folder: Path,
    manifest: dict,
    *,
    check: Callable[[dict], None] | None = None,
    resumed: bool = True,
) -> dict:
    """Write ``folder/manifest.json`` whole and return what was written. When the folder already has
    one, ``check(old)`` runs first (it raises to refuse the folder), the old ``started`` is kept and
    ``resumed`` counts one more run (``resumed=False``: the same count, e.g. a run prepared again)."""
    old = read_manifest(folder)
    if old is not None:
        if check is not None:
            check(old)
        manifest = {**manifest, "started": old.get("started", manifest.get("started")),
                    "resumed": int(old.get("resumed", 0)) + (1 if resumed else 0)}
    atomic_write(Path(folder) / MANIFEST, json.dumps(manifest, indent=2, default=str))
    return manifest


def update_manifest(folder: Path, **fields: Any) -> dict:
    """Add ``fields`` to an existing ``folder/manifest.json`` (written whole)."""
    manifest = {**(read_manifest(folder) or {}), **fields}
    atomic_write(Path(folder) / MANIFEST, json.dumps(manifest, indent=2, default=str))
    return manifest


def drop_nulls(value: Any) -> Any:
    """A config value with its null (off) settings left out, at every depth.

    >>> drop_nulls({"dtype": "auto", "quantize": None, "kv": {"bits": None, "on": True}})
    {'dtype': 'auto', 'kv': {'on': True}}
    """
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    return value


def differing_keys(
    old: Mapping, new: Mapping, keys: Sequence[str], value: Callable[[Mapping, str], Any] | None = None
) -> list[str]:
    """The resume fingerprint: which of ``keys`` two configs disagree on, compared as canonical JSON
    of ``value(config, key)`` (default: the key's value without its null settings, so a setting
    added later with a null default does not orphan the folders written before it).

    >>> differing_keys({"a": 1, "llm": {"dtype": "auto"}}, {"a": 2, "llm": {"dtype": "auto", "q": None}}, ["a", "llm"])
    ['a']
    """
    value = value or (lambda cfg, k: drop_nulls(cfg.get(k)))
    return [k for k in keys
            if json.dumps(value(old, k), sort_keys=True) != json.dumps(value(new, k), sort_keys=True)]


# ------------------------------------------------------------------------------ seeds


def seed_everything(seed: int, *, torch: bool = False) -> None:
    """Seed Python's and numpy's global generators, and torch's when ``torch`` (importing it)."""
    import random

    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass
    if torch:
        try:
            import torch as _torch

            _torch.manual_seed(seed)
        except ImportError:  # pragma: no cover
            pass
