"""What makes a cold start cheap: litellm, LangGraph and DSPy left unimported until a path needs
them, answers about openai/<name> models without litellm, and no retries where nothing listens."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from sandbox import LiteLLMClient
from sandbox.lm.clients import default_api_key, is_refused, is_unlisted, price_usd

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]


def test_a_refused_connection_is_not_retried():
    client = LiteLLMClient("openai/m", api_base="http://127.0.0.1:9/v1", api_key="k", max_retries=3, backoff_s=30)
    with pytest.raises(Exception) as info:
        asyncio.run(asyncio.wait_for(client.acomplete(MESSAGES, max_tokens=9), timeout=20))
    assert is_refused(info.value)


def test_unlisted_openai_models_need_no_litellm():
    assert is_unlisted("openai/my-local-model") and not is_unlisted("openai/gpt-4o-mini")
    assert not is_unlisted("anthropic/whatever")  # other providers: for litellm to say
    assert price_usd("openai/my-local-model", 1000, 1000) == 0.0


def test_the_placeholder_key_follows_the_openai_environment_variable(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert default_api_key("openai/m", "http://h/v1", None) == "sk-local-no-key"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert default_api_key("openai/m", "http://h/v1", None) is None


def imported_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_importing_the_cli_imports_no_framework():
    assert not {"litellm", "dspy", "langgraph", "bm25s"} & imported_after("import sandbox.app.cli")


def test_the_graph_adapter_does_not_import_dspy_or_litellm():
    assert not {"litellm", "dspy"} & imported_after(
        "from rlm_graph import create_rlm_graph\n"
        "create_rlm_graph('openai/m', api_base='http://127.0.0.1:9/v1')")


def test_the_dspy_adapter_does_not_import_langgraph():
    assert "langgraph" not in imported_after("import rlm_dspy")
