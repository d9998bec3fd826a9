"""The RLM context: what may be loaded as ``context`` and how the root LM is told about it."""

from __future__ import annotations

from typing import Any

Context = str | list[str]


def check_context(value: Any) -> Context:
    """``value`` if it is a str or a list of str; otherwise a TypeError that says what to do."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError("context must be text, got bytes: decode it first, e.g. context.decode('utf-8')")
    if isinstance(value, dict):
        raise TypeError("context must be a str or a list of str, got a dict: serialize it first, "
                        "e.g. json.dumps(context), or pass list(context.values())")
    if isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise TypeError(f"context must be a str or a list of str; context[{i}] is a {type(item).__name__}")
        return value
    raise TypeError(f"context must be a str or a list of str, got {type(value).__name__}")


def describe_context(context: Context) -> str:
    """A short description for the root prompt: the LM sees this, never the context itself."""
    if isinstance(context, str):
        lines = context.count("\n") + 1 if context else 0
        return f"`context` is a str of {len(context):,} characters ({lines:,} lines)."
    sizes = [len(c) for c in context]
    total = sum(sizes)
    return (f"`context` is a list of {len(context):,} str documents, {total:,} characters in total "
            f"(shortest {min(sizes, default=0):,}, longest {max(sizes, default=0):,}).")
