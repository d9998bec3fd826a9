"""``CodeInterpreterREPL``: any DSPy ``CodeInterpreter`` as the REPL of an ``rlm_dspy.RLM`` run.

With it the loop, budgets and evaluator checkpoints of ``rlm_dspy.RLM`` run on DSPy's
Deno ``PythonInterpreter``, its ``LocalInterpreter``, a remote (E2B-style) sandbox or a
test double, exactly as ``dspy.RLM`` drives them: the tools (``llm_query``,
``llm_query_batched``, ``rlm_query`` and the user's) are put into ``interpreter.tools``,
``output_fields`` is set where the interpreter has it, and every ``execute`` gets the
run's input variables.

What still holds on such an interpreter: the iteration, sub-call, token and dollar caps
(every LM call goes through the run's ledger), and the wall clock, which is checked
between steps and bounds the wait for a cell: at the deadline the run stops waiting and
ends, and an interpreter the run created is shut down. What only the restricted
sandbox gives: a running cell cut where it stands (the cell of a caller-owned interpreter
keeps running), the memory cap, and OS confinement.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from dspy.primitives.code_interpreter import CodeExecutionError, CodeInterpreter, FinalOutput

from sandbox.boundary.repl import CellResult
from sandbox.engine.budget import Budget, BudgetExceeded
from sandbox.lm.aio import CallTimedOut, call_with_timeout

logger = logging.getLogger(__name__)


class CodeInterpreterREPL:
    """A :class:`~sandbox.engine.session.REPL` over ``interpreter``; shuts it down on :meth:`close` if ``owned``.

    Args:
        interpreter: the DSPy ``CodeInterpreter`` to run cells on.
        tools: the functions code may call, by name.
        output_fields: ``SUBMIT``'s fields in DSPy's form (``[{"name": ..., "type": ...}]``).
        owned: whether the run created the interpreter (and so shuts it down).
        budget: the run's ledger; its deadline bounds the wait for a cell.
    """

    def __init__(self, interpreter: CodeInterpreter, *, tools: dict[str, Callable[..., Any]],
                 output_fields: list[dict[str, Any]], owned: bool, budget: Budget):
        self.interpreter, self.owned, self.budget = interpreter, owned, budget
        self._variables: dict[str, Any] = {}
        self._budget_cap: str | None = None  # the cap a tool hit during the current cell
        self._abandoned = False
        interpreter.tools.update({name: self._watching(fn) for name, fn in tools.items()})
        if hasattr(interpreter, "output_fields"):
            interpreter.output_fields = output_fields
        if hasattr(interpreter, "_tools_registered"):  # DSPy's interpreters register tools once per session
            interpreter._tools_registered = False

    def _watching(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn``, noting a budget cap it hits: code in another interpreter can catch the error,
        but the run still stops after the cell, as it does in the restricted sandbox."""
        @functools.wraps(fn)  # keeps the name, docstring and signature interpreters introspect
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except BudgetExceeded as exc:
                self._budget_cap = exc.limit
                raise

        return call

    def set_variable(self, name: str, value: Any) -> None:
        """Pass ``value`` as ``name`` with every cell from now on (as ``dspy.RLM`` does)."""
        self._variables[name] = value

    def variables(self) -> list[str]:
        """The names this REPL passes with every cell (those the interpreter's code made are not known here)."""
        return sorted(self._variables)

    def run_setup(self, code: str, variables: dict[str, Any]) -> None:
        """Run host-made setup ``code`` once, with ``variables`` for this call only (large payloads).

        Raises:
            CodeExecutionError, SyntaxError: the setup failed in the interpreter.
            CodeInterpreterError: the interpreter failed.
        """
        self.interpreter.execute(code, variables=variables)

    def execute(self, code: str) -> CellResult:
        """Run one cell.

        Returns:
            What the cell did; ``limit="budget"`` when a tool hit a budget cap or the wall clock ran
            out while the cell ran.

        Raises:
            CodeInterpreterError: the interpreter failed (its process died, its protocol broke);
                DSPy treats this as fatal, so the run ends with it.
        """
        started = time.monotonic()
        self._budget_cap = None
        try:
            value = call_with_timeout(self.interpreter.execute, code, dict(self._variables),
                                      timeout=self.budget.seconds_left())
        except CallTimedOut:
            self._abandoned = True
            return CellResult(error=f"budget limit: the run's wall-clock budget (max_seconds="
                                    f"{self.budget.max_seconds}) ran out while the cell ran",
                              limit="budget", stopped_by="max_seconds", seconds=time.monotonic() - started)
        except (CodeExecutionError, SyntaxError) as exc:
            return self._result(error=str(exc), started=started)
        if isinstance(value, FinalOutput):
            return self._result(final=value.output, has_final=True, started=started)
        if isinstance(value, list):
            return self._result(output="\n".join(map(str, value)), started=started)
        return self._result(output="" if value is None else str(value), started=started)

    def _result(self, *, started: float, **fields: Any) -> CellResult:
        cap = self._budget_cap
        if cap is not None:
            fields.setdefault("error", f"budget limit: {cap} reached during the cell")
        return CellResult(**fields, limit="budget" if cap else None, stopped_by=cap,
                          seconds=time.monotonic() - started)

    def close(self) -> None:
        """Shut the interpreter down if the run created it."""
        if self.owned:
            self.interpreter.shutdown()
        elif self._abandoned:
            logger.warning("a cell of the caller's %s was still running when the run's wall-clock budget ran "
                           "out; it was left running", type(self.interpreter).__name__)
