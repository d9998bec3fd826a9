"""The ``rlm`` command: ask a question about a long document, keep the embedded model warm, run the benchmarks.

    rlm ask "Which vendor was late twice?" --context report.txt [--model openai/gpt-4o-mini]
    rlm serve          # keep the embedded model warm on 127.0.0.1:8788; later runs start in seconds
    rlm bench --quick  # the long-context suite (rlm bench --help for its options)

Without ``--model`` (or ``RLM_MODEL``) it uses the embedded local model (``sandbox.lm.local``): the
one ``rlm serve`` keeps warm, else one started on 127.0.0.1 for this run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from sandbox.app import report as trace_report
from sandbox.app.progress import ProgressDisplay
from sandbox.boundary.redact import redact
from sandbox.engine.budget import Budget
from sandbox.engine.stops import COMPLETE_STOPS
from sandbox.lm.clients import LOCAL_MODEL, LiteLLMClient, default_api_key, import_litellm
from sandbox.lm.local import DEFAULT_PORT, PORT_ENV, STARTING_NOTICE, LocalModelError, LocalModelServer, endpoint_of, \
    serve_port, served_at, warm_endpoint

BUDGET_KEYS = ("max_iterations", "max_llm_calls", "max_tokens", "max_cost_usd", "max_seconds")
NOT_BUDGET_KEYS = {"max_depth": "--max-depth"}  # caps that are options of their own
MODEL_ENV, API_BASE_ENV = "RLM_MODEL", "RLM_API_BASE"
T = TypeVar("T")
WAIT_STEP_SECONDS = 0.2
EXIT_INTERRUPTED = 130  # what shells report for a command ended by Ctrl-C (128 + SIGINT)
EXIT_CODES = ("exit codes: 0 answered; 1 stopped by a budget or the iteration cap (the partial answer is "
              "printed); 2 bad input; 3 model not reachable; 130 interrupted (Ctrl-C; the partial answer is "
              "printed and --trace written)")
UNREACHABLE = ("APIConnectionError", "InternalServerError", "ServiceUnavailableError", "Timeout")
MODEL_HINT = ("give provider/model, e.g. openai/gpt-4o-mini; or --api-base URL for an OpenAI-compatible "
              "server, with --model openai/<name>")


class UsageError(Exception):
    """Bad input from the command line: printed as is, exit code 2."""


def read_context(source: str) -> str:
    """The context text from a file path, or stdin for ``-``; refuses missing, binary and empty input."""
    if source == "-":
        data = sys.stdin.buffer.read()
        name = "standard input"
    else:
        path = Path(source)
        if path.is_dir():
            raise UsageError(f"--context {source} is a directory; give one text file "
                             f"(to ask about several, join them: cat {source.rstrip('/')}/*.txt > all.txt)")
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
        if key in NOT_BUDGET_KEYS:
            raise UsageError(f"--budget {item}: {key} is not a budget cap; use {NOT_BUDGET_KEYS[key]} {value or 'N'}")
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


def check_model(model: str, option: str) -> None:
    """Refuse a model string litellm cannot route, before anything starts."""
    if model == LOCAL_MODEL:
        return
    try:
        LiteLLMClient(model)  # the constructor checks that litellm knows the provider
    except ValueError:
        source = f"${MODEL_ENV}" if option == "--model" and model == os.environ.get(MODEL_ENV) else option
        raise UsageError(f"{source} {model!r} is not a model litellm knows: {MODEL_HINT}") from None


@dataclass(frozen=True)
class Endpoint:
    model: str
    sub_model: str
    api_base: str | None
    api_key: str | None


def endpoint_lm(endpoint: Endpoint, model: str, **kwargs: Any) -> Any:
    """A ``dspy.LM`` for ``model`` (the endpoint's root or sub-model) at ``endpoint``, uncached: each
    run is a fresh one, and a disk-cached root reply would replay an old run. ``kwargs`` go to it."""
    import dspy

    # DSPy's litellm engine sends max_tokens; its default engine sends max_completion_tokens,
    # which llama.cpp and some other OpenAI-compatible servers ignore (unbounded replies).
    return dspy.LM(model, api_base=endpoint.api_base, api_key=endpoint.api_key, engine="litellm", cache=False,
                   **kwargs)


@contextlib.contextmanager
def model_endpoint(args: argparse.Namespace) -> Iterator[Endpoint]:
    """The model named on the command line, or the embedded one (``rlm serve``'s, else one started
    for the ``with`` block).

    ``args`` needs ``model``, ``sub_model``, ``api_base`` and ``api_key`` (``None`` or ``"local"``
    for the embedded model); ``quiet`` (optional) silences the start-up notices.
    """
    model = args.model or LOCAL_MODEL
    sub_model = args.sub_model or model
    if LOCAL_MODEL not in (model, sub_model):
        yield Endpoint(model, sub_model, args.api_base, default_api_key(model, args.api_base, args.api_key))
        return
    if model != sub_model:
        raise UsageError("the embedded model (local) cannot be mixed with another model in one run; "
                         "give both --model and --sub-model as local, or neither")
    if args.api_base:
        raise UsageError(f"--api-base {args.api_base} needs a model served there: --model openai/<name> "
                         "(the embedded model, local, needs no --api-base)")
    tell = (lambda message: None) if getattr(args, "quiet", False) else notify
    warm = warm_endpoint()
    if warm is not None:
        tell(f"using the embedded model that `rlm serve` keeps warm at {warm.api_base}")
        yield Endpoint(warm.model, warm.model, warm.api_base, warm.api_key)
        return
    tell(STARTING_NOTICE)
    with LocalModelServer().start(tell) as server:
        local = endpoint_of(server)
        yield Endpoint(local.model, local.model, local.api_base, local.api_key)


def prefetch_litellm() -> threading.Thread:
    """Start importing litellm on a daemon thread, while the context loads and the model server
    starts: it takes seconds, and the first LM call would otherwise wait for all of them. Join the
    thread before a run starts: DSPy takes a half-imported litellm from ``sys.modules`` as it is."""
    thread = threading.Thread(target=import_litellm, name="rlm-import-litellm", daemon=True)
    thread.start()
    return thread


def notify(message: str) -> None:
    """Tell the user, on stderr, what is about to take a while."""
    print(message, file=sys.stderr, flush=True)


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
    return {key: result.get(key) for key in ("answer", "stop_reason", "iterations", "usage", "events")}


def run_dspy(question: str, context: str, endpoint: Endpoint, budget: Budget, max_depth: int,
             progress: ProgressDisplay) -> dict[str, Any]:
    import dspy

    from rlm_dspy import RLM

    rlm = RLM("context, question -> answer", max_iters=budget.max_iterations or 20,
              sub_lm=endpoint_lm(endpoint, endpoint.sub_model), budget=budget, max_depth=max_depth, on_event=progress)
    with dspy.context(lm=endpoint_lm(endpoint, endpoint.model)):
        out = rlm(context=context, question=question)
    return {"answer": out.answer, "stop_reason": out.stop_reason, "iterations": out.usage["iterations"],
            "usage": out.usage, "events": out.events}


def run_interruptibly(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` on a daemon thread while the main thread waits in short steps.

    Ctrl-C's signal may land on any thread, and Python raises ``KeyboardInterrupt`` only in the
    main one, when it next runs: waiting in steps makes that within a fifth of a second, not
    when the model's reply comes. An interrupted run's thread is left to :func:`leave_now`.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = function(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread as is
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="rlm-run", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(WAIT_STEP_SECONDS)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def interrupted(progress: ProgressDisplay, question: str) -> dict[str, Any]:
    """The result of a run stopped by Ctrl-C: what its events showed (the best partial answer,
    the iterations, the calls and tokens, the events themselves)."""
    return {"answer": progress.partial_answer(), "stop_reason": "interrupted", "iterations": progress.iteration,
            "usage": progress.usage(), "events": progress.event_tree(question)}


def summary(result: dict[str, Any], trace: str | None, page: str | None) -> str:
    """The human-readable result: the answer (once), why the run stopped, usage, the files written."""
    usage = result.get("usage") or {}
    answer, reason, iterations = result.get("answer"), result.get("stop_reason"), result.get("iterations")
    partial = "" if reason in COMPLETE_STOPS or answer is None else " (the answer is partial)"
    if answer is None:
        answer = "no answer yet" if reason == "interrupted" else "none (the run stopped first)"
    cost = f"${usage['cost_usd']:.4f}, " if "cost_usd" in usage else ""
    lines = ["", f"Answer: {answer}",
             f"Stopped: {reason} after {iterations} iteration{'' if iterations == 1 else 's'}{partial}",
             f"Usage: {usage.get('llm_calls', 0)} LM calls, {usage.get('tokens', 0):,} tokens "
             f"({usage.get('prompt_tokens', 0):,} in, {usage.get('completion_tokens', 0):,} out), "
             f"{cost}{usage.get('seconds', 0):.1f} s"]
    return "\n".join([*lines, *([f"Trace: {trace}"] if trace else []), *([f"Report: {page}"] if page else [])])


def model_failure(exc: BaseException, endpoint: Endpoint) -> str | None:
    """One line saying what went wrong with the model and what to do, for the errors that mean
    it cannot be used at all (also when wrapped, as DSPy wraps litellm's); ``None`` for others."""
    while exc is not None and type(exc).__name__ not in (*UNREACHABLE, "AuthenticationError", "NotFoundError"):
        exc = exc.__cause__ or exc.__context__
    if exc is None:
        return None
    name = type(exc).__name__
    detail = redact(str(exc).rsplit(" - ", 1)[-1].strip(), limit=200)
    if name in UNREACHABLE:
        if endpoint.api_base:
            return (f"cannot reach the model server at {endpoint.api_base} ({name}: {detail}); is a server "
                    "running at that URL?")
        return f"cannot reach {endpoint.model} ({name}: {detail}); check the network connection"
    if name == "AuthenticationError":
        return (f"{endpoint.model} refused the API key ({detail}); pass --api-key, or set the provider's "
                "variable, e.g. OPENAI_API_KEY")
    if name == "NotFoundError":
        return f"the server does not know model {endpoint.model} ({detail}); check --model"
    return None


def ask(args: argparse.Namespace) -> int:
    if not args.question.strip():
        raise UsageError('the question is empty; ask something, e.g. rlm ask "Which vendor was late twice?" '
                         '--context report.txt')
    for option, model in (("--model", args.model), ("--sub-model", args.sub_model)):
        if model:
            check_model(model, option)
    litellm_import = prefetch_litellm()
    for option, path in (("--trace", args.trace), ("--report", args.report)):
        if path and not Path(path).resolve().parent.is_dir():
            raise UsageError(f"{option} {path}: the folder {Path(path).resolve().parent} does not exist")
    context = read_context(args.context)
    budget = parse_budget(args.budget)
    engine = run_graph if args.engine == "graph" else run_dspy
    progress = ProgressDisplay(sys.stderr, quiet=args.quiet, show_answer=False)  # the report gives it, once
    with model_endpoint(args) as endpoint:
        try:
            litellm_import.join()  # inside the try: a Ctrl-C while it waits stops as cleanly as one later
            with progress:
                result = run_interruptibly(engine, args.question, context, endpoint, budget, args.max_depth,
                                           progress)
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the report short
            print("rlm: interrupted", file=sys.stderr)
            result = interrupted(progress, args.question)
        except Exception as exc:
            failure = model_failure(exc, endpoint)
            if failure is None:
                raise
            print(f"rlm: {failure}", file=sys.stderr)
            return 3
    if args.trace:
        Path(args.trace).write_text(json.dumps(result, indent=2, default=str))
    if args.report:
        trace_report.write_report(json.loads(json.dumps(result, default=str)), args.report)
    if args.json:
        print(json.dumps({**{k: result.get(k) for k in ("answer", "stop_reason", "iterations", "usage")},
                          "trace": args.trace, "report": args.report}, default=str))
    else:
        print(summary(result, args.trace, args.report))
    if result.get("stop_reason") == "interrupted":
        return EXIT_INTERRUPTED
    return 0 if result.get("stop_reason") in COMPLETE_STOPS else 1


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def serve(args: argparse.Namespace) -> int:
    port = serve_port(args.port)
    if served_at(port):
        raise UsageError(f"the embedded model is already served at http://127.0.0.1:{port}/v1 (another "
                         "`rlm serve`); use that one, or pass --port for a second")
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        print(f"starting the embedded model on 127.0.0.1:{port} (about 10 s)...", file=sys.stderr, flush=True)
        with LocalModelServer(port=port).start(notify) as server:
            print(f"serving the embedded model at {server.api_base} (model {server.model}); `rlm ask` and "
                  f"model=\"local\" in Python use it while it runs. Ctrl-C to stop.", file=sys.stderr, flush=True)
            code = server.wait()
        raise LocalModelError(f"the model server exited with code {code}")
    except KeyboardInterrupt:
        print("rlm serve: stopped", file=sys.stderr)
        return 0


def bench(args: argparse.Namespace) -> int:
    from sandbox.app.bench.suite import main as run_suite

    run_suite(args.bench_args, prog="rlm bench")
    return 0


def installed_version() -> str:
    try:
        return importlib.metadata.version("rlm-sandbox")
    except importlib.metadata.PackageNotFoundError:
        return "(version unknown: the rlm-sandbox distribution is not installed; pip install -e . in the checkout)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlm", epilog=EXIT_CODES, description="Ask a question about a long "
                                     "document with a Recursive Language Model, keep the embedded model warm, or "
                                     "run the benchmarks.")
    parser.add_argument("--version", action="version", version=f"rlm {installed_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{ask,report,serve,bench}")
    default_model = os.environ.get(MODEL_ENV) or None
    ask_parser = commands.add_parser(
        "ask", help="answer a question about a long context", epilog=EXIT_CODES,
        description="Answer a question about a long context with a Recursive Language Model.")
    ask_parser.add_argument("question", help="the question to answer")
    ask_parser.add_argument("--context", required=True, metavar="FILE",
                            help="the text to ask about: a UTF-8 file, or - for standard input")
    ask_parser.add_argument("--model", default=default_model,
                            help=f"litellm model string, e.g. openai/gpt-4o-mini, or local for the embedded model "
                                 f"(default: ${MODEL_ENV}, else local; now: {default_model or 'local'})")
    ask_parser.add_argument("--sub-model", help="model for sub-calls (llm_query...) (default: --model)")
    ask_parser.add_argument("--api-base", default=os.environ.get(API_BASE_ENV) or None, metavar="URL",
                            help="base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1, with "
                                 f"--model openai/<name> (default: ${API_BASE_ENV}, else the provider's own)")
    ask_parser.add_argument("--api-key", help="API key for --model (default: the provider's usual environment "
                                              "variable, e.g. OPENAI_API_KEY; a placeholder for --api-base servers)")
    ask_parser.add_argument("--max-depth", type=int, default=1,
                            help="how many levels of child RLMs rlm_query may start (default: 1)")
    ask_parser.add_argument("--budget", action="append", default=[], metavar="KEY=VALUE",
                            help=f"a cap, repeatable; KEY one of {', '.join(BUDGET_KEYS)} "
                                 "(default: no caps; at most 20 iterations)")
    ask_parser.add_argument("--engine", choices=("graph", "dspy"), default="graph",
                            help="run on LangGraph (graph) or DSPy (dspy) (default: graph)")
    ask_parser.add_argument("--trace", metavar="FILE", help="write the answer, usage and event tree (events) to "
                                                            "this JSON file, also when interrupted (default: none)")
    ask_parser.add_argument("--report", metavar="FILE", help="also write the run's trajectory report, one "
                                                             "self-contained HTML file (default: none)")
    ask_parser.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout "
                            "(answer, stop_reason, iterations, usage, trace) instead of the report")
    ask_parser.add_argument("--quiet", action="store_true", help="show no progress on stderr (errors still)")
    ask_parser.set_defaults(run=ask)
    report_parser = commands.add_parser(
        "report", help="write the trajectory report of a --trace file: one HTML page, nothing from the network",
        description="Write the trajectory report of a run (the JSON rlm ask --trace writes) as one "
                    "self-contained HTML file: the call tree as a timeline, budget use, verdicts, the answer.")
    trace_report.add_arguments(report_parser)
    report_parser.set_defaults(run=trace_report.run)
    serve_parser = commands.add_parser(
        "serve", help="keep the embedded model warm for `rlm ask` and model=\"local\" (until Ctrl-C)",
        description="Serve the embedded model on a fixed 127.0.0.1 port until Ctrl-C or SIGTERM; `rlm ask` and "
                    "the Python APIs (model=\"local\") use it while it runs instead of starting their own.")
    serve_parser.add_argument("--port", type=int, default=None,
                              help=f"the loopback port (default: ${PORT_ENV}, else {DEFAULT_PORT})")
    serve_parser.set_defaults(run=serve)
    bench_parser = commands.add_parser("bench", add_help=False, help="run the long-context benchmark suite "
                                                                     "(options: rlm bench --help)")
    bench_parser.set_defaults(run=bench)
    return parser


def leave_now(code: int) -> NoReturn:
    """Exit at once after Ctrl-C, with nothing left running.

    An engine's threads may still wait on an LM reply (up to the client's timeout); a normal
    exit would wait for them. So this stops this process's own children (the sandbox workers,
    an embedded model server it started), flushes, and exits without waiting.
    """
    for pid in _child_pids():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)  # the workers and the model server lead their own groups
            else:
                os.kill(pid, signal.SIGKILL)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _child_pids() -> list[int]:
    """This process's children, from /proc (elsewhere none: the workers end when their pipes close)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
                children.append(int(stat.parent.name))
    return children


def main(argv: list[str] | None = None) -> int:
    """Run the ``rlm`` command; returns its exit code (after Ctrl-C it exits the process itself).

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        0 answered, 1 stopped by a cap, 2 bad input, 3 model not reachable.
    """
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command != "bench" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.bench_args = rest
    try:
        code = args.run(args)
    except KeyboardInterrupt:
        print("rlm: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except UsageError as exc:
        print(f"rlm: {exc}", file=sys.stderr)
        return 2
    except LocalModelError as exc:
        print(f"rlm: the embedded model is not available: {exc}", file=sys.stderr)
        return 3
    if code == EXIT_INTERRUPTED:
        leave_now(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
