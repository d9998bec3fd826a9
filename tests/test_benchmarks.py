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
