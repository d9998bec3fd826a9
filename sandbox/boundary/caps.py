"""What the host's side of the boundary knows of the run's caps: a deadline, and how a host
function stops the running cell at a cap."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class CapReached(Exception):
    """Raised by a host function to stop the running cell at one of the run's caps.

    ``limit`` names the cap; the cell ends with ``limit="budget"`` and ``stopped_by=limit``.
    (:class:`sandbox.engine.budget.BudgetExceeded` is one.)
    """

    def __init__(self, limit: str, message: str):
        super().__init__(message)
        self.limit = limit


@runtime_checkable
class Deadline(Protocol):
    """A wall-clock cap shared by the run's cells: ``deadline`` is the ``time.monotonic()``
    instant it runs out, or ``None`` (:class:`sandbox.engine.budget.Budget` is one)."""

    @property
    def deadline(self) -> float | None: ...
