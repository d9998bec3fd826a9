"""``RestrictedPythonInterpreter``: DSPy's ``CodeInterpreter`` protocol on the sandbox worker.

Use it with DSPy's own module, offline and without Deno::

    dspy.RLM("context, query -> answer", interpreter_factory=RestrictedPythonInterpreter)

Tools may be called positionally or by keyword (DSPy hands them over as
keyword-only ``invoke(**kwargs)`` wrappers; arguments are bound to the tool's
signature here). ``SUBMIT`` maps its arguments onto ``output_fields``.
Variables are sent to the worker only when they change, so a 40 MB context is
loaded once per session, not once per iteration.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

from dspy.primitives.code_interpreter import CodeExecutionError, CodeInterpreterError, FinalOutput

from sandbox.aio import AsyncRunner
from sandbox.prompts import sandbox_rules
from sandbox.repl import CellResult, Sandbox, SandboxError
from sandbox.session import SandboxOptions


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
    """A ``dspy.CodeInterpreter`` backed by :class:`sandbox.Sandbox` (RestrictedPython in a worker)."""

    execution_instructions = ("Code runs in a restricted Python sandbox (RestrictedPython, separate process, "
                              "time and memory limits). " + sandbox_rules())

    def __init__(self, tools: dict[str, Callable[..., Any]] | None = None,
                 output_fields: list[dict[str, Any]] | None = None, *, timeout: float = 60.0,
                 memory_limit_mb: int = 1024, max_output_chars: int = 100_000, confinement: str = "os",
                 max_final_chars: int = SandboxOptions.max_final_chars):
        self._tools: dict[str, Callable[..., Any]] = dict(tools or {})
        self.output_fields = output_fields
        self._options = dict(timeout=timeout, memory_limit_mb=memory_limit_mb, max_output_chars=max_output_chars,
                             confinement=confinement, max_final_chars=max_final_chars)
        self._sandbox: Sandbox | None = None
        self._runner = AsyncRunner()
        self._configured: tuple[Any, ...] | None = None
        self._loaded: dict[str, Any] = {}

    @property
    def tools(self) -> dict[str, Callable[..., Any]]:
        """Host functions callable from code; DSPy updates this dict in place before executing."""
        return self._tools

    def _configuration(self) -> tuple[dict[str, Callable[..., Any]], list[str] | None]:
        tools = {name: keyword_call(fn, self._runner) for name, fn in self._tools.items()
                 if not _is_dspy_facade_name(name)}  # the facade's bridge tools are never usable here
        fields = [f["name"] for f in self.output_fields] if self.output_fields else None
        return tools, fields

    def start(self) -> None:
        """Start the worker (idempotent)."""
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

    def execute(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        """Run ``code``; return printed output (or ``None``), or ``FinalOutput`` when it called SUBMIT."""
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, got {type(code).__name__}")
        if any(_is_dspy_facade_name(name) for name in variables or {}):
            # DSPy 3.4 tries to install a ~170-line `dspy` stand-in in every interpreter; its
            # private names cannot exist here, so refuse it at once instead of compiling it.
            raise SyntaxError("the sandbox dspy facade (sub-agents via `import dspy`) is not available in "
                              "RestrictedPythonInterpreter")
        self.start()
        try:
            self._sync_configuration()
            self._load(variables or {})
            result = self._sandbox.execute(code)
        except SandboxError as exc:
            raise CodeInterpreterError(str(exc)) from exc
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

    def shutdown(self) -> None:
        """Stop the worker; the interpreter can be started again afterwards."""
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
