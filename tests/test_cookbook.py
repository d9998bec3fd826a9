"""Every recipe runs, offline, with the scripted models of tests/recipe_models.py passed to its
``main``; its command line names real models (the embedded one by default)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import dspy
import pytest

from cookbook import (demo, demo_dspy, dspy_composed_program, dspy_long_document_qa, dspy_optimizer_run,
                      langgraph_agent_pipeline, langgraph_human_review, langgraph_streaming_progress)
from cookbook.demo import NEEDLE, long_document
from sandbox.lm import local
from tests.recipe_models import needle_chat_models, needle_dspy_lms, needle_sub_lm, research_and_report_lm, taught_lm
from tests.scripted_chat import scripted_root

COOKBOOK = Path(__file__).resolve().parents[1] / "cookbook"
RECIPES = sorted(path.name for path in COOKBOOK.glob("*.py") if "\ndef main(" in path.read_text())


@pytest.fixture(autouse=True)
def no_embedded_model(monkeypatch):
    """A recipe that ignored the models passed to it would reach the embedded model: fail at once instead."""

    def refuse(*args, **kwargs):
        raise AssertionError("a recipe test reached for the embedded model")

    monkeypatch.setattr(local.LocalModelServer, "start", refuse)
    monkeypatch.setattr(local, "warm_endpoint", refuse)


def chat_models() -> dict:
    root, sub = needle_chat_models()
    return {"model": root, "sub_model": sub}


def test_demo_document_is_long_and_holds_one_needle():
    document = long_document()
    assert len(document) > 300_000 and document.count(NEEDLE) == 1


def test_agent_pipeline(capsys):
    result = langgraph_agent_pipeline.main([], **chat_models())
    assert result["finding"] == NEEDLE and result["reply"].startswith(f"Answer: {NEEDLE}")
    assert result["rlm_details"]["stop_reason"] == "final"


def test_agent_pipeline_stops_at_its_iteration_cap_when_the_model_never_answers(capsys):
    _, sub = needle_chat_models()
    never_final = scripted_root(*["print(len(context))"] * 40)
    result = langgraph_agent_pipeline.main([], model=never_final, sub_model=sub)
    # All 20 default iterations, about 40 super-steps, inside a parent graph whose own limit is 25.
    assert result["rlm_details"]["stop_reason"] == "max_iterations" and result["rlm_details"]["iterations"] == 20
    assert result["reply"].startswith("Answer: ")


def test_human_review_resumes_from_sqlite(tmp_path, capsys, monkeypatch):
    db = str(tmp_path / "review.db")
    replies = iter(["y", "y", "y"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(replies))
    result = langgraph_human_review.main(["--db", db], **chat_models())
    assert result["answer"] == NEEDLE
    assert capsys.readouterr().out.count("the model wants to run") == 3


def test_human_review_edit_and_reject(tmp_path, monkeypatch):
    replies = iter(["e", "FINAL('edited')"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(replies))
    assert langgraph_human_review.main(["--db", str(tmp_path / "r.db")], **chat_models())["answer"] == "edited"


def test_streaming_progress(capsys):
    progress = langgraph_streaming_progress.main([], **chat_models())
    out = capsys.readouterr().out
    assert f"answer: {NEEDLE}" in out and "sub-calls" in out
    assert progress.sub_calls == sum(e["kind"] == "sub_call" for e in progress.events) > 10


def test_dspy_long_document_qa(capsys):
    lm, sub_lm = needle_dspy_lms()
    out = dspy_long_document_qa.main([], lm=lm, sub_lm=sub_lm)
    assert out.answer == NEEDLE and out.stop_reason == "final"


def test_dspy_composed_program(capsys):
    out = dspy_composed_program.main([], lm=research_and_report_lm(), sub_lm=needle_sub_lm())
    assert out.report == f"Report: {NEEDLE}"


def test_dspy_optimizer_run(tmp_path, capsys):
    result = dspy_optimizer_run.main(["--save", str(tmp_path / "tuned.json")], lm=taught_lm(),
                                     teacher_lm=taught_lm(always_right=True))
    assert result == {"before": 0.0, "after": 1.0} and (tmp_path / "tuned.json").exists()


def test_every_recipe_is_tested_here():
    tested = {name.removesuffix(".py") for name in RECIPES}
    assert tested == {"dspy_composed_program", "dspy_long_document_qa", "dspy_optimizer_run",
                      "langgraph_agent_pipeline", "langgraph_human_review", "langgraph_streaming_progress"}


@pytest.mark.parametrize("recipe", RECIPES)
def test_a_recipe_runs_as_a_file_from_another_directory(recipe, tmp_path):
    done = subprocess.run([sys.executable, str(COOKBOOK / recipe), "--help"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})  # help on one line an option
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: ") and "--model MODEL" in done.stdout and "default: local" in done.stdout


def recipe_args(*argv: str):
    parser = argparse.ArgumentParser()
    demo.model_arguments(parser)
    return demo.parse_args(parser, list(argv))


def test_the_langgraph_recipes_name_the_embedded_model_by_default():
    assert demo.graph_models(recipe_args()) == ("local", None)  # None: the sub-calls go to the root's model
    assert demo.graph_models(recipe_args("--model", "m", "--sub-model", "s")) == ("m", "s")
    root, sub = needle_chat_models()
    assert demo.graph_models(recipe_args("--model", "m"), root, sub) == (root, sub)


def test_the_dspy_recipes_start_the_embedded_model_by_default(monkeypatch):
    started = []

    def local_lm():
        started.append(dspy.LM("openai/embedded"))
        return started[-1]

    monkeypatch.setattr(demo_dspy, "local_lm", local_lm)
    root, sub = demo_dspy.lms(recipe_args())
    assert started == [root] and sub is root

    root, sub = demo_dspy.lms(recipe_args("--model", "openai/big", "--sub-model", "openai/small",
                                          "--api-base", "http://127.0.0.1:9/v1"))
    assert (root.model, sub.model) == ("openai/big", "openai/small") and len(started) == 1
    assert root.kwargs["api_base"] == sub.kwargs["api_base"] == "http://127.0.0.1:9/v1"

    given = taught_lm()
    assert demo_dspy.lms(recipe_args(), lm=given) == (given, given) and len(started) == 1


@pytest.mark.parametrize("argv", [["--api-base", "http://127.0.0.1:9/v1"],
                                  ["--model", "openai/x", "--sub-model", "local", "--api-base", "http://h/v1"]])
def test_api_base_with_the_embedded_model_is_refused(argv, capsys):
    with pytest.raises(SystemExit) as refused:
        recipe_args(*argv)
    assert refused.value.code == 2 and "--api-base is for a model on another server" in capsys.readouterr().err
