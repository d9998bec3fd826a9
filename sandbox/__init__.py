"""The shared RLM core: a restricted REPL in a worker process, host functions, budgets,
LM clients, evaluators and the trajectory record. Both adapters build on this package."""

import os

# litellm fetches its price map over the network at import unless told otherwise.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from sandbox.aio import AsyncRunner  # noqa: E402
from sandbox.bridge import ChildRunner, HostFunctions  # noqa: E402
from sandbox.budget import Budget, BudgetExceeded, CapReached, Reservation, SharedLedger  # noqa: E402
from sandbox.confine import ConfinedResult, ConfinementUnavailable, run_confined  # noqa: E402
from sandbox.context import Context, check_context, describe_context  # noqa: E402
from sandbox.evaluator import (  # noqa: E402
    CallableEvaluator,
    Evaluation,
    Evaluator,
    LMJudge,
    as_evaluator,
    to_evaluation,
)
from sandbox.lm import Completion, LiteLLMClient, LMClient, as_lm_client, metered_completion  # noqa: E402
from sandbox.pg_ledger import PostgresLedger  # noqa: E402  (psycopg is imported on first use)
from sandbox.repl import CellResult, Sandbox, SandboxError, WorkerStartError  # noqa: E402
from sandbox.trajectory import Trajectory  # noqa: E402

__all__ = [
    "AsyncRunner", "Budget", "BudgetExceeded", "CallableEvaluator", "CapReached", "CellResult", "ChildRunner",
    "Completion", "ConfinedResult", "ConfinementUnavailable", "Context", "Evaluation", "Evaluator", "HostFunctions", "LiteLLMClient", "LMClient",
    "LMJudge", "PostgresLedger", "Reservation", "SharedLedger", "Sandbox", "SandboxError", "Trajectory", "WorkerStartError",
    "as_evaluator", "as_lm_client", "check_context", "describe_context", "metered_completion",
    "run_confined", "to_evaluation",
]
