"""Scripted DSPy LMs for unit tests, built on DSPy's engine API (``dspy.LM(engine=...)``)."""

from __future__ import annotations

import re
from collections.abc import Callable

import dspy
from dspy.lm15 import Message, Response, TextPart, Usage

FIELD = re.compile(r"\[\[ ## (\w+) ## \]\]")


class FunctionEngine:
    """Answers each request with ``reply(messages)``, where messages are (role, text) pairs."""

    def __init__(self, reply: Callable[[list[tuple[str, str]]], str]):
        self.reply = reply
        self.prompts: list[str] = []

    def complete(self, request) -> Response:
        messages = [("system", request.system if isinstance(request.system, str)
                     else "".join(p.text for p in request.system or []))] if request.system else []
        messages += [(m.role, m.text or "") for m in request.messages]
        self.prompts.append(messages[-1][1])
        text = self.reply(messages)
        return Response(id=None, model="scripted", message=Message.assistant([TextPart(text)]), finish_reason="stop",
                        usage=Usage(input_tokens=sum(len(t) for _, t in messages) // 4, output_tokens=len(text) // 4,
                                    total_tokens=0))


class AsyncFunctionEngine:
    def __init__(self, sync: FunctionEngine):
        self.sync = sync

    async def complete(self, request) -> Response:
        return self.sync.complete(request)


def function_lm(reply: Callable[[list[tuple[str, str]]], str], model: str = "scripted/lm") -> dspy.LM:
    engine = FunctionEngine(reply)
    lm = dspy.LM(model, engine=engine, async_engine=AsyncFunctionEngine(engine), cache=False)
    lm.scripted = engine  # the prompts it saw, for assertions
    return lm


def text_lm(reply: Callable[[str], str]) -> dspy.LM:
    """A sub-LM that answers the last user message with ``reply(text)``, as plain text."""
    return function_lm(lambda messages: reply(messages[-1][1]), model="scripted/sub")


def fields(**values: str) -> str:
    """A reply in DSPy's chat-adapter format."""
    return "\n\n".join(f"[[ ## {k} ## ]]\n{v}" for k, v in values.items()) + "\n\n[[ ## completed ## ]]"


def script_lm(*replies: dict[str, str]) -> dspy.LM:
    """A root LM that returns the given field dicts in order, then repeats the last one."""
    queue = list(replies)

    def reply(messages):
        return fields(**(queue.pop(0) if len(queue) > 1 else queue[0]))

    return function_lm(reply, model="scripted/root")
