"""Fan-out and cold start beside the anchors (rlms, stock dspy.RLM); results go to
benchmarks/results/anchors.json and anchors.md.

    python benchmarks/anchors_bench.py [--before main] [--repeats 3] [--latency 0.1]

Every system runs against one scripted OpenAI-compatible server on 127.0.0.1
(:mod:`benchmarks.latency_server`, ``--latency`` seconds per call, in its own process), in a
fresh process per measurement (:mod:`benchmarks.fanout_runner`). The anchors (``rlms`` and
``dspy`` from PyPI, pinned below) run in a virtual environment of their own, created under
``--cache`` on first use. ``--before REF`` also runs this project as of the git ref ``REF``
(exported with ``git archive``), interleaved with the working tree, for before/after ratios
from one run: the machine may be shared and noisy, so only ratios from one run compare.

Rows: wall ÷ ideal for ``--n`` sub-calls at concurrency 16, at each system's default, and at
64 (ideal: two root calls plus ``ceil(n / concurrency)`` rounds, each ``--latency``); the first
run in a fresh process (imports included) and a warm one; and for ``rlm ask`` with a remote
model string, the seconds from process start to the first LM request reaching the server.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import write_results  # noqa: E402

ANCHORS = ("rlms==0.1.3", "dspy==3.4.1")
DEFAULT_CONCURRENCY = {"graph": 8, "dspy": 8, "dspy_stock": 8, "rlms": 16}  # each system's own default
RUNNER = Path(__file__).resolve().parent / "fanout_runner.py"
SERVER = Path(__file__).resolve().parent / "latency_server.py"


def anchors_python(cache: Path) -> Path:
    """The anchors' interpreter, in ``cache/venv``: created and filled from PyPI when missing."""
    python = cache / "venv" / "bin" / "python"
    stamp = cache / "venv" / "anchors.txt"
    if not python.is_file() or not stamp.is_file() or stamp.read_text() != "\n".join(ANCHORS):
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(cache / "venv")], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *ANCHORS], check=True)
        stamp.write_text("\n".join(ANCHORS))
    return python


def export_tree(ref: str, cache: Path) -> Path:
    """This repository as of ``ref``, exported once under ``cache``."""
    sha = subprocess.run(["git", "rev-parse", ref], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
    tree = cache / f"tree-{sha[:12]}"
    if not (tree / "sandbox").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


class Server:
    """The scripted server in its own process."""

    def __init__(self, latency: float):
        self.process = subprocess.Popen([sys.executable, str(SERVER), "--latency", str(latency)],
                                        stdout=subprocess.PIPE, text=True)
        self.api_base = self.process.stdout.readline().strip()  # type: ignore[union-attr]

    def log(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.api_base}/log") as response:
            return json.loads(response.read())

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.api_base}/reset", data=b"{}", method="POST")).close()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def fanout(python: Path, system: str, tree: Path | None, server: Server, n: int, concurrency: int,
           repeats: int) -> dict[str, Any]:
    """One runner process: its first run (from process start) and ``repeats`` warm runs."""
    command = [str(python), str(RUNNER), "--system", system, "--api-base", server.api_base, "--n", str(n),
               "--concurrency", str(concurrency), "--repeats", str(repeats), "--t0", repr(time.time())]
    if tree is not None:
        command += ["--tree", str(tree)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=tree or ROOT, timeout=900)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if set(result["answers"]) != {str(n)}:
        raise RuntimeError(f"{system} answered {result['answers']}, not {n}")
    return result


def cold_ask(tree: Path, server: Server, context: Path) -> dict[str, float]:
    """``rlm ask`` on ``openai/<name>`` at the server: process start to first request, and to exit."""
    server.reset()
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.time()
    subprocess.run([sys.executable, "-m", "sandbox.app.cli", "ask", "How many answers came back?", "--context",
                    str(context), "--model", "openai/repl-cold-8", "--api-base", server.api_base, "--quiet"],
                   cwd=tree, env=env, check=True, capture_output=True, timeout=300)
    total = time.time() - started
    return {"first_request_s": min(entry["t"] for entry in server.log()) - started, "total_s": total}


def ideal_s(n: int, concurrency: int, latency: float) -> float:
    return (2 + math.ceil(n / concurrency)) * latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="also run this project as of this git ref (e.g. main)")
    parser.add_argument("--repeats", type=int, default=3, help="warm runs per process, and processes per cold row")
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--n", type=int, default=256, help="sub-calls in the fan-out")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "rlm-anchors")
    parser.add_argument("--name", default="anchors", help="results file name under benchmarks/results/")
    args = parser.parse_args()
    anchors = anchors_python(args.cache)
    trees = {"": ROOT} | ({f"@{args.before}": export_tree(args.before, args.cache)} if args.before else {})
    systems = [("rlms", anchors, None), ("dspy_stock", anchors, None)]
    systems += [(f"{name}{label}", Path(sys.executable), tree) for label, tree in trees.items() for name in ("graph", "dspy")]
    server = Server(args.latency)
    results: dict[str, Any] = {"n": args.n, "latency_s": args.latency, "repeats": args.repeats,
                               "cpus": os.cpu_count(), "load_average_at_start": round(os.getloadavg()[0], 2)}
    try:
        for setting in ("16", "default", "64"):
            for label, python, tree in systems:  # one system after the other, so that noise spreads over all
                system = label.split("@")[0]
                concurrency = DEFAULT_CONCURRENCY[system] if setting == "default" else int(setting)
                run = fanout(python, system, tree, server, args.n, 0 if setting == "default" else concurrency,
                             args.repeats)
                warm = statistics.median(run["warm_s"])
                results[f"fanout c={setting} {label}: wall / ideal"] = round(warm / ideal_s(args.n, concurrency,
                                                                                          args.latency), 3)
                if setting == "default":
                    results[f"default concurrency {label}"] = concurrency
                    results[f"first run in a fresh process {label}: total s"] = round(run["cold_s"], 2)
                    results[f"warm run {label}: s"] = round(warm, 2)
                    results[f"first run / warm run {label}"] = round(run["cold_s"] / warm, 2)
        with tempfile.TemporaryDirectory() as tmp:
            context = Path(tmp) / "context.txt"
            context.write_text("alpha beta gamma delta\n" * 200)
            for label, tree in trees.items():
                runs = [cold_ask(tree, server, context) for _ in range(args.repeats)]
                name = label or "(this tree)"
                results[f"rlm ask {name}: process start to first LM request s"] = round(
                    statistics.median(r["first_request_s"] for r in runs), 2)
                results[f"rlm ask {name}: total s"] = round(statistics.median(r["total_s"] for r in runs), 2)
    finally:
        server.close()
    print(write_results(args.name, results))


if __name__ == "__main__":
    main()
