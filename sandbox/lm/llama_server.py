"""The embedded model's HTTP server: llama.cpp's OpenAI-compatible server with every reply bounded.

``llama_cpp.server`` reads only ``max_tokens``. A client that sends OpenAI's newer
``max_completion_tokens`` instead (DSPy's default engine does), or no bound at all, gets a
reply that runs until the model's window is full: minutes on a CPU, for one call. This
wrapper takes ``max_completion_tokens`` as ``max_tokens`` and bounds a request that has
neither at ``--default_max_tokens``.

Run as ``python -m sandbox.lm.llama_server --default_max_tokens N <llama_cpp.server's arguments>``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

GENERATING_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
DEFAULT_MAX_TOKENS = 2048

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


def bounded_request(body: dict[str, Any], default_max_tokens: int) -> dict[str, Any]:
    """``body`` with ``max_tokens`` set: from ``max_completion_tokens``, else ``default_max_tokens``."""
    if body.get("max_tokens") is None:
        body = {**body, "max_tokens": body.get("max_completion_tokens") or default_max_tokens}
    return body


class BoundReplies:
    """ASGI middleware: generating requests reach the app with ``max_tokens`` set."""

    def __init__(self, app: ASGIApp, default_max_tokens: int):
        self.app = app
        self.default_max_tokens = default_max_tokens

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in GENERATING_PATHS:
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None  # not JSON: the app answers it with its own error
        if isinstance(body, dict):
            raw = json.dumps(bounded_request(body, self.default_max_tokens)).encode()
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
        scope = {**scope, "headers": [*headers, (b"content-length", str(len(raw)).encode())]}
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()  # after the body: a disconnect, when it comes
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}

        await self.app(scope, replay, send)


def main(argv: list[str] | None = None) -> None:
    """Serve as ``python -m llama_cpp.server`` does, with :class:`BoundReplies` in front."""
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.cli import add_args_from_model, parse_model_from_args
    from llama_cpp.server.settings import ModelSettings, ServerSettings, Settings

    parser = argparse.ArgumentParser(prog="python -m sandbox.lm.llama_server", description=__doc__.splitlines()[0])
    parser.add_argument("--default_max_tokens", type=int, default=DEFAULT_MAX_TOKENS,
                        help=f"the reply bound of a request that sets none (default: {DEFAULT_MAX_TOKENS})")
    add_args_from_model(parser, Settings)
    args = parser.parse_args(argv)
    server_settings = parse_model_from_args(ServerSettings, args)
    app = create_app(server_settings=server_settings, model_settings=[parse_model_from_args(ModelSettings, args)])
    uvicorn.run(BoundReplies(app, args.default_max_tokens), host=server_settings.host, port=server_settings.port)


if __name__ == "__main__":
    sys.exit(main())
