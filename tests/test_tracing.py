"""OpenTelemetry spans of a run's whole call tree (sandbox.engine.tracing), the same tree from both adapters."""

from __future__ import annotations

from collections import Counter

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore
from langgraph.types import Command
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from rlm_dspy import RLM
from rlm_graph import create_rlm_graph
from sandbox import Budget, Completion
from sandbox.engine import tracing
from sandbox.engine.session import SandboxOptions
from tests.conftest import FakeLM
from tests.dspy_lms import fields, function_lm, text_lm
from tests.test_rlm_graph import cell, script, thread, upper_lm

ROOT_CELL = ("a = llm_query('one')\nb = llm_query_batched(['two', 'three'])\n"
             "c = rlm_query('child question', 'child context')\nprint(a, b, c)")
CHILD_CELL = "FINAL(rlm_query('grandchild question', 'grandchild context'))"
LEAF_CELL = "FINAL(llm_query('leaf'))"

# Each span as the path of names from the root: the multiset of paths is the tree's shape.
RUN, IT, CELL = "rlm.run", "rlm.run/rlm.iteration", "rlm.run/rlm.iteration/rlm.cell"
CHILD = f"{CELL}/rlm.rlm_query/rlm.run"
GRANDCHILD = f"{CHILD}/rlm.iteration/rlm.cell/rlm.rlm_query/rlm.run"
EXPECTED_TREE = Counter({
    RUN: 1, IT: 2, f"{IT}/rlm.lm_call": 2, CELL: 2,
    f"{CELL}/rlm.llm_query": 3,  # one llm_query and the two of the fan-out
    f"{CELL}/rlm.rlm_query": 1, CHILD: 1, f"{CHILD}/rlm.iteration": 1, f"{CHILD}/rlm.iteration/rlm.lm_call": 1,
    f"{CHILD}/rlm.iteration/rlm.cell": 1, f"{CHILD}/rlm.iteration/rlm.cell/rlm.rlm_query": 1,
    GRANDCHILD: 1, f"{GRANDCHILD}/rlm.iteration": 1, f"{GRANDCHILD}/rlm.iteration/rlm.lm_call": 1,
    f"{GRANDCHILD}/rlm.iteration/rlm.cell": 1, f"{GRANDCHILD}/rlm.iteration/rlm.cell/rlm.llm_query": 1,
})


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def paths(spans) -> Counter:
    """The tree's shape: one ``a/b/c`` path of span names per span; a span whose parent is missing
    (a broken link) starts its own path."""
    by_id = {span.context.span_id: span for span in spans}

    def path(span) -> str:
        parent = by_id.get(span.parent.span_id) if span.parent is not None else None
        return span.name if parent is None else f"{path(parent)}/{span.name}"

    return Counter(path(span) for span in spans)


def named(spans, name: str) -> list:
    return [span for span in spans if span.name == name]


class TreeRoot:
    """A root LM for every depth: what it writes depends on the run's query (the second message)."""

    model = "fake/root"

    async def acomplete(self, messages, *, max_tokens):
        query, first = messages[1]["content"], len(messages) == 2
        if "grandchild question" in query:
            text = cell(LEAF_CELL)
        elif "child question" in query:
            text = cell(CHILD_CELL)
        else:
            text = cell(ROOT_CELL) if first else cell("FINAL('done: ' + c)")
        return Completion(text=text, prompt_tokens=7, completion_tokens=3, cost_usd=0.5, model=self.model)


def dspy_root(messages):
    prompt = messages[-1][1]
    if "grandchild question" in prompt:
        return fields(reasoning="leaf", code=LEAF_CELL.replace("FINAL(", "SUBMIT(answer="))
    if "child question" in prompt and "rlm_query('child" not in prompt:
        return fields(reasoning="child", code=CHILD_CELL.replace("FINAL(", "SUBMIT(answer="))
    if "GRANDCHILD" in prompt or "LEAF" in prompt:  # the root, after its child answered
        return fields(reasoning="done", code="SUBMIT(answer='done: ' + c)")
    return fields(reasoning="fan out", code=ROOT_CELL)


def check_tree(spans, engine: str) -> None:
    assert paths(spans) == EXPECTED_TREE
    assert len({span.context.trace_id for span in spans}) == 1
    (run,) = [span for span in named(spans, "rlm.run") if span.attributes["rlm.depth"] == 0]
    assert run.attributes["rlm.engine"] == engine and run.attributes["rlm.stop_reason"] == "final"
    assert sorted(span.attributes["rlm.depth"] for span in named(spans, "rlm.run")) == [0, 1, 2]
    subs = named(spans, "rlm.llm_query")
    assert all(span.attributes["gen_ai.request.model"] == "fake/sub" for span in subs)
    assert all(span.attributes["gen_ai.usage.input_tokens"] == 10 for span in subs)
    assert all(span.attributes["gen_ai.usage.output_tokens"] == 10 for span in subs)
    assert all(span.attributes["rlm.cost_usd"] == 0.25 for span in subs)
    assert all(span.end_time >= span.start_time for span in spans)
    for rlm_query in named(spans, "rlm.rlm_query"):
        assert rlm_query.attributes["rlm.degraded"] is False
    for lm_call in named(spans, "rlm.lm_call"):
        assert lm_call.attributes["gen_ai.operation.name"] == "chat"
        assert lm_call.attributes["gen_ai.usage.input_tokens"] > 0
        assert lm_call.attributes["gen_ai.usage.output_tokens"] > 0


def sub_lm() -> FakeLM:
    return FakeLM(lambda prompt: prompt.upper(), cost_usd=0.25, model="fake/sub")


def test_graph_span_tree(provider, exporter):
    graph = create_rlm_graph(TreeRoot(), sub_model=sub_lm(), max_depth=2, tracer_provider=provider)
    out = graph.invoke({"query": "fan out and delegate", "context": "ctx"})
    assert out["answer"] == "done: LEAF" and out["stop_reason"] == "final"
    spans = exporter.get_finished_spans()
    check_tree(spans, "langgraph")
    assert all(span.attributes["gen_ai.request.model"] == "fake/root" for span in named(spans, "rlm.lm_call"))
    assert all(span.attributes["rlm.cost_usd"] == 0.5 for span in named(spans, "rlm.lm_call"))


def test_dspy_span_tree(provider, exporter):
    import dspy

    rlm = RLM("context -> answer", sub_lm=text_lm(str.upper), max_depth=2, tracer_provider=provider)
    rlm.sub_lm = None  # the sub-calls go to a FakeLM below, for the same tokens, cost and model as the graph's
    with dspy.context(lm=function_lm(dspy_root)):
        from rlm_dspy import rlm as module

        original = module.DSPyLMClient
        module.DSPyLMClient = lambda _lm: sub_lm()
        try:
            out = rlm(context="ctx")
        finally:
            module.DSPyLMClient = original
    assert out.answer == "done: LEAF" and out.stop_reason == "final"
    spans = exporter.get_finished_spans()
    check_tree(spans, "dspy")


def test_without_a_tracer_provider_nothing_is_attached(exporter):
    graph = create_rlm_graph(TreeRoot(), sub_model=sub_lm(), max_depth=2)  # the global, no-op provider
    out = graph.invoke({"query": "fan out and delegate", "context": "ctx"})
    assert out["answer"] == "done: LEAF"
    assert len(tracing._RUNS) == 0 and len(tracing._PARENTS) == 0
    assert exporter.get_finished_spans() == ()


def events_named(spans, name: str) -> list[dict]:
    return [dict(event.attributes) for span in spans for event in span.events if event.name == name]


def test_budget_stops_and_sandbox_limits_are_span_events(provider, exporter):
    root = script(cell("x = llm_query('a')\ny = llm_query('b')\nprint(x)"), cell("print(1)"))
    graph = create_rlm_graph(root, sub_model=upper_lm(), budget=Budget(max_llm_calls=3), tracer_provider=provider)
    out = graph.invoke({"query": "q", "context": "c"})
    assert out["stop_reason"] == "max_llm_calls"
    spans = exporter.get_finished_spans()
    assert {"rlm.limit": "max_llm_calls"} in [{"rlm.limit": e["rlm.limit"]}
                                               for e in events_named(named(spans, "rlm.cell"), "rlm.budget_exceeded")]


def test_a_prompt_over_the_cap_is_a_span_event(provider, exporter):

    root = script(cell("try:\n    llm_query('x' * 50)\nexcept ValueError:\n    pass\nFINAL('ok')"))
    graph = create_rlm_graph(root, sub_model=upper_lm(), sandbox_options=SandboxOptions(max_prompt_chars=10),
                             tracer_provider=provider)
    assert graph.invoke({"query": "q", "context": "c"})["answer"] == "ok"
    (cell_span,) = named(exporter.get_finished_spans(), "rlm.cell")
    assert events_named([cell_span], "rlm.limit_refused") == [{"rlm.limit": "max_prompt_chars"}]


def test_replay_after_a_resume_emits_no_sub_call_spans(provider, exporter):
    store, saver, sub = InMemoryStore(), InMemorySaver(), upper_lm()

    def graph(*replies):
        return create_rlm_graph(script(*replies), sub_model=sub, checkpointer=saver, review="code", store=store,
                                tracer_provider=provider)

    first = graph(cell("note = llm_query(context)"), cell("FINAL(note)"))
    first.invoke({"query": "q", "context": "abc"}, thread())
    first.invoke(Command(resume=True), thread())  # runs the first cell, pauses before the second
    out = graph().invoke(Command(resume=True), thread())  # a fresh graph: it replays the first cell
    assert out["answer"] == "ABC" and sub.calls == ["abc"]
    spans = exporter.get_finished_spans()
    (replay,) = named(spans, "rlm.replay")  # only the resume with a cell to re-run has one
    assert replay.attributes["rlm.replay.cells"] == 1
    (sub_call,) = named(spans, "rlm.llm_query")  # the first run's; the replayed call is answered from the log
    assert not [span for span in spans if span.parent is not None and span.parent.span_id == replay.context.span_id]
    (resumed,) = [span for span in named(spans, "rlm.run") if span.context.span_id == replay.parent.span_id]
    assert resumed.attributes["rlm.resumed"] is True and resumed.attributes["rlm.stop_reason"] == "final"
