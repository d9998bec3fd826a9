"""A follow-up question against the first over a 40 MB context: time to the first cell of each turn.

Both adapters, a zero-latency scripted root LM whose every turn runs one cell and answers. Timed:
from the call (``graph.invoke`` on the thread / ``session(query=...)``) to the start of the turn's
first cell. Turn 1 loads the context (into the graph's store and the REPL's worker); turn 2 reuses
the loaded REPL (LangGraph: the live REPL the graph keeps for the thread; DSPy: the RLMSession's).

Run: ``python -m benchmarks.session_bench [--mb 40] [--repeats 3]``; writes
``benchmarks/results/session.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import dspy
from langgraph.checkpoint.memory import InMemorySaver

from rlm_dspy import RLM
from rlm_graph import create_rlm_graph
from sandbox import Completion
from tests.dspy_lms import fields, function_lm

RESULTS = Path(__file__).resolve().parent / "results"
CELL = "print(len(context))"


class FirstCell:
    """A trajectory listener noting when the turn's first cell started (its event comes at its end)."""

    def __init__(self) -> None:
        self.began = time.perf_counter()
        self.first: float | None = None

    def __call__(self, event: dict) -> None:
        if event.get("kind", event.get("type")) == "cell" and self.first is None:
            self.first = time.perf_counter() - self.began - event["seconds"]


class ScriptedRoot:
    """Root and sub-model at once: one cell, then FINAL, each turn."""

    model = "bench/scripted"

    async def acomplete(self, messages, *, max_tokens):
        done = any(m["role"] == "assistant" for m in messages)
        text = "FINAL(done)" if done else f"Look.\n```repl\n{CELL}\n```"
        return Completion(text=text, prompt_tokens=50, completion_tokens=20, model=self.model)


def graph_turns(context: str) -> tuple[float, float]:
    """Seconds to the first cell of turn 1 and of the follow-up, on one thread."""
    graph = create_rlm_graph(ScriptedRoot(), checkpointer=InMemorySaver(), look_before_answer=False,
                             grounding=False)
    config = {"configurable": {"thread_id": "bench"}}
    times = []
    for payload in ({"query": "how long?", "context": context}, {"query": "and again?"}):
        timer = FirstCell()
        for event in graph.stream(payload, config, stream_mode="custom"):
            timer(event)
        times.append(timer.first)
    graph.close()
    return times[0], times[1]


def dspy_turns(context: str) -> tuple[float, float]:
    """Seconds to the first cell of the first question and of the follow-up, in one RLMSession."""
    def reply(messages):
        done = "FINAL:" in str(messages[-1])
        return fields(reasoning="r", code="```python\nSUBMIT('done')\n```" if done else f"```python\n{CELL}\n```")

    timer = FirstCell()
    rlm = RLM("context, query -> answer", on_event=lambda event: timer(event), look_before_answer=False,
              grounding=False)
    times = []
    with dspy.context(lm=function_lm(reply, model="bench/root")):
        timer.began = time.perf_counter()
        with rlm.session(context=context) as session:
            for query in ("how long?", "and again?"):
                if times:
                    timer.__init__()
                session(query=query)
                times.append(timer.first)
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    context = ("The quick brown fox jumps over the lazy dog. " * (args.mb * 2 ** 20 // 45 + 1))[:args.mb * 2 ** 20]
    result: dict = {"context_mb": args.mb, "repeats": args.repeats}
    for name, turns in (("langgraph", graph_turns), ("dspy", dspy_turns)):
        turns("warm-up: imports, the first worker")
        firsts, follow_ups = zip(*(turns(context) for _ in range(args.repeats)))
        result[name] = {"turn_1_first_cell_s": round(statistics.median(firsts), 3),
                        "turn_2_first_cell_s": round(statistics.median(follow_ups), 3)}
        result[name]["speedup"] = round(result[name]["turn_1_first_cell_s"] / result[name]["turn_2_first_cell_s"], 1)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "session.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = "\n".join(f"| {name} | {r['turn_1_first_cell_s']} | {r['turn_2_first_cell_s']} | {r['speedup']}x |"
                     for name, r in result.items() if isinstance(r, dict))
    (RESULTS / "session.md").write_text(
        f"# Follow-up questions: time to the first cell\n\nA {args.mb} MB context, a zero-latency scripted root LM; "
        f"medians of {args.repeats} runs. Turn 1 loads the context; turn 2 (a follow-up on the same thread / "
        "RLMSession) reuses the loaded REPL. `python -m benchmarks.session_bench`\n\n"
        f"| adapter | turn 1 (s) | turn 2 (s) | turn 1 / turn 2 |\n|---|---|---|---|\n{rows}\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
