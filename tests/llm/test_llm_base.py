"""The protocol's data types, the factory, and that importing the package stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from memory_r1.llm import Generation, LLMError, SamplingParams, cut_at_stop, load_llm
from memory_r1.llm.base import validate_conversations


def test_sampling_params_defaults_and_validation():
    p = SamplingParams()
    assert p.temperature == 0.0 and p.greedy and p.top_p == 1.0 and p.seed is None and p.stop is None
    assert SamplingParams(stop="\n").stop == ["\n"]
    assert not SamplingParams(temperature=0.5).greedy
    for bad in ({"temperature": -0.1}, {"top_p": 0.0}, {"top_p": 1.5}, {"max_new_tokens": 0}, {"stop": [""]}):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


def test_generation_fields():
    g = Generation("hi", 5, 2, "stop")
    assert (g.text, g.prompt_tokens, g.completion_tokens, g.finish_reason) == ("hi", 5, 2, "stop")


def test_cut_at_stop_earliest():
    assert cut_at_stop("x END y STOP", ["STOP", "END"]) == ("x ", True)
    assert cut_at_stop("nothing", ["?"]) == ("nothing", False)


def test_validate_conversations():
    validate_conversations([[{"role": "user", "content": "a"}]])
    with pytest.raises(ValueError, match="list of conversations"):
        validate_conversations([{"role": "user", "content": "a"}])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="empty"):
        validate_conversations([[]])
    with pytest.raises(ValueError, match="role"):
        validate_conversations([[{"content": "a"}]])


def test_load_llm_unknown_kind():
    with pytest.raises(ValueError, match="hf, vllm, openai"):
        load_llm("tgi", "smollm2-135m")  # type: ignore[arg-type]


def test_import_is_light():
    code = (
        "import sys, json, memory_r1.llm, memory_r1.backbones, memory_r1.llm.base;"
        "import memory_r1.llm.hf, memory_r1.llm.openai_compat, memory_r1.llm.vllm_backend;"
        "print(json.dumps([m for m in ('torch','transformers','vllm','httpx','openai') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_llm_error_is_runtime_error():
    assert issubclass(LLMError, RuntimeError)
