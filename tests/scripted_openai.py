"""An OpenAI-compatible server on 127.0.0.1 that answers from a script, with a fixed latency,
for tests and benchmarks that run RLMs in several processes against one "model".

Root calls (a chat with a system prompt) get ``root_replies[n]``, ``n`` the number of
assistant turns in the chat so far (the last reply repeats); sub-calls get
``"sub: " + prompt``. Every request is kept in ``requests``. ``stall_when(body)`` makes
the server hold a request until :meth:`release` (for killing a client mid-call).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from tests.openai_stub import OpenAIStub


def is_root(body: dict[str, Any]) -> bool:
    return any(m["role"] == "system" for m in body["messages"])


def root_turn(body: dict[str, Any]) -> int:
    """Which root iteration a request is (0 for the first): the assistant turns before it."""
    return sum(m["role"] == "assistant" for m in body["messages"])


class ScriptedOpenAI(OpenAIStub):
    def __init__(self, root_replies: list[str], *, latency: float = 0.0,
                 stall_when: Callable[[dict[str, Any]], bool] | None = None):
        super().__init__()
        self.root_replies = root_replies
        self.latency = latency
        self.stall_when = stall_when
        self._released = threading.Event()

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        if self.stall_when is not None and self.stall_when(body):
            self._released.wait(timeout=60)
        if self.latency:
            time.sleep(self.latency)
        payload = OpenAIStub.completion(body)
        if is_root(body):
            text = self.root_replies[min(root_turn(body), len(self.root_replies) - 1)]
        else:
            text = "sub: " + body["messages"][-1]["content"]
        payload["choices"][0]["message"]["content"] = text
        return payload

    def release(self) -> None:
        """Let stalled requests go on (and every later one that would stall)."""
        self._released.set()

    def __exit__(self, *exc: Any) -> None:
        self.release()
        super().__exit__(*exc)

    def prompts(self) -> list[str]:
        """The last message of each request, in arrival order."""
        return [r["body"]["messages"][-1]["content"] for r in self.requests]


def fallback_router(api_base: str):
    """A ``litellm.Router`` whose group ``primary`` is down (nothing listens) and falls back to
    ``backup``: model ``openai/b`` at ``api_base``."""
    import litellm

    return litellm.Router(model_list=[
        {"model_name": "primary", "litellm_params": {"model": "openai/a", "api_key": "k",
                                                     "api_base": "http://127.0.0.1:9/v1"}},  # nothing listens
        {"model_name": "backup", "litellm_params": {"model": "openai/b", "api_key": "k", "api_base": api_base}}],
        fallbacks=[{"primary": ["backup"]}], num_retries=0)
