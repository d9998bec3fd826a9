"""OpenTelemetry spans of an RLM run's whole call tree, through ``opentelemetry-api`` only.

When the application has configured a tracer provider (or passes ``tracer_provider=`` to an
adapter), every run emits one span tree::

    rlm.run
      rlm.iteration                    one per root-loop iteration
        rlm.lm_call                    the root LM's call (GenAI attributes)
        rlm.cell                       one per cell; its host calls are its children
          rlm.llm_query                one per sub-call, also each of a parallel fan-out
          rlm.search
          rlm.rlm_query                a child RLM: its own rlm.run is the child of this span
        rlm.evaluation                 a grounding or evaluator checkpoint
      rlm.replay                       cells re-run after a resume (their host calls are children)

Spans are derived from the trajectory (both engines record every step there, with its duration)
by an observer that :func:`start_run` attaches to one :class:`~sandbox.engine.trajectory.Trajectory`.
The containers (run, iteration, cell, ``rlm_query``) are live spans: the hooks :func:`cell_span`
and :func:`rlm_query_span` make theirs current while a cell or a child runs, so the host calls the
worker requests (the sandbox runs them on its tool threads in a copy of the caller's context) and
the tasks of a fan-out (the async runner copies the context too) find their parent in the
OpenTelemetry context. A leaf (an LM call, a search, a checkpoint) is one span back-dated by the
event's ``seconds``. Budget stops and refused limits are span events naming the limit.

Without a tracer provider the first span of a run does not record, nothing is attached, and every
hook is one dictionary lookup.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, Status, StatusCode, Tracer, TracerProvider

from sandbox.engine.trajectory import Trajectory

TRACER_NAME = "rlm-sandbox"
QUERY_ATTRIBUTE_CHARS = 200  # how much of a run's query its span carries

# The live spans of each traced run, and the rlm_query span each child trajectory's run starts under.
_RUNS: weakref.WeakKeyDictionary[Trajectory, RunSpans] = weakref.WeakKeyDictionary()
_PARENTS: weakref.WeakKeyDictionary[Trajectory, tuple[Tracer, Context]] = weakref.WeakKeyDictionary()


def start_run(trajectory: Trajectory, *, engine: str, tracer_provider: TracerProvider | None = None,
              root_model: str | None = None, resumed: bool = False) -> None:
    """Open the ``rlm.run`` span of the run recording into ``trajectory`` and derive its spans from then on.

    A child trajectory (one :func:`rlm_query_span` started) gets its run span under that
    ``rlm_query`` span, on the parent's tracer; a root run's span is a child of the current context.

    Args:
        trajectory: the run's trajectory.
        engine: ``"langgraph"`` or ``"dspy"``, for the ``rlm.engine`` attribute.
        tracer_provider: where the spans go; default: the global provider (a no-op until the
            application sets one).
        root_model: the root LM's model name, for ``gen_ai.request.model`` on its calls.
        resumed: whether this run continues a checkpointed one (its spans start at the resume).
    """
    parent = _PARENTS.pop(trajectory, None)
    if parent is not None:
        tracer, context = parent
    else:
        tracer, context = trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider), None
    span = tracer.start_span("rlm.run", context=context)
    if not span.is_recording():
        return
    span.set_attributes({"rlm.engine": engine, "rlm.depth": trajectory.depth, "rlm.resumed": resumed,
                         "rlm.query": trajectory.query[:QUERY_ATTRIBUTE_CHARS]})
    runs = RunSpans(tracer, span, root_model)
    _RUNS[trajectory] = runs
    trajectory.observe(runs.on_event)


def end_run(trajectory: Trajectory) -> None:
    """End the spans still open of the run recording into ``trajectory`` (nothing when it is not traced)."""
    runs = _RUNS.pop(trajectory, None)
    if runs is not None:
        runs.end()


@contextlib.contextmanager
def cell_span(trajectory: Trajectory) -> Iterator[None]:
    """The ``rlm.cell`` span, current while the cell runs; the ``cell`` event fills its attributes."""
    runs = _RUNS.get(trajectory)
    if runs is None:
        yield
        return
    with runs.container("rlm.cell"):
        yield


@contextlib.contextmanager
def rlm_query_span(trajectory: Trajectory, child: Trajectory | None) -> Iterator[None]:
    """The ``rlm.rlm_query`` span, current while the child RLM (or the plain sub-call past
    ``max_depth``) runs; the run recording into ``child`` starts under it."""
    runs = _RUNS.get(trajectory)
    if runs is None:
        yield
        return
    with runs.container("rlm.rlm_query") as span:
        if child is not None:
            _PARENTS[child] = (runs.tracer, trace.set_span_in_context(span))
        yield


@contextlib.contextmanager
def replay_span(trajectory: Trajectory, cells: int) -> Iterator[None]:
    """The ``rlm.replay`` span over cells re-run after a resume: what they record is marked as replayed."""
    runs = _RUNS.get(trajectory)
    if runs is None or not cells:
        yield
        return
    with runs.container("rlm.replay") as span:
        span.set_attribute("rlm.replay.cells", cells)
        yield


class RunSpans:
    """The live spans of one traced run, and the observer that turns its events into spans."""

    def __init__(self, tracer: Tracer, run: Span, root_model: str | None):
        self.tracer = tracer
        self.run = run
        self.root_model = root_model
        self._iteration: Span | None = None
        self._open: list[Span] = []  # containers opened by the hooks, innermost last
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def container(self, name: str) -> Iterator[Span]:
        """A span under :meth:`parent`, current (and open) for the ``with`` block."""
        span = self.tracer.start_span(name, context=trace.set_span_in_context(self.parent()))
        with self._lock:
            self._open.append(span)
        try:
            with trace.use_span(span, end_on_exit=True, record_exception=False):
                yield span
        finally:
            with self._lock:
                self._open.remove(span)

    def parent(self) -> Span:
        """The span an event belongs under: the current span when it is one of this run's open
        containers, else the innermost open one (a REPL that calls its tools without copying the
        context), else the iteration, else the run."""
        current = trace.get_current_span()
        with self._lock:
            if any(span is current for span in self._open):
                return current
            if self._open:
                return self._open[-1]
        return self._iteration or self.run

    def on_event(self, event: dict[str, Any]) -> None:
        """Turn one trajectory event into spans, attributes or span events.

        Args:
            event: the event as :meth:`Trajectory.record` made it.
        """
        kind = event["kind"]
        if kind == "iteration":
            self._end_iteration()
            self._iteration = self.tracer.start_span("rlm.iteration", context=trace.set_span_in_context(self.run),
                                                     attributes={"rlm.iteration": event["iteration"]})
        elif kind == "lm_call":
            self._leaf("rlm.lm_call", event, {**_lm_attributes(event, self.root_model),
                                              "rlm.step": event.get("step", "iteration")})
        elif kind == "sub_call":
            attributes = _lm_attributes(event, event.get("model"))
            attributes.update({"rlm.prompt_chars": event["prompt_chars"], "rlm.cached": event.get("cached", False)})
            self._leaf("rlm.llm_query", event, attributes, error=event.get("error"))
        elif kind == "search":
            self._leaf("rlm.search", event, {"rlm.search.k": event["k"], "rlm.search.hits": len(event["hits"])})
        elif kind == "evaluation":
            self._leaf("rlm.evaluation", event, {"rlm.checkpoint": event["checkpoint"], "rlm.score": event["score"],
                                                 "rlm.passed": event["passed"], "rlm.decision": event["decision"]})
        elif kind == "cell":
            self._cell(event)
        elif kind == "rlm_query":
            self.parent().set_attributes({"rlm.child_depth": event["child_depth"], "rlm.degraded": event["degraded"]})
        elif kind == "budget":
            self.parent().add_event("rlm.budget_exceeded", {"rlm.limit": event["limit"], "rlm.message": event["message"]})
        elif kind == "note" and "refused" in event:
            self.parent().add_event("rlm.limit_refused", {"rlm.limit": event["refused"]})
        elif kind == "final":
            self.run.set_attribute("rlm.stop_reason", event["stop_reason"])
            self._end_iteration()

    def _cell(self, event: dict[str, Any]) -> None:
        span = self.parent()
        span.set_attributes({"rlm.iteration": event["iteration"], "rlm.code_chars": event["code_chars"],
                             "rlm.output_chars": event["output_chars"], "rlm.has_final": event["has_final"]})
        if event["limit"]:
            span.add_event("rlm.sandbox_limit", {"rlm.limit": event["limit"]})
        if event["error"] is not None:
            span.set_status(Status(StatusCode.ERROR, event["error"][:QUERY_ATTRIBUTE_CHARS]))

    def _leaf(self, name: str, event: dict[str, Any], attributes: dict[str, Any], *, error: str | None = None) -> None:
        end = time.time_ns()
        start = end - int(event.get("seconds", 0.0) * 1e9)
        span = self.tracer.start_span(name, context=trace.set_span_in_context(self.parent()), start_time=start,
                                      attributes={k: v for k, v in attributes.items() if v is not None})
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error[:QUERY_ATTRIBUTE_CHARS]))
        span.end(end_time=end)

    def _end_iteration(self) -> None:
        if self._iteration is not None:
            self._iteration.end()
            self._iteration = None

    def end(self) -> None:
        """End the iteration and the run."""
        self._end_iteration()
        self.run.end()


def _lm_attributes(event: dict[str, Any], model: str | None) -> dict[str, Any]:
    """The OpenTelemetry GenAI attributes of an LM call event (cost: ``rlm.cost_usd``, when known)."""
    return {"gen_ai.operation.name": "chat", "gen_ai.request.model": model or None,
            "gen_ai.usage.input_tokens": event.get("prompt_tokens"),
            "gen_ai.usage.output_tokens": event.get("completion_tokens"), "rlm.cost_usd": event.get("cost_usd")}
