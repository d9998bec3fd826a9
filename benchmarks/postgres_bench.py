"""RLM graphs on PostgreSQL; results go to benchmarks/results/postgres.json and postgres.md.

    python benchmarks/postgres_bench.py [--runs 12] [--latency 0.05] [--iterations 40]
    python benchmarks/postgres_bench.py --only bytes --label before   # on an older checkout (PYTHONPATH)

Starts a private PostgreSQL cluster (tests/pg_cluster.py) and measures, against a
scripted OpenAI-compatible server on 127.0.0.1 with a fixed latency per call:

- runs per second with 1, 2 and 4 worker processes (``python -m tests.pg_workers runs``),
  each on PostgresSaver + PostgresStore, all runs of a process one after another;
- checkpoint bytes added per super-step against the iteration number, with a 10 KB and
  a 1 MB context (everything the saver wrote for the thread: checkpoints, blobs, writes);
- resume cost: a fresh graph continuing a run stopped after N iterations (the
  checkpoint read, the context loaded from the store, the REPL rebuilt by replaying N cells).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import RESULTS  # noqa: E402
from sandbox import Completion  # noqa: E402

_BYTES_SQL = """
SELECT (SELECT coalesce(sum(octet_length(checkpoint::text) + octet_length(metadata::text)), 0)
          FROM checkpoints WHERE thread_id = %(t)s)
     + (SELECT coalesce(sum(octet_length(blob)), 0) FROM checkpoint_blobs WHERE thread_id = %(t)s)
     + (SELECT coalesce(sum(octet_length(blob)), 0) FROM checkpoint_writes WHERE thread_id = %(t)s)"""


class ScriptedRoot:
    """A root model in-process: ``iterations - 1`` cells that each make a sub-call and print,
    then ``FINAL``; ``fail_at`` raises at that iteration (to stop a run for the resume benchmark)."""

    model = "bench/root"

    def __init__(self, iterations: int, fail_at: int | None = None):
        self.replies = [f"```repl\nv{i} = llm_query('step {i}')\nprint(v{i} * 10)\n```" for i in range(iterations - 1)]
        self.replies.append("```repl\nFINAL(v0)\n```")
        self.fail_at = fail_at
        self.turn = 0

    async def acomplete(self, messages: list[dict[str, str]], *, max_tokens: int) -> Completion:
        turn = sum(m["role"] == "assistant" for m in messages)
        if self.fail_at is not None and turn + 1 >= self.fail_at:
            raise ConnectionError("the benchmark stops the run here")
        return Completion(text=self.replies[turn], prompt_tokens=1, completion_tokens=1)


class UpperSub:
    model = "bench/sub"

    async def acomplete(self, messages: list[dict[str, str]], *, max_tokens: int) -> Completion:
        return Completion(text=messages[-1]["content"].upper(), prompt_tokens=1, completion_tokens=1)


def _graph(root: Any, saver: Any, store: Any, iterations: int) -> Any:
    from rlm_graph import create_rlm_graph

    extra = {"store": store} if "store" in inspect.signature(create_rlm_graph).parameters else {}
    return create_rlm_graph(root, sub_model=UpperSub(), checkpointer=saver, max_iterations=iterations + 1,
                            look_before_answer=False, grounding=False, **extra)


def _postgres(url: str) -> tuple[Any, Any, Any]:
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.store.postgres import PostgresStore

    saver_cm, store_cm = PostgresSaver.from_conn_string(url), PostgresStore.from_conn_string(url)
    saver, store = saver_cm.__enter__(), store_cm.__enter__()
    saver.setup()
    store.setup()
    return saver, store, (saver_cm, store_cm)


def bytes_per_super_step(url: str, *, iterations: int, context_chars: int, thread: str) -> list[dict[str, Any]]:
    """Run one ``iterations``-long graph on PostgresSaver and return, per super-step, the node
    that ran, the iteration, and the bytes the saver added for the thread.

    Args:
        url: the database.
        iterations: root iterations of the run (the last one answers).
        context_chars: the context's length.
        thread: the thread id (one per call).

    Returns:
        ``{"step", "node", "iteration", "bytes"}`` per super-step.
    """
    import psycopg

    saver, store, managers = _postgres(url)
    try:
        graph = _graph(ScriptedRoot(iterations), saver, store, iterations)
        config = {"configurable": {"thread_id": thread}}
        steps, before = [], 0
        with psycopg.connect(url, autocommit=True) as conn:
            for step, update in enumerate(graph.stream({"query": "q", "context": "z" * context_chars}, config,
                                                       stream_mode="updates", durability="sync")):
                node = next(iter(update))
                total = conn.execute(_BYTES_SQL, {"t": thread}).fetchone()[0]
                values = update[node] if isinstance(update[node], dict) else {}
                steps.append({"step": step, "node": node, "iteration": values.get("iteration"),
                              "bytes": total - before})
                before = total
            steps.append({"step": len(steps), "node": "(last checkpoint)", "iteration": None,
                          "bytes": conn.execute(_BYTES_SQL, {"t": thread}).fetchone()[0] - before})
        return steps
    finally:
        for manager in managers:
            manager.__exit__(None, None, None)


def resume_seconds(url: str, *, iterations: int, context_chars: int, thread: str) -> float:
    """Seconds a fresh graph takes to continue a run stopped at its last iteration (no LM time)."""
    saver, store, managers = _postgres(url)
    try:
        config = {"configurable": {"thread_id": thread}}
        try:
            _graph(ScriptedRoot(iterations, fail_at=iterations), saver, store, iterations).invoke(
                {"query": "q", "context": "z" * context_chars}, config, durability="sync")
        except ConnectionError:
            pass
        fresh = _graph(ScriptedRoot(iterations), saver, store, iterations)
        began = time.perf_counter()
        out = fresh.invoke(None, config, durability="sync")
        seconds = time.perf_counter() - began
        assert out["answer"] == "STEP 0", out
        return round(seconds, 3)
    finally:
        for manager in managers:
            manager.__exit__(None, None, None)


def throughput(url: str, *, processes: int, runs: int, latency: float) -> dict[str, Any]:
    """Runs per second of ``processes`` workers doing ``runs`` graph runs each (3 LM calls a run)."""
    from tests.scripted_openai import ScriptedOpenAI

    script = ["```repl\na = llm_query('first ' + context[:5])\n```", "```repl\nFINAL(a)\n```"]
    with ScriptedOpenAI(script, latency=latency) as server:
        start_at = time.time() + 12.0 + 3.0 * processes  # after every worker has imported litellm
        workers = [subprocess.Popen([sys.executable, "-m", "tests.pg_workers", "runs", url, server.api_base,
                                     f"p{processes}-{i}", str(runs), str(start_at)], cwd=ROOT, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(processes)]
        results = []
        for worker in workers:
            out, err = worker.communicate(timeout=900)
            if worker.returncode != 0:
                raise RuntimeError(f"a worker failed: {err[-3000:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(a == "sub: first Notes" for r in results for a in r["answers"])
    wall = max(r["seconds"] for r in results)
    return {"processes": processes, "runs": processes * runs, "seconds": round(wall, 2),
            "runs_per_second": round(processes * runs / wall, 2), "lm_calls": len(server.requests)}


def _summary(steps: list[dict[str, Any]]) -> dict[str, Any]:
    loop = [s["bytes"] for s in steps if s["node"] in ("root_lm", "execute")]
    third = max(1, len(loop) // 3)
    return {"first_third_mean": round(statistics.mean(loop[:third])),
            "last_third_mean": round(statistics.mean(loop[-third:])), "total": sum(s["bytes"] for s in steps)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12, help="graph runs per worker process")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the scripted server takes per call")
    parser.add_argument("--iterations", type=int, default=40, help="iterations of the checkpoint-bytes run")
    parser.add_argument("--only", choices=("all", "bytes"), default="all")
    parser.add_argument("--label", default="after", help="the name of this measurement in the results")
    args = parser.parse_args(argv)
    from tests.pg_cluster import postgres_cluster

    results: dict[str, Any] = {"label": args.label}
    with postgres_cluster() as url, tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("RLM_CONTEXT_DIR", tmp)  # where an older checkout keeps contexts
        for chars in (10_000, 1_000_000):
            steps = bytes_per_super_step(url, iterations=args.iterations, context_chars=chars, thread=f"b{chars}")
            results[f"bytes_{chars}"] = {"summary": _summary(steps), "steps": steps}
        if args.only == "all":
            results["resume_seconds"] = {n: resume_seconds(url, iterations=n, context_chars=1_000_000,
                                                           thread=f"r{n}") for n in (5, 20, 40)}
            results["throughput"] = [throughput(url, processes=n, runs=args.runs, latency=args.latency)
                                     for n in (1, 2, 4)]
    results["settings"] = vars(args)
    name = "postgres" if args.label == "after" else f"postgres_{args.label}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(_markdown(results))
    return results


def _markdown(results: dict[str, Any]) -> str:
    lines = [f"# RLM graphs on PostgreSQL ({results['label']})", "",
             "Checkpoint bytes added per super-step (root_lm and execute steps):", "",
             "| context | first third, mean | last third, mean | whole run |", "| --- | --- | --- | --- |"]
    for chars in (10_000, 1_000_000):
        s = results[f"bytes_{chars}"]["summary"]
        lines.append(f"| {chars:,} chars | {s['first_third_mean']:,} | {s['last_third_mean']:,} | {s['total']:,} |")
    steps = results["bytes_10000"]["steps"]
    lines += ["", "Per super-step, 10,000-character context:", "", "| step | node | bytes |", "| --- | --- | --- |"]
    lines += [f"| {s['step']} | {s['node']} | {s['bytes']:,} |" for s in steps]
    if "throughput" in results:
        lines += ["", "Resume (a fresh graph continues a run stopped at iteration N; 1 MB context):", "",
                  "| N | seconds |", "| --- | --- |"]
        lines += [f"| {n} | {s} |" for n, s in results["resume_seconds"].items()]
        lines += ["", f"Throughput (scripted server, {results['settings']['latency']} s a call, 3 calls a run):", "",
                  "| processes | runs | seconds | runs/s | LM calls |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {t['processes']} | {t['runs']} | {t['seconds']} | {t['runs_per_second']} | {t['lm_calls']} |"
                  for t in results["throughput"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
