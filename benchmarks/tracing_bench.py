"""The cost of OpenTelemetry tracing per RLM iteration, with and without a tracer provider.

A scripted LangGraph run (no network): each iteration is one root call and one cell that makes
one ``llm_query`` and a fan-out of four (``llm_query_batched``). Timed: the run's seconds per
iteration with the global no-op provider, and with an SDK provider exporting to memory; and, for
the no-op case, the tracing hooks alone (what one iteration pays when nothing is configured).

Run: ``python -m benchmarks.tracing_bench [--iterations N] [--repeats R]``; writes
``benchmarks/results/tracing_bench.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from rlm_graph import create_rlm_graph
from sandbox import Completion, Trajectory
from sandbox.engine import tracing

RESULTS = Path(__file__).resolve().parent / "results"
CELL = "a = llm_query('one')\nb = llm_query_batched(['p', 'q', 'r', 's'])\nprint(len(a), len(b))"


class ScriptedLM:
    """Root and sub-model at once: the root writes the benchmark cell until the last iteration."""

    model = "bench/scripted"

    def __init__(self, iterations: int):
        self.iterations = iterations

    async def acomplete(self, messages, *, max_tokens):
        if messages[0]["role"] != "system":  # a sub-call
            return Completion(text=messages[-1]["content"].upper(), prompt_tokens=5, completion_tokens=5,
                              model=self.model)
        done = sum(m["role"] == "assistant" for m in messages) + 1 >= self.iterations
        text = "FINAL('done')" if done else f"Next.\n```repl\n{CELL}\n```"
        return Completion(text=text, prompt_tokens=50, completion_tokens=20, model=self.model)


def seconds_per_iteration(iterations: int, provider: TracerProvider | None) -> float:
    """One run's wall-clock seconds divided by its iterations."""
    graph = create_rlm_graph(ScriptedLM(iterations), budget=None, max_iterations=iterations + 1,
                             tracer_provider=provider)
    began = time.perf_counter()
    out = graph.invoke({"query": "benchmark", "context": "some context"})
    elapsed = time.perf_counter() - began
    assert out["iterations"] == iterations, out["stop_reason"]
    return elapsed / iterations


def noop_hooks_seconds(rounds: int = 100_000) -> float:
    """What the hooks of one iteration (its cell, two lookups of events) cost untraced, in seconds."""
    trajectory = Trajectory("q")
    began = time.perf_counter()
    for _ in range(rounds):
        with tracing.cell_span(trajectory):
            pass
        tracing.end_run(trajectory)
    return (time.perf_counter() - began) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    seconds_per_iteration(2, None)  # warm-up: imports, the first worker
    untraced, traced = [], []
    for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits both alike
        untraced.append(seconds_per_iteration(args.iterations, None))
        traced.append(seconds_per_iteration(args.iterations, provider))
    spans = len(exporter.get_finished_spans()) // args.repeats
    result = {"iterations": args.iterations, "repeats": args.repeats,
              "untraced_ms_per_iteration": round(statistics.median(untraced) * 1e3, 3),
              "traced_ms_per_iteration": round(statistics.median(traced) * 1e3, 3),
              "spans_per_run": spans,
              "noop_hooks_us_per_iteration": round(noop_hooks_seconds() * 1e6, 3)}
    result["traced_overhead_ms_per_iteration"] = round(result["traced_ms_per_iteration"]
                                                       - result["untraced_ms_per_iteration"], 3)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tracing_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = "\n".join(f"| {key} | {value} |" for key, value in result.items())
    (RESULTS / "tracing_bench.md").write_text(
        "# Tracing overhead per iteration\n\nOne root call and one cell with 1 + 4 sub-calls per iteration; "
        "medians over interleaved repeats. `python -m benchmarks.tracing_bench`\n\n"
        f"| measure | value |\n|---|---|\n{rows}\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
