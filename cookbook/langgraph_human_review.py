"""Human review with interrupts and a SQLite checkpointer: approve each cell before it runs.

    python cookbook/langgraph_human_review.py [--db review.db] [--auto-approve] [--model ...]

Each pause is saved in SQLite; stop the program at a prompt and run it again with
the same --db and --thread to continue where you left off (even in a new process).
Runs on the embedded local model unless --model names another.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.store.sqlite import SqliteStore
from langgraph.types import Command

if not __package__:  # run as a file, from any directory: make this checkout's cookbook importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cookbook.demo import graph_models, long_document, model_arguments, parse_args
from rlm_graph import create_rlm_graph


def ask(payload: dict, auto_approve: bool) -> object:
    print(f"\n--- iteration {payload['iteration']}: the model wants to run ---\n{payload['code']}")
    if auto_approve:
        print("[auto-approved]")
        return True
    answer = input("run it? [y]es / [n]o (tell it why) / [e]dit: ").strip().lower()
    if answer.startswith("n"):
        return {"action": "reject", "feedback": input("why: ")}
    if answer.startswith("e"):
        return {"action": "edit", "code": input("replacement code (one line): ")}
    return True


def main(argv: list[str] | None = None, *, model=None, sub_model=None) -> dict:
    """Run (or resume) the reviewed run; ``model`` and ``sub_model`` (any model ``create_rlm_graph``
    takes) replace the ones the command line names."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_arguments(parser)
    parser.add_argument("--db", default=str(Path(tempfile.gettempdir()) / "rlm-review.db"))
    parser.add_argument("--thread", default="review-demo")
    parser.add_argument("--auto-approve", action="store_true", help="approve every cell (no prompts)")
    args = parse_args(parser, argv)
    root, sub = graph_models(args, model, sub_model)
    config = {"configurable": {"thread_id": args.thread}}
    with SqliteSaver.from_conn_string(args.db) as saver, SqliteStore.from_conn_string(args.db) as store:
        store.setup()
        graph = create_rlm_graph(root, sub_model=sub, api_base=args.api_base, checkpointer=saver, review="code",
                                 store=store)
        pending = graph.get_state(config).next
        step = graph.invoke(Command(resume=True), config) if pending else \
            graph.invoke({"query": "What is the launch code for project Heron?", "context": long_document()},
                         config)
        while "__interrupt__" in step:
            step = graph.invoke(Command(resume=ask(step["__interrupt__"][0].value, args.auto_approve)), config)
    print(f"\nanswer: {step['answer']}  (stop: {step['stop_reason']}, iterations: {step['iterations']})")
    return step


if __name__ == "__main__":
    main(sys.argv[1:])
