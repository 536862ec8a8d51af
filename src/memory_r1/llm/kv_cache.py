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

The same cache can start a batch from prefixes computed once per group of rows that share them
(:func:`prefix_plan`, :func:`prefix_batch`): a speaker's fact-extraction prompts share 188 of their
~200 tokens, and the GRPO samples of one prompt share all of it.
"""

from __future__ import annotations

import os
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

    def load_prefixes(self, batch: int, length: int, capacity: int, parts: list[tuple[list[int], Any, Any]]) -> None:
        """Start a batch whose first ``length`` positions are already computed: ``parts`` holds, for
        each group of rows, one (1, heads, P, head_dim) key and value tensor of their shared prefix,
        written at positions [0, P) of each of those rows; every other position stays zero (padding,
        masked by the caller's attention mask). ``capacity`` must hold the rest of the batch."""
        if not parts:
            raise ValueError("load_prefixes needs at least one prefix")
        k0 = parts[0][1]
        if capacity < length:
            raise ValueError(f"capacity {capacity} < prefix length {length}")
        shape = (batch, k0.shape[1], capacity, k0.shape[-1])
        self.keys, self.values = k0.new_zeros(shape), k0.new_zeros(shape)
        for rows, k, v in parts:
            n = k.shape[-2]
            if n > length:
                raise ValueError(f"a {n}-token prefix does not fit in {length} positions")
            self.keys[rows, :, :n] = k
            self.values[rows, :, :n] = v
        self.dtype, self.device = k0.dtype, k0.device
        self.is_initialized = True
        self.length = length

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


def shared_prefix_groups(prompts: list[list[int]], min_prefix: int = 32, keep: float = 0.6
                         ) -> list[tuple[int, list[int]]]:
    """Rows grouped by a shared token prefix: ``[(prefix length, row indices), ...]``, every row in
    exactly one group. Rows are walked in lexicographic order; a row joins the group before it when
    the group's prefix stays at least ``min_prefix`` tokens and at least ``keep`` of what it was (so
    prompts that differ only after a long shared instruction block stay together, while another
    speaker's prompts, which share only the first system lines, start their own group). A prefix
    always leaves each row at least one token of its own; a row alone has prefix 0.

    >>> sys_a, sys_b = [1] * 50 + [2] * 50, [1] * 50 + [3] * 50      # two speakers' instructions
    >>> rows = [sys_a + [7, 8], sys_b + [9], sys_a + [5], [4, 4, 4], sys_b + [6, 6]]
    >>> shared_prefix_groups(rows)
    [(100, [2, 0]), (100, [4, 1]), (0, [3])]
    >>> shared_prefix_groups([sys_a + [5], sys_a])                   # one row is all prefix
    [(99, [1, 0])]
    """
    order = sorted(range(len(prompts)), key=lambda i: prompts[i])
    groups: list[tuple[int, list[int]]] = []
    cur: list[int] = []
    cur_p = 0
    for i in order:
        if cur:
            p = min(cur_p if len(cur) > 1 else len(prompts[cur[0]]) - 1,
                    len(os.path.commonprefix([prompts[cur[-1]], prompts[i]])), len(prompts[i]) - 1)
            if p >= min_prefix and (len(cur) == 1 or p >= keep * cur_p):
                cur.append(i)
                cur_p = p
                continue
            groups.append((cur_p if len(cur) > 1 else 0, cur))
        cur, cur_p = [i], 0
    if cur:
        groups.append((cur_p if len(cur) > 1 else 0, cur))
    return groups


def prefix_plan(prompts: list[list[int]], min_prefix: int = 32, min_saving: float = 0.25
                ) -> list[tuple[int, list[int]]] | None:
    """The groups of :func:`shared_prefix_groups` when computing each shared prefix once saves at
    least ``min_saving`` of the batch's padded prompt tokens, else None.

    The batch is then laid out as [prefix | padding | own tokens] per row, so the padded prompt is
    the longest prefix plus the longest remainder, and the prefixes are computed once per group.

    >>> head = list(range(100, 300))
    >>> prefix_plan([head + [1, 2], head + [3], head + [4, 5, 6]])
    [(200, [0, 1, 2])]
    >>> prefix_plan([head[:40] + [1] * 400, head[:40] + [2] * 400]) is None   # 9% saved: not worth it
    True
    """
    if len(prompts) < 2:
        return None
    groups = shared_prefix_groups(prompts, min_prefix)
    if all(p == 0 for p, _ in groups):
        return None
    smax = max(len(prompts[i]) - p for p, rows in groups for i in rows)
    plain = len(prompts) * max(len(x) for x in prompts)
    shared = sum(p for p, _ in groups) + len(prompts) * smax  # prefixes once, then the rest
    if plain - shared < min_saving * plain:
        return None
    return groups


def prefix_batch(model: Any, prompts: list[list[int]], plan: list[tuple[int, list[int]]],
                 reserve: int, pad_token_id: int, device: Any = "cpu") -> tuple[Any, Any, PaddedCache]:
    """``input_ids``, ``attention_mask`` and ``past_key_values`` for ``model.generate`` that compute
    each group's shared prefix once (``plan`` from :func:`prefix_plan`). Each row is laid out as
    [its group's prefix | padding | the rest of its prompt]; the cache already holds the prefixes
    (computed with one forward pass per group), so ``generate`` prefills only the rest. Positions
    follow the attention mask, so every token keeps the position it has in its own prompt, and the
    result is the plain batch's up to rounding."""
    import torch
    from transformers import DynamicCache

    n = len(prompts)
    pmax = max(p for p, _ in plan)
    width = pmax + max(len(prompts[i]) - p for p, rows in plan for i in rows)
    ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    num_layers = model.config.num_hidden_layers
    parts: list[list[tuple[list[int], Any, Any]]] = [[] for _ in range(num_layers)]
    for p, rows in plan:
        for i in rows:
            rest = prompts[i][p:]
            ids[i, :p] = torch.tensor(prompts[i][:p], dtype=torch.long)
            ids[i, width - len(rest) :] = torch.tensor(rest, dtype=torch.long)
            mask[i, :p] = 1
            mask[i, width - len(rest) :] = 1
        if p:
            pre = DynamicCache(config=model.config)
            model(input_ids=ids[rows[0] : rows[0] + 1, :p].to(device), past_key_values=pre,
                  use_cache=True, logits_to_keep=1)
            for layer, part in zip(pre.layers, parts, strict=True):
                part.append((rows, layer.keys, layer.values))
    cache = PaddedCache(num_layers, reserve=reserve)
    for layer, part in zip(cache.layers, parts, strict=True):
        layer.load_prefixes(n, pmax, width + reserve, part)
    return ids.to(device), mask.to(device), cache


def left_padded(prompts: list[list[int]], pad_token_id: int) -> tuple[Any, Any]:
    """``input_ids`` and ``attention_mask`` of a left-padded batch.

    >>> ids, mask = left_padded([[5, 6, 7], [8]], pad_token_id=0)
    >>> ids.tolist(), mask.tolist()
    ([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]])
    """
    import torch

    n, longest = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((n, longest), pad_token_id, dtype=torch.long)
    mask = torch.zeros((n, longest), dtype=torch.long)
    for j, p in enumerate(prompts):
        ids[j, longest - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[j, longest - len(p) :] = 1
    return ids, mask


def generation_inputs(model: Any, prompts: list[list[int]], reserve: int, pad_token_id: int, *,
                      padded_cache: bool, share_prefixes: bool, device: Any = "cpu"
                      ) -> tuple[Any, Any, PaddedCache | None, bool]:
    """``(input_ids, attention_mask, past_key_values or None, shared)`` for ``model.generate``: the
    shared-prefix layout of :func:`prefix_batch` when ``share_prefixes`` and :func:`prefix_plan`
    finds it worth it (``shared`` is then True), else a left-padded batch, with an empty
    :class:`PaddedCache` when ``padded_cache`` (else None: transformers' default cache)."""
    plan = prefix_plan(prompts) if share_prefixes else None
    if plan is not None:
        ids, mask, cache = prefix_batch(model, prompts, plan, reserve, pad_token_id, device)
        return ids, mask, cache, True
    ids, mask = left_padded(prompts, pad_token_id)
    cache = PaddedCache(model.config.num_hidden_layers, reserve=reserve) if padded_cache else None
    return ids.to(device), mask.to(device), cache, False


def supports(config: Any) -> bool:
    """Whether every layer of this model is plain full attention (no sliding window, no linear
    attention), so that :class:`PaddedCache` can stand in for ``DynamicCache``."""
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return False
    types = getattr(config, "layer_types", None)
    return not types or all(t == "full_attention" for t in types)
