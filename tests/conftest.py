"""Shared fixtures: the real LoCoMo file (read from ../shared or $MEMR1_LOCOMO, never from the repo),
and a tiny OpenAI-compatible chat server on 127.0.0.1 (``chat_server``)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest


@pytest.fixture(scope="session")
def locomo_path() -> Path:
    from memory_r1.paths import resolve_locomo_path

    return resolve_locomo_path()


@pytest.fixture(scope="session")
def locomo_raw(locomo_path: Path) -> list:
    return json.loads(locomo_path.read_text())


@pytest.fixture(scope="session")
def conversations(locomo_path: Path):
    from memory_r1.data import load_locomo

    return load_locomo(locomo_path)


class FakeChatServer:
    """Answers POST /v1/chat/completions with canned JSON echoing the last user message.

    ``fail_first``: answer that many requests with ``fail_status`` first; ``delay``: seconds to wait
    before answering; ``finish_reason``/``content`` override the canned answer, ``reply`` (a function
    of the request body) computes it."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.fail_first = 0
        self.fail_status = 500
        self.delay = 0.0
        self.finish_reason = "stop"
        self.content: str | None = None
        self.reply: Callable[[dict], str] | None = None
        self.usage = True
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(n))
                with server._lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    count = len(server.requests)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if server.delay:
                        time.sleep(server.delay)
                    if self.path != "/v1/chat/completions":
                        return self._send(404, {"error": "not found"})
                    if count <= server.fail_first:
                        return self._send(server.fail_status, {"error": "boom"})
                    last = body["messages"][-1]["content"]
                    text = (server.reply(body) if server.reply else server.content if server.content is not None
                            else f"echo: {last}")
                    answer = {
                        "id": f"cmpl-{count}",
                        "object": "chat.completion",
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": server.finish_reason,
                            }
                        ],
                    }
                    if server.usage:
                        answer["usage"] = {
                            "prompt_tokens": 10 + len(last),
                            "completion_tokens": 3,
                            "total_tokens": 13 + len(last),
                        }
                    self._send(200, answer)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.url = self.base_url + "/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.daemon = True
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def chat_server(monkeypatch):
    """A :class:`FakeChatServer` for the test (proxy variables cleared so httpx talks to it directly)."""
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    s = FakeChatServer()
    yield s
    s.stop()
