"""Multi-turn sessions (sandbox.engine.turns): follow-up questions over one loaded context and REPL, both adapters."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dspy
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.store.sqlite import SqliteStore

from rlm_dspy import RLM
from rlm_graph import create_rlm_graph
from sandbox import Budget, Completion
from tests.conftest import FakeLM
from tests.dspy_lms import fields, function_lm, text_lm


class ScriptedRoot:
    """A root LMClient replying from ``replies`` in order (the last repeats); keeps every chat it was sent."""

    model = "scripted/root"

    def __init__(self, *replies: str):
        self.replies = list(replies)
        self.chats: list[list[dict[str, str]]] = []

    async def acomplete(self, messages, *, max_tokens):
        self.chats.append([dict(m) for m in messages])
        text = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        return Completion(text=text, prompt_tokens=10, completion_tokens=10, model=self.model)


def cell(code: str) -> str:
    return f"Next step.\n```repl\n{code}\n```"


def thread(name: str = "t") -> dict:
    return {"configurable": {"thread_id": name}}


ROOT = Path(__file__).resolve().parents[1]


def running(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def workers() -> set[int]:
    """This process's running (not zombie) child processes: the REPL workers."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit():
                state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
                if int(ppid) == os.getpid() and state != "Z":
                    found.add(int(entry.name))
        except OSError:
            pass
    return found


TURN_1 = (cell("note = llm_query(context)\nsize = len(context)\nprint(size)"), "FINAL(note)")
TURN_2 = (cell("print(note.lower(), size)"), "FINAL_VAR(size)")


def two_turn_graph(root: ScriptedRoot, sub: FakeLM, **kwargs):
    return create_rlm_graph(root, sub_model=sub, checkpointer=kwargs.pop("checkpointer", InMemorySaver()), **kwargs)


# -- LangGraph ------------------------------------------------------------------------


def test_a_follow_up_reads_the_variables_of_the_first_turn_without_rerunning_it():
    sub = FakeLM(str.upper)
    root = ScriptedRoot(*TURN_1, *TURN_2)
    graph = two_turn_graph(root, sub)
    first = graph.invoke({"query": "shout the context", "context": "abc def"}, thread())
    second = graph.invoke({"query": "how long is it?"}, thread())
    assert first["answer"] == "ABC DEF" and second["answer"] == 7
    assert sub.calls == ["abc def"]  # turn 1's sub-call was neither repeated nor replayed
    cells = [e for e in second["events"]["events"] if e["kind"] == "cell"]
    assert [c["output"] for c in cells] == ["abc def 7\n", ""] and second["events"]["query"] == "how long is it?"
    assert (first["iterations"], second["iterations"]) == (2, 2)
    assert [t["query"] for t in second["turns"]] == ["shout the context", "how long is it?"]
    assert second["turns"][0]["variables"] == ["note", "size"] and second["turns"][1]["variables"] == []
    assert second["usage"]["llm_calls"] == 2 and first["usage"]["llm_calls"] == 3  # per turn
    graph.close()


def test_the_follow_ups_root_sees_a_summary_not_the_transcript():
    root = ScriptedRoot(*TURN_1, *TURN_2)
    graph = two_turn_graph(root, FakeLM(str.upper))
    graph.invoke({"query": "shout the context", "context": "abc def"}, thread())
    graph.invoke({"query": "how long is it?"}, thread())
    opening = root.chats[2]  # the follow-up's first root call
    assert [m["role"] for m in opening] == ["system", "user"]
    text = opening[1]["content"]
    assert "Question: shout the context" in text and "Answer: ABC DEF" in text and "note, size" in text
    assert "Query: how long is it?" in text
    assert "llm_query(context)" not in text and "REPL output" not in text  # no transcript of turn 1
    graph.close()


def test_a_session_budget_stops_the_follow_up_a_turn_budget_does_not():
    for scope, expected in (("session", "max_iterations"), ("turn", "final")):
        root = ScriptedRoot(*TURN_1, cell("print(size)"), "FINAL(done)")
        graph = two_turn_graph(root, FakeLM(str.upper), budget=Budget(max_iterations=3), budget_scope=scope)
        graph.invoke({"query": "q1", "context": "abc def"}, thread())
        second = graph.invoke({"query": "q2"}, thread())
        assert second["stop_reason"] == expected, scope
        assert second["iterations"] == (1 if scope == "session" else 2)
        graph.close()


def test_close_session_frees_the_worker_and_the_thread_still_goes_on():
    before = workers()
    graph = two_turn_graph(ScriptedRoot(*TURN_1, *TURN_2), FakeLM(str.upper))
    graph.invoke({"query": "q1", "context": "abc def"}, thread())
    kept = workers() - before
    assert len(kept) == 1  # the finished turn's worker waits for the follow-up
    assert graph.close_session(thread()) and not workers() & kept
    assert graph.invoke({"query": "q2"}, thread())["answer"] == 7  # rebuilt by replay
    graph.close()
    assert not workers() - before


def test_no_kept_worker_outlives_the_interpreter():
    program = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from tests.test_sessions import TURN_1, ScriptedRoot, thread, two_turn_graph, workers
        from tests.conftest import FakeLM
        graph = two_turn_graph(ScriptedRoot(*TURN_1), FakeLM(str.upper))
        graph.invoke({{"query": "q1", "context": "abc def"}}, thread())
        print(*workers())  # exits without closing the graph
    """)
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    (pid,) = map(int, result.stdout.split())
    time.sleep(0.2)
    assert not running(pid)


def test_a_dropped_graph_frees_its_kept_worker():
    """Nothing outside the graph may hold it: then collecting it stops the worker it kept."""
    import gc

    before = workers()
    graph = two_turn_graph(ScriptedRoot(*TURN_1), FakeLM(str.upper))
    graph.invoke({"query": "q1", "context": "abc def"}, thread())
    kept = workers() - before
    assert len(kept) == 1
    del graph
    gc.collect()
    deadline = time.monotonic() + 10
    while workers() & kept and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not workers() & kept


def test_only_the_most_recent_threads_keep_a_live_worker():
    before = workers()
    graph = two_turn_graph(ScriptedRoot(*TURN_1), FakeLM(str.upper), keep_sessions=1)
    graph.invoke({"query": "q1", "context": "abc def"}, thread("a"))
    graph.invoke({"query": "q1", "context": "abc def"}, thread("b"))
    assert len(workers() - before) == 1
    graph.close()


def test_a_follow_up_after_a_restart_rebuilds_the_repl_by_replay(tmp_path):
    db = str(tmp_path / "c.db")
    with SqliteSaver.from_conn_string(db) as saver, SqliteStore.from_conn_string(db) as store:
        store.setup()
        graph = two_turn_graph(ScriptedRoot(*TURN_1), FakeLM(str.upper), checkpointer=saver, store=store)
        graph.invoke({"query": "q1", "context": "abc def"}, thread())
        graph.close()
    never = FakeLM(lambda prompt: pytest.fail("a sub-call was repeated on replay"))
    with SqliteSaver.from_conn_string(db) as saver, SqliteStore.from_conn_string(db) as store:
        graph = two_turn_graph(ScriptedRoot(*TURN_2), never, checkpointer=saver, store=store)
        second = graph.invoke({"query": "q2"}, thread())
        graph.close()
    assert second["answer"] == 7 and never.calls == [] and len(second["turns"]) == 2


def test_a_new_context_starts_the_thread_over():
    root = ScriptedRoot(*TURN_1, cell("print(size)"), "FINAL(fresh)")
    graph = two_turn_graph(root, FakeLM(str.upper))
    graph.invoke({"query": "q1", "context": "abc def"}, thread())
    again = graph.invoke({"query": "q2", "context": "another text"}, thread())
    assert "NameError" in again["events"]["events"][2]["error"]
    assert [t["query"] for t in again["turns"]] == ["q2"]
    assert "follow-up" not in root.chats[2][1]["content"]
    graph.close()


def test_bad_follow_ups_are_named():
    graph = two_turn_graph(ScriptedRoot("FINAL(x)"), FakeLM(str.upper), review="code")
    with pytest.raises(ValueError, match="no earlier question to follow up on"):
        graph.invoke({"query": "q"}, thread("never"))
    with pytest.raises(ValueError, match="needs a graph with a checkpointer"):
        create_rlm_graph(ScriptedRoot("FINAL(x)"), sub_model=FakeLM()).invoke({"query": "q"})
    paused = two_turn_graph(ScriptedRoot(cell("x = 1")), FakeLM(), review="code")
    assert paused.invoke({"query": "q", "context": "c"}, thread())["__interrupt__"]
    with pytest.raises(ValueError, match=r"has not finished.*Command\(resume"):
        paused.invoke({"query": "follow-up"}, thread())
    with pytest.raises(ValueError, match="budget_scope must be 'turn'"):
        create_rlm_graph(ScriptedRoot("x"), budget_scope="thread")


# -- DSPy ------------------------------------------------------------------------------


def dspy_step(code: str) -> dict[str, str]:
    return {"reasoning": "next", "code": f"```python\n{code}\n```"}


def recording_lm(*replies: dict[str, str]):
    """A scripted DSPy root LM (replies in order, the last repeats) and the prompts it was sent."""
    queue, prompts = list(replies), []

    def reply(messages):
        prompts.append("\n".join(str(m) for m in messages))
        return fields(**(queue.pop(0) if len(queue) > 1 else queue[0]))

    return function_lm(reply, model="scripted/root"), prompts


DSPY_TURN_1 = (dspy_step("note = llm_query(context)\nsize = len(context)\nprint(size)"), dspy_step("SUBMIT(note)"))
DSPY_TURN_2 = (dspy_step("print(note.lower(), size)"), dspy_step("SUBMIT(str(size))"))


def test_a_dspy_session_answers_follow_ups_over_one_repl():
    sub = text_lm(str.upper)
    root, prompts = recording_lm(*DSPY_TURN_1, *DSPY_TURN_2)
    rlm = RLM("context, query -> answer", sub_lm=sub)
    before = workers()
    with dspy.context(lm=root), rlm.session(context="abc def") as session:
        first = session(query="shout the context")
        kept = workers() - before
        second = session.ask(query="how long is it?")
        turn_2_prompts = prompts[2:]
    assert (first.answer, second.answer) == ("ABC DEF", "7")
    assert [e["output"] for e in second.trajectory] == ["abc def 7", "FINAL: {'answer': '7'}"]
    assert [t.iterations for t in session.turns] == [2, 2] and session.turns[0].variables == ["note", "size"]
    assert second.usage["llm_calls"] == 2 and first.usage["llm_calls"] == 3
    assert [e["kind"] for e in second.events["events"]].count("sub_call") == 0  # turn 1 was not rerun
    assert "Question: query: shout the context" in turn_2_prompts[0] and "Answer: ABC DEF" in turn_2_prompts[0]
    assert "llm_query(context)" not in turn_2_prompts[0]  # turn 1's history is not in turn 2's prompt
    assert len(kept) == 1 and not workers() & kept  # one worker for the session, gone at close


def test_a_dspy_session_budget_covers_every_question():
    for scope, expected in (("session", "max_iterations"), ("turn", "final")):
        root, _ = recording_lm(*DSPY_TURN_1, dspy_step("print(size)"), dspy_step("SUBMIT('done')"))
        rlm = RLM("context, query -> answer", sub_lm=text_lm(str.upper), budget=Budget(max_iterations=3))
        with dspy.context(lm=root), rlm.session(context="abc def", budget_scope=scope) as session:
            session(query="q1")
            second = session(query="q2")
        assert second.stop_reason == expected, scope
        assert session.turns[1].iterations == (1 if scope == "session" else 2)


def test_bad_dspy_session_use_is_named():
    rlm = RLM("context, query -> answer", sub_lm=text_lm(str.upper))
    root, _ = recording_lm(dspy_step("SUBMIT('x')"))
    with dspy.context(lm=root):
        session = rlm.session(context="abc")
        with pytest.raises(ValueError, match=r"\['context'\] were loaded when the session opened"):
            session(context="other", query="q")
        with pytest.raises(ValueError, match="Missing required inputs: \\['query'\\]"):
            session()
        session.close()
        with pytest.raises(RuntimeError, match="session is closed"):
            session(query="q")
    with pytest.raises(ValueError, match="Unexpected inputs"):
        rlm.session(document="abc")
    with pytest.raises(ValueError, match="budget_scope must be"):
        rlm.session(context="abc", budget_scope="forever")


def test_the_readme_follow_up_snippet_runs():
    from tests.test_readme import python_block

    import rlm_dspy

    dspy_root, _ = recording_lm(dspy_step("print(len(context))"), dspy_step("SUBMIT('acme')"))
    names = {"model": ScriptedRoot(cell("late = context.split()\nprint(late)"), "FINAL_VAR(late)"),
             "long_text": "acme late twice", "create_rlm_graph": create_rlm_graph, "rlm_dspy": rlm_dspy}
    with dspy.context(lm=dspy_root):
        exec(compile(python_block("rlm.session(context=long_text)"), "README.md", "exec"), names)  # noqa: S102
    assert names["second"].answer == "acme"
    assert names["graph"].invoke({"query": "again?"}, names["thread"])["turns"][1]["variables"] == []
    names["graph"].close()
