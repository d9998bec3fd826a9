"""call_with_timeout: what a root LM call under a wall-clock cap runs on."""

from __future__ import annotations

import contextvars
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox.lm.aio import CallTimedOut, call_with_timeout

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
