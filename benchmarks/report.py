"""Writing a benchmark's results: JSON for machines, a Markdown table for notes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, results: dict[str, Any]) -> str:
    """Write ``results/<name>.json`` and ``results/<name>.md``; return the table."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    table = "\n".join(["| metric | value |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in results.items()])
    (RESULTS / f"{name}.md").write_text(table + "\n")
    return table
