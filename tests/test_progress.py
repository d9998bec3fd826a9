"""The progress display: a line per iteration, the code before its result, a clock that ticks on a terminal."""

from __future__ import annotations

import io
import re
import threading
import time

from sandbox.app.progress import CLEAR_LINE, CODE_LINES, ProgressDisplay


class Terminal(io.StringIO):
    """A stream that says it is a terminal; ``write`` is thread-safe enough for one reader."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self.lock:
            return super().write(text)

    def text(self) -> str:
        with self.lock:
            return self.getvalue()


def clocks(text: str) -> list[str]:
    return re.findall(r"\| +([\d.]+)s\]", text)


def test_the_clock_ticks_on_a_terminal_without_events_and_stops_cleanly():
    out = Terminal()
    with ProgressDisplay(out, tick_seconds=0.05) as progress:
        progress({"kind": "iteration", "depth": 0, "iteration": 1})
        deadline = time.monotonic() + 30
        while len(set(clocks(out.text()))) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(set(clocks(out.text()))) >= 3  # the elapsed time moved with no event arriving
    assert not any(t.name == "rlm-progress" for t in threading.enumerate())
    assert out.text().endswith(CLEAR_LINE)  # the status line is gone: what comes next starts on a clean line
    written = len(out.text())
    time.sleep(0.2)
    assert len(out.text()) == written


def test_not_a_terminal_gets_plain_lines_and_no_ticker():
    out = io.StringIO()
    with ProgressDisplay(out, tick_seconds=0.01) as progress:
        progress({"kind": "iteration", "depth": 0, "iteration": 1})
        time.sleep(0.1)
        assert not any(t.name == "rlm-progress" for t in threading.enumerate())
    assert out.getvalue() == "" and "\r" not in out.getvalue()


def feed(progress: ProgressDisplay, *events: dict) -> None:
    for event in events:
        progress({"depth": 0, **event})


def test_one_line_per_iteration_and_the_code_before_its_result():
    out = io.StringIO()
    code = "\n".join(f"line_{i} = {i}" for i in range(CODE_LINES + 3))
    with ProgressDisplay(out) as progress:
        feed(progress,
             {"kind": "iteration", "iteration": 1},
             {"kind": "lm_call", "iteration": 1, "reply": "I will think first.\nMore.", "seconds": 2.5,
              "prompt_tokens": 100, "completion_tokens": 20},
             {"kind": "iteration", "iteration": 2},
             {"kind": "lm_call", "iteration": 2, "reply": "```repl\n...", "seconds": 1.0},
             {"kind": "sub_call", "depth": 1, "prompt": "p", "prompt_tokens": 5, "completion_tokens": 5},
             {"kind": "cell", "iteration": 2, "code": code, "output": "found it\nsecond line\n", "seconds": 0.5},
             {"kind": "iteration", "iteration": 3},
             {"kind": "lm_call", "iteration": 3, "reply": "```repl\nFINAL(x)\n```", "seconds": 1.0},
             {"kind": "cell", "iteration": 3, "code": "FINAL(x)", "output": "", "error": "Traceback\nNameError: x",
              "seconds": 0.01})
    lines = out.getvalue().splitlines()
    assert lines == [
        "iteration 1: the model replied in 2.5 s (120 tokens)",
        "  no code ran; the reply began: I will think first. ...",
        "iteration 2: the model replied in 1.0 s",
        *(f"  | line_{i} = {i}" for i in range(CODE_LINES)),
        "  | ... (3 more lines)",
        "  -> ok, printed: found it ... (0.50 s)",
        "iteration 3: the model replied in 1.0 s",
        "  | FINAL(x)",
        "  -> error: NameError: x (0.01 s)",
    ]
    assert (progress.iteration, progress.sub_calls, progress.llm_calls, progress.tokens) == (3, 1, 4, 130)


def test_partial_answer_is_the_final_answer_else_the_last_root_output():
    progress = ProgressDisplay(quiet=True)
    assert progress.partial_answer() is None
    feed(progress, {"kind": "cell", "code": "print(1)", "output": "first\n"},
         {"kind": "cell", "code": "print(2)", "output": "second\n"},
         {"kind": "cell", "depth": 1, "code": "print(3)", "output": "a child's\n"},
         {"kind": "cell", "code": "oops", "output": "", "error": "NameError"})
    assert progress.partial_answer() == "second"
    feed(progress, {"kind": "final", "answer": "42", "stop_reason": "final"})
    assert progress.partial_answer() == "42"
    assert [e["kind"] for e in progress.event_tree()["events"]] == ["cell"] * 4 + ["final"]


def test_the_events_seen_are_kept_as_an_event_tree():
    progress = ProgressDisplay(quiet=True)
    progress({"kind": "iteration", "depth": 0, "iteration": 4})
    assert progress.iteration == 4
    assert progress.event_tree("q") == {"query": "q", "depth": 0, "children": [],
                                        "events": [{"kind": "iteration", "depth": 0, "iteration": 4}]}


def test_the_answer_line_is_left_to_callers_that_report_it_themselves():
    final = {"kind": "final", "depth": 0, "answer": "42", "stop_reason": "final"}
    shown, left = io.StringIO(), io.StringIO()
    ProgressDisplay(shown)(final)
    ProgressDisplay(left, show_answer=False)(final)
    assert shown.getvalue().startswith("answer: 42  (stop: final) [iteration 0 | sub-calls 0")
    assert left.getvalue() == ""
