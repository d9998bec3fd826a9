"""Multi-turn sessions (sandbox.turns): follow-up questions over one loaded context and REPL, both adapters."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.store.sqlite import SqliteStore

from rlm_graph import create_rlm_graph
from sandbox import Budget, Completion
from tests.conftest import FakeLM


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
    cells = [e for e in second["trajectory"]["events"] if e["kind"] == "cell"]
    assert [c["output"] for c in cells] == ["abc def 7\n", ""] and second["trajectory"]["query"] == "how long is it?"
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
    assert "NameError" in again["trajectory"]["events"][2]["error"]
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
