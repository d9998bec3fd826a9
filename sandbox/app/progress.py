"""A live progress display fed by trajectory events (both engines emit the same ones).

It prints one line per root iteration saying what happened (the model's reply, the code it
ran and how that went, notes, budget stops, evaluations) and, on a terminal, keeps a status
line (iteration, sub-calls, tokens, elapsed) that a background thread redraws twice a second,
so the clock moves while the model thinks. It also keeps what it saw, so an interrupted run
can still report its best partial answer and write its trace.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

CODE_LINES = 4  # lines of a cell's code shown before its result
LINE_CHARS = 100  # the most characters of any one shown line
TICK_SECONDS = 0.5
CLEAR_LINE = "\r\x1b[K"


def clip(text: str, limit: int = LINE_CHARS) -> str:
    """The first line of ``text``, cut to ``limit`` characters (with ``...`` when cut)."""
    lines = text.strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= limit and len(lines) <= 1 else line[:limit].rstrip() + " ..."


class ProgressDisplay:
    """Call it with each event: a trajectory event, as ``RLM(on_event=...)`` and the graph's custom stream give it.

    Use it as a context manager around the run: on a terminal it starts the clock's ticker and
    clears the status line at the end. Events are kept in ``events`` as they came. Thread-safe:
    the DSPy engine reports sub-calls from the sandbox's tool threads.

    Args:
        out: where to write (default ``sys.stdout``).
        quiet: show nothing, only keep the record (``events``, counts, :meth:`partial_answer`).
        show_answer: end with a line giving the answer and the final counts (off where the caller
            reports the answer itself, as the ``rlm`` command does).
        tick_seconds: how often the ticker redraws the status line on a terminal.
    """

    def __init__(self, out: TextIO | None = None, *, quiet: bool = False, show_answer: bool = True,
                 tick_seconds: float = TICK_SECONDS):
        self.out = None if quiet else out or sys.stdout
        self.show_answer = show_answer
        self.live = bool(out is not None and getattr(out, "isatty", lambda: False)())
        self.tick_seconds = tick_seconds
        self.started = time.monotonic()
        self.iteration = self.sub_calls = self.llm_calls = 0
        self.prompt_tokens = self.completion_tokens = 0
        self.events: list[dict[str, Any]] = []
        self.final_answer: Any = None
        self.last_output: str | None = None
        self._reply: str | None = None  # what the current root iteration's model call replied
        self._ran = False  # whether the current root iteration ran code
        self._lock = threading.RLock()
        self._stopped = threading.Event()
        self._ticker: threading.Thread | None = None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __enter__(self) -> ProgressDisplay:
        self.started = time.monotonic()
        if self.live:
            self._ticker = threading.Thread(target=self._tick, name="rlm-progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stopped.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            self._close_iteration()
            if self.live:
                self.out.write(CLEAR_LINE)
                self.out.flush()

    def _tick(self) -> None:
        while not self._stopped.wait(self.tick_seconds):
            with self._lock:
                self._draw()

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("kind", "")
        with self._lock:
            self.events.append(event)
            self._count(kind, event)
            if event.get("depth", 0) == 0:
                self._describe(kind, event)
            self._draw()

    def _count(self, kind: str, event: dict[str, Any]) -> None:
        if kind in ("sub_call", "lm_call"):
            self.sub_calls += kind == "sub_call"
            self.llm_calls += event.get("error") is None
            self.prompt_tokens += event.get("prompt_tokens") or 0
            self.completion_tokens += event.get("completion_tokens") or 0

    def _describe(self, kind: str, event: dict[str, Any]) -> None:
        """The lines a root-level event adds."""
        if kind == "iteration":
            self._close_iteration()
            self.iteration = event["iteration"]
        elif kind == "lm_call" and event.get("step") != "extract":
            self._reply = event.get("reply") or ""
            tokens = (event.get("prompt_tokens") or 0) + (event.get("completion_tokens") or 0)
            self._line(f"iteration {self.iteration}: the model replied in {event.get('seconds', 0):.1f} s"
                       + (f" ({tokens:,} tokens)" if tokens else ""))
        elif kind == "lm_call":
            self._close_iteration()
            self._line(f"extract: the model answered from what the run printed: {clip(event.get('reply') or '')}")
        elif kind == "cell":
            self._ran = True
            self._cell(event)
        elif kind in ("note", "budget"):
            self._line(f"  {'stopped' if kind == 'budget' else 'note'}: {clip(event.get('message') or '')}")
        elif kind == "evaluation":
            self._line(f"  evaluation: score {event.get('score', 0):.2f}, {event.get('decision')}"
                       + (f": {clip(event['feedback'])}" if event.get("feedback") else ""))
        elif kind == "final":
            self._close_iteration()
            self.final_answer = event.get("answer")
            if self.show_answer:
                self._line(f"answer: {self.final_answer}  (stop: {event.get('stop_reason')}) {self._status()}")

    def _cell(self, event: dict[str, Any]) -> None:
        code = (event.get("code") or "").rstrip().splitlines()
        for line in code[:CODE_LINES]:
            self._line(f"  | {line[:LINE_CHARS]}")
        if len(code) > CODE_LINES:
            self._line(f"  | ... ({len(code) - CODE_LINES} more lines)")
        output = event.get("output") or ""
        if event.get("error"):
            status = f"error: {clip(event['error'].strip().splitlines()[-1])}"
        elif event.get("has_final"):
            status = "FINAL called"
        else:
            status = f"ok, printed: {clip(output)}" if output.strip() else "ok, printed nothing"
            if output.strip():
                self.last_output = output.strip()
        self._line(f"  -> {status} ({event.get('seconds', 0):.2f} s)")

    def _close_iteration(self) -> None:
        """Say so when the iteration that just ended ran no code."""
        if self._reply is not None and not self._ran:
            self._line(f"  no code ran; the reply began: {clip(self._reply)}")
        self._reply, self._ran = None, False

    def _line(self, text: str) -> None:
        if self.out is not None:
            self.out.write((CLEAR_LINE if self.live else "") + text + "\n")

    def _draw(self) -> None:
        if self.out is None:
            return
        if self.live:
            self.out.write(CLEAR_LINE + self._status())
        self.out.flush()

    def _status(self) -> str:
        return (f"[iteration {self.iteration} | sub-calls {self.sub_calls} | tokens {self.tokens:,} | "
                f"{time.monotonic() - self.started:5.1f}s]")

    def partial_answer(self) -> str | None:
        """The best answer known so far: the final answer if one came, else the last thing a root
        cell printed; ``None`` when there is neither."""
        with self._lock:
            if self.final_answer is not None:
                return str(self.final_answer)
            return self.last_output

    def usage(self) -> dict[str, Any]:
        """What the events showed being spent (the ledger's own figures are not reachable from here)."""
        with self._lock:
            return {"llm_calls": self.llm_calls, "sub_calls": self.sub_calls, "prompt_tokens": self.prompt_tokens,
                    "completion_tokens": self.completion_tokens, "tokens": self.tokens,
                    "seconds": round(time.monotonic() - self.started, 3)}

    def event_tree(self, query: str = "") -> dict[str, Any]:
        """The events seen, in the shape of a run's ``events`` (``{query, depth, events, children}``,
        as :meth:`sandbox.engine.trajectory.Trajectory.to_dict` gives it), flat: children's events are
        among the root's, told apart by ``depth``.

        Args:
            query: the run's query, for the tree's root.

        Returns:
            The event tree.
        """
        with self._lock:
            return {"query": query, "depth": 0, "events": [dict(e) for e in self.events], "children": []}
