"""Writing a benchmark's results: JSON for machines, a Markdown table for notes; and the
per-iteration cost of a loop measured as a slope, apart from its start-up."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, results: dict[str, Any], directory: Path = RESULTS) -> str:
    """Write ``<directory>/<name>.json`` and ``<name>.md``; return the table."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    table = "\n".join(["| metric | value |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in results.items()])
    (directory / f"{name}.md").write_text(table + "\n")
    return table


def per_iteration_and_startup(run: Callable[[int], float], *, short: int, long: int,
                              repeats: int) -> tuple[float, float]:
    """The marginal cost of one more iteration of a loop, and the cost of a run that does not grow
    with its iterations (start-up: a worker's start, the first and last steps), in milliseconds.

    Dividing one run's time by its iterations mixes the two; here runs of ``short`` and ``long``
    iterations alternate, ``repeats`` of each, and the slope between the medians of the two lengths
    is the per-iteration cost; the start-up is what the line leaves at zero iterations.

    Args:
        run: runs the loop for the given number of iterations; returns the seconds to count
            (e.g. its wall-clock time less the scripted LM's own).
        short: the iterations of the short runs.
        long: the iterations of the long runs (more than ``short``).
        repeats: how many runs of each length.

    Returns:
        ``(per_iteration_ms, startup_ms)``, rounded to microseconds.

    Raises:
        ValueError: ``long`` is not more than ``short``, or ``repeats`` is under 1.
    """
    if long <= short or repeats < 1:
        raise ValueError(f"need long > short and repeats >= 1, got short={short}, long={long}, repeats={repeats}")
    samples: dict[int, list[float]] = {short: [], long: []}
    for _ in range(repeats):
        for iterations in (short, long):
            samples[iterations].append(run(iterations))
    short_s, long_s = statistics.median(samples[short]), statistics.median(samples[long])
    slope = (long_s - short_s) / (long - short)
    return round(slope * 1000, 3), round((short_s - slope * short) * 1000, 3)
