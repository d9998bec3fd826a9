"""The record of an RLM run: plain, JSON-serializable events, the same shape for both adapters.

Each event is a dict with ``kind``, ``depth``, ``t`` (seconds since the
trajectory started) and kind-specific fields. Kinds: ``iteration``, ``lm_call``,
``cell``, ``sub_call``, ``rlm_query``, ``search``, ``evaluation``, ``budget``, ``final``
and ``note``. A child RLM (``rlm_query``) gets a child trajectory one level deeper.
Listeners see every event of the tree as it is recorded (for streaming). A refusal
that repeats (the same limit hit again and again by one cell) is one event whose
``count`` goes up, and a call that costs nothing (``search``) is recorded in full only so
many times a cell, so no loop in a cell can grow the record without bound.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

EVENT_KINDS = frozenset({"iteration", "lm_call", "cell", "sub_call", "rlm_query", "search", "evaluation", "compaction",
                         "budget", "final", "note"})
Listener = Callable[[dict[str, Any]], None]
PREVIEW_CHARS = 2000


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"... [{len(text) - limit:,} more characters]"


class Trajectory:
    """Thread-safe, append-only event log of one RLM at one depth, with its children."""

    def __init__(self, query: str = "", *, depth: int = 0, listeners: list[Listener] | None = None):
        self.query = query
        self.depth = depth
        self.events: list[dict[str, Any]] = []
        self.children: list[Trajectory] = []
        self._listeners = listeners if listeners is not None else []
        self._observers: list[Listener] = []  # this trajectory's own, not its children's (see observe)
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._repeats: dict[tuple[str, str], dict[str, Any]] = {}  # refusals seen since the last cell event
        self._seen: dict[str, int] = {}  # events of each kind recorded by record_limited since the last cell event

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every later event of this trajectory and its children."""
        self._listeners.append(listener)

    def observe(self, observer: Listener) -> None:
        """Call ``observer(event)`` for every later event of this trajectory only (not its children's),
        before the listeners; :mod:`sandbox.engine.tracing` derives a run's spans this way."""
        self._observers.append(observer)

    def record(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Append one event and show it to the listeners; a ``cell`` event closes the refusal groups.

        Args:
            kind: one of ``EVENT_KINDS``.
            **fields: the event's own, JSON-serializable fields.

        Returns:
            The event as recorded.

        Raises:
            ValueError: ``kind`` is not one of ``EVENT_KINDS``.
        """
        event = self._event(kind, fields)
        with self._lock:
            self.events.append(event)
            if kind == "cell":
                self._repeats.clear()
                self._seen.clear()
        self._notify(event)
        return event

    def record_limited(self, kind: str, limit: int, **fields: Any) -> dict[str, Any]:
        """Record an event in full at most ``limit`` times per cell for ``kind``; later ones only add
        to the ``count`` of one ``note`` (see :meth:`record_repeated`).

        This bounds what a cell that loops on a call the budget does not meter (``search``) adds
        to the trajectory.

        Args:
            kind: one of ``EVENT_KINDS``.
            limit: how many events of ``kind`` one cell may record in full.
            **fields: the event's own, JSON-serializable fields.

        Returns:
            The event as recorded, or the note that counts the events past ``limit``.

        Raises:
            ValueError: ``kind`` is not one of ``EVENT_KINDS``.
        """
        with self._lock:
            seen = self._seen[kind] = self._seen.get(kind, 0) + 1
        if seen <= limit:
            return self.record(kind, **fields)
        return self.record_repeated("note", f"more {kind}", unrecorded=kind,
                                    message=f"{kind} events past the first {limit} of this cell are only counted")

    def record_repeated(self, kind: str, key: str, **fields: Any) -> dict[str, Any]:
        """Record a refusal once per cell: the first carries ``count=1``; later ones with the same
        ``kind`` and ``key`` only add to its ``count`` (listeners see the first one only).

        This stops a cell that loops on a refused call (100,000 over-long prompts, or sub-calls
        after the budget ran out, each caught by ``try``) from growing the trajectory and the
        host's memory by one event per refusal.

        Args:
            kind: one of ``EVENT_KINDS``.
            key: what makes two refusals the same, e.g. the name of the limit.
            **fields: the group's first event's fields.

        Returns:
            The group's event, with its current ``count``.

        Raises:
            ValueError: ``kind`` is not one of ``EVENT_KINDS``.
        """
        with self._lock:
            event = self._repeats.get((kind, key))
            if event is not None:
                event["count"] += 1
                return event
            event = self._repeats[(kind, key)] = self._event(kind, {**fields, "count": 1})
            self.events.append(event)
        self._notify(event)
        return event

    def _event(self, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown trajectory event kind {kind!r}; expected one of {sorted(EVENT_KINDS)}")
        return {"kind": kind, "depth": self.depth, "t": round(time.monotonic() - self._started, 4), **fields}

    def _notify(self, event: dict[str, Any]) -> None:
        for observer in self._observers:
            observer(event)
        for listener in list(self._listeners):
            listener(event)

    def child(self, query: str) -> Trajectory:
        """A trajectory for a child RLM one level deeper; its events reach the same listeners."""
        child = Trajectory(query, depth=self.depth + 1, listeners=self._listeners)
        with self._lock:
            self.children.append(child)
        return child

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e["kind"] == kind]

    def to_dict(self) -> dict[str, Any]:
        with self._lock:  # copies: a refusal group's count may still go up after this snapshot
            events, children = [dict(e) for e in self.events], list(self.children)
        return {"query": self.query, "depth": self.depth, "events": events,
                "children": [c.to_dict() for c in children]}

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trajectory:
        trajectory = cls(data.get("query", ""), depth=int(data.get("depth", 0)))
        trajectory.events = [dict(e) for e in data.get("events", [])]
        trajectory.children = [cls.from_dict(c) for c in data.get("children", [])]
        return trajectory
