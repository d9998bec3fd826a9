"""A budget ledger in PostgreSQL, shared by every process that uses the same key.

``Budget(max_llm_calls=100, ledger=PostgresLedger(url, "nightly-eval"))`` in N
worker processes caps the calls of all of them together. Each draw is one
``UPDATE ... WHERE <under the caps> RETURNING``, atomic under PostgreSQL's row
lock, so concurrent reservations from any number of processes never pass a cap.
psycopg is imported on first use, not with :mod:`sandbox`.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from sandbox.engine.budget import CapReached, Reservation

TABLE = "rlm_budget_ledger"
_COUNTERS = ("iterations", "llm_calls", "prompt_tokens", "completion_tokens", "cost_usd")
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    key text PRIMARY KEY,
    iterations bigint NOT NULL DEFAULT 0,
    llm_calls bigint NOT NULL DEFAULT 0,
    prompt_tokens bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    cost_usd double precision NOT NULL DEFAULT 0,
    reserved_tokens bigint NOT NULL DEFAULT 0,
    reserved_cost double precision NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
)"""
_RESERVE_CALL = f"""
UPDATE {TABLE} SET llm_calls = llm_calls + 1, reserved_tokens = reserved_tokens + %(tokens)s,
       reserved_cost = reserved_cost + %(cost)s, updated_at = now()
 WHERE key = %(key)s
   AND (%(max_llm_calls)s::bigint IS NULL OR llm_calls < %(max_llm_calls)s::bigint)
   AND (%(max_tokens)s::bigint IS NULL
        OR prompt_tokens + completion_tokens + reserved_tokens + %(tokens)s <= %(max_tokens)s::bigint)
   AND (%(max_cost_usd)s::float8 IS NULL OR cost_usd + reserved_cost + %(cost)s <= %(max_cost_usd)s::float8)
RETURNING llm_calls"""
_RESERVE_ITERATION = f"""
UPDATE {TABLE} SET iterations = iterations + 1, updated_at = now()
 WHERE key = %(key)s AND (%(max_iterations)s::bigint IS NULL OR iterations < %(max_iterations)s::bigint)
RETURNING iterations"""
_SETTLE = f"""
UPDATE {TABLE} SET reserved_tokens = reserved_tokens - %(held_tokens)s, reserved_cost = reserved_cost - %(held_cost)s,
       llm_calls = llm_calls - %(refund)s, prompt_tokens = prompt_tokens + %(prompt)s,
       completion_tokens = completion_tokens + %(completion)s, cost_usd = cost_usd + %(cost)s, updated_at = now()
 WHERE key = %(key)s"""


class PostgresLedger:
    """A :class:`~sandbox.engine.budget.SharedLedger` row in PostgreSQL, one per ``key``.

    Args:
        conn_string: a libpq connection string or URL (``postgresql://user@host:5432/db``).
        key: the name of the pool; every Budget with a ledger on the same key draws from it.

    The table (``rlm_budget_ledger``) is created on first use. One connection per process
    (opened lazily, opened again after a ``fork``), used under a lock. Limits: a process
    killed during an LM call leaves that call's token and dollar hold in the row (the call
    itself is rightly counted); :meth:`release_holds` clears them when no process is running.
    """

    def __init__(self, conn_string: str, key: str):
        if not isinstance(conn_string, str) or not conn_string.strip():
            raise ValueError(f"PostgresLedger needs a PostgreSQL connection string, got {conn_string!r}")
        if not isinstance(key, str) or not key.strip():
            raise ValueError(f"PostgresLedger needs a non-empty key naming the shared budget, got {key!r}")
        self.conn_string = conn_string
        self.key = key
        self._lock = threading.Lock()
        self._conn: Any = None
        self._pid: int | None = None

    def __repr__(self) -> str:
        return f"PostgresLedger(key={self.key!r})"  # the connection string may hold a password

    def __deepcopy__(self, memo: dict[int, Any]) -> PostgresLedger:
        return self  # one pool by definition; copies of a program share it

    def _execute(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """Run one statement (autocommit); its first row when it returns rows, else ``None``."""
        with self._lock:
            cursor = self._connection().execute(sql, {"key": self.key, **params})
            return cursor.fetchone() if cursor.description is not None else None

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed or self._pid != os.getpid():
            import psycopg

            conn = psycopg.connect(self.conn_string, autocommit=True)
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (TABLE,))  # concurrent CREATEs race
                conn.execute(_SCHEMA)
            conn.execute(f"INSERT INTO {TABLE} (key) VALUES (%s) ON CONFLICT (key) DO NOTHING", (self.key,))
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def reserve_iteration(self, caps: dict[str, Any]) -> None:
        """Count one iteration under ``caps["max_iterations"]``, or raise :class:`CapReached`."""
        if self._execute(_RESERVE_ITERATION, {"max_iterations": caps.get("max_iterations")}) is None:
            raise CapReached("max_iterations", f"{self.totals()['iterations']} iterations used")

    def reserve_call(self, caps: dict[str, Any], *, tokens: int, cost_usd: float) -> None:
        """Count one call and hold its bounds, or raise :class:`CapReached` naming the cap."""
        params = {"tokens": int(tokens), "cost": float(cost_usd), **{name: caps.get(name) for name in
                                                                     ("max_llm_calls", "max_tokens", "max_cost_usd")}}
        if self._execute(_RESERVE_CALL, params) is not None:
            return
        totals = self.totals()
        if caps.get("max_llm_calls") is not None and totals["llm_calls"] >= caps["max_llm_calls"]:
            raise CapReached("max_llm_calls", f"{totals['llm_calls']} LM calls used")
        if caps.get("max_tokens") is not None and \
                totals["tokens"] + totals["reserved_tokens"] + tokens > caps["max_tokens"]:
            raise CapReached("max_tokens", f"{totals['tokens']} tokens used, {totals['reserved_tokens']} held by "
                                           f"calls in flight, this call may need {tokens}")
        raise CapReached("max_cost_usd", f"${totals['cost_usd']:.6f} spent, this call may cost ${cost_usd:.6f}")

    def settle(self, reservation: Reservation, *, dispatched: bool, prompt_tokens: int = 0,
               completion_tokens: int = 0, cost_usd: float = 0.0) -> None:
        """Release ``reservation`` and add the call's usage (refund the call if it was never dispatched)."""
        self._execute(_SETTLE, {"held_tokens": reservation.tokens, "held_cost": reservation.cost_usd,
                                "refund": 0 if dispatched else 1, "prompt": int(prompt_tokens),
                                "completion": int(completion_tokens), "cost": float(cost_usd)})

    def totals(self) -> dict[str, Any]:
        """What every process on this key has spent, and what calls in flight hold."""
        row = self._execute(f"SELECT {', '.join(_COUNTERS)}, reserved_tokens, reserved_cost FROM {TABLE} "
                            "WHERE key = %(key)s", {})
        values = dict(zip((*_COUNTERS, "reserved_tokens", "reserved_cost"), row))
        values["tokens"] = values["prompt_tokens"] + values["completion_tokens"]
        return values

    def release_holds(self) -> None:
        """Drop every token and dollar hold on this key: for after a crash, when no process uses it."""
        self._execute(f"UPDATE {TABLE} SET reserved_tokens = 0, reserved_cost = 0 WHERE key = %(key)s", {})

    def reset(self) -> None:
        """Set every count of this key to zero (a new period for the pool)."""
        self._execute(f"UPDATE {TABLE} SET {', '.join(f'{c} = 0' for c in _COUNTERS)}, reserved_tokens = 0, "
                      "reserved_cost = 0 WHERE key = %(key)s", {})
