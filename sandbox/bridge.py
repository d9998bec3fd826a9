"""The host functions behind ``llm_query``, ``llm_query_batched`` and ``rlm_query``.

One :class:`HostFunctions` serves one RLM at one depth. Every call is metered
against the shared :class:`~sandbox.budget.Budget` and recorded in the
trajectory. Inside the sandbox these become plain forwarding closures (see
``Sandbox(tools=...)``); the bound methods here never cross.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from sandbox.aio import AsyncRunner
from sandbox.budget import Budget, BudgetExceeded
from sandbox.lm import LMClient, metered_completion
from sandbox.redact import describe_error
from sandbox.trajectory import Trajectory, preview

# (query, context, depth, trajectory) -> answer of a child RLM; supplied by the adapters.
ChildRunner = Callable[[str, str, int, Trajectory], str]
ERROR_PREFIX = "ERROR: "


class HostFunctions:
    """``llm_query`` / ``llm_query_batched`` / ``rlm_query`` for an RLM at ``depth``.

    ``llm_query_batched`` runs at most ``max_concurrency`` calls at once, keeps the
    order of its prompts, and turns a failed prompt into an ``"ERROR: ..."`` string
    without losing the others. ``rlm_query`` starts a child RLM through
    ``run_child`` one level deeper; past ``budget.max_depth`` (or without
    ``run_child``) it answers with a plain ``llm_query`` and records that it did.
    ``max_calls`` caps this RLM's own sub-calls on top of the shared budget.
    """

    def __init__(self, *, lm: LMClient, budget: Budget, trajectory: Trajectory, runner: AsyncRunner,
                 depth: int = 0, max_concurrency: int = 8, max_tokens: int = 1024,
                 run_child: ChildRunner | None = None, max_calls: int | None = None):
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be an integer >= 1, got {max_concurrency!r}")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
        self.lm = lm
        self.budget = budget
        self.trajectory = trajectory
        self.runner = runner
        self.depth = depth
        self.max_concurrency = max_concurrency
        self.max_tokens = max_tokens
        self.run_child = run_child
        self.max_calls = max_calls  # this RLM's own sub-call cap (dspy.RLM's max_llm_calls), on top of the budget
        self._calls = 0
        self._calls_lock = threading.Lock()

    def tools(self) -> dict[str, Callable[..., Any]]:
        """The functions to hand to ``Sandbox(tools=...)``."""
        return {"llm_query": self.llm_query, "llm_query_batched": self.llm_query_batched,
                "rlm_query": self.rlm_query}

    # -- calls -----------------------------------------------------------------------

    async def _query(self, prompt: str, semaphore: asyncio.Semaphore | None = None) -> str:
        if semaphore is not None:
            async with semaphore:
                return await self._query(prompt)
        began = time.monotonic()
        try:
            self._count_call()
            completion = await metered_completion(self.lm, [{"role": "user", "content": prompt}],
                                                  budget=self.budget, max_tokens=self.max_tokens)
        except BudgetExceeded as exc:
            self.trajectory.record("budget", limit=exc.limit, message=str(exc), spent=exc.spent)
            raise
        except Exception as exc:
            kind, message = describe_error(exc)
            self.trajectory.record("sub_call", prompt=preview(prompt), prompt_chars=len(prompt), answer=None,
                                   error=f"{kind}: {message}", seconds=round(time.monotonic() - began, 4))
            if "ContextWindowExceeded" in kind:
                # Provider messages here run to paragraphs; a model needs one sentence it can act on.
                raise ValueError(f"the prompt ({len(prompt):,} characters) is longer than the sub-model's context "
                                 "window; pass a shorter text, e.g. a slice or the lines you found") from None
            raise
        self.trajectory.record("sub_call", prompt=preview(prompt), prompt_chars=len(prompt),
                               answer=preview(completion.text), prompt_tokens=completion.prompt_tokens,
                               completion_tokens=completion.completion_tokens,
                               seconds=round(time.monotonic() - began, 4), model=completion.model)
        return completion.text

    def _count_call(self) -> None:
        with self._calls_lock:
            if self.max_calls is not None and self._calls >= self.max_calls:
                raise BudgetExceeded("max_llm_calls", f"budget exhausted (max_llm_calls): this RLM's "
                                                      f"{self.max_calls} sub-calls are used", self.budget.spent())
            self._calls += 1

    def _run(self, coro: Any) -> Any:
        try:
            return self.runner.run(coro, timeout=self.budget.seconds_left())
        except TimeoutError:
            exc = BudgetExceeded("max_seconds", f"budget exhausted (max_seconds): {self.budget.max_seconds} s "
                                                "of wall-clock time used; pending LM calls were cancelled",
                                 self.budget.spent())
            self.trajectory.record("budget", limit=exc.limit, message=str(exc), spent=exc.spent)
            raise exc from None

    def llm_query(self, prompt: str) -> str:
        """One sub-LM call on ``prompt``; returns its text."""
        if not isinstance(prompt, str):
            raise TypeError(f"llm_query(prompt): prompt must be a str, got {type(prompt).__name__}")
        return self._run(self._query(prompt))

    def llm_query_batched(self, prompts: list[str]) -> list[str]:
        """Concurrent sub-LM calls, answers in prompt order; failures become ``"ERROR: ..."``."""
        if not isinstance(prompts, list):
            raise TypeError(f"llm_query_batched(prompts): prompts must be a list of str, "
                            f"got {type(prompts).__name__}")
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise TypeError(f"llm_query_batched(prompts): prompts[{i}] must be a str, "
                                f"got {type(prompt).__name__}")

        async def fan_out() -> list[Any]:
            semaphore = asyncio.Semaphore(self.max_concurrency)
            return await asyncio.gather(*(self._query(p, semaphore) for p in prompts), return_exceptions=True)

        answers = []
        for result in self._run(fan_out()):
            if isinstance(result, BudgetExceeded) and result.limit == "max_seconds":
                raise result  # out of time: the whole cell stops
            if isinstance(result, BaseException):
                kind, message = describe_error(result)
                answers.append(f"{ERROR_PREFIX}{kind}: {message}")
            else:
                answers.append(result)
        return answers

    def rlm_query(self, prompt: str, context: str | None = None) -> str:
        """A child RLM one level deeper answers ``prompt`` over ``context`` (default: the prompt)."""
        if not isinstance(prompt, str):
            raise TypeError(f"rlm_query(prompt, context=None): prompt must be a str, got {type(prompt).__name__}")
        if context is not None and not isinstance(context, str):
            raise TypeError(f"rlm_query(prompt, context=None): context must be a str or None, "
                            f"got {type(context).__name__}")
        child_depth = self.depth + 1
        if self.run_child is None or not self.budget.allows_depth(child_depth):
            reason = (f"max_depth={self.budget.max_depth} reached" if self.run_child is not None
                      else "no child RLM runner configured")
            self.trajectory.record("rlm_query", prompt=preview(prompt), child_depth=child_depth,
                                   degraded=True, reason=f"{reason}: answered with llm_query instead")
            return self.llm_query(prompt if context is None else f"{prompt}\n\n{context}")
        child = self.trajectory.child(prompt)
        self.trajectory.record("rlm_query", prompt=preview(prompt), child_depth=child_depth, degraded=False,
                               context_chars=len(context if context is not None else prompt))
        answer = self.run_child(prompt, context if context is not None else prompt, child_depth, child)
        return answer if isinstance(answer, str) else str(answer)
