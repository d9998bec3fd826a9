"""The host survives anything a cell does: capped sub-call prompts, bounded records, and runs of both
adapters that end with an answer and a stop reason, never an exception."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dspy
import pytest
from dspy.primitives.code_interpreter import CodeExecutionError, CodeInterpreterError

from rlm_dspy import RLM, RestrictedPythonInterpreter
from rlm_graph import create_rlm_graph
from sandbox import Budget, CellResult, Completion, LiteLLMClient, Sandbox, Trajectory
from sandbox.boundary.outbound import plain_problem
from sandbox.engine.bridge import DEFAULT_MAX_PROMPT_CHARS
from sandbox.engine.session import SandboxOptions, Session
from tests.conftest import FakeLM
from tests.dspy_lms import script_lm, text_lm
from tests.fake_worker import fake_worker

ROOT = Path(__file__).resolve().parents[1]
TRAJECTORY_BOUND = 100_000  # bytes of trajectory JSON no hostile cell may exceed
ROOT_PROMPT_BOUND = 60_000  # characters of one root prompt no hostile cell may exceed


class ScriptedRoot:
    """A root LMClient answering with ``replies`` in order (then the last again); records prompt sizes."""

    def __init__(self, *replies: str):
        self.model = "scripted/root"
        self.replies = list(replies)
        self.prompt_chars: list[int] = []

    async def acomplete(self, messages, *, max_tokens):
        self.prompt_chars.append(sum(len(m["content"]) for m in messages))
        text = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        return Completion(text=text, prompt_tokens=1, completion_tokens=1, model=self.model)


def cell(code: str) -> str:
    return f"Next step.\n```repl\n{code}\n```"


def step(code: str) -> dict[str, str]:
    return {"reasoning": "next", "code": f"```python\n{code}\n```"}


# -- 1. one sub-call prompt is capped ------------------------------------------------------

def test_an_over_long_prompt_is_refused_before_dispatch_and_not_charged(make_host_functions):
    lm, budget, trajectory = FakeLM(), Budget(), Trajectory("q")
    host = make_host_functions(lm, budget=budget, trajectory=trajectory, max_prompt_chars=100)
    with pytest.raises(ValueError, match=r"the prompt is 101 characters; one sub-call allows at most 100 "
                                         r"\(max_prompt_chars=100\); pass a slice"):
        host.llm_query("x" * 101)
    assert lm.calls == [] and budget.llm_calls == 0 and budget.tokens == 0
    (note,) = trajectory.of_kind("note")
    assert note["refused"] == "max_prompt_chars" and note["prompt_chars"] == 101 and note["count"] == 1
    assert host.llm_query("x" * 100) == "answer to: " + "x" * 100


def test_without_a_known_window_the_default_cap_applies(make_host_functions):
    lm = FakeLM()
    host = make_host_functions(lm)
    assert host.prompt_limit.chars == DEFAULT_MAX_PROMPT_CHARS == 400_000
    with pytest.raises(ValueError, match=r"400,001 characters; one sub-call allows at most 400,000 \(the default"):
        host.llm_query("x" * 400_001)
    assert lm.calls == []


def test_the_window_comes_from_litellms_local_model_map(make_host_functions):
    host = make_host_functions(LiteLLMClient("openai/gpt-4o-mini"))
    assert host.prompt_limit.chars == 128_000 * 4
    assert "the sub-model's window (128,000 tokens) allows about 512,000" in host.prompt_limit.source
    assert make_host_functions(LiteLLMClient("openai/gpt-4o-mini"), max_prompt_chars=10).prompt_limit.chars == 10
    assert make_host_functions(LiteLLMClient("openai/no-such-local-model")).prompt_limit.chars == 400_000


def test_litellm_is_not_imported_for_a_client_that_is_not_a_litellm_model():
    code = ("import sys\nfrom sandbox import Budget, Trajectory\nfrom sandbox.lm.aio import AsyncRunner\n"
            "from sandbox.engine.bridge import HostFunctions\n"
            "from tests.conftest import FakeLM\nr = AsyncRunner()\n"
            "h = HostFunctions(lm=FakeLM(), budget=Budget(), trajectory=Trajectory('q'), runner=r)\n"
            "assert h.prompt_limit.chars == 400_000\nr.close()\nassert 'litellm' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_bad_max_prompt_chars_is_named(make_host_functions):
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="max_prompt_chars"):
            make_host_functions(max_prompt_chars=bad)


def test_batched_refuses_only_the_long_prompts(make_host_functions):
    lm, budget = FakeLM(str.upper), Budget()
    host = make_host_functions(lm, budget=budget, max_prompt_chars=10)
    answers = host.llm_query_batched(["ok", "y" * 11, "fine"])
    assert answers[0] == "OK" and answers[2] == "FINE"
    assert answers[1].startswith("ERROR: ValueError: prompts[1] is 11 characters; one sub-call allows at most 10")
    assert sorted(lm.calls) == ["fine", "ok"] and budget.llm_calls == 2
    assert host.llm_query_batched(["z" * 11])[0].startswith("ERROR: ValueError: prompts[0] is 11 characters")
    assert budget.llm_calls == 2


def test_rlm_query_prompt_is_capped_too(make_host_functions):
    lm = FakeLM()
    host = make_host_functions(lm, budget=Budget(max_depth=1), max_prompt_chars=10,
                               run_child=lambda *a: pytest.fail("no child for a refused prompt"))
    with pytest.raises(ValueError, match="the prompt is 11 characters"):
        host.rlm_query("q" * 11, "context")
    degraded = make_host_functions(lm, budget=Budget(max_depth=0), max_prompt_chars=10)
    with pytest.raises(ValueError, match="the prompt with its context is 11 characters"):
        degraded.rlm_query("q", "c" * 8)
    assert lm.calls == []


# -- 2. repeated refusals are recorded once, with a count --------------------------------

def test_a_repeated_refusal_is_one_event_with_a_count(make_host_functions):
    trajectory, seen = Trajectory("q"), []
    trajectory.subscribe(seen.append)
    host = make_host_functions(trajectory=trajectory, max_prompt_chars=5)
    for _ in range(1000):
        with pytest.raises(ValueError):
            host.llm_query("too long")
    assert [e["kind"] for e in trajectory.events] == ["note"] and trajectory.events[0]["count"] == 1000
    assert len(seen) == 1
    trajectory.record("cell", iteration=1)  # the next cell starts a new group
    with pytest.raises(ValueError):
        host.llm_query("too long")
    assert [e.get("count") for e in trajectory.of_kind("note")] == [1000, 1]


def test_sub_calls_after_the_budget_ran_out_are_one_budget_event(make_host_functions):
    budget, trajectory = Budget(max_llm_calls=1), Trajectory("q")
    host = make_host_functions(budget=budget, trajectory=trajectory)
    host.llm_query("first")
    for _ in range(500):
        assert host.llm_query_batched(["again"])[0].startswith("ERROR: BudgetExceeded")
    (event,) = trajectory.of_kind("budget")
    assert event["limit"] == "max_llm_calls" and event["count"] == 500
    assert len(trajectory.to_json()) < 2_000


def test_ten_thousand_refusals_in_one_cell_stay_small(make_host_functions):
    budget, trajectory = Budget(), Trajectory("q")
    host = make_host_functions(budget=budget, trajectory=trajectory, max_prompt_chars=50)
    with Sandbox(tools=host.tools(), budget=budget) as sb:
        result = sb.execute("n = 0\nfor i in range(10_000):\n    try:\n        llm_query('x' * 51)\n"
                            "    except ValueError:\n        n += 1\nprint(n)")
    assert result.output == "10000\n" and budget.llm_calls == 0
    assert trajectory.events[0]["count"] == 10_000 and len(trajectory.to_json()) < 2_000


# -- 3. what a cell sends back is cut before it is recorded or shown ----------------------

def test_a_cell_is_recorded_as_previews_with_full_lengths(monkeypatch):
    trajectory = Trajectory("q")
    session = Session(variables={"context": "c"}, sub_lm=FakeLM(), budget=Budget(), trajectory=trajectory,
                      runner=_Runner())
    try:
        huge = CellResult(output="o" * 5_000_000, error="e" * 5_000_000)
        monkeypatch.setattr(session.repl, "execute", lambda code: huge)
        session.run_cell("x" * 5_000_000, iteration=1)
    finally:
        session.close()
    (event,) = trajectory.of_kind("cell")
    assert (event["code_chars"], event["output_chars"], event["error_chars"]) == (5_000_000,) * 3
    assert len(json.dumps(event)) < 10_000


class _Runner:
    """An AsyncRunner stand-in for a Session whose cells make no host calls."""

    def run(self, coro, timeout=None):
        raise AssertionError("no host calls expected")

    def close(self):
        pass


# -- 4. FINAL values: depth and size are checked by the host ------------------------------

def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_final_depth_and_size_limits():
    assert plain_problem(_nested(100), max_chars=10_000) is None
    assert "nested deeper than 100 levels" in plain_problem(_nested(102), max_chars=10_000)
    assert "nested deeper than 100 levels" in plain_problem(_nested(985), max_chars=10_000)
    assert plain_problem({"a": ["b", 1, None, 2.5]}, max_chars=100) is None
    assert "larger than 100 characters" in plain_problem("a" * 200, max_chars=100)
    assert "larger than 100 characters" in plain_problem(list(range(10**6)), max_chars=100)
    assert "larger than 100 characters" in plain_problem({"k" * 200: 1}, max_chars=100)


# -- 4. both adapters: hostile cells end with an answer and a stop reason ------------------

HOSTILE = {
    "deep_final": "x = []\nfor i in range(985):\n    x = [x]\nFINAL(x)",
    "final_45MB": "FINAL('a' * 45_000_000)",
    "print_10MB": "print('a' * 10_000_000)",
    "error_10MB": "raise ValueError('e' * 10_000_000)",
    "non_str_prompt": "llm_query(123)",
    "prompt_100MB": "llm_query(context * 10**4)",
    "10k_refusals": ("for i in range(10_000):\n    try:\n        llm_query('x' * 101)\n"
                     "    except ValueError:\n        pass"),
    "10k_after_budget": "for i in range(10_000):\n    llm_query_batched(['hi'])",
}
OPTIONS = SandboxOptions(max_prompt_chars=100)


def _hostile_budget(name: str) -> Budget:
    # for "10k_after_budget" the run's own root calls use the budget up within the first cell
    return Budget(max_llm_calls=2) if name == "10k_after_budget" else Budget()


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_graph_survives_a_hostile_cell(name):
    root, sub = ScriptedRoot(cell(HOSTILE[name]), "FINAL(done)"), FakeLM()
    options = SandboxOptions() if name == "prompt_100MB" else OPTIONS
    graph = create_rlm_graph(root, sub_model=sub, budget=_hostile_budget(name), sandbox_options=options,
                             look_before_answer=False, grounding=False)  # robustness, not grounding, is tested here
    out = graph.invoke({"query": "q", "context": "c" * 10_000})
    if name == "10k_after_budget":
        assert out["stop_reason"] == "max_llm_calls"
    else:
        assert (out["answer"], out["stop_reason"]) == ("done", "final")
    assert len(json.dumps(out["events"])) < TRAJECTORY_BOUND
    assert max(root.prompt_chars) < ROOT_PROMPT_BOUND and all(len(p) <= 400_000 for p in sub.calls)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_dspy_survives_a_hostile_cell(name):
    root, sub = script_lm(step(HOSTILE[name]), step("SUBMIT(answer='done')")), text_lm(str.upper)
    options = SandboxOptions() if name == "prompt_100MB" else OPTIONS
    rlm = RLM("context -> answer", sub_lm=sub, budget=_hostile_budget(name), sandbox_options=options,
              look_before_answer=False, grounding=False)
    with dspy.context(lm=root):
        out = rlm(context="c" * 10_000)
    if name == "10k_after_budget":
        assert out.stop_reason == "max_llm_calls"
    else:
        assert (out.answer, out.stop_reason) == ("done", "final")
    assert len(json.dumps(out.events)) < TRAJECTORY_BOUND
    assert max(map(len, root.scripted.prompts)) < ROOT_PROMPT_BOUND
    assert all(len(p) <= 400_000 for p in sub.scripted.prompts)


@pytest.mark.parametrize("name", ["deep_final", "final_45MB"])
def test_a_root_that_insists_on_a_refused_final_stops_at_the_iteration_cap(name):
    graph = create_rlm_graph(ScriptedRoot(cell(HOSTILE[name])), sub_model=FakeLM(), max_iterations=2)
    out = graph.invoke({"query": "q", "context": "c"})
    assert out["stop_reason"] == "max_iterations" and out["answer"] is None
    with dspy.context(lm=script_lm(step(HOSTILE[name]))):
        pred = RLM("context -> answer", max_iters=2, sub_lm=text_lm(str.upper))(context="c")
    assert pred.stop_reason == "max_iterations" and pred.answer is None
    assert "FINAL" in pred.trajectory[0]["output"]  # refused by the worker or, failing that, the host


LYING_WORKER = fake_worker("""
while True:
    header = read()
    if header['type'] == 'exec':
        deep = []
        for _ in range(150):
            deep = [deep]
        done = {'answer': 'done'} if 'SUBMIT' in header['code'] else 'done'
        final = {'DEEP': deep, 'HUGE': 'a' * 2_000_000}.get(header['code'].strip("FINAL()'"), done)
        send({'type': 'result', 'output': '', 'error': None, 'limit': None, 'has_final': True, 'final': final})
    elif header['type'] == 'names':
        send({'type': 'value', 'encoding': 'json', 'value': []})
    else:
        send({'type': 'ok'})
""")


@pytest.fixture
def lying_worker(monkeypatch):
    """A worker that answers FINAL('DEEP') with a 150-deep list and FINAL('HUGE') with 2 MB, checking
    nothing, as one the policy lost could; any other cell answers 'done'."""
    from sandbox.boundary import repl
    monkeypatch.setattr(repl, "WORKER_PROGRAM", LYING_WORKER)


@pytest.mark.parametrize("marker", ["DEEP", "HUGE"])
def test_the_host_refuses_a_final_the_worker_let_through(lying_worker, marker):
    root = ScriptedRoot(cell(f"FINAL('{marker}')"), "FINAL(done)")
    out = create_rlm_graph(root, sub_model=FakeLM()).invoke({"query": "q", "context": "c"})
    assert (out["answer"], out["stop_reason"]) == ("done", "final")
    assert len(json.dumps(out["events"])) < TRAJECTORY_BOUND
    with dspy.context(lm=script_lm(step(f"FINAL('{marker}')"), step("SUBMIT(answer='done')"))):
        pred = RLM("context -> answer", sub_lm=text_lm(str.upper))(context="c")
    assert (pred.answer, pred.stop_reason) == ("done", "final")
    assert "crash limit: the worker sent a malformed result" in pred.trajectory[0]["output"]


FLOODING_WORKER = fake_worker("""
while True:
    header = read()
    if header['type'] == 'exec':
        text = 'x' * 5_000_000
        send({'type': 'result', 'output': text if 'OUTPUT' in header['code'] else '',
              'error': text if 'ERROR' in header['code'] else None, 'limit': None})
    else:
        send({'type': 'ok'})
""")


@pytest.mark.parametrize("field", ["output", "error"])
def test_the_host_refuses_output_or_an_error_past_the_workers_caps(monkeypatch, field):
    """Stops a worker the policy lost from passing 5 MB of output or error text past the caps it should apply."""
    from sandbox.boundary import repl
    monkeypatch.setattr(repl, "WORKER_PROGRAM", FLOODING_WORKER)
    with Sandbox(confinement="none", max_output_chars=10_000) as box:
        result = box.execute(field.upper())
    assert result.limit == "crash" and result.restarted, (result.limit, len(result.output), len(result.error or ""))
    assert len(result.output) < 30_000 and len(result.error) < 1_000


def test_a_cell_that_exhausts_the_call_budget_ends_both_runs():
    code = "for i in range(100):\n    llm_query('hi')"
    out = create_rlm_graph(ScriptedRoot(cell(code)), sub_model=FakeLM(),
                           budget=Budget(max_llm_calls=5)).invoke({"query": "q", "context": "c"})
    assert out["stop_reason"] == "max_llm_calls" and out["usage"]["llm_calls"] == 5
    with dspy.context(lm=script_lm(step(code))):
        pred = RLM("context -> answer", sub_lm=text_lm(str.upper), budget=Budget(max_llm_calls=5))(context="c")
    assert pred.stop_reason == "max_llm_calls" and pred.usage["llm_calls"] <= 5


def test_the_interpreter_refuses_a_final_the_worker_let_through(lying_worker):
    with RestrictedPythonInterpreter() as interpreter:
        with pytest.raises(CodeInterpreterError, match="crash limit: the worker sent a malformed result") as raised:
            interpreter.execute("FINAL('DEEP')")
        assert not isinstance(raised.value, CodeExecutionError)  # the killed worker's session is over (DSPy)
        with pytest.raises(CodeInterpreterError, match="session is over"):
            interpreter.execute("FINAL('x')")


def test_refused_calls_do_not_grow_the_checkpointed_call_log():
    from langgraph.checkpoint.memory import InMemorySaver

    code = "llm_query('ok')\n" + HOSTILE["10k_refusals"] + "\nprint(llm_query_batched(['y' * 101, 'z' * 101])[0][:6])"
    graph = create_rlm_graph(ScriptedRoot(cell(code), "FINAL(done)"), sub_model=FakeLM(), checkpointer=InMemorySaver(),
                             sandbox_options=OPTIONS)
    config = {"configurable": {"thread_id": "refusals"}}
    assert graph.invoke({"query": "q", "context": "c"}, config)["answer"] == "done"
    assert len(graph.get_state(config).values["call_log"]) == 1  # the one real sub-call
