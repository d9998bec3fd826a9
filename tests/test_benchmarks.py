"""The benchmarks' own runs still work on the current code (a benchmark that cannot run measures nothing)."""

from __future__ import annotations

from benchmarks import dspy_bench, graph_bench


def test_the_graph_benchmark_runs_its_script_to_the_answer():
    assert graph_bench.overhead_ms(5, None) > 0  # it asserts the answer itself


def test_the_dspy_benchmark_runs_each_module_to_the_answer():
    from rlm_dspy import RLM
    from tests.dspy_lms import text_lm

    sub = text_lm(str.upper)
    assert dspy_bench.overhead_ms(lambda i: RLM("context, query -> answer", max_iters=i, sub_lm=sub), 5, 1) > 0


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
    assert measured["overhead_ms_per_iteration_no_checkpointer"] > 0 and results.read_bytes() == kept
