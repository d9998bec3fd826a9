"""Past one machine: RLM runs on PostgreSQL (LangGraph's PostgresSaver and PostgresStore), a
budget ledger shared by processes, the sub-call cache, and litellm's Router.

Each test gets a fresh database on a private cluster (see ``postgres_url`` in conftest.py);
worker processes are ``python -m tests.pg_workers``, their LM the scripted server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.scripted_openai import ScriptedOpenAI, fallback_router, is_root, root_turn

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("langgraph.checkpoint.postgres", reason="needs the postgres extra: pip install -e '.[postgres]'")


def cell(code: str) -> str:
    return f"```repl\n{code}\n```"


def start_worker(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.pg_workers", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def result_of(worker: subprocess.Popen, timeout: float = 180) -> dict:
    out, err = worker.communicate(timeout=timeout)
    assert worker.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def setup_postgres(url: str) -> None:
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.store.postgres import PostgresStore

    with PostgresSaver.from_conn_string(url) as saver, PostgresStore.from_conn_string(url) as store:
        saver.setup()
        store.setup()


def state_of(url: str, thread: str):
    from langgraph.checkpoint.postgres import PostgresSaver

    from rlm_graph import create_rlm_graph
    from tests.conftest import FakeLM

    with PostgresSaver.from_conn_string(url) as saver:
        return create_rlm_graph(FakeLM(), checkpointer=saver).get_state({"configurable": {"thread_id": thread}})


def wait_for(predicate, worker: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if worker.poll() is not None:
            pytest.fail(f"the worker ended before {what}: {worker.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


SCRIPT = [cell("a = llm_query('first ' + context[:5])"),
          cell("import time\nt = time.monotonic()\nwhile time.monotonic() - t < 4:\n    pass\nb = llm_query('second')"),
          cell("FINAL(a + ' / ' + b)")]
EXPECTED = "sub: first Notes / sub: second"


def assert_resumed_without_repeats(server: ScriptedOpenAI, answer: str, *, repeated_turn: int | None) -> None:
    roots = [root_turn(r["body"]) for r in server.requests if is_root(r["body"])]
    subs = [r["body"]["messages"][-1]["content"] for r in server.requests if not is_root(r["body"])]
    assert answer == EXPECTED  # `a` and `b` came back through replay into the new process's REPL
    assert sorted(subs) == ["first Notes", "second"]  # each sub-call dispatched once, never replayed live
    expected_roots = [0, 1, 2] if repeated_turn is None else sorted([0, 1, 2, repeated_turn])
    assert sorted(roots) == expected_roots


def test_a_worker_killed_during_a_cell_is_resumed_elsewhere_with_no_lm_call_repeated(postgres_url):
    setup_postgres(postgres_url)
    with ScriptedOpenAI(SCRIPT) as server:
        first = start_worker("graph", postgres_url, server.api_base, "t1")
        try:
            wait_for(lambda: (s := state_of(postgres_url, "t1")).next == ("execute",) and s.values["iteration"] == 2,
                     first, "the checkpoint before the second cell")
            time.sleep(1.0)  # inside the 4-second cell
            assert first.poll() is None
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        assert state_of(postgres_url, "t1").next == ("execute",)
        out = result_of(start_worker("graph", postgres_url, server.api_base, "t1", "--resume"))
    assert out["stop_reason"] == "final"
    assert_resumed_without_repeats(server, out["answer"], repeated_turn=None)


def test_a_worker_killed_during_an_lm_call_is_resumed_elsewhere_repeating_only_that_call(postgres_url):
    setup_postgres(postgres_url)
    stalled = []

    def stall_once(body):  # the third root call, the first time it comes
        if is_root(body) and root_turn(body) == 2 and not stalled:
            stalled.append(body)
            return True
        return False

    with ScriptedOpenAI(SCRIPT, stall_when=stall_once) as server:
        # Checkpoint writes that take a second: only durability="sync" (the graph's default with a
        # checkpointer) has the last super-step saved before the next one calls the model.
        first = start_worker("graph", postgres_url, server.api_base, "t2", "--slow-saver")
        try:
            wait_for(lambda: stalled, first, "the third root call")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        server.release()
        assert state_of(postgres_url, "t2").next == ("root_lm",)
        out = result_of(start_worker("graph", postgres_url, server.api_base, "t2", "--resume"))
    assert out["stop_reason"] == "final"
    assert_resumed_without_repeats(server, out["answer"], repeated_turn=2)  # the call in flight, not a finished one


def test_four_processes_on_one_ledger_dispatch_exactly_the_cap(postgres_url):
    with ScriptedOpenAI(["unused"], latency=0.3) as server:
        start_at = time.time() + 3.0
        workers = [start_worker("ledger", postgres_url, server.api_base, "shared", str(start_at)) for _ in range(4)]
        results = [result_of(w) for w in workers]
    assert len(server.requests) == 10  # 32 attempts, 10 dispatched
    assert sum(r["answered"] for r in results) == 10 and sum(r["llm_calls"] for r in results) == 10
    from sandbox import PostgresLedger

    totals = PostgresLedger(postgres_url, "shared").totals()
    assert totals["llm_calls"] == 10 and totals["reserved_tokens"] == 0 and totals["tokens"] == 10 * 16


def test_ledger_token_cap_counts_holds_of_every_process_and_refunds_undispatched_calls(postgres_url):
    from sandbox import Budget, BudgetExceeded, PostgresLedger

    one, two = (Budget(max_tokens=1000, max_llm_calls=3, ledger=PostgresLedger(postgres_url, "k")) for _ in "12")
    held = one.reserve_call(tokens=600)
    with pytest.raises(BudgetExceeded, match="max_tokens.*shared ledger"):
        two.reserve_call(tokens=600)  # the other Budget's hold counts
    one.commit(held, prompt_tokens=100, completion_tokens=50, cost_usd=0.0)
    two.cancel(two.reserve_call(tokens=600), dispatched=False)
    assert PostgresLedger(postgres_url, "k").totals()["llm_calls"] == 1
    two.reserve_call(tokens=10)
    fresh = two.fresh()  # a new run on the same pool
    fresh.reserve_call(tokens=10)
    with pytest.raises(BudgetExceeded, match="max_llm_calls"):
        fresh.reserve_call(tokens=10)
    assert fresh.spent()["llm_calls"] == 1  # what this run drew; the pool has 3
    assert PostgresLedger(postgres_url, "other").totals()["llm_calls"] == 0


def test_the_dspy_adapter_draws_on_the_shared_ledger(postgres_url):
    import dspy
    from dspy.utils.dummies import DummyLM

    import rlm_dspy
    from sandbox import Budget, PostgresLedger

    ledger = PostgresLedger(postgres_url, "dspy")
    root = DummyLM([{"reasoning": "r", "code": "SUBMIT('done')"}] * 4)
    program = rlm_dspy.RLM("context, query -> answer", budget=Budget(max_llm_calls=1, ledger=ledger),
                           sub_lm=DummyLM([{"response": "x"}]))
    with dspy.context(lm=root):
        first = program(context="c", query="q")
        second = program(context="c", query="q")
    assert first.answer == "done" and first.stop_reason == "final"
    assert second.stop_reason == "max_llm_calls"  # the first call used the pool of one
    assert ledger.totals()["llm_calls"] == 1


def test_sub_call_cache_is_shared_by_processes_and_not_charged(postgres_url):
    setup_postgres(postgres_url)
    with ScriptedOpenAI(["unused"]) as server:
        first = result_of(start_worker("cache", postgres_url, server.api_base, "p1", "p2"))
        second = result_of(start_worker("cache", postgres_url, server.api_base, "p1", "p3"))
    assert server.prompts() == ["p1", "p2", "p3"]  # p1 went to the model once
    assert first["cached"] == [False, False] and second["cached"] == [True, False]
    assert second["answers"] == ["sub: p1", "sub: p3"]
    assert second["usage"]["llm_calls"] == 1 and second["usage"]["tokens"] == 16


def test_a_graph_with_cache_sub_calls_answers_a_repeated_prompt_from_the_store():
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langgraph.store.memory import InMemoryStore

    from rlm_graph import create_rlm_graph
    from tests.conftest import FakeLM

    store, sub = InMemoryStore(), FakeLM(str.upper)
    for _ in range(2):
        graph = create_rlm_graph(FakeListChatModel(responses=[cell("FINAL(llm_query('hi'))")]), sub_model=sub,
                                 store=store, cache_sub_calls=True, look_before_answer=False, grounding=False)
        out = graph.invoke({"query": "q", "context": "c"})
    assert out["answer"] == "HI" and sub.calls == ["hi"]
    assert out["usage"]["llm_calls"] == 1  # the root call only
    assert [e.get("cached") for e in out["events"]["events"] if e["kind"] == "sub_call"] == [True]


def test_a_router_with_a_failing_endpoint_still_answers():
    from rlm_graph import create_rlm_graph
    from sandbox.lm.router import RouterClient

    with ScriptedOpenAI([cell("FINAL(llm_query('ping'))")]) as good:
        router = fallback_router(good.api_base)
        client = RouterClient(router, "primary")
        out = create_rlm_graph(client, sub_model=client, look_before_answer=False,
                               grounding=False).invoke({"query": "q", "context": "c"})
    assert out["answer"] == "sub: ping" and out["stop_reason"] == "final"
    assert [r["body"]["model"] for r in good.requests] == ["b", "b"]  # root and sub-call, both by the fallback


def test_a_single_group_router_is_accepted_as_a_model():
    import litellm

    from sandbox.lm.clients import as_lm_client
    from sandbox.lm.router import RouterClient

    router = litellm.Router(model_list=[{"model_name": "g", "litellm_params": {"model": "openai/gpt-4o-mini"}}])
    client = as_lm_client(router)
    assert isinstance(client, RouterClient) and client.model == "g" and client.input_window() > 0
    two = litellm.Router(model_list=[{"model_name": n, "litellm_params": {"model": "openai/gpt-4o-mini"}}
                                     for n in ("a", "b")])
    with pytest.raises(ValueError, match="say which one"):
        as_lm_client(two)


def test_a_context_written_by_one_process_is_read_by_another(postgres_url, tmp_path):
    from rlm_graph.contexts import CHUNK_CHARS

    setup_postgres(postgres_url)
    text = "".join(f"line {i}: é\n" for i in range(CHUNK_CHARS // 5))  # more than two chunks
    path = tmp_path / "context.txt"
    path.write_text(text, encoding="utf-8")
    ref = result_of(start_worker("context-put", postgres_url, str(path)))["ref"]
    read = result_of(start_worker("context-get", postgres_url, ref))
    import hashlib

    assert read == {"chars": len(text), "sha256": hashlib.sha256(text.encode()).hexdigest()}
    assert ref.endswith(read["sha256"]) and len(text) > 2 * CHUNK_CHARS


def test_checkpoint_bytes_per_super_step_stay_flat_and_hold_no_context(postgres_url):
    from benchmarks.postgres_bench import bytes_per_super_step

    small = bytes_per_super_step(postgres_url, iterations=16, context_chars=10_000, thread="small")
    large = bytes_per_super_step(postgres_url, iterations=16, context_chars=1_000_000, thread="large")
    steps = [s for s in small if s["node"] in ("root_lm", "execute")]
    early = max(s["bytes"] for s in steps[2:8])
    late = max(s["bytes"] for s in steps[-8:-2])
    assert late <= early * 1.25, (early, late)  # before: every step re-wrote the whole chat and trajectory
    assert sum(s["bytes"] for s in large) < sum(s["bytes"] for s in small) + 20_000  # the context is not in them


def test_import_sandbox_does_not_import_psycopg():
    probe = "import sys, sandbox, rlm_graph; print('psycopg' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-2000:]
