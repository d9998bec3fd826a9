"""rlm_graph benchmarks; results go to benchmarks/results/graph.json and graph.md.

    python benchmarks/graph_bench.py [--iterations 30]

Per-iteration overhead of the graph excluding LM time (root LM replies instantly
and its time is measured and subtracted), without a checkpointer, with
InMemorySaver and with SqliteSaver; and checkpoint bytes per iteration with
SqliteSaver for 1 MB and 10 MB contexts. All numbers come from one run.
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

from benchmarks.report import write_results  # noqa: E402

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


def overhead_ms(iterations: int, checkpointer) -> float:
    root = TimedScript(iterations)
    graph = create_rlm_graph(root, max_iterations=iterations + 1, checkpointer=checkpointer)
    config = {"configurable": {"thread_id": f"bench-{time.monotonic_ns()}"}}
    started = time.perf_counter()
    out = graph.invoke({"query": "count", "context": "x" * 1000}, config)
    elapsed = time.perf_counter() - started
    assert out["answer"] == iterations - 2, out
    return round((elapsed - root.seconds) / iterations * 1000, 3)


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
    parser.add_argument("--iterations", type=int, default=30)
    args = parser.parse_args()
    n = args.iterations
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        overhead_ms(5, None)  # warm imports and the first worker start
        results: dict[str, object] = {"iterations": n}
        results["overhead_ms_per_iteration_no_checkpointer"] = overhead_ms(n, None)
        results["overhead_ms_per_iteration_memory_saver"] = overhead_ms(n, InMemorySaver())
        with SqliteSaver.from_conn_string(str(workdir / "overhead.db")) as saver:
            results["overhead_ms_per_iteration_sqlite_saver"] = overhead_ms(n, saver)
        results["sqlite_vs_none_ratio"] = round(results["overhead_ms_per_iteration_sqlite_saver"]
                                                / results["overhead_ms_per_iteration_no_checkpointer"], 2)
        for label, chars in (("1mb", 1_000_000), ("10mb", 10_000_000)):
            for key, value in checkpoint_bytes(n, chars, workdir).items():
                results[f"checkpoint_{key}_{label}"] = value
    print(write_results("graph", results))


if __name__ == "__main__":
    main()
