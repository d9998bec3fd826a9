"""The long-context suite: the same model as an RLM (graph and dspy engines) and called directly.

    rlm bench [--quick] [--tasks niah,oolong,pairs] [--lengths 8000,131072] [--engines graph,dspy,direct]
              [--model M --api-base URL]            # default: the embedded local model

Tasks (seeded generators, exact scoring):
- niah: one needle sentence in filler; score 1 if the answer contains the number.
- oolong: labelled records; "how many records have label X?"; score 1 for the exact count.
- pairs: records with a user and a city; "which users share a city with user U?";
  score = set F1 of the user ids in the answer against the truth.
"direct" sends the context truncated to the model's window. Writes
benchmarks/results/long_context.{json,md,svg}.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import RESULTS, write_results  # noqa: E402
from sandbox.cli import Endpoint, model_endpoint  # noqa: E402

CHARS_PER_TOKEN = 4
FILLER = ("report quarterly revenue team meeting schedule budget review vendor contract shipment office "
          "policy travel invoice supplier warehouse forecast audit").split()
LABELS = ("billing", "shipping", "refund", "account", "outage")
CITIES = ("Lyon", "Oslo", "Quito", "Perth", "Dakar", "Hanoi", "Cusco", "Turku")


@dataclass(frozen=True)
class Case:
    task: str
    tokens: int
    seed: int
    question: str
    context: str
    truth: Any


def _filler(rng: random.Random) -> str:
    return " ".join(rng.choice(FILLER) for _ in range(12)).capitalize() + "."


def niah(tokens: int, seed: int) -> Case:
    rng = random.Random(seed)
    name, number = rng.choice(["Heron", "Kestrel", "Osprey", "Plover"]), rng.randint(1000, 9999)
    lines = [_filler(rng) for _ in range(tokens * CHARS_PER_TOKEN // 80)]
    lines.insert(rng.randrange(len(lines) + 1), f"The launch code for project {name} is {number}.")
    return Case("niah", tokens, seed, f"What is the launch code for project {name}?", "\n".join(lines), number)


def oolong(tokens: int, seed: int) -> Case:
    rng = random.Random(seed)
    label = rng.choice(LABELS)
    records = [f"Record {i}: label: {rng.choice(LABELS)} | note: {_filler(rng)}"
               for i in range(tokens * CHARS_PER_TOKEN // 90)]
    count = sum(f"label: {label} |" in record for record in records)
    return Case("oolong", tokens, seed, f"How many records have the label {label}? Answer with a number.",
                "\n".join(records), count)


def pairs(tokens: int, seed: int) -> Case:
    rng = random.Random(seed)
    n = max(8, tokens * CHARS_PER_TOKEN // 90)
    users = {user: rng.choice(CITIES) for user in range(100, 100 + n)}
    target = rng.choice(list(users))
    truth = sorted(u for u, city in users.items() if city == users[target] and u != target)
    records = [f"User {u} lives in {city}. {_filler(rng)}" for u, city in users.items()]
    return Case("pairs", tokens, seed, f"Which users live in the same city as user {target}? List their numbers.",
                "\n".join(records), truth)


TASKS: dict[str, Callable[[int, int], Case]] = {"niah": niah, "oolong": oolong, "pairs": pairs}


def score(case: Case, answer: Any) -> float:
    text = str(answer or "")
    numbers = [int(n) for n in re.findall(r"\d+", text)]
    if case.task == "niah":
        return float(case.truth in numbers)
    if case.task == "oolong":
        return float(bool(numbers) and numbers[0] == case.truth)
    found, truth = set(numbers) - {int(re.search(r"user (\d+)", case.question).group(1))}, set(case.truth)
    if not found or not truth:
        return float(found == truth)
    hits = len(found & truth)
    precision, recall = hits / len(found), hits / len(truth)
    return 0.0 if hits == 0 else 2 * precision * recall / (precision + recall)


@dataclass
class Run:
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


def _overhead(events: list[dict[str, Any]], seconds: float, iterations: int) -> float | None:
    lm = sum(e.get("seconds", 0) for e in events if e["kind"] == "lm_call")
    cells = sum(e.get("seconds", 0) for e in events if e["kind"] == "cell")
    return round((seconds - lm - cells) / iterations * 1000, 2) if iterations else None


def run_graph(case: Case, endpoint: Endpoint, max_iterations: int) -> Run:
    from rlm_graph import create_rlm_graph
    from sandbox import Budget

    graph = create_rlm_graph(endpoint.model, sub_model=endpoint.sub_model, api_base=endpoint.api_base,
                             api_key=endpoint.api_key, max_iterations=max_iterations, budget=Budget(max_seconds=300))
    started = time.monotonic()
    out = graph.invoke({"query": case.question, "context": case.context})
    seconds = time.monotonic() - started
    events = out["trajectory"]["events"]
    return Run(case.task, case.tokens, case.seed, "graph", score(case, out["answer"]), str(out["answer"])[:200],
               out["stop_reason"], out["usage"]["llm_calls"], sum(e["kind"] == "sub_call" for e in events),
               out["usage"]["tokens"], round(seconds, 2), _overhead(events, seconds, out["iterations"]))


def run_dspy(case: Case, endpoint: Endpoint, max_iterations: int) -> Run:
    import dspy

    from rlm_dspy import RLM
    from sandbox import Budget

    def lm(model: str) -> dspy.LM:
        return dspy.LM(model, api_base=endpoint.api_base, api_key=endpoint.api_key, engine="litellm",
                       max_tokens=512, cache=False)

    rlm = RLM("context, question -> answer", max_iters=max_iterations, sub_lm=lm(endpoint.sub_model),
              budget=Budget(max_seconds=300))
    started = time.monotonic()
    with dspy.context(lm=lm(endpoint.model)):
        out = rlm(context=case.context, question=case.question)
    seconds = time.monotonic() - started
    events = out.events["events"]
    return Run(case.task, case.tokens, case.seed, "dspy", score(case, out.answer), str(out.answer)[:200],
               out.stop_reason, out.usage["llm_calls"], sum(e["kind"] == "sub_call" for e in events),
               out.usage["tokens"], round(seconds, 2), _overhead(events, seconds, out.usage["iterations"]))


def run_direct(case: Case, endpoint: Endpoint, window_chars: int) -> Run:
    import asyncio

    from sandbox import Budget, LiteLLMClient, metered_completion

    budget = Budget()
    prompt = f"{case.question}\n\nText:\n{case.context[:window_chars]}\n\nAnswer briefly."
    started = time.monotonic()
    client = LiteLLMClient(endpoint.model, api_base=endpoint.api_base, api_key=endpoint.api_key)
    completion = asyncio.run(metered_completion(client,
                                                [{"role": "user", "content": prompt}], budget=budget, max_tokens=256))
    return Run(case.task, case.tokens, case.seed, "direct", score(case, completion.text), completion.text[:200],
               "final", 1, 0, budget.tokens, round(time.monotonic() - started, 2), None)


def summarize(runs: list[Run]) -> list[dict[str, Any]]:
    rows = []
    for key in sorted({(r.task, r.tokens, r.engine) for r in runs}):
        group = [r for r in runs if (r.task, r.tokens, r.engine) == key]
        overheads = [r.overhead_ms_per_iteration for r in group if r.overhead_ms_per_iteration is not None]
        rows.append({"task": key[0], "tokens": key[1], "engine": key[2], "runs": len(group),
                     "accuracy": round(statistics.mean(r.score for r in group), 3),
                     "llm_calls": round(statistics.mean(r.llm_calls for r in group), 1),
                     "sub_calls": round(statistics.mean(r.sub_calls for r in group), 1),
                     "tokens_used": round(statistics.mean(r.total_tokens for r in group)),
                     "seconds": round(statistics.mean(r.seconds for r in group), 2),
                     "overhead_ms_per_iteration": round(statistics.mean(overheads), 2) if overheads else None})
    return rows


def svg_plot(rows: list[dict[str, Any]]) -> str:
    """Accuracy against context length, one panel per task, one line per engine."""
    tasks = sorted({r["task"] for r in rows})
    lengths = sorted({r["tokens"] for r in rows})
    colors = {"graph": "#1f77b4", "dspy": "#2ca02c", "direct": "#d62728"}
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
            parts.append(f'<text x="{x}" y="{height - pad + 14}" text-anchor="middle">{length // 1000}K</text>')
        for engine, color in colors.items():
            points = [xy(r["tokens"], r["accuracy"]) for r in rows if r["task"] == task and r["engine"] == engine]
            if points:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
                parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
                parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in points)
    legend = " ".join(f'<tspan fill="{c}">{e}</tspan>' for e, c in colors.items())
    parts.append(f'<text x="10" y="{height + 20}">{legend}</text></svg>')
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two lengths, one seed")
    parser.add_argument("--tasks", default="niah,oolong,pairs")
    parser.add_argument("--lengths", help="context lengths in tokens, comma-separated")
    parser.add_argument("--engines", default="graph,dspy,direct")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--max-iterations", type=int, default=6)
    parser.add_argument("--window-tokens", type=int, default=6000, help="what 'direct' may send (model window)")
    parser.add_argument("--model", help="litellm model string (default: the embedded local model)")
    parser.add_argument("--api-base")
    parser.add_argument("--api-key")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the results")
    parser.set_defaults(sub_model=None)
    args = parser.parse_args(argv)
    lengths = [int(x) for x in (args.lengths or ("8000,131072" if args.quick else "8000,32000,131072,1048576"))
               .split(",")]
    seeds = range(args.seeds or (1 if args.quick else 3))
    cases = [TASKS[task](length, seed) for task in args.tasks.split(",") for length in lengths for seed in seeds]
    runners = {"graph": run_graph, "dspy": run_dspy}
    runs: list[Run] = []
    with model_endpoint(args) as endpoint:
        for case in cases:
            for engine in args.engines.split(","):
                if engine == "direct":
                    run = run_direct(case, endpoint, args.window_tokens * CHARS_PER_TOKEN)
                else:
                    run = runners[engine](case, endpoint, args.max_iterations)
                runs.append(run)
                print(f"{case.task:6s} {case.tokens:>8,} tokens  {engine:6s} score {run.score:.2f}  "
                      f"{run.seconds:6.1f}s  {run.stop_reason}", flush=True)
    rows = summarize(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "long_context_runs.json").write_text(json.dumps([asdict(r) for r in runs], indent=2) + "\n")
    (args.out / "long_context.svg").write_text(svg_plot(rows))
    table = write_results("long_context", {f"{r['task']}/{r['tokens']}/{r['engine']}": {
        k: v for k, v in r.items() if k not in ("task", "tokens", "engine")} for r in rows}, directory=args.out)
    print(table)
    return rows


if __name__ == "__main__":
    main()
