"""The CPU attention (``memr1_cpu``) against transformers' own SDPA path: same outputs (fp32) on
the masks a left-padded generation batch produces, and the SDPA path itself for anything else."""

from __future__ import annotations

import types

import pytest

torch = pytest.importorskip("torch")
from transformers.integrations.sdpa_attention import sdpa_attention_forward  # noqa: E402

from memory_r1.llm import cpu_attention  # noqa: E402
from memory_r1.llm.cpu_attention import cpu_attention_forward, left_pad_lengths  # noqa: E402

B, L, H, HKV, D = 3, 37, 6, 2, 16
MOD = types.SimpleNamespace(num_key_value_groups=H // HKV, is_causal=True)


def _qkv(q_len: int, k_len: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    # (B, Q, H, D) transposed, as the model hands them over: not contiguous
    q = torch.randn(B, q_len, H, D, generator=g).transpose(1, 2)
    k = torch.randn(B, k_len, HKV, D, generator=g).transpose(1, 2)
    v = torch.randn(B, k_len, HKV, D, generator=g).transpose(1, 2)
    return q, k, v


def _padded_causal(pads: list[int], n: int = L):
    idx = torch.arange(n)
    p = torch.tensor(pads)
    return (torch.ones(n, n, dtype=torch.bool).tril()[None] & (idx[None, None, :] >= p[:, None, None]))[:, None]


def _same_on_real_rows(a, b, pads):
    for i, p in enumerate(pads):  # outputs at pad positions are never read
        torch.testing.assert_close(a[i, p:], b[i, p:], atol=1e-5, rtol=1e-5)


def test_prefill_with_left_padding_matches_sdpa():
    pads = [0, 5, 11]
    q, k, v = _qkv(L, L)
    mask = _padded_causal(pads)
    ours, _ = cpu_attention_forward(MOD, q, k, v, mask)
    ref, _ = sdpa_attention_forward(MOD, q, k, v, mask)
    assert ours.shape == ref.shape == (B, L, H, D)
    _same_on_real_rows(ours, ref, pads)
    assert torch.count_nonzero(ours[2, :11]) == 0  # pad positions: zeros


def test_prefill_without_mask_is_causal():
    q, k, v = _qkv(L, L, seed=1)
    ours, _ = cpu_attention_forward(MOD, q, k, v, None)
    ref, _ = sdpa_attention_forward(MOD, q, k, v, None)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("with_mask", [True, False])
def test_decode_one_token_against_a_cache_matches_sdpa(with_mask):
    pads = [0, 4, 9]
    q, k, v = _qkv(1, L, seed=2)
    mask = None
    if with_mask:
        mask = (torch.arange(L)[None, :] >= torch.tensor(pads)[:, None])[:, None, None, :]
    ours, _ = cpu_attention_forward(MOD, q, k, v, mask)
    ref, _ = sdpa_attention_forward(MOD, q, k, v, mask)
    assert ours.shape == (B, 1, H, D)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_other_masks_go_to_sdpa(monkeypatch):
    calls = []
    real = sdpa_attention_forward

    def spy(*a, **k):
        calls.append(a[4])
        return real(*a, **k)

    monkeypatch.setattr("transformers.integrations.sdpa_attention.sdpa_attention_forward", spy)
    q, k, v = _qkv(L, L, seed=3)
    holey = _padded_causal([0, 0, 0])
    holey[1, 0, 20, 3] = False  # not causal-with-left-padding
    ours, _ = cpu_attention_forward(MOD, q, k, v, holey)
    assert len(calls) == 1 and calls[0] is holey
    torch.testing.assert_close(ours, real(MOD, q, k, v, holey)[0])
    # chunked prefill over a cache (q shorter than k, more than one token): SDPA too
    q2, k2, v2 = _qkv(5, L, seed=4)
    cpu_attention_forward(MOD, q2, k2, v2, torch.ones(B, 1, 5, L, dtype=torch.bool))
    assert len(calls) == 2


def test_left_pad_lengths_rejects_what_it_cannot_slice():
    assert left_pad_lengths(None, L) is None
    assert left_pad_lengths(torch.zeros(B, 1, L, L), L) is None  # additive float mask
    assert left_pad_lengths(_padded_causal([0, 1, 2]), L).tolist() == [0, 1, 2]
    right = _padded_causal([0, 0, 0])
    right[2, 0, :, -3:] = False  # right padding: the last token sees nothing of itself
    assert left_pad_lengths(right, L) is None


def test_register_is_idempotent_and_known_to_transformers():
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    assert cpu_attention.register() == cpu_attention.register() == "memr1_cpu"
    assert AttentionInterface._global_mapping["memr1_cpu"] is cpu_attention_forward
    assert "memr1_cpu" in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping


def test_the_mask_is_checked_once_per_forward_pass(monkeypatch):
    checks = []
    real = cpu_attention.left_pad_lengths
    monkeypatch.setattr(cpu_attention, "left_pad_lengths", lambda m, n: checks.append(n) or real(m, n))
    q, k, v = _qkv(L, L, seed=5)
    mask = _padded_causal([0, 2, 4])
    first = [cpu_attention_forward(MOD, q, k, v, mask)[0] for _ in range(3)]  # three layers, one mask
    assert len(checks) == 1
    again = cpu_attention_forward(MOD, q, k, v, _padded_causal([0, 2, 4]))[0]  # next forward pass
    assert len(checks) == 2
    _same_on_real_rows(again, first[0], [0, 2, 4])
