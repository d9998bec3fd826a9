"""The core's public names (the import rules between its parts are in test_layout.py)."""

from __future__ import annotations

import pytest

import sandbox

PUBLIC = {"Budget", "BudgetExceeded", "SharedLedger", "PostgresLedger", "CallableEvaluator", "Evaluation", "Evaluator",
          "LMJudge", "as_evaluator", "Completion", "LiteLLMClient", "LMClient", "CellResult", "Sandbox", "SandboxError",
          "WorkerStartError", "ConfinementUnavailable", "SandboxOptions", "Trajectory"}
PLUMBING = {"sandbox.lm.aio": "AsyncRunner", "sandbox.engine.bridge": "HostFunctions",
            "sandbox.engine.budget": "Reservation", "sandbox.lm.clients": "metered_completion",
            "sandbox.engine.context": "check_context", "sandbox.boundary.confine": "run_confined",
            "sandbox.engine.evaluator": "to_evaluation"}


def test_the_public_names_are_what_users_need_and_each_resolves():
    assert set(sandbox.__all__) == PUBLIC
    assert all(getattr(sandbox, name) is not None for name in PUBLIC)


@pytest.mark.parametrize("module,name", PLUMBING.items())
def test_plumbing_is_importable_from_its_module_not_from_the_package(module, name):
    assert hasattr(__import__(module, fromlist=[name]), name)
    with pytest.raises(AttributeError, match=f"no attribute '{name}'"):
        getattr(sandbox, name)

