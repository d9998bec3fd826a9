"""Scripted DSPy LMs for unit tests and offline benchmarks, built on DSPy's engine API
(``dspy.LM(engine=...)``): no network, no latency, replies chosen by a Python function.

Scripted LMs are for unit tests only; recipes and end-to-end tests use a real model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import dspy
from dspy.lm15 import Message, Response, TextPart, Usage

Messages = list[tuple[str, str]]

__all__ = ["FunctionEngine", "Messages", "fields", "function_lm", "script_lm", "stepwise_rlm_lm", "stepwise_rlm_reply",
           "text_lm"]


class FunctionEngine:
    """Answers each request with ``reply(messages)``; messages are (role, text) pairs."""

    def __init__(self, reply: Callable[[Messages], str]):
        self.reply = reply
        self.prompts: list[str] = []

    def complete(self, request) -> Response:
        system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system or [])
        messages = ([("system", system)] if system else []) + [(m.role, m.text or "") for m in request.messages]
        self.prompts.append(messages[-1][1])
        text = self.reply(messages)
        return Response(id=None, model="scripted", message=Message.assistant([TextPart(text)]), finish_reason="stop",
                        usage=Usage(input_tokens=sum(len(t) for _, t in messages) // 4, output_tokens=len(text) // 4,
                                    total_tokens=0))


class AsyncFunctionEngine:
    """The async half of :class:`FunctionEngine` (the same replies)."""

    def __init__(self, sync: FunctionEngine):
        self.sync = sync

    async def complete(self, request) -> Response:
        return self.sync.complete(request)


def function_lm(reply: Callable[[Messages], str], model: str = "scripted/lm") -> dspy.LM:
    """A ``dspy.LM`` whose replies come from ``reply``; ``lm.scripted.prompts`` records what it saw."""
    engine = FunctionEngine(reply)
    lm = dspy.LM(model, engine=engine, async_engine=AsyncFunctionEngine(engine), cache=False)
    lm.scripted = engine
    return lm


def fields(**values: str) -> str:
    """A reply in DSPy's chat-adapter format."""
    return "\n\n".join(f"[[ ## {k} ## ]]\n{v}" for k, v in values.items()) + "\n\n[[ ## completed ## ]]"


def text_lm(reply: Callable[[str], str], model: str = "scripted/sub") -> dspy.LM:
    """A sub-LM answering the last message with ``reply(text)``, as plain text."""
    return function_lm(lambda messages: reply(messages[-1][1]), model=model)


def script_lm(*replies: dict[str, str]) -> dspy.LM:
    """A root LM that returns the given field dicts in order, then repeats the last one."""
    queue = list(replies)

    def reply(messages):
        return fields(**(queue.pop(0) if len(queue) > 1 else queue[0]))

    return function_lm(reply, model="scripted/root")


def stepwise_rlm_reply(cells: Sequence[str], extract: dict[str, str] | None = None) -> Callable[[Messages], str]:
    """Replies for rlm_dspy.RLM's root: ``cells[k]`` at step k+1 of each run (read from the REPL
    history in the prompt, so concurrent runs each get their own steps), and ``extract`` for the
    extract step."""

    def reply(messages: Messages) -> str:
        if "extract the final outputs" in messages[0][1]:
            return fields(**(extract or {}))
        step = messages[-1][1].count("=== Step ")
        return fields(reasoning=f"step {step + 1}", code=f"```python\n{cells[min(step, len(cells) - 1)]}\n```")

    return reply


def stepwise_rlm_lm(cells: Sequence[str], extract: dict[str, str] | None = None) -> dspy.LM:
    """A root LM replying with :func:`stepwise_rlm_reply`."""
    return function_lm(stepwise_rlm_reply(cells, extract), model="scripted/root")
