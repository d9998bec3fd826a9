"""Writing a benchmark's results: JSON for machines, a Markdown table for notes."""

from __future__ import annotations

import json
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
