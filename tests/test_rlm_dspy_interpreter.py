"""RestrictedPythonInterpreter against DSPy's CodeInterpreter contract, and under dspy.RLM itself."""

from __future__ import annotations

import time

import dspy
import pytest
from dspy.primitives.code_interpreter import CodeExecutionError, CodeInterpreter, CodeInterpreterError, FinalOutput
from dspy.utils.callback import BaseCallback

from rlm_dspy import RestrictedPythonInterpreter
from sandbox.boundary.repl import Sandbox
from tests.dspy_lms import script_lm, text_lm


@pytest.fixture
def interp():
    with RestrictedPythonInterpreter() as interpreter:
        yield interpreter


def test_implements_the_protocol():
    assert isinstance(RestrictedPythonInterpreter(), CodeInterpreter)
    assert "RestrictedPython" in RestrictedPythonInterpreter.execution_instructions


def test_start_is_idempotent_and_lazy():
    interpreter = RestrictedPythonInterpreter()
    assert interpreter.execute("print('lazy')") == "lazy\n"
    interpreter.start()
    interpreter.start()
    assert interpreter.execute("1 + 1") == "2\n"  # the trailing expression is shown
    interpreter.shutdown()


def test_state_persists_and_instances_are_isolated():
    with RestrictedPythonInterpreter() as a, RestrictedPythonInterpreter() as b:
        a.execute("secret = 41")
        assert a.execute("print(secret + 1)") == "42\n"
        with pytest.raises(CodeExecutionError, match="NameError"):
            b.execute("print(secret)")


def test_no_output_is_none(interp):
    assert interp.execute("x = 1") is None


def test_error_types(interp):
    with pytest.raises(SyntaxError):
        interp.execute("def broken(:")
    with pytest.raises(CodeExecutionError, match="ZeroDivisionError"):
        interp.execute("print('before')\n1/0")
    with pytest.raises(CodeExecutionError, match="ImportError"):
        interp.execute("import os")
    with pytest.raises(TypeError, match="code must be a str"):
        interp.execute(None)
    assert interp.execute("print('still alive')") == "still alive\n"


def test_limits_are_recoverable_errors():
    with RestrictedPythonInterpreter(timeout=0.5) as interp:
        interp.execute("kept = 1")
        with pytest.raises(CodeExecutionError, match="timeout limit"):
            interp.execute("while True:\n    pass")
        assert interp.execute("print(kept)") == "1\n"


def test_start_failure_is_an_interpreter_error(monkeypatch):
    import sandbox.boundary.repl as repl

    monkeypatch.setattr(repl.sys, "executable", "/nonexistent/python")
    with pytest.raises(CodeInterpreterError, match="could not start"):
        RestrictedPythonInterpreter().start()


def test_tools_positional_and_keyword_through_keyword_only_wrappers():
    def search(query: str, limit: int = 2) -> list:
        return [f"{query}-{i}" for i in range(limit)]

    tool = dspy.Tool(search)

    def invoke(**kwargs):  # how dspy.RLM hands tools to interpreters
        return tool(**kwargs)

    invoke.__signature__ = __import__("inspect").signature(search)
    with RestrictedPythonInterpreter(tools={"search": invoke}) as interp:
        assert interp.execute("print(search('cat'), search(query='dog', limit=1))") == \
            "['cat-0', 'cat-1'] ['dog-0']\n"
        with pytest.raises(CodeExecutionError, match="TypeError"):
            interp.execute("search('a', 1, 2)")


def test_async_tools_are_awaited():
    async def fetch(key):
        return key.upper()

    with RestrictedPythonInterpreter(tools={"fetch": fetch}) as interp:
        assert interp.execute("print(fetch('k'))") == "K\n"


def test_tools_added_after_start_are_available(interp):
    interp.execute("x = 1")
    interp.tools["late"] = lambda: "late tool"
    assert interp.execute("print(late(), x)") == "late tool 1\n"


def test_typed_submit_stops_execution():
    with RestrictedPythonInterpreter(output_fields=[{"name": "answer", "type": "str"}, {"name": "n"}]) as interp:
        result = interp.execute("SUBMIT('yes', 3)\nprint('never')")
        assert result == FinalOutput({"answer": "yes", "n": 3})
        assert interp.execute("SUBMIT(n=1, answer='kw')") == FinalOutput({"answer": "kw", "n": 1})
        with pytest.raises(CodeExecutionError, match=r"SUBMIT\(answer, n\): missing n"):
            interp.execute("SUBMIT('only')")


def test_variables_are_injected_once_not_every_iteration(monkeypatch):
    sends = []
    original = Sandbox.set_variable
    monkeypatch.setattr(Sandbox, "set_variable", lambda self, n, v: (sends.append(n), original(self, n, v)))
    context = "x" * 1_000_000
    with RestrictedPythonInterpreter() as interp:
        for _ in range(5):
            assert interp.execute("print(len(context))", variables={"context": context, "q": {"k": 1}}) == "1000000\n"
        interp.execute("print(q)", variables={"context": context, "q": {"k": 2}})
    assert sends == ["context", "q", "q"]


def test_the_dspy_facade_is_refused_fast(interp):
    started = time.monotonic()
    with pytest.raises(SyntaxError, match="facade"):
        interp.execute("import dspy  # ~170 lines in real life", variables={"__dspy_host_token__": "t"})
    assert time.monotonic() - started < 0.1


def test_a_shut_down_session_is_over():
    interp = RestrictedPythonInterpreter()
    interp.execute("x = 1")
    interp.shutdown()
    for again in (lambda: interp.execute("x"), interp.start):  # DSPy: never silently a fresh session
        with pytest.raises(CodeInterpreterError, match="session is over.*shut down.*create a new interpreter"):
            again()
    interp.shutdown()  # idempotent


def test_a_killed_worker_is_fatal_to_the_session():
    with RestrictedPythonInterpreter(timeout=0.3) as interp:
        interp.execute("kept = 1")
        with pytest.raises(CodeInterpreterError, match="killed") as raised:
            interp.execute("sum(range(10**13))")  # a C loop: only killing the worker stops it
        assert not isinstance(raised.value, CodeExecutionError)  # not recoverable: kept is gone
        with pytest.raises(CodeInterpreterError, match="session is over"):
            interp.execute("print(kept)")


class Recorder(BaseCallback):
    def __init__(self):
        self.events = []

    def on_interpreter_startup_start(self, call_id, instance, inputs):
        self.events.append("startup")

    def on_interpreter_execute_start(self, call_id, instance, inputs):
        self.events.append(("execute", inputs["code"]))

    def on_interpreter_execute_end(self, call_id, outputs, exception=None):
        self.events.append(("executed", outputs, type(exception).__name__ if exception else None))

    def on_interpreter_tool_call_start(self, call_id, instance, inputs):
        self.events.append(("tool", inputs["tool_name"], inputs["args"], inputs["kwargs"]))

    def on_interpreter_tool_call_end(self, call_id, outputs, exception=None):
        self.events.append(("tool result", outputs))

    def on_interpreter_shutdown_start(self, call_id, instance, inputs):
        self.events.append("shutdown")


@pytest.mark.parametrize("where", ["settings", "instance"])
def test_dspy_callbacks_see_every_start_cell_tool_call_and_shutdown(where):
    recorder = Recorder()
    interp = RestrictedPythonInterpreter(tools={"double": lambda n: 2 * n},
                                         callbacks=[recorder] if where == "instance" else None)
    with dspy.context(callbacks=[recorder] if where == "settings" else []):
        interp.start()
        interp.execute("print(double(21))")
        with pytest.raises(CodeExecutionError):
            interp.execute("1 / 0")
        interp.shutdown()
    assert recorder.events[:2] == ["startup", ("execute", "print(double(21))")]
    assert recorder.events[2:5] == [("tool", "double", [21], {}), ("tool result", 42), ("executed", "42\n", None)]
    assert recorder.events[5:] == [("execute", "1 / 0"), ("executed", None, "CodeExecutionError"), "shutdown"]


def test_dspy_rlm_runs_unmodified_offline_with_this_interpreter():
    def lookup(key: str) -> str:
        """Look a key up."""
        return {"color": "blue"}.get(key, "?")

    root = script_lm({"reasoning": "look", "code": "```python\nprint(len(context), lookup('color'))\n```"},
                     {"reasoning": "done", "code": "```python\nSUBMIT(answer=lookup(key='color'), n=len(context))\n```"})
    rlm = dspy.RLM("context, query -> answer: str, n: int", max_iters=4, tools=[lookup], sub_lm=text_lm(str.upper),
                   interpreter_factory=RestrictedPythonInterpreter)
    with dspy.context(lm=root):
        out = rlm(context="hello world", query="what color?")
    assert (out.answer, out.n) == ("blue", 11)
    assert out.trajectory[0]["output"] == "11 blue\n"
