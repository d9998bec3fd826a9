"""One RLM run at one depth: its REPL, host functions, and the record of what ran.

Both adapters open a :class:`Session` per run (or per multi-turn session, see
:mod:`sandbox.engine.turns`: :meth:`Session.begin_turn` points it at each question's trajectory); it loads the context, wires
``llm_query``/``llm_query_batched``/``rlm_query``/``search`` and the user's tools into the
sandbox (through a :class:`~sandbox.engine.replay.CallLog` when the run may be
replayed), and records every cell in the trajectory.

What the trajectory keeps of a cell is a preview, with the full lengths recorded;
the sandbox itself bounds a cell's output, error and ``FINAL`` value.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sandbox.boundary.repl import (
    DEFAULT_MAX_FINAL_CHARS,
    DEFAULT_MAX_OUTPUT_CHARS,
    DEFAULT_MEMORY_LIMIT_MB,
    DEFAULT_TIMEOUT,
    DEFAULT_TOOL_TIMEOUT,
    RESERVED_NAMES,
    CellResult,
    Sandbox,
    check_tools,
)
from sandbox.engine import tracing
from sandbox.engine.bridge import ChildRunner, HostFunctions
from sandbox.engine.budget import Budget
from sandbox.engine.context import check_context
from sandbox.engine.replay import CallLog
from sandbox.engine.trajectory import Trajectory, preview
from sandbox.lm.aio import AsyncRunner
from sandbox.lm.clients import LMClient

HOST_FUNCTIONS = ("llm_query", "llm_query_batched", "rlm_query")
# Host functions that give way to a user tool or an input variable of the same name (a user's own `search` stays).
OPTIONAL_HOST_FUNCTIONS = ("search", "llm_map")
# Every name an RLM's REPL defines itself: no tool or input variable may take one.
REPL_NAMES = frozenset({*HOST_FUNCTIONS, *RESERVED_NAMES})


@dataclass(frozen=True)
class SandboxOptions:
    """Per-cell limits of the REPL and the sub-call settings of the host functions.

    Its defaults are the sandbox's (``sandbox.boundary.repl.DEFAULT_*``), and every entry point starts from
    them: :class:`~sandbox.boundary.repl.Sandbox`, ``create_rlm_graph``, ``rlm_dspy.RLM`` (whose
    ``max_output_chars`` argument, dspy.RLM's, has the same default), ``rlm_dspy.RestrictedPythonInterpreter``
    and the ``rlm`` command.

    Attributes:
        timeout: seconds of a cell's own time (the clock pauses while a tool runs).
        memory_limit_mb: the worker's address-space cap.
        max_output_chars: a cell's printed output (and error) as the root LM sees it.
        tool_timeout: seconds one tool call may take.
        max_concurrency: sub-calls one ``llm_query_batched`` runs at once.
        sub_max_tokens: the completion cap of one sub-call.
        confinement: ``"os"`` (seccomp, Landlock, own uid) or ``"none"`` (the policy alone).
        max_prompt_chars: one sub-call prompt's cap (``None``: the sub-model's input window when
            litellm's local model map knows it, else ``sandbox.engine.bridge.DEFAULT_MAX_PROMPT_CHARS``, 400,000).
        max_final_chars: a ``FINAL``/``SUBMIT`` value's cap (its strings, plus one per item).
    """

    timeout: float = DEFAULT_TIMEOUT
    memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS
    tool_timeout: float = DEFAULT_TOOL_TIMEOUT
    max_concurrency: int = 8
    sub_max_tokens: int = 1024
    confinement: str = "os"
    max_prompt_chars: int | None = None
    max_final_chars: int = DEFAULT_MAX_FINAL_CHARS


class REPL(Protocol):
    """What a :class:`Session` runs cells on: a :class:`~sandbox.boundary.repl.Sandbox`, or an adapter
    over another interpreter (``rlm_dspy`` wraps DSPy's ``CodeInterpreter`` this way)."""

    def set_variable(self, name: str, value: Any) -> None: ...

    def variables(self) -> list[str]: ...

    def execute(self, code: str) -> CellResult: ...

    def close(self) -> None: ...


# (tools, submit_fields) -> the REPL a Session runs on, with those tools callable from its code.
REPLFactory = Callable[[dict[str, Callable[..., Any]], list[str] | None], REPL]


def check_user_tools(tools: Mapping[str, Callable[..., Any]] | None) -> dict[str, Callable[..., Any]]:
    """User tools for an RLM: not named after a REPL function or the ``context`` variable."""
    return check_tools(tools, reserved=REPL_NAMES | {"context"})


class Session:
    """A live REPL with ``variables`` loaded (``context`` must be text) and the host functions wired in.
    Close it when done.

    ``search`` ranks passages of the Session's own copy of the variable ``search_over`` (default
    ``context``; it must be a str or a list of str), on the host: the text never comes back from
    the REPL. Its index is built on the first search, once per Session.

    The REPL is a :class:`~sandbox.boundary.repl.Sandbox` built from ``options`` unless ``repl_factory``
    is given; it is then called with the tools (host functions and the user's) and the
    ``SUBMIT`` fields, and must return a :class:`REPL`. A Sandbox cuts a running cell at the
    budget's deadline; another REPL is bounded only where it supports that itself.
    """

    def __init__(self, *, variables: Mapping[str, Any], sub_lm: LMClient, budget: Budget, trajectory: Trajectory,
                 runner: AsyncRunner, depth: int = 0, tools: Mapping[str, Callable[..., Any]] | None = None,
                 run_child: ChildRunner | None = None, call_log: CallLog | None = None,
                 options: SandboxOptions = SandboxOptions(), submit_fields: list[str] | None = None,
                 max_sub_calls: int | None = None, repl_factory: REPLFactory | None = None,
                 search_over: str = "context"):
        self.budget = budget
        self.trajectory = trajectory
        self.depth = depth
        self.options = options
        context = check_context(variables["context"]) if "context" in variables else None
        self.context = context  # the host's own copy, for checks on answers (it never comes back from the REPL)
        searched = context if search_over == "context" else variables.get(search_over)
        self.host = HostFunctions(lm=sub_lm, budget=budget, trajectory=trajectory, runner=runner, depth=depth,
                                  max_concurrency=options.max_concurrency, max_tokens=options.sub_max_tokens,
                                  run_child=run_child, max_calls=max_sub_calls,
                                  max_prompt_chars=options.max_prompt_chars,
                                  context=check_context(searched) if searched is not None else None)
        user_tools = check_user_tools(tools)
        host_tools = {name: fn for name, fn in self.host.tools().items()
                      if name not in OPTIONAL_HOST_FUNCTIONS or not (name in user_tools or name in variables)}
        all_tools = {**host_tools, **user_tools}
        self.call_log = call_log
        if call_log is not None:
            all_tools = _logged(all_tools, call_log, self.host, frozenset(host_tools))
        if repl_factory is not None:
            self.repl: REPL = repl_factory(all_tools, submit_fields)
        else:
            self.repl = Sandbox(tools=all_tools, budget=budget, timeout=options.timeout,
                                memory_limit_mb=options.memory_limit_mb, max_output_chars=options.max_output_chars,
                                tool_timeout=options.tool_timeout, confinement=options.confinement,
                                submit_fields=submit_fields, max_final_chars=options.max_final_chars)
        # Inputs a cell cannot replace (the Sandbox puts them back); another REPL gets them as it can.
        self._bind = self.repl.set_variable if repl_factory is not None else functools.partial(
            self.repl.set_variable, restore=True)
        try:
            self.load({name: context if name == "context" else value for name, value in variables.items()})
        except BaseException:
            self.repl.close()
            raise

    def load(self, variables: Mapping[str, Any]) -> None:
        """Bind ``variables`` in the REPL as inputs (a cell that replaces one gets it back).

        Args:
            variables: name to value; names must not be REPL functions.

        Raises:
            SandboxError: the sandbox is closed, or a value cannot be sent to it.
        """
        for name, value in variables.items():
            self._bind(name, value)

    def begin_turn(self, trajectory: Trajectory) -> None:
        """Record from now on into ``trajectory``: the next question of a multi-turn session.

        Args:
            trajectory: the new turn's trajectory (the host functions record into it too).
        """
        self.trajectory = trajectory
        self.host.trajectory = trajectory

    def run_cell(self, code: str, *, iteration: int) -> CellResult:
        """Execute one cell and record it in the trajectory (as previews, with the full lengths).

        Args:
            code: the cell's source.
            iteration: the root-loop iteration it belongs to, for the record.

        Returns:
            What the cell did.

        Raises:
            SandboxError: the sandbox is closed.
        """
        with tracing.cell_span(self.trajectory):
            result = self.repl.execute(code)
            self._record_cell(code, iteration, result)
        return result

    def _record_cell(self, code: str, iteration: int, result: CellResult) -> None:
        output, error = result.output, result.error or ""
        self.trajectory.record("cell", iteration=iteration, code=preview(code), code_chars=len(code),
                               output=preview(output), output_chars=len(output),
                               error=preview(error) if result.error is not None else None, error_chars=len(error),
                               limit=result.limit, has_final=result.has_final, seconds=round(result.seconds, 4),
                               restarted=result.restarted)

    def replay(self, cells: list[str]) -> None:
        """Re-run ``cells`` to rebuild the namespace; host calls are answered from the call log."""
        with tracing.replay_span(self.trajectory, len(cells)):
            for code in cells:
                self.repl.execute(code)

    def close(self) -> None:
        self.repl.close()


def _logged(tools: dict[str, Callable[..., Any]], call_log: CallLog, host: HostFunctions,
            host_names: frozenset[str]) -> dict[str, Callable[..., Any]]:
    """``tools`` recording into ``call_log``, except calls of the host functions in ``host_names``
    answered from their arguments (see :meth:`HostFunctions.answered_from_arguments`).

    Such a refusal (wrong types, an over-long prompt), or a ``search`` answer, is the same on replay,
    so it needs no entry; without this, a cell looping on refused calls or on searches would grow
    the checkpointed log by one entry each, and the log would hold passages of the context.
    """
    logged = call_log.wrap(tools)

    def refusing_first(name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            fn = tools[name] if host.answered_from_arguments(name, list(args), kwargs) else logged[name]
            return fn(*args, **kwargs)

        call.__name__ = name
        return call

    return {name: refusing_first(name) if name in host_names else fn for name, fn in logged.items()}


def format_cell(result: CellResult) -> str:
    """What the root LM is shown of one cell (the sandbox has capped its output and error)."""
    parts = [result.output.rstrip("\n")] if result.output else []
    if result.error:
        parts.append(result.error)
    if result.has_final:
        parts.append("FINAL was called.")
    return "\n".join(parts) if parts else "(no output)"
