"""The one protocol every LLM backend implements, and its plain data types.

Nothing here imports torch, transformers, vllm or httpx: the backends do that themselves, when built.

A conversation is a list of chat messages ``{"role": "system"|"user"|"assistant", "content": str}``;
``generate`` takes a list of conversations and returns one :class:`Generation` per conversation, in
the input order.

>>> p = SamplingParams(max_new_tokens=16)
>>> p.greedy
True
>>> SamplingParams(temperature=-1.0)
Traceback (most recent call last):
...
ValueError: temperature must be >= 0 (0 means greedy), got -1.0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

Message = dict[str, str]
Conversation = list[Message]
FinishReason = Literal["stop", "length"]


class LLMError(RuntimeError):
    """A backend failed (unreachable server, missing optional dependency, prompt too long, ...).

    The message says what failed and, where there is one, what to do about it."""


@dataclass(frozen=True)
class SamplingParams:
    """How to decode. ``temperature == 0`` means greedy (deterministic); ``seed`` only matters when
    sampling. ``stop``: the returned text is cut before the first occurrence of any of these strings."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int | None = None
    stop: list[str] | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 means greedy), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.stop is not None:
            if isinstance(self.stop, str):
                object.__setattr__(self, "stop", [self.stop])
            if any(not isinstance(s, str) or not s for s in self.stop):  # type: ignore[union-attr]
                raise ValueError(f"stop strings must be non-empty strings, got {self.stop!r}")
            object.__setattr__(self, "stop", list(self.stop))  # type: ignore[arg-type]

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class Generation:
    """One completion. ``prompt_tokens``: the chat-templated prompt length; ``completion_tokens``:
    generated tokens up to and including the end-of-sequence token (never padding), or up to the
    token that completed a stop string; ``finish_reason``: "stop" (EOS or a stop string) or "length"
    (``max_new_tokens`` reached)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    extra: dict = field(default_factory=dict, repr=False, compare=False)


@runtime_checkable
class LLM(Protocol):
    """What the agents and the evaluation need from a language model."""

    name: str
    context_window: int

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[Generation]:
        """One Generation per conversation, same order as the input. The built-in backends also
        take a list with one SamplingParams per conversation."""
        ...

    def count_tokens(self, messages: Conversation) -> int:
        """Length in tokens of the chat-templated prompt (with the generation prompt)."""
        ...

    def close(self) -> None:
        """Release the model / connections. Safe to call twice."""
        ...


def release_model(owner: object, attr: str) -> None:
    """Drop ``owner.<attr>`` (a loaded model or engine), collect it, and free cached GPU memory when
    there is a GPU. Safe to call twice."""
    import contextlib
    import gc

    obj = getattr(owner, attr, None)
    if obj is None:
        return
    setattr(owner, attr, None)
    del obj
    gc.collect()
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class ClosingMixin:
    """``with backend: ...`` closes the backend at the end."""

    def close(self) -> None:  # pragma: no cover - overridden
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def cut_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    """Cut ``text`` before the earliest occurrence of any stop string; say whether one was found.

    >>> cut_at_stop("a: 1\\nb: 2", ["\\n"])
    ('a: 1', True)
    >>> cut_at_stop("abc", ["x", "bc", "c"])
    ('a', True)
    >>> cut_at_stop("abc", None)
    ('abc', False)
    """
    if not stop:
        return text, False
    best = -1
    for s in stop:
        i = text.find(s)
        if i != -1 and (best == -1 or i < best):
            best = i
    if best == -1:
        return text, False
    return text[:best], True


def per_conversation(params: SamplingParams | list[SamplingParams], n: int) -> list[SamplingParams]:
    """One SamplingParams per conversation.

    >>> [p.max_new_tokens for p in per_conversation(SamplingParams(max_new_tokens=4), 2)]
    [4, 4]
    >>> per_conversation([SamplingParams()], 2)
    Traceback (most recent call last):
    ...
    ValueError: 1 sampling settings for 2 conversations
    """
    if isinstance(params, SamplingParams):
        return [params] * n
    params = list(params)
    if len(params) != n:
        raise ValueError(f"{len(params)} sampling settings for {n} conversations")
    return params


def decode_key(p: SamplingParams) -> tuple:
    """What must be equal for two requests to share one batched decode (everything but the length).

    >>> decode_key(SamplingParams(max_new_tokens=4)) == decode_key(SamplingParams(max_new_tokens=9))
    True
    """
    return (p.temperature, p.top_p, p.seed, tuple(p.stop or ()))


def validate_conversations(conversations: list[Conversation]) -> None:
    """Raise ValueError on anything that is not a non-empty list of role/content messages."""
    if isinstance(conversations, dict) or (
        conversations and isinstance(conversations[0], dict)
    ):
        raise ValueError("generate() takes a list of conversations (a list of lists of messages)")
    for i, conv in enumerate(conversations):
        if not conv:
            raise ValueError(f"conversation {i} is empty")
        for m in conv:
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise ValueError(f"conversation {i}: each message needs 'role' and 'content', got {m!r}")
