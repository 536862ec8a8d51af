"""One transformers ``generate`` call over a batch of token prompts, each row cut at its end.

Shared by the hf backend (:meth:`memory_r1.llm.hf.HFBackend.generate`) and verl's CPU rollout server
(:class:`memory_r1.train.verl.cpu.rollout_server.HFRolloutServer`): the prompts are laid out by
:func:`memory_r1.llm.kv_cache.generation_inputs` (left padding, or one shared prefix computed once,
with the padded CPU cache when asked), generated in one call, and each row's new tokens are cut at
its cap and after its first end-of-sequence token (kept, as vLLM does; a caller that does not want
it in its text drops the last token of a row that :attr:`GeneratedRows.ended`).

>>> cut_row([5, 6, 2, 0, 0], cap=4, eos={2})
([5, 6, 2], True)
>>> cut_row([5, 6, 7, 8], cap=3, eos={2})
([5, 6, 7], False)
>>> cut_row([5, 2, 7], cap=3, eos={2}, stop_at_eos=False)
([5, 2, 7], False)
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class GeneratedRows:
    """What :func:`generate_and_cut` returns."""

    tokens: list[list[int]]  # per row: its new tokens, at most its cap, up to and including its first EOS
    ended: list[bool]  # per row: it stopped at an EOS token (its last token)
    sequences: Any  # the tensor model.generate returned (padded prompts + new tokens)
    width: int  # the padded prompt width (new tokens start there)
    shared_prefix: bool  # the prompts' common prefix was computed once


def cut_row(tokens: Sequence[int], cap: int, eos: Collection[int], stop_at_eos: bool = True) -> tuple[list[int], bool]:
    """A row's first ``cap`` new tokens, up to and including the first of ``eos``; and whether it
    ended there."""
    toks = list(tokens[:cap])
    if stop_at_eos:
        for i, t in enumerate(toks):
            if t in eos:
                return toks[: i + 1], True
    return toks, False


def generate_and_cut(
    model: Any,
    prompts: list[list[int]],
    caps: list[int],
    *,
    pad_id: int,
    eos_ids: Collection[int],
    padded_cache: bool,
    share_prefixes: bool,
    device: Any = "cpu",
    stop_at_eos: bool = True,
    **generate_kwargs: Any,
) -> GeneratedRows:
    """``model.generate`` over ``prompts`` (token ids) with ``generate_kwargs`` (sampling, the
    number of new tokens, a generation config, logits processors, ...), each row cut at its cap
    in ``caps`` and (``stop_at_eos``) after its first token of ``eos_ids``; ``pad_id`` pads the
    prompts (``generate_kwargs`` name the model's own pad and EOS tokens)."""
    from memory_r1.llm import kv_cache

    ids, mask, cache, shared = kv_cache.generation_inputs(
        model, prompts, max(caps), pad_id, padded_cache=padded_cache, share_prefixes=share_prefixes,
        device=device,
    )
    if cache is not None:
        generate_kwargs["past_key_values"] = cache
    out = model.generate(input_ids=ids, attention_mask=mask, **generate_kwargs)
    sequences = out if hasattr(out, "shape") else out.sequences
    width = ids.shape[1]
    eos = set(eos_ids)
    tokens, ended = [], []
    for row, cap in zip(sequences[:, width:].tolist(), caps, strict=True):
        toks, end = cut_row(row, cap, eos, stop_at_eos)
        tokens.append(toks)
        ended.append(end)
    return GeneratedRows(tokens, ended, sequences, width, shared)
