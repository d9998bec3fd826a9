"""A live progress display from the RLM's custom stream: iterations, cells, sub-calls, tokens.

    python cookbook/langgraph_streaming_progress.py [--model ...]

Runs on the embedded local model unless --model names another.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if not __package__:  # run as a file, from any directory: make this checkout's cookbook importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cookbook.demo import graph_models, long_document, model_arguments, parse_args
from rlm_graph import create_rlm_graph
from sandbox.app.progress import ProgressDisplay


def main(argv: list[str] | None = None, *, model=None, sub_model=None) -> ProgressDisplay:
    """Stream one run to a progress display; ``model`` and ``sub_model`` (any model
    ``create_rlm_graph`` takes) replace the ones the command line names."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_arguments(parser)
    args = parse_args(parser, argv)
    root, sub = graph_models(args, model, sub_model)
    graph = create_rlm_graph(root, sub_model=sub, api_base=args.api_base)
    progress = ProgressDisplay()
    for event in graph.stream({"query": "What is the launch code for project Heron?", "context": long_document()},
                              stream_mode="custom"):
        progress(event)
    return progress


if __name__ == "__main__":
    main(sys.argv[1:])
