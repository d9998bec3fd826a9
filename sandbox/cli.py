"""The ``rlm`` command: ask a question about a long document, or run the benchmark suite.

    rlm ask "Which vendor was late twice?" --context report.txt [--model openai/gpt-4o-mini]
    rlm bench --quick

Without ``--model`` it starts the embedded local model (``sandbox.local``) on 127.0.0.1
and stops it afterwards. Exit codes: 0 answered, 1 stopped by a budget or the iteration
cap (the partial answer is still printed), 2 bad input, 3 model not reachable.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import runpy
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.budget import Budget
from sandbox.local import LocalModelError, LocalModelServer
from sandbox.progress import ProgressDisplay
from sandbox.redact import redact

BUDGET_KEYS = ("max_iterations", "max_llm_calls", "max_tokens", "max_cost_usd", "max_seconds")
COMPLETE = ("final", "accepted", "no_improvement", "max_refinements")
LOCAL_API_KEY = "sk-local-no-key"


class UsageError(Exception):
    """Bad input from the command line: printed as is, exit code 2."""


def read_context(source: str) -> str:
    """The context text from a file path, or stdin for ``-``; refuses missing, binary and empty input."""
    if source == "-":
        data = sys.stdin.buffer.read()
        name = "standard input"
    else:
        path = Path(source)
        if not path.is_file():
            raise UsageError(f"context file not found: {source}")
        data = path.read_bytes()
        name = str(path)
    if b"\x00" in data[:1 << 20]:
        raise UsageError(f"{name} looks binary (it has NUL bytes); give a text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{name} is not UTF-8 text ({exc}); convert it first, e.g. with iconv") from None
    if not text.strip():
        raise UsageError(f"{name} is empty")
    return text


def parse_budget(items: list[str]) -> Budget:
    limits: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in BUDGET_KEYS:
            raise UsageError(f"--budget takes KEY=VALUE with KEY one of {', '.join(BUDGET_KEYS)}; got {item!r}")
        try:
            limits[key] = float(value) if key in ("max_cost_usd", "max_seconds") else int(value)
        except ValueError:
            raise UsageError(f"--budget {key}: {value!r} is not a number") from None
    try:
        return Budget(**limits)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None


@dataclass(frozen=True)
class Endpoint:
    model: str
    sub_model: str
    api_base: str | None
    api_key: str | None


@contextlib.contextmanager
def model_endpoint(args: argparse.Namespace) -> Iterator[Endpoint]:
    """The model named on the command line, or the embedded local model started for this run."""
    if args.model:
        # OpenAI-compatible local servers ignore the key, but the client refuses to run without one.
        key = args.api_key or (LOCAL_API_KEY if args.api_base else None)
        yield Endpoint(args.model, args.sub_model or args.model, args.api_base, key)
        return
    print("starting the embedded local model on 127.0.0.1 (first run assembles it; ~1 min)...", file=sys.stderr)
    with LocalModelServer() as server:
        yield Endpoint(server.model, server.model, server.api_base, LOCAL_API_KEY)


def run_graph(question: str, context: str, endpoint: Endpoint, budget: Budget, max_depth: int,
              progress: ProgressDisplay) -> dict[str, Any]:
    from rlm_graph import create_rlm_graph

    graph = create_rlm_graph(endpoint.model, sub_model=endpoint.sub_model, api_base=endpoint.api_base,
                             api_key=endpoint.api_key, budget=budget, max_depth=max_depth,
                             max_iterations=budget.max_iterations or 20)
    result: dict[str, Any] = {}
    for mode, chunk in graph.stream({"query": question, "context": context}, stream_mode=["custom", "values"]):
        if mode == "custom":
            progress(chunk)
        else:
            result = chunk
    return {key: result.get(key) for key in ("answer", "stop_reason", "iterations", "usage", "trajectory")}


def run_dspy(question: str, context: str, endpoint: Endpoint, budget: Budget, max_depth: int,
             progress: ProgressDisplay) -> dict[str, Any]:
    import dspy

    from rlm_dspy import RLM

    def lm(model: str) -> dspy.LM:
        # DSPy's litellm engine sends max_tokens; its default engine sends max_completion_tokens,
        # which llama.cpp and some other OpenAI-compatible servers ignore (unbounded replies).
        return dspy.LM(model, api_base=endpoint.api_base, api_key=endpoint.api_key, engine="litellm",
                      cache=False)  # each ask is a fresh run: a disk-cached root reply would replay an old one

    rlm = RLM("context, question -> answer", max_iters=budget.max_iterations or 20, sub_lm=lm(endpoint.sub_model),
              budget=budget, max_depth=max_depth, on_event=progress)
    with dspy.context(lm=lm(endpoint.model)):
        out = rlm(context=context, question=question)
    return {"answer": out.answer, "stop_reason": out.stop_reason, "iterations": out.usage["iterations"],
            "usage": out.usage, "trajectory": out.events}


def report(result: dict[str, Any]) -> str:
    usage = result.get("usage") or {}
    return "\n".join([
        "", f"Answer: {result.get('answer')}",
        f"Stopped: {result.get('stop_reason')} after {result.get('iterations')} iterations",
        f"Usage: {usage.get('llm_calls', 0)} LM calls, {usage.get('tokens', 0):,} tokens "
        f"({usage.get('prompt_tokens', 0):,} in, {usage.get('completion_tokens', 0):,} out), "
        f"${usage.get('cost_usd', 0):.4f}, {usage.get('seconds', 0):.1f} s",
    ])


def ask(args: argparse.Namespace) -> int:
    context = read_context(args.context)
    budget = parse_budget(args.budget)
    engine = run_graph if args.engine == "graph" else run_dspy
    progress = ProgressDisplay(out=sys.stderr)
    with model_endpoint(args) as endpoint:
        result = engine(args.question, context, endpoint, budget, args.max_depth, progress)
    print(report(result))
    if args.trace:
        Path(args.trace).write_text(json.dumps(result, indent=2, default=str))
        print(f"Trace: {args.trace}")
    return 0 if result.get("stop_reason") in COMPLETE else 1


def bench(args: argparse.Namespace) -> int:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "long_context.py"
    if not script.is_file():
        raise UsageError("`rlm bench` runs benchmarks/long_context.py from a source checkout; it was not found")
    sys.argv = [str(script), *args.bench_args]
    runpy.run_path(str(script), run_name="__main__")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlm", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ask_parser = commands.add_parser("ask", help="answer a question about a long context")
    ask_parser.add_argument("question")
    ask_parser.add_argument("--context", required=True, help="a text file, or - for standard input")
    ask_parser.add_argument("--model", help="litellm model string (default: the embedded local model)")
    ask_parser.add_argument("--sub-model", help="litellm model string for sub-calls (default: --model)")
    ask_parser.add_argument("--api-base", help="base URL of an OpenAI-compatible server")
    ask_parser.add_argument("--api-key", help="API key for --model (default: the provider's usual environment "
                                              "variable; a placeholder for --api-base servers)")
    ask_parser.add_argument("--max-depth", type=int, default=1, help="how deep rlm_query may recurse")
    ask_parser.add_argument("--budget", action="append", default=[], metavar="KEY=VALUE",
                            help=f"a cap, repeatable; KEY one of {', '.join(BUDGET_KEYS)}")
    ask_parser.add_argument("--engine", choices=("graph", "dspy"), default="graph")
    ask_parser.add_argument("--trace", help="write the answer, usage and trajectory to this JSON file")
    ask_parser.set_defaults(run=ask)
    bench_parser = commands.add_parser("bench", help="run the long-context benchmark suite "
                                                     "(options: see `rlm bench --help-suite`)")
    bench_parser.set_defaults(run=bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command != "bench" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.bench_args = [a if a != "--help-suite" else "--help" for a in rest]
    try:
        return args.run(args)
    except UsageError as exc:
        print(f"rlm: {exc}", file=sys.stderr)
        return 2
    except LocalModelError as exc:
        print(f"rlm: the embedded model is not available: {exc}", file=sys.stderr)
        return 3
    except Exception as exc:  # noqa: BLE001 - turn provider failures into one actionable line
        if type(exc).__name__ in ("APIConnectionError", "InternalServerError", "ServiceUnavailableError",
                                  "Timeout", "NotFoundError", "AuthenticationError"):
            print(f"rlm: cannot use model {getattr(args, 'model', None) or 'local'}: {type(exc).__name__}: "
                  f"{redact(str(exc), limit=300)}", file=sys.stderr)
            return 3
        raise


if __name__ == "__main__":
    sys.exit(main())
