"""Sandbox core benchmarks; results go to benchmarks/results/sandbox.json and sandbox.md.

    python benchmarks/sandbox_bench.py [--quick]

Measures worker start (confined and on the policy alone, and with a 40 MB
context), the trivial-cell round trip, a proxied host-function round trip, the guard
overhead on a hot loop, peak memory with a 40 MB context, llm_query_batched
efficiency (256 prompts, 100 ms fake latency, concurrency 32), and a cell looping on
100,000 refused sub-calls. All numbers come from one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import write_results  # noqa: E402

from sandbox import Budget, Completion, Sandbox, Trajectory  # noqa: E402
from sandbox.engine.bridge import HostFunctions  # noqa: E402
from sandbox.lm.aio import AsyncRunner  # noqa: E402

CONTEXT_40MB = "0123456789 abcdefghijklmnopqrstuvwxyz\n" * (40 * 1024 * 1024 // 38)

HOT_LOOP = """
def hot(n):
    items = []
    table = {i: i for i in range(10)}
    total = 0
    for i in range(n):
        items.append(i)
        total += table[i % 10]
    return total
"""


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


def bench_start(repeats: int) -> dict[str, float]:
    """Worker start, confined (the default) and on the policy alone, interleaved; and with 40 MB."""
    confined, policy_only, with_context = [], [], []
    for _ in range(repeats):
        for confinement, samples in (("os", confined), ("none", policy_only)):
            t = time.perf_counter()
            sb = Sandbox(confinement=confinement)
            samples.append(time.perf_counter() - t)
            sb.close()
        t = time.perf_counter()
        sb = Sandbox()
        sb.set_variable("context", CONTEXT_40MB)
        with_context.append(time.perf_counter() - t)
        sb.close()
    return {"start_ms": median_ms(confined), "start_policy_only_ms": median_ms(policy_only),
            "confinement_cost_ms": round(median_ms(confined) - median_ms(policy_only), 3),
            "start_with_40mb_context_ms": median_ms(with_context)}


def bench_round_trips(n: int) -> dict[str, float]:
    with Sandbox(tools={"echo": lambda x: x}) as sb:
        sb.execute("x = 0")
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            sb.execute("x = 1")
            samples.append(time.perf_counter() - t)
        calls = 2000
        t = time.perf_counter()
        sb.execute(f"for i in range({calls}):\n    echo('x')")
        tool_us = (time.perf_counter() - t) / calls * 1e6
    return {"cell_round_trip_ms": median_ms(samples), "tool_round_trip_us": round(tool_us, 1)}


class InstantLM:
    model = "fake/instant"

    async def acomplete(self, messages, *, max_tokens):
        return Completion(text="ok", prompt_tokens=1, completion_tokens=1)


class SlowLM(InstantLM):
    def __init__(self, latency: float):
        self.latency = latency

    async def acomplete(self, messages, *, max_tokens):
        import asyncio

        await asyncio.sleep(self.latency)
        return Completion(text="ok", prompt_tokens=1, completion_tokens=1)


def bench_llm_query(calls: int) -> dict[str, float]:
    runner = AsyncRunner()
    host = HostFunctions(lm=InstantLM(), budget=Budget(), trajectory=Trajectory("bench"), runner=runner)
    with Sandbox(tools=host.tools()) as sb:
        t = time.perf_counter()
        sb.execute(f"for i in range({calls}):\n    llm_query('x')")
        per_call = (time.perf_counter() - t) / calls
    runner.close()
    return {"llm_query_round_trip_us": round(per_call * 1e6, 1)}


def bench_batched(prompts: int = 256, latency: float = 0.1, concurrency: int = 32) -> dict[str, float]:
    runner = AsyncRunner()
    host = HostFunctions(lm=SlowLM(latency), budget=Budget(), trajectory=Trajectory("bench"), runner=runner,
                         max_concurrency=concurrency)
    with Sandbox(tools=host.tools()) as sb:
        sb.execute("llm_query_batched(['warm'])")
        t = time.perf_counter()
        result = sb.execute(f"answers = llm_query_batched(['p'] * {prompts})\nprint(len(answers))")
        elapsed = time.perf_counter() - t
    runner.close()
    assert result.output == f"{prompts}\n", result
    ideal = -(-prompts // concurrency) * latency
    return {"batched_256_seconds": round(elapsed, 4), "batched_ideal_seconds": ideal,
            "batched_efficiency": round(ideal / elapsed, 4)}


def bench_guard_overhead(n: int, repeats: int = 7) -> dict[str, float]:
    """The hot loop, plain and sandboxed: best of ``repeats`` each (the least disturbed run)."""
    namespace: dict = {}
    exec(HOT_LOOP, namespace)
    plain = []
    for _ in range(repeats):
        t = time.perf_counter()
        namespace["hot"](n)
        plain.append(time.perf_counter() - t)
    with Sandbox(timeout=120) as sb:
        sb.execute(HOT_LOOP + "import time\n")
        result = sb.execute(f"timings = []\nfor _ in range({repeats}):\n    t = time.perf_counter()\n"
                            f"    hot({n})\n    timings.append(time.perf_counter() - t)\nprint(min(timings))")
    guarded = float(result.output)
    return {"hot_loop_plain_ms": round(min(plain) * 1000, 3), "hot_loop_sandboxed_ms": round(guarded * 1000, 3),
            "guard_overhead_ratio": round(guarded / min(plain), 2)}


def bench_refusals(calls: int = 100_000) -> dict[str, float]:
    """A cell that loops on sub-calls the host refuses (an over-long prompt, caught by try)."""
    runner = AsyncRunner()
    trajectory = Trajectory("bench")
    host = HostFunctions(lm=InstantLM(), budget=Budget(), trajectory=trajectory, runner=runner,
                         max_prompt_chars=100)
    with Sandbox(tools=host.tools(), timeout=600) as sb:
        t = time.perf_counter()
        sb.execute(f"for i in range({calls}):\n    try:\n        llm_query('x' * 101)\n"
                   "    except ValueError:\n        pass")
        elapsed = time.perf_counter() - t
    runner.close()
    return {"refusals": calls, "refusals_seconds": round(elapsed, 3),
            "refusals_trajectory_bytes": len(trajectory.to_json()), "refusals_charged_calls": host.budget.llm_calls}


PEAK_MEMORY_PROBE = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from sandbox import Sandbox

    def hwm_mb(pid):
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024

    def reset_hwm(pid):
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # resets the peak-RSS counter

    context = "0123456789 abcdefghijklmnopqrstuvwxyz\\n" * (40 * 1024 * 1024 // 38)
    with Sandbox() as sb:
        worker_base = hwm_mb(sb.pid)
        reset_hwm("self")
        host_base = hwm_mb("self")
        sb.set_variable("context", context)
        sb.execute("n = len(context)")
        host_peak = hwm_mb("self")
        worker_peak = hwm_mb(sb.pid)
    size = len(context.encode()) / 1024 / 1024
    print(json.dumps({"context_mb": round(size, 1),
                      "host_extra_copies_at_peak": round((host_peak - host_base) / size, 2),
                      "worker_copies_at_peak": round((worker_peak - worker_base) / size, 2)}))
""")


def bench_peak_memory() -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", PEAK_MEMORY_PROBE, str(ROOT)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


TARGETS = {"cell_round_trip_ms": ("<", 1.0), "start_with_40mb_context_ms": ("<", 300.0),
           "batched_efficiency": (">", 0.90), "guard_overhead_ratio": ("<=", 5.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (for a smoke run)")
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    results: dict[str, object] = {"python": platform.python_version(), "machine": platform.machine(),
                                  "quick": args.quick}
    results.update(bench_start(max(2, int(10 * scale))))
    results.update(bench_round_trips(max(50, int(1000 * scale))))
    results.update(bench_llm_query(max(100, int(1000 * scale))))
    results.update(bench_guard_overhead(max(100_000, int(1_000_000 * scale))))
    results.update(bench_peak_memory())
    results.update(bench_batched())
    results.update(bench_refusals(max(10_000, int(100_000 * scale))))
    results["targets_met"] = {name: {"<": results[name] < bound, ">": results[name] > bound,
                                     "<=": results[name] <= bound}[op] for name, (op, bound) in TARGETS.items()}
    print(write_results("sandbox", results))


if __name__ == "__main__":
    main()
