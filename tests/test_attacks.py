"""Runs the public sample of the attack suite (../shared/security) under its fixture contract.

Each attack runs twice: with the worker's OS confinement (the default) and
without it, so that the in-process policy is shown to hold on its own too.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from sandbox import Budget, Sandbox
from sandbox.boundary.repl import LIMITS
from tests.conftest import FakeLM

ATTACKS_FILE = Path(os.environ.get("RLM_ATTACKS_FILE",
                                   Path(__file__).resolve().parents[2] / "shared" / "security" / "attacks_public.py"))
if not ATTACKS_FILE.is_file():
    raise RuntimeError(f"attack suite not found at {ATTACKS_FILE}; CI keeps ../shared beside the checkout "
                       "(or set RLM_ATTACKS_FILE)")
_spec = importlib.util.spec_from_file_location("attacks_public", ATTACKS_FILE)
attacks_public = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(attacks_public)

SECRET = "rlm-secret-" + secrets.token_hex(16)
CONTEXT = "The quick brown fox jumps over the lazy dog.\n" * 200
LIMITED_WITHIN_S = 15.0


class SecretCarryingAPIError(Exception):
    """Mimics openai/httpx errors: auth headers ride on the exception."""

    def __init__(self) -> None:
        super().__init__("request failed")
        self.request = SimpleNamespace(headers={"Authorization": f"Bearer {SECRET}"})
        self.api_key = SECRET


@pytest.fixture
def attack_sandbox(monkeypatch, make_host_functions):
    monkeypatch.setenv("RLM_SANDBOX_SECRET", SECRET)
    lm = FakeLM()
    lm.api_key = SECRET
    host = make_host_functions(lm, budget=Budget(max_llm_calls=20))

    def llm_query(prompt):
        if not isinstance(prompt, str):
            raise SecretCarryingAPIError()
        return host.llm_query(prompt)

    def open_sandbox(confinement: str) -> Sandbox:
        sb = Sandbox(tools={"llm_query": llm_query, "llm_query_batched": host.llm_query_batched},
                     timeout=2.0, kill_grace=1.0, memory_limit_mb=512, confinement=confinement)
        sb.set_variable("context", CONTEXT)
        return sb

    return open_sandbox


@pytest.mark.parametrize("confinement", ["os", "none"], ids=["confined", "policy-only"])
@pytest.mark.parametrize("name,code,expected", attacks_public.ATTACKS, ids=[a[0] for a in attacks_public.ATTACKS])
def test_attack(name, code, expected, confinement, attack_sandbox, tmp_path):
    tmp_path.chmod(0o777)  # an escaped worker could create the marker here, even as nobody
    marker = tmp_path / "marker"
    with attack_sandbox(confinement) as sb:
        assert sb.execute("keep = 41").error is None
        started = time.monotonic()
        result = sb.execute(code.replace("@@MARKER@@", str(marker)))
        elapsed = time.monotonic() - started

        seen = "\n".join([result.output, result.error or "", json.dumps(result.final)])
        assert SECRET not in seen, f"{name}: secret leaked"
        assert not marker.exists(), f"{name}: marker file created, the escape ran"

        if expected == "blocked":
            assert result.error, f"{name}: expected an error, got {result}"
            assert not result.restarted, f"{name}: blocked attacks must not need a restart"
            assert sb.execute("print(keep + 1)").output == "42\n", f"{name}: state lost"
        else:
            assert result.limit in LIMITS, f"{name}: expected a limit, got {result}"
            assert f"{result.limit} limit" in result.error, f"{name}: error must name the limit: {result.error}"
            assert elapsed < LIMITED_WITHIN_S, f"{name}: took {elapsed:.1f}s"
            after = sb.execute("print(keep + 1)")
            assert after.output == "42\n" or (result.restarted and "NameError" in after.error)

        integrity = sb.execute("import json\nprint(json.dumps({'a': 'b\\n'}), json.loads('\"x\\\\ny\"') == 'x\\ny')")
        assert integrity.output == '{"a": "b\\n"} True\n', f"{name}: shared modules damaged: {integrity}"
