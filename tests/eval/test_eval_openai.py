"""`memr1 eval` with the model behind an OpenAI-compatible server: the CPU recipe's llm section
switched to the openai backend (once a TypeError about ``dtype``), and the recipe made for it, run a
val slice against a real HTTP server in this process (``chat_server``, tests/conftest.py; no model is
loaded here)."""

from __future__ import annotations

import json

import pytest

from memory_r1.agents.extractor import EXTRACT_SYSTEM
from memory_r1.config import RecipeError
from memory_r1.eval.runner import EvalRequest, read_predictions, run_eval


def _reply(body: dict) -> str:
    """The extractor finds no facts in any turn ("NONE"); every other call answers "Answer: Boston"."""
    return "NONE" if body["messages"][0]["content"] == EXTRACT_SYSTEM else "Answer: Boston"


@pytest.fixture
def chat(chat_server):
    chat_server.reply = _reply
    return chat_server


def _req(tmp_path, overrides, **kw) -> EvalRequest:
    return EvalRequest(split="val", limit_questions=2, judge="none", out=tmp_path / "run", show_progress=False,
                       overrides=["ingest.max_sessions=1", *overrides], **kw)


def _check_run(out, chat, served: str) -> None:
    rows = read_predictions(out / "predictions.jsonl")
    assert [r["prediction"] for r in rows] == ["Boston", "Boston"]
    assert {b["model"] for b in chat.requests} == {served}
    from memory_r1.data import load_split

    turns = len(load_split("val").conversations[0].sessions[0].turns)
    assert sum(b["messages"][0]["content"] == EXTRACT_SYSTEM for b in chat.requests) == turns
    llm = json.loads((out / "manifest.json").read_text())["config"]["llm"]
    assert llm["backend"] == "openai" and "dtype" not in llm and llm["base_url"] == chat.url


def test_the_cpu_recipe_with_the_llm_section_replaced(tmp_path, chat):
    out = run_eval(_req(tmp_path, [f"llm={{backend: openai, base_url: '{chat.url}'}}"]))
    _check_run(out, chat, "HuggingFaceTB/SmolLM2-135M-Instruct")  # the registered alias's repo id


def test_the_openai_recipe(tmp_path, chat):
    from memory_r1.config import recipe_path

    out = run_eval(_req(tmp_path, [f"llm.base_url={chat.url}", "llm.model=smol"],
                        recipe=recipe_path("smollm2-135m", "eval-openai")))
    _check_run(out, chat, "smol")


def test_switching_only_the_backend_is_one_clear_error(tmp_path, chat):
    with pytest.raises(RecipeError) as err:
        run_eval(_req(tmp_path, ["llm.backend=openai", f"llm.base_url={chat.url}"]))
    assert ("llm.dtype (hf/vllm), llm.quantize (hf), llm.batch_size (hf), llm.num_threads (hf) do not apply to "
            "llm.backend=openai") in str(err.value)
    assert not chat.requests and not (tmp_path / "run").exists()
