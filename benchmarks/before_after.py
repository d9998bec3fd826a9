"""The runtime benchmarks on an earlier commit and on this checkout, interleaved in one run.

    python benchmarks/before_after.py --before REV [--rounds 3] [--benches graph,dspy,sandbox] [--same-benchmarks]
        [--name before_after] [--bench-args "--long 310"]

Checks REV out into a temporary git worktree, then runs each benchmark script (``graph_bench.py``,
``dspy_bench.py``, ``sandbox_bench.py``) on REV and on this checkout in turn, ``--rounds`` times,
each in its own process with its own tree first on ``sys.path``. With ``--same-benchmarks`` REV's
tree gets this checkout's benchmark scripts first, so both sides are measured the same way (for a
benchmark that changed since REV: its metrics are compared only where both sides have them);
``--bench-args`` is passed to every benchmark script (e.g. longer runs).
Writes the median of each numeric result per side and their ratio to
benchmarks/results/NAME.{json,md}. The benchmarks' own result files are left as they were.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import RESULTS  # noqa: E402

BENCHES = {"graph": "graph_bench.py", "dspy": "dspy_bench.py", "sandbox": "sandbox_bench.py"}


def run_bench(tree: Path, name: str, args: Sequence[str] = ()) -> dict[str, Any]:
    """One run of benchmark ``name`` in ``tree`` with command-line ``args``: its results; ``tree``'s
    result files are put back."""
    files = [tree / "benchmarks" / "results" / f"{name}{suffix}" for suffix in (".json", ".md")]
    saved = {path: path.read_bytes() for path in files if path.exists()}
    try:
        subprocess.run([sys.executable, str(tree / "benchmarks" / BENCHES[name]), *args], cwd=tree,
                       env={**os.environ, "PYTHONPATH": str(tree)}, check=True, stdout=subprocess.DEVNULL,
                       timeout=1800)
        return json.loads(files[0].read_text())
    finally:
        for path in files:
            if path in saved:
                path.write_bytes(saved[path])
            else:
                path.unlink(missing_ok=True)


def summarize(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Per benchmark and metric: the median before and after, and after ÷ before."""
    table: dict[str, Any] = {}
    for name, sides in runs.items():
        for metric in sides["after"][0]:
            values = {side: [r[metric] for r in sides[side] if isinstance(r.get(metric), (int, float))
                             and not isinstance(r.get(metric), bool)] for side in ("before", "after")}
            if not values["before"] or not values["after"]:
                continue
            before, after = statistics.median(values["before"]), statistics.median(values["after"])
            table[f"{name}.{metric}"] = {"before": before, "after": after,
                                         "ratio": round(after / before, 3) if before else None}
    return table


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the earlier commit (any git revision)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--benches", default=",".join(BENCHES), help=f"from {', '.join(BENCHES)}")
    parser.add_argument("--same-benchmarks", action="store_true",
                        help="measure REV with this checkout's benchmark scripts")
    parser.add_argument("--name", default="before_after", help="the results' file name in benchmarks/results/")
    parser.add_argument("--bench-args", default="", help="arguments for every benchmark script, as one string")
    args = parser.parse_args(argv)
    names = args.benches.split(",")
    unknown = [name for name in names if name not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    base = Path(tempfile.mkdtemp(prefix="rlm-before-"))
    before = base / "tree"
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(before), args.before], cwd=ROOT, check=True)
    try:
        if args.same_benchmarks:
            for script in (ROOT / "benchmarks").glob("*.py"):
                shutil.copy2(script, before / "benchmarks" / script.name)
        runs = {name: {"before": [], "after": []} for name in names}
        for round_ in range(1, args.rounds + 1):
            for name in names:
                for side, tree in (("before", before), ("after", ROOT)):
                    runs[name][side].append(run_bench(tree, name, shlex.split(args.bench_args)))
                    print(f"round {round_}: {name} {side}", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False)
        shutil.rmtree(base, ignore_errors=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    table = summarize(runs)
    results = {"before": args.before, "after": commit.strip(), "rounds": args.rounds,
               "same_benchmarks": args.same_benchmarks, "bench_args": args.bench_args, "metrics": table}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# Before ({args.before}) and after ({commit.strip()}), medians of {args.rounds} interleaved rounds",
             "", f"`python benchmarks/before_after.py {shlex.join(argv if argv is not None else sys.argv[1:])}`", "",
             "| metric | before | after | after ÷ before |", "| --- | --- | --- | --- |"]
    lines += [f"| {metric} | {row['before']:g} | {row['after']:g} | {row['ratio']} |" for metric, row in table.items()]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
