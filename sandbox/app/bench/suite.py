"""The long-context suite: the same model as an RLM (graph and dspy engines) and called directly.

    rlm bench [--quick] [--tasks niah,distractors,oolong,pairs,ruler_niah_single,ruler_niah_multikey,ruler_vt]
              [--lengths 16384,262144] [--engines graph,dspy,direct] [--seeds 3]
              [--model M --api-base URL]            # default: the embedded local model

Tasks: the suite's own seeded generators (:mod:`.tasks`: niah, distractors, oolong, pairs) and
RULER's niah single-key, niah multi-key and variable tracking (:mod:`.ruler_tasks`; they need
``pip install 'rlm-sandbox[bench]'``). "direct" sends the context truncated to the model's window. Each
cell (task × length × engine) runs every seed; writes long_context.{json,md,svg} and long_context_runs.json
(see :mod:`.results`) to ``--out``: ``rlm-bench-results/`` in the working directory by default, and
``benchmarks/results/`` when run as ``python benchmarks/long_context.py`` from a source checkout.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandbox.app.bench import ruler_tasks, tasks
from sandbox.app.bench.results import Run, summarize, write
from sandbox.app.bench.tasks import CHARS_PER_TOKEN, Case
from sandbox.app.cli import Endpoint, endpoint_lm, model_endpoint

TASKS: dict[str, Callable[[int, int], Case]] = {**tasks.TASKS, **ruler_tasks.TASKS}
DEFAULT_LENGTHS = "16384,32768,65536,131072,262144"
QUICK_LENGTHS = "16384,131072"
DEFAULT_RESULTS = Path("rlm-bench-results")


def _overhead(events: list[dict[str, Any]], seconds: float, iterations: int) -> float | None:
    lm = sum(e.get("seconds", 0) for e in events if e["kind"] == "lm_call")
    cells = sum(e.get("seconds", 0) for e in events if e["kind"] == "cell")
    return round((seconds - lm - cells) / iterations * 1000, 2) if iterations else None


def run_graph(case: Case, endpoint: Endpoint, max_iterations: int) -> Run:
    from rlm_graph import create_rlm_graph
    from sandbox import Budget

    graph = create_rlm_graph(endpoint.model, sub_model=endpoint.sub_model, api_base=endpoint.api_base,
                             api_key=endpoint.api_key, max_iterations=max_iterations, budget=Budget(max_seconds=300))
    started = time.monotonic()
    out = graph.invoke({"query": case.question, "context": case.context})
    seconds = time.monotonic() - started
    events = out["events"]["events"]
    return Run(case.task, case.tokens, case.seed, "graph", case.score(out["answer"]), str(out["answer"])[:200],
               out["stop_reason"], out["usage"]["llm_calls"], sum(e["kind"] == "sub_call" for e in events),
               out["usage"]["tokens"], round(seconds, 2), _overhead(events, seconds, out["iterations"]))


def run_dspy(case: Case, endpoint: Endpoint, max_iterations: int) -> Run:
    import dspy

    from rlm_dspy import RLM
    from sandbox import Budget

    rlm = RLM("context, question -> answer", max_iters=max_iterations,
              sub_lm=endpoint_lm(endpoint, endpoint.sub_model, max_tokens=512), budget=Budget(max_seconds=300))
    started = time.monotonic()
    with dspy.context(lm=endpoint_lm(endpoint, endpoint.model, max_tokens=512)):
        out = rlm(context=case.context, question=case.question)
    seconds = time.monotonic() - started
    events = out.events["events"]
    return Run(case.task, case.tokens, case.seed, "dspy", case.score(out.answer), str(out.answer)[:200],
               out.stop_reason, out.usage["llm_calls"], sum(e["kind"] == "sub_call" for e in events),
               out.usage["tokens"], round(seconds, 2), _overhead(events, seconds, out.usage["iterations"]))


def run_direct(case: Case, endpoint: Endpoint, window_chars: int) -> Run:
    import asyncio

    from sandbox import Budget, LiteLLMClient
    from sandbox.lm.clients import metered_completion

    budget = Budget()
    prompt = f"{case.question}\n\nText:\n{case.context[:window_chars]}\n\nAnswer briefly."
    started = time.monotonic()
    client = LiteLLMClient(endpoint.model, api_base=endpoint.api_base, api_key=endpoint.api_key)
    completion = asyncio.run(metered_completion(client,
                                                [{"role": "user", "content": prompt}], budget=budget, max_tokens=256))
    return Run(case.task, case.tokens, case.seed, "direct", case.score(completion.text), completion.text[:200],
               "final", 1, 0, budget.tokens, round(time.monotonic() - started, 2), None)


def _cases(parser: argparse.ArgumentParser, names: list[str], lengths: list[int], seeds: range) -> list[Case]:
    unknown = [name for name in names if name not in TASKS]
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    if any(name in ruler_tasks.TASKS for name in names):
        try:
            ruler_tasks.require()
        except ruler_tasks.BenchExtraMissing as exc:
            parser.error(str(exc))
    try:
        return [TASKS[name](length, seed) for name in names for length in lengths for seed in seeds]
    except ValueError as exc:
        parser.error(str(exc))


def endpoint_arguments(parser: argparse.ArgumentParser, results: Path) -> None:
    """The options naming the model (``model_endpoint`` reads them) and ``--out``, defaulting to ``results``."""
    parser.add_argument("--model", help="litellm model string (default: the embedded local model)")
    parser.add_argument("--api-base")
    parser.add_argument("--api-key")
    parser.add_argument("--out", type=Path, default=results, help=f"where to write the results (default {results})")
    parser.set_defaults(sub_model=None)


def main(argv: list[str] | None = None, *, results: Path = DEFAULT_RESULTS,
         prog: str | None = None) -> list[dict[str, Any]]:
    """Run the suite with the command-line options ``argv``; write the results to ``--out`` (default ``results``)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"lengths {QUICK_LENGTHS}, one seed")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, from {', '.join(TASKS)}")
    parser.add_argument("--lengths", help=f"context lengths in tokens, comma-separated (default {DEFAULT_LENGTHS})")
    parser.add_argument("--engines", default="graph,dspy,direct")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per cell (default 3)")
    parser.add_argument("--max-iterations", type=int, default=6)
    parser.add_argument("--window-tokens", type=int, default=6000, help="what 'direct' may send (model window)")
    endpoint_arguments(parser, results)
    args = parser.parse_args(argv)
    lengths = [int(x) for x in (args.lengths or (QUICK_LENGTHS if args.quick else DEFAULT_LENGTHS)).split(",")]
    cases = _cases(parser, args.tasks.split(","), lengths, range(args.seeds or (1 if args.quick else 3)))
    runners = {"graph": run_graph, "dspy": run_dspy}
    runs: list[Run] = []
    with model_endpoint(args) as endpoint:
        for case in cases:
            for engine in args.engines.split(","):
                if engine == "direct":
                    run = run_direct(case, endpoint, args.window_tokens * CHARS_PER_TOKEN)
                else:
                    run = runners[engine](case, endpoint, args.max_iterations)
                runs.append(run)
                print(f"{case.task:19s} {case.tokens:>8,} tokens  seed {case.seed}  {engine:6s} "
                      f"score {run.score:.2f}  {run.seconds:6.1f}s  {run.stop_reason}", flush=True)
    rows = summarize(runs)
    print(write(args.out, runs, rows))
    return rows

