"""Budget: the ledger's arithmetic, reservations under concurrency, and bad input."""

from __future__ import annotations

import threading
import time

import pytest

from sandbox import Budget, BudgetExceeded


def test_calls_reserve_and_commit():
    budget = Budget(max_llm_calls=2, max_tokens=1000)
    first = budget.reserve_call(tokens=300)
    budget.commit(first, prompt_tokens=100, completion_tokens=20, cost_usd=0.01)
    budget.reserve_call(tokens=300)
    with pytest.raises(BudgetExceeded) as info:
        budget.reserve_call(tokens=1)
    assert info.value.limit == "max_llm_calls"
    assert info.value.spent["llm_calls"] == 2 and info.value.spent["tokens"] == 120


def test_token_cap_counts_reservations_in_flight():
    budget = Budget(max_tokens=1000)
    budget.reserve_call(tokens=600)
    with pytest.raises(BudgetExceeded, match="max_tokens"):
        budget.reserve_call(tokens=600)


def test_cancel_before_dispatch_refunds_the_call():
    budget = Budget(max_llm_calls=1)
    reservation = budget.reserve_call(tokens=10)
    budget.cancel(reservation, dispatched=False)
    budget.reserve_call(tokens=10)
    assert budget.llm_calls == 1


def test_cost_cap():
    budget = Budget(max_cost_usd=0.05)
    r = budget.reserve_call(tokens=10, cost_usd=0.03)
    budget.commit(r, prompt_tokens=5, completion_tokens=5, cost_usd=0.03)
    with pytest.raises(BudgetExceeded, match="max_cost_usd"):
        budget.reserve_call(tokens=10, cost_usd=0.03)


def test_iterations_and_depth():
    budget = Budget(max_iterations=2, max_depth=2)
    budget.reserve_iteration()
    budget.reserve_iteration()
    with pytest.raises(BudgetExceeded, match="max_iterations"):
        budget.reserve_iteration()
    assert budget.allows_depth(2) and not budget.allows_depth(3)


def test_wall_clock():
    budget = Budget(max_seconds=0.1)
    budget.start()
    assert 0 < budget.seconds_left() <= 0.1
    time.sleep(0.15)
    with pytest.raises(BudgetExceeded, match="max_seconds"):
        budget.reserve_call(tokens=1)


def test_threads_never_overshoot():
    budget = Budget(max_llm_calls=10)
    granted = []

    def worker():
        for _ in range(50):
            try:
                budget.reserve_call(tokens=1)
                granted.append(1)
            except BudgetExceeded:
                pass

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 10 == budget.llm_calls


def test_fresh_copies_limits_not_spend():
    budget = Budget(max_llm_calls=3, max_seconds=5)
    budget.reserve_call(tokens=1)
    fresh = budget.fresh()
    assert fresh.limits() == budget.limits() and fresh.llm_calls == 0
    assert "max_llm_calls=3" in repr(fresh)


@pytest.mark.parametrize("kwargs,error", [
    ({"max_tokens": -1}, ValueError), ({"max_seconds": -0.5}, ValueError), ({"max_llm_calls": 2.5}, ValueError),
    ({"max_cost_usd": "1"}, TypeError), ({"max_depth": None}, TypeError), ({"max_iterations": True}, TypeError),
    ({"max_seconds": float("nan")}, TypeError),
])
def test_bad_limits_are_named(kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        Budget(**kwargs)
