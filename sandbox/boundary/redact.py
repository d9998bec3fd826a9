"""Scrub secrets from text that crosses into the sandbox or into a trajectory.

Provider errors (openai/httpx) carry API keys in their messages and headers. Only
a type name and a message ever cross; this removes credential-looking values
from that message too, and caps its length.
"""

from __future__ import annotations

import os
import re

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)
_SECRET_SHAPES = (
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"),
    re.compile(r"(?i)\b(api[_-]?key|token|secret|password)(['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]{6,}"),
)
MAX_MESSAGE = 1000


def redact(text: str, *, limit: int = MAX_MESSAGE) -> str:
    """``text`` with secret env values and key-shaped tokens replaced, cut to ``limit`` chars."""
    for name, value in os.environ.items():
        if len(value) >= 8 and _SECRET_NAME.search(name) and value in text:
            text = text.replace(value, "[redacted]")
    text = _SECRET_SHAPES[0].sub(lambda m: f"{m.group(1)} [redacted]", text)
    text = _SECRET_SHAPES[1].sub("sk-[redacted]", text)
    text = _SECRET_SHAPES[2].sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)
    return text if len(text) <= limit else text[:limit] + "... [cut]"


def describe_error(exc: BaseException) -> tuple[str, str]:
    """(type name, redacted message) of an exception: all of it that may leave the host."""
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not break error reporting
        message = ""
    return type(exc).__name__, redact(message)
