"""The long-context suite's results: one run per case and engine, a summary per cell (task × length × engine),
written as JSON, a Markdown table and an SVG plot of accuracy against length with its spread over seeds."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ENGINES = ("graph", "dspy", "direct")
COLORS = {"graph": "#1f77b4", "dspy": "#2ca02c", "direct": "#d62728"}


@dataclass
class Run:
    """One engine's answer to one case, with what it cost."""

    task: str
    tokens: int
    seed: int
    engine: str
    score: float
    answer: str
    stop_reason: str
    llm_calls: int
    sub_calls: int
    total_tokens: int
    seconds: float
    overhead_ms_per_iteration: float | None


def _engine_order(engine: str) -> int:
    return ENGINES.index(engine) if engine in ENGINES else len(ENGINES)


def summarize(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per task × length × engine, over its seeds.

    Args:
        runs: the runs, any order.

    Returns:
        Rows sorted by task, length and engine, each with the mean accuracy and its spread (min, max and
        sample standard deviation; 0 for one seed), the median seconds, and the mean tokens, LM calls,
        sub-calls and per-iteration overhead.
    """
    rows = []
    for task, tokens, engine in sorted({(r.task, r.tokens, r.engine) for r in runs},
                                       key=lambda k: (k[0], k[1], _engine_order(k[2]))):
        group = [r for r in runs if (r.task, r.tokens, r.engine) == (task, tokens, engine)]
        scores = [r.score for r in group]
        overheads = [r.overhead_ms_per_iteration for r in group if r.overhead_ms_per_iteration is not None]
        rows.append({"task": task, "tokens": tokens, "engine": engine, "runs": len(group),
                     "accuracy": round(statistics.mean(scores), 3),
                     "accuracy_min": round(min(scores), 3), "accuracy_max": round(max(scores), 3),
                     "accuracy_stdev": round(statistics.stdev(scores), 3) if len(scores) > 1 else 0.0,
                     "median_seconds": round(statistics.median(r.seconds for r in group), 2),
                     "tokens_used": round(statistics.mean(r.total_tokens for r in group)),
                     "llm_calls": round(statistics.mean(r.llm_calls for r in group), 1),
                     "sub_calls": round(statistics.mean(r.sub_calls for r in group), 1),
                     "overhead_ms_per_iteration": round(statistics.mean(overheads), 2) if overheads else None})
    return rows


def _length(tokens: int) -> str:
    return f"{tokens // 1024}K" if tokens % 1024 == 0 else f"{tokens // 1000}K" if tokens >= 1000 else str(tokens)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The summary as a Markdown table, one line per cell."""
    lines = ["| task | length | engine | seeds | accuracy (min–max, sd) | median s | tokens | sub-calls | LM calls |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['task']} | {_length(r['tokens'])} | {r['engine']} | {r['runs']} | {r['accuracy']:.2f} "
              f"({r['accuracy_min']:.2f}–{r['accuracy_max']:.2f}, sd {r['accuracy_stdev']:.2f}) | "
              f"{r['median_seconds']:.1f} | {r['tokens_used']:,} | {r['sub_calls']} | {r['llm_calls']} |" for r in rows]
    return "\n".join(lines)


def svg_plot(rows: list[dict[str, Any]]) -> str:
    """Accuracy against context length, one panel per task, one line per engine, a bar for the min–max over seeds."""
    tasks = sorted({r["task"] for r in rows})
    lengths = sorted({r["tokens"] for r in rows})
    width, height, pad = 300, 220, 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width * len(tasks)}" height="{height + 30}" '
             'font-family="sans-serif" font-size="11">']
    for t, task in enumerate(tasks):
        x0 = t * width
        parts.append(f'<text x="{x0 + width / 2}" y="14" text-anchor="middle">{task}: accuracy vs tokens</text>')
        parts.append(f'<rect x="{x0 + pad}" y="20" width="{width - 2 * pad}" height="{height - pad - 20}" '
                     'fill="none" stroke="#999"/>')

        def xy(length: int, accuracy: float, x0: int = x0) -> tuple[float, float]:
            i = lengths.index(length)
            x = x0 + pad + (width - 2 * pad) * (i / max(1, len(lengths) - 1))
            return x, 20 + (height - pad - 20) * (1 - accuracy)

        for length in lengths:
            x, _ = xy(length, 0)
            parts.append(f'<text x="{x}" y="{height - pad + 14}" text-anchor="middle">{_length(length)}</text>')
        for engine, color in COLORS.items():
            cells = [r for r in rows if r["task"] == task and r["engine"] == engine]
            if not cells:
                continue
            points = [xy(r["tokens"], r["accuracy"]) for r in cells]
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
            parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in points)
            for r in cells:
                (x, low), (_, high) = xy(r["tokens"], r["accuracy_min"]), xy(r["tokens"], r["accuracy_max"])
                parts.append(f'<line x1="{x:.1f}" y1="{low:.1f}" x2="{x:.1f}" y2="{high:.1f}" stroke="{color}" '
                             'stroke-opacity="0.5" stroke-width="6"/>')
    legend = " ".join(f'<tspan fill="{c}">{e}</tspan>' for e, c in COLORS.items())
    parts.append(f'<text x="10" y="{height + 20}">{legend} (bars: min–max over seeds)</text></svg>')
    return "\n".join(parts)


def write(directory: Path, runs: list[Run], rows: list[dict[str, Any]]) -> str:
    """Write ``long_context.{json,md,svg}`` and ``long_context_runs.json`` to ``directory``; return the table.

    The JSON maps ``task/tokens/engine`` to the row's other fields.
    """
    directory.mkdir(parents=True, exist_ok=True)
    cells = {f"{r['task']}/{r['tokens']}/{r['engine']}": {k: v for k, v in r.items()
                                                          if k not in ("task", "tokens", "engine")} for r in rows}
    (directory / "long_context.json").write_text(json.dumps(cells, indent=2) + "\n")
    (directory / "long_context_runs.json").write_text(json.dumps([asdict(r) for r in runs], indent=2) + "\n")
    table = markdown_table(rows)
    (directory / "long_context.md").write_text(table + "\n")
    (directory / "long_context.svg").write_text(svg_plot(rows))
    return table
