"""LiteLLMClient through litellm's real request path, against a local OpenAI-compatible server."""

from __future__ import annotations

import asyncio

import pytest

from sandbox import Budget, LiteLLMClient, Sandbox, Trajectory
from sandbox.engine.bridge import HostFunctions
from sandbox.lm.aio import AsyncRunner
from sandbox.lm.clients import as_lm_client
from sandbox.lm.clients import estimate_prompt_tokens, metered_completion
from tests.openai_stub import OpenAIStub

KEY = "sk-testkey-0123456789abcdef"


@pytest.fixture
def stub():
    with OpenAIStub() as server:
        yield server


def client(stub, **kwargs):
    return LiteLLMClient("openai/test-model", api_base=stub.api_base, api_key=KEY, backoff_s=0.01, **kwargs)


def test_completion_usage_and_max_tokens(stub):
    budget = Budget()
    completion = asyncio.run(metered_completion(client(stub), [{"role": "user", "content": "hi"}],
                                                budget=budget, max_tokens=64))
    assert completion.text == "echo: hi"
    assert (completion.prompt_tokens, completion.completion_tokens) == (11, 5)
    assert budget.tokens == 16 and budget.llm_calls == 1
    assert stub.requests[0]["body"]["max_tokens"] == 64
    assert stub.requests[0]["authorization"] == f"Bearer {KEY}"


def test_rate_limit_is_retried(stub):
    stub.responses = [(429, {"error": {"message": "slow down", "type": "rate_limit"}})] * 2
    completion = asyncio.run(client(stub, max_retries=3).acomplete([{"role": "user", "content": "x"}], max_tokens=8))
    assert completion.text == "echo: x" and len(stub.requests) == 3


def test_retries_give_up_after_max_retries(stub):
    import litellm

    stub.responses = [(429, {"error": {"message": "slow down"}})] * 5
    with pytest.raises(litellm.RateLimitError):
        asyncio.run(client(stub, max_retries=1).acomplete([{"role": "user", "content": "x"}], max_tokens=8))
    assert len(stub.requests) == 2


def test_auth_error_is_not_retried_and_never_leaks_the_key(stub):
    stub.responses = [(401, {"error": {"message": f"Incorrect API key provided: {KEY}", "type": "auth"}})]
    host = HostFunctions(lm=client(stub), budget=Budget(), trajectory=Trajectory("q"), runner=AsyncRunner())
    with Sandbox(tools=host.tools()) as sb:
        result = sb.execute("llm_query('hello')")
    assert len(stub.requests) == 1
    assert "AuthenticationError" in result.error and KEY not in result.error
    assert KEY not in host.trajectory.to_json()


def test_unreachable_server_is_a_transient_error():
    import litellm

    lm = LiteLLMClient("openai/test-model", api_base="http://127.0.0.1:9/v1", api_key="x", max_retries=0)
    with pytest.raises((litellm.APIConnectionError, litellm.InternalServerError)):
        asyncio.run(lm.acomplete([{"role": "user", "content": "x"}], max_tokens=8))


def test_cost_comes_from_the_local_price_map():
    assert LiteLLMClient("gpt-4o-mini").estimate_cost(1000, 1000) > 0
    assert LiteLLMClient("openai/my-local-model").estimate_cost(1000, 1000) == 0.0


def test_repr_hides_the_key():
    assert KEY not in repr(LiteLLMClient("openai/x", api_key=KEY))


def test_bad_input():
    with pytest.raises(ValueError, match="model"):
        LiteLLMClient("")
    with pytest.raises(TypeError, match="litellm model string or an LMClient"):
        as_lm_client(42)
    with pytest.raises(TypeError, match=r"messages\[0\]"):
        asyncio.run(metered_completion(LiteLLMClient("openai/x"), [{"role": "user"}], budget=Budget(), max_tokens=1))


def test_prompt_estimate_is_an_upper_bound_in_bytes():
    assert estimate_prompt_tokens([{"role": "user", "content": "héllo"}]) == 6 + 8
