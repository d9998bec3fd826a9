"""Sandbox: persistence, limits, tools, variables, bad input, and clean shutdown."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from sandbox import Budget, BudgetExceeded, Sandbox, SandboxError, WorkerStartError
import sandbox.boundary.repl as repl
from tests.fake_worker import fake_worker


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is not running code
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


@pytest.fixture
def sb():
    with Sandbox(timeout=2.0, kill_grace=1.0) as sandbox:
        yield sandbox


def test_variables_persist_across_cells_and_functions(sb):
    sb.execute("x = 20\ndef double(v):\n    return 2 * v")
    assert sb.execute("print(double(x) + 2)").output == "42\n"
    assert sb.variables() == ["double", "x"]


def test_trailing_expression_is_shown(sb):
    assert sb.execute("x = [1, 2]\nx").output == "[1, 2]\n"
    assert sb.execute("None").output == ""


def test_error_traceback_shows_only_cell_frames(sb):
    sb.execute("def inner():\n    return {}['missing']")
    result = sb.execute("y = 1\ninner()")
    assert result.error.endswith("KeyError: 'missing'")
    assert "<cell 2>, line 2" in result.error and "<cell 1>, line 2, in inner" in result.error
    assert "worker.py" not in result.error and "guards.py" not in result.error


def test_syntax_error_is_reported_not_raised(sb):
    result = sb.execute("def f(:\n  pass")
    assert result.error.startswith("SyntaxError") and result.limit is None


def test_final_and_final_var(sb):
    result = sb.execute("answer = {'n': 3}\nFINAL_VAR('answer')\nprint('not reached')")
    assert result.has_final and result.final == {"n": 3} and result.output == ""
    result = sb.execute("FINAL(None)")
    assert result.has_final and result.final is None
    assert sb.execute("FINAL({1, 2})").final == "{1, 2}"  # not JSON: its str() is the answer
    assert "no variable" in sb.execute("FINAL_VAR('nope')").error
    assert not sb.execute("x = 1").has_final


def test_final_cannot_be_swallowed(sb):
    result = sb.execute("try:\n    FINAL('done')\nexcept BaseException:\n    pass\nprint('after')")
    assert result.final == "done" and result.output == ""


def test_output_is_truncated_keeping_head_and_tail():
    with Sandbox(max_output_chars=100) as sb:
        result = sb.execute("for i in range(1000):\n    print(f'line{i:04d}')")
    assert result.output.startswith("line0000\nline0001")
    assert result.output.endswith("line0999\n")
    assert "[8,900 characters truncated of 9,000]" in result.output
    assert len(result.output) < 200 and result.limit is None


def test_soft_timeout_keeps_state_and_cannot_be_swallowed(sb):
    sb.execute("keep = 'yes'")
    code = "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass"
    result = sb.execute(code, timeout=0.5)
    assert result.limit == "timeout" and not result.restarted
    assert sb.execute("print(keep)").output == "yes\n"


def test_finally_loop_is_still_stopped(sb):
    result = sb.execute("try:\n    pass\nfinally:\n    while True:\n        pass", timeout=0.5)
    assert result.limit == "timeout"


def test_hard_deadline_kills_restarts_and_restores_host_variables(sb):
    sb.set_variable("context", "abc")
    sb.execute("made_by_code = 1")
    old_pid = sb.pid
    started = time.monotonic()
    result = sb.execute("print(sum(range(10**13)))", timeout=0.5)
    assert time.monotonic() - started < 0.5 + 1.0 + 1.0
    assert result.limit == "timeout" and result.restarted and "lost" in result.error
    assert not alive(old_pid) and sb.pid != old_pid
    assert sb.execute("print(context)").output == "abc\n"
    assert "NameError" in sb.execute("made_by_code").error


def test_memory_limit():
    with Sandbox(memory_limit_mb=256) as sb:
        result = sb.execute("x = bytearray(2 * 1024**3)")
        assert result.limit == "memory" and "memory limit" in result.error
        assert sb.execute("print('fine')").output == "fine\n"


def test_output_flood_is_stopped(sb):
    result = sb.execute("while True:\n    print('x' * 1000)", timeout=30)
    assert result.limit == "output" and result.seconds < 10


def test_crash_is_contained(sb):
    result = sb.execute("it = iter([1])\nfor i in range(10**6):\n    it = map(abs, it)\nprint(next(it))", timeout=30)
    assert result.limit == "crash" and result.restarted and "SIGSEGV" in result.error
    assert sb.execute("print(1)").output == "1\n"


def test_tools_round_trip_positional_and_keyword():
    calls = []

    def search(query, limit=3):
        calls.append((query, limit))
        return [{"hit": query, "rank": i} for i in range(limit)]

    with Sandbox(tools={"search": search}) as sb:
        result = sb.execute("r = search('cats', limit=2)\nprint(r[1]['rank'], search('dogs')[0]['hit'])")
    assert result.output == "1 dogs\n" and calls == [("cats", 2), ("dogs", 3)]


def test_tool_errors_cross_as_typed_messages():
    def picky(x):
        raise KeyError("no such key")

    with Sandbox(tools={"picky": picky}) as sb:
        result = sb.execute("try:\n    picky(1)\nexcept KeyError as e:\n    print('caught', e)")
        assert result.output.startswith("caught") and "no such key" in result.output
        assert "TypeError" in sb.execute("picky(1, 2, 3)").error  # wrong arity, raised by the host call


def test_tool_arguments_and_results_must_be_json():
    with Sandbox(tools={"echo": lambda x: x, "bad": lambda: object()}) as sb:
        assert "JSON" in sb.execute("echo({1, 2})").error
        assert "JSON" in sb.execute("bad()").error
        assert sb.execute("print(echo({'a': [1, None, 2.5]}))").output == "{'a': [1, None, 2.5]}\n"


def test_tool_time_does_not_count_against_the_cell_timeout():
    with Sandbox(tools={"slow": lambda: time.sleep(0.6) or "ok"}, timeout=0.5) as sb:
        result = sb.execute("print(slow(), slow())")
    assert result.error is None and result.output == "ok ok\n"


def test_tool_timeout_bounds_a_host_call():
    with Sandbox(tools={"hang": lambda: time.sleep(5)}, tool_timeout=0.3) as sb:
        result = sb.execute("try:\n    hang()\nexcept TimeoutError as e:\n    print('gave up:', e)")
    assert result.output.startswith("gave up: hang() did not return within 0.3 s")


def test_budget_wall_clock_cuts_a_running_cell_and_a_pending_tool():
    budget = Budget(max_seconds=0.8)
    with Sandbox(tools={"hang": lambda: time.sleep(5)}, budget=budget, timeout=30) as sb:
        started = time.monotonic()
        result = sb.execute("hang()")
        assert result.limit == "budget" and time.monotonic() - started < 1.5
        result = sb.execute("print('no time')")
        assert result.limit == "budget" and result.output == ""
    budget = Budget(max_seconds=0.5)
    with Sandbox(budget=budget, timeout=30) as sb:
        result = sb.execute("while True:\n    pass")
        assert result.limit == "budget" and "max_seconds" in result.error and result.stopped_by == "max_seconds"


def test_budget_exceeded_in_a_tool_stops_the_cell():
    def spend(x):
        raise BudgetExceeded("max_llm_calls", "budget exhausted (max_llm_calls): 3 LM calls used", {})

    with Sandbox(tools={"spend": spend}) as sb:
        result = sb.execute("try:\n    spend(1)\nexcept Exception:\n    print('swallowed')\nprint('after')")
    assert result.limit == "budget" and "max_llm_calls" in result.error and result.output == ""
    assert result.stopped_by == "max_llm_calls"


def test_large_string_round_trip():
    text = "lorem ipsum ünïcode " * 2_000_000  # 40 MB
    with Sandbox() as sb:
        sb.set_variable("context", text)
        assert sb.execute("print(len(context))").output == f"{len(text)}\n"
        assert sb.get_variable("context") == text


@pytest.mark.parametrize("cut", [0, 3, 7, 4096])
def test_the_worker_reads_a_frame_however_the_pipe_splits_it(cut):
    from sandbox.boundary.frames import BlockingChannel, FrameError, encode_header

    payload = "é".encode() * 100_000
    frame = encode_header({"type": "set", "name": "context", "payload": len(payload)}) + payload
    read_fd, write_fd = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(write_fd, frame[:cut]), time.sleep(0.05),
                                              os.write(write_fd, frame[cut:] + frame[:-1]), os.close(write_fd)),
                              daemon=True)
    writer.start()
    channel = BlockingChannel(read_fd, -1, max_header=1 << 16, max_payload=len(payload))
    try:
        header, data = channel.read()
        with pytest.raises(FrameError, match="closed"):
            channel.read()  # the second frame is one byte short
    finally:
        os.close(read_fd)
    # bytes, read straight from the pipe: not a bytearray zero-filled first (a pass over fresh pages)
    assert header["name"] == "context" and type(data) is bytes and data == payload


def test_json_variables_and_errors(sb):
    sb.set_variable("data", {"a": [1, 2, {"b": None}]})
    assert sb.execute("print(data['a'][2])").output == "{'b': None}\n"
    sb.execute("s = {1, 2}")
    with pytest.raises(TypeError, match="not JSON-serializable"):
        sb.get_variable("s")
    with pytest.raises(KeyError):
        sb.get_variable("missing")


@pytest.mark.parametrize("name,value,error,match", [
    ("context", b"raw", TypeError, "decode"),
    ("context", object(), TypeError, "JSON value"),
    ("_hidden", "x", ValueError, "starts with '_'"),
    ("not an identifier", "x", ValueError, "identifier"),
    ("class", "x", ValueError, "identifier"),
    ("FINAL", "x", ValueError, "taken"),
])
def test_set_variable_rejects_bad_input(sb, name, value, error, match):
    with pytest.raises(error, match=match):
        sb.set_variable(name, value)


@pytest.mark.parametrize("kwargs,match", [
    ({"timeout": -1}, "timeout"),
    ({"timeout": 0}, "timeout"),
    ({"memory_limit_mb": 16}, "memory_limit_mb"),
    ({"max_output_chars": 0}, "max_output_chars"),
    ({"tools": {"_x": print}}, "starts with '_'"),
    ({"tools": {"FINAL": print}}, "reserved"),
    ({"tools": {"f": 3}}, "callable"),
    ({"budget": {"max_seconds": 1}}, "sandbox.Budget"),
])
def test_constructor_rejects_bad_input(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Sandbox(**kwargs)


def test_execute_rejects_non_string_code(sb):
    with pytest.raises(TypeError, match="code must be a str"):
        sb.execute(b"print(1)")


def test_close_kills_the_worker_and_is_idempotent():
    sb = Sandbox()
    pid = sb.pid
    sb.close()
    sb.close()
    assert not alive(pid)
    with pytest.raises(SandboxError, match="closed"):
        sb.execute("1")


def test_forgotten_sandbox_is_cleaned_up():
    sb = Sandbox()
    pid = sb.pid
    del sb
    import gc
    gc.collect()
    assert not alive(pid)


def test_worker_start_failure_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(repl, "WORKER_PROGRAM", "import sys; sys.stderr.write('boom at start'); sys.exit(3)")
    with pytest.raises(WorkerStartError, match="boom at start"):
        Sandbox()
    monkeypatch.setattr(repl.sys, "executable", "/nonexistent/python")
    with pytest.raises(WorkerStartError, match="could not start"):
        Sandbox()


MALICIOUS_WORKER = fake_worker("""
read()
os.write(1, struct.pack('>I', 9) + b'not json!')
""")


def test_malformed_frame_kills_the_worker(monkeypatch):
    monkeypatch.setattr(repl, "WORKER_PROGRAM", MALICIOUS_WORKER)
    with Sandbox() as sb:
        pid = sb.pid
        result = sb.execute("1")
        assert result.limit == "crash" and result.restarted
        assert not alive(pid)


def test_oversized_frame_is_refused_before_allocation(monkeypatch):
    monkeypatch.setattr(repl, "WORKER_PROGRAM", MALICIOUS_WORKER.replace(
        "os.write(1, struct.pack('>I', 9) + b'not json!')", "os.write(1, struct.pack('>I', 2**32 - 1))"))
    with Sandbox() as sb:
        assert sb.execute("1").limit == "crash"


def test_concurrent_callers_are_serialized(sb):
    sb.execute("n = 0")
    errors = []

    def bump():
        for _ in range(20):
            result = sb.execute("n += 1")
            if result.error:
                errors.append(result.error)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sb.execute("print(n)").output == "80\n"


def test_cell_result_is_json_serializable(sb):
    json.dumps(sb.execute("print('hi')").to_dict())


def test_submit_maps_values_onto_output_fields():
    with Sandbox(submit_fields=["answer", "count"]) as sb:
        assert sb.execute("SUBMIT('x', count=3)").final == {"answer": "x", "count": 3}
        assert sb.execute("SUBMIT(count={1}, answer='y')").final == {"answer": "y", "count": "{1}"}
        assert "missing count" in sb.execute("SUBMIT('only answer')").error
        assert "unknown output field 'extra'" in sb.execute("SUBMIT('a', 1, extra=2)").error
    with Sandbox() as sb:
        assert sb.execute("SUBMIT(answer=1)").final == {"answer": 1}
        assert sb.execute("SUBMIT('plain')").final == "plain"


def test_configure_replaces_tools_and_keeps_variables():
    with Sandbox(tools={"a": lambda: "A"}) as sb:
        sb.execute("kept = 1")
        sb.configure(tools={"b": lambda: "B"}, submit_fields=["out"])
        assert sb.execute("print(b(), kept)").output == "B 1\n"
        assert "NameError" in sb.execute("a()").error
        assert sb.execute("SUBMIT(5)").final == {"out": 5}
        sb.restart()
        assert sb.execute("print(b())").output == "B\n"  # configuration survives a restart
    with pytest.raises(ValueError, match="repeat"):
        Sandbox(submit_fields=["x", "x"])
