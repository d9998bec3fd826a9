"""rlm_dspy benchmarks; results go to benchmarks/results/dspy.json and dspy.md.

    python benchmarks/dspy_bench.py [--short 10] [--long 60] [--repeats 3]

The module's own time excluding LM time (the scripted LM's own time is measured and
subtracted) for rlm_dspy.RLM, for dspy.RLM on RestrictedPythonInterpreter, and for
dspy.RLM on its LocalInterpreter (the only one of DSPy's that runs offline), all on the
same scripted LM, as two numbers each: ``per_iteration_ms_*``, what one more iteration costs
(the slope between runs of ``--short`` and ``--long`` iterations, medians of ``--repeats``),
and ``run_startup_ms_*``, what a run costs whatever its length. Then interpreter start-up
(start plus a first trivial cell). All numbers come from one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dspy  # noqa: E402
from dspy.primitives.local_interpreter import LocalInterpreter  # noqa: E402

from benchmarks.report import per_iteration_and_startup, write_results  # noqa: E402
from rlm_dspy import RLM, RestrictedPythonInterpreter  # noqa: E402
from tests.dspy_lms import function_lm, stepwise_rlm_reply, text_lm  # noqa: E402

CONTEXT = "benchmark context " * 1000


class TimedLM:
    """The stepwise scripted root LM, timing its own replies (the 'LM time' to subtract).

    The first cell reads the context and the last prints the answer, so the default checks of
    grounded answers (look before answering, grounding) pass and run, as they do for a user."""

    def __init__(self, iterations: int):
        cells = ["x = len(context[:0])"] + ["x = x + 1"] * (iterations - 2) + ["print(x)\nSUBMIT(answer=str(x))"]
        self.reply = stepwise_rlm_reply(cells)
        self.seconds = 0.0
        self.lm = function_lm(self._timed, model="bench/root")

    def _timed(self, messages):
        started = time.perf_counter()
        try:
            return self.reply(messages)
        finally:
            self.seconds += time.perf_counter() - started


def run_seconds(make_module, iterations: int) -> float:
    """One run of ``make_module(iterations)`` to its answer: its seconds less the root LM's."""
    root = TimedLM(iterations)
    module = make_module(iterations)
    started = time.perf_counter()
    with dspy.context(lm=root.lm):
        out = module(context=CONTEXT, query="count")
    elapsed = time.perf_counter() - started
    assert str(out.answer) == str(iterations - 2), out
    return elapsed - root.seconds


def startup_ms(factory, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        interpreter = factory()
        interpreter.start()
        interpreter.execute("x = 1")
        samples.append(time.perf_counter() - started)
        interpreter.shutdown()
    return round(statistics.median(samples) * 1000, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=10, help="iterations of the short runs")
    parser.add_argument("--long", type=int, default=60, help="iterations of the long runs")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each length")
    args = parser.parse_args()
    k = args.repeats
    sub = text_lm(str.upper)
    modules = {
        "rlm_dspy_RLM": lambda i: RLM("context, query -> answer", max_iters=i, sub_lm=sub),
        "dspy_RLM_on_restricted_interpreter": lambda i: dspy.RLM(
            "context, query -> answer", max_iters=i, sub_lm=sub, interpreter_factory=RestrictedPythonInterpreter),
        "dspy_RLM_on_local_interpreter": lambda i: dspy.RLM(
            "context, query -> answer", max_iters=i, sub_lm=sub, interpreter_factory=LocalInterpreter),
    }
    run_seconds(modules["rlm_dspy_RLM"], 3)  # warm imports and caches
    results: dict[str, object] = {"short_iterations": args.short, "long_iterations": args.long, "repeats": k}
    for name, make in modules.items():
        per_iteration, startup = per_iteration_and_startup(lambda i, make=make: run_seconds(make, i),
                                                           short=args.short, long=args.long, repeats=k)
        results[f"per_iteration_ms_{name}"] = per_iteration
        results[f"run_startup_ms_{name}"] = startup
    results["per_iteration_ratio_rlm_dspy_vs_dspy_local"] = round(
        results["per_iteration_ms_rlm_dspy_RLM"] / results["per_iteration_ms_dspy_RLM_on_local_interpreter"], 2)
    results["startup_ms_restricted_interpreter"] = startup_ms(RestrictedPythonInterpreter, k * 3)
    results["startup_ms_local_interpreter"] = startup_ms(LocalInterpreter, k * 3)
    results["startup_ratio_restricted_vs_local"] = round(
        results["startup_ms_restricted_interpreter"] / results["startup_ms_local_interpreter"], 2)
    print(write_results("dspy", results))


if __name__ == "__main__":
    main()
