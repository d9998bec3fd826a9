"""A live progress display from the RLM's custom stream: iterations, cells, sub-calls, tokens.

    python -m cookbook.langgraph_streaming_progress [--model ...]
"""

from __future__ import annotations

import argparse
import sys
import time

from cookbook.demo import NEEDLE_CELLS, long_document, model_arguments, models
from rlm_graph import create_rlm_graph


class Progress:
    """Folds stream events into one status line; prints cells and the final answer."""

    def __init__(self, out=None):
        self.out = out or sys.stdout
        self.started = time.monotonic()
        self.iteration = self.sub_calls = self.tokens = 0
        self.events: list[dict] = []

    def __call__(self, event: dict) -> None:
        self.events.append(event)
        kind = event["type"]
        if kind == "iteration" and event["depth"] == 0:
            self.iteration = event["iteration"]
        elif kind == "sub_call":
            self.sub_calls += 1
            self.tokens += event.get("prompt_tokens", 0) + event.get("completion_tokens", 0)
        elif kind == "lm_call":
            self.tokens += event.get("prompt_tokens", 0) + event.get("completion_tokens", 0)
        elif kind == "cell":
            status = event["error"].splitlines()[-1] if event["error"] else "ok"
            self.out.write(f"\n  cell ({event['seconds']:.2f}s): {status}\n")
        elif kind == "final":
            self.out.write(f"\nanswer: {event['answer']}  (stop: {event['stop_reason']})\n")
            return
        self.out.write(f"\r[iteration {self.iteration} | sub-calls {self.sub_calls} | tokens {self.tokens} | "
                       f"{time.monotonic() - self.started:5.1f}s]")
        self.out.flush()


def main(argv: list[str] | None = None) -> Progress:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_arguments(parser)
    args = parser.parse_args(argv)
    root, sub = models(args, *NEEDLE_CELLS)
    graph = create_rlm_graph(root, sub_model=sub, api_base=args.api_base)
    progress = Progress()
    for event in graph.stream({"query": "What is the launch code for project Heron?", "context": long_document()},
                              stream_mode="custom"):
        progress(event)
    return progress


if __name__ == "__main__":
    main(sys.argv[1:])
