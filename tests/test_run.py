"""The loop steps both adapters share (sandbox.engine.run): opening and closing a run, child
answers, budget stops, the evaluator checkpoint's record and the window-overflow policy."""

from __future__ import annotations

import pytest

from sandbox import Budget, BudgetExceeded, Evaluation, Trajectory
from sandbox.boundary.repl import CellResult
from sandbox.engine.compaction import COMPACTED_MARK, Step
from sandbox.engine.refinement import RefinementState
from sandbox.engine.run import Run, RunLink, cap_of, child_answer
from sandbox.engine.session import Session
from sandbox.lm.aio import AsyncRunner
from tests.conftest import FakeLM


class _Runner(AsyncRunner):
    """An AsyncRunner that counts its closes."""

    closes = 0

    def close(self) -> None:
        self.closes += 1
        super().close()


def _link(budget: Budget) -> RunLink:
    return RunLink(budget, _Runner(), Trajectory("q"), owns_runner=True)


def _open(budget: Budget | None = None, *, start_child=None, lm=None) -> Run:
    link = _link(budget or Budget())

    def open_session(run_child):
        return Session(variables={"context": "the text"}, sub_lm=lm or FakeLM(), budget=link.budget,
                       trajectory=link.trajectory, runner=link.runner, run_child=run_child)

    return Run(link, open_session, start_child=start_child or (lambda *args: ("child", "final")), engine="langgraph",
               root_model="fake/lm")


def test_a_run_that_cannot_open_its_session_holds_nothing_and_leaves_no_loop():
    budget = Budget(max_llm_calls=5)
    link = _link(budget)

    def broken(run_child):
        raise RuntimeError("worker could not start")

    with pytest.raises(RuntimeError, match="could not start"):
        Run(link, broken, start_child=lambda *args: (None, "final"), engine="dspy", root_model=None)
    assert budget.spent()["llm_calls"] == 0
    assert link.runner.closes == 1  # the run owned the loop, so it closed it


def test_a_run_holds_one_call_for_the_answer_at_a_cap_and_gives_it_back_on_close():
    budget = Budget(max_llm_calls=5)
    run = _open(budget)
    assert run.extract_hold is not None and budget.spent()["llm_calls"] == 1 and run.usage()["llm_calls"] == 0
    run.close()
    run.close()  # idempotent
    assert budget.spent()["llm_calls"] == 0 and run.extract_hold is None
    assert run.runner.closes == 1


def test_caps_too_tight_for_a_held_call_hold_none():
    run = _open(Budget(max_llm_calls=1))
    try:
        assert run.extract_hold is None
    finally:
        run.close()


def test_a_turn_ends_without_closing_the_repl_and_the_next_holds_its_own_call():
    budget = Budget(max_llm_calls=5)
    run = _open(budget)
    try:
        run.session.run_cell("x = 41", iteration=1)
        run.end_turn()
        assert budget.spent()["llm_calls"] == 0
        second = Trajectory("q2")
        run.begin_turn(second, {"llm_calls": 2})
        assert run.trajectory is second and budget.spent()["llm_calls"] == 3  # 2 spent, 1 held again
        assert run.session.run_cell("print(x + 1)", iteration=1).output == "42\n"
    finally:
        run.close()


@pytest.mark.parametrize("answer,stop_reason,text", [
    ("plain text", "final", "plain text"),
    ({"n": 2}, "final", '{"n": 2}'),
    (7, "final", "7"),
    (None, "max_iterations", "(the child RLM stopped without an answer: max_iterations)"),
])
def test_a_childs_answer_reaches_the_parent_as_text(answer, stop_reason, text):
    assert child_answer(answer, stop_reason) == text


def test_rlm_query_starts_the_adapters_child_on_the_parents_ledger_and_loop():
    seen = []

    def start_child(query, context, depth, link):
        seen.append((query, context, depth, link))
        return None, "max_llm_calls"

    run = _open(Budget(max_depth=2), start_child=start_child)
    try:
        result = run.session.run_cell("print(rlm_query('q', 'ctx'))", iteration=1)
        assert "stopped without an answer: max_llm_calls" in result.output
        [(query, context, depth, link)] = seen
        assert (query, context, depth) == ("q", "ctx", 1)
        assert link.budget is run.budget and link.runner is run.runner and not link.owns_runner
        assert link.trajectory is not run.trajectory  # the child's node in the parent's trajectory
    finally:
        run.close()


def test_a_cell_stopped_at_a_cap_becomes_that_caps_stop():
    run = _open(Budget(max_llm_calls=9))
    try:
        exc = cap_of(CellResult(error="budget limit: max_llm_calls", limit="budget", stopped_by="max_llm_calls"),
                     run.budget)
        assert isinstance(exc, BudgetExceeded) and exc.limit == "max_llm_calls"
        assert run.record_cap(exc) == "max_llm_calls"
        assert run.record_cap(exc, what="extract skipped") == "max_llm_calls"
        messages = [e["message"] for e in run.trajectory.of_kind("budget")]
        assert messages == ["budget limit: max_llm_calls", "extract skipped: budget limit: max_llm_calls"]
    finally:
        run.close()


def test_an_iteration_is_charged_and_recorded_until_the_cap():
    run = _open(Budget(max_iterations=1))
    try:
        run.start_iteration(1)
        with pytest.raises(BudgetExceeded, match="max_iterations"):
            run.start_iteration(2)
        assert [e["iteration"] for e in run.trajectory.of_kind("iteration")] == [1]
    finally:
        run.close()


def test_the_checkpoint_decision_is_recorded_with_its_checkpoint():
    run = _open()
    try:
        verdict = run.judge(RefinementState(), "45213", Evaluation(passed=False, score=0.0, feedback="not there"),
                            checkpoint="grounding", iteration=3, max_refinements=2, min_gain=0.01)
        assert verdict.action == "refine"
        [event] = run.trajectory.of_kind("evaluation")
        assert (event["checkpoint"], event["decision"], event["iteration"]) == ("grounding", "refine", 3)
    finally:
        run.close()


class _WindowError(Exception):
    pass


_WindowError.__name__ = "ContextWindowExceededError"


@pytest.mark.parametrize("steps,reply,expect", [
    ([Step("a", "1")], None, "no earlier step to compact"),
    ([Step("a", "1"), Step("b", "2")], _WindowError("too long"), "steps to compact longer than the window too"),
])
def test_an_overflow_with_nothing_to_compact_stops_the_run(steps, reply, expect):
    def answer(prompt):
        raise reply

    run = _open()
    try:
        assert run.compact_oldest(FakeLM(answer), steps, query="q", iteration=4) is None
        [note] = run.trajectory.of_kind("note")
        assert note["message"].endswith(expect) and note["iteration"] == 4
    finally:
        run.close()


def test_an_overflow_compacts_the_oldest_half_with_the_root_lm():
    run = _open(Budget(max_llm_calls=9))
    try:
        count, summary = run.compact_oldest(FakeLM(lambda prompt: "x was set"), [Step("a", "1"), Step("b", "2"),
                                                                                   Step("c", "3")],
                                            query="q", iteration=2)
        assert count == 2 and summary.startswith(COMPACTED_MARK) and "x was set" in summary
        assert run.usage()["llm_calls"] == 1
    finally:
        run.close()


def test_an_overflow_without_budget_for_the_summary_raises_the_cap():
    run = _open(Budget(max_llm_calls=1))
    try:
        run.budget.reserve_call(tokens=0)  # the one call the cap allows, spent
        with pytest.raises(BudgetExceeded):
            run.compact_oldest(FakeLM(), [Step("a", "1"), Step("b", "2")], query="q", iteration=2)
    finally:
        run.close()
