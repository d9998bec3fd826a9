"""`rlm ask` in a real terminal (tmux), against a scripted OpenAI-compatible server that answers slowly:
the clock ticks while the model thinks, one line per iteration, the code shown, the answer once; and
Ctrl-C stops the run cleanly (one line, the partial answer, the trace file, exit 130, no workers left).

Every wait polls the screen against a deadline, so a loaded machine makes these slower, not flaky.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.openai_stub import OpenAIStub

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="needs tmux for a real terminal (apt-get install tmux)")
ROOT = Path(__file__).resolve().parents[1]
EXIT = re.compile(r"^EXIT=(\d+)$", re.MULTILINE)


class SlowStub(OpenAIStub):
    """The scripted server: each reply is ``(seconds, text)``, sent after that delay (cut short at exit)."""

    def __init__(self, replies: list[tuple[float, str]]):
        super().__init__()
        self.script = list(replies)
        self.release = threading.Event()
        self.server.handle_error = lambda request, address: None  # a client gone at Ctrl-C is expected

    def completion(self, body: dict) -> dict:
        delay, text = self.script.pop(0) if self.script else (0.0, "```repl\nprint('again')\n```")
        self.release.wait(delay)
        payload = OpenAIStub.completion(body)
        payload["choices"][0]["message"]["content"] = text
        return payload

    def __exit__(self, *exc) -> None:
        self.release.set()
        super().__exit__(*exc)


class Terminal:
    """A 200x50 tmux session of its own (a private tmux server, killed at the end)."""

    def __init__(self, name: str):
        self.socket = name
        self.tmux("new-session", "-d", "-x", "200", "-y", "50", "-s", "t", "bash --norc --noprofile")

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True,
                              timeout=30).stdout

    def type(self, line: str) -> None:
        self.tmux("send-keys", "-t", "t", "-l", line)
        self.tmux("send-keys", "-t", "t", "Enter")

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-t", "t", "-S", "-200")

    def wait_for(self, check, timeout: float = 120.0, step: float = 0.1) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if check(screen):
                return screen
            if time.monotonic() > deadline:
                pytest.fail(f"the terminal did not show what was expected within {timeout:g} s:\n{screen}")
            time.sleep(step)

    def program_pid(self) -> int | None:
        """The PID of the program running in the pane (the shell's child), if any."""
        shell = int(self.tmux("display-message", "-p", "-t", "t", "#{pane_pid}").strip())
        children = children_of(shell)
        return children[0] if children else None

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def terminal(request):
    term = Terminal(f"rlm-test-{request.node.name}-{time.monotonic_ns()}"[:90])
    yield term
    term.close()


@pytest.fixture
def document(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text("alpha beta gamma delta\n" * 200)
    return path


def start_ask(terminal: Terminal, tmp_path: Path, stub: SlowStub, document: Path, *options: str) -> Path:
    """Type `rlm ask ...` (from a script, so the screen holds only what the program writes)."""
    trace = tmp_path / "trace.json"
    command = [sys.executable, "-m", "sandbox.app.cli", "ask", "What comes first?", "--context", str(document),
               "--model", "openai/stub", "--api-base", stub.api_base, "--trace", str(trace), *options]
    script = tmp_path / "ask.sh"
    script.write_text(f"cd {shlex.quote(str(ROOT))}\nexport PYTHONPATH={shlex.quote(str(ROOT))}\n"
                      f"exec {shlex.join(command)}\n")
    terminal.type(f"clear; bash {shlex.quote(str(script))}; echo EXIT=$?")
    return trace


def test_progress_in_a_terminal(terminal, tmp_path, document):
    replies = [(4.0, "I will look at the context first."),
               (0.3, "```repl\nhead = context[:16]\nprint(head)\n```"),
               (0.3, "```repl\nFINAL('the answer is ' + head)\n```")]
    with SlowStub(replies) as stub:
        start_ask(terminal, tmp_path, stub, document)
        clocks: set[str] = set()

        def ticked_while_waiting(screen: str) -> bool:
            if "iteration 1: the model replied" in screen:
                return True  # the reply came: stop collecting
            clocks.update(re.findall(r"\[iteration 1 \| sub-calls 0 \| tokens 0 \| +([\d.]+)s\]", screen))
            return False

        terminal.wait_for(ticked_while_waiting)
        screen = terminal.wait_for(EXIT.search)
    assert len(clocks) >= 2, f"the clock did not move while the model was thinking: {clocks}"
    lines = [line.rstrip() for line in screen.splitlines()]
    assert EXIT.search(screen).group(1) == "0"
    assert [line.split(":")[0] for line in lines if line.startswith("iteration ")] == \
        ["iteration 1", "iteration 2", "iteration 3"]
    assert "  no code ran; the reply began: I will look at the context first." in lines
    code = lines.index("  | head = context[:16]")
    assert lines[code + 1] == "  | print(head)" and lines[code + 2].startswith("  -> ok, printed: alpha beta gamma")
    assert "  | FINAL('the answer is ' + head)" in lines
    assert screen.count("the answer is alpha") == 1 and "Answer: the answer is alpha beta gamma" in screen
    assert "[iteration" not in screen  # the status line was cleared before the report


@pytest.mark.parametrize("engine,moment", [("graph", "model"), ("dspy", "model"), ("graph", "cell")])
def test_ctrl_c_stops_cleanly_with_the_partial_answer_and_the_trace(terminal, tmp_path, document, engine, moment):
    """Ctrl-C while the model thinks (its reply is 300 s away), or while a cell runs (it would for 60 s)."""

    def reply(code: str) -> str:
        if engine == "graph":
            return f"```repl\n{code}\n```"
        return f"[[ ## reasoning ## ]]\nnext\n\n[[ ## code ## ]]\n```python\n{code}\n```\n\n[[ ## completed ## ]]"

    second = (300.0, reply("FINAL('too late')")) if moment == "model" else (0.3, reply("while True:\n    pass"))
    busy = "[iteration 2" if moment == "model" else "iteration 2: the model replied"
    with SlowStub([(0.3, reply("print('partial: ' + context[:10])")), second]) as stub:
        trace = start_ask(terminal, tmp_path, stub, document, "--engine", engine)
        terminal.wait_for(lambda screen: "-> ok, printed: partial: alpha beta" in screen and busy in screen)
        program = terminal.program_pid()
        assert program is not None
        workers = children_of(program)
        assert workers, "the run has a sandbox worker process"
        terminal.tmux("send-keys", "-t", "t", "C-c")
        pressed = time.monotonic()
        screen = terminal.wait_for(EXIT.search, timeout=60)
        waited = time.monotonic() - pressed
    assert EXIT.search(screen).group(1) == "130"
    assert waited < 30  # it waited neither for the model's reply nor for the cell
    assert screen.count("rlm: interrupted") == 1
    assert "Traceback" not in screen and "KeyboardInterrupt" not in screen
    assert "Answer: partial: alpha beta" in screen and "Stopped: interrupted after 2 iterations (the answer is " \
        "partial)" in screen
    saved = json.loads(trace.read_text())
    assert saved["stop_reason"] == "interrupted" and saved["answer"] == "partial: alpha beta"
    assert any(e["kind"] == "cell" for e in saved["events"]["events"])
    deadline = time.monotonic() + 10
    while any(map(running, [program, *workers])) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in [program, *workers] if running(pid)], "processes left running after Ctrl-C"
