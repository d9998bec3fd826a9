"""Which worked examples the root prompt should carry, measured on the embedded model.

    python benchmarks/worked_examples.py [--trials 3] [--variants shipped,several]

A small model learns the REPL protocol from the root prompt's worked examples, and copies them:
their code whatever the query, their values as its answer. This runs the graph engine with the
embedded model (root and sub-calls) on three kinds of lookup, each with a fresh document or
sampling per trial, for each set of examples, interleaved so drift on a shared machine hits
all alike:

- ``demo``: ``bash .ci/demo``'s question on its 400,000-character document;
- ``code``: a launch code in 16K tokens of filler (``sandbox.app.bench.tasks.niah``), a new one per trial;
- ``date``: a date stated once, the shape of the lookup example, so copying its date shows.

Each run is scored right (the truth in the answer), copied (the answer holds a value of the
examples that the document does not) or wrong. Results: ``benchmarks/results/worked_examples.json``
and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import RESULTS  # noqa: E402
from cookbook.demo import NEEDLE, long_document  # noqa: E402
from rlm_graph import create_rlm_graph  # noqa: E402
from sandbox.app.bench.tasks import _filler, _lines, niah  # noqa: E402
from sandbox.engine import prompts  # noqa: E402
from sandbox.lm.local import local_endpoint  # noqa: E402

# The alternative to what sandbox.engine.prompts ships: several examples of different shapes, marked
# as made up, with the shipped lookup example last (nearest the query).
SEVERAL_MARK = "Worked examples"
SEVERAL = SEVERAL_MARK + ''' follow. Their queries, data and answers are made up to show the method: none of \
their names or values is in your context, and their answers are not yours.

Example 1 (a count over the whole context):
user: Query: How many of the support tickets are about refunds?
`context` is a str of 2,400,000 characters (61,002 lines).
assistant: Every ticket counts, so I ask about every chunk of the context at once and add the answers up in code.
```repl
counts = llm_map("How many tickets in this text are about refunds? Answer with one number.")
print(len(counts), counts[:5])
```
user: REPL output:
600 [0, 2, 1, 0, 3]
assistant: I add them up in code, not in my head.
```repl
total = sum(c for c in counts if isinstance(c, int))
print(total)
FINAL(total)
```

Example 2 (the first look finds nothing):
user: Query: Who signed the Lumen lease?
`context` is a str of 48,210 characters (903 lines).
assistant: I look for lines with the name from the query.
```repl
hits = [line for line in context.splitlines() if "lumen" in line.lower()]
print(len(hits))
```
user: REPL output:
0
assistant: No line has the name; search ranks passages by all the words of the query.
```repl
passages = search("Lumen lease signed", k=3)
for p in passages:
    print(p["offset"], p["text"][:200])
```
user: REPL output:
20311 The lease of the Lumen building was signed by Dana Ortiz for the tenant.
3120 Leases are reviewed every spring.
assistant: The first passage states it; I ask llm_query to read around it and finish.
```repl
start = passages[0]["offset"]
answer = llm_query("Answer briefly. Who signed the Lumen lease? Text: " + context[start:start + 1500])
print(answer)
FINAL(answer)
```

Example 3 (a fact stated in one place):
''' + prompts.EXAMPLES.split(":\n\n", 1)[1] + '''

End of the examples. Your own query comes next: answer it from your `context` only.'''
SEVERAL_VALUES = (*prompts.EXAMPLE_VALUES, "Lumen", "Dana Ortiz", "20311")

# The shipped example under a header that says it is made up.
MARKED = prompts.EXAMPLES.replace(prompts.EXAMPLES_MARK + ":", prompts.EXAMPLES_MARK + " (a made-up query and made-up "
                                  "data: it shows the method; its names, values and answer are not in your context):", 1)

VARIANTS = {"shipped": (prompts.EXAMPLES, prompts.EXAMPLE_VALUES), "several": (SEVERAL, SEVERAL_VALUES),
            "marked": (MARKED, prompts.EXAMPLE_VALUES)}


@dataclass(frozen=True)
class Lookup:
    kind: str
    question: str
    document: str
    truth: tuple[str, ...]  # every one must be in a right answer (a date's day, month and year, in any order)


def lookups(trial: int) -> list[Lookup]:
    """The three lookups of one trial; ``code`` and ``date`` are new documents each trial."""
    code = niah(16_384, seed=trial)
    rng = random.Random(trial)
    project = rng.choice(["Orion", "Vega", "Lyra", "Draco"])
    day, month, year = rng.randint(1, 28), rng.choice(["March", "July", "October"]), rng.randint(2015, 2023)
    lines = _lines(16_384, lambda _: _filler(rng))
    lines.insert(rng.randrange(len(lines) + 1), f"The {project} office moved to its new site on {day} {month} {year}.")
    return [Lookup("demo", "What is the launch code for project Heron?", long_document(),
                   (NEEDLE.split()[-1].strip("."),)),
            Lookup("code", code.question, code.context, (str(code.truth),)),
            Lookup("date", f"When did the {project} office move to its new site?", "\n".join(lines),
                   (str(day), month, str(year)))]


def score(lookup: Lookup, answer: Any, example_values: tuple[str, ...]) -> str:
    """``right``, ``copied`` (an example's value the document does not hold) or ``wrong``."""
    text = "" if answer is None else str(answer)
    if all(re.search(rf"(?<![\w]){re.escape(part)}(?![\w])", text, re.IGNORECASE) for part in lookup.truth):
        return "right"
    if any(value in text and value not in lookup.document for value in example_values):
        return "copied"
    return "wrong"


def run_once(graph: Any, lookup: Lookup, examples: str, values: tuple[str, ...]) -> dict[str, Any]:
    prompts.EXAMPLES = examples  # root_system_prompt reads it when the run starts
    started = time.perf_counter()
    out = graph.invoke({"query": lookup.question, "context": lookup.document})
    return {"kind": lookup.kind, "answer": out.get("answer"), "stop_reason": out["stop_reason"],
            "iterations": out["iterations"], "seconds": round(time.perf_counter() - started, 1),
            "score": score(lookup, out.get("answer"), values)}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    scores = [r["score"] for r in runs]
    return {"runs": len(runs), "right": scores.count("right"), "copied": scores.count("copied"),
            "wrong": scores.count("wrong"), "median_s": statistics.median(r["seconds"] for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--max-iterations", type=int, default=8)
    parser.add_argument("--out", default="worked_examples", help="results name under benchmarks/results/")
    args = parser.parse_args()
    names = args.variants.split(",")
    model, api_base, api_key = local_endpoint(notify=print)
    graph = create_rlm_graph(model, api_base=api_base, api_key=api_key, max_iterations=args.max_iterations)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for trial in range(args.trials):
        for lookup in lookups(trial):
            for name in names:
                run = run_once(graph, lookup, *VARIANTS[name])
                runs[name].append({"trial": trial, **run})
                print(json.dumps({"variant": name, "trial": trial, **run}), flush=True)
    results = {"trials": args.trials, "max_iterations": args.max_iterations,
               "variants": {name: {"all": summary(rs), **{kind: summary([r for r in rs if r["kind"] == kind])
                                                          for kind in ("demo", "code", "date")}}
                            for name, rs in runs.items()},
               "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(results, indent=2) + "\n")
    rows = [f"| {name} | {kind} | {s['runs']} | {s['right']} | {s['copied']} | {s['wrong']} | {s['median_s']} |"
            for name, by_kind in results["variants"].items() for kind, s in by_kind.items()]
    (RESULTS / f"{args.out}.md").write_text(
        "# Worked examples in the root prompt, on the embedded model\n\n"
        f"`python benchmarks/worked_examples.py --trials {args.trials} --variants {args.variants} --out {args.out}`; "
        "graph engine, "
        f"max_iterations {args.max_iterations}.\n\n"
        "| examples | lookup | runs | right | copied | wrong | median s |\n|---|---|---|---|---|---|---|\n"
        + "\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
