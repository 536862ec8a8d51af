"""A scripted LLM standing in for the extractor + Memory Manager of the ``pipeline`` bank source."""

from __future__ import annotations

import pytest


class ScriptedLLM:
    """The extractor states one fact per turn (the turn's first words), the manager ADDs every new fact."""

    name = "scripted"
    context_window = 8192

    def __init__(self):
        self.prompts = 0

    def generate(self, conversations, params):
        from memory_r1.agents.extractor import EXTRACT_SYSTEM
        from memory_r1.llm.base import Generation

        out = []
        for conv in conversations:
            self.prompts += 1
            last = conv[-1]["content"]
            if conv[0]["content"] == EXTRACT_SYSTEM:
                speaker, _, said = last.splitlines()[-1].partition(": ")
                text = f"- {speaker} said: {' '.join(said.split()[:8])}"
            else:
                facts = last.split("NEW FACTS:\n", 1)[1].splitlines()
                text = "\n".join(f"ADD: {f[2:]}" for f in facts if f.startswith("- "))
            out.append(Generation(text=text, prompt_tokens=1, completion_tokens=1, finish_reason="stop"))
        return out

    def count_tokens(self, messages):
        return 1

    def close(self):
        pass


@pytest.fixture
def scripted_llm():
    return ScriptedLLM()
