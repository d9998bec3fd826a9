"""Compaction: when the root's history outgrows its model's window, the oldest steps become a summary.

Both engines apply one policy. On a context-window error from the root LM, the older half of the
steps (rounded up; never the newest) is summarized by one call to the root LM, metered by the
run's budget like any other, and replaced by that summary; the run goes on. A ``compaction``
event says how many steps went and how many characters became how many. A run with one step
left has nothing to compact and stops with ``context_window``, as before.

Why summarize rather than drop: the oldest steps are where the model looked at the context's
shape and found where things are; a run that forgets them silently repeats them, or answers
without the facts they found. Why the root LM: it is the model whose history this is, and the
request (the oldest steps, each cut to ``STEP_CHARS``) is far shorter than the prompt that
overflowed.
"""

from __future__ import annotations

from dataclasses import dataclass

from sandbox.engine.budget import Budget
from sandbox.engine.trajectory import Trajectory, preview
from sandbox.lm.clients import LMClient, Messages, metered_completion

SUMMARY_MAX_TOKENS = 512  # the summary's reply bound: a few hundred words keep a step's findings
STEP_CHARS = 2_000  # what the request shows of one step (head and tail): findings, not bulk output
COMPACTED_MARK = "[Compacted]"  # starts a summary's text, so a later compaction knows it for one
COMPACTED_STEPS = "(My earlier steps, compacted: their summary follows.)"  # stands for the root's own turn

COMPACT_SYSTEM_PROMPT = ("You summarize the steps of a program that is working on a query, so that it can "
                         "go on without them.")


@dataclass(frozen=True)
class Step:
    """One step of a root's history: what the root wrote (reasoning and code) and what came back."""

    said: str
    output: str


def how_many_to_compact(steps: list[Step]) -> int:
    """How many of the oldest ``steps`` to summarize: the older half, rounded up, never the newest,
    and never an earlier summary alone (summarizing it again would not shorten the history)."""
    count = min((len(steps) + 1) // 2, len(steps) - 1) if len(steps) > 1 else 0
    if count == 1 and steps[0].output.startswith(COMPACTED_MARK):
        count = 2 if len(steps) > 2 else 0
    return count


def _cut(text: str, limit: int = STEP_CHARS) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n... ({len(text) - limit:,} characters left out) ...\n{text[-half:]}"


def compaction_request(query: str, steps: list[Step]) -> Messages:
    """The messages of the summarizing call.

    Args:
        query: the run's query, so the summary keeps what matters to it.
        steps: the steps to summarize, oldest first.

    Returns:
        A system and a user message.
    """
    body = "\n\n".join(f"Step {i}. The program wrote:\n{_cut(step.said)}\nIt got back:\n{_cut(step.output)}"
                       for i, step in enumerate(steps, 1))
    return [{"role": "system", "content": COMPACT_SYSTEM_PROMPT},
            {"role": "user", "content": f"Query: {query}\n\n{body}\n\nSummarize these steps in a few short lines: "
                                        "what was tried, what was found (copy numbers, names and quoted text "
                                        "exactly, with the variable names that hold them), and what failed. "
                                        "Do not answer the query and do not guess."}]




def summary_text(summary: str) -> str:
    """What stands in the history for the oldest steps (an earlier summary among them, if any)."""
    return (f"{COMPACTED_MARK} The history was longer than the model's window, so its oldest steps became this "
            f"summary (the variables they made still exist in the REPL):\n{summary.strip()}")


async def compact(lm: LMClient, steps: list[Step], *, query: str, budget: Budget, trajectory: Trajectory,
                  iteration: int) -> str:
    """Summarize ``steps`` with one metered call to ``lm`` and record a ``compaction`` event.

    Args:
        lm: the root LM.
        steps: the oldest steps, as :func:`how_many_to_compact` chose them.
        query: the run's query.
        budget: the run's ledger; the call counts against it.
        trajectory: where the ``compaction`` event goes.
        iteration: the iteration whose root call overflowed.

    Returns:
        The text that replaces ``steps`` in the history (:func:`summary_text`).

    Raises:
        BudgetExceeded: the budget has no room for the call (the caller stops as for any cap).
        Exception: what ``lm`` raised, e.g. a context-window error (the caller stops the run).
    """
    completion = await metered_completion(lm, compaction_request(query, steps), budget=budget,
                                          max_tokens=SUMMARY_MAX_TOKENS)
    text = summary_text(completion.text)
    trajectory.record("compaction", iteration=iteration, steps=len(steps),
                      chars_before=sum(len(s.said) + len(s.output) for s in steps), chars_after=len(text),
                      prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens,
                      summary=preview(completion.text))
    return text
