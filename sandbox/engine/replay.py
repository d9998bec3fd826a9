"""A log of host-function answers, so a REPL can be rebuilt by re-running its code.

After a resume (new process, or an interrupt), the engine re-runs the cells it
ran before. Each host-function call made while replaying is answered from this
log when it matches the next recorded call (same function, same arguments), so no
sub-LM call is repeated. At the first mismatch the log switches to live calls.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

from sandbox.boundary.redact import describe_error
from sandbox.engine.budget import BudgetExceeded

_ERROR_TYPES = {e.__name__: e for e in (TypeError, ValueError, KeyError, RuntimeError, TimeoutError,
                                        LookupError, ConnectionError)}


def call_key(name: str, args: tuple, kwargs: dict[str, Any]) -> str:
    data = json.dumps([name, list(args), kwargs], sort_keys=True, default=repr)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:32]


class CallLog:
    """Records ``{"key", "value"}`` (or ``"error"``) per host-function call; replays them in order."""

    def __init__(self, entries: list[dict[str, Any]] | None = None):
        self.entries: list[dict[str, Any]] = [dict(e) for e in entries or []]
        self._cursor = 0
        self._lock = threading.Lock()
        self.replayed = 0

    @property
    def replaying(self) -> bool:
        return self._cursor < len(self.entries)

    def wrap(self, tools: Mapping[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
        """The same tools, answering from the log while it matches and recording otherwise."""
        return {name: self._wrapped(name, fn) for name, fn in tools.items()}

    def _wrapped(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            key = call_key(name, args, kwargs)
            with self._lock:
                if self._cursor < len(self.entries):
                    entry = self.entries[self._cursor]
                    if entry["key"] == key:
                        self._cursor += 1
                        self.replayed += 1
                        if "error" in entry:
                            raise _ERROR_TYPES.get(entry["error"][0], RuntimeError)(entry["error"][1])
                        return entry["value"]
                    del self.entries[self._cursor:]  # the code diverged: the rest of the log is stale
            try:
                value = fn(*args, **kwargs)
            except BudgetExceeded:
                raise  # a stop, not an answer: replaying must not reproduce it
            except Exception as exc:
                self._append({"key": key, "error": list(describe_error(exc))})
                raise
            self._append({"key": key, "value": value})
            return value

        call.__name__ = name
        return call

    def _append(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.entries.append(entry)
            self._cursor = len(self.entries)
