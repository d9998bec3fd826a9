"""A one-line live progress display fed by trajectory events (both engines emit the same ones)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class ProgressDisplay:
    """Call it with each event (a trajectory event dict, or a stream event with ``type`` for ``kind``).

    Keeps one status line (iteration, sub-calls, tokens, elapsed) and prints one line per
    cell; events are kept in ``events``.
    """

    def __init__(self, out: TextIO | None = None):
        self.out = out or sys.stdout
        self.started = time.monotonic()
        self.iteration = self.sub_calls = self.tokens = 0
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        kind = event.get("kind") or event.get("type")
        if kind == "iteration" and event.get("depth", 0) == 0:
            self.iteration = event["iteration"]
        elif kind in ("sub_call", "lm_call"):
            self.sub_calls += kind == "sub_call"
            self.tokens += event.get("prompt_tokens", 0) + event.get("completion_tokens", 0)
        elif kind == "cell":
            status = event["error"].splitlines()[-1] if event.get("error") else "ok"
            self.out.write(f"\n  cell ({event['seconds']:.2f}s): {status}\n")
        elif kind == "final" and event.get("depth", 0) == 0:
            self.out.write(f"\nanswer: {event['answer']}  (stop: {event['stop_reason']})\n")
            return
        self.out.write(f"\r[iteration {self.iteration} | sub-calls {self.sub_calls} | tokens {self.tokens} | "
                       f"{time.monotonic() - self.started:5.1f}s]")
        self.out.flush()
