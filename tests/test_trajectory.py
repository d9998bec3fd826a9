"""Trajectory: plain-data events, children, listeners, JSON round trip."""

from __future__ import annotations

import json

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
