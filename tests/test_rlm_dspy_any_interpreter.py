"""rlm_dspy.RLM on any DSPy CodeInterpreter: dspy.RLM's interpreter_factory, caller-owned interpreters,
and which budget guarantees hold there. DSPy's own LocalInterpreter (a CPython worker) is the real
foreign interpreter; a small scripted one stands in where a test needs exact control."""

from __future__ import annotations

import json
import time

import dspy
import pytest
from dspy.primitives.code_interpreter import CodeExecutionError, CodeInterpreterError, FinalOutput
from dspy.primitives.local_interpreter import LocalInterpreter
from dspy.primitives.sandbox_serializable import SandboxSerializable

from rlm_dspy import RLM
from sandbox import Budget, Evaluation
from tests.dspy_lms import script_lm, text_lm


def step(code: str) -> dict[str, str]:
    return {"reasoning": "next", "code": f"```python\n{code}\n```"}


class Recording:
    """A factory of LocalInterpreters that remembers what it made."""

    def __init__(self):
        self.made: list[LocalInterpreter] = []

    def __call__(self) -> LocalInterpreter:
        self.made.append(LocalInterpreter())
        return self.made[-1]


class Scripted:
    """A CodeInterpreter answering each execute with the next item (raising it if it is an exception)."""

    def __init__(self, *answers):
        self.answers, self.calls, self.tools, self.closed = list(answers), [], {}, False

    def start(self) -> None:
        pass

    def execute(self, code, variables=None):
        if self.closed:
            raise CodeInterpreterError("Scripted interpreter was shut down")
        self.calls.append((code, dict(variables or {})))
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer(self) if callable(answer) else answer

    def shutdown(self) -> None:
        self.closed = True


def run(rlm, root, *args, **inputs):
    with dspy.context(lm=root):
        return rlm(*args, **inputs)


def test_the_loop_runs_on_a_factory_made_local_interpreter_and_shuts_it_down():
    factory = Recording()
    root = script_lm(step("x = llm_query('say ' + context[:5])\nprint(len(context))"), step("SUBMIT(answer=x)"))
    rlm = RLM("context, query -> answer", sub_lm=text_lm(str.upper), interpreter_factory=factory)
    out = run(rlm, root, context="hello world", query="q")
    assert out.answer == "SAY HELLO" and out.stop_reason == "final"
    assert out.trajectory[0]["output"] == "11"
    assert out.usage["llm_calls"] == 3  # two root calls and the sub-call made from inside the foreign REPL
    assert len(factory.made) == 1 and factory.made[0]._ended  # DSPy's own flag: shut down


def test_the_repl_guide_describes_the_foreign_runtime_not_the_restricted_one():
    class Described(Recording):
        execution_instructions = "Plain CPython in a worker process."

    root = script_lm(step("SUBMIT(answer='ok')"))
    rlm = RLM("context -> answer", sub_lm=text_lm(str.upper), interpreter_factory=Described())
    assert run(rlm, root, context="c").answer == "ok"
    prompt = root.scripted.prompts[0]
    assert "Plain CPython in a worker process." in prompt and "Allowed imports" not in prompt


def test_a_per_call_factory_and_dspy_settings_choose_the_interpreter():
    module_factory, call_factory, configured = Recording(), Recording(), Recording()
    root = script_lm(step("SUBMIT(answer='ok')"))
    rlm = RLM("context -> answer", sub_lm=text_lm(str.upper), interpreter_factory=module_factory)
    assert run(rlm, root, context="c", interpreter_factory=call_factory).answer == "ok"
    assert (len(module_factory.made), len(call_factory.made)) == (0, 1)

    default = RLM("context -> answer", sub_lm=text_lm(str.upper))
    with dspy.context(interpreter_factory=configured):
        assert run(default, root, context="c").answer == "ok"
    assert len(configured.made) == 1


def test_a_caller_owned_interpreter_is_reused_and_left_running():
    interpreter = LocalInterpreter()
    try:
        rlm = RLM("context -> answer", sub_lm=text_lm(str.upper))
        first = run(rlm, script_lm(step("kept = context\nSUBMIT(answer=kept)")), interpreter, context="one")
        second = run(rlm, script_lm(step("SUBMIT(answer=kept + '+' + context)")), interpreter, context="two")
        assert (first.answer, second.answer) == ("one", "one+two")  # the session's state carried over
        assert not interpreter._ended
    finally:
        interpreter.shutdown()


@pytest.mark.parametrize("call,match", [
    (lambda rlm: rlm(Scripted(), context="c", interpreter_factory=Recording()), "not both"),
    (lambda rlm: rlm(context="c", interpreter=Scripted()), "first positional argument"),
    (lambda rlm: rlm(object(), context="c"), "must implement CodeInterpreter"),
    (lambda rlm: rlm(context="c", interpreter_factory=lambda: None), "must return a CodeInterpreter, not NoneType"),
])
def test_bad_interpreters_are_refused_before_anything_runs(call, match):
    with pytest.raises(TypeError, match=match):
        call(RLM("context -> answer"))


def test_an_interpreter_instance_is_not_a_factory():
    with pytest.raises(TypeError, match="first positional argument when calling the module"):
        RLM("context -> answer", interpreter_factory=Scripted())
    with pytest.raises(TypeError, match="zero-argument callable"):
        RLM("context -> answer", interpreter_factory="local")


def test_code_errors_go_back_to_the_model_in_dspy_rlm_words():
    interpreter = Scripted(CodeExecutionError("NameError: name 'x' is not defined"), SyntaxError("invalid syntax"),
                           None, FinalOutput({"answer": "recovered"}))
    root = script_lm(step("print(x)"), step("def broken("), step("y = 1"), step("SUBMIT('recovered')"))
    out = run(RLM("context -> answer", sub_lm=text_lm(str.upper)), root, interpreter, context="c")
    assert out.answer == "recovered"
    assert [e["output"] for e in out.trajectory[:3]] == [
        "[Error] NameError: name 'x' is not defined", "[Error] invalid syntax",
        "(no output - did you forget to print?)"]
    assert out.trajectory[0]["code"] == "print(x)"  # the fence stripped, as dspy.RLM records it
    assert interpreter.calls[0][1] == {"context": "c"}  # the inputs go with every execute


def test_an_interpreter_failure_ends_the_run_and_shuts_the_interpreter_down():
    made = []

    def factory():
        made.append(Scripted(CodeInterpreterError("protocol corrupt")))
        return made[-1]

    root = script_lm(step("print(1)"))
    with pytest.raises(CodeInterpreterError, match="protocol corrupt"):
        run(RLM("context -> answer", sub_lm=text_lm(str.upper), interpreter_factory=factory), root, context="c")
    assert made[0].closed


def test_the_sub_call_cap_holds_on_a_foreign_interpreter_even_if_the_code_catches_it():
    root = script_lm(step("n = 0\nfor i in range(10):\n    try:\n        llm_query('q')\n        n += 1\n"
                          "    except Exception:\n        pass\nprint(n)"), step("SUBMIT(answer='never')"))
    rlm = RLM("context -> answer", max_llm_calls=3, sub_lm=text_lm(str.upper), interpreter_factory=Recording())
    out = run(rlm, root, context="c")
    assert out.stop_reason == "max_sub_calls" and out.usage["llm_calls"] <= 3 + 1 + 1  # 3 sub, 1 root, extract
    assert out.trajectory[0]["output"].startswith("3\n[Error] budget limit")


def test_the_wall_clock_bounds_the_wait_for_a_foreign_cell():
    factory = Recording()
    root = script_lm(step("import time\ntime.sleep(30)"))
    run(RLM("context -> answer", interpreter_factory=factory, max_iters=1), script_lm(step("pass")), context="c")
    rlm = RLM("context -> answer", sub_lm=text_lm(str.upper), interpreter_factory=factory,
              budget=Budget(max_seconds=3))  # the warm-up above keeps first-call imports out of these 3 s
    started = time.monotonic()
    out = run(rlm, root, context="c")
    assert time.monotonic() - started < 10
    cells = [e for e in out.events["events"] if e["kind"] == "cell"]
    assert [c["limit"] for c in cells] == ["budget"] and "ran out while the cell ran" in cells[0]["error"]
    assert out.stop_reason == "max_seconds" and factory.made[-1]._ended  # the hung cell's process is gone


def test_evaluator_checkpoints_refine_on_a_foreign_interpreter():
    def evaluator(query, answer):
        return Evaluation(1.0, True) if answer == "complete" else Evaluation(0.2, False, "add the year")

    root = script_lm(step("SUBMIT(answer='partial')"), step("SUBMIT(answer='complete')"))
    rlm = RLM("context -> answer", sub_lm=text_lm(str.upper), interpreter_factory=Recording(), evaluator=evaluator)
    out = run(rlm, root, context="c")
    assert (out.answer, out.stop_reason) == ("complete", "accepted")
    assert any("add the year" in e["output"] for e in out.trajectory)


def test_rlm_query_children_run_on_the_same_factory():
    factory = Recording()
    root = script_lm(step("SUBMIT(answer=rlm_query('inner question', context='inner'))"),
                     step("SUBMIT(answer='child:' + context)"))
    rlm = RLM("context -> answer", sub_lm=text_lm(str.upper), interpreter_factory=factory, max_depth=1)
    out = run(rlm, root, context="outer")
    assert out.answer == "child:inner"
    assert len(factory.made) == 2 and all(i._ended for i in factory.made)


class Note(SandboxSerializable):
    """A SandboxSerializable input, as DSPy 3.4 defines them."""

    def __init__(self, text: str | bytes):
        self.text = text

    def sandbox_setup(self) -> str:
        return "import json"

    def to_sandbox(self) -> bytes:
        return self.text if isinstance(self.text, bytes) else json.dumps({"note": self.text}).encode()

    def sandbox_assignment(self, var_name: str, data_expr: str) -> str:
        return f"{var_name} = json.loads({data_expr})['note']"

    def rlm_preview(self, max_chars: int = 500) -> str:
        return f"Note({len(self.text)} chars)"


@pytest.mark.parametrize("on_local_interpreter", [True, False])
def test_sandbox_serializable_inputs_are_rebuilt_in_the_repl(on_local_interpreter):
    root = script_lm(step("SUBMIT(answer=note.upper())"))
    rlm = RLM("note, query -> answer", sub_lm=text_lm(str.upper),
              **({"interpreter_factory": Recording()} if on_local_interpreter else {}))
    out = run(rlm, root, note=Note("buy milk"), query="q")
    assert out.answer == "BUY MILK"
    assert "Note(8 chars)" in root.scripted.prompts[0]  # the value's own preview, not its repr


def test_a_binary_serializable_input_is_refused_by_the_restricted_sandbox_with_what_to_do():
    root = script_lm(step("SUBMIT(answer='x')"))
    with pytest.raises(TypeError, match="binary data.*interpreter_factory"):
        run(RLM("note -> answer", sub_lm=text_lm(str.upper)), root, note=Note(b"\xff\xfe"))


def test_a_replaced_root_predictor_is_metered_after_the_fact():
    class Canned:
        def __call__(self, **inputs):
            return dspy.Prediction(reasoning="r", code="SUBMIT(answer='canned')")

    rlm = RLM("context -> answer", sub_lm=text_lm(str.upper))
    rlm.generate_action = Canned()
    out = rlm(context="c")  # no LM configured at all: the canned predictor needs none
    assert out.answer == "canned" and out.usage["llm_calls"] == 1
