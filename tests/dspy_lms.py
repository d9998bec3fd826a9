"""Scripted DSPy LMs for unit tests (the engine-based helpers live in cookbook.demo_dspy)."""

from __future__ import annotations

import dspy

from cookbook.demo_dspy import fields, function_lm, text_lm

__all__ = ["fields", "function_lm", "script_lm", "text_lm"]


def script_lm(*replies: dict[str, str]) -> dspy.LM:
    """A root LM that returns the given field dicts in order, then repeats the last one."""
    queue = list(replies)

    def reply(messages):
        return fields(**(queue.pop(0) if len(queue) > 1 else queue[0]))

    return function_lm(reply, model="scripted/root")
