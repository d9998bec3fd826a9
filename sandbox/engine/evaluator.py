"""Evaluator checkpoints: check a draft answer against the request before accepting it.

An evaluator is any callable ``(query, answer, trajectory) -> Evaluation``. The
adapters call it on each candidate final answer and send ``feedback`` back into
the loop when ``passed`` is false. :func:`as_evaluator` accepts the shapes users
already write (a bool/number/``(score, feedback)``-returning function, a DSPy
metric); :class:`LMJudge` checks a list of requirements with an LM.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sandbox.engine.budget import Budget
from sandbox.engine.trajectory import Trajectory, preview
from sandbox.lm.aio import AsyncRunner
from sandbox.lm.clients import LMClient, as_lm_client, metered_completion

Evaluator = Callable[[str, Any, Trajectory], "Evaluation"]


@dataclass(frozen=True)
class Evaluation:
    """The verdict on one answer: a score (higher is better), pass/fail, and what to fix."""

    score: float
    passed: bool
    feedback: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.score, bool) or not isinstance(self.score, (int, float)) or not math.isfinite(self.score):
            raise TypeError(f"Evaluation.score must be a finite number, got {self.score!r}")
        if not isinstance(self.passed, bool):
            raise TypeError(f"Evaluation.passed must be a bool, got {self.passed!r}")
        if not isinstance(self.feedback, str):
            raise TypeError(f"Evaluation.feedback must be a str, got {type(self.feedback).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return {"score": float(self.score), "passed": self.passed, "feedback": self.feedback}


def to_evaluation(result: Any, *, threshold: float = 1.0) -> Evaluation:
    """Coerce what an evaluator returned: Evaluation, bool, number, (score, feedback), dict, or an
    object with ``score``/``feedback`` attributes (``dspy.Prediction``)."""
    if isinstance(result, Evaluation):
        return result
    if isinstance(result, bool):
        return Evaluation(float(result), result)
    if isinstance(result, (int, float)):
        return Evaluation(float(result), float(result) >= threshold)
    if isinstance(result, tuple) and len(result) == 2:
        score, feedback = result
        return Evaluation(float(score), float(score) >= threshold, str(feedback))
    fields = result if isinstance(result, dict) else None
    if fields is None and hasattr(result, "score"):
        fields = {"score": result.score, "feedback": getattr(result, "feedback", ""),
                  **({"passed": result.passed} if hasattr(result, "passed") else {})}
    if fields is not None and "score" in fields:
        score = float(fields["score"])
        passed = fields.get("passed", score >= threshold)
        return Evaluation(score, bool(passed), str(fields.get("feedback", "") or ""))
    raise TypeError(f"an evaluator must return an Evaluation, bool, number, (score, feedback), or a dict/object "
                    f"with 'score' and 'feedback'; got {type(result).__name__}")


class CallableEvaluator:
    """Wraps ``fn(query, answer[, trajectory])`` returning any shape :func:`to_evaluation` accepts."""

    def __init__(self, fn: Callable[..., Any], *, threshold: float = 1.0):
        if not callable(fn):
            raise TypeError(f"evaluator must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.threshold = threshold
        try:
            params = inspect.signature(fn).parameters.values()
            positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            self._takes_trajectory = len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params)
        except (TypeError, ValueError):
            self._takes_trajectory = True

    def __call__(self, query: str, answer: Any, trajectory: Trajectory) -> Evaluation:
        args = (query, answer, trajectory) if self._takes_trajectory else (query, answer)
        return to_evaluation(self.fn(*args), threshold=self.threshold)


def as_evaluator(obj: Any, *, threshold: float = 1.0) -> Evaluator:
    """``obj`` as an evaluator: an LMJudge/CallableEvaluator as is, any other callable wrapped."""
    if isinstance(obj, (LMJudge, CallableEvaluator)):
        return obj
    return CallableEvaluator(obj, threshold=threshold)


DEFAULT_REQUIREMENTS = (
    "The answer responds directly to the query.",
    "The answer is complete: nothing the query asks for is missing.",
    "The answer is consistent with itself and with the evidence in the trajectory.",
)

_JUDGE_PROMPT = """You check whether an answer meets requirements. Be strict and brief.

Query:
{query}

Answer:
{answer}

Requirements:
{requirements}

Reply with JSON only, no prose:
{{"results": [{{"requirement": 1, "met": true, "reason": "..."}}, ...], "feedback": "what to fix, if anything"}}"""


class LMJudge:
    """An evaluator that asks an LM which of ``requirements`` the answer meets.

    ``score`` is the fraction met; ``passed`` is ``score >= threshold``. Its calls
    are metered against ``budget`` (pass the run's budget to count them in the tree).
    An unparseable verdict scores 0 with feedback saying so.
    """

    def __init__(self, lm: LMClient | str, requirements: Sequence[str] | None = None, *,
                 threshold: float = 1.0, budget: Budget | None = None, max_tokens: int = 512,
                 answer_chars: int = 8000):
        self.lm = as_lm_client(lm)
        reqs = list(requirements) if requirements is not None else list(DEFAULT_REQUIREMENTS)
        if not reqs or not all(isinstance(r, str) and r.strip() for r in reqs):
            raise ValueError("requirements must be a non-empty list of non-empty strings")
        self.requirements = reqs
        self.threshold = threshold
        self.budget = budget or Budget()
        self.max_tokens = max_tokens
        self.answer_chars = answer_chars
        self._runner = AsyncRunner()

    def prompt(self, query: str, answer: Any) -> str:
        numbered = "\n".join(f"{i}. {r}" for i, r in enumerate(self.requirements, 1))
        return _JUDGE_PROMPT.format(query=preview(str(query), self.answer_chars),
                                    answer=preview(str(answer), self.answer_chars), requirements=numbered)

    async def aevaluate(self, query: str, answer: Any, trajectory: Trajectory | None = None) -> Evaluation:
        completion = await metered_completion(self.lm, [{"role": "user", "content": self.prompt(query, answer)}],
                                              budget=self.budget, max_tokens=self.max_tokens)
        return self.parse(completion.text)

    def __call__(self, query: str, answer: Any, trajectory: Trajectory | None = None) -> Evaluation:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._runner.run(self.aevaluate(query, answer, trajectory))
        raise RuntimeError("LMJudge was called synchronously inside a running event loop; "
                           "use `await judge.aevaluate(query, answer, trajectory)` there")

    def parse(self, text: str) -> Evaluation:
        match = re.search(r"\{.*\}", text, re.DOTALL)
        try:
            verdict = json.loads(match.group(0)) if match else None
            results = verdict["results"]
            met = {int(r["requirement"]) for r in results if r.get("met") is True}
        except (ValueError, KeyError, TypeError, AttributeError):
            return Evaluation(0.0, False, f"the judge's verdict could not be parsed: {preview(text, 300)}")
        score = len(met & set(range(1, len(self.requirements) + 1))) / len(self.requirements)
        unmet = [r for i, r in enumerate(self.requirements, 1) if i not in met]
        feedback = str(verdict.get("feedback") or "")
        if unmet:
            feedback = ("Unmet: " + "; ".join(unmet) + (f". {feedback}" if feedback else "")).strip()
        return Evaluation(score, score >= self.threshold, feedback)
