"""Shared test doubles. Scripted LMs are for unit tests only; end-to-end tests use a real model."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from sandbox import Budget, Completion, Trajectory
from sandbox.engine.bridge import HostFunctions
from sandbox.lm.aio import AsyncRunner


class FakeLM:
    """An LMClient whose answers come from ``reply(prompt)``, after ``latency`` seconds."""

    def __init__(self, reply: Callable[[str], str] | None = None, *, latency: float = 0.0,
                 tokens: int = 10, cost_usd: float | None = None, model: str = "fake/lm"):
        self.model = model
        self.reply = reply or (lambda prompt: f"answer to: {prompt}")
        self.latency = latency
        self.tokens = tokens
        self.cost = cost_usd
        self.calls: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def acomplete(self, messages, *, max_tokens):
        prompt = messages[-1]["content"]
        self.calls.append(prompt)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            text = self.reply(prompt)
        finally:
            self.in_flight -= 1
        return Completion(text=text, prompt_tokens=self.tokens, completion_tokens=self.tokens,
                          cost_usd=self.cost, model=self.model)


@pytest.fixture
def runner():
    r = AsyncRunner()
    yield r
    r.close()


@pytest.fixture
def make_host_functions(runner):
    """Build HostFunctions around a FakeLM: ``make_host_functions(lm, budget=..., **kw)``."""

    def make(lm=None, *, budget=None, trajectory=None, **kwargs):
        return HostFunctions(lm=lm or FakeLM(), budget=budget or Budget(), trajectory=trajectory or Trajectory("q"),
                             runner=runner, **kwargs)

    return make


@pytest.fixture(scope="session")
def postgres_server():
    """A private PostgreSQL cluster for the whole session (see tests/pg_cluster.py); its URL."""
    from tests import pg_cluster

    reason = pg_cluster.missing()
    if reason is not None:
        pytest.skip(reason)
    with pg_cluster.postgres_cluster() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty database on the session's cluster, for one test."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_server.rsplit("/", 1)[0] + "/" + name
