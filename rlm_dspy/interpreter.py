"""``RestrictedPythonInterpreter``: DSPy's ``CodeInterpreter`` protocol on the sandbox worker.

Use it with DSPy's own module, offline and without Deno::

    dspy.RLM("context, query -> answer", interpreter_factory=RestrictedPythonInterpreter)

Tools may be called positionally or by keyword (DSPy hands them over as
keyword-only ``invoke(**kwargs)`` wrappers; arguments are bound to the tool's
signature here). ``SUBMIT`` maps its arguments onto ``output_fields``.
Variables are sent to the worker only when they change, so a 40 MB context is
loaded once per session, not once per iteration.

It keeps DSPy's ``CodeInterpreter`` contract: errors of the code are
``CodeExecutionError`` (or ``SyntaxError``) and the session goes on, a cell stopped
by its time limit included; a worker that had to be killed (it ignored its time limit,
crashed, or broke the protocol) has lost the session's state, so that cell raises
``CodeInterpreterError`` and the session is over, as it is after ``shutdown()``:
create a new interpreter. ``start``, ``execute``, ``shutdown`` and every tool call
(``invoke_tool``) emit DSPy's callback events (``on_interpreter_*``), so MLflow
tracing and user callbacks see them.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

from dspy.primitives.code_interpreter import CodeExecutionError, CodeInterpreterError, FinalOutput
from dspy.utils.callback import BaseCallback, with_callbacks

from sandbox.boundary.repl import CellResult, Sandbox, SandboxError
from sandbox.engine.prompts import sandbox_rules
from sandbox.engine.session import SandboxOptions
from sandbox.lm.aio import AsyncRunner


# dspy.RLM cuts each cell's output itself (head and tail, at its own ``max_output_chars``: by default
# SandboxOptions.max_output_chars) before its LM sees it. The interpreter hands it ten times that, so
# the tail DSPy shows is the cell's own, not the sandbox's cut.
DSPY_OUTPUT_CHARS = 10 * SandboxOptions.max_output_chars


def _is_dspy_facade_name(name: str) -> bool:
    return name == "dspy" or name.startswith(("_dspy", "__dspy"))


def keyword_call(fn: Callable[..., Any], runner: AsyncRunner) -> Callable[..., Any]:
    """``fn`` callable positionally: arguments are bound to its signature and passed by keyword
    (DSPy's tool wrappers accept keywords only); coroutine results are awaited."""
    try:
        signature: inspect.Signature | None = inspect.signature(fn)
    except (TypeError, ValueError):
        signature = None
    positional = signature is None or any(p.kind in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL)
                                          for p in signature.parameters.values())

    def call(*args: Any, **kwargs: Any) -> Any:
        if positional:
            result = fn(*args, **kwargs)
        else:
            bound = signature.bind(*args, **kwargs)  # TypeError names the bad argument
            keywords = dict(bound.arguments)
            for name, param in signature.parameters.items():
                if param.kind is param.VAR_KEYWORD:
                    keywords.update(keywords.pop(name, {}))
            result = fn(**keywords)
        if inspect.isawaitable(result):
            async def wait() -> Any:
                return await result
            result = runner.run(wait())
        return result

    return call


class RestrictedPythonInterpreter:
    """A ``dspy.CodeInterpreter`` backed by :class:`sandbox.Sandbox` (RestrictedPython in a worker).

    Its limits default to :class:`sandbox.engine.session.SandboxOptions`'s, except ``max_output_chars``
    (:data:`DSPY_OUTPUT_CHARS`): the ``dspy.RLM`` it serves cuts the output for its LM itself.
    """

    execution_instructions = ("Code runs in a restricted Python sandbox (RestrictedPython, separate process, "
                              "time and memory limits). " + sandbox_rules())

    def __init__(self, tools: dict[str, Callable[..., Any]] | None = None,
                 output_fields: list[dict[str, Any]] | None = None, *, timeout: float = SandboxOptions.timeout,
                 memory_limit_mb: int = SandboxOptions.memory_limit_mb, max_output_chars: int = DSPY_OUTPUT_CHARS,
                 confinement: str = SandboxOptions.confinement, max_final_chars: int = SandboxOptions.max_final_chars,
                 callbacks: list[BaseCallback] | None = None):
        self.callbacks = list(callbacks or [])  # DSPy's per-instance callbacks, besides dspy.settings.callbacks
        self._tools: dict[str, Callable[..., Any]] = dict(tools or {})
        self.output_fields = output_fields
        self._options = dict(timeout=timeout, memory_limit_mb=memory_limit_mb, max_output_chars=max_output_chars,
                             confinement=confinement, max_final_chars=max_final_chars)
        self._sandbox: Sandbox | None = None
        self._runner = AsyncRunner()
        self._configured: tuple[Any, ...] | None = None
        self._loaded: dict[str, Any] = {}
        self._ended: str | None = None  # why the session is over (shut down, or its worker was killed)

    @property
    def tools(self) -> dict[str, Callable[..., Any]]:
        """Host functions callable from code; DSPy updates this dict in place before executing."""
        return self._tools

    def _configuration(self) -> tuple[dict[str, Callable[..., Any]], list[str] | None]:
        tools = {name: self._invoker(name) for name in self._tools
                 if not _is_dspy_facade_name(name)}  # the facade's bridge tools are never usable here
        fields = [f["name"] for f in self.output_fields] if self.output_fields else None
        return tools, fields

    def _invoker(self, name: str) -> Callable[..., Any]:
        def invoke(*args: Any, **kwargs: Any) -> Any:
            return self.invoke_tool(name, list(args), kwargs)

        invoke.__name__ = name
        return invoke

    @with_callbacks
    def invoke_tool(self, tool_name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Call the tool ``tool_name`` (as code in the sandbox does), binding positional arguments.

        Raises:
            CodeInterpreterError: no such tool is registered.
        """
        if tool_name not in self._tools:
            raise CodeInterpreterError(f"Unknown tool: {tool_name}")
        return keyword_call(self._tools[tool_name], self._runner)(*args, **kwargs)

    def _check_session(self) -> None:
        if self._ended is not None:
            raise CodeInterpreterError(f"this RestrictedPythonInterpreter session is over ({self._ended}); "
                                       "create a new interpreter")

    @with_callbacks
    def start(self) -> None:
        """Start the worker (idempotent while the session lasts; ``execute`` starts it lazily).

        Raises:
            CodeInterpreterError: the worker could not start, or the session is over.
        """
        self._start()

    def _start(self) -> None:
        self._check_session()
        if self._sandbox is not None:
            return
        tools, fields = self._configuration()
        try:
            self._sandbox = Sandbox(tools=tools, submit_fields=fields, **self._options)
        except (SandboxError, ValueError) as exc:
            raise CodeInterpreterError(f"could not start the restricted interpreter: {exc}") from exc
        self._configured = (tuple(sorted(self._tools)), tuple(fields or ()))

    def _sync_configuration(self) -> None:
        current = (tuple(sorted(self._tools)), tuple(f["name"] for f in self.output_fields or ()))
        if current != self._configured:
            tools, fields = self._configuration()
            self._sandbox.configure(tools=tools, submit_fields=fields)
            self._configured = current

    def _load(self, variables: dict[str, Any]) -> None:
        for name, value in variables.items():
            if name.startswith("_"):
                raise CodeInterpreterError(f"variable {name!r} cannot be loaded: names starting with '_' are "
                                           "not reachable in the restricted sandbox")
            if isinstance(value, str):
                fingerprint: Any = (id(value), len(value))  # str is immutable: same object, same value
            else:
                try:
                    fingerprint = json.dumps(value, sort_keys=True)
                except (TypeError, ValueError):
                    raise CodeInterpreterError(f"variable {name!r} is a {type(value).__name__}, which cannot be "
                                               "loaded; pass str or JSON values") from None
            if self._loaded.get(name) != fingerprint:
                self._sandbox.set_variable(name, value)
                self._loaded[name] = fingerprint

    @with_callbacks
    def execute(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        """Run ``code``; return printed output (or ``None``), or ``FinalOutput`` when it called SUBMIT.

        Raises:
            CodeExecutionError: the code failed or hit a limit; the session goes on.
            SyntaxError: the code does not compile (or is refused by the policy at compile time).
            CodeInterpreterError: the worker had to be killed (its state is lost, the session is
                over), or the session was already over.
        """
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, got {type(code).__name__}")
        if any(_is_dspy_facade_name(name) for name in variables or {}):
            # DSPy 3.4 tries to install a ~170-line `dspy` stand-in in every interpreter; its
            # private names cannot exist here, so refuse it at once instead of compiling it.
            raise SyntaxError("the sandbox dspy facade (sub-agents via `import dspy`) is not available in "
                              "RestrictedPythonInterpreter")
        self._start()
        try:
            self._sync_configuration()
            self._load(variables or {})
            result = self._sandbox.execute(code)
        except SandboxError as exc:
            raise CodeInterpreterError(str(exc)) from exc
        if result.restarted:
            # DSPy's contract: a lost process is fatal to the session, never a silent fresh one.
            self._end(f"its worker was killed: {result.error}")
            raise CodeInterpreterError(result.error or "the sandbox worker was killed")
        return self._protocol_result(result)

    @staticmethod
    def _protocol_result(result: CellResult) -> Any:
        if result.has_final:
            return FinalOutput(result.final)
        if result.error is not None:
            if result.error.startswith("SyntaxError") and result.limit is None:
                raise SyntaxError(result.error.removeprefix("SyntaxError: "))
            printed = result.output.rstrip("\n")
            raise CodeExecutionError(f"{printed}\n{result.error}" if printed else result.error)
        return result.output or None

    @with_callbacks
    def shutdown(self) -> None:
        """Stop the worker and end the session (idempotent); a new session needs a new interpreter."""
        self._end("it was shut down")

    def _end(self, why: str) -> None:
        if self._ended is None:
            self._ended = why
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None
        self._configured = None
        self._loaded = {}
        self._runner.close()

    def __enter__(self) -> RestrictedPythonInterpreter:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
