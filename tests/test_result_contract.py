"""One result contract: both adapters report the same stop reasons, event tree, event keys and
sandbox defaults (issue 11)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import dspy
import pytest
from dspy.predict.rlm import RLM as DSPyRLM
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from rlm_dspy import RLM, RestrictedPythonInterpreter
from rlm_dspy.interpreter import DSPY_OUTPUT_CHARS
from rlm_graph import create_rlm_graph
from sandbox import Budget
from sandbox.app.report import render_report
from sandbox.boundary.repl import Sandbox
from sandbox.engine.session import SandboxOptions
from sandbox.engine.stops import COMPLETE_STOPS, STOP_REASONS
from sandbox.engine.trajectory import EVENT_KINDS
from tests.conftest import FakeLM
from tests.dspy_lms import script_lm, text_lm

ROOT = Path(__file__).resolve().parents[1]
TREE_KEYS = {"query", "depth", "events", "children"}
EVENT_KEYS = {"kind", "depth", "t"}


def graph_run(*cells: str, **options):
    replies = [f"Next step.\n```repl\n{code}\n```" for code in cells]
    graph = create_rlm_graph(FakeListChatModel(responses=replies), sub_model=FakeLM(lambda p: p.upper()),
                             look_before_answer=False, grounding=False, **options)
    streamed, result = [], {}
    for mode, chunk in graph.stream({"query": "q", "context": "abc"}, stream_mode=["custom", "values"]):
        if mode == "custom":
            streamed.append(chunk)
        else:
            result = chunk
    return result, streamed


def dspy_run(*cells: str, **options):
    seen = []
    rlm = RLM("context -> answer", sub_lm=text_lm(str.upper), on_event=seen.append, look_before_answer=False,
              grounding=False, **options)
    steps = [{"reasoning": "next", "code": f"```python\n{code}\n```"} for code in cells]
    with dspy.context(lm=script_lm(*steps)):
        return rlm(context="abc"), seen


def loop_kinds(tree: dict) -> list[str]:
    """The kinds of the root's events up to its last cell: the loop both adapters run alike."""
    kinds = [e["kind"] for e in tree["events"]]
    return kinds[:len(kinds) - kinds[::-1].index("cell")]


def check_tree(tree: dict) -> None:
    assert set(tree) == TREE_KEYS
    for event in tree["events"]:
        assert EVENT_KEYS <= set(event) and event["kind"] in EVENT_KINDS and "type" not in event
    for child in tree["children"]:
        check_tree(child)


@pytest.mark.parametrize("cells, options, expected", [
    (["x = 1"], {"max_iterations": 2}, "max_iterations"),
    (["print(llm_query('a'))", "FINAL('done')"], {}, "final"),
    (["for i in range(5):\n    llm_query(str(i))"], {"budget": Budget(max_llm_calls=3)}, "max_llm_calls"),
])
def test_the_same_run_through_both_adapters_reports_the_same_stop_and_tree(cells, options, expected):
    dspy_options = {name: value for name, value in options.items() if name != "max_iterations"}
    dspy_options["max_iters"] = options.get("max_iterations", 20)  # dspy.RLM's name for the same cap
    dspy_cells = [c.replace("FINAL(", "SUBMIT(answer=") for c in cells]
    out, _ = graph_run(*cells, **options)
    pred, _ = dspy_run(*dspy_cells, **dspy_options)
    assert out["stop_reason"] == pred.stop_reason == expected and expected in STOP_REASONS
    check_tree(out["events"])
    check_tree(pred.events)
    assert loop_kinds(out["events"]) == loop_kinds(pred.events)
    assert out["events"]["events"][-1]["kind"] == pred.events["events"][-1]["kind"] == "final"
    assert out["events"]["events"][-1]["stop_reason"] == pred.events["events"][-1]["stop_reason"] == expected


def test_stream_events_and_on_event_are_the_tree_s_own_events():
    out, streamed = graph_run("print(llm_query('a'))", "FINAL('done')")
    assert streamed == out["events"]["events"]
    pred, seen = dspy_run("print(llm_query('a'))", "SUBMIT(answer='done')")
    assert seen == pred.events["events"]
    assert {frozenset(e) for e in streamed if e["kind"] == "cell"} == \
        {frozenset(e) for e in seen if e["kind"] == "cell"}


def test_a_per_rlm_sub_call_cap_has_its_own_limit_name():
    pred, _ = dspy_run("for i in range(5):\n    llm_query(str(i))", max_llm_calls=2)
    assert pred.stop_reason == "max_sub_calls"
    assert {e["limit"] for e in pred.events["events"] if e["kind"] == "budget"} == {"max_sub_calls"}
    whole_tree, _ = dspy_run("for i in range(5):\n    llm_query(str(i))", budget=Budget(max_llm_calls=3))
    assert whole_tree.stop_reason == "max_llm_calls"


def _literals(pattern: str) -> set[str]:
    sources = [*ROOT.glob("sandbox/**/*.py"), *ROOT.glob("rlm_graph/*.py"), *ROOT.glob("rlm_dspy/*.py")]
    return {name for path in sources for name in re.findall(pattern, path.read_text())}


def test_every_stop_reason_the_code_can_produce_is_in_the_vocabulary():
    # A cap's name becomes the stop reason; so do the adapters' own stops and the evaluator's decisions.
    produced = (_literals(r'(?:BudgetExceeded|CapReached|_exceeded)\(\s*"(\w+)"')
                | _literals(r'stopped_by\s*=\s*"(\w+)"')
                | _literals(r'stop_reason"?\s*[=:]\s*"(\w+)"')
                | _literals(r'_stop\(runtime, state, "(\w+)"')
                | _literals(r'Decision\("(?:accept|stop)", [\w.]+, "(\w+)"'))
    assert {"max_llm_calls", "max_sub_calls", "max_seconds", "context_window", "final", "accepted"} <= produced
    assert produced - set(STOP_REASONS) == set()
    assert COMPLETE_STOPS <= set(STOP_REASONS)


def test_the_report_explains_every_stop_reason():
    for reason, meaning in STOP_REASONS.items():
        page = render_report({"answer": None, "stop_reason": reason, "events": {"query": "q", "events": []}})
        assert meaning.split(" (")[0].replace("'", "&#x27;") in page, reason


def test_every_entry_point_takes_the_sandbox_defaults_from_sandbox_options():
    options = SandboxOptions()
    sandbox = inspect.signature(Sandbox).parameters
    for name in ("timeout", "memory_limit_mb", "max_output_chars", "tool_timeout", "confinement", "max_final_chars"):
        assert sandbox[name].default == getattr(options, name), name
    interpreter = inspect.signature(RestrictedPythonInterpreter).parameters
    for name in ("timeout", "memory_limit_mb", "confinement", "max_final_chars"):
        assert interpreter[name].default == getattr(options, name), name
    assert interpreter["max_output_chars"].default == DSPY_OUTPUT_CHARS > options.max_output_chars
    assert inspect.signature(create_rlm_graph).parameters["sandbox_options"].default == options
    assert RLM("context -> answer").sandbox_options == options
    # dspy.RLM's documented default stays the drop-in's, and it is the sandbox's.
    assert inspect.signature(RLM.__init__).parameters["max_output_chars"].default == \
        inspect.signature(DSPyRLM.__init__).parameters["max_output_chars"].default == options.max_output_chars
