"""Evaluators: the protocol, coercion of user callables, and the LM judge."""

from __future__ import annotations

import asyncio
import json

import pytest

from sandbox import Budget, BudgetExceeded, CallableEvaluator, Evaluation, LMJudge, Trajectory, as_evaluator
from tests.conftest import FakeLM


@pytest.mark.parametrize("returned,expected", [
    (True, Evaluation(1.0, True)),
    (0.4, Evaluation(0.4, False)),
    ((0.9, "almost"), Evaluation(0.9, False, "almost")),
    ({"score": 1, "feedback": "ok"}, Evaluation(1.0, True, "ok")),
    ({"score": 0.2, "passed": True}, Evaluation(0.2, True)),
    (Evaluation(0.5, True, "x"), Evaluation(0.5, True, "x")),
])
def test_callables_are_coerced(returned, expected):
    assert as_evaluator(lambda q, a: returned)("q", "a", Trajectory()) == expected


def test_dspy_style_prediction_with_score_and_feedback():
    class Prediction:
        score, feedback = 0.7, "cite the source"

    evaluation = as_evaluator(lambda q, a, t: Prediction(), threshold=0.5)("q", "a", Trajectory())
    assert evaluation == Evaluation(0.7, True, "cite the source")


def test_three_argument_callables_receive_the_trajectory():
    trajectory = Trajectory("q")
    seen = []
    CallableEvaluator(lambda q, a, t: seen.append(t) or True)("q", "a", trajectory)
    assert seen == [trajectory]


def test_bad_returns_and_values_are_named():
    with pytest.raises(TypeError, match="an evaluator must return"):
        as_evaluator(lambda q, a: "yes")("q", "a", Trajectory())
    with pytest.raises(TypeError, match="finite number"):
        Evaluation(float("inf"), True)
    with pytest.raises(TypeError, match="callable"):
        CallableEvaluator(3)


def judge_reply(met):
    return lambda prompt: json.dumps({"results": [{"requirement": i + 1, "met": m, "reason": "r"}
                                                  for i, m in enumerate(met)], "feedback": "add the year"})


def test_lm_judge_scores_requirements():
    judge = LMJudge(FakeLM(judge_reply([True, False])), ["names the city", "gives the year"])
    evaluation = judge("Where and when?", "Paris", Trajectory())
    assert evaluation.score == 0.5 and not evaluation.passed
    assert "gives the year" in evaluation.feedback and "add the year" in evaluation.feedback
    assert LMJudge(FakeLM(judge_reply([True, True])), ["a", "b"])("q", "a").passed


def test_lm_judge_prompt_carries_query_answer_and_requirements():
    lm = FakeLM(judge_reply([True]))
    LMJudge(lm, ["is polite"])("the query", "the answer", Trajectory())
    assert "the query" in lm.calls[0] and "the answer" in lm.calls[0] and "1. is polite" in lm.calls[0]


def test_unparseable_verdict_fails_with_feedback():
    evaluation = LMJudge(FakeLM(lambda p: "looks fine to me"), ["x"])("q", "a")
    assert evaluation.score == 0 and not evaluation.passed and "could not be parsed" in evaluation.feedback


def test_judge_calls_count_against_the_budget():
    budget = Budget(max_llm_calls=1)
    judge = LMJudge(FakeLM(judge_reply([True])), ["x"], budget=budget)
    judge("q", "a")
    with pytest.raises(BudgetExceeded):
        judge("q", "a")


def test_judge_inside_an_event_loop_must_be_awaited():
    judge = LMJudge(FakeLM(judge_reply([True])), ["x"])

    async def main():
        with pytest.raises(RuntimeError, match="aevaluate"):
            judge("q", "a")
        return await judge.aevaluate("q", "a")

    assert asyncio.run(main()).passed


def test_requirements_must_be_strings():
    with pytest.raises(ValueError, match="requirements"):
        LMJudge(FakeLM(), [])
