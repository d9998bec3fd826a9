"""Every recipe runs, offline, with its scripted demo models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cookbook import langgraph_agent_pipeline, langgraph_human_review, langgraph_streaming_progress
from cookbook.demo import NEEDLE, long_document


def test_demo_document_is_long_and_holds_one_needle():
    document = long_document()
    assert len(document) > 300_000 and document.count(NEEDLE) == 1


def test_agent_pipeline(capsys):
    result = langgraph_agent_pipeline.main([])
    assert result["finding"] == NEEDLE and result["reply"].startswith(f"Answer: {NEEDLE}")
    assert result["rlm_details"]["stop_reason"] == "final"


def test_human_review_resumes_from_sqlite(tmp_path, capsys, monkeypatch):
    db = str(tmp_path / "review.db")
    replies = iter(["y", "y", "y"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(replies))
    result = langgraph_human_review.main(["--db", db])
    assert result["answer"] == NEEDLE
    assert capsys.readouterr().out.count("the model wants to run") == 3


def test_human_review_edit_and_reject(tmp_path, monkeypatch):
    replies = iter(["e", "FINAL('edited')"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(replies))
    assert langgraph_human_review.main(["--db", str(tmp_path / "r.db")])["answer"] == "edited"


def test_streaming_progress(capsys):
    progress = langgraph_streaming_progress.main([])
    out = capsys.readouterr().out
    assert f"answer: {NEEDLE}" in out and "sub-calls" in out
    assert progress.sub_calls == sum(e["kind"] == "sub_call" for e in progress.events) > 10


def test_dspy_long_document_qa(capsys):
    from cookbook import dspy_long_document_qa

    out = dspy_long_document_qa.main([])
    assert out.answer == NEEDLE and out.stop_reason == "final"


def test_dspy_composed_program(capsys):
    from cookbook import dspy_composed_program

    out = dspy_composed_program.main([])
    assert out.report == f"Report: {NEEDLE}"


def test_dspy_optimizer_run(tmp_path, capsys):
    from cookbook import dspy_optimizer_run

    result = dspy_optimizer_run.main(["--save", str(tmp_path / "tuned.json")])
    assert result == {"before": 0.0, "after": 1.0} and (tmp_path / "tuned.json").exists()


@pytest.mark.parametrize("recipe", ["langgraph_agent_pipeline.py", "langgraph_streaming_progress.py"])
def test_a_recipe_runs_as_a_file_from_another_directory(recipe, tmp_path):
    path = Path(__file__).resolve().parents[1] / "cookbook" / recipe
    done = subprocess.run([sys.executable, str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert NEEDLE in done.stdout
