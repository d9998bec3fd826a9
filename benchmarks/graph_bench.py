"""rlm_graph benchmarks; results go to benchmarks/results/graph.json and graph.md.

    python benchmarks/graph_bench.py [--short 10] [--long 110] [--repeats 5] [--iterations 30]

The graph's own time excluding LM time (the root LM replies instantly; its time is measured
and subtracted), without a checkpointer, with InMemorySaver and with SqliteSaver, as two
numbers each: ``per_iteration_ms_*``, what one more iteration costs (the slope between runs of
``--short`` and ``--long`` iterations, medians of ``--repeats``), and ``startup_ms_*``, what a
run costs whatever its length (the worker's start, ``prepare``, ``finalize``). Then checkpoint
bytes per iteration with SqliteSaver for 1 MB and 10 MB contexts, over runs of ``--iterations``.
All numbers come from one run.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import per_iteration_and_startup, write_results  # noqa: E402

from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.checkpoint.sqlite import SqliteSaver  # noqa: E402

from rlm_graph import create_rlm_graph  # noqa: E402
from sandbox import Completion  # noqa: E402



class TimedScript:
    """An instant root LM that replies with `x = x + 1` cells, then FINAL; records its own time.

    The first cell reads the context and the last prints the answer, so the default checks
    (look before answering, grounding) pass and run, as they do for a user."""

    model = "bench/script"

    def __init__(self, iterations: int):
        cells = ["x = len(context[:0])"] + ["x = x + 1"] * (iterations - 2) + ["print(x)\nFINAL(x)"]
        self.replies = [f"```repl\n{cell}\n```" for cell in cells]
        self.seconds = 0.0

    async def acomplete(self, messages, *, max_tokens):
        started = time.perf_counter()
        text = self.replies.pop(0)
        self.seconds += time.perf_counter() - started
        return Completion(text=text, prompt_tokens=1, completion_tokens=1)


def run_seconds(iterations: int, checkpointer) -> float:
    """One run of ``iterations`` iterations to its answer: its seconds less the root LM's."""
    root = TimedScript(iterations)
    graph = create_rlm_graph(root, max_iterations=iterations + 1, checkpointer=checkpointer)
    config = {"configurable": {"thread_id": f"bench-{time.monotonic_ns()}"}}
    started = time.perf_counter()
    out = graph.invoke({"query": "count", "context": "x" * 1000}, config)
    elapsed = time.perf_counter() - started
    assert out["answer"] == iterations - 2, out
    return elapsed - root.seconds


def checkpoint_bytes(iterations: int, context_chars: int, workdir: Path) -> dict[str, float]:
    db = workdir / f"cp-{context_chars}.db"
    with SqliteSaver.from_conn_string(str(db)) as saver:
        graph = create_rlm_graph(TimedScript(iterations), max_iterations=iterations + 1, checkpointer=saver)
        graph.invoke({"query": "count", "context": "y" * context_chars}, {"configurable": {"thread_id": "t"}})
    con = sqlite3.connect(db)
    count, blobs = con.execute(
        "select count(*), sum(length(checkpoint)) + sum(length(metadata)) from checkpoints").fetchone()
    writes = con.execute("select coalesce(sum(length(value)), 0) from writes").fetchone()[0]
    con.close()
    return {"checkpoints": count, "bytes_per_iteration": round((blobs + writes) / iterations),
            "largest_checkpoint_bytes": max(r[0] for r in sqlite3.connect(db).execute(
                "select length(checkpoint) from checkpoints"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=10, help="iterations of the short runs")
    parser.add_argument("--long", type=int, default=110, help="iterations of the long runs")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each length")
    parser.add_argument("--iterations", type=int, default=30, help="iterations of the checkpoint-bytes runs")
    args = parser.parse_args()
    n = args.iterations
    lengths = {"short": args.short, "long": args.long, "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        run_seconds(5, None)  # warm imports and the first worker start
        results: dict[str, object] = {"short_iterations": args.short, "long_iterations": args.long,
                                      "repeats": args.repeats}
        with SqliteSaver.from_conn_string(str(workdir / "overhead.db")) as saver:
            for label, checkpointer in (("no_checkpointer", None), ("memory_saver", InMemorySaver()),
                                        ("sqlite_saver", saver)):
                per_iteration, startup = per_iteration_and_startup(
                    lambda i, checkpointer=checkpointer: run_seconds(i, checkpointer), **lengths)
                results[f"per_iteration_ms_{label}"] = per_iteration
                results[f"startup_ms_{label}"] = startup
        results["sqlite_vs_none_ratio"] = round(results["per_iteration_ms_sqlite_saver"]
                                                / results["per_iteration_ms_no_checkpointer"], 2)
        results["iterations"] = n
        for label, chars in (("1mb", 1_000_000), ("10mb", 10_000_000)):
            for key, value in checkpoint_bytes(n, chars, workdir).items():
                results[f"checkpoint_{key}_{label}"] = value
    print(write_results("graph", results))


if __name__ == "__main__":
    main()
