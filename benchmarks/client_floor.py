"""What each LM client costs per call, with no RLM around it: the floor under any fan-out.

    python benchmarks/client_floor.py [--n 256] [--concurrency 16] [--latency 0.1] [--rounds 2]

``--n`` sub-call-shaped requests, ``--concurrency`` at a time, from one asyncio loop in this
process to the scripted server (:mod:`benchmarks.latency_server`, in its own process), through:

- ``litellm``: ``litellm.acompletion`` (what the graph's model strings use);
- ``openai``: the openai SDK's ``AsyncOpenAI`` (one client, its connection pool);
- ``dspy_async``: ``dspy.LM.acall`` (DSPy's async path);
- ``dspy_one_hop``: the same ``dspy.LM``'s blocking call, each on a thread of its own
  (:func:`sandbox.lm.aio.in_own_thread`, what ``rlm_dspy`` sub-calls do).

For each: wall ÷ ideal (ideal: ``ceil(n / concurrency)`` rounds of ``--latency``) and the
process's CPU per call, medians of ``--rounds`` interleaved rounds after a warm-up batch.
Results go to benchmarks/results/client_floor.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm is first imported
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.anchors_bench import Server  # noqa: E402
from benchmarks.latency_server import SUB_PREFIX  # noqa: E402
from benchmarks.report import write_results  # noqa: E402
from sandbox.lm.aio import in_own_thread  # noqa: E402

Call = Callable[[int], Awaitable[Any]]


def clients(api_base: str) -> dict[str, Call]:
    """Each client as ``call(i)``: one request whose prompt is sub-call ``i``."""
    import dspy
    import litellm
    import openai
    from dspy import lm15

    def messages(i: int) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"{SUB_PREFIX} {i}"}]

    sdk = openai.AsyncOpenAI(base_url=api_base, api_key="k")
    lm = dspy.LM("openai/floor", api_base=api_base, api_key="k", cache=False)

    def request(i: int) -> Any:
        return lm15.Request(model="openai/floor", messages=(lm15.Message.user(f"{SUB_PREFIX} {i}"),),
                            config=lm15.Config(max_tokens=10))

    return {
        "litellm": lambda i: litellm.acompletion(model="openai/floor", messages=messages(i), api_base=api_base,
                                                 api_key="k", max_tokens=10, num_retries=0),
        "openai": lambda i: sdk.chat.completions.create(model="floor", messages=messages(i), max_tokens=10),
        "dspy_async": lambda i: lm.acall(request(i)),
        "dspy_one_hop": lambda i: in_own_thread(lm, request(i)),
    }


async def batch(call: Call, n: int, concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await call(i)

    await asyncio.gather(*(one(i) for i in range(n)))


def measure(runner: asyncio.Runner, call: Call, n: int, concurrency: int) -> tuple[float, float]:
    """One batch's wall seconds and the process's CPU seconds over it."""
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    runner.run(batch(call, n, concurrency))
    wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="requests per batch")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.1, help="the server's seconds per request")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved batches per client")
    args = parser.parse_args()
    ideal = math.ceil(args.n / args.concurrency) * args.latency
    load = round(os.getloadavg()[0], 2)
    server = Server(args.latency)
    try:
        with asyncio.Runner() as runner:  # its close cancels what is left (litellm's logging task)
            calls = clients(server.api_base)
            for call in calls.values():  # warm: imports, connection pools, caches
                runner.run(batch(call, 2 * args.concurrency, args.concurrency))
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
            for _ in range(args.rounds):
                for name, call in calls.items():
                    samples[name].append(measure(runner, call, args.n, args.concurrency))
    finally:
        server.close()
    results: dict[str, Any] = {"n": args.n, "concurrency": args.concurrency, "latency_s": args.latency,
                               "rounds": args.rounds, "cpus": os.cpu_count(),
                               "load_average_at_start": load}
    for name, runs in samples.items():
        results[f"{name}: wall / ideal"] = round(statistics.median(w for w, _ in runs) / ideal, 2)
        results[f"{name}: CPU ms per call"] = round(statistics.median(c for _, c in runs) / args.n * 1000, 2)
    print(write_results("client_floor", results))


if __name__ == "__main__":
    main()
