"""Where things are: the checkout (:func:`repo_root`), the user cache (:func:`cache_dir`: downloaded
data, converted models, CPU profiles, the judge cache, the default store path), the LoCoMo file and
its gold-answer audit. A base module: it imports nothing of ours, so every room may use it. The
pinned download is :mod:`memory_r1.data.download`.

Resolution order of the LoCoMo file: an explicit path (`--data`), env `MEMR1_LOCOMO`, `../shared/data/locomo/locomo10.json`
beside the repository, then the user cache (`memr1 data download` puts it there).

The audit of wrong gold answers (``gold_audit.json``, see :mod:`memory_r1.data.audit`) is found the
same way: `--gold-audit`, env `MEMR1_GOLD_AUDIT`, beside the LoCoMo file in use, the shared folder,
the user cache; unlike the data it is optional (:func:`resolve_gold_audit_path` returns None).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

LOCOMO_FILENAME = "locomo10.json"
ENV_VAR = "MEMR1_LOCOMO"
AUDIT_FILENAME = "gold_audit.json"
AUDIT_ENV_VAR = "MEMR1_GOLD_AUDIT"


class DataNotFoundError(FileNotFoundError):
    """No LoCoMo file at any of the places looked at."""


def repo_root() -> Path:
    """The checkout this package is installed from (src layout: <root>/src/memory_r1)."""
    return Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """User cache of memory-r1 (`MEMR1_CACHE`, else `$XDG_CACHE_HOME/memory-r1`, else ~/.cache)."""
    if os.environ.get("MEMR1_CACHE"):
        return Path(os.environ["MEMR1_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "memory-r1"


def candidate_paths(explicit: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """Each place looked at, in order, with the reason it is looked at."""
    out: list[tuple[str, Path]] = []
    if explicit:
        out.append(("--data", Path(explicit).expanduser()))
    if os.environ.get(ENV_VAR):
        out.append((f"${ENV_VAR}", Path(os.environ[ENV_VAR]).expanduser()))
    out.append(("shared folder", repo_root().parent / "shared" / "data" / "locomo" / LOCOMO_FILENAME))
    out.append(("user cache", cache_dir() / "data" / LOCOMO_FILENAME))
    return out


def resolve_locomo_path(explicit: str | os.PathLike | None = None) -> Path:
    """The first existing candidate. An explicit path or env var that does not exist is an error,
    never silently skipped."""
    for reason, path in candidate_paths(explicit):
        given = reason in ("--data", f"${ENV_VAR}")
        try:
            found = path.is_file()
        except (OSError, ValueError) as exc:  # a folder on the way that cannot be searched; a NUL
            if given:
                raise DataNotFoundError(
                    f"LoCoMo file given by {reason} cannot be looked at: {path}: {getattr(exc, 'strerror', None) or exc}"
                ) from None
            log.debug("skipping %s (%s): %s", path, reason, exc)
            found = False
        if given:
            if not found:
                raise DataNotFoundError(f"LoCoMo file given by {reason} does not exist: {path}")
            return path
        if found:
            return path
    looked = ", ".join(str(p) for _, p in candidate_paths(explicit))
    raise DataNotFoundError(
        f"LoCoMo file not found (looked at {looked}); pass --data PATH, set {ENV_VAR}, "
        "or run `memr1 data download`"
    )


def resolve_gold_audit_path(
    explicit: str | os.PathLike | None = None, data: str | os.PathLike | None = None
) -> Path | None:
    """The gold-answer audit file, or None when there is none. Looked for as the data file is: an
    explicit path (`--gold-audit`), `$MEMR1_GOLD_AUDIT` (either must exist), then ``gold_audit.json``
    beside the LoCoMo file in use, in the shared folder, in the user cache."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise DataNotFoundError(f"gold audit given by --gold-audit does not exist: {path}")
        return path
    if os.environ.get(AUDIT_ENV_VAR):
        path = Path(os.environ[AUDIT_ENV_VAR]).expanduser()
        if not path.is_file():
            raise DataNotFoundError(f"gold audit given by ${AUDIT_ENV_VAR} does not exist: {path}")
        return path
    places = []
    try:
        places.append(resolve_locomo_path(data).parent / AUDIT_FILENAME)
    except DataNotFoundError:
        pass
    places += [p.parent / AUDIT_FILENAME for reason, p in candidate_paths() if reason in ("shared folder", "user cache")]
    return next((p for p in places if p.is_file()), None)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
