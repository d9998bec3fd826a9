"""The record of an RLM run: plain, JSON-serializable events, the same shape for both adapters.

Each event is a dict with ``kind``, ``depth``, ``t`` (seconds since the
trajectory started) and kind-specific fields. Kinds: ``iteration``, ``lm_call``,
``cell``, ``sub_call``, ``rlm_query``, ``search``, ``evaluation``, ``budget``, ``final``
and ``note``. A child RLM (``rlm_query``) gets a child trajectory one level deeper.
Listeners see every event of the tree as it is recorded (for streaming). A refusal
that repeats (the same limit hit again and again by one cell) is one event whose
``count`` goes up, and a call that costs nothing (``search``) is recorded in full only so
many times a cell, so no loop in a cell can grow the record without bound.

A consumer that keeps the record as it grows (a LangGraph channel) takes only what is new each
time, with :meth:`Trajectory.changes_since`: that costs what was added, not the whole record.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

EVENT_KINDS = frozenset({"iteration", "lm_call", "cell", "sub_call", "rlm_query", "search", "evaluation", "compaction",
                         "budget", "final", "note"})
Listener = Callable[[dict[str, Any]], None]
PREVIEW_CHARS = 2000


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"... [{len(text) - limit:,} more characters]"


class _Handed(NamedTuple):
    """What a consumer holds after :meth:`Trajectory.changes_since`: how many events and children,
    the last of each (the very objects), and the trajectory's :meth:`~Trajectory._stamp` parts then."""

    events: int
    last_event: dict[str, Any] | None
    children: int
    last_child: dict[str, Any] | None
    changes: int
    child_stamps: list[tuple[Any, ...]]


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
        self._changes = 0  # how many times an event already recorded changed (a refusal group's count)
        self._handed: _Handed | None = None  # what the consumer of changes_since holds

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
                self._changes += 1
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
        return self._copy()[0]

    def _copy(self) -> tuple[dict[str, Any], int, list[tuple[Any, ...]]]:
        """:meth:`to_dict`, with the count of changes and the children's stamps taken before the copies
        (a change made while copying shows as a change next time, so it is never missed)."""
        with self._lock:  # copies: a refusal group's count may still go up after this snapshot
            events, children, changes = [dict(e) for e in self.events], list(self.children), self._changes
        stamps = [c._stamp() for c in children]
        return ({"query": self.query, "depth": self.depth, "events": events,
                 "children": [c.to_dict() for c in children]}, changes, stamps)

    def changes_since(self, saved: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """What turns ``saved``, an earlier state of this trajectory, into its :meth:`to_dict` now.

        ``saved`` is what this method gave before, with its additions applied (the value of the
        channel that keeps the trajectory), or any other ``{"query", "depth", "events",
        "children"}``. Where ``saved`` is exactly what the last call left the consumer holding and
        nothing recorded before has changed since, this costs only the new events and children;
        otherwise the whole trajectory is compared with ``saved``. The consumer must apply each
        answer before the next call.

        Args:
            saved: the consumer's copy; empty when it has none.

        Returns:
            ``(value, whole)``. ``whole`` false: ``value`` is ``{"query", "depth", "events",
            "children"}`` with only the events and children ``saved`` lacks (``saved`` is empty, or
            a prefix of this trajectory). ``whole`` true: ``value`` is the whole trajectory, to
            replace ``saved``: it is another trajectory's (query or depth differ), or an event it
            holds changed since (a refusal group's count went up after it was taken).
        """
        saved_events, saved_children = saved.get("events", []), saved.get("children", [])
        if not saved or (saved.get("query"), saved.get("depth")) == (self.query, self.depth):
            added = self._added_since_handed(saved_events, saved_children)
            if added is not None:
                return added, False
        whole, changes, stamps = self._copy()
        n_events, n_children = len(saved_events), len(saved_children)
        if (saved and (saved.get("query"), saved.get("depth")) != (self.query, self.depth)
                or whole["events"][:n_events] != saved_events or whole["children"][:n_children] != saved_children):
            self._hand(whole, [], [], changes, stamps)
            return whole, True
        added = {"query": self.query, "depth": self.depth, "events": whole["events"][n_events:],
                 "children": whole["children"][n_children:]}
        self._hand(added, saved_events, saved_children, changes, stamps)
        return added, False

    def _added_since_handed(self, saved_events: list[Any], saved_children: list[Any]) -> dict[str, Any] | None:
        """The events and children recorded since the last :meth:`changes_since`, if ``saved_events``
        and ``saved_children`` are what it left the consumer holding and none of that changed since;
        else ``None``."""
        with self._lock:
            handed = self._handed
            if handed is None or not (
                    len(saved_events) == handed.events and len(saved_children) == handed.children
                    and (not saved_events or saved_events[-1] is handed.last_event)
                    and (not saved_children or saved_children[-1] is handed.last_child)
                    and self._changes == handed.changes
                    and [c._stamp() for c in self.children[:handed.children]] == handed.child_stamps):
                return None
            events, changes = [dict(e) for e in self.events[handed.events:]], self._changes
            children = self.children[handed.children:]
        # The children held are as checked; the new ones' stamps come before their copies.
        stamps = handed.child_stamps + [c._stamp() for c in children]
        added = {"query": self.query, "depth": self.depth, "events": events,
                 "children": [c.to_dict() for c in children]}
        self._hand(added, saved_events, saved_children, changes, stamps)
        return added

    def _hand(self, value: dict[str, Any], kept_events: list[Any], kept_children: list[Any], changes: int,
              stamps: list[tuple[Any, ...]]) -> None:
        """Note what the consumer holds once it applies ``value`` over the ``kept_events`` and
        ``kept_children`` it has: ``changes`` and ``stamps`` as they were when ``value`` was copied."""
        events, children = value["events"], value["children"]
        last_event = events[-1] if events else kept_events[-1] if kept_events else None
        last_child = children[-1] if children else kept_children[-1] if kept_children else None
        handed = _Handed(len(kept_events) + len(events), last_event, len(kept_children) + len(children), last_child,
                         changes, stamps)
        with self._lock:
            self._handed = handed

    def _stamp(self) -> tuple[Any, ...]:
        """What changes whenever this trajectory or one of its children records or changes an event."""
        with self._lock:
            children = list(self.children)
            stamp = (len(self.events), self._changes, len(children))
        return stamp + tuple(c._stamp() for c in children)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trajectory:
        trajectory = cls(data.get("query", ""), depth=int(data.get("depth", 0)))
        trajectory.events = [dict(e) for e in data.get("events", [])]
        trajectory.children = [cls.from_dict(c) for c in data.get("children", [])]
        return trajectory
