"""Trajectory: plain-data events, children, listeners, JSON round trip, what was added since a copy."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest

from sandbox import Trajectory
from sandbox.engine.trajectory import preview


def test_events_children_and_listeners():
    seen = []
    root = Trajectory("q")
    root.subscribe(seen.append)
    root.record("iteration", iteration=1)
    child = root.child("sub")
    child.record("cell", code="x = 1", output="", error=None)
    assert [e["kind"] for e in seen] == ["iteration", "cell"]
    assert seen[1]["depth"] == 1
    data = json.loads(root.to_json())
    assert data["children"][0]["events"][0]["code"] == "x = 1"
    assert Trajectory.from_dict(data).to_dict() == data


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown trajectory event kind"):
        Trajectory().record("made_up")


def test_preview_says_what_was_cut():
    assert preview("abc", 5) == "abc"
    assert preview("a" * 10, 4) == "aaaa... [6 more characters]"


def _applied(saved: dict, value: dict, whole: bool) -> dict:
    """``saved`` after a consumer applies what :meth:`Trajectory.changes_since` gave (as the graph's
    ``events`` channel does)."""
    if whole or not saved:
        return {**value, "events": list(value["events"]), "children": list(value["children"])}
    return {**saved, "events": saved["events"] + value["events"], "children": saved["children"] + value["children"]}


def test_changes_since_gives_what_was_added_and_applied_rebuilds_the_whole():
    trajectory, saved = Trajectory("q"), {}
    for iteration in range(1, 4):
        trajectory.record("iteration", iteration=iteration)
        trajectory.record("cell", iteration=iteration, code="x = 1")
        value, whole = trajectory.changes_since(saved)
        assert not whole and [e["iteration"] for e in value["events"]] == [iteration, iteration]
        saved = _applied(saved, value, whole)
        assert saved == trajectory.to_dict()
    assert trajectory.changes_since(saved) == ({"query": "q", "depth": 0, "events": [], "children": []}, False)


class _NotToCopy(Mapping):
    """An event that fails if anything reads it again."""

    def __getitem__(self, key):
        raise AssertionError("an event handed out before was copied again")

    def __iter__(self):
        raise AssertionError("an event handed out before was copied again")

    def __len__(self):
        raise AssertionError("an event handed out before was copied again")


def test_changes_since_does_not_copy_again_what_it_handed_out_before():
    trajectory = Trajectory("q")
    for iteration in range(50):
        trajectory.record("iteration", iteration=iteration)
    value, whole = trajectory.changes_since({})
    saved = _applied({}, value, whole)
    trajectory.events[:50] = [_NotToCopy()] * 50  # read again, these would fail
    trajectory.record("iteration", iteration=50)
    value, whole = trajectory.changes_since(saved)
    assert not whole and [e["iteration"] for e in value["events"]] == [50]


def test_a_count_that_went_up_after_it_was_handed_out_sends_the_whole_trajectory():
    trajectory = Trajectory("q")
    trajectory.record_repeated("budget", "max_llm_calls", limit="max_llm_calls")
    saved = _applied({}, *trajectory.changes_since({}))
    trajectory.record_repeated("budget", "max_llm_calls", limit="max_llm_calls")
    value, whole = trajectory.changes_since(saved)
    assert whole and value == trajectory.to_dict() and value["events"][0]["count"] == 2
    saved = _applied(saved, value, whole)
    assert trajectory.changes_since(saved) == ({"query": "q", "depth": 0, "events": [], "children": []}, False)


def test_a_child_that_recorded_after_it_was_handed_out_sends_the_whole_trajectory():
    trajectory = Trajectory("q")
    child = trajectory.child("sub")
    child.record("iteration", iteration=1)
    saved = _applied({}, *trajectory.changes_since({}))
    trajectory.record("cell", code="x = 1")
    assert trajectory.changes_since(saved)[1] is False
    saved = _applied(saved, *trajectory.changes_since(saved))
    child.child("grandchild").record("iteration", iteration=1)
    value, whole = trajectory.changes_since(saved)
    assert whole and value == trajectory.to_dict() and value["children"][0]["children"][0]["query"] == "grandchild"


def test_changes_since_a_copy_it_did_not_hand_out_compares_it_in_full():
    trajectory = Trajectory("q")
    trajectory.record("iteration", iteration=1)
    trajectory.record("iteration", iteration=2)
    earlier = trajectory.to_dict()
    earlier["events"] = earlier["events"][:1]
    value, whole = trajectory.changes_since(earlier)  # a prefix: only the rest
    assert not whole and [e["iteration"] for e in value["events"]] == [2]
    other = {**trajectory.to_dict(), "events": [{"kind": "note", "depth": 0, "t": 0.0}]}
    assert trajectory.changes_since(other) == (trajectory.to_dict(), True)  # not a prefix: the whole
    assert trajectory.changes_since({**trajectory.to_dict(), "query": "other"}) == (trajectory.to_dict(), True)
