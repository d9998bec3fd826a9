"""search(query, k): BM25 passages of the context with their offsets, indexed once per Session, on the host."""

from __future__ import annotations

import json
import threading

import bm25s
import dspy
import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.store.memory import InMemoryStore
from langgraph.types import Command
from dspy.primitives.local_interpreter import LocalInterpreter

from rlm_dspy import RLM
from rlm_graph import create_rlm_graph
from sandbox import Budget, Trajectory
from sandbox.engine.bridge import SEARCH_EVENTS_PER_CELL
from sandbox.engine.prompts import repl_guide
from sandbox.engine.search import MAX_K, OVERLAP_CHARS, PASSAGE_CHARS, PassageIndex, passage_spans
from sandbox.engine.session import Session
from tests.checkpoints import stored_sizes
from tests.conftest import FakeLM
from tests.dspy_lms import script_lm, text_lm

RARE = "quetzalcoatlus"


def haystack(lines: int = 400, needle_at: int | None = None) -> str:
    """Lines of common words, with ``RARE`` in line ``needle_at``."""
    rows = [f"line {i}: the river carries boats and the boats carry grain to the market." for i in range(lines)]
    if needle_at is not None:
        rows[needle_at] = f"line {needle_at}: a {RARE} skeleton lies by the river market."
    return "\n".join(rows)


def assert_hits_point_into(context, hits):
    for hit in hits:
        document = context if "doc" not in hit else context[hit["doc"]]
        assert document[hit["offset"]:hit["offset"] + len(hit["text"])] == hit["text"]


def cell(code: str) -> str:
    """A root-LM reply for the graph engine."""
    return f"Next step.\n```repl\n{code}\n```"


def step(code: str) -> dict[str, str]:
    """A root-LM action for the DSPy engine."""
    return {"reasoning": "next", "code": f"```python\n{code}\n```"}


@pytest.fixture
def builds(monkeypatch):
    """How many BM25 indexes were built."""
    count = [0]
    index = bm25s.BM25.index

    def counting(self, *args, **kwargs):
        count[0] += 1
        return index(self, *args, **kwargs)

    monkeypatch.setattr(bm25s.BM25, "index", counting)
    return count


@pytest.fixture
def session_for(runner):
    """``session_for(context, **kw)``: a Session on the restricted sandbox, closed after the test."""
    opened = []

    def make(context, **kwargs):
        kwargs.setdefault("trajectory", Trajectory("q"))
        kwargs.setdefault("budget", Budget())
        opened.append(Session(variables={"context": context}, sub_lm=FakeLM(), runner=runner, **kwargs))
        return opened[-1]

    yield make
    for session in opened:
        session.close()


# -- passages ---------------------------------------------------------------------------

def test_passages_overlap_cover_the_text_and_end_at_line_ends():
    text = haystack()
    spans = passage_spans(text)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    for (start, end), (next_start, _) in zip(spans, spans[1:]):
        assert PASSAGE_CHARS // 2 <= end - start <= PASSAGE_CHARS
        assert text[end - 1] == "\n" and text[next_start - 1] == "\n"  # whole lines
        assert start < next_start < end and end - next_start <= OVERLAP_CHARS  # they overlap
    hits = PassageIndex(text).search("river boats grain", k=MAX_K)
    assert len(hits) == MAX_K
    assert_hits_point_into(text, hits)


def test_a_context_without_newlines_is_cut_at_sentences_then_anywhere():
    sentences = " ".join(f"Sentence {i} names item {i}." for i in range(300))
    spans = passage_spans(sentences)
    assert len(spans) > 5 and all(sentences[end - 2:end] == ". " for _, end in spans[:-1])
    blob = "x" * 5000
    stride = PASSAGE_CHARS - OVERLAP_CHARS
    assert passage_spans(blob)[:3] == [(i * stride, i * stride + PASSAGE_CHARS) for i in range(3)]
    assert passage_spans(blob)[-1][1] == 5000 and passage_spans("") == []
    context = blob + f" {RARE} " + blob
    (hit,) = PassageIndex(context).search(RARE)
    assert RARE in hit["text"]
    assert_hits_point_into(context, [hit])


def test_a_list_context_gives_each_hit_its_document_and_offset_there():
    docs = [haystack(40), "", haystack(40, needle_at=30), "short note on grain"]
    hits = PassageIndex(docs).search(f"{RARE} grain", k=MAX_K)
    assert hits[0]["doc"] == 2 and RARE in hits[0]["text"] and hits[0]["offset"] > 0
    assert {hit["doc"] for hit in hits} == {0, 2, 3}
    assert_hits_point_into(docs, hits)
    assert PassageIndex(["", ""]).search("grain") == [] and PassageIndex("").search("grain") == []


# -- ranking ----------------------------------------------------------------------------

def test_the_passage_with_the_rare_term_comes_first_and_scores_fall():
    context = haystack(needle_at=250)
    hits = PassageIndex(context).search(f"river market {RARE}", k=8)
    assert len(hits) == 8 and RARE in hits[0]["text"]
    assert sum(RARE in hit["text"] for hit in hits[1:]) <= 1  # at most the overlapping neighbour
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True) and all(isinstance(s, float) and s > 0 for s in scores)
    assert PassageIndex(context).search("unicorn") == []  # no passage shares a word: nothing, not noise
    json.dumps(hits)  # plain values only: they cross into the sandbox


# -- arguments --------------------------------------------------------------------------

@pytest.mark.parametrize("args,error,match", [
    ((None,), TypeError, "query must be a str"),
    (("   ",), ValueError, "query is empty"),
    (("river " * 2000,), ValueError, "query is 12,000 characters; pass a few words"),
    (("river", 0), ValueError, "k must be from 1 to 50, got 0"),
    (("river", MAX_K + 1), ValueError, "k must be from 1 to 50"),
    (("river", True), TypeError, "k must be an int"),
    (("river", 2.0), TypeError, "k must be an int"),
    (("the and of",), ValueError, "has no word to search for"),
])
def test_wrong_arguments_are_named_for_the_model(args, error, match, builds):
    with pytest.raises(error, match=match):
        PassageIndex(haystack()).search(*args)
    assert builds[0] == 0  # refused before any index is built


# -- the Session: built on the host, once, lazily ---------------------------------------

def test_the_index_is_built_on_the_first_search_and_once_per_session(session_for, builds):
    first = session_for(haystack(needle_at=9))
    assert first.run_cell("x = 1", iteration=1).error is None and builds[0] == 0  # lazy
    for i in range(3):
        result = first.run_cell(f"hits = search('{RARE}')\nprint(hits[0]['offset'])", iteration=i + 2)
        assert result.error is None
    assert builds[0] == 1
    assert [e["built_index"] for e in first.trajectory.of_kind("search")] == [True, False, False]
    second = session_for(haystack(needle_at=200))  # another RLM run: its own index of its own context
    result = second.run_cell(f"print('line 200: a {RARE}' in search('{RARE}')[0]['text'])", iteration=1)
    assert result.output == "True\n"
    assert builds[0] == 2


def test_concurrent_first_searches_build_one_index(builds):
    index, answers = PassageIndex(haystack(needle_at=3)), []
    threads = [threading.Thread(target=lambda: answers.append(index.search(RARE))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert builds[0] == 1 and len(answers) == 8 and all(a == answers[0] for a in answers)


def test_a_cell_searches_the_hosts_context_for_free_and_the_trajectory_keeps_a_preview(session_for):
    budget = Budget(max_llm_calls=1)
    session = session_for(haystack(needle_at=120), budget=budget)
    code = (f"context = 'the cell replaced its copy'\nhits = search('{RARE} skeleton', k=3)\n"
            "print(len(hits), hits[0]['offset'], sorted(hits[0]))")
    result = session.run_cell(code, iteration=1)
    assert result.error is None
    printed, note = result.output.split("\n", 1)
    count, offset, keys = printed.split(" ", 2)
    assert int(count) >= 1 and keys == "['offset', 'score', 'text']"
    assert "cannot be replaced" in note  # and the cell's own rebinding was undone after it
    assert 0 <= haystack(needle_at=120)[int(offset):].find(RARE) < PASSAGE_CHARS  # found in the host's copy
    assert budget.spent()["llm_calls"] == 0 and budget.spent()["tokens"] == 0
    (event,) = session.trajectory.of_kind("search")
    assert event["query"] == f"{RARE} skeleton" and event["k"] == 3 and RARE in event["top"]
    assert event["hits"][0] == {"offset": int(offset), "score": event["hits"][0]["score"]}  # no text: a preview only


def test_argument_errors_reach_the_cell_and_a_loop_of_searches_is_counted_not_stored(session_for):
    session = session_for(haystack())
    result = session.run_cell("search('river', k=99)", iteration=1)
    assert "ValueError" in result.error and "k must be from 1 to 50, got 99" in result.error
    result = session.run_cell("for i in range(200):\n    search('river grain')\nprint('done')", iteration=2)
    assert result.output == "done\n"
    assert len(session.trajectory.of_kind("search")) == SEARCH_EVENTS_PER_CELL
    (note,) = session.trajectory.of_kind("note")
    assert note["unrecorded"] == "search" and note["count"] == 200 - SEARCH_EVENTS_PER_CELL
    assert len(session.trajectory.to_json()) < 250_000


def test_a_users_own_search_tool_or_input_keeps_its_name(runner):
    def search(topic: str) -> str:
        """The user's search."""
        return f"user search: {topic}"

    session = Session(variables={"context": "c"}, sub_lm=FakeLM(), budget=Budget(), trajectory=Trajectory("q"),
                      runner=runner, tools={"search": search})
    try:
        assert session.run_cell("print(search('x'))", iteration=1).output == "user search: x\n"
    finally:
        session.close()
    session = Session(variables={"context": "c", "search": "an input"}, sub_lm=FakeLM(), budget=Budget(),
                      trajectory=Trajectory("q"), runner=runner)
    try:
        assert session.run_cell("print(search)", iteration=1).output == "an input\n"
    finally:
        session.close()
    graph = create_rlm_graph(FakeListChatModel(responses=[cell("FINAL(search('x'))")]), sub_model=FakeLM(),
                             tools={"search": search}, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    assert graph.invoke({"query": "q", "context": "c"}, config)["answer"] == "user search: x"
    assert len(graph.get_state(config).values["call_log"]) == 1  # a user's tool is logged for replay
    assert "`search(query, k=5)`" in repl_guide(max_output_chars=100, can_recurse=False)
    assert "`search(query, k=5)`" not in repl_guide(max_output_chars=100, can_recurse=False, tools={"search": search})


def test_without_a_text_context_search_says_so(runner):
    session = Session(variables={"notes": "n"}, sub_lm=FakeLM(), budget=Budget(), trajectory=Trajectory("q"),
                      runner=runner)
    try:
        result = session.run_cell("search('n')", iteration=1)
    finally:
        session.close()
    assert "this REPL has no `context` that is a str or a list of str" in result.error


# -- both engines -----------------------------------------------------------------------

def test_a_checkpointed_graph_run_keeps_search_results_out_of_the_call_log(tmp_path):
    context, db = haystack(needle_at=77), str(tmp_path / "c.db")
    code = (f"hits = search('{RARE}')\nfor i in range(30):\n    search('river grain', k=10)\n"
            "note = llm_query('shout ' + str(hits[0]['offset']))")
    with SqliteSaver.from_conn_string(db) as saver:
        graph = create_rlm_graph(FakeListChatModel(responses=[cell(code), cell("FINAL(note)")]),
                                 sub_model=FakeLM(str.upper), checkpointer=saver, look_before_answer=False,
                                 grounding=False, store=InMemoryStore())
        config = {"configurable": {"thread_id": "t"}}
        out = graph.invoke({"query": "where is the skeleton?", "context": context}, config)
        call_log = graph.get_state(config).values["call_log"]
        largest = max(stored_sizes(saver, config))
    assert out["answer"].startswith("SHOUT ") and out["stop_reason"] == "final"
    assert len(call_log) == 1 and "river" not in json.dumps(call_log)  # the sub-call only, no passages
    assert largest < 150_000  # previews only: the passages are not stored


def test_a_resumed_graph_replays_a_cell_that_searched_without_repeating_its_sub_call(tmp_path, builds):
    db, store = str(tmp_path / "c.db"), InMemoryStore()
    context = haystack(needle_at=50)
    code = f"hits = search('{RARE}')\nnote = llm_query('found at ' + str(hits[0]['offset']))"
    config = {"configurable": {"thread_id": "t"}}
    with SqliteSaver.from_conn_string(db) as saver:
        graph = create_rlm_graph(FakeListChatModel(responses=[cell(code), cell("FINAL(note)")]),
                                 sub_model=FakeLM(str.upper), checkpointer=saver, review="code", store=store,
                                 look_before_answer=False, grounding=False)
        graph.invoke({"query": "q", "context": context}, config)
        paused = graph.invoke(Command(resume=True), config)  # the first cell ran; the second waits for review
        assert "FINAL(note)" in paused["__interrupt__"][0].value["code"]
    again = FakeLM(lambda prompt: pytest.fail("a sub-call was repeated on resume"))
    with SqliteSaver.from_conn_string(db) as saver:
        graph = create_rlm_graph(FakeListChatModel(responses=[]), sub_model=again, checkpointer=saver,
                                 review="code", store=store, look_before_answer=False, grounding=False)
        out = graph.invoke(Command(resume=True), config)
    offset = PassageIndex(context).search(RARE)[0]["offset"]
    assert offset > 0 and out["answer"] == f"FOUND AT {offset}" and again.calls == []
    assert builds[0] == 3  # the run, the replay (a fresh Session searched again), and the line above


@pytest.mark.parametrize("interpreter", ["restricted", "local"])
def test_rlm_dspy_searches_its_context_on_either_interpreter(interpreter):
    on = {"restricted": {}, "local": {"interpreter_factory": LocalInterpreter}}[interpreter]
    root = script_lm(step(f"hits = search('{RARE}', k=2)\nfound = 'line 42: a {RARE}' in hits[0]['text']\nprint(found)"),
                     step("SUBMIT(answer=str(found))"))
    rlm = RLM("context, query -> answer", sub_lm=text_lm(str.upper), **on)
    with dspy.context(lm=root):
        out = rlm(context=haystack(needle_at=42), query="where is the skeleton?")
    assert out.answer == "True" and out.stop_reason == "final"
    kinds = [e["kind"] for e in out.events["events"]]
    assert kinds.count("search") == 1 and kinds.count("sub_call") == 0
    (event,) = [e for e in out.events["events"] if e["kind"] == "search"]
    assert event["query"] == RARE
    assert "`search(query, k=5)`" in root.scripted.prompts[0]


def test_a_child_rlm_searches_its_own_context(builds):
    parent = cell(f"hits = search('{RARE}')\nsub = rlm_query('find it', 'grain ' * 300 + '{RARE} ' + 'grain ' * 300)")
    child = cell(f"FINAL(search('{RARE}')[0]['offset'])")
    graph = create_rlm_graph(FakeListChatModel(responses=[parent, child, cell("FINAL([len(hits), sub])")]),
                             sub_model=FakeLM(), max_depth=1, look_before_answer=False, grounding=False)
    out = graph.invoke({"query": "q", "context": haystack()})
    hits, offset = out["answer"]
    assert hits == 0 and 1800 - PASSAGE_CHARS < int(offset) <= 1800  # the child's context, not the parent's
    assert builds[0] == 2
