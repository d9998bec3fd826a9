"""Multi-turn sessions: one REPL, several questions, each a turn with its own iterations.

Both adapters keep the REPL (the context and every variable the cells made) between the
questions of a session; the root LM of a follow-up starts a fresh conversation that opens
with :func:`summary`, a few lines per earlier turn (its question, answer, stop reason and
the names of the variables it made), never the earlier transcripts.

Budgets: with ``scope="turn"`` each question gets the caps afresh; with ``scope="session"``
the caps cover the whole session, each turn's ledger starting from what the earlier turns
spent (:func:`starting_usage`), wall-clock included (time between questions does not count).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sandbox.engine.trajectory import preview

BudgetScope = Literal["turn", "session"]
BUDGET_SCOPES = ("turn", "session")
SUMMARY_ANSWER_CHARS = 300  # of each earlier answer, in the summary
SUMMARY_QUERY_CHARS = 300
SUMMARY_TURNS = 20  # the most recent turns the summary lists; older ones are only counted
USAGE_KEYS = ("iterations", "llm_calls", "tokens", "prompt_tokens", "completion_tokens", "cost_usd", "seconds")


@dataclass(frozen=True)
class Turn:
    """What one question of a session did: plain data, JSON-serializable (a checkpoint keeps it)."""

    query: str
    answer: Any
    stop_reason: str
    iterations: int
    variables: list[str] = field(default_factory=list)  # the REPL names this turn made
    usage: dict[str, Any] = field(default_factory=dict)  # what this turn spent

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Turn:
        return cls(query=data["query"], answer=data.get("answer"), stop_reason=data.get("stop_reason") or "",
                   iterations=int(data.get("iterations", 0)), variables=list(data.get("variables", [])),
                   usage=dict(data.get("usage", {})))


def check_scope(scope: Any) -> BudgetScope:
    """``scope`` if it names a budget scope.

    Raises:
        ValueError: it is not ``"turn"`` or ``"session"``.
    """
    if scope not in BUDGET_SCOPES:
        raise ValueError(f"budget_scope must be 'turn' (each question gets the caps afresh) or 'session' "
                         f"(the caps cover every question of the session), got {scope!r}")
    return scope


def made_variables(before: Iterable[str], after: Iterable[str]) -> list[str]:
    """The names in ``after`` that were not in ``before``, in ``after``'s order."""
    known = set(before)
    return [name for name in after if name not in known]


def total_usage(turns: Sequence[Turn]) -> dict[str, Any]:
    """What ``turns`` spent together (the keys of :meth:`Budget.spent`)."""
    total: dict[str, Any] = {key: 0 for key in USAGE_KEYS}
    total["cost_usd"] = total["seconds"] = 0.0
    for turn in turns:
        for key in USAGE_KEYS:
            total[key] += turn.usage.get(key, 0)
    total["cost_usd"], total["seconds"] = round(total["cost_usd"], 8), round(total["seconds"], 3)
    return total


def usage_since(spent: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """What a ledger that read ``before`` at a turn's start and reads ``spent`` now drew in that turn."""
    own = {key: spent.get(key, 0) - before.get(key, 0) for key in USAGE_KEYS}
    own["cost_usd"], own["seconds"] = round(own["cost_usd"], 8), round(own["seconds"], 3)
    return own


def starting_usage(turns: Sequence[Turn], *, scope: BudgetScope) -> dict[str, Any]:
    """What a session's ledger reads when a new turn starts: nothing (``"turn"``), or what
    ``turns`` spent (``"session"``). Restore the turn's :class:`Budget` from it, and pass it to
    :func:`usage_since` at the turn's end.

    Args:
        turns: the session's earlier turns.
        scope: whether the caps cover one turn or the session.

    Returns:
        The ledger's counts, the keys of :meth:`Budget.spent`.
    """
    return total_usage(turns) if scope == "session" else {}


def summary(turns: Sequence[Turn]) -> str:
    """What the root LM of a follow-up is told of the earlier turns: one short entry per turn.

    Args:
        turns: the session's earlier turns, oldest first.

    Returns:
        The text, or ``""`` when there are none.
    """
    if not turns:
        return ""
    shown = turns[-SUMMARY_TURNS:]
    lines = [f"This is a follow-up question: the REPL still holds every variable from {len(turns)} earlier "
             "question(s) of this session. Use them; they are not recomputed for you."]
    if len(turns) > len(shown):
        lines.append(f"({len(turns) - len(shown)} older question(s) not listed.)")
    for number, turn in enumerate(shown, len(turns) - len(shown) + 1):
        answer = "(no answer)" if turn.answer is None else preview(str(turn.answer), SUMMARY_ANSWER_CHARS)
        made = ", ".join(turn.variables) if turn.variables else "(none)"
        lines.append(f"{number}. Question: {preview(turn.query, SUMMARY_QUERY_CHARS)}\n"
                     f"   Answer: {answer} (stop reason: {turn.stop_reason}, {turn.iterations} iteration(s))\n"
                     f"   Variables it made: {made}")
    return "\n".join(lines)
