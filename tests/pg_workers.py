"""Worker processes for the PostgreSQL tests and benchmark: ``python -m tests.pg_workers MODE ...``.

Each prints one JSON line with what it did. Modes:

- ``graph URL API_BASE THREAD [--resume] [--cache] [--slow-saver]``: run (or resume) an RLM
  graph on ``PostgresSaver`` + ``PostgresStore`` with a litellm model string at the scripted
  server; ``--slow-saver`` makes each checkpoint write take a second (a distant database).
- ``runs URL API_BASE PREFIX COUNT START_AT``: COUNT graph runs one after another, from
  ``START_AT`` (epoch seconds); prints the seconds they took.
- ``ledger URL API_BASE KEY START_AT``: eight concurrent sub-calls under
  ``Budget(max_llm_calls=10, ledger=PostgresLedger(URL, KEY))``.
- ``cache URL API_BASE PROMPT...``: one ``llm_query`` per prompt through a store-backed cache.
- ``context-put URL FILE`` / ``context-get URL REF``: a context into / out of a PostgresStore.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
import urllib.request
from contextlib import ExitStack
from typing import Any

from sandbox import Budget, Completion, PostgresLedger, Trajectory
from sandbox.engine.bridge import HostFunctions
from sandbox.lm.aio import AsyncRunner

QUERY = "What do the notes say?"


class HTTPChatLM:
    """An LMClient posting to an OpenAI-compatible server with urllib (no litellm import:
    four worker processes start in a fraction of the time)."""

    def __init__(self, api_base: str, model: str = "scripted"):
        self.api_base, self.model = api_base, model

    def _post(self, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
        request = urllib.request.Request(f"{self.api_base}/chat/completions", method="POST",
                                         data=json.dumps({"model": self.model, "messages": messages,
                                                          "max_tokens": max_tokens}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    async def acomplete(self, messages, *, max_tokens):
        body = await asyncio.to_thread(self._post, messages, max_tokens)
        usage = body["usage"]
        return Completion(text=body["choices"][0]["message"]["content"], prompt_tokens=usage["prompt_tokens"],
                          completion_tokens=usage["completion_tokens"], model=self.model)


def _wait_until(start_at: float) -> None:
    time.sleep(max(0.0, start_at - time.time()))


def _postgres(stack: ExitStack, url: str, *, slow_saver: bool = False) -> tuple[Any, Any]:
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.store.postgres import PostgresStore

    class SlowSaver(PostgresSaver):
        def put(self, *args: Any, **kwargs: Any) -> Any:
            time.sleep(1.0)
            return super().put(*args, **kwargs)

    saver = stack.enter_context((SlowSaver if slow_saver else PostgresSaver).from_conn_string(url))
    store = stack.enter_context(PostgresStore.from_conn_string(url))
    return saver, store


def graph_run(url: str, api_base: str, thread: str, *, resume: bool, cache: bool,
              slow_saver: bool = False) -> dict[str, Any]:
    from rlm_graph import create_rlm_graph

    with ExitStack() as stack:
        saver, store = _postgres(stack, url, slow_saver=slow_saver)
        graph = create_rlm_graph("openai/scripted", api_base=api_base, api_key="test", checkpointer=saver,
                                 store=store, cache_sub_calls=cache, look_before_answer=False, grounding=False)
        config = {"configurable": {"thread_id": thread}}
        out = graph.invoke(None if resume else {"query": QUERY, "context": NOTES}, config)
    return {"answer": out["answer"], "stop_reason": out["stop_reason"], "usage": out["usage"],
            "cached": sum(bool(e.get("cached")) for e in out["events"]["events"] if e["kind"] == "sub_call")}


def many_runs(url: str, api_base: str, prefix: str, count: int, start_at: float) -> dict[str, Any]:
    from rlm_graph import create_rlm_graph

    with ExitStack() as stack:
        saver, store = _postgres(stack, url)
        graph = create_rlm_graph("openai/scripted", api_base=api_base, api_key="test", checkpointer=saver,
                                 store=store, look_before_answer=False, grounding=False)
        _wait_until(start_at)
        began = time.perf_counter()
        answers = [graph.invoke({"query": QUERY, "context": NOTES},
                                {"configurable": {"thread_id": f"{prefix}-{i}"}})["answer"] for i in range(count)]
        return {"seconds": time.perf_counter() - began, "answers": answers}


def _host(lm: Any, budget: Budget, runner: AsyncRunner) -> HostFunctions:
    return HostFunctions(lm=lm, budget=budget, trajectory=Trajectory("q"), runner=runner)


def ledger_draw(url: str, api_base: str, key: str, start_at: float) -> dict[str, Any]:
    runner = AsyncRunner()
    budget = Budget(max_llm_calls=10, ledger=PostgresLedger(url, key))
    host = _host(HTTPChatLM(api_base), budget, runner)
    budget.ledger.totals()  # connect (and create the table) before the race starts
    _wait_until(start_at)
    answers = host.llm_query_batched([f"{key} prompt {i}" for i in range(8)])
    runner.close()
    return {"answered": sum(not a.startswith("ERROR") for a in answers), "llm_calls": budget.spent()["llm_calls"]}


def cached_queries(url: str, api_base: str, prompts: list[str]) -> dict[str, Any]:
    from sandbox.engine.subcall_cache import CachedLM, SubCallCache

    runner = AsyncRunner()
    with ExitStack() as stack:
        _, store = _postgres(stack, url)
        budget = Budget()
        host = _host(CachedLM(HTTPChatLM(api_base), SubCallCache(store)), budget, runner)
        answers = [host.llm_query(p) for p in prompts]
        events = host.trajectory.of_kind("sub_call")
    runner.close()
    return {"answers": answers, "cached": [bool(e.get("cached")) for e in events], "usage": budget.spent()}


def context_put(url: str, path: str) -> dict[str, Any]:
    from rlm_graph import put_context

    with ExitStack() as stack:
        _, store = _postgres(stack, url)
        store.setup()
        return {"ref": put_context(store, open(path, encoding="utf-8").read())}


def context_get(url: str, ref: str) -> dict[str, Any]:
    from rlm_graph import get_context

    with ExitStack() as stack:
        _, store = _postgres(stack, url)
        text = get_context(store, ref)
        return {"chars": len(text), "sha256": hashlib.sha256(text.encode()).hexdigest()}


NOTES = "Notes. " + "The harbour opens at dawn. " * 40


def main(argv: list[str]) -> None:
    mode, url, *rest = argv
    if mode == "graph":
        api_base, thread, *flags = rest
        result = graph_run(url, api_base, thread, resume="--resume" in flags, cache="--cache" in flags,
                           slow_saver="--slow-saver" in flags)
    elif mode == "runs":
        api_base, prefix, count, start_at = rest
        result = many_runs(url, api_base, prefix, int(count), float(start_at))
    elif mode == "ledger":
        api_base, key, start_at = rest
        result = ledger_draw(url, api_base, key, float(start_at))
    elif mode == "cache":
        api_base, *prompts = rest
        result = cached_queries(url, api_base, prompts)
    elif mode == "context-put":
        result = context_put(url, rest[0])
    elif mode == "context-get":
        result = context_get(url, rest[0])
    else:
        raise SystemExit(f"unknown mode {mode!r}; see the module docstring")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
