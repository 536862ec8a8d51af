"""LLM backends behind one protocol (:class:`LLM`): ``hf`` (transformers, CPU/GPU), ``vllm`` (GPU,
offline engine) and ``openai`` (any OpenAI-compatible server).

:func:`build_llm` builds one from a recipe's ``llm:`` section, validated per backend by
:mod:`memory_r1.recipes` (a key of another backend is refused there, before anything loads);
:func:`load_llm` takes the backend's options as keyword arguments.

Importing this package is light: torch, transformers, vllm and httpx are imported by a backend only
when it is built.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from memory_r1.llm.base import (
    LLM,
    Conversation,
    Generation,
    LLMError,
    Message,
    SamplingParams,
    cut_at_stop,
)

if TYPE_CHECKING:
    from memory_r1.recipes import LLMOptions

__all__ = [
    "LLM",
    "Conversation",
    "Generation",
    "LLMError",
    "Message",
    "SamplingParams",
    "cut_at_stop",
    "build_llm",
    "load_llm",
    "KINDS",
]

Kind = Literal["hf", "vllm", "openai"]
KINDS: tuple[str, ...] = ("hf", "vllm", "openai")


def load_llm(kind: Kind = "hf", backbone: str | os.PathLike | None = None, **options: Any) -> LLM:
    """Build a backend.

    - ``hf``: ``HFBackend(backbone, device=, dtype=, batch_size=, max_batch_tokens=, ...)``;
    - ``vllm``: ``VLLMBackend(backbone, dtype=, gpu_memory_utilization=, max_model_len=, ...)``;
    - ``openai``: ``OpenAICompatBackend(base_url, model, api_key=, timeout=, max_retries=,
      concurrency=)``; ``base_url`` defaults to ``$MEMR1_LLM_BASE_URL`` then ``$OPENAI_BASE_URL``; a
      registered alias as ``backbone`` is sent as its HF repo id (the name ``vllm serve`` uses).

    ``backbone`` defaults to ``smollm2-135m``.
    """
    from memory_r1.backbones import DEFAULT_BACKBONE, get_backbone

    backbone = str(backbone) if backbone is not None else DEFAULT_BACKBONE
    if kind == "hf":
        from memory_r1.llm.hf import HFBackend

        return HFBackend.from_pretrained(backbone, **options)
    if kind == "vllm":
        from memory_r1.llm.vllm_backend import VLLMBackend

        return VLLMBackend(backbone, **options)
    if kind == "openai":
        from memory_r1.llm.openai_compat import OpenAICompatBackend

        base_url = options.pop("base_url", None) or os.environ.get("MEMR1_LLM_BASE_URL") or os.environ.get(
            "OPENAI_BASE_URL"
        )
        if not base_url:
            raise LLMError(
                "the openai backend needs a server: pass base_url=http://host:port/v1 or set "
                "MEMR1_LLM_BASE_URL"
            )
        reg = get_backbone(backbone)
        model = options.pop("model", None) or (reg.hf_repo if reg else backbone)
        options.setdefault("name", reg.name if reg else backbone)
        if reg and "context_window" not in options:
            options["context_window"] = reg.context_window
        return OpenAICompatBackend(base_url, model, **options)
    raise ValueError(f"unknown LLM kind {kind!r}: use one of {', '.join(KINDS)}")


def build_llm(options: LLMOptions | Mapping[str, Any], backbone: str | os.PathLike | None = None) -> LLM:
    """The backend a recipe's ``llm:`` section names, built with the options it sets (the others
    keep the backend's defaults). ``api_key_env`` (openai) is read from the environment here;
    ``engine`` (vllm) is handed to ``vllm.LLM`` unchanged.

    >>> build_llm({"backend": "openai", "dtype": "auto"})
    Traceback (most recent call last):
    ...
    memory_r1.config.RecipeError: llm: llm.dtype (hf/vllm) do not apply to llm.backend=openai, which takes: base_url, model, api_key_env, timeout, max_retries, concurrency, context_window (to switch backends, replace the section: 'llm={backend: openai, ...}')
    """
    from memory_r1.config import RecipeError, describe_errors
    from memory_r1.recipes import EvalRecipe, LLMOptions

    if not isinstance(options, LLMOptions):
        from pydantic import ValidationError

        try:
            options = EvalRecipe.model_validate({"llm": dict(options)}).llm
        except ValidationError as exc:
            raise RecipeError(f"llm: {describe_errors(exc, EvalRecipe)[0]}") from None
    kw = options.backend_kwargs()
    if options.backend == "openai" and "api_key_env" in kw:
        name = kw.pop("api_key_env")
        if not os.environ.get(name):
            raise LLMError(f"llm.api_key_env names ${name}, which is not set")
        kw["api_key"] = os.environ[name]
    if options.backend == "vllm":
        kw.update(kw.pop("engine", None) or {})
    return load_llm(options.backend, backbone, **kw)  # type: ignore[arg-type]
