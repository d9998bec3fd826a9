"""Inputs that are ``dspy.SandboxSerializable`` (DSPy 3.4): rebuilt inside the REPL before the first cell.

Such a value says how it travels (``to_sandbox``), what to import (``sandbox_setup``) and
how to rebuild it (``sandbox_assignment``). On another ``CodeInterpreter`` it travels as
``dspy.RLM`` sends it: the payload as the variable ``_raw_<name>`` (base64 when binary) of
one setup call. The restricted sandbox has no ``_`` names, so there the payload is loaded
as ``<name>`` itself and rebuilt in place.
"""

from __future__ import annotations

import base64
from typing import Any

from dspy.primitives.repl_types import REPLVariable
from dspy.primitives.sandbox_serializable import SandboxSerializable, build_repl_variable

from rlm_dspy.code_interpreter_repl import CodeInterpreterREPL
from sandbox.engine.session import REPL


def is_serializable(value: Any) -> bool:
    return isinstance(value, SandboxSerializable)


def repl_variable(name: str, value: Any, field_info: Any = None) -> REPLVariable:
    """How the root LM is told about input ``name``: the value's own preview when it has one."""
    if is_serializable(value):
        return build_repl_variable(value, name, field_info=field_info)
    return REPLVariable.from_value(name, value, field_info=field_info)


def load(repl: REPL, name: str, value: SandboxSerializable) -> None:
    """Rebuild ``value`` as the variable ``name`` in ``repl``.

    Raises:
        TypeError: the restricted sandbox cannot rebuild it (a binary payload, or setup code
            the sandbox refuses); the message says what to do.
        CodeExecutionError, SyntaxError, CodeInterpreterError: another interpreter's setup failed.
    """
    payload, setup = value.to_sandbox(), value.sandbox_setup()
    if isinstance(repl, CodeInterpreterREPL):
        raw = f"_raw_{name}"
        lines, variables = [], {}
        if isinstance(payload, bytes):
            try:
                variables[raw] = payload.decode("utf-8")
            except UnicodeDecodeError:
                variables[f"{raw}_base64"] = base64.b64encode(payload).decode("ascii")
                lines += ["import base64", f"{raw} = base64.b64decode({raw}_base64)"]
        else:
            variables[raw] = str(payload)
        repl.run_setup("\n".join([*lines, *([setup] if setup else []), value.sandbox_assignment(name, raw)]),
                       variables)
        return
    what = f"input {name!r} ({type(value).__name__})"
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes) else str(payload)
    except UnicodeDecodeError:
        raise TypeError(f"{what} sends binary data, which the restricted sandbox cannot load; run it on "
                        "another interpreter (interpreter_factory=...) or pass text") from None
    repl.set_variable(name, text)
    result = repl.execute("\n".join([*([setup] if setup else []), value.sandbox_assignment(name, name)]))
    if result.error is not None:
        raise TypeError(f"{what} could not be rebuilt in the restricted sandbox ({result.error}); run it on "
                        "another interpreter (interpreter_factory=...) or pass str or JSON values")
