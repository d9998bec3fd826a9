"""Why an RLM run stopped: the one vocabulary of ``stop_reason`` for both adapters, the CLI and the report.

A run's result (the graph's ``stop_reason`` key, the DSPy prediction's ``stop_reason``, the
``final`` trajectory event, ``rlm ask --json``) names its stop with one of
:data:`STOP_REASONS`. A cap's stop reason is the name of the cap, which is also the
``limit`` of its :class:`~sandbox.engine.budget.BudgetExceeded` and of its ``budget`` event.
"""

from __future__ import annotations

STOP_REASONS: dict[str, str] = {
    "final": "the model gave its answer (FINAL / SUBMIT)",
    "accepted": "the evaluator accepted the answer",
    "no_improvement": "the evaluator's score stopped improving; the best answer is kept",
    "max_refinements": "the refinement cap was reached; the best answer is kept",
    "max_iterations": "the iteration cap was reached (max_iterations, or DSPy's max_iters)",
    "max_llm_calls": "the budget's cap on the LM calls of the whole call tree was reached",
    "max_sub_calls": "the cap on one RLM's own sub-calls was reached (RLM(max_llm_calls=...), as in dspy.RLM)",
    "max_tokens": "the budget's token cap was reached",
    "max_cost_usd": "the budget's dollar cap was reached",
    "max_seconds": "the budget's wall-clock cap was reached",
    "context_window": "the root prompt no longer fit the model's context window",
    "interrupted": "the run was interrupted (Ctrl-C in rlm ask); the answer is what its events showed",
}
# The stops that come with an answer the run settled on; the others may carry a partial one.
COMPLETE_STOPS = frozenset({"final", "accepted", "no_improvement", "max_refinements"})


def meaning(reason: str | None) -> str:
    """What ``reason`` means, in one line; empty for a name outside :data:`STOP_REASONS`.

    Args:
        reason: a run's ``stop_reason``.

    Returns:
        The meaning, or ``""``.
    """
    return STOP_REASONS.get(reason or "", "")
