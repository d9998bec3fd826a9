"""The call log (sandbox.engine.replay): a rebuilt REPL's host calls are answered from the log while they match."""

from __future__ import annotations

import pytest

from sandbox.engine.budget import BudgetExceeded
from sandbox.engine.replay import CallLog, call_key


class Live:
    """Host functions that count their real calls."""

    def __init__(self):
        self.calls: list[tuple[str, tuple]] = []

    def tools(self):
        def ask(*args, **kwargs):
            self.calls.append(("ask", args))
            if args and args[0] == "fail":
                raise ValueError("bad prompt")
            if args and args[0] == "stop":
                raise BudgetExceeded("max_llm_calls", "no calls left", {})
            return f"live:{args[0]}"
        return {"ask": ask}


def recorded(*prompts):
    """A log recorded by live calls with ``prompts``."""
    log, live = CallLog(), Live()
    ask = log.wrap(live.tools())["ask"]
    for prompt in prompts:
        try:
            ask(prompt)
        except ValueError:
            pass
    return log.entries


@pytest.mark.parametrize("recorded_prompts,replayed_prompts,answers,live_calls", [
    (["a", "b"], ["a", "b"], ["live:a", "live:b"], []),  # all from the log
    (["a", "b"], ["a", "b", "c"], ["live:a", "live:b", "live:c"], ["c"]),  # past its end: live
    (["a", "b"], ["a", "x", "b"], ["live:a", "live:x", "live:b"], ["x", "b"]),  # diverged: live from there on
    (["a"], ["b"], ["live:b"], ["b"]),
    ([], ["a"], ["live:a"], ["a"]),
])
def test_replay_answers_from_the_log_until_the_code_diverges(recorded_prompts, replayed_prompts, answers, live_calls):
    log, live = CallLog(recorded(*recorded_prompts)), Live()
    ask = log.wrap(live.tools())["ask"]
    assert [ask(p) for p in replayed_prompts] == answers
    assert [args[0] for _, args in live.calls] == live_calls
    assert log.replayed == len(replayed_prompts) - len(live_calls) and not log.replaying


def test_a_recorded_error_is_raised_again_without_a_live_call():
    log, live = CallLog(recorded("fail")), Live()
    with pytest.raises(ValueError, match="bad prompt"):
        log.wrap(live.tools())["ask"]("fail")
    assert live.calls == []


def test_a_budget_stop_is_not_recorded_so_a_resume_tries_again():
    log, live = CallLog(), Live()
    with pytest.raises(BudgetExceeded):
        log.wrap(live.tools())["ask"]("stop")
    assert log.entries == []


def test_the_key_is_the_name_and_the_arguments():
    assert call_key("ask", ("a",), {}) == call_key("ask", ("a",), {})
    assert len({call_key("ask", ("a",), {}), call_key("ask", ("b",), {}), call_key("other", ("a",), {}),
                call_key("ask", (), {"prompt": "a"})}) == 4
    assert call_key("f", (), {"a": 1, "b": 2}) == call_key("f", (), {"b": 2, "a": 1})


def test_the_log_is_a_copy_of_the_entries_it_was_given():
    entries = recorded("a")
    log = CallLog(entries)
    log.wrap(Live().tools())["ask"]("z")  # diverges: truncates and appends to its own list
    assert entries == recorded("a") and len(log.entries) == 1 and log.entries[0]["value"] == "live:z"
