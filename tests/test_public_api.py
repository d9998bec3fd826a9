"""The core's public names, and the import rules that keep the core free of the adapters' frameworks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import sandbox

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = {"Budget", "BudgetExceeded", "SharedLedger", "PostgresLedger", "CallableEvaluator", "Evaluation", "Evaluator",
          "LMJudge", "as_evaluator", "Completion", "LiteLLMClient", "LMClient", "CellResult", "Sandbox", "SandboxError",
          "WorkerStartError", "ConfinementUnavailable", "SandboxOptions", "Trajectory"}
PLUMBING = {"sandbox.aio": "AsyncRunner", "sandbox.bridge": "HostFunctions", "sandbox.budget": "Reservation",
            "sandbox.lm": "metered_completion", "sandbox.context": "check_context", "sandbox.confine": "run_confined",
            "sandbox.evaluator": "to_evaluation"}
CORE_MODULES = sorted(p.stem for p in (ROOT / "sandbox").glob("*.py") if p.stem != "__init__")


def test_the_public_names_are_what_users_need_and_each_resolves():
    assert set(sandbox.__all__) == PUBLIC
    assert all(getattr(sandbox, name) is not None for name in PUBLIC)


@pytest.mark.parametrize("module,name", PLUMBING.items())
def test_plumbing_is_importable_from_its_module_not_from_the_package(module, name):
    assert hasattr(__import__(module, fromlist=[name]), name)
    with pytest.raises(AttributeError, match=f"no attribute '{name}'"):
        getattr(sandbox, name)


def test_no_core_module_imports_the_adapters_or_their_frameworks():
    """The core is what both adapters share: importing any of it must not pull in LangGraph,
    LangChain, DSPy or an adapter (the CLI imports the adapters only when a command runs)."""
    code = ("import importlib, sys\nbad = {}\n"
            f"for name in {CORE_MODULES!r}:\n"
            "    before = set(sys.modules)\n"
            "    importlib.import_module('sandbox.' + name)\n"
            "    bad[name] = sorted(m for m in set(sys.modules) - before if m.split('.')[0] in "
            "('langgraph', 'langchain_core', 'dspy', 'rlm_graph', 'rlm_dspy'))\n"
            "print({k: v for k, v in bad.items() if v})")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "{}"
