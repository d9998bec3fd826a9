"""Context benchmarks: copies of the context at peak and ms per MB to the first cell.

    python benchmarks/context_bench.py [--sizes 1 10 100] [--repeats 3] [--before /tmp/before]

For each adapter and setting (``rlm_graph`` without a checkpointer, with ``InMemorySaver`` and
with ``SqliteSaver``; ``rlm_dspy.RLM``) and each context size, one run in a fresh process: an
instant root LM writes a cell that reads the context, then one that answers (so the grounding
check runs over the whole context, as it does for a user), and the run measures

- ``first_cell_ms``: from ``invoke``/``forward`` to the root LM's first call, after which the
  first cell starts (nothing but parsing lies between them);
- ``extra_copies``: the peak resident memory of the host (``VmHWM``, reset once the context is
  built) and of the worker (``VmHWM`` of each child process, sampled while it lives, less an
  empty worker's) above their start, divided by the context's size: the copies the run made.

``ms_per_mb`` is ``first_cell_ms`` from the smallest to the largest size, per MB between them.
With ``--before DIR`` (a checkout of an earlier commit) every measurement runs there too,
interleaved with this checkout's, so before and after come from one run. Medians of --repeats.
Results go to benchmarks/results/context.json and context.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("graph_none", "graph_memory", "graph_sqlite", "dspy")
MB = 1_000_000


def _status_kb(pid: int | str, field: str) -> int:
    """A ``/proc/<pid>/status`` field in kB (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


class ChildPeaks:
    """The highest ``VmHWM`` of every descendant of this process, sampled every millisecond."""

    def __init__(self) -> None:
        import psutil

        self._me = psutil.Process()
        self._command = self._me.cmdline()
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> ChildPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                children = self._me.children(recursive=True)
            except psutil.Error:
                children = []
            for child in children:
                try:
                    if child.cmdline() == self._command:
                        continue  # forked, not yet exec'd: its resident pages are the host's
                except psutil.Error:
                    continue
                kb = _status_kb(child.pid, "VmHWM")
                self.peaks[child.pid] = max(self.peaks.get(child.pid, 0), kb)
            time.sleep(0.001)

    def worst(self) -> int:
        return max(self.peaks.values(), default=0)


def _text(chars: int) -> str:
    """``chars`` characters of varied ASCII text with line breaks (what documents look like)."""
    line = "".join(f"record {i} holds value {i * 7 % 1000} for item-{i % 97}\n" for i in range(2000))
    return (line * (chars // len(line) + 1))[:chars]


def _graph_run(setting: str, context: str, workdir: Path) -> float:
    """One rlm_graph run over ``context``; seconds from invoke to the root LM's first call."""
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.checkpoint.sqlite import SqliteSaver

    from rlm_graph import create_rlm_graph
    from sandbox import Completion

    first: list[float] = []

    class Script:
        model = "bench/script"

        def __init__(self) -> None:
            self.replies = ["```repl\nn = len(context)\n```", "```repl\nprint(n)\nFINAL(n)\n```"]

        async def acomplete(self, messages, *, max_tokens):
            first.append(time.perf_counter())
            return Completion(text=self.replies.pop(0), prompt_tokens=1, completion_tokens=1)

    def invoke(checkpointer: Any) -> float:
        graph = create_rlm_graph(Script(), checkpointer=checkpointer)
        started = time.perf_counter()
        out = graph.invoke({"query": "how long?", "context": context}, {"configurable": {"thread_id": "t"}})
        getattr(graph, "close", lambda: None)()  # a --before tree may predate RLMGraph.close
        assert out["answer"] == len(context), out
        return first[0] - started

    if setting == "graph_sqlite":
        with SqliteSaver.from_conn_string(str(workdir / "cp.db")) as saver:
            return invoke(saver)
    return invoke(InMemorySaver() if setting == "graph_memory" else None)


def _dspy_run(context: str) -> float:
    """One rlm_dspy.RLM run over ``context``; seconds from forward to the root LM's first call."""
    import dspy

    from rlm_dspy import RLM

    try:
        from tests.dspy_lms import function_lm, stepwise_rlm_reply, text_lm
    except ImportError:  # a --before checkout from when the scripted LMs lived in the cookbook
        from cookbook.demo_dspy import function_lm, stepwise_rlm_reply, text_lm

    first: list[float] = []
    reply = stepwise_rlm_reply(["n = len(context)", "print(n)\nSUBMIT(answer=str(n))"])

    def timed(messages):
        first.append(time.perf_counter())
        return reply(messages)

    module = RLM("context, query -> answer", max_iters=4, sub_lm=text_lm(str.upper))
    started = time.perf_counter()
    with dspy.context(lm=function_lm(timed, model="bench/root")):
        out = module(context=context, query="how long?")
    assert str(out.answer) == str(len(context)), out
    return first[0] - started


def _run(setting: str, chars: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        return _dspy_run(_text(chars)) if setting == "dspy" else _graph_run(setting, _text(chars), Path(tmp))


def measure_one(setting: str, chars: int) -> dict[str, float]:
    """In this (fresh) process: a warm-up run over a tiny context, then the measured one."""
    with ChildPeaks() as empty:
        _run(setting, 2000)  # imports, caches; an empty worker's peak
    context = _text(chars)  # ASCII: one byte a character, in the host's str and the worker's
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS: the peak from here on
    host_start = _status_kb("self", "VmRSS")
    with ChildPeaks() as workers:
        with tempfile.TemporaryDirectory() as tmp:
            seconds = _dspy_run(context) if setting == "dspy" else _graph_run(setting, context, Path(tmp))
    host = (_status_kb("self", "VmHWM") - host_start) * 1024
    worker = max(0, workers.worst() - empty.worst()) * 1024
    return {"first_cell_ms": seconds * 1000, "host_copies": host / chars,
            "worker_copies": worker / chars, "extra_copies": (host + worker) / chars}


def _in_process(root: Path, setting: str, chars: int) -> dict[str, float]:
    """:func:`measure_one` in a fresh interpreter importing the packages from ``root``."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    code = (f"import sys, json, runpy; sys.path.insert(0, {str(root)!r}); "
            f"bench = runpy.run_path({__file__!r}); "
            f"print(json.dumps(bench['measure_one']({setting!r}, {chars})))")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{setting} {chars} at {root} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100], help="context sizes, MB")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    parser.add_argument("--before", type=Path, help="a checkout of an earlier commit, measured interleaved")
    args = parser.parse_args()
    roots = {"after": ROOT, **({"before": args.before.resolve()} if args.before else {})}
    samples: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    for _ in range(args.repeats):
        for setting in args.settings:
            for size in args.sizes:
                for label, root in roots.items():
                    samples.setdefault((label, setting, size), []).append(_in_process(root, setting, size * MB))
    sys.path.insert(0, str(ROOT))
    from benchmarks.report import write_results

    results: dict[str, Any] = {"sizes_mb": args.sizes, "repeats": args.repeats}
    lo, hi = min(args.sizes), max(args.sizes)
    for label in roots:
        for setting in args.settings:
            median = {size: {key: statistics.median(s[key] for s in samples[(label, setting, size)])
                             for key in samples[(label, setting, size)][0]} for size in args.sizes}
            prefix = f"{label}_{setting}"
            for size in args.sizes:
                results[f"{prefix}_first_cell_ms_{size}mb"] = round(median[size]["first_cell_ms"], 1)
                results[f"{prefix}_extra_copies_{size}mb"] = round(median[size]["extra_copies"], 2)
                results[f"{prefix}_host_copies_{size}mb"] = round(median[size]["host_copies"], 2)
                results[f"{prefix}_worker_copies_{size}mb"] = round(median[size]["worker_copies"], 2)
            if hi > lo:
                results[f"{prefix}_ms_per_mb"] = round(
                    (median[hi]["first_cell_ms"] - median[lo]["first_cell_ms"]) / (hi - lo), 2)
    print(write_results("context", results))


if __name__ == "__main__":
    main()
