"""The layout's rules: which part of ``sandbox`` may import what.

- ``sandbox.boundary`` (the security boundary) imports only the standard library, RestrictedPython,
  the kernel bindings and itself, by relative import, and a worker loads it alone;
- ``sandbox.lm`` (the LM clients) meters against ``sandbox.engine.budget`` and imports nothing else
  of the engine, nor the application;
- ``sandbox.engine`` never imports the application;
- only ``sandbox.app`` imports the adapters, and no part of ``sandbox`` imports a framework
  (LangGraph, LangChain, DSPy) when it is imported.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.boundary.loader import PACKAGE_DIR, child_program

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sandbox"
FRAMEWORKS = ("langgraph", "langchain_core", "langchain", "dspy")
ADAPTERS = ("rlm_graph", "rlm_dspy")
BOUNDARY_THIRD_PARTY = ("RestrictedPython", "pyseccomp", "landlockpy")


def _modules(part: str) -> list[Path]:
    return sorted((PACKAGE / part).rglob("*.py"))


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every import in ``path`` as (relative level, absolute module name), wherever it is in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(0, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or ""))
    return found


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _violations(part: str, allowed) -> list[str]:
    return [f"{_module_name(path)} imports {name or '.'}" for path in _modules(part)
            for level, name in _imports(path) if not allowed(level, name)]


def test_the_boundary_imports_only_the_standard_library_restrictedpython_and_itself():
    def allowed(level: int, name: str) -> bool:
        top = name.split(".")[0]
        return level == 1 or top in sys.stdlib_module_names or top in BOUNDARY_THIRD_PARTY

    assert _violations("boundary", allowed) == []


def test_the_lm_clients_import_only_the_budget_of_the_engine_and_no_application():
    def allowed(level: int, name: str) -> bool:
        return not name.startswith(("sandbox.app", "sandbox.engine", *ADAPTERS, *FRAMEWORKS)) \
            or name == "sandbox.engine.budget"

    assert _violations("lm", allowed) == []


def test_the_engine_imports_no_application_adapter_or_framework():
    assert _violations("engine", lambda level, name: not name.startswith(("sandbox.app", *ADAPTERS,
                                                                           *FRAMEWORKS))) == []


@pytest.mark.parametrize("part", ["boundary", "lm", "engine"])
def test_only_the_application_imports_the_adapters(part):
    assert _violations(part, lambda level, name: not name.startswith(ADAPTERS)) == []


def test_importing_any_module_of_the_core_imports_no_framework():
    """Importing any module of the boundary, the LM clients or the engine must not pull in LangGraph,
    LangChain, DSPy or an adapter (the CLI imports the adapters only when a command runs)."""
    names = [_module_name(path) for part in ("boundary", "lm", "engine", "app") for path in _modules(part)]
    code = ("import importlib, sys\nbad = {}\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "    bad[name] = sorted(m for m in sys.modules if m.split('.')[0] in "
            f"{(*FRAMEWORKS, *ADAPTERS)!r})\n"
            "print({k: v for k, v in bad.items() if v})")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         timeout=120)
    assert out.stdout.strip() == "{}"


def _loaded_by(program: str, *args: str) -> set[str]:
    out = subprocess.run([sys.executable, "-I", "-c", program + "; print(*sorted(sys.modules))", *args],
                         capture_output=True, text=True, check=True, timeout=60, env={})
    return set(out.stdout.split())


def test_a_worker_loads_the_boundary_alone():
    """The worker's program, stopped after its imports: beyond what the interpreter loads at start
    (site's hooks), it loads the boundary and the standard library, not ``sandbox`` (so not the
    engine, litellm or a framework)."""
    at_start = _loaded_by("import sys")
    loaded = _loaded_by(child_program("worker", "main").removesuffix("; main()"), PACKAGE_DIR) - at_start
    assert {"boundary.worker", "boundary.guards", "boundary.confine"} <= loaded
    assert sorted(name for name in loaded if name.split(".")[0] not in
                  (*sys.stdlib_module_names, "boundary", *BOUNDARY_THIRD_PARTY)) == []
