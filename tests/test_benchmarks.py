"""The benchmarks' own runs still work on the current code (a benchmark that cannot run measures nothing)."""

from __future__ import annotations

from benchmarks import dspy_bench, graph_bench


def test_the_graph_benchmark_runs_its_script_to_the_answer():
    assert graph_bench.run_seconds(5, None) > 0  # it asserts the answer itself


def test_the_dspy_benchmark_runs_each_module_to_the_answer():
    from rlm_dspy import RLM
    from tests.dspy_lms import text_lm

    sub = text_lm(str.upper)
    assert dspy_bench.run_seconds(lambda i: RLM("context, query -> answer", max_iters=i, sub_lm=sub), 5) > 0


def test_per_iteration_cost_is_the_slope_between_run_lengths_and_startup_what_is_left_at_zero():
    from benchmarks.report import per_iteration_and_startup

    lengths = []

    def run(iterations: int) -> float:  # 120 ms to start, 2 ms an iteration; one slow outlier
        lengths.append(iterations)
        return 0.120 + 0.002 * iterations + (1.0 if len(lengths) == 1 else 0.0)

    assert per_iteration_and_startup(run, short=10, long=110, repeats=3) == (2.0, 120.0)
    assert lengths == [10, 110] * 3  # the two lengths alternate, so a slow spell hits both


def test_before_after_reports_the_median_of_each_side_and_their_ratio():
    from benchmarks.before_after import summarize

    runs = {"graph": {"before": [{"ms": 4.0, "label": "x"}, {"ms": 6.0, "label": "x"}, {"ms": 5.0, "label": "x"}],
                      "after": [{"ms": 2.0, "flag": True}, {"ms": 3.0, "flag": True}, {"ms": 9.0, "flag": True}]}}
    assert summarize(runs) == {"graph.ms": {"before": 5.0, "after": 3.0, "ratio": 0.6}}


def test_before_after_runs_a_benchmark_in_a_tree_and_puts_its_result_files_back():
    from benchmarks.before_after import ROOT, run_bench

    results = ROOT / "benchmarks" / "results" / "graph.json"
    kept = results.read_bytes()
    measured = run_bench(ROOT, "graph")
    assert measured["per_iteration_ms_no_checkpointer"] > 0 and results.read_bytes() == kept


def test_the_client_floor_benchmark_gets_an_answer_through_each_client():
    import asyncio

    from benchmarks.anchors_bench import Server
    from benchmarks.client_floor import clients

    server = Server(0.0)
    try:
        with asyncio.Runner() as runner:  # its close cancels litellm's background logging task
            replies = {name: runner.run(call(1)) for name, call in clients(server.api_base).items()}
    finally:
        server.close()
    texts = {name: reply.text if hasattr(reply, "text") else reply.choices[0].message.content
             for name, reply in replies.items()}
    assert texts == {"litellm": "ok", "openai": "ok", "dspy_async": "ok", "dspy_one_hop": "ok"}
