"""call_with_timeout and in_own_thread: what root LM calls under a wall-clock cap and DSPy
sub-calls run on."""

from __future__ import annotations

import asyncio
import contextvars
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sandbox.lm.aio import CallTimedOut, call_with_timeout, in_own_thread

ROOT = Path(__file__).resolve().parents[1]
SETTING = contextvars.ContextVar("setting", default="unset")


def test_the_call_sees_the_callers_context_and_its_value_comes_back():
    SETTING.set("the caller's")
    assert call_with_timeout(lambda suffix: SETTING.get() + suffix, "!", timeout=5) == "the caller's!"


def test_the_calls_own_errors_come_back_as_they_are():
    def fails() -> None:
        raise TimeoutError("the server's own timeout")

    with pytest.raises(TimeoutError, match="server's own") as caught:
        call_with_timeout(fails, timeout=5)
    assert not isinstance(caught.value, CallTimedOut)


def test_a_call_past_its_timeout_is_abandoned():
    began = time.monotonic()
    with pytest.raises(CallTimedOut):
        call_with_timeout(time.sleep, 5, timeout=0.1)
    assert time.monotonic() - began < 2


def test_an_abandoned_call_does_not_keep_the_process_alive():
    code = ("import time\nfrom sandbox.lm.aio import CallTimedOut, call_with_timeout\n"
            "try:\n    call_with_timeout(time.sleep, 60, timeout=0.1)\nexcept CallTimedOut:\n    print('gave up')\n")
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert done.stdout.strip() == "gave up" and done.returncode == 0
    assert time.monotonic() - began < 20  # not the 60 s of the abandoned call


# in_own_thread: what a DSPy sub-call (a blocking dspy.LM call) runs on from the event loop.

def test_a_blocking_call_on_its_own_thread_sees_the_callers_context():
    async def caller() -> str:
        SETTING.set("the caller's")
        return await in_own_thread(lambda suffix: SETTING.get() + suffix, "!")

    assert asyncio.run(caller()) == "the caller's!"


def test_a_blocking_calls_errors_come_back_as_they_are():
    def fails() -> None:
        raise ValueError("the LM's own error")

    with pytest.raises(ValueError, match="LM's own error"):
        asyncio.run(in_own_thread(fails))


def test_sixteen_blocking_calls_run_at_once_past_the_default_executors_size():
    barrier = threading.Barrier(16, timeout=10)  # breaks unless all 16 wait at once

    async def fan_out() -> list[int]:
        return await asyncio.gather(*(in_own_thread(barrier.wait) for _ in range(16)))

    assert sorted(asyncio.run(fan_out())) == list(range(16))


def test_an_abandoned_blocking_call_does_not_keep_the_process_alive():
    code = ("import asyncio, time\nfrom sandbox.lm.aio import in_own_thread\n"
            "async def main():\n    try:\n        await asyncio.wait_for(in_own_thread(time.sleep, 60), 0.1)\n"
            "    except TimeoutError:\n        print('gave up')\nasyncio.run(main())\n")
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert done.stdout.strip() == "gave up" and done.returncode == 0, done.stderr
    assert time.monotonic() - began < 20  # not the 60 s of the abandoned call
