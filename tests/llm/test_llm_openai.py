"""OpenAI-compatible backend against a tiny chat-completions server run by the test on 127.0.0.1
(``chat_server`` in tests/conftest.py)."""

from __future__ import annotations

import socket
import time

import pytest

from memory_r1.llm import LLM, LLMError, SamplingParams, load_llm
from memory_r1.llm.openai_compat import OpenAICompatBackend, approx_token_count


@pytest.fixture
def server(chat_server):
    return chat_server


def _backend(server, **kw) -> OpenAICompatBackend:
    kw.setdefault("backoff", 0.01)
    kw.setdefault("timeout", 5.0)
    kw.setdefault("trust_env", False)
    return OpenAICompatBackend(server.base_url, "test-model", **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_generate_keeps_order_and_sends_params(server):
    convs = [[{"role": "user", "content": f"question {i}" + "x" * (i * 7 % 5)}] for i in range(7)]
    with _backend(server, api_key="sekret", concurrency=3) as llm:
        assert isinstance(llm, LLM)
        gens = llm.generate(convs, SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=12, seed=5))
    assert [g.text for g in gens] == [f"echo: {c[0]['content']}" for c in convs]
    assert [g.prompt_tokens for g in gens] == [10 + len(c[0]["content"]) for c in convs]
    assert all(g.completion_tokens == 3 and g.finish_reason == "stop" for g in gens)
    assert len(server.requests) == 7
    body = server.requests[0]
    assert body["model"] == "test-model"
    assert body["temperature"] == 0.7 and body["top_p"] == 0.9
    assert body["max_tokens"] == 12 and body["seed"] == 5
    assert "stop" not in body
    assert server.headers[0]["Authorization"] == "Bearer sekret"
    assert server.max_in_flight <= 3


def test_one_sampling_setting_per_conversation(server):
    convs = [[{"role": "user", "content": f"q{i}"}] for i in range(4)]
    each = [SamplingParams(max_new_tokens=5 + i) for i in range(4)]
    with _backend(server, concurrency=2) as llm:
        gens = llm.generate(convs, each)
    assert [g.text for g in gens] == ["echo: q0", "echo: q1", "echo: q2", "echo: q3"]
    sent = {b["messages"][0]["content"]: b["max_tokens"] for b in server.requests}
    assert sent == {"q0": 5, "q1": 6, "q2": 7, "q3": 8}


def test_concurrency_is_bounded_and_used(server):
    server.delay = 0.15
    convs = [[{"role": "user", "content": str(i)}] for i in range(6)]
    with _backend(server, concurrency=2) as llm:
        t0 = time.perf_counter()
        llm.generate(convs, SamplingParams(max_new_tokens=4))
        took = time.perf_counter() - t0
    assert server.max_in_flight == 2
    assert took < 6 * 0.15  # ran in parallel


def test_stop_strings_sent_and_cut_client_side(server):
    server.content = "first line\nsecond line"
    with _backend(server) as llm:
        (g,) = llm.generate([[{"role": "user", "content": "hi"}]], SamplingParams(stop=["\n"]))
    assert server.requests[0]["stop"] == ["\n"]
    assert g.text == "first line" and g.finish_reason == "stop"


def test_length_finish_reason_and_missing_usage(server):
    server.finish_reason = "length"
    server.usage = False
    conv = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "y" * 40}]
    with _backend(server) as llm:
        (g,) = llm.generate([conv], SamplingParams(max_new_tokens=3))
    assert g.finish_reason == "length"
    assert g.prompt_tokens == approx_token_count(conv)
    assert g.extra.get("prompt_tokens_approx") is True
    assert g.completion_tokens > 0


def test_retries_on_500_then_succeeds(server):
    server.fail_first = 2
    with _backend(server, max_retries=3) as llm:
        (g,) = llm.generate([[{"role": "user", "content": "retry me"}]], SamplingParams())
    assert g.text == "echo: retry me"
    assert len(server.requests) == 3


def test_gives_up_after_max_retries(server):
    server.fail_first = 100
    with _backend(server, max_retries=2) as llm:
        with pytest.raises(LLMError) as e:
            llm.generate([[{"role": "user", "content": "x"}]], SamplingParams())
    assert len(server.requests) == 3
    msg = str(e.value)
    assert server.base_url + "/v1/chat/completions" in msg
    assert "HTTP 500" in msg and "3 attempts" in msg


def test_client_error_is_not_retried(server):
    server.fail_first = 100
    server.fail_status = 400
    with _backend(server, max_retries=3) as llm:
        with pytest.raises(LLMError, match="HTTP 400"):
            llm.generate([[{"role": "user", "content": "x"}]], SamplingParams())
    assert len(server.requests) == 1


def test_timeout_is_retried_then_reported(server):
    server.delay = 0.5
    with _backend(server, timeout=0.1, max_retries=1) as llm:
        with pytest.raises(LLMError, match="timed out"):
            llm.generate([[{"role": "user", "content": "slow"}]], SamplingParams())
    time.sleep(0.5)  # let the handler threads finish before the server stops
    assert len(server.requests) == 2


def test_unreachable_server_names_the_url():
    port = _free_port()
    llm = OpenAICompatBackend(
        f"http://127.0.0.1:{port}/v1", "m", max_retries=2, backoff=0.01, timeout=2.0, trust_env=False
    )
    t0 = time.perf_counter()
    with pytest.raises(LLMError) as e:
        llm.generate([[{"role": "user", "content": "anyone?"}]], SamplingParams())
    llm.close()
    assert time.perf_counter() - t0 < 10
    msg = str(e.value)
    assert f"http://127.0.0.1:{port}/v1/chat/completions" in msg
    assert "after 3 attempts" in msg and "Connect" in msg


def test_count_tokens_approximate_or_given():
    conv = [{"role": "user", "content": "z" * 100}]
    llm = OpenAICompatBackend("http://127.0.0.1:1", "m", trust_env=False)
    assert llm.count_tokens(conv) == approx_token_count(conv) == 3 + 4 + 25
    llm.close()
    llm2 = OpenAICompatBackend("http://127.0.0.1:1", "m", token_counter=lambda m: 42, trust_env=False)
    assert llm2.count_tokens(conv) == 42
    llm2.close()
    with pytest.raises(LLMError, match="closed"):
        llm2.generate([conv], SamplingParams())


def test_load_llm_openai_maps_alias_to_repo_id(server):
    llm = load_llm("openai", "qwen2.5-7b", base_url=server.base_url + "/v1", trust_env=False)
    try:
        assert llm.name == "qwen2.5-7b" and llm.context_window == 32768
        llm.generate([[{"role": "user", "content": "hi"}]], SamplingParams(max_new_tokens=2))
    finally:
        llm.close()
    assert server.requests[0]["model"] == "Qwen/Qwen2.5-7B-Instruct"


def test_load_llm_openai_needs_a_url(monkeypatch):
    monkeypatch.delenv("MEMR1_LLM_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(LLMError, match="base_url"):
        load_llm("openai", "qwen2.5-7b")


# ------------------------------------------------------------------------------ from a recipe


def test_the_cpu_recipe_switched_to_openai_builds_and_answers(server):
    """`memr1 eval llm.backend=openai` once ended in a TypeError (the hf keys reached the openai
    backend); replacing the section builds the backend from the validated options and talks HTTP."""
    from memory_r1.config import load_eval_recipe, recipe_path
    from memory_r1.llm import build_llm

    cpu = recipe_path("smollm2-135m", "eval")
    recipe = load_eval_recipe(cpu, [f"llm={{backend: openai, base_url: '{server.base_url}/v1', concurrency: 2}}"])
    with build_llm(recipe.llm, "smollm2-135m") as llm:
        assert isinstance(llm, OpenAICompatBackend) and llm.concurrency == 2 and llm.context_window == 8192
        gens = llm.generate([[{"role": "user", "content": "hi"}]], SamplingParams(max_new_tokens=4))
    assert gens[0].text == "echo: hi"
    assert server.requests[0]["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # the alias's repo id


def test_the_openai_recipe_builds_with_its_served_name_and_key(server, monkeypatch):
    from memory_r1.config import load_eval_recipe, recipe_path
    from memory_r1.llm import build_llm

    monkeypatch.setenv("MY_SERVER_KEY", "sekret")
    recipe = load_eval_recipe(recipe_path("smollm2-135m", "eval-openai"), [
        f"llm.base_url={server.base_url}/v1", "llm.model=served-name", "llm.api_key_env=MY_SERVER_KEY"])
    with build_llm(recipe.llm, "smollm2-135m") as llm:
        llm.generate([[{"role": "user", "content": "hi"}]], SamplingParams(max_new_tokens=4))
    assert server.requests[0]["model"] == "served-name"
    assert server.headers[0]["Authorization"] == "Bearer sekret"
    monkeypatch.delenv("MY_SERVER_KEY")
    with pytest.raises(LLMError, match=r"llm.api_key_env names \$MY_SERVER_KEY, which is not set"):
        build_llm(recipe.llm, "smollm2-135m")


def test_build_llm_refuses_keys_of_another_backend_before_loading():
    from memory_r1.config import RecipeError
    from memory_r1.llm import build_llm

    with pytest.raises(RecipeError, match=r"llm\.dtype \(hf/vllm\), llm\.batch_size \(hf\) do not apply to llm\.backend=openai"):
        build_llm({"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "dtype": "auto", "batch_size": 8})
