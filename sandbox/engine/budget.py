"""One ledger of spend for a whole RLM call tree: root, sub-LM calls and child RLMs.

Every LM call *reserves* before it is dispatched (one call, plus an upper bound on
its tokens and dollars) and *commits* the real usage afterwards, under a lock. A
parallel fan-out therefore cannot overshoot a cap: 64 concurrent calls against
``max_llm_calls=10`` dispatch exactly 10. The lock is held only for arithmetic, so
the ledger is safe from threads and from asyncio tasks alike.

By default the ledger lives in the process, one per top-level call. A
:class:`SharedLedger` (``Budget(..., ledger=PostgresLedger(url, key))``) moves the
counts of calls, tokens, dollars and iterations to where several processes see
them: every Budget on the same ledger draws from one pool, with the same
reserve-before-dispatch guarantee, across all its runs (``fresh()`` keeps it).
``spent()`` still reports what this Budget itself drew.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from sandbox.boundary.caps import CapReached


class BudgetExceeded(CapReached):
    """A cap was reached. ``limit`` names it; ``spent`` is the ledger at that moment.

    Callers catch it to return a partial answer with what was spent; raised in a host function,
    it stops the running cell (:class:`~sandbox.boundary.caps.CapReached`).
    """

    def __init__(self, limit: str, message: str, spent: dict[str, Any]):
        super().__init__(limit, message)
        self.spent = spent


@dataclass(frozen=True)
class Reservation:
    """What one call holds against the caps until it commits or is cancelled."""

    tokens: int
    cost_usd: float


_LIMITS = ("max_iterations", "max_llm_calls", "max_tokens", "max_cost_usd", "max_seconds", "max_depth")


class CapReached(Exception):
    """A shared ledger refused a draw: ``limit`` names the cap, ``detail`` says what is used."""

    def __init__(self, limit: str, detail: str):
        super().__init__(detail)
        self.limit = limit
        self.detail = detail


@runtime_checkable
class SharedLedger(Protocol):
    """Counts kept outside one Budget, so that every Budget using it draws from one pool.

    Each method is atomic against every other user of the ledger (other threads and
    other processes). ``caps`` maps ``max_iterations``, ``max_llm_calls``, ``max_tokens``
    and ``max_cost_usd`` to a number or ``None`` (no cap).
    """

    def reserve_iteration(self, caps: dict[str, Any]) -> None:
        """Count one root-loop iteration, or raise :class:`CapReached`."""
        ...

    def reserve_call(self, caps: dict[str, Any], *, tokens: int, cost_usd: float) -> None:
        """Count one call and hold ``tokens`` and ``cost_usd`` for it, or raise :class:`CapReached`."""
        ...

    def settle(self, reservation: Reservation, *, dispatched: bool, prompt_tokens: int = 0,
               completion_tokens: int = 0, cost_usd: float = 0.0) -> None:
        """Release what ``reservation`` held and add what the call used (a call that was
        never dispatched is not counted)."""
        ...

    def totals(self) -> dict[str, Any]:
        """What every user of the ledger has spent: ``iterations``, ``llm_calls``, ``tokens``,
        ``prompt_tokens``, ``completion_tokens``, ``cost_usd``."""
        ...


class Budget:
    """Caps for a call tree (``None`` = no cap) and the running ledger against them.

    ``max_depth`` is the deepest recursion level ``rlm_query`` may start (the root
    is depth 0; the default 1 allows children of the root). ``max_seconds`` is
    wall-clock from :meth:`start`, enforced preemptively by the sandbox and by
    every pending call.

    With a ``ledger`` (a :class:`SharedLedger`, e.g. :class:`sandbox.PostgresLedger`),
    ``max_iterations``, ``max_llm_calls``, ``max_tokens`` and ``max_cost_usd`` cap the
    ledger's totals, over every Budget and process that uses it; ``max_seconds`` and
    ``max_depth`` stay per run.
    """

    def __init__(self, *, max_iterations: int | None = None, max_llm_calls: int | None = None,
                 max_tokens: int | None = None, max_cost_usd: float | None = None,
                 max_seconds: float | None = None, max_depth: int = 1, ledger: SharedLedger | None = None):
        values = dict(max_iterations=max_iterations, max_llm_calls=max_llm_calls, max_tokens=max_tokens,
                      max_cost_usd=max_cost_usd, max_seconds=max_seconds, max_depth=max_depth)
        for name, value in values.items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise TypeError(f"Budget({name}=...) must be a number or None, got {value!r}")
            if value < 0:
                raise ValueError(f"Budget({name}=...) must be >= 0, got {value!r}")
            if name in ("max_iterations", "max_llm_calls", "max_tokens", "max_depth") and value != int(value):
                raise ValueError(f"Budget({name}=...) must be a whole number, got {value!r}")
        if max_depth is None:
            raise TypeError("Budget(max_depth=...) must be a whole number >= 0, got None")
        if ledger is not None and not isinstance(ledger, SharedLedger):
            raise TypeError(f"Budget(ledger=...) must be a SharedLedger (e.g. sandbox.PostgresLedger), "
                            f"got {type(ledger).__name__}")
        self.ledger = ledger
        self.max_iterations = max_iterations
        self.max_llm_calls = max_llm_calls
        self.max_tokens = max_tokens
        self.max_cost_usd = max_cost_usd
        self.max_seconds = max_seconds
        self.max_depth = int(max_depth)
        self._lock = threading.Lock()
        self._started: float | None = None
        self.iterations = 0
        self.llm_calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost_usd = 0.0
        self._reserved_tokens = 0
        self._reserved_cost = 0.0

    def limits(self) -> dict[str, Any]:
        """The caps and the shared ledger (or ``None``): ``Budget(**budget.limits())`` is a
        fresh Budget on the same terms, so adapters that keep limits as data keep the ledger."""
        return {**{name: getattr(self, name) for name in _LIMITS}, "ledger": self.ledger}

    def fresh(self) -> Budget:
        """A new, unspent ledger with the same caps (one per top-level call), on the same
        shared ledger if there is one."""
        return Budget(**self.limits())

    def __deepcopy__(self, memo: dict[int, Any]) -> Budget:
        """Optimizers deep-copy programs: the copy gets the same caps and counts, its own lock."""
        copied = self.fresh()
        copied.restore(self.spent())
        return copied

    def __repr__(self) -> str:
        caps = ", ".join(f"{k}={v!r}" for k, v in self.limits().items() if v is not None)
        return f"Budget({caps})"

    # -- time ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the wall clock (idempotent)."""
        with self._lock:
            if self._started is None:
                self._started = time.monotonic()

    @property
    def deadline(self) -> float | None:
        """The ``time.monotonic()`` instant the wall-clock cap runs out, if any."""
        if self.max_seconds is None:
            return None
        self.start()
        return self._started + self.max_seconds  # type: ignore[operator]

    def seconds_left(self) -> float | None:
        deadline = self.deadline
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def elapsed(self) -> float:
        return 0.0 if self._started is None else time.monotonic() - self._started

    # -- ledger ----------------------------------------------------------------------

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def spent(self) -> dict[str, Any]:
        return {"iterations": self.iterations, "llm_calls": self.llm_calls, "tokens": self.tokens,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost_usd": round(self.cost_usd, 8), "seconds": round(self.elapsed(), 3)}

    def _exceeded(self, limit: str, message: str) -> BudgetExceeded:
        return BudgetExceeded(limit, f"budget exhausted ({limit}): {message}", self.spent())

    def _shared_caps(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ("max_iterations", "max_llm_calls", "max_tokens",
                                                       "max_cost_usd")}

    def check_time(self) -> None:
        left = self.seconds_left()
        if left is not None and left <= 0:
            raise self._exceeded("max_seconds", f"{self.max_seconds} s of wall-clock time used")

    def reserve_iteration(self) -> None:
        """Count one root-loop iteration of any RLM in the tree, or raise."""
        self.check_time()
        with self._lock:
            if self.ledger is not None:
                try:
                    self.ledger.reserve_iteration(self._shared_caps())
                except CapReached as exc:
                    raise self._exceeded(exc.limit, f"{exc.detail} (shared ledger)") from None
            elif self.max_iterations is not None and self.iterations >= self.max_iterations:
                raise self._exceeded("max_iterations", f"{self.iterations} iterations used")
            self.iterations += 1

    def reserve_call(self, *, tokens: int, cost_usd: float = 0.0) -> Reservation:
        """Hold one LM call with upper bounds on its tokens and cost, or raise."""
        self.check_time()
        with self._lock:
            if self.ledger is not None:
                try:
                    self.ledger.reserve_call(self._shared_caps(), tokens=tokens, cost_usd=cost_usd)
                except CapReached as exc:
                    raise self._exceeded(exc.limit, f"{exc.detail} (shared ledger)") from None
            else:
                self._check_call(tokens, cost_usd)
            self.llm_calls += 1
            self._reserved_tokens += tokens
            self._reserved_cost += cost_usd
        return Reservation(tokens, cost_usd)

    def _check_call(self, tokens: int, cost_usd: float) -> None:
        """Raise when one more call, holding ``tokens`` and ``cost_usd``, would cross a cap of this Budget."""
        if self.max_llm_calls is not None and self.llm_calls >= self.max_llm_calls:
            raise self._exceeded("max_llm_calls", f"{self.llm_calls} LM calls used")
        if self.max_tokens is not None and self.tokens + self._reserved_tokens + tokens > self.max_tokens:
            raise self._exceeded("max_tokens", f"{self.tokens} tokens used, {self._reserved_tokens} "
                                               f"held by calls in flight, this call may need {tokens}")
        if (self.max_cost_usd is not None
                and self.cost_usd + self._reserved_cost + cost_usd > self.max_cost_usd):
            raise self._exceeded("max_cost_usd", f"${self.cost_usd:.6f} spent, this call may cost "
                                                 f"${cost_usd:.6f}")

    def commit(self, reservation: Reservation, *, prompt_tokens: int, completion_tokens: int,
               cost_usd: float) -> None:
        """Replace a reservation by what the call really used."""
        prompt_tokens, completion_tokens = max(0, int(prompt_tokens)), max(0, int(completion_tokens))
        cost_usd = max(0.0, float(cost_usd))
        with self._lock:
            self._release(reservation)
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self.cost_usd += cost_usd
            if self.ledger is not None:
                self.ledger.settle(reservation, dispatched=True, prompt_tokens=prompt_tokens,
                                   completion_tokens=completion_tokens, cost_usd=cost_usd)

    def cancel(self, reservation: Reservation, *, dispatched: bool) -> None:
        """Drop a reservation; a call that never reached the provider is not counted."""
        with self._lock:
            self._release(reservation)
            if not dispatched:
                self.llm_calls -= 1
            if self.ledger is not None:
                self.ledger.settle(reservation, dispatched=dispatched)

    def _release(self, reservation: Reservation) -> None:
        self._reserved_tokens -= reservation.tokens
        self._reserved_cost -= reservation.cost_usd

    def restore(self, spent: dict[str, Any]) -> None:
        """Continue a ledger saved with :meth:`spent` (e.g. from a checkpoint). Time spent
        while the run was paused does not count against ``max_seconds``. A shared ledger is
        not touched: it counted those draws when they were made."""
        with self._lock:
            self.iterations = int(spent.get("iterations", 0))
            self.llm_calls = int(spent.get("llm_calls", 0))
            self.prompt_tokens = int(spent.get("prompt_tokens", 0))
            self.completion_tokens = int(spent.get("completion_tokens", 0))
            self.cost_usd = float(spent.get("cost_usd", 0.0))
            self._started = time.monotonic() - float(spent.get("seconds", 0.0))

    def allows_depth(self, depth: int) -> bool:
        return depth <= self.max_depth


LAST_CALL_HOLD_TOKENS = 32_000  # the most tokens held for a run's last call (when there is a token cap)


def hold_last_call(budget: Budget) -> Reservation | None:
    """Hold one LM call (and a fifth of the token cap, at most ``LAST_CALL_HOLD_TOKENS``) for the
    answer a run gives when it stops without one, so that call never passes the caps.

    Args:
        budget: the run's ledger.

    Returns:
        The reservation, or ``None`` when the caps leave no room for it beside one more call
        (``max_llm_calls`` within one call of being used up, or a cap already reached).
    """
    if budget.max_llm_calls is not None:
        used = budget.ledger.totals()["llm_calls"] if budget.ledger is not None else budget.llm_calls
        if budget.max_llm_calls - used < 2:
            return None
    tokens = 0 if budget.max_tokens is None else min(LAST_CALL_HOLD_TOKENS, budget.max_tokens // 5)
    try:
        return budget.reserve_call(tokens=tokens)
    except BudgetExceeded:
        return None


def run_limits(budget: Budget | None, max_depth: int | None) -> dict[str, Any]:
    """The caps an adapter gives each of its runs: ``budget``'s (default: ``Budget()``'s), with
    ``max_depth`` in place of the budget's own when given.

    Args:
        budget: the caps the user passed, or ``None``.
        max_depth: the adapter's own ``max_depth=`` option, or ``None``.

    Returns:
        Keyword arguments for ``Budget(...)``; a fresh ledger per run, on the same shared ledger.

    Raises:
        TypeError: ``budget`` is not a Budget.
    """
    if budget is not None and not isinstance(budget, Budget):
        raise TypeError(f"budget must be a sandbox.Budget, got {type(budget).__name__}")
    limits = (budget or Budget()).limits()
    if max_depth is not None:
        limits["max_depth"] = max_depth
    return limits
