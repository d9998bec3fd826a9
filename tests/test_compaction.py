"""Compaction of the root's history (the policy of both engines; see sandbox.engine.compaction)."""

from __future__ import annotations

import asyncio

import pytest

from sandbox.engine.budget import Budget, BudgetExceeded
from sandbox.engine.compaction import (
    COMPACTED_STEPS,
    STEP_CHARS,
    Step,
    compact,
    compaction_request,
    how_many_to_compact,
    summary_text,
)
from sandbox.engine.trajectory import Trajectory
from tests.conftest import FakeLM


SUMMARY = Step(COMPACTED_STEPS, summary_text("x = 1 was set"))


@pytest.mark.parametrize("steps,compacted", [
    (0, 0), (1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (10, 5),
    ("S", 0), ("S1", 0), ("S11", 2), ("S111", 2),  # an earlier summary alone is not summarized again
])
def test_the_older_half_is_compacted_never_the_newest_step(steps, compacted):
    history = [Step("x", "y")] * steps if isinstance(steps, int) else [SUMMARY if c == "S" else Step("x", "y")
                                                                      for c in steps]
    assert how_many_to_compact(history) == compacted


def test_the_request_carries_the_query_and_each_step_cut_to_its_head_and_tail():
    long_output = "A" * 5_000 + "the code is 4821" + "Z" * 5_000
    [system, user] = compaction_request("What is the code?", [Step("print(1)", "1"), Step("print(x)", long_output)])
    assert system["role"] == "system" and user["role"] == "user"
    text = user["content"]
    assert text.startswith("Query: What is the code?") and "Step 1." in text and "Step 2." in text
    assert "print(x)" in text and "characters left out" in text
    assert len(text) < 2 * STEP_CHARS + 1_000  # the bulk output is not sent again
    assert "copy numbers, names and quoted text exactly" in text


def test_compact_is_one_metered_call_recorded_as_an_event():
    lm = FakeLM(lambda prompt: "Found: `hits` holds 3 lines; the code 4821 is on line 2.", tokens=7)
    budget, trajectory = Budget(), Trajectory("q")
    budget.start()
    text = asyncio.run(compact(lm, [Step("hits = ...", "3 hits"), Step("print(hits)", "x" * 900)], query="q",
                               budget=budget, trajectory=trajectory, iteration=4))
    assert text == summary_text("Found: `hits` holds 3 lines; the code 4821 is on line 2.")
    assert len(lm.calls) == 1 and budget.spent()["llm_calls"] == 1 and budget.spent()["tokens"] == 14
    [event] = [e for e in trajectory.events if e["kind"] == "compaction"]
    assert (event["iteration"], event["steps"], event["chars_before"]) == (4, 2, len("hits = ...3 hits") + 911)
    assert event["chars_after"] == len(text)


def test_compact_refuses_when_the_budget_has_no_call_left():
    budget = Budget(max_llm_calls=0)
    budget.start()
    lm = FakeLM()
    with pytest.raises(BudgetExceeded) as caught:
        asyncio.run(compact(lm, [Step("a", "b")], query="q", budget=budget, trajectory=Trajectory("q"), iteration=1))
    assert caught.value.limit == "max_llm_calls" and lm.calls == []
