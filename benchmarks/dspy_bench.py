"""rlm_dspy benchmarks; results go to benchmarks/results/dspy.json and dspy.md.

    python benchmarks/dspy_bench.py [--iterations 20] [--repeats 3]

Per-iteration overhead excluding LM time (the scripted LM's own time is measured and
subtracted) for rlm_dspy.RLM, for dspy.RLM on RestrictedPythonInterpreter, and for
dspy.RLM on its LocalInterpreter (the only one of DSPy's that runs offline), all on the
same scripted LM; and interpreter start-up (start plus a first trivial cell).
All numbers come from one run; medians of --repeats runs.
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

from benchmarks.report import write_results  # noqa: E402
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


def overhead_ms(make_module, iterations: int, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        root = TimedLM(iterations)
        module = make_module(iterations)
        started = time.perf_counter()
        with dspy.context(lm=root.lm):
            out = module(context=CONTEXT, query="count")
        elapsed = time.perf_counter() - started
        assert str(out.answer) == str(iterations - 2), out
        samples.append((elapsed - root.seconds) / iterations)
    return round(statistics.median(samples) * 1000, 3)


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
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n, k = args.iterations, args.repeats
    sub = text_lm(str.upper)
    modules = {
        "rlm_dspy_RLM": lambda i: RLM("context, query -> answer", max_iters=i, sub_lm=sub),
        "dspy_RLM_on_restricted_interpreter": lambda i: dspy.RLM(
            "context, query -> answer", max_iters=i, sub_lm=sub, interpreter_factory=RestrictedPythonInterpreter),
        "dspy_RLM_on_local_interpreter": lambda i: dspy.RLM(
            "context, query -> answer", max_iters=i, sub_lm=sub, interpreter_factory=LocalInterpreter),
    }
    overhead_ms(modules["rlm_dspy_RLM"], 3, 1)  # warm imports and caches
    results: dict[str, object] = {"iterations": n, "repeats": k}
    for name, make in modules.items():
        results[f"overhead_ms_per_iteration_{name}"] = overhead_ms(make, n, k)
    results["overhead_ratio_rlm_dspy_vs_dspy_local"] = round(
        results["overhead_ms_per_iteration_rlm_dspy_RLM"]
        / results["overhead_ms_per_iteration_dspy_RLM_on_local_interpreter"], 2)
    results["startup_ms_restricted_interpreter"] = startup_ms(RestrictedPythonInterpreter, k * 3)
    results["startup_ms_local_interpreter"] = startup_ms(LocalInterpreter, k * 3)
    results["startup_ratio_restricted_vs_local"] = round(
        results["startup_ms_restricted_interpreter"] / results["startup_ms_local_interpreter"], 2)
    print(write_results("dspy", results))


if __name__ == "__main__":
    main()
