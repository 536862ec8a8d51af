"""A key-value cache for batched generation on CPU that neither re-copies itself nor hands attention
strided views.

transformers' ``DynamicCache`` appends each new token with ``torch.cat``, which copies the whole cache
of every layer at every decode step: 27 of the 78 ms of a decode step for SmolLM2-135M (bf16, 6 rows
of 900-token prompts, 2 cores). Writing into a buffer with spare room and returning a view of its
filled part does not help: PyTorch's CPU bf16 batched matmul copies a view that is strided along the
sequence axis (0.64 ms instead of 0.09 ms for one layer's scores), so the copy only moves.

:class:`PaddedCache` therefore works like transformers' static cache, sized per batch: each layer keeps
a zero-filled (batch, heads, capacity, head_dim) buffer, writes new tokens in place, and returns the
whole buffer; :meth:`PaddedLayer.get_mask_sizes` tells the mask builder the capacity, so the unwritten
tail is masked like padding (transformers pads the 2-D attention mask with zeros up to that length).
The capacity is the prompt plus ``reserve`` (the tokens to be generated) and grows by half when a
batch runs past it, so decoding reallocates at most rarely.

It needs an attention mask on every forward pass (``generate`` always builds one); called without a
mask, a model would attend to the zero tail. :mod:`memory_r1.llm.cpu_attention` slices the tail off a
first (prefill) pass, so the prompt is attended as without the cache.
"""

from __future__ import annotations

from typing import Any

from transformers.cache_utils import Cache, DynamicLayer


class PaddedLayer(DynamicLayer):
    """One layer's cache: a zero-filled (batch, heads, capacity, head_dim) buffer filled up to
    ``length``; ``keys`` / ``values`` are the whole buffers.

    >>> import torch
    >>> layer = PaddedLayer(reserve=2)
    >>> k = torch.arange(1., 7.).reshape(1, 1, 3, 2)
    >>> layer.get_mask_sizes(3)                    # the prompt + 2 reserved positions
    (5, 0)
    >>> keys, _ = layer.update(k, k)
    >>> keys[0, 0, :, 0].tolist(), layer.get_seq_length()
    ([1.0, 3.0, 5.0, 0.0, 0.0], 3)
    >>> for step in range(3):                      # the third token runs past the capacity
    ...     keys, _ = layer.update(k[:, :, :1] * 10 * (step + 1), k[:, :, :1])
    >>> keys[0, 0, :, 0].tolist(), layer.get_seq_length(), layer.capacity
    ([1.0, 3.0, 5.0, 10.0, 20.0, 30.0, 0.0, 0.0], 6, 8)
    """

    def __init__(self, config: Any = None, reserve: int = 0) -> None:
        super().__init__(config)
        self.reserve = max(0, int(reserve))
        self.length = 0

    @property
    def capacity(self) -> int:
        return 0 if not self.is_initialized or self.keys.dim() != 4 else int(self.keys.shape[-2])

    def target_capacity(self, query_length: int) -> int:
        """The capacity after the next update of ``query_length`` tokens (the mask is built for it
        before any layer is updated, so this is a pure function of the current state)."""
        need = self.length + query_length
        cap = self.capacity
        if need <= cap:
            return cap
        if cap == 0:
            return need + self.reserve
        return max(need + self.reserve, cap + cap // 2)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.target_capacity(query_length), 0

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        import torch

        n, lead = key_states.shape[-2], key_states.shape[:-2]
        if self.is_initialized and self.keys.shape[:-2] != lead:
            raise ValueError(
                f"the cache holds batch/heads {tuple(self.keys.shape[:-2])}, got {tuple(lead)}"
            )
        cap = self.target_capacity(n)
        if not self.is_initialized or cap != self.capacity:
            shape = (*lead, cap, key_states.shape[-1])
            k_new = key_states.new_zeros(shape)
            v_new = value_states.new_zeros(shape)
            if self.length:
                k_new[..., : self.length, :] = self.keys[..., : self.length, :]
                v_new[..., : self.length, :] = self.values[..., : self.length, :]
            self.keys, self.values = k_new, v_new
            self.dtype, self.device = key_states.dtype, key_states.device
            self.is_initialized = True
        with torch.no_grad():
            self.keys[..., self.length : self.length + n, :] = key_states
            self.values[..., self.length : self.length + n, :] = value_states
        self.length += n
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, max_length: int) -> None:
        if max_length < 0:
            max_length = self.length - abs(max_length)
        if 0 <= max_length < self.length:
            self.keys[..., max_length:, :] = 0
            self.values[..., max_length:, :] = 0
            self.length = max_length

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            self.keys = self.keys.repeat_interleave(repeats, dim=0)
            self.values = self.values.repeat_interleave(repeats, dim=0)

    def batch_select_indices(self, indices: Any) -> None:
        if self.is_initialized:
            self.keys = self.keys[indices, ...]
            self.values = self.values[indices, ...]

    def reset(self) -> None:
        super().reset()
        self.length = 0

    def offload(self) -> None:  # pragma: no cover - a CPU cache
        raise NotImplementedError("PaddedCache is not offloaded")


class PaddedCache(Cache):
    """A ``Cache`` of :class:`PaddedLayer` for full-attention models: pass it to ``generate`` as
    ``past_key_values`` together with an attention mask. ``reserve``: positions to leave free after
    the prompt, normally ``max_new_tokens``."""

    def __init__(self, num_layers: int, reserve: int = 0) -> None:
        super().__init__(layers=[PaddedLayer(reserve=reserve) for _ in range(num_layers)])


def supports(config: Any) -> bool:
    """Whether every layer of this model is plain full attention (no sliding window, no linear
    attention), so that :class:`PaddedCache` can stand in for ``DynamicCache``."""
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return False
    types = getattr(config, "layer_types", None)
    return not types or all(t == "full_attention" for t in types)
