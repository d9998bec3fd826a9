"""The evaluator-checkpoint policy (sandbox.engine.refinement): accept, refine, or stop with the best answer."""

from __future__ import annotations

import pytest

from sandbox.engine.evaluator import Evaluation
from sandbox.engine.refinement import RefinementState, decide, feedback_message


def run(scores_and_passes, *, max_refinements=2, min_gain=0.01):
    """Feed answers a0, a1, ... with the given (score, passed) verdicts; the decisions made."""
    state, decisions = RefinementState(), []
    for i, (score, passed) in enumerate(scores_and_passes):
        decision = decide(state, f"a{i}", Evaluation(score, passed), max_refinements=max_refinements,
                          min_gain=min_gain)
        decisions.append((decision.action, decision.answer, decision.reason))
        state = decision.state
        if decision.action != "refine":
            break
    return decisions, state


@pytest.mark.parametrize("verdicts,kwargs,decisions", [
    ([(1.0, True)], {}, [("accept", "a0", "accepted")]),
    ([(0.2, False), (0.9, True)], {}, [("refine", "a0", "refine"), ("accept", "a1", "accepted")]),
    # the cap: two rounds sent back, the third verdict stops with the best answer so far
    ([(0.2, False), (0.5, False), (0.4, False)], {"min_gain": -1},
     [("refine", "a0", "refine"), ("refine", "a1", "refine"), ("stop", "a1", "max_refinements")]),
    ([(0.2, False)], {"max_refinements": 0}, [("stop", "a0", "max_refinements")]),
    # no gain over the last round: stop, returning the best-scoring answer, not the last
    ([(0.6, False), (0.3, False)], {}, [("refine", "a0", "refine"), ("stop", "a0", "no_improvement")]),
    ([(0.5, False), (0.505, False)], {"min_gain": 0.01}, [("refine", "a0", "refine"), ("stop", "a1", "no_improvement")]),
    # a gain of exactly min_gain is enough to go on (scores exact in binary)
    ([(0.5, False), (0.75, False)], {"min_gain": 0.25}, [("refine", "a0", "refine"), ("refine", "a1", "refine")]),
    ([(0.5, False), (0.6, False), (1.0, True)], {},
     [("refine", "a0", "refine"), ("refine", "a1", "refine"), ("accept", "a2", "accepted")]),
    # a pass is accepted even past the cap and with no gain
    ([(0.9, False), (0.1, True)], {"max_refinements": 1}, [("refine", "a0", "refine"), ("accept", "a1", "accepted")]),
])
def test_decisions(verdicts, kwargs, decisions):
    assert run(verdicts, **kwargs)[0] == decisions


def test_the_state_keeps_rounds_best_and_last_and_survives_json():
    _, state = run([(0.6, False), (0.4, False)], min_gain=-1, max_refinements=5)
    assert state == RefinementState(rounds=2, best_answer="a0", best_score=0.6, last_score=0.4)
    assert RefinementState.from_dict(state.to_dict()) == state
    assert RefinementState.from_dict(None) == RefinementState() == RefinementState.from_dict({})


def test_feedback_names_the_score_and_the_evaluators_words():
    text = feedback_message(Evaluation(0.25, False, "the total is wrong"))
    assert "score 0.25" in text and "Feedback: the total is wrong" in text and "FINAL(answer)" in text
    assert "(none given)" in feedback_message(Evaluation(0.0, False))
