"""vLLM backend: the missing-dependency error, and the mapping onto vLLM's API with a stand-in module
(vLLM itself needs a GPU machine)."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field

import pytest

from memory_r1.llm import LLM, LLMError, SamplingParams, load_llm


def test_missing_vllm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(LLMError, match=r"pip install 'memory-r1\[gpu\]' on a GPU machine"):
        load_llm("vllm", "smollm2-135m")


@dataclass
class _Completion:
    text: str
    token_ids: list
    finish_reason: str


@dataclass
class _RequestOutput:
    prompt_token_ids: list
    outputs: list = field(default_factory=list)


class _FakeTokenizer:
    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=True):
        return list(range(3 + sum(len(m["content"].split()) for m in messages)))


def _fake_vllm():
    mod = types.ModuleType("vllm")
    calls: dict = {}

    class SamplingParams:  # noqa: D401 - stands in for vllm.SamplingParams
        def __init__(self, **kw):
            self.kw = kw

    class LLMEngine:
        def __init__(self, **kw):
            calls["init"] = kw

        def get_tokenizer(self):
            return _FakeTokenizer()

        def chat(self, messages, sampling_params=None, use_tqdm=True):
            kw = [p.kw for p in sampling_params] if isinstance(sampling_params, list) else sampling_params.kw
            calls["chat"] = (messages, kw, use_tqdm)
            outs = []
            for i, conv in enumerate(messages):
                last = conv[-1]["content"]
                finish = "length" if i == 1 else "stop"
                done = _Completion(f"re: {last}\nmore", [1] * (i + 2), finish)
                outs.append(_RequestOutput(list(range(10 + i)), [done]))
            return outs

    mod.SamplingParams = SamplingParams
    mod.LLM = LLMEngine
    return mod, calls


def test_vllm_mapping_with_a_stand_in(monkeypatch, tmp_path, clean_model_env, make_model_dir):
    mod, calls = _fake_vllm()
    monkeypatch.setitem(sys.modules, "vllm", mod)
    ckpt = make_model_dir(tmp_path / "ckpt", max_pos=4096)
    llm = load_llm("vllm", str(ckpt), max_model_len=2048, gpu_memory_utilization=0.5)
    assert isinstance(llm, LLM)
    assert llm.context_window == 2048
    assert calls["init"]["model"] == str(ckpt.resolve())
    assert calls["init"]["gpu_memory_utilization"] == 0.5
    convs = [[{"role": "user", "content": "a b"}], [{"role": "user", "content": "c"}]]
    gens = llm.generate(convs, SamplingParams(max_new_tokens=7, seed=1, stop=["\n"]))
    msgs, kw, use_tqdm = calls["chat"]
    assert msgs == convs and use_tqdm is False
    assert kw == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 7, "n": 1, "seed": 1, "stop": ["\n"]}
    assert [g.text for g in gens] == ["re: a b", "re: c"]
    assert [g.prompt_tokens for g in gens] == [10, 11]
    assert [g.completion_tokens for g in gens] == [2, 3]
    assert [g.finish_reason for g in gens] == ["stop", "stop"]  # a stop string was cut
    gens = llm.generate(convs, SamplingParams(temperature=0.9, top_p=0.8))
    assert calls["chat"][1]["temperature"] == 0.9 and calls["chat"][1]["top_p"] == 0.8
    assert [g.finish_reason for g in gens] == ["stop", "length"]
    # one SamplingParams per prompt: handed to vLLM as a list; each row's own stop strings apply
    gens = llm.generate(convs, [SamplingParams(max_new_tokens=3), SamplingParams(max_new_tokens=9, stop=["\n"])])
    assert [k["max_tokens"] for k in calls["chat"][1]] == [3, 9]
    assert [g.text for g in gens] == ["re: a b\nmore", "re: c"]
    assert llm.count_tokens(convs[0]) == 5
    llm.close()
    llm.close()
