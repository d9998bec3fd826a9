"""One live RLM run: the loop steps both adapters share.

A :class:`Run` holds what a run (or one turn of a multi-turn session) holds while it is live: the
REPL :class:`~sandbox.engine.session.Session`, the budget ledger it charges, the trajectory it
records into, the event loop its LM calls run on, and the one LM call held from the start for the
answer a run gives when it stops at a cap. The LangGraph nodes and the DSPy module drive their
loops through it, so each of these steps exists once:

- opening a run (its spans, its session, the held call) and closing it, also on failure;
- child runs (``rlm_query``): the child shares its parent's ledger and loop, and its answer comes
  back as text (:func:`child_answer`);
- budget stops: an iteration charged against the caps, a cap reached in a host call or in a cell,
  and the ``budget`` event that records it;
- the evaluator checkpoint: decide, record the ``evaluation`` event (:meth:`Run.judge`);
- the window-overflow policy: compact the oldest steps, or stop with ``context_window``
  (:meth:`Run.compact_oldest`; :mod:`sandbox.engine.compaction` says why this policy).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sandbox.boundary.repl import CellResult
from sandbox.engine import tracing
from sandbox.engine.bridge import ChildRunner
from sandbox.engine.budget import Budget, BudgetExceeded, Reservation, hold_last_call
from sandbox.engine.compaction import Step, compact, how_many_to_compact
from sandbox.engine.evaluator import Evaluation
from sandbox.engine.refinement import Decision, RefinementState, decide
from sandbox.engine.session import Session
from sandbox.engine.trajectory import Trajectory, preview
from sandbox.lm.aio import AsyncRunner
from sandbox.lm.clients import LMClient, is_context_window_error


@dataclass(frozen=True)
class RunLink:
    """What a run charges and records into: the ledger, the event loop its LM calls run on, and the
    trajectory. A child run gets its parent's ledger and loop and a trajectory nested in its
    parent's; ``owns_runner`` says whether the run must close the loop."""

    budget: Budget
    runner: AsyncRunner
    trajectory: Trajectory
    owns_runner: bool = False

    @classmethod
    def new(cls, budget: Budget, trajectory: Trajectory) -> RunLink:
        """A top-level run's link: its own ledger and trajectory, and a loop of its own."""
        return cls(budget, AsyncRunner(), trajectory, owns_runner=True)


# (query, context, depth, link) -> (answer, stop reason) of a child RLM; each adapter starts its own kind.
StartChild = Callable[[str, str, int, RunLink], tuple[Any, str]]


def child_answer(answer: Any, stop_reason: str) -> str:
    """What ``rlm_query`` returns to the parent's cell for a child's ``answer``: text as it is,
    another value as JSON, and a note naming the stop when the child gave no answer."""
    if answer is None:
        return f"(the child RLM stopped without an answer: {stop_reason})"
    return answer if isinstance(answer, str) else json.dumps(answer, default=str)


def cap_of(result: CellResult, budget: Budget) -> BudgetExceeded:
    """The cap that stopped a cell (``result.limit == "budget"``), as the exception a host call raises."""
    return BudgetExceeded(result.stopped_by or "max_seconds", result.error or "budget exhausted", budget.spent())


class Run:
    """A live run; :meth:`close` it (or :meth:`end_turn` to keep its REPL for the next question).

    Opening it opens its spans, then its session, then holds the call for the answer at a cap.
    ``session`` is the REPL with the run's inputs loaded and the host functions wired in;
    ``extract_hold`` that held call (``None`` when the caps leave no room for it, or once it is
    taken or given back). Each adapter subclasses it with what its own loop keeps.

    Args:
        link: the ledger, loop and trajectory (:meth:`RunLink.new`, or a parent's for a child).
        open_session: builds the Session, given the ``run_child`` function for ``rlm_query``.
        start_child: how the adapter starts a child RLM.
        engine: ``"langgraph"`` or ``"dspy"``, for the spans.
        root_model: the root LM's model name, for the spans.
        tracer_provider: where the spans go (default: the global provider).
        resumed: the run continues from a checkpoint.

    Raises:
        Exception: what ``open_session`` raised; the spans are ended and a loop the run owns is
            closed first, so nothing is left running.
    """

    def __init__(self, link: RunLink, open_session: Callable[[ChildRunner], Session], *, start_child: StartChild,
                 engine: str, root_model: str | None, tracer_provider: Any = None, resumed: bool = False):
        self.link, self.closed = link, False
        self.spans = {"engine": engine, "root_model": root_model, "tracer_provider": tracer_provider}
        self._start_child = start_child
        tracing.start_run(link.trajectory, resumed=resumed, **self.spans)
        try:
            self.session = open_session(self._run_child)
        except BaseException:
            tracing.end_run(link.trajectory)
            if link.owns_runner:
                link.runner.close()
            raise
        self.extract_hold: Reservation | None = hold_last_call(link.budget)

    def _run_child(self, query: str, context: str, depth: int, trajectory: Trajectory) -> str:
        answer, stop_reason = self._start_child(query, context, depth,
                                                RunLink(self.budget, self.runner, trajectory))
        return child_answer(answer, stop_reason)

    @property
    def budget(self) -> Budget:
        return self.link.budget

    @property
    def runner(self) -> AsyncRunner:
        return self.link.runner

    @property
    def trajectory(self) -> Trajectory:
        """The trajectory the run (or its current turn) records into."""
        return self.link.trajectory

    def usage(self) -> dict[str, Any]:
        """What the run has spent, not counting the call held for the answer at a cap."""
        spent = self.budget.spent()
        if self.extract_hold is not None:
            spent["llm_calls"] -= 1
        return spent

    def take_extract_hold(self) -> Reservation | None:
        """The held call, for the step that answers at a cap (it is no longer held by the run)."""
        held, self.extract_hold = self.extract_hold, None
        return held

    # -- turns and closing -------------------------------------------------------------

    def begin_turn(self, trajectory: Trajectory, usage: dict[str, Any]) -> None:
        """Start the next question of a session on this run's REPL: record into ``trajectory``,
        continue the ledger from ``usage``, open the turn's spans and hold its call."""
        self.budget.restore(usage)
        self.link = dataclasses.replace(self.link, trajectory=trajectory)
        self.session.begin_turn(trajectory)
        tracing.start_run(trajectory, **self.spans)
        self.extract_hold = hold_last_call(self.budget)

    def give_back_hold(self) -> None:
        """Give back the held call, unused (the run answered without it)."""
        held = self.take_extract_hold()
        if held is not None:
            self.budget.cancel(held, dispatched=False)

    def end_turn(self) -> None:
        """Give back the held call and end the turn's spans; the REPL stays open."""
        self.give_back_hold()
        tracing.end_run(self.trajectory)

    def close(self) -> None:
        """End the turn, stop the REPL's worker and (when the run owns it) the loop. Idempotent."""
        if self.closed:
            return
        self.closed = True
        try:
            self.end_turn()
            self.session.close()
        finally:
            if self.link.owns_runner:
                self.runner.close()

    # -- steps of the loop -------------------------------------------------------------

    def start_iteration(self, iteration: int) -> None:
        """Charge ``iteration`` against the caps and record it.

        Raises:
            BudgetExceeded: a cap leaves no room for another iteration.
        """
        self.budget.reserve_iteration()
        self.trajectory.record("iteration", iteration=iteration)

    def record_cap(self, exc: BudgetExceeded, *, what: str | None = None) -> str:
        """Record the ``budget`` event of a cap reached (``what``: the step it cut short, for the
        message); returns the cap's name, which is the run's stop reason when it stops the run."""
        self.trajectory.record("budget", limit=exc.limit, message=f"{what}: {exc}" if what else str(exc),
                               spent=exc.spent)
        return exc.limit

    def record_lm_call(self, iteration: int, reply: str, *, prompt_tokens: int, completion_tokens: int,
                       seconds: float, cost_usd: float | None = None, step: str | None = None) -> None:
        """Record one root LM call (``step`` names a call that is not an iteration's, e.g. ``"extract"``)."""
        self.trajectory.record("lm_call", iteration=iteration, **({"step": step} if step else {}),
                               reply=preview(reply), prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                               seconds=round(seconds, 4), **({} if cost_usd is None else {"cost_usd": cost_usd}))

    def record_final(self, answer: Any, stop_reason: str, **event: Any) -> None:
        """Record the run's ``final`` event."""
        self.trajectory.record("final", answer=preview(str(answer)) if answer is not None else None,
                               stop_reason=stop_reason, **event)

    def judge(self, refinement: RefinementState, answer: Any, evaluation: Evaluation, *, checkpoint: str,
              iteration: int, max_refinements: int, min_gain: float) -> Decision:
        """The evaluator checkpoint's decision on ``answer`` (accept, refine or stop; see
        :func:`~sandbox.engine.refinement.decide`), recorded as an ``evaluation`` event.

        Args:
            refinement: the refinement so far (best answer and score, rounds).
            answer: the candidate answer.
            evaluation: what the checkpoint said of it.
            checkpoint: ``"grounding"`` or ``"evaluator"``, for the record.
            iteration: the iteration that gave the answer.
            max_refinements, min_gain: when refining stops (see ``decide``).
        """
        verdict = decide(refinement, answer, evaluation, max_refinements=max_refinements, min_gain=min_gain)
        self.trajectory.record("evaluation", iteration=iteration, **evaluation.to_dict(), checkpoint=checkpoint,
                               decision=verdict.action, reason=verdict.reason)
        return verdict

    def compact_oldest(self, lm: LMClient, steps: list[Step], *, query: str,
                       iteration: int) -> tuple[int, str] | None:
        """The root's history outgrew its window: summarize its oldest steps with the root LM.

        Args:
            lm: the root LM.
            steps: the history's steps, oldest first.
            query: the run's query.
            iteration: the iteration whose root call overflowed.

        Returns:
            ``(count, summary)``: the first ``count`` steps are to be replaced by ``summary``; or
            ``None`` (recorded as a note) when there is no earlier step to compact or the steps
            overflow the window too: the run then stops with ``context_window``.

        Raises:
            BudgetExceeded: the budget has no room for the summary's call.
        """
        count = how_many_to_compact(steps)
        if not count:
            why = "no earlier step to compact"
        else:
            try:
                return count, self.runner.run(compact(lm, steps[:count], query=query, budget=self.budget,
                                                      trajectory=self.trajectory, iteration=iteration))
            except Exception as exc:
                if not is_context_window_error(exc):
                    raise
                why = "steps to compact longer than the window too"
        self.trajectory.record("note", iteration=iteration, message=f"root prompt longer than the model's window, "
                                                                   f"with {why}")
        return None
