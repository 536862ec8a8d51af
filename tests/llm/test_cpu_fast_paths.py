"""The CPU generation fast paths against stock transformers, on a small random Llama (GQA, fp32 and
bf16): the padded key-value cache (kv_cache.py) and the oneDNN-packed linears (cpu_linear.py) must
not change a single generated token in fp32; in bf16 (native or emulated: these tests assume no CPU
feature) every generated step's logits must match stock transformers' teacher-forced logits within
bf16 rounding."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM  # noqa: E402

from memory_r1.llm import cpu_attention, cpu_linear, kv_cache  # noqa: E402


def _model(attn: str = "memr1_cpu", dtype=torch.float32) -> LlamaForCausalLM:
    cpu_attention.register()
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=True, attn_implementation=attn, pad_token_id=0, eos_token_id=1,
    )
    return LlamaForCausalLM(cfg).to(dtype).eval()


def _batch(pads=(0, 3, 7), length=19):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 97, (len(pads), length), generator=g)
    mask = torch.ones_like(ids)
    for i, p in enumerate(pads):
        ids[i, :p] = 0
        mask[i, :p] = 0
    return ids, mask


def _generate(model, cache=None, new=12, **kw):
    ids, mask = _batch()
    extra = {"past_key_values": cache} if cache is not None else {}
    with torch.inference_mode():
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                              pad_token_id=0, **extra, **kw)


@pytest.mark.parametrize("reserve", [12, 0, 3])  # room for every token; growing at once; growing later
def test_padded_cache_generates_what_the_dynamic_cache_does(reserve):
    model = _model()
    ref = _generate(model, DynamicCache(config=model.config), do_sample=False)
    cache = kv_cache.PaddedCache(model.config.num_hidden_layers, reserve=reserve)
    ours = _generate(model, cache, do_sample=False)
    assert torch.equal(ours, ref)
    layer = cache.layers[0]
    assert layer.get_seq_length() == 19 + 12 - 1  # the last token is sampled, never cached
    assert layer.capacity >= layer.get_seq_length()
    # the room past the written tokens is still zeros (what the mask hides)
    assert torch.count_nonzero(layer.keys[:, :, layer.length :]) == 0


def test_padded_cache_with_sampling_and_with_transformers_sdpa():
    model = _model()
    torch.manual_seed(5)
    ref = _generate(model, do_sample=True, temperature=1.0, top_k=0)
    torch.manual_seed(5)
    ours = _generate(model, kv_cache.PaddedCache(2, reserve=4), do_sample=True, temperature=1.0, top_k=0)
    assert torch.equal(ours, ref)
    # any attention that honours the mask can read it (here transformers' own sdpa)
    sdpa = _model("sdpa")
    assert torch.equal(
        _generate(sdpa, kv_cache.PaddedCache(2, reserve=5), do_sample=False),
        _generate(sdpa, do_sample=False),
    )


def test_padded_layer_crop_select_and_repeat():
    layer = kv_cache.PaddedLayer(reserve=2)
    k = torch.arange(2 * 1 * 4 * 2, dtype=torch.float32).reshape(2, 1, 4, 2)
    layer.update(k, k + 100)
    layer.crop(-1)  # drop the last position
    assert layer.get_seq_length() == 3
    assert torch.count_nonzero(layer.keys[:, :, 3:]) == 0
    assert torch.equal(layer.keys[:, :, :3], k[:, :, :3])
    layer.batch_select_indices(torch.tensor([1]))
    assert layer.keys.shape[0] == 1 and torch.equal(layer.values[0, :, :3], k[1, :, :3] + 100)
    layer.batch_repeat_interleave(3)
    assert layer.keys.shape[0] == 3 and layer.get_seq_length() == 3
    with pytest.raises(ValueError, match="batch/heads"):
        layer.update(torch.zeros(2, 1, 1, 2), torch.zeros(2, 1, 1, 2))
    assert layer.get_seq_length() == 3  # a refused update changes nothing


def test_supports_full_attention_only():
    assert kv_cache.supports(LlamaConfig())
    qwen_like = LlamaConfig()
    qwen_like.sliding_window, qwen_like.use_sliding_window = 4096, False  # Qwen2 ships it off
    assert kv_cache.supports(qwen_like)
    qwen_like.use_sliding_window = True
    assert not kv_cache.supports(qwen_like)
    hybrid = LlamaConfig()
    hybrid.layer_types = ["full_attention", "sliding_attention"]
    assert not kv_cache.supports(hybrid)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_linears_change_no_token(dtype):
    if not cpu_linear.available(dtype):
        pytest.skip(f"this torch build cannot pack {dtype} weights")
    model = _model(dtype=dtype)
    keys = sorted(model.state_dict())
    ref = _generate(model, do_sample=False)
    ids, mask = _batch()
    with torch.inference_mode():
        ref_logits = model(input_ids=ids, attention_mask=mask).logits
    n = cpu_linear.pack_linears(model)
    assert n == 2 * 7 + 1  # q k v o gate up down per layer, and the (tied) head
    assert sorted(model.state_dict()) == keys
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(logits, ref_logits, atol=1e-4 if dtype == torch.float32 else 0, rtol=1e-4 if dtype == torch.float32 else 0)
    assert torch.equal(_generate(model, kv_cache.PaddedCache(2, reserve=12), do_sample=False), ref)
    # with gradients on, the plain linear runs (and backward works)
    model.train()
    out = model(input_ids=ids, attention_mask=mask).logits
    out.float().sum().backward()
    assert model.model.layers[0].mlp.up_proj.weight.grad is not None
    assert cpu_linear.unpack_linears(model) == n
    assert not any(hasattr(m, "_memr1_packed") for m in model.modules())


def _prompts():
    g = torch.Generator().manual_seed(3)
    head_a = torch.randint(2, 97, (40,), generator=g).tolist()
    head_b = head_a[:10] + torch.randint(2, 97, (30,), generator=g).tolist()  # another "speaker"
    tail = lambda n: torch.randint(2, 97, (n,), generator=g).tolist()  # noqa: E731
    return [head_a + tail(3), head_b + tail(7), head_a + tail(1), head_b + tail(2), head_a + tail(9)]


def _left_pad(rows):
    longest = max(map(len, rows))
    ids = torch.zeros(len(rows), longest, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, longest - len(r):] = torch.tensor(r)
        mask[i, longest - len(r):] = 1
    return ids, mask


def _plain(model, prompts, new=10, **kw):
    ids, mask = _left_pad(prompts)
    longest = ids.shape[1]
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                             pad_token_id=0, **kw)
    return out[:, longest:]


@pytest.mark.parametrize("attn", ["memr1_cpu", "sdpa"])
def test_shared_prefixes_generate_what_the_plain_batch_does(attn):
    model = _model(attn)
    prompts = _prompts()
    plan = kv_cache.prefix_plan(prompts, min_prefix=8)
    assert sorted(p for p, _ in plan) == [40, 40]  # two groups, each prefix computed once
    ids, mask, cache = kv_cache.prefix_batch(model, prompts, plan, reserve=10, pad_token_id=0)
    assert cache.get_seq_length() == 40 and ids.shape[1] == 40 + 9
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, past_key_values=cache, max_new_tokens=10,
                             min_new_tokens=10, do_sample=False, pad_token_id=0)
    assert torch.equal(out[:, ids.shape[1]:], _plain(model, prompts, do_sample=False))


def test_prefix_plan_leaves_a_lone_row_whole_and_skips_small_savings():
    prompts = _prompts() + [list(range(2, 12))]  # a row that shares nothing
    plan = kv_cache.prefix_plan(prompts, min_prefix=8)
    assert (0, [5]) in plan
    model = _model()
    ids, mask, cache = kv_cache.prefix_batch(model, prompts, plan, reserve=10, pad_token_id=0)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, past_key_values=cache, max_new_tokens=10,
                             min_new_tokens=10, do_sample=False, pad_token_id=0)
    assert torch.equal(out[:, ids.shape[1]:], _plain(model, prompts, do_sample=False))
    assert kv_cache.prefix_plan([p[-12:] for p in prompts], min_prefix=8) is None  # nothing shared


DTYPES = [torch.float32, torch.bfloat16]
#: largest gap allowed between a fast path's step logits and stock transformers' (logits are ~1 here;
#: one bf16 ulp at 1.0 is 0.0078)
TOL = {torch.float32: 1e-4, torch.bfloat16: 0.04}


def _rows(ids, mask):
    return [r[m.bool()].tolist() for r, m in zip(ids, mask)]


def _stock_step_logits(ref, prompts, generated):
    """Stock transformers (sdpa, no cache, plain linears) scoring ``prompts`` + ``generated`` in one
    forward pass: the logits that predicted each generated token."""
    ids, mask = _left_pad([p + g for p, g in zip(prompts, generated)])
    longest, n = ids.shape[1], len(generated[0])
    with torch.inference_mode():
        return ref(input_ids=ids, attention_mask=mask).logits[:, longest - n - 1 : longest - 1].float()


def _fast_generate(model, ids, mask, cache, new=12):
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, past_key_values=cache, max_new_tokens=new,
                             min_new_tokens=new, do_sample=False, pad_token_id=0, output_logits=True,
                             return_dict_in_generate=True)
    return out.sequences[:, ids.shape[1]:].tolist(), torch.stack(out.logits, 1).float()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path", ["padded_cache", "shared_prefixes", "packed_linears"])
def test_each_fast_path_scores_like_stock_transformers(dtype, path):
    """Every fast path in fp32 and bf16 (bf16 runs everywhere, emulated where the CPU lacks it; only
    packing needs oneDNN's kernels and is skipped, with the reason, where this build has none)."""
    model, ref = _model(dtype=dtype), _model("sdpa", dtype=dtype)
    if path == "packed_linears":
        if not cpu_linear.available(dtype):
            pytest.skip(f"oneDNN cannot pack {dtype} linear weights on this CPU (the plain path is tested below)")
        assert cpu_linear.pack_linears(model) == 2 * 7 + 1
    if path == "shared_prefixes":
        prompts = _prompts()
        plan = kv_cache.prefix_plan(prompts, min_prefix=8)
        ids, mask, cache = kv_cache.prefix_batch(model, prompts, plan, reserve=12, pad_token_id=0)
    else:
        ids, mask = _batch()
        prompts, cache = _rows(ids, mask), kv_cache.PaddedCache(2, reserve=3)
    generated, logits = _fast_generate(model, ids, mask, cache)
    gap = (logits - _stock_step_logits(ref, prompts, generated)).abs().max().item()
    assert gap <= TOL[dtype], f"{path} in {dtype}: step logits differ from stock transformers by {gap}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_attention_prefill_and_decode_match_sdpa_in_each_dtype(dtype):
    model, ref = _model(dtype=dtype), _model("sdpa", dtype=dtype)
    ids, mask = _batch()
    with torch.inference_mode():
        ours = model(input_ids=ids, attention_mask=mask).logits.float()
        stock = ref(input_ids=ids, attention_mask=mask).logits.float()
    real = mask.bool()  # padded positions are garbage in both
    assert (ours - stock)[real].abs().max().item() <= TOL[dtype]


def test_without_onednn_packing_the_plain_linear_runs(monkeypatch):
    """The fallback every CPU can take: nothing is packed, and the model computes what it did."""
    model = _model()
    ids, mask = _batch()
    with torch.inference_mode():
        before = model(input_ids=ids, attention_mask=mask).logits
    monkeypatch.setattr(cpu_linear, "available", lambda dtype: False)
    assert cpu_linear.pack_linears(model) == 0
    assert not any(hasattr(m, "_memr1_packed") for m in model.modules())
    with torch.inference_mode():
        assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, before)


def test_int8_dynamic_quantization_replaces_every_linear_and_still_generates():
    from memory_r1.llm.base import LLMError
    from memory_r1.llm.hf import quantize_linears

    model = _model()
    ids, mask = _batch()
    with torch.inference_mode():
        ref = model(input_ids=ids, attention_mask=mask).logits
    assert quantize_linears(model, None, "cpu", torch.float32) == 0
    assert quantize_linears(model, "int8", "cpu", torch.float32) == 2 * 7 + 1
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    with torch.inference_mode():
        q = model(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    assert 0 < (q - ref)[real].abs().max().item() < 0.1  # rounded, not broken
    out = _generate(model, kv_cache.PaddedCache(2, reserve=12), do_sample=False)
    assert out.shape == (3, 19 + 12)
    with pytest.raises(LLMError, match="float32"):
        quantize_linears(_model(dtype=torch.bfloat16), "int8", "cpu", torch.bfloat16)
    with pytest.raises(ValueError, match="unknown quantize"):
        quantize_linears(_model(), "int4", "cpu", torch.float32)
