"""The host functions behind ``llm_query``, ``llm_query_batched``, ``rlm_query`` and ``search``.

One :class:`HostFunctions` serves one RLM at one depth. Every LM call is metered
against the shared :class:`~sandbox.engine.budget.Budget` and recorded in the
trajectory; ``search`` ranks passages of the host's own copy of ``context``
(:mod:`sandbox.engine.search`), costs nothing in the budget, and is recorded too.
Inside the sandbox these become plain forwarding closures (see
``Sandbox(tools=...)``); the bound methods here never cross.

A prompt longer than one sub-call may carry (the sub-model's input window when
litellm's local model map knows it, else ``max_prompt_chars``) is refused before
it is dispatched or charged; a refusal that repeats in a cell is recorded once,
with a count.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sandbox.boundary.redact import describe_error
from sandbox.engine import tracing
from sandbox.engine.budget import Budget, BudgetExceeded
from sandbox.engine.chunks import chunk_spans
from sandbox.engine.context import Context
from sandbox.engine.search import DEFAULT_K, PassageIndex
from sandbox.engine.subcall_cache import CachedLM, SubCallCache
from sandbox.engine.trajectory import Trajectory, preview
from sandbox.lm.aio import AsyncRunner
from sandbox.lm.clients import CHARS_PER_TOKEN, LMClient, input_window_tokens, metered_completion

# (query, context, depth, trajectory) -> answer of a child RLM; supplied by the adapters.
ChildRunner = Callable[[str, str, int, Trajectory], str]
ERROR_PREFIX = "ERROR: "
DEFAULT_MAX_PROMPT_CHARS = 400_000  # about 100K tokens: one sub-call's cap when the sub-model's window is unknown
DEFAULT_CHUNK_CHARS = 4_000  # one llm_map chunk: a few records, well inside a small model's window
MIN_CHUNK_CHARS, MAX_CHUNK_CHARS = 200, 100_000
SEARCH_EVENTS_PER_CELL = 50  # searches a cell records in full; later ones are only counted


@dataclass(frozen=True)
class PromptLimit:
    """The most characters one sub-call prompt may have, and a clause saying where that number comes from."""

    chars: int
    source: str


def prompt_limit(lm: LMClient, max_prompt_chars: int | None) -> PromptLimit:
    """How long one prompt to ``lm`` may be: ``max_prompt_chars`` when given, else the sub-model's
    input window (about ``CHARS_PER_TOKEN`` characters a token) when known, else the default cap.

    Args:
        lm: the sub-model's client.
        max_prompt_chars: an explicit cap in characters, or ``None``.

    Returns:
        The limit and a clause for the error message.
    """
    if max_prompt_chars is not None:
        return PromptLimit(max_prompt_chars, f"one sub-call allows at most {max_prompt_chars:,} "
                                             f"(max_prompt_chars={max_prompt_chars})")
    tokens = input_window_tokens(lm)
    if tokens is not None:
        chars = tokens * CHARS_PER_TOKEN
        return PromptLimit(chars, f"the sub-model's window ({tokens:,} tokens) allows about {chars:,}")
    return PromptLimit(DEFAULT_MAX_PROMPT_CHARS, f"one sub-call allows at most {DEFAULT_MAX_PROMPT_CHARS:,} "
                                                 "(the default max_prompt_chars; the sub-model's window is unknown)")


class HostFunctions:
    """``llm_query`` / ``llm_query_batched`` / ``rlm_query`` / ``search`` for an RLM at ``depth``.

    ``llm_query_batched`` runs at most ``max_concurrency`` calls at once, keeps the
    order of its prompts, and turns a failed prompt into an ``"ERROR: ..."`` string
    without losing the others. ``rlm_query`` starts a child RLM through
    ``run_child`` one level deeper; past ``budget.max_depth`` (or without
    ``run_child``) it answers with a plain ``llm_query`` and records that it did.
    ``max_calls`` caps this RLM's own sub-calls on top of the shared budget.
    ``max_prompt_chars`` caps one prompt (``None``: the sub-model's window when
    litellm's local map knows it, else ``DEFAULT_MAX_PROMPT_CHARS``); a longer one is a
    ``ValueError`` in the cell, never dispatched and never charged. ``search`` ranks the
    passages of ``context`` (the RLM's own, on the host), indexed on its first call.
    When ``lm`` is a :class:`~sandbox.engine.subcall_cache.CachedLM`, a sub-call it answered before
    is served from its cache: not dispatched, not charged, recorded with ``cached=True``.
    """

    def __init__(self, *, lm: LMClient, budget: Budget, trajectory: Trajectory, runner: AsyncRunner,
                 depth: int = 0, max_concurrency: int = 8, max_tokens: int = 1024,
                 run_child: ChildRunner | None = None, max_calls: int | None = None,
                 max_prompt_chars: int | None = None, context: Context | None = None):
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be an integer >= 1, got {max_concurrency!r}")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
        if max_prompt_chars is not None and (isinstance(max_prompt_chars, bool)
                                             or not isinstance(max_prompt_chars, int) or max_prompt_chars < 1):
            raise ValueError(f"max_prompt_chars must be an integer >= 1 or None, got {max_prompt_chars!r}")
        self.lm = lm
        self.budget = budget
        self.trajectory = trajectory
        self.runner = runner
        self.depth = depth
        self.max_concurrency = max_concurrency
        self.max_tokens = max_tokens
        self.run_child = run_child
        self.max_calls = max_calls  # this RLM's own sub-call cap (dspy.RLM's max_llm_calls), on top of the budget
        self.max_prompt_chars = max_prompt_chars
        self.context = context
        self.passages = PassageIndex(context) if context is not None else None
        self._calls = 0
        self._calls_lock = threading.Lock()

    @functools.cached_property
    def prompt_limit(self) -> PromptLimit:
        """The cap on one prompt, worked out on first use (it may read litellm's model map)."""
        return prompt_limit(self.lm, self.max_prompt_chars)

    def tools(self) -> dict[str, Callable[..., Any]]:
        """The functions to hand to ``Sandbox(tools=...)``."""
        return {"llm_query": self.llm_query, "llm_query_batched": self.llm_query_batched,
                "llm_map": self.llm_map, "rlm_query": self.rlm_query, "search": self.search}

    # -- calls -----------------------------------------------------------------------

    async def _query(self, prompt: str, semaphore: asyncio.Semaphore | None = None) -> str:
        if semaphore is not None:
            async with semaphore:
                return await self._query(prompt)
        began = time.monotonic()
        messages = [{"role": "user", "content": prompt}]
        cache: SubCallCache | None = self.lm.cache if isinstance(self.lm, CachedLM) else None
        hit = cache.lookup(self.lm, messages, self.max_tokens) if cache is not None else None
        if hit is not None:  # answered before: no call, nothing charged
            self.trajectory.record("sub_call", prompt=preview(prompt), prompt_chars=len(prompt),
                                   answer=preview(hit.text), prompt_tokens=0, completion_tokens=0, cached=True,
                                   seconds=round(time.monotonic() - began, 4), model=hit.model)
            return hit.text
        try:
            self._count_call()
            completion = await metered_completion(self.lm, messages, budget=self.budget, max_tokens=self.max_tokens)
        except BudgetExceeded as exc:
            # Once per cell and cap: a cell looping on refused calls must not grow the record per call.
            self.trajectory.record_repeated("budget", exc.limit, limit=exc.limit, message=str(exc), spent=exc.spent)
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
        if cache is not None:
            cache.remember(self.lm, messages, self.max_tokens, completion)
        cost = {} if completion.cost_usd is None else {"cost_usd": completion.cost_usd}
        self.trajectory.record("sub_call", prompt=preview(prompt), prompt_chars=len(prompt),
                               answer=preview(completion.text), prompt_tokens=completion.prompt_tokens,
                               completion_tokens=completion.completion_tokens,
                               seconds=round(time.monotonic() - began, 4), model=completion.model, **cost)
        return completion.text

    def _refuse_long(self, prompt: str, what: str) -> ValueError | None:
        """The error for a prompt longer than :attr:`prompt_limit` (recorded once per cell), else ``None``.

        Stops ``llm_query(context * 10**4)`` from sending a 100 MB prompt to the provider, and from
        charging the budget for a call that cannot succeed.
        """
        limit = self.prompt_limit
        if len(prompt) <= limit.chars:
            return None
        message = f"{what} is {len(prompt):,} characters; {limit.source}; pass a slice or only the lines you need"
        self.trajectory.record_repeated("note", "max_prompt_chars", message=message, refused="max_prompt_chars",
                                        prompt_chars=len(prompt), max_prompt_chars=limit.chars)
        return ValueError(message)

    def _can_recurse(self) -> bool:
        return self.run_child is not None and self.budget.allows_depth(self.depth + 1)

    def _rlm_query_prompt(self, prompt: str, context: str | None) -> tuple[str, str]:
        """The text of an ``rlm_query`` that is capped, and its name for the error: the child's query,
        or, where no child can start, the ``llm_query`` prompt sent instead."""
        if self._can_recurse() or context is None:
            return prompt, "the prompt"
        return f"{prompt}\n\n{context}", "the prompt with its context"

    def answered_from_arguments(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> bool:
        """Whether the host function ``name`` answers this call from its arguments alone: they are
        wrong, or every prompt is over :attr:`prompt_limit`; ``search`` always does (its answer depends
        on the arguments and the context, which never changes). Such a call reaches no LM and depends
        on nothing that changes, so a replay log needs no entry for it (nothing is recorded here).

        Args:
            name: ``"llm_query"``, ``"llm_query_batched"``, ``"llm_map"``, ``"rlm_query"`` or ``"search"``.
            args: the call's positional arguments.
            kwargs: the call's keyword arguments.

        Returns:
            ``True`` when the call is refused (or answered) without an LM call.
        """
        if name == "search":
            return True
        method = self.tools().get(name)
        if method is None:
            return False
        try:
            call = inspect.signature(method).bind(*args, **kwargs).arguments
        except TypeError:
            return True
        if name == "llm_map":
            try:
                self._check_map_args(call["instruction"], call.get("items"), call.get("chunk_chars", DEFAULT_CHUNK_CHARS))
            except (TypeError, ValueError):
                return True
            return False
        limit = self.prompt_limit.chars
        if name == "llm_query_batched":
            prompts = call["prompts"]
            return (not isinstance(prompts, list) or any(not isinstance(p, str) for p in prompts)
                    or all(len(p) > limit for p in prompts))
        prompt, context = call["prompt"], call.get("context")
        if not isinstance(prompt, str) or not (context is None or isinstance(context, str)):
            return True
        capped = self._rlm_query_prompt(prompt, context)[0] if name == "rlm_query" else prompt
        return len(capped) > limit

    def _count_call(self) -> None:
        with self._calls_lock:
            if self.max_calls is not None and self._calls >= self.max_calls:
                raise BudgetExceeded("max_sub_calls", f"budget exhausted (max_sub_calls): this RLM's "
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
        """One sub-LM call on ``prompt``.

        Args:
            prompt: the whole prompt; the sub-model sees nothing else.

        Returns:
            The sub-model's text.

        Raises:
            TypeError: ``prompt`` is not a str.
            ValueError: ``prompt`` is longer than :attr:`prompt_limit` (nothing was sent or charged).
            BudgetExceeded: a cap of the budget (or ``max_calls``) was reached.
        """
        if not isinstance(prompt, str):
            raise TypeError(f"llm_query(prompt): prompt must be a str, got {type(prompt).__name__}")
        refusal = self._refuse_long(prompt, "the prompt")
        if refusal is not None:
            raise refusal
        return self._run(self._query(prompt))

    def llm_query_batched(self, prompts: list[str]) -> list[str]:
        """Concurrent sub-LM calls, at most ``max_concurrency`` at once.

        Args:
            prompts: one whole prompt per call.

        Returns:
            The answers in prompt order; a failed or refused prompt (too long, budget reached)
            answers ``"ERROR: <type>: <message>"`` without losing the others.

        Raises:
            TypeError: ``prompts`` is not a list of str.
            BudgetExceeded: the wall-clock budget ran out (the whole cell stops).
        """
        if not isinstance(prompts, list):
            raise TypeError(f"llm_query_batched(prompts): prompts must be a list of str, "
                            f"got {type(prompts).__name__}")
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise TypeError(f"llm_query_batched(prompts): prompts[{i}] must be a str, "
                                f"got {type(prompt).__name__}")
        results: list[Any] = [self._refuse_long(prompt, f"prompts[{i}]") for i, prompt in enumerate(prompts)]
        sent = [i for i, refusal in enumerate(results) if refusal is None]

        async def fan_out() -> list[Any]:
            semaphore = asyncio.Semaphore(self.max_concurrency)
            return await asyncio.gather(*(self._query(prompts[i], semaphore) for i in sent), return_exceptions=True)

        if sent:
            for i, result in zip(sent, self._run(fan_out())):
                results[i] = result
        return [_answer(result) for result in results]

    def llm_map(self, instruction: str, items: list[str] | None = None,
                chunk_chars: int = DEFAULT_CHUNK_CHARS) -> list[Any]:
        """``instruction`` asked about each item at once (as ``llm_query_batched``), answers parsed.

        The map half of map-reduce for a small model: meaning goes to the sub-calls, counting and
        combining stay in code. Without ``items`` the items are consecutive chunks of the host's
        own copy of ``context`` (cut at line or sentence ends, each record in one chunk), so the
        context never crosses back through the REPL.

        Args:
            instruction: what to ask about each item; each prompt is the instruction, then the item.
            items: the texts to ask about; default: ``context`` in chunks of ``chunk_chars``.
            chunk_chars: the most characters in one chunk of ``context``.

        Returns:
            One answer per item, in order, parsed: a whole number or decimal as a number, yes/no
            and true/false as a bool, a JSON list or object as such, anything else as stripped
            text; a failed item is ``"ERROR: <type>: <message>"``.

        Raises:
            TypeError, ValueError: the arguments are wrong, or there are no items and no text context.
            BudgetExceeded: the wall-clock budget ran out (the whole cell stops).
        """
        self._check_map_args(instruction, items, chunk_chars)
        if items is None:
            documents = [self.context] if isinstance(self.context, str) else self.context
            items = [doc[start:end] for doc in documents for start, end in chunk_spans(doc, chunk_chars)]
        answers = self.llm_query_batched([f"{instruction}\n\nText:\n{item}" for item in items])
        return [answer if answer.startswith(ERROR_PREFIX) else parse_answer(answer) for answer in answers]

    def _check_map_args(self, instruction: Any, items: Any, chunk_chars: Any) -> None:
        if not isinstance(instruction, str) or not instruction.strip():
            raise TypeError("llm_map(instruction, items=None): instruction must be a non-empty str")
        if isinstance(chunk_chars, bool) or not isinstance(chunk_chars, int) or \
                not MIN_CHUNK_CHARS <= chunk_chars <= MAX_CHUNK_CHARS:
            raise ValueError(f"llm_map: chunk_chars must be an int from {MIN_CHUNK_CHARS:,} to {MAX_CHUNK_CHARS:,}, "
                             f"got {chunk_chars!r}")
        if items is None and self.context is None:
            raise ValueError("llm_map(instruction) maps over `context`, and this REPL has no text `context`; "
                             "pass items=[...] (a list of str)")
        if items is not None and (not isinstance(items, list) or any(not isinstance(item, str) for item in items)):
            raise TypeError("llm_map(instruction, items): items must be a list of str")

    def rlm_query(self, prompt: str, context: str | None = None) -> str:
        """A child RLM one level deeper answers ``prompt`` over ``context``.

        Args:
            prompt: the child's query (it reaches the child's root prompt, so it is capped like a
                sub-call prompt).
            context: the child's ``context`` variable; default: the prompt.

        Returns:
            The child's answer as text; past ``max_depth``, a plain ``llm_query`` answer.

        Raises:
            TypeError: ``prompt`` is not a str, or ``context`` is neither a str nor ``None``.
            ValueError: ``prompt`` is longer than :attr:`prompt_limit` (nothing was run or charged).
            BudgetExceeded: a cap of the budget was reached.
        """
        if not isinstance(prompt, str):
            raise TypeError(f"rlm_query(prompt, context=None): prompt must be a str, got {type(prompt).__name__}")
        if context is not None and not isinstance(context, str):
            raise TypeError(f"rlm_query(prompt, context=None): context must be a str or None, "
                            f"got {type(context).__name__}")
        capped, what = self._rlm_query_prompt(prompt, context)
        refusal = self._refuse_long(capped, what)
        if refusal is not None:
            raise refusal
        child_depth = self.depth + 1
        if not self._can_recurse():
            reason = (f"max_depth={self.budget.max_depth} reached" if self.run_child is not None
                      else "no child RLM runner configured")
            with tracing.rlm_query_span(self.trajectory, None):
                self.trajectory.record("rlm_query", prompt=preview(prompt), child_depth=child_depth,
                                       degraded=True, reason=f"{reason}: answered with llm_query instead")
                return self._run(self._query(capped))
        child = self.trajectory.child(prompt)
        with tracing.rlm_query_span(self.trajectory, child):
            self.trajectory.record("rlm_query", prompt=preview(prompt), child_depth=child_depth, degraded=False,
                                   context_chars=len(context if context is not None else prompt))
            answer = self.run_child(prompt, context if context is not None else prompt, child_depth, child)
        return answer if isinstance(answer, str) else str(answer)

    def search(self, query: str, k: int = DEFAULT_K) -> list[dict[str, Any]]:
        """The ``k`` passages of ``context`` that best match ``query`` (BM25), best first; the first
        call builds the index. Free in the budget; recorded in the trajectory with a preview of the
        best passage (in full for the first ``SEARCH_EVENTS_PER_CELL`` searches of a cell).

        Args:
            query: the words to look for.
            k: how many passages to return at most, 1 to ``sandbox.engine.search.MAX_K``.

        Returns:
            ``{"offset", "text", "score"}`` per passage (with ``"doc"`` for a list context); see
            :meth:`sandbox.engine.search.PassageIndex.search`.

        Raises:
            TypeError, ValueError: the arguments are wrong, or this RLM has no text ``context``.
        """
        if self.passages is None:
            raise ValueError("search(query, k) searches `context`, and this REPL has no `context` that is a str "
                             "or a list of str; look through your variables with code instead")
        began, built = time.monotonic(), self.passages.built
        hits = self.passages.search(query, k)
        self.trajectory.record_limited(
            "search", SEARCH_EVENTS_PER_CELL, query=preview(query), k=k,
            hits=[{key: value for key, value in hit.items() if key != "text"} for hit in hits],
            top=preview(hits[0]["text"]) if hits else None, built_index=not built,
            seconds=round(time.monotonic() - began, 4))
        return hits


def parse_answer(text: str) -> Any:
    """A sub-model's short answer as a value: ``"42."`` -> 42, ``"Yes"`` -> True, ``'["a"]'`` -> ["a"];
    anything else is the text, stripped of spaces, quotes and a final period."""
    plain = text.strip()
    if plain[:1] in ("[", "{"):
        try:
            return json.loads(plain)
        except ValueError:
            pass
    word = plain.rstrip(".").strip().strip("`\"'").strip()
    if word.lower() in ("yes", "true"):
        return True
    if word.lower() in ("no", "false"):
        return False
    number = word.replace(",", "")
    if re.fullmatch(r"[-+]?\d+", number):
        return int(number)
    if re.fullmatch(r"[-+]?\d*\.\d+", number):
        return float(number)
    return word


def _answer(result: Any) -> str:
    """One ``llm_query_batched`` answer: the text, or ``"ERROR: ..."`` for a failure."""
    if isinstance(result, BudgetExceeded) and result.limit == "max_seconds":
        raise result  # out of time: the whole cell stops
    if isinstance(result, BaseException):
        kind, message = describe_error(result)
        return f"{ERROR_PREFIX}{kind}: {message}"
    return result
