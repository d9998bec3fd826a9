"""rlm_graph: the RLM as a LangGraph graph and node, with real checkpointing (SqliteSaver)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from operator import add
from pathlib import Path
from typing import Annotated, TypedDict

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.store.memory import InMemoryStore
from langgraph.store.sqlite import SqliteStore
from langgraph.types import Command

from rlm_graph import create_rlm_graph, create_rlm_node
from rlm_graph.graph import STATE_VERSION
from sandbox import Budget, Evaluation
from tests.checkpoints import stored_sizes
from tests.conftest import FakeLM
from tests.openai_stub import OpenAIStub

ROOT = Path(__file__).resolve().parents[1]


def script(*replies: str) -> FakeListChatModel:
    return FakeListChatModel(responses=list(replies))


def cell(code: str) -> str:
    return f"Next step.\n```repl\n{code}\n```"


def upper_lm() -> FakeLM:
    return FakeLM(lambda prompt: prompt.upper())


def thread(name: str = "t") -> dict:
    return {"configurable": {"thread_id": name}}


def test_answers_a_query_with_sub_calls():
    sub = upper_lm()
    graph = create_rlm_graph(script(cell("words = context.split()\nprint(len(words))"),
                                    cell("tops = llm_query_batched(words[:2])\nFINAL(' '.join(tops))")),
                             sub_model=sub)
    out = graph.invoke({"query": "shout the first two words", "context": "alpha beta gamma"})
    assert out["answer"] == "ALPHA BETA" and out["stop_reason"] == "final" and out["iterations"] == 2
    assert out["usage"]["llm_calls"] == 4 and sub.calls == ["alpha", "beta"]
    kinds = [e["kind"] for e in out["events"]["events"]]
    assert kinds == ["iteration", "lm_call", "cell", "iteration", "lm_call", "sub_call", "sub_call", "cell", "final"]
    json.dumps(out["events"])


def test_final_written_as_text_and_unparseable_replies():
    graph = create_rlm_graph(script("I am not sure what to do.", "```json\n{}\n```", "FINAL(forty two)"),
                             sub_model=upper_lm())
    out = graph.invoke({"query": "q", "context": "c"})
    assert out["answer"] == "forty two" and out["iterations"] == 3
    state_messages = [e for e in out["events"]["events"] if e["kind"] == "lm_call"]
    assert len(state_messages) == 3


def test_final_var_as_text_reads_the_repl():
    graph = create_rlm_graph(script(cell("result = [1, 2]"), "FINAL_VAR(result)"), sub_model=upper_lm())
    assert graph.invoke({"query": "q", "context": "c"})["answer"] == [1, 2]


def test_cell_errors_go_back_to_the_model():
    root = script(cell("1/0"), cell("FINAL('recovered')"))
    graph = create_rlm_graph(root, sub_model=upper_lm(), checkpointer=InMemorySaver())
    out = graph.invoke({"query": "q", "context": "c"}, thread())
    assert out["answer"] == "recovered"
    messages = graph.get_state(thread()).values["messages"]
    assert "ZeroDivisionError" in messages[3]["content"]


@pytest.mark.parametrize("payload,error,match", [
    ({"context": "c"}, ValueError, "'query'"),
    ({"query": "", "context": "c"}, ValueError, "'query'"),
    ({"query": "q"}, ValueError, "'context'"),
    ({"query": "q", "context": b"bytes"}, TypeError, "decode"),
    ({"query": "q", "context": {"a": 1}}, TypeError, "dict"),
    ({"query": "q", "context": ["ok", 3]}, TypeError, r"context\[1\]"),
])
def test_bad_input_is_named(payload, error, match):
    graph = create_rlm_graph(script(cell("FINAL(1)")))
    with pytest.raises(error, match=match):
        graph.invoke(payload)


def test_bad_configuration_is_named():
    with pytest.raises(ValueError, match="does not know how to route"):
        create_rlm_graph("no-such-provider-model")
    with pytest.raises(ValueError, match="review"):
        create_rlm_graph(script(), review="everything")
    with pytest.raises(TypeError, match="BaseChatModel or a litellm model string"):
        create_rlm_graph(42)
    with pytest.raises(ValueError, match="collides"):
        create_rlm_graph(script(), tools={"llm_query": print})


def test_litellm_model_string_against_a_local_server():
    with OpenAIStub() as stub:
        def reply(content):
            body = OpenAIStub.completion({"model": "m", "messages": [{"role": "user", "content": ""}]})
            body["choices"][0]["message"]["content"] = content
            return 200, body

        stub.responses = [reply(cell("print(len(context))")), reply("FINAL(done)")]
        graph = create_rlm_graph("openai/stub", api_base=stub.api_base, api_key="sk-local-test-key")
        out = graph.invoke({"query": "q", "context": "abc"})
    assert out["answer"] == "done" and out["usage"]["prompt_tokens"] == 22
    assert stub.requests[0]["body"]["max_tokens"] == 2048
    assert "Query: q" in stub.requests[0]["body"]["messages"][1]["content"]


def test_streams_custom_events_and_updates():
    graph = create_rlm_graph(script(cell("print(llm_query('hi'))"), cell("FINAL('ok')")), sub_model=upper_lm())
    events, nodes = [], []
    for mode, chunk in graph.stream({"query": "q", "context": "c"}, stream_mode=["custom", "updates"]):
        (events if mode == "custom" else nodes).append(chunk)
    assert [e["kind"] for e in events] == ["iteration", "lm_call", "sub_call", "cell", "iteration", "lm_call",
                                           "cell", "final"]
    assert all(e["depth"] == 0 for e in events) and events[0]["iteration"] == 1
    assert [next(iter(n)) for n in nodes] == ["prepare", "root_lm", "execute", "root_lm", "execute", "finalize"]


def test_each_super_step_writes_only_the_events_it_recorded_and_copies_no_earlier_one(monkeypatch):
    from sandbox.engine.trajectory import Trajectory

    copies = []
    whole_copy = Trajectory._copy
    monkeypatch.setattr(Trajectory, "_copy", lambda self: copies.append(self.query) or whole_copy(self))
    graph = create_rlm_graph(script(*[cell(f"x = {i}") for i in range(12)], cell("print(x)\nFINAL(x)")))
    written = []
    for update in graph.stream({"query": "q", "context": "c"}, stream_mode="updates"):
        (node, values), = update.items()
        written.append((node, [e["kind"] for e in values["events"]["events"]]))
    assert written[0] == ("prepare", []) and written[-1] == ("finalize", ["final"])
    assert written[1:-1] == [("root_lm", ["iteration", "lm_call"]), ("execute", ["cell"])] * 13
    assert copies == ["q"]  # the first write only; every later one copies just what is new


def test_checkpoints_every_iteration_and_keep_the_context_out(tmp_path):
    sizes = {}
    for size in (1_000_000, 10_000_000):
        db = tmp_path / f"{size}.db"
        with SqliteSaver.from_conn_string(str(db)) as saver:
            graph = create_rlm_graph(script(cell("x = len(context)"), cell("print(x)"), cell("FINAL(x)")),
                                     sub_model=upper_lm(), checkpointer=saver)
            out = graph.invoke({"query": "q", "context": "y" * size}, thread())
            history = list(graph.get_state_history(thread()))
            sizes[size] = max(stored_sizes(saver, thread()))
        assert out["answer"] == size
        assert len(history) >= 3 * 2  # at least one checkpoint per super-step, two per iteration
    assert sizes[10_000_000] < 20_000 and abs(sizes[10_000_000] - sizes[1_000_000]) < 1_000


def _review_graph(saver, sub, store, *replies):
    return create_rlm_graph(script(*replies), sub_model=sub, checkpointer=saver, review="code", store=store)


def test_resume_in_a_fresh_graph_replays_without_repeating_sub_calls(tmp_path):
    db, store = str(tmp_path / "c.db"), InMemoryStore()
    first = upper_lm()
    with SqliteSaver.from_conn_string(db) as saver:
        graph = _review_graph(saver, first, store, cell("note = llm_query(context)\nn = 41"), cell("FINAL(note + str(n + 1))"))
        paused = graph.invoke({"query": "q", "context": "abc"}, thread())
        assert paused["__interrupt__"][0].value["type"] == "review_code"
        paused = graph.invoke(Command(resume=True), thread())
        assert "FINAL(note" in paused["__interrupt__"][0].value["code"]
    assert first.calls == ["abc"]

    second = FakeLM(lambda p: pytest.fail("a sub-call was repeated on resume"))
    with SqliteSaver.from_conn_string(db) as saver:
        graph = _review_graph(saver, second, store)
        out = graph.invoke(Command(resume=True), thread())
    assert out["answer"] == "ABC42" and second.calls == []


def test_resume_in_a_new_process(tmp_path):
    db = tmp_path / "c.db"
    with SqliteSaver.from_conn_string(str(db)) as saver, SqliteStore.from_conn_string(str(db)) as store:
        store.setup()
        graph = _review_graph(saver, upper_lm(), store, cell("note = llm_query(context)"), cell("FINAL(note)"))
        graph.invoke({"query": "q", "context": "from another process"}, thread())
        assert "FINAL(note)" in graph.invoke(Command(resume=True), thread())["__interrupt__"][0].value["code"]
    program = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT)!r})
        from langchain_core.language_models.fake_chat_models import FakeListChatModel
        from langgraph.checkpoint.sqlite import SqliteSaver
        from langgraph.store.sqlite import SqliteStore
        from langgraph.types import Command
        from rlm_graph import create_rlm_graph
        from tests.conftest import FakeLM

        def never(prompt):
            raise AssertionError("sub-call repeated")

        with SqliteSaver.from_conn_string({str(db)!r}) as saver, SqliteStore.from_conn_string({str(db)!r}) as store:
            graph = create_rlm_graph(FakeListChatModel(responses=["unused"]),
                                     sub_model=FakeLM(never), checkpointer=saver, review="code", store=store)
            out = graph.invoke(Command(resume=True), {{"configurable": {{"thread_id": "t"}}}})
        print(json.dumps(out["answer"]))
    """)
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == "FROM ANOTHER PROCESS"


def test_incompatible_checkpoint_version_is_named(tmp_path, monkeypatch):
    import rlm_graph.graph

    saver, store = InMemorySaver(), InMemoryStore()
    graph = _review_graph(saver, upper_lm(), store, cell("x = 1"))
    graph.invoke({"query": "q", "context": "c"}, thread())
    monkeypatch.setattr(rlm_graph.graph, "STATE_VERSION", rlm_graph.graph.STATE_VERSION + 1)  # an upgrade
    fresh = _review_graph(saver, upper_lm(), store)
    with pytest.raises(ValueError, match=f"state version {STATE_VERSION}; this is version {STATE_VERSION + 1}"):
        fresh.invoke(Command(resume=True), thread())


def test_missing_context_on_resume_is_named(tmp_path):
    saver = InMemorySaver()
    graph = _review_graph(saver, upper_lm(), InMemoryStore(), cell("x = 1"))
    graph.invoke({"query": "q", "context": "c"}, thread())
    other = _review_graph(saver, upper_lm(), InMemoryStore(), cell("FINAL(x)"))
    with pytest.raises(LookupError, match="the store= the run started with"):
        other.invoke(Command(resume=True), thread())


def test_review_code_edit_and_reject():
    graph = create_rlm_graph(script(cell("FINAL('unreviewed')"), cell("FINAL('second try')")),
                             sub_model=upper_lm(), checkpointer=InMemorySaver(), review="code")
    graph.invoke({"query": "q", "context": "c"}, thread())
    paused = graph.invoke(Command(resume={"action": "reject", "feedback": "too hasty"}), thread())
    assert paused["__interrupt__"][0].value["code"] == "FINAL('second try')"
    out = graph.invoke(Command(resume={"action": "edit", "code": "FINAL('edited by a human')"}), thread())
    assert out["answer"] == "edited by a human"
    assert any("too hasty" in m["content"] for m in graph.get_state(thread()).values["messages"])


def test_review_final_approve_edit_reject():
    graph = create_rlm_graph(script(cell("FINAL('draft')"), cell("FINAL('better')")), sub_model=upper_lm(),
                             checkpointer=InMemorySaver(), review="final")
    paused = graph.invoke({"query": "q", "context": "c"}, thread())
    assert paused["__interrupt__"][0].value == {"type": "review_final", "answer": "draft", "iteration": 1, "query": "q"}
    paused = graph.invoke(Command(resume={"action": "reject", "feedback": "cite a source"}), thread())
    assert paused["__interrupt__"][0].value["answer"] == "better"
    assert graph.invoke(Command(resume={"action": "edit", "answer": "best"}), thread())["answer"] == "best"
    with pytest.raises(ValueError, match="resume the review"):
        graph2 = create_rlm_graph(script(cell("FINAL(1)")), checkpointer=InMemorySaver(), review="final")
        graph2.invoke({"query": "q", "context": "c"}, thread("x"))
        graph2.invoke(Command(resume="maybe"), thread("x"))


def test_evaluator_sends_feedback_until_accepted():
    seen = []

    def evaluator(query, answer):
        seen.append(answer)
        return Evaluation(1.0, True) if answer == "complete" else Evaluation(0.3, False, "mention the year")

    root = script(cell("FINAL('partial')"), cell("FINAL('complete')"))
    graph = create_rlm_graph(root, sub_model=upper_lm(), evaluator=evaluator, checkpointer=InMemorySaver())
    out = graph.invoke({"query": "q", "context": "c"}, thread())
    assert out["answer"] == "complete" and out["stop_reason"] == "accepted" and seen == ["partial", "complete"]
    messages = graph.get_state(thread()).values["messages"]
    assert any("mention the year" in m["content"] for m in messages)
    assert [e["decision"] for e in out["events"]["events"] if e["kind"] == "evaluation"] == ["refine", "accept"]


def test_no_improvement_stops_with_the_best_answer():
    scores = {"good": 0.6, "worse": 0.5}
    graph = create_rlm_graph(script(cell("FINAL('good')"), cell("FINAL('worse')")), sub_model=upper_lm(),
                             evaluator=lambda q, a: (scores[a], "more"), min_gain=0.05)
    out = graph.invoke({"query": "q", "context": "c"})
    assert out["answer"] == "good" and out["stop_reason"] == "no_improvement"


def test_refinement_cap():
    graph = create_rlm_graph(script(*(cell(f"FINAL('v{i}')") for i in range(5))), sub_model=upper_lm(),
                             evaluator=lambda q, a: (0.1 * int(a[1:]) + 0.1, "again"), max_refinements=2)
    out = graph.invoke({"query": "q", "context": "c"})
    assert out["stop_reason"] == "max_refinements" and out["answer"] == "v2" and out["iterations"] == 3


def test_budget_exhaustion_returns_the_best_partial_answer():
    graph = create_rlm_graph(script(cell("FINAL('draft')"), cell("print(1)")), sub_model=upper_lm(),
                             evaluator=lambda q, a: (0.5, "improve it"), budget=Budget(max_llm_calls=3))
    out = graph.invoke({"query": "q", "context": "c"})
    assert out["stop_reason"] == "max_llm_calls" and out["answer"] == "draft"
    assert out["usage"]["llm_calls"] == 2  # the third call was held for `extract`, not needed with an answer
    assert any(e["kind"] == "budget" for e in out["events"]["events"])


def test_budget_stop_inside_a_cell():
    graph = create_rlm_graph(script(cell("for i in range(100):\n    llm_query('x')")), sub_model=upper_lm(),
                             budget=Budget(max_llm_calls=4))
    out = graph.invoke({"query": "q", "context": "c"})
    assert out["stop_reason"] == "max_llm_calls" and out["answer"] is None and out["usage"]["llm_calls"] == 4


def test_wall_clock_budget():
    slow = FakeLM(lambda p: "x", latency=5)
    graph = create_rlm_graph(script(cell("llm_query('slow')")), sub_model=slow, budget=Budget(max_seconds=0.5))
    started = time.monotonic()
    out = graph.invoke({"query": "q", "context": "c"})
    assert out["stop_reason"] == "max_seconds" and time.monotonic() - started < 3


def test_iteration_cap():
    graph = create_rlm_graph(script(cell("x = 1")), sub_model=upper_lm(), max_iterations=3)
    out = graph.invoke({"query": "q", "context": "c"})
    assert out["stop_reason"] == "max_iterations" and out["iterations"] == 3


def test_rlm_query_runs_a_child_graph_one_level_deeper():
    root = script(cell("sub = rlm_query('count the words', 'one two three')\nprint(sub)"),
                  cell("FINAL(len(context.split()))"),
                  cell("FINAL('parent got ' + sub)"))
    graph = create_rlm_graph(root, sub_model=upper_lm(), max_depth=1)
    events = [e for _, e in graph.stream({"query": "q", "context": "c"}, stream_mode=["custom"])]
    out = [e for e in events if e["kind"] == "final" and e["depth"] == 0][0]
    assert out["answer"] == "parent got 3"
    assert {e["depth"] for e in events} == {0, 1}
    assert [e for e in events if e["kind"] == "rlm_query"][0]["degraded"] is False


def test_rlm_query_at_max_depth_degrades():
    graph = create_rlm_graph(script(cell("FINAL(rlm_query('hello'))")), sub_model=upper_lm(), max_depth=0)
    out = graph.invoke({"query": "q", "context": "c"})
    assert out["answer"] == "HELLO"
    (event,) = [e for e in out["events"]["events"] if e["kind"] == "rlm_query"]
    assert event["degraded"] and "max_depth=0" in event["reason"]


def test_ainvoke_runs_sub_calls_concurrently_without_blocking_the_loop():
    slow = FakeLM(lambda p: p, latency=0.3)
    graph = create_rlm_graph(script(cell("FINAL(llm_query_batched([str(i) for i in range(8)]))")), sub_model=slow)

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        started = time.monotonic()
        out = await graph.ainvoke({"query": "q", "context": "c"})
        elapsed = time.monotonic() - started
        task.cancel()
        return out, elapsed, ticks

    out, elapsed, ticks = asyncio.run(main())
    assert out["answer"] == [str(i) for i in range(8)]
    assert elapsed < 8 * 0.3 and slow.max_in_flight == 8
    assert ticks > elapsed / 0.01 / 3  # the loop kept running while the RLM worked


def test_astream_custom_events():
    graph = create_rlm_graph(script(cell("FINAL(1)")), sub_model=upper_lm())

    async def main():
        return [chunk async for chunk in graph.astream({"query": "q", "context": "c"}, stream_mode="custom")]

    assert [e["kind"] for e in asyncio.run(main())] == ["iteration", "lm_call", "cell", "final"]


class Parent(TypedDict, total=False):
    question: str
    document: str
    result: object
    log: Annotated[list, add]


def _parent_graph(node, checkpointer=None):
    builder = StateGraph(Parent)
    builder.add_node("router", lambda s: {"log": ["router"]})
    builder.add_node("rlm", node)
    builder.add_node("summarize", lambda s: {"log": [f"summary of {s['result']}"]})
    builder.add_edge(START, "router")
    builder.add_edge("router", "rlm")
    builder.add_edge("rlm", "summarize")
    builder.add_edge("summarize", END)
    return builder.compile(checkpointer=checkpointer)


def test_node_in_a_parent_graph_with_its_own_keys():
    node = create_rlm_node(script(cell("FINAL(len(context))")), sub_model=upper_lm(), query_key="question",
                           context_key="document", output_key="result")
    parent = _parent_graph(node)
    out = parent.invoke({"question": "how long?", "document": "12345"})
    assert out["result"] == 5 and out["log"] == ["router", "summary of 5"]
    streamed = [c for c in parent.stream({"question": "q", "document": "ab"}, stream_mode="custom", subgraphs=True)]
    assert any(chunk[1]["kind"] == "final" for chunk in streamed)
    assert asyncio.run(parent.ainvoke({"question": "q", "document": "abc"}))["result"] == 3


@pytest.mark.parametrize("subgraphs", [False, True])
def test_a_nodes_events_reach_a_parent_streaming_custom_once(subgraphs):
    def kinds(chunks):
        return [(chunk[1] if subgraphs else chunk)["kind"] for chunk in chunks]

    def parent():
        node = create_rlm_node(script(cell("print(len(context))"), cell("FINAL(len(context))")), sub_model=upper_lm(),
                               query_key="question", context_key="document", output_key="result")
        return _parent_graph(node, checkpointer=InMemorySaver())

    expected = ["iteration", "lm_call", "cell", "iteration", "lm_call", "cell", "final"]
    streamed = parent().stream({"question": "q", "document": "ab"}, thread(), stream_mode="custom",
                               subgraphs=subgraphs)
    assert kinds(streamed) == expected

    async def astreamed():
        return [c async for c in parent().astream({"question": "q", "document": "ab"}, thread(),
                                                  stream_mode="custom", subgraphs=subgraphs)]

    assert kinds(asyncio.run(astreamed())) == expected


def test_node_reports_a_missing_key():
    parent = _parent_graph(create_rlm_node(script(cell("FINAL(1)")), query_key="question", context_key="text"))
    with pytest.raises(KeyError, match="'text'"):
        parent.invoke({"question": "q", "document": "d"})


def test_interrupt_inside_the_rlm_surfaces_to_the_parent():
    node = create_rlm_node(script(cell("FINAL('draft')")), sub_model=upper_lm(), query_key="question",
                           context_key="document", output_key="result", review="final", details_key="details")
    parent = _parent_graph(node, checkpointer=InMemorySaver())
    paused = parent.invoke({"question": "q", "document": "d"}, thread())
    assert paused["__interrupt__"][0].value["type"] == "review_final"
    out = parent.invoke(Command(resume={"action": "edit", "answer": "approved text"}), thread())
    assert out["result"] == "approved text" and out["log"][-1] == "summary of approved text"


def test_messages_stream_carries_root_and_sub_call_tokens():
    graph = create_rlm_graph(script(cell("FINAL(llm_query('hi'))")),
                             sub_model=FakeListChatModel(responses=["sub answer"]))
    nodes = {meta["langgraph_node"] for _, meta in graph.stream({"query": "q", "context": "c"}, stream_mode="messages")}
    assert nodes == {"root_lm", "execute"}


def test_an_overlong_conversation_is_compacted_into_a_summary_and_goes_on():
    class ContextWindowExceededError(Exception):
        pass

    seen: list[list[dict]] = []

    class Windowed(FakeLM):  # a window of 1,300 characters; the compaction request fits in it
        async def acomplete(self, messages, *, max_tokens):
            seen.append(messages)
            if sum(len(m["content"]) for m in messages[1:]) > 1_300:
                raise ContextWindowExceededError("maximum context length is 8192 tokens")
            return await super().acomplete(messages, max_tokens=max_tokens)

    def reply(prompt):
        if prompt.startswith("Query: q\n\nStep 1."):
            return "x was set to 1, then 2; each cell printed 300 dots."
        return next(replies)

    replies = iter([cell("x = 1\nprint('.' * 300)"), cell("x += 1\nprint('.' * 300)"),
                    cell("x += 1\nprint('.' * 300)"), cell("FINAL(x)")])
    out = create_rlm_graph(Windowed(reply), sub_model=upper_lm(), system_prompt="short").invoke(
        {"query": "q", "context": "c"})
    assert out["answer"] == 3 and out["stop_reason"] == "final"
    [event] = [e for e in out["events"]["events"] if e["kind"] == "compaction"]
    assert event["steps"] >= 1 and event["chars_after"] < event["chars_before"]
    assert out["usage"]["llm_calls"] == 4 + 1 + 1  # four replies, one overflowed call, one summary
    last = seen[-1]
    assert "each cell printed 300 dots" in last[3]["content"] and last[2]["content"].startswith("(My earlier steps")
    assert all("x = 1" not in m["content"] for m in last[2:])  # the compacted step is gone, not the newest


def test_a_run_whose_last_step_alone_overflows_stops_with_context_window():
    class ContextWindowExceededError(Exception):
        pass

    class Windowed(FakeLM):
        async def acomplete(self, messages, *, max_tokens):
            if len(messages) > 3:
                raise ContextWindowExceededError("maximum context length is 8192 tokens")
            return await super().acomplete(messages, max_tokens=max_tokens)

    out = create_rlm_graph(Windowed(lambda p: cell("x = 1")), sub_model=upper_lm()).invoke({"query": "q", "context": "c"})
    assert out["stop_reason"] == "context_window"
    assert [e["kind"] for e in out["events"]["events"]].count("compaction") == 0


def stored_contexts(store) -> int:
    return sum(store.get(ns, "meta") is not None for ns in store.list_namespaces(prefix=("rlm", "contexts"),
                                                                                  limit=10_000))


def test_a_long_lived_graph_on_its_default_store_keeps_only_recent_contexts():
    """A service builds the graph once and serves many documents: memory must not grow with each."""
    from langgraph.store.memory import InMemoryStore

    from rlm_graph.contexts import KeptContexts

    replies = [cell("FINAL(len(context))")] * 40
    own = create_rlm_graph(script(*replies), sub_model=upper_lm())
    given = InMemoryStore()
    shared = create_rlm_graph(script(*replies), sub_model=upper_lm(), store=given)
    for i in range(KeptContexts(given).limit + 4):
        document = f"document {i:02d} " * 10
        assert own.invoke({"query": "q", "context": document})["answer"] == len(document)
        shared.invoke({"query": "q", "context": document})
    assert stored_contexts(own.store) == KeptContexts(given).limit
    assert stored_contexts(given) == KeptContexts(given).limit + 4  # a store the caller gave is theirs
