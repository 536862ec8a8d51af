"""vLLM offline backend (GPU machines): ``vllm.LLM(...).chat(...)``.

vllm is imported only when a :class:`VLLMBackend` is built; without it the error says how to install it.
A GGUF backbone is handed to vLLM as its de-quantised HF checkpoint (the same cache the HF backend
makes), so vLLM never needs the GGUF loader.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from memory_r1.backbones import DEFAULT_BACKBONE, ResolvedBackbone, resolve_backbone
from memory_r1.llm.base import (
    ClosingMixin,
    Conversation,
    Generation,
    LLMError,
    SamplingParams,
    cut_at_stop,
    per_conversation,
    release_model,
    validate_conversations,
)

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'memory-r1[gpu]' on a GPU machine"


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise LLMError(f"the vLLM backend needs vllm, which is not installed: {INSTALL_HINT}") from exc
    return vllm


def to_vllm_sampling(vllm: Any, params: SamplingParams) -> Any:
    """Our SamplingParams -> ``vllm.SamplingParams`` (temperature 0 is greedy in vLLM too)."""
    kw: dict[str, Any] = {
        "temperature": params.temperature,
        "top_p": params.top_p if not params.greedy else 1.0,
        "max_tokens": params.max_new_tokens,
        "n": 1,
    }
    if params.seed is not None:
        kw["seed"] = params.seed
    if params.stop:
        kw["stop"] = list(params.stop)
    return vllm.SamplingParams(**kw)


class VLLMBackend(ClosingMixin):
    """``backbone``: alias / path as for the HF backend. ``dtype``: vLLM's (``auto`` = the checkpoint's).
    Other keyword options (``gpu_memory_utilization``, ``max_model_len``, ``enforce_eager``, ...) go to
    ``vllm.LLM`` unchanged."""

    def __init__(
        self,
        backbone: str | os.PathLike | ResolvedBackbone = DEFAULT_BACKBONE,
        *,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        seed: int = 0,
        name: str | None = None,
        **engine_options: Any,
    ) -> None:
        vllm = _import_vllm()
        self._vllm = vllm
        resolved = backbone if isinstance(backbone, ResolvedBackbone) else resolve_backbone(backbone)
        self.backbone = resolved
        self.name = name or resolved.name
        if resolved.is_gguf:
            from memory_r1.llm.hf import ensure_hf_checkpoint

            model_dir = ensure_hf_checkpoint(resolved)
        else:
            model_dir = resolved.path
        self.model_dir = model_dir
        self.context_window = int(max_model_len or resolved.context_window)
        try:
            self.llm = vllm.LLM(
                model=str(model_dir),
                dtype=dtype,
                tensor_parallel_size=tensor_parallel_size,
                gpu_memory_utilization=gpu_memory_utilization,
                max_model_len=max_model_len,
                seed=seed,
                **engine_options,
            )
        except Exception as exc:  # vLLM raises many kinds
            raise LLMError(f"vLLM could not load {model_dir}: {exc}") from exc
        self._tokenizer = None

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = self.llm.get_tokenizer()
        return self._tokenizer

    def count_tokens(self, messages: Conversation) -> int:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return len(ids)

    def generate(
        self, conversations: list[Conversation], params: SamplingParams | list[SamplingParams]
    ) -> list[Generation]:
        validate_conversations(conversations)
        if not conversations:
            return []
        each = per_conversation(params, len(conversations))
        if isinstance(params, SamplingParams):
            sp = to_vllm_sampling(self._vllm, params)
        else:  # vLLM's chat() takes one SamplingParams per prompt as well
            sp = [to_vllm_sampling(self._vllm, p) for p in each]
        try:
            outs = self.llm.chat(conversations, sampling_params=sp, use_tqdm=False)
        except Exception as exc:
            raise LLMError(f"{self.name}: vLLM generation failed: {exc}") from exc
        if len(outs) != len(conversations):
            raise LLMError(f"{self.name}: vLLM returned {len(outs)} outputs for {len(conversations)} prompts")
        gens = []
        for o, p in zip(outs, each, strict=True):
            c = o.outputs[0]
            text, stopped = cut_at_stop(c.text, p.stop)
            finish = "length" if c.finish_reason == "length" and not stopped else "stop"
            gens.append(
                Generation(text, len(o.prompt_token_ids or []), len(c.token_ids or []), finish)
            )
        return gens

    def close(self) -> None:
        release_model(self, "llm")
