"""The evaluator-checkpoint policy: accept, refine, or stop with the best answer so far.

Pure functions over a small JSON-able record, so a graph can keep it in
checkpointed state and a DSPy module in a local variable.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sandbox.engine.evaluator import Evaluation


@dataclass(frozen=True)
class RefinementState:
    """Rounds sent back so far, the best answer seen and its score, and the last score."""

    rounds: int = 0
    best_answer: Any = None
    best_score: float | None = None
    last_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "best_answer": self.best_answer, "best_score": self.best_score,
                "last_score": self.last_score}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RefinementState:
        return cls(**data) if data else cls()


@dataclass(frozen=True)
class Decision:
    """``action`` is ``"accept"``, ``"refine"`` or ``"stop"``; ``answer`` is what to return on accept/stop."""

    action: str
    answer: Any
    reason: str
    state: RefinementState


def decide(state: RefinementState, answer: Any, evaluation: Evaluation, *, max_refinements: int,
           min_gain: float) -> Decision:
    """Accept a passing answer; stop at the cap or when the score gained less than ``min_gain``
    over the last round (returning the best-scoring answer); otherwise send it back."""
    if state.best_score is None or evaluation.score > state.best_score:
        state = replace(state, best_answer=answer, best_score=float(evaluation.score))
    previous, state = state.last_score, replace(state, last_score=float(evaluation.score))
    if evaluation.passed:
        return Decision("accept", answer, "accepted", state)
    if previous is not None and evaluation.score - previous < min_gain:
        return Decision("stop", state.best_answer, "no_improvement", state)
    if state.rounds >= max_refinements:
        return Decision("stop", state.best_answer, "max_refinements", state)
    return Decision("refine", answer, "refine", replace(state, rounds=state.rounds + 1))


def feedback_message(evaluation: Evaluation) -> str:
    return (f"An evaluator checked your answer and did not accept it (score {evaluation.score:.2f}).\n"
            f"Feedback: {evaluation.feedback or '(none given)'}\n"
            "Improve the answer using the REPL, then call FINAL(answer) again.")
