"""One RLM system's fan-out runs in a fresh process, for the anchors benchmark; prints one JSON line.

    python benchmarks/fanout_runner.py --system graph --api-base URL --t0 $(date +%s.%N) [--tree PATH]

``--system`` is ``graph`` or ``dspy`` (this project's adapters, imported from ``--tree``),
``rlms`` (the ``rlms`` package) or ``dspy_stock`` (``dspy.RLM`` on DSPy's ``LocalInterpreter``);
the anchors run under the anchors' virtual environment, which lacks this project. Each run
asks the scripted server (:mod:`benchmarks.latency_server`) for one fan-out cell of ``--n``
sub-calls and then the answer. The first run's time counts from ``--t0`` (when the parent
started this process: imports included); the later ones are warm.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

CONTEXT = "alpha beta gamma delta\n" * 200  # over 1,000 characters: the grounding checks run, as for a user
QUERY = "How many answers came back?"


def graph_system(api_base: str, n: int, concurrency: int) -> Callable[[], Any]:
    from rlm_graph import create_rlm_graph
    from sandbox.engine.session import SandboxOptions

    options = SandboxOptions(max_concurrency=concurrency) if concurrency else SandboxOptions()

    def run() -> Any:
        graph = create_rlm_graph(f"openai/repl-graph-{n}", api_base=api_base, api_key="k", max_iterations=5,
                                 sandbox_options=options)
        return graph.invoke({"query": QUERY, "context": CONTEXT})["answer"]

    return run


def dspy_system(api_base: str, n: int, concurrency: int) -> Callable[[], Any]:
    import dspy

    from rlm_dspy import RLM
    from sandbox.engine.session import SandboxOptions

    options = SandboxOptions(max_concurrency=concurrency) if concurrency else SandboxOptions()

    def run() -> Any:
        lm = dspy.LM(f"openai/dspy-ours-{n}", api_base=api_base, api_key="k", cache=False)
        rlm = RLM("context, query -> answer", max_iters=5, max_llm_calls=10 * n, sub_lm=lm, sandbox_options=options)
        with dspy.context(lm=lm):
            return rlm(context=CONTEXT, query=QUERY).answer

    return run


def dspy_stock_system(api_base: str, n: int, concurrency: int) -> Callable[[], Any]:
    import dspy
    from dspy.predict.rlm import RLM
    from dspy.primitives.local_interpreter import LocalInterpreter

    if concurrency:  # dspy.RLM has no option for it: llm_query_batched's pool size is a default argument
        RLM._make_llm_tools.__defaults__ = (None, concurrency)

    def run() -> Any:
        lm = dspy.LM(f"openai/dspy-stock-{n}", api_base=api_base, api_key="k", cache=False)
        rlm = RLM("context, query -> answer", max_iters=5, max_llm_calls=10 * n, sub_lm=lm,
                  interpreter_factory=LocalInterpreter)
        with dspy.context(lm=lm):
            return rlm(context=CONTEXT, query=QUERY).answer

    return run


def rlms_system(api_base: str, n: int, concurrency: int) -> Callable[[], Any]:
    from rlm import RLM
    from rlm.core import lm_handler

    if concurrency:  # rlms has no option for it either: the batch semaphore's size is a default argument
        defaults = list(lm_handler.LMHandler.__init__.__defaults__)
        defaults[-1] = concurrency
        lm_handler.LMHandler.__init__.__defaults__ = tuple(defaults)

    def run() -> Any:
        rlm = RLM(backend="openai", backend_kwargs={"model_name": f"rlms-{n}", "base_url": api_base, "api_key": "k"},
                  environment="local", max_iterations=5)
        return rlm.completion(CONTEXT, root_prompt=QUERY).response

    return run


SYSTEMS = {"graph": graph_system, "dspy": dspy_system, "dspy_stock": dspy_stock_system, "rlms": rlms_system}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=sorted(SYSTEMS), required=True)
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--t0", type=float, required=True, help="time.time() when this process was started")
    parser.add_argument("--tree", help="the checkout of this project to import (for graph and dspy)")
    parser.add_argument("--n", type=int, default=256, help="sub-calls in the fan-out cell")
    parser.add_argument("--concurrency", type=int, default=0, help="sub-calls at once; 0: the system's default")
    parser.add_argument("--repeats", type=int, default=3, help="warm runs after the first")
    args = parser.parse_args()
    if args.tree:
        sys.path.insert(0, args.tree)
    run = SYSTEMS[args.system](args.api_base, args.n, args.concurrency)
    answers = [run()]
    cold = time.time() - args.t0
    warm = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        answers.append(run())
        warm.append(time.perf_counter() - started)
    print(json.dumps({"cold_s": cold, "warm_s": warm, "answers": [str(a) for a in answers]}), flush=True)


if __name__ == "__main__":
    main()
