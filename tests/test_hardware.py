"""The CPU profile behind ``dtype: auto``: measured, cached per CPU and thread count, and overridable."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from memory_r1 import hardware  # noqa: E402


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMR1_CACHE", str(tmp_path))
    monkeypatch.delenv(hardware.DTYPE_ENV, raising=False)
    return tmp_path


def test_profile_is_measured_once_then_read_from_the_cache(cache, monkeypatch):
    first = hardware.profile()
    assert not first.cached and first.threads == torch.get_num_threads()
    assert first.gflops["float32"] > 0 and first.gflops["bfloat16"] > 0
    files = list((cache / "hardware").glob("cpu-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["gflops"] == first.gflops
    calls = []
    monkeypatch.setattr(hardware, "matmul_gflops", lambda *a, **k: calls.append(a) or 1.0)
    again = hardware.profile()
    assert again.cached and again.gflops == first.gflops and not calls
    fresh = hardware.profile(refresh=True)
    assert not fresh.cached and fresh.gflops == {"float32": 1.0, "bfloat16": 1.0} and len(calls) == 2


def test_the_cache_key_follows_threads_and_isa_limits(cache, monkeypatch):
    before = torch.get_num_threads()
    hardware.profile()
    try:
        torch.set_num_threads(1 if before > 1 else 2)
        hardware.profile()
    finally:
        torch.set_num_threads(before)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    hardware.profile()
    assert len(list((cache / "hardware").glob("cpu-*.json"))) == 3


def test_a_broken_cache_file_is_measured_again(cache):
    hardware.profile()
    (path,) = (cache / "hardware").glob("cpu-*.json")
    path.write_text("{not json")
    assert not hardware.profile().cached
    assert json.loads(path.read_text())["model"]


@pytest.mark.parametrize(
    "onednn, fp32, bf16, expected",
    [
        (False, 52.0, 6.0, "float32"),     # EPYC with AVX2 only: emulated bf16
        (True, 175.0, 400.0, "bfloat16"),  # EPYC with AVX512-BF16
        (True, 265.0, 2080.0, "bfloat16"),  # Xeon with AMX
        (True, 200.0, 210.0, "float32"),   # native but no faster: fp32 rounds less
        (False, 100.0, 900.0, "float32"),  # fast but not reported native: not trusted
    ],
)
def test_choose_dtype_needs_native_bf16_that_is_faster(onednn, fp32, bf16, expected):
    prof = hardware.CpuProfile("cpu", ("avx2",), "AVX2", onednn, 2, {"float32": fp32, "bfloat16": bf16})
    dtype, reason = hardware.choose_dtype(prof)
    assert dtype == expected and f"{bf16:.0f} GFLOP/s" in reason


def test_explicit_dtype_and_the_environment_win_over_the_measurement(cache, monkeypatch):
    assert hardware.resolve_cpu_dtype("bf16") == ("bfloat16", "asked for")
    assert hardware.resolve_cpu_dtype("float32") == ("float32", "asked for")
    monkeypatch.setenv(hardware.DTYPE_ENV, "fp32")
    assert hardware.resolve_cpu_dtype("auto") == ("float32", f"${hardware.DTYPE_ENV}")
    with pytest.raises(ValueError, match="unknown dtype"):
        hardware.resolve_cpu_dtype("int3")


def test_hf_resolve_dtype_uses_the_measured_choice_on_cpu_only(cache, monkeypatch):
    from memory_r1.llm.hf import resolve_dtype

    monkeypatch.setenv(hardware.DTYPE_ENV, "float32")
    assert resolve_dtype("auto", "cpu") == torch.float32
    monkeypatch.setenv(hardware.DTYPE_ENV, "bfloat16")
    assert resolve_dtype("auto", "cpu") == torch.bfloat16
    assert resolve_dtype("fp32", "cpu") == torch.float32  # explicit wins
    assert resolve_dtype("bf16", "cuda") == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("fp8x", "cpu")


def test_training_precision_follows_the_cpu(cache, monkeypatch):
    from memory_r1.train.verl.overrides import PRECISION_KEYS, precision_overrides

    monkeypatch.setenv(hardware.DTYPE_ENV, "float32")
    fp32 = precision_overrides("auto", critic=True)
    assert fp32[0] == f"{PRECISION_KEYS[0]}=float32"
    assert {o.split("=", 1)[0].lstrip("+") for o in fp32} == set(PRECISION_KEYS)
    monkeypatch.setenv(hardware.DTYPE_ENV, "bfloat16")
    assert precision_overrides("auto") == [f"{PRECISION_KEYS[0]}=bfloat16"]  # verl's own bf16 defaults


def test_a_recipe_setting_its_own_precision_keeps_it(cache, monkeypatch):
    import yaml

    from memory_r1.paths import repo_root
    from memory_r1.train.verl.overrides import recipe_to_overrides

    monkeypatch.setenv(hardware.DTYPE_ENV, "float32")
    recipe = yaml.safe_load((repo_root() / "recipes/smollm2-135m/answer/ppo.yaml").read_text())
    assert recipe["dtype"] == "auto"
    overrides = recipe_to_overrides(recipe)
    assert "actor_rollout_ref.rollout.dtype=float32" in overrides
    assert any(o.startswith("+critic.fsdp.mixed_precision=") for o in overrides)
    recipe["verl"]["actor_rollout_ref.rollout.dtype"] = "bfloat16"
    overrides = recipe_to_overrides(recipe)
    assert [o for o in overrides if o.startswith("actor_rollout_ref.rollout.dtype=")] == [
        "actor_rollout_ref.rollout.dtype=bfloat16"]


def test_describe_names_dtype_reason_and_rates(cache):
    d = hardware.describe("auto")
    assert d["dtype"] in ("float32", "bfloat16") and d["dtype_reason"]
    assert set(d["matmul_gflops"]) == {"float32", "bfloat16"}
    assert hardware.kind_name(hardware.profile()) in ("amx", "avx512bf16", "avx512", "avx2", "other") or "-as-" in \
        hardware.kind_name(hardware.profile())


def test_a_training_result_names_its_cpu_kind_and_precision(cache, monkeypatch):
    """The same recipe trains in bf16 mixed precision on one CPU kind and in fp32 on another, so a
    training's result records which (``TrainResult.environment``)."""
    from memory_r1.train.runner import training_environment

    pinned = training_environment({"device": "cpu", "dtype": "float32"})
    assert pinned["dtype"] == "float32" and pinned["cpu"]["kind"] == hardware.kind_name(hardware.profile())
    assert pinned["cpu"]["cores"] >= 1 and pinned["dtype_reason"]
    assert training_environment({"device": "cpu", "dtype": "auto"})["dtype"] == hardware.resolve_cpu_dtype("auto")[0]
    monkeypatch.setenv(hardware.DTYPE_ENV, "bfloat16")
    assert training_environment({"device": "cpu", "dtype": "auto"})["dtype"] == "bfloat16"
