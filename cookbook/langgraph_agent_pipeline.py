"""An RLM node inside a larger agent graph: router -> RLM over a long document -> summarizer.

    python cookbook/langgraph_agent_pipeline.py [--model openai/gpt-4o-mini] [--question ...]

Runs on the embedded local model unless --model names another.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TypedDict

from langgraph.graph import END, START, StateGraph

if not __package__:  # run as a file, from any directory: make this checkout's cookbook importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cookbook.demo import graph_models, long_document, model_arguments, parse_args
from rlm_graph import create_rlm_node
from sandbox import Budget


class AgentState(TypedDict, total=False):
    question: str
    document: str
    route: str
    finding: object
    rlm_details: dict
    reply: str


def build(root, sub, *, api_base: str | None = None):
    def router(state: AgentState) -> dict:
        needs_document = len(state.get("document", "")) > 0
        return {"route": "rlm" if needs_document else "summarize"}

    def summarize(state: AgentState) -> dict:
        details = state.get("rlm_details") or {}
        usage = details.get("usage") or {}
        return {"reply": f"Answer: {state.get('finding')} "
                         f"({details.get('iterations')} iterations, {usage.get('llm_calls')} LM calls)"}

    rlm = create_rlm_node(root, sub_model=sub, api_base=api_base, query_key="question", context_key="document",
                          output_key="finding", details_key="rlm_details", budget=Budget(max_llm_calls=60))
    builder = StateGraph(AgentState)
    builder.add_node("router", router)
    builder.add_node("rlm", rlm)
    builder.add_node("summarize", summarize)
    builder.add_edge(START, "router")
    builder.add_conditional_edges("router", lambda s: s["route"], ["rlm", "summarize"])
    builder.add_edge("rlm", "summarize")
    builder.add_edge("summarize", END)
    return builder.compile()


def main(argv: list[str] | None = None, *, model=None, sub_model=None) -> dict:
    """Run the pipeline; ``model`` and ``sub_model`` (any model ``create_rlm_node`` takes) replace
    the ones the command line names."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_arguments(parser)
    parser.add_argument("--question", default="What is the launch code for project Heron?")
    args = parse_args(parser, argv)
    root, sub = graph_models(args, model, sub_model)
    graph = build(root, sub, api_base=args.api_base)
    result = graph.invoke({"question": args.question, "document": long_document()})
    print(result["reply"])
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
