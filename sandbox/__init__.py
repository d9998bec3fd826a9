"""The shared RLM core: a restricted REPL in a worker process, host functions, budgets,
LM clients, evaluators and the trajectory record. Both adapters build on this package.

The names below are imported on first use (PEP 562), so that ``import sandbox.app.cli`` or one
adapter pays only for the modules it runs, never for the others' frameworks.
"""

import importlib
import os
from typing import Any

# litellm fetches its price map over the network at import unless told otherwise.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# What users of the core need. Plumbing (the bridge, the runner, reservations, the confinement
# primitives, context checks) stays importable from its own module for those who build on it.
_HOMES = {
    "sandbox.engine.budget": ("Budget", "BudgetExceeded", "SharedLedger"),
    "sandbox.engine.evaluator": ("CallableEvaluator", "Evaluation", "Evaluator", "LMJudge", "as_evaluator"),
    "sandbox.lm.clients": ("Completion", "LiteLLMClient", "LMClient"),
    "sandbox.engine.pg_ledger": ("PostgresLedger",),  # psycopg is imported on first use
    "sandbox.boundary.repl": ("CellResult", "Sandbox", "SandboxError", "WorkerStartError"),
    "sandbox.boundary.confine": ("ConfinementUnavailable",),
    "sandbox.engine.session": ("SandboxOptions",),
    "sandbox.engine.trajectory": ("Trajectory",),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_HOME_OF)


def __getattr__(name: str) -> Any:
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
