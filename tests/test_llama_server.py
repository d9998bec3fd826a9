"""The embedded model's server bounds every reply, whatever field (or none) the client sends."""

from __future__ import annotations

import asyncio
import json

import pytest

from sandbox.lm.llama_server import BoundReplies, bounded_request


@pytest.mark.parametrize(("body", "sent"), [
    ({"messages": []}, 2048),  # no bound at all: DSPy's default with an LM that sets none
    ({"max_completion_tokens": 300}, 300),  # OpenAI's newer field, which llama.cpp ignores
    ({"max_tokens": 100, "max_completion_tokens": 300}, 100),
    ({"max_tokens": None}, 2048),
])
def test_a_request_reaches_the_server_with_max_tokens(body, sent):
    assert bounded_request(body, 2048)["max_tokens"] == sent


def through(path: str, raw: bytes, *, split: bool = False) -> tuple[bytes, dict[bytes, bytes]]:
    """What an app behind BoundReplies receives for a POST of ``raw`` to ``path`` (in two parts if ``split``)."""
    seen: dict = {}

    async def app(scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen["body"], seen["headers"] = body, dict(scope["headers"])

    parts = [raw[:5], raw[5:]] if split else [raw]
    queue = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]

    async def receive():
        return queue.pop(0)

    scope = {"type": "http", "method": "POST", "path": path,
             "headers": [(b"content-length", str(len(raw)).encode()), (b"content-type", b"application/json")]}
    asyncio.run(BoundReplies(app, 512)(scope, receive, lambda message: asyncio.sleep(0)))
    return seen["body"], seen["headers"]


def test_the_middleware_rewrites_a_chat_request_and_its_length():
    body, headers = through("/v1/chat/completions", json.dumps({"model": "local", "messages": []}).encode(),
                            split=True)
    assert json.loads(body)["max_tokens"] == 512
    assert headers[b"content-length"] == str(len(body)).encode()


def test_other_requests_and_non_json_pass_untouched():
    raw = json.dumps({"input": "x"}).encode()
    assert through("/v1/embeddings", raw)[0] == raw
    assert through("/v1/completions", b"not json")[0] == b"not json"
