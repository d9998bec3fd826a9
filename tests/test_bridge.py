"""Host functions: sub-LM calls, batched fan-out under budgets, and recursion with depth limits."""

from __future__ import annotations

import time

import pytest

from sandbox import Budget, BudgetExceeded, Sandbox, Trajectory
from tests.conftest import FakeLM


def test_llm_query_records_usage_and_trajectory(make_host_functions):
    budget, trajectory = Budget(), Trajectory("q")
    host = make_host_functions(FakeLM(tokens=7), budget=budget, trajectory=trajectory)
    assert host.llm_query("hello") == "answer to: hello"
    assert budget.llm_calls == 1 and budget.tokens == 14
    (event,) = trajectory.of_kind("sub_call")
    assert event["prompt"] == "hello" and event["answer"] == "answer to: hello" and event["depth"] == 0


def test_batched_is_ordered_and_concurrent(make_host_functions):
    lm = FakeLM(latency=0.05)
    host = make_host_functions(lm, max_concurrency=4)
    prompts = [f"p{i}" for i in range(12)]
    started = time.monotonic()
    assert host.llm_query_batched(prompts) == [f"answer to: p{i}" for i in range(12)]
    assert lm.max_in_flight == 4
    assert time.monotonic() - started < 12 * 0.05  # not sequential


def test_one_failure_does_not_lose_the_others(make_host_functions):
    def reply(prompt):
        if prompt == "bad":
            raise ConnectionError("upstream reset, key sk-abcdefghijklmnop")
        return prompt.upper()

    host = make_host_functions(FakeLM(reply))
    answers = host.llm_query_batched(["a", "bad", "c"])
    assert answers[0] == "A" and answers[2] == "C"
    assert answers[1].startswith("ERROR: ConnectionError: upstream reset") and "abcdefghijklmnop" not in answers[1]


def test_fan_out_of_64_against_a_cap_of_10_runs_exactly_10(make_host_functions):
    lm = FakeLM(latency=0.02)
    budget = Budget(max_llm_calls=10)
    host = make_host_functions(lm, budget=budget, max_concurrency=64)
    answers = host.llm_query_batched([f"p{i}" for i in range(64)])
    assert len(lm.calls) == 10 == budget.llm_calls
    assert sum(not a.startswith("ERROR") for a in answers) == 10
    assert all("max_llm_calls" in a for a in answers if a.startswith("ERROR"))


def test_token_cap_holds_under_fan_out(make_host_functions):
    lm = FakeLM(tokens=50)
    budget = Budget(max_tokens=3000)
    host = make_host_functions(lm, budget=budget, max_concurrency=32, max_tokens=100)
    host.llm_query_batched(["x" * 100] * 40)
    assert budget.tokens <= 3000 and budget.llm_calls == len(lm.calls) < 40


def test_wall_clock_cancels_pending_calls(make_host_functions):
    lm = FakeLM(latency=5)
    budget = Budget(max_seconds=0.3)
    host = make_host_functions(lm, budget=budget)
    started = time.monotonic()
    with pytest.raises(BudgetExceeded, match="max_seconds"):
        host.llm_query_batched(["a", "b"])
    assert time.monotonic() - started < 1.0
    assert lm.in_flight == 0 or _eventually(lambda: lm.in_flight == 0)


def _eventually(check, timeout=1.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.01)
    return False


def test_bad_arguments_are_named(make_host_functions):
    host = make_host_functions()
    with pytest.raises(TypeError, match="prompt must be a str"):
        host.llm_query(None)
    with pytest.raises(TypeError, match=r"prompts\[1\] must be a str"):
        host.llm_query_batched(["a", 2])
    with pytest.raises(TypeError, match="must be a list"):
        host.llm_query_batched("abc")
    with pytest.raises(ValueError, match="max_concurrency"):
        make_host_functions(max_concurrency=0)


def test_rlm_query_runs_a_child_one_level_deeper(make_host_functions):
    seen = []

    def run_child(query, context, depth, trajectory):
        seen.append((query, context, depth))
        trajectory.record("note", message="child ran")
        return f"child answer at depth {depth}"

    trajectory = Trajectory("root")
    host = make_host_functions(budget=Budget(max_depth=2), trajectory=trajectory, run_child=run_child)
    assert host.rlm_query("sub question", "sub context") == "child answer at depth 1"
    assert host.rlm_query("only prompt") == "child answer at depth 1"
    assert seen == [("sub question", "sub context", 1), ("only prompt", "only prompt", 1)]
    assert trajectory.children[0].depth == 1 and trajectory.children[0].events[0]["message"] == "child ran"


def test_rlm_query_at_max_depth_degrades_to_llm_query(make_host_functions):
    lm = FakeLM()
    trajectory = Trajectory("root")
    host = make_host_functions(lm, budget=Budget(max_depth=1), trajectory=trajectory, depth=1,
                               run_child=lambda *a: pytest.fail("no child past max_depth"))
    assert host.rlm_query("q", "ctx") == "answer to: q\n\nctx"
    (event,) = trajectory.of_kind("rlm_query")
    assert event["degraded"] and "max_depth=1" in event["reason"]


def test_through_the_sandbox_query_flood_is_stopped_by_the_budget(make_host_functions):
    budget = Budget(max_llm_calls=5)
    host = make_host_functions(budget=budget)
    with Sandbox(tools=host.tools(), budget=budget) as sb:
        result = sb.execute("for i in range(10**6):\n    try:\n        llm_query('hi')\n    except Exception:\n        pass")
        assert result.limit == "budget" and "max_llm_calls" in result.error
        result = sb.execute("print(llm_query_batched(['a', 'b'])[0][:6])")
        assert result.output == "ERROR:\n"
    assert budget.llm_calls == 5


def test_context_window_overflow_becomes_one_actionable_sentence(make_host_functions):
    class ContextWindowExceededError(Exception):
        pass

    def reply(prompt):
        raise ContextWindowExceededError("litellm.BadRequestError: ... maximum context length is 8192 tokens ...")

    host = make_host_functions(FakeLM(reply))
    with pytest.raises(ValueError, match=r"the prompt \(5,000 characters\) is longer than the sub-model's context"):
        host.llm_query("x" * 5000)
