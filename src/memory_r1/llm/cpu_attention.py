"""Attention for batched generation on CPU, registered with transformers as ``memr1_cpu``.

PyTorch's CPU kernel behind ``scaled_dot_product_attention`` is slow in the two cases a left-padded
generation batch hits (SmolLM2-135M, 9 query / 3 key-value heads, bf16, 2 cores of an AVX512-BF16
EPYC, measured on 2,300-token answer prompts):

* **prefill with a padding mask**: the masked kernel computes every block, 98 ms a layer, against
  60 ms for the same rows with ``is_causal=True``. Here each row is sliced to its real tokens (left
  padding: the pads are a prefix) and attended with ``is_causal=True``; pad positions get zeros.
* **decoding one token against a long cache**: 20 ms a layer for 8 rows (the kernel's blocking is
  made for long queries, and transformers repeats the key-value heads into a copy first). Here the
  query heads are grouped onto their key-value head and attention is two small matmuls.

Anything else (a mask that is not causal-with-left-padding, chunked prefill over a cache, attention
dropout) goes to transformers' own SDPA path, so the results stay those of ``sdpa`` up to rounding.
"""

from __future__ import annotations

import weakref
from typing import Any

NAME = "memr1_cpu"
_registered = False
# the mask of the current forward pass (weakly: it is freed with its batch) and its pad lengths:
# every layer gets the same mask object, so it is checked once per forward pass
_last_mask: list = [lambda: None, None]


def register() -> str:
    """Register the attention (and SDPA's mask builder under the same name) with transformers;
    idempotent. Returns the name to pass as ``attn_implementation``."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(NAME, cpu_attention_forward)
        AttentionMaskInterface.register(NAME, sdpa_mask)
        _registered = True
    return NAME


def left_pad_lengths(mask: Any, q_len: int) -> Any | None:
    """Per-row pad length when ``mask`` (bool, batch x 1 x q x k, True = attend) is a causal mask over
    left-padded rows with no cache: its first q columns are the prompt's, and any further columns (the
    unwritten room of a :class:`~memory_r1.llm.kv_cache.PaddedCache`) are masked out; else None.

    >>> import torch
    >>> causal = torch.ones(4, 4, dtype=torch.bool).tril()
    >>> m = causal.expand(2, 1, 4, 4).clone()
    >>> m[1, :, :, :2] = False                      # row 1 has two pads
    >>> left_pad_lengths(m, 4).tolist()
    [0, 2]
    >>> roomy = torch.cat([m, torch.zeros(2, 1, 4, 3, dtype=torch.bool)], -1)
    >>> left_pad_lengths(roomy, 4).tolist()         # three masked columns of cache room
    [0, 2]
    >>> roomy[0, 0, 3, 5] = True                    # a query that sees past the prompt
    >>> left_pad_lengths(roomy, 4) is None
    True
    >>> m[0, 0, 3, 1] = False                       # a hole that is not padding
    >>> left_pad_lengths(m, 4) is None
    True
    """
    import torch

    if mask is None or mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[1] != 1:
        return None
    if mask.shape[2] != q_len or mask.shape[3] < q_len:
        return None
    if mask.shape[3] > q_len:
        if bool(mask[:, :, :, q_len:].any()):
            return None
        mask = mask[:, :, :, :q_len]
    last = mask[:, 0, -1, :]  # what the last (real) token of each row sees: pads False, rest True
    if not bool(last[:, -1].all()):  # cheap early out (right padding, an all-pad row)
        return None
    pads = (~last).sum(-1)
    idx = torch.arange(q_len, device=mask.device)
    # every real query row must be exactly causal over the real tokens (this covers the last row too)
    causal = torch.ones(q_len, q_len, dtype=torch.bool, device=mask.device).tril()
    expect = causal[None] & (idx[None, None, :] >= pads[:, None, None])
    real_q = idx[None, :, None] >= pads[:, None, None]
    if not bool(((mask[:, 0] == expect) | ~real_q).all()):
        return None
    return pads


def cpu_attention_forward(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers' attention signature: query (B, H, Q, D), key/value (B, Hkv, K, D); returns
    (B, Q, H, D)."""
    import torch
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    b, h, q_len, d = query.shape
    hkv, k_len = key.shape[1], key.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if dropout or h % hkv or kwargs.get("output_attentions"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    scale = scaling if scaling is not None else d**-0.5

    if q_len == 1:  # decode: group the query heads of each key-value head, two matmuls
        g = h // hkv
        q = query.reshape(b, hkv, g, d)
        scores = torch.matmul(q, key.transpose(-1, -2)).float() * scale  # (B, Hkv, G, K)
        if attention_mask is not None:
            m = attention_mask[:, :, -1:, :]  # (B, 1, 1, K)
            if m.dtype == torch.bool:
                scores = scores.masked_fill(~m, float("-inf"))
            else:
                scores = scores + m.float()
        probs = torch.softmax(scores, dim=-1).to(value.dtype)
        out = torch.matmul(probs, value)  # (B, Hkv, G, D)
        return out.reshape(b, h, 1, d).transpose(1, 2).contiguous(), None

    if causal and q_len == k_len and attention_mask is None:  # no padding: one causal call
        out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scale,
                                             enable_gqa=hkv != h)
        return out.transpose(1, 2).contiguous(), None
    if causal and q_len <= k_len and attention_mask is not None:
        # a prefill (over a PaddedCache's room when k > q): each row's real tokens, causally
        if _last_mask[0]() is not attention_mask:
            _last_mask[:] = [weakref.ref(attention_mask), left_pad_lengths(attention_mask, q_len)]
        pads = _last_mask[1]
        if pads is not None and not bool(pads.any()):  # no padding: one causal call
            out = F.scaled_dot_product_attention(query, key[:, :, :q_len], value[:, :, :q_len],
                                                 is_causal=True, scale=scale, enable_gqa=hkv != h)
            return out.transpose(1, 2).contiguous(), None
        if pads is not None:
            out = query.new_zeros(b, h, q_len, d)
            for i, p in enumerate(pads.tolist()):
                if p >= q_len:
                    continue
                out[i : i + 1, :, p:] = F.scaled_dot_product_attention(
                    query[i : i + 1, :, p:], key[i : i + 1, :, p:q_len],
                    value[i : i + 1, :, p:q_len], is_causal=True, scale=scale, enable_gqa=hkv != h,
                )
            return out.transpose(1, 2).contiguous(), None

    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                  scaling=scaling, is_causal=is_causal, **kwargs)
