"""A backend for any OpenAI-compatible chat server (``vllm serve``, llama.cpp server, SGLang, ...).

POSTs ``/v1/chat/completions`` with httpx (already installed through qdrant-client; the ``openai``
package is not needed), one request per conversation, at most ``concurrency`` in flight. Timeouts,
connection errors, 429 and 5xx answers are retried ``max_retries`` times with exponential backoff;
after that, or on another 4xx, an :class:`LLMError` names the URL and the reason.

Token counts in each :class:`Generation` are the server's ``usage`` numbers. ``count_tokens`` has no
tokenizer to ask, so unless a ``token_counter`` is given it APPROXIMATES: about 4 characters a token
plus 4 tokens of chat-template overhead a message and 3 for the generation prompt; use it for
budgeting only, never for exact truncation.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from memory_r1.llm.base import (
    ClosingMixin,
    Conversation,
    Generation,
    LLMError,
    SamplingParams,
    cut_at_stop,
    per_conversation,
    validate_conversations,
)

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def chat_completions_url(base_url: str) -> str:
    """``http://h:8000`` / ``http://h:8000/v1`` / a full ``.../chat/completions`` URL -> the endpoint.

    >>> chat_completions_url("http://127.0.0.1:8000")
    'http://127.0.0.1:8000/v1/chat/completions'
    >>> chat_completions_url("http://127.0.0.1:8000/v1/")
    'http://127.0.0.1:8000/v1/chat/completions'
    """
    u = base_url.rstrip("/")
    if u.endswith("/chat/completions"):
        return u
    if u.endswith("/v1"):
        return u + "/chat/completions"
    return u + "/v1/chat/completions"


def approx_token_count(messages: Conversation) -> int:
    """~4 characters a token, +4 a message for role markers, +3 for the generation prompt.

    >>> approx_token_count([{"role": "user", "content": "x" * 40}])
    17
    """
    return 3 + sum(4 + math.ceil(len(str(m.get("content", ""))) / 4) for m in messages)


class OpenAICompatBackend(ClosingMixin):
    """``generate`` over HTTP against an OpenAI-compatible server.

    ``base_url``: ``http://host:port`` or ``http://host:port/v1``. ``model``: the served model name.
    ``api_key``: sent as a bearer token (default ``$OPENAI_API_KEY`` if set). ``timeout``: seconds per
    request. ``max_retries``: extra attempts after the first. ``backoff``: first retry delay in
    seconds (doubled each retry, capped by ``max_backoff``). ``concurrency``: requests in flight.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        max_retries: int = 3,
        concurrency: int = 8,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        context_window: int | None = None,
        name: str | None = None,
        token_counter: Callable[[Conversation], int] | None = None,
        extra_body: dict[str, Any] | None = None,
        trust_env: bool = True,
    ) -> None:
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - httpx comes with qdrant-client
            raise LLMError("the OpenAI-compatible backend needs httpx: pip install httpx") from exc
        if concurrency < 1 or max_retries < 0:
            raise ValueError("concurrency must be >= 1 and max_retries >= 0")
        self.url = chat_completions_url(base_url)
        self.model = model
        self.name = name or model
        if context_window is None:
            from memory_r1.backbones import get_backbone

            b = get_backbone(model)
            context_window = b.context_window if b else 32768
        self.context_window = int(context_window)
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.extra_body = dict(extra_body or {})
        self._token_counter = token_counter
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            headers=headers,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            trust_env=trust_env,
        )
        self._closed = False
        self._lock = threading.Lock()

    # -------------------------------------------------------------------------------------------

    def count_tokens(self, messages: Conversation) -> int:
        """Exact with a ``token_counter``; otherwise the approximation of :func:`approx_token_count`."""
        if self._token_counter is not None:
            return int(self._token_counter(messages))
        return approx_token_count(messages)

    def _body(self, messages: Conversation, params: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        body.update(self.extra_body)
        return body

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        attempts = self.max_retries + 1
        last = "no attempt made"
        for attempt in range(attempts):
            if attempt:
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                time.sleep(delay * (1 + 0.1 * random.random()))
            try:
                resp = self._client.post(self.url, json=body)
            except httpx.TimeoutException as exc:
                last = f"timed out after {self.timeout:g} s ({type(exc).__name__})"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 200:
                    try:
                        return resp.json()
                    except ValueError as exc:
                        raise LLMError(
                            f"POST {self.url}: the answer is not JSON: {resp.text[:200]!r}"
                        ) from exc
                snippet = resp.text[:300].replace("\n", " ")
                if resp.status_code not in RETRY_STATUS:
                    raise LLMError(f"POST {self.url} -> HTTP {resp.status_code}: {snippet}")
                last = f"HTTP {resp.status_code}: {snippet}"
            log.warning("POST %s failed (attempt %d/%d): %s", self.url, attempt + 1, attempts, last)
        raise LLMError(
            f"cannot reach the OpenAI-compatible server at {self.url} after {attempts} attempts: {last}"
        )

    def _one(self, messages: Conversation, params: SamplingParams) -> Generation:
        data = self._post(self._body(messages, params))
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
            reason = choice.get("finish_reason") or "stop"
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise LLMError(f"POST {self.url}: unexpected answer {str(data)[:300]}") from exc
        text, stopped = cut_at_stop(text, params.stop)  # servers may leave the stop string in
        usage = data.get("usage") or {}
        prompt_tokens = usage.get("prompt_tokens")
        completion_tokens = usage.get("completion_tokens")
        extra = {}
        if prompt_tokens is None:
            prompt_tokens = self.count_tokens(messages)
            extra["prompt_tokens_approx"] = True
        if completion_tokens is None:
            completion_tokens = max(1, math.ceil(len(text) / 4)) if text else 0
            extra["completion_tokens_approx"] = True
        finish = "length" if reason == "length" and not stopped else "stop"
        return Generation(text, int(prompt_tokens), int(completion_tokens), finish, extra)

    def generate(
        self, conversations: list[Conversation], params: SamplingParams | list[SamplingParams]
    ) -> list[Generation]:
        validate_conversations(conversations)
        if self._closed:
            raise LLMError(f"{self.name}: backend is closed")
        if not conversations:
            return []
        each = per_conversation(params, len(conversations))
        if len(conversations) == 1 or self.concurrency == 1:
            return [self._one(c, p) for c, p in zip(conversations, each, strict=True)]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(conversations))) as pool:
            futures = [pool.submit(self._one, c, p) for c, p in zip(conversations, each, strict=True)]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._client.close()
