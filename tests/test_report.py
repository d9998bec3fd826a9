"""The trajectory report (sandbox.app.report): every input shape, every event kind, nesting, escaping,
clear errors, and the page itself in headless Chromium (it renders, it expands, nothing comes from
the network). Chromium is driven over the DevTools protocol on a pipe: no driver, no port."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
import select
import shutil
import struct
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import dspy
import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from rlm_dspy import RLM
from rlm_graph import create_rlm_graph
from sandbox import Evaluation, Trajectory
from sandbox.app import cli, report
from sandbox.engine.trajectory import EVENT_KINDS
from tests.conftest import FakeLM
from tests.dspy_lms import script_lm, text_lm
from tests.openai_stub import OpenAIStub

PAYLOADS = ("<script>window.__pwned=1</script>", "</script><script>window.__pwned=2</script>",
            '<img src=x onerror="window.__pwned=3">', '"><svg onload="window.__pwned=4">', "</pre></details><b>x")
EVIL = " ".join(PAYLOADS)
CHROMIUM = os.environ.get("RLM_CHROMIUM") or next(
    (found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not found: install Debian's `chromium` package (.ci/setup does as root) "
                             "or set RLM_CHROMIUM to a Chromium binary")


def cell(code: str) -> str:
    return f"Look first.\n```repl\n{code}\n```"


def evaluator(query: str, answer: Any) -> Evaluation:
    return Evaluation(1.0, True) if answer == "complete" else Evaluation(0.3, False, "mention the year")


@pytest.fixture(scope="module")
def graph_result() -> dict[str, Any]:
    """A LangGraph run with a search, a child RLM (a sub-call, an error, rejected answers) and a verdict."""
    root = FakeListChatModel(responses=[
        cell("print(len(context))\nhits = search('launch code', k=2)\nprint(hits[0]['offset'])"),
        cell("sub = rlm_query('count the words', 'one two three')\nprint(sub)"),
        cell("FINAL(len(context.split()))"),  # the child's replies: its first is rejected
        cell(f"a = llm_query({EVIL!r})\nprint(a)\n1/0"),
        cell("FINAL('draft')"),
        cell("FINAL('complete')")])
    graph = create_rlm_graph(root, sub_model=FakeLM(lambda p: p.lower(), cost_usd=0.001), max_depth=1,
                             evaluator=evaluator)
    return graph.invoke({"query": "What is the launch code?", "context": "the launch code is 1. " * 50})


def kinds_trajectory() -> Trajectory:
    """A trajectory with one event of every kind in EVENT_KINDS (a new kind fails the test that reads it)."""
    root = Trajectory(f"query {EVIL}")
    samples = {
        "iteration": {"iteration": 1},
        "lm_call": {"iteration": 1, "reply": f"reasoning {EVIL}\n```repl\nx = 1\n```", "prompt_tokens": 5,
                    "completion_tokens": 7, "seconds": 0.1},
        "sub_call": {"prompt": f"prompt {EVIL}", "prompt_chars": 9, "answer": f"answer {EVIL}", "prompt_tokens": 3,
                     "completion_tokens": 4, "seconds": 0.01, "model": "fake/lm"},
        "search": {"query": f"words {EVIL}", "k": 2, "hits": [{"offset": 10, "score": 0.5}], "top": f"top {EVIL}",
                   "built_index": True, "seconds": 0.002},
        "rlm_query": {"prompt": f"child {EVIL}", "child_depth": 1, "degraded": False, "context_chars": 4},
        "budget": {"limit": "max_tokens", "message": f"budget exhausted {EVIL}", "spent": {"tokens": 99}},
        "note": {"message": f"note {EVIL}"},
        "compaction": {"iteration": 1, "steps": 3, "chars_before": 9000, "chars_after": 300, "prompt_tokens": 40,
                       "completion_tokens": 20, "summary": f"summary {EVIL}"},
        "cell": {"iteration": 1, "code": f"print({EVIL!r})", "code_chars": 20, "output": f"out {EVIL}",
                 "output_chars": 9, "error": f"ValueError: {EVIL}", "error_chars": 9, "limit": None,
                 "has_final": False, "seconds": 0.2, "restarted": False},
        "evaluation": {"iteration": 1, "score": 0.2, "passed": False, "feedback": f"feedback {EVIL}",
                       "checkpoint": "evaluator", "decision": "refine", "reason": "refine"},
        "final": {"answer": f"answer {EVIL}", "stop_reason": "max_tokens", "iteration": 1},
    }
    assert set(samples) == EVENT_KINDS, "a new event kind: give it a sample here and a renderer in sandbox.app.report"
    child = None
    for kind, fields in samples.items():
        if kind == "rlm_query":
            child = root.child(fields["prompt"])
        root.record(kind, **fields)
    assert child is not None
    child.record("iteration", iteration=1)
    grandchild = child.child("grandchild query")
    child.record("rlm_query", prompt="grandchild query", child_depth=2, degraded=False, context_chars=3)
    grandchild.record("iteration", iteration=1)
    grandchild.record("cell", iteration=1, code="print('deepest')", output="deepest\n", error=None, seconds=0.01)
    child.record("cell", iteration=1, code="print(rlm_query('grandchild query'))", output="x", error=None)
    child.record("final", answer="child answer", stop_reason="final", iteration=1)
    return root


class Elements(HTMLParser):
    """For each element with an id: the ids of the ``<details>`` around it, outermost first."""

    VOID = frozenset({"meta", "br", "img", "input", "hr", "link", "wbr", "source"})

    def __init__(self, text: str):
        super().__init__()
        self.stack: list[tuple[str, str | None]] = []
        self.inside: dict[str, list[str]] = {}
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if attributes.get("id"):
            self.inside[str(attributes["id"])] = [i for t, i in self.stack if t == "details" and i]
        if tag not in self.VOID:
            self.stack.append((tag, attributes.get("id")))

    def handle_endtag(self, tag: str) -> None:
        while self.stack and self.stack.pop()[0] != tag:
            pass


def ids_of(page: str, pattern: str) -> list[str]:
    return re.findall(rf'id="({pattern})"', page)


# Unit: input shapes


def test_reads_the_file_rlm_ask_trace_writes(tmp_path, capsys):
    document = tmp_path / "doc.txt"
    document.write_text("alpha beta gamma\n" * 100)
    trace, page = tmp_path / "trace.json", tmp_path / "report.html"

    def completion(content: str) -> tuple[int, dict]:
        body = OpenAIStub.completion({"model": "m", "messages": [{"role": "user", "content": ""}]})
        body["choices"][0]["message"]["content"] = content
        return 200, body

    with OpenAIStub() as stub:
        stub.responses = [completion("```repl\nprint(len(context))\n```"), completion("```repl\nFINAL('done')\n```")]
        assert cli.main(["ask", "how long?", "--context", str(document), "--model", "openai/stub",
                         "--api-base", stub.api_base, "--trace", str(trace)]) == 0
    assert report.main([str(trace), "-o", str(page)]) == 0
    assert f"Report: {page}" in capsys.readouterr().out
    html = page.read_text()
    assert "how long?" in html and "<pre id=\"answer-0\">done</pre>" in html and "1700" in html
    assert ids_of(html, r"r-i\d+") == ["r-i1", "r-i2"]


def test_default_output_is_the_trace_with_an_html_suffix(tmp_path, graph_result):
    trace = tmp_path / "run.json"
    trace.write_text(json.dumps(graph_result, default=str))
    assert report.main([str(trace)]) == 0
    assert (tmp_path / "run.html").read_text().startswith("<!DOCTYPE html>")


def test_renders_a_langgraph_result(graph_result, tmp_path):
    out = report.write_report(graph_result, tmp_path / "graph.html")
    html = out.read_text()
    assert graph_result["stop_reason"] == "accepted"
    assert '<b>accepted</b> <span class="mute">the evaluator accepted the answer' in html
    assert '<pre id="answer-0">complete</pre>' in html
    assert "count the words" in html and "k=2" in html and "ZeroDivisionError: division by zero" in html
    assert "Problems (3)" in html  # two rejected child answers, one cell error
    assert html.count('class="verdict"') == 3
    usage = graph_result["usage"]
    assert f"{usage['llm_calls']} LM calls, {usage['tokens']:,} tokens" in html


def test_renders_a_dspy_prediction():
    root = script_lm({"reasoning": "count", "code": "```python\nprint(len(context.split()))\n```"},
                     {"reasoning": "done", "code": "```python\nSUBMIT(answer=llm_query('shout'), count=3)\n```"})
    rlm = RLM("context, query -> answer: str, count: int", sub_lm=text_lm(str.upper))
    with dspy.context(lm=root):
        out = rlm(context="alpha beta gamma", query="how many words?")
    html = report.render_report(out)
    assert '<div class="lbl">answer</div><pre id="answer-0">SHOUT</pre>' in html
    assert '<div class="lbl">count</div><pre id="answer-1">3</pre>' in html
    assert "<b>final</b>" in html and f"{out.usage['tokens']:,} tokens" in html
    assert ids_of(html, r"r-i\d+") == ["r-i1", "r-i2"] and "shout" in html


def test_renders_a_trajectory_dict_and_object():
    trajectory = kinds_trajectory()
    for source in (trajectory, trajectory.to_dict(), json.loads(trajectory.to_json())):
        html = report.render_report(source)
        assert "<b>max_tokens</b>" in html and "the budget&#x27;s token cap was reached" in html
        assert "counted from the events; the trace has no usage" in html


def test_every_event_kind_is_laid_out():
    html = report.render_report(kinds_trajectory())
    for kind in EVENT_KINDS - {"iteration"}:
        assert f'class="k k-{kind}"' in html, kind
    assert '<span class="t">+' in html and "Iteration 1" in html
    assert "unknown event kind" not in html and "event without a kind" not in html


def test_unknown_and_malformed_events_show_as_recorded():
    data = kinds_trajectory().to_dict()
    data["events"] += [{"kind": "telemetry", "t": 1.5, "gpu": "<b>hot</b>"}, "not an event", None, {"t": "soon"},
                       {"kind": "sub_call", "t": "late", "prompt_tokens": "many", "prompt": ["a", 1]},
                       {"kind": "search", "hits": "none", "seconds": None}]
    html = report.render_report(data)
    assert "unknown event kind &#x27;telemetry&#x27;" in html and "&lt;b&gt;hot&lt;/b&gt;" in html
    assert "&quot;not an event&quot;" in html and "event without a kind" in html
    assert "[&quot;a&quot;, 1]" in html  # a list where text was expected is shown as JSON
    assert html.index("event without a kind") < html.index("[&quot;a&quot;, 1]")  # a null event ends nothing


def test_fields_the_page_does_not_lay_out_still_show():
    trajectory = Trajectory("q")
    trajectory.record("cell", code="x", output="", error=None, gpu_seconds=12.5)
    assert "<b>gpu_seconds</b><div>12.5</div>" in report.render_report(trajectory)


def test_child_runs_are_folded_inside_the_cell_that_started_them():
    html = report.render_report(kinds_trajectory())
    elements = Elements(html)
    (child,) = ids_of(html, r"r-i1\.e\d+")
    (grandchild,) = ids_of(html, r"r-i1\.e\d+-i1\.e\d+")
    assert elements.inside[child] == ["r-i1"]
    assert elements.inside[grandchild] == ["r-i1", child, f"{child}-i1"]
    deepest = html.index("print(&#x27;deepest&#x27;)")
    assert html.index(f'id="{grandchild}"') < deepest < html.index('<pre>child answer</pre>')


def test_children_without_an_rlm_query_event_still_show():
    data = Trajectory("q").to_dict()
    data["children"] = [kinds_trajectory().children[0].to_dict()]
    assert "child RLM at depth 1" in report.render_report(data)


def test_escapes_everything_from_the_trace(graph_result):
    for html in (report.render_report(kinds_trajectory()), report.render_report(graph_result)):
        elements = Elements(html)
        tags = [tag for tag, _ in elements.tags]
        assert tags.count("script") == 1 and tags.count("svg") == 1 and "img" not in tags
        assert not [name for _, attributes in elements.tags for name in attributes if name.startswith("on")]
        assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
        assert "&lt;/pre&gt;&lt;/details&gt;&lt;b&gt;x" in html and "<script>window.__pwned" not in html


def test_the_page_forbids_every_load_and_allows_only_its_own_inline_code():
    html = report.render_report(kinds_trajectory())
    (csp,) = re.findall(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', html)
    rules = dict(rule.strip().split(" ", 1) for rule in csp.split(";"))
    assert rules["default-src"] == "'none'" and rules["img-src"] == "'none'" and rules["base-uri"] == "'none'"
    for directive, tag in (("script-src", "script"), ("style-src", "style")):
        (body,) = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S)
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert rules[directive] == f"'sha256-{digest}'"
    assert html.index("Content-Security-Policy") < html.index("<style>") < html.index("<body>")
    links = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert links and all(link.startswith("#") for link in links)


def test_a_large_trace_renders_fast_and_collapsed():
    trajectory = Trajectory("big")
    for i in range(1, 201):
        trajectory.record("iteration", iteration=i)
        trajectory.record("lm_call", iteration=i, reply=f"step {i}\n```repl\nprint({i})\n```" + "x" * 400,
                          prompt_tokens=100, completion_tokens=10, seconds=0.1)
        for j in range(3):
            trajectory.record("sub_call", prompt=f"chunk {j} " + "y" * 300, prompt_chars=300, answer="none",
                              prompt_tokens=80, completion_tokens=2, seconds=0.05, model="m")
        trajectory.record("cell", iteration=i, code=f"print({i})", output="z" * 200, error=None, seconds=0.1)
    assert len(trajectory.to_json()) > 250_000
    began = time.monotonic()
    html = report.render_report(trajectory)
    assert time.monotonic() - began < 5
    details = [attributes for tag, attributes in Elements(html).tags if tag == "details"]
    assert len(details) > 800 and not any("open" in attributes for attributes in details)


# Unit: what is not a trace


@pytest.mark.parametrize("content, message", [
    ("not json {", r"is not JSON \(Expecting value at line 1, column 1\)"),
    ("[1, 2]", r"is not a trace: expected a run's result .* got a list of 2 items"),
    ('{"answer": 1, "usage": {}}', r"got an object with keys 'answer', 'usage'"),
    ('{"trajectory": {"events": "x"}}', r"trace.json: trajectory: 'events' is a str, not a list of events"),
    ('{"events": [], "children": {"a": 1}}', r"'children' is an object with keys 'a', not a list"),
    ('{"events": [], "children": [{"query": "q"}]}', r"children\[0\]: 'events' is missing"),
    ('{"events": [], "children": [3]}', r"children\[0\] is not a trajectory \(an object with an 'events' list\): it is a int"),
])
def test_a_file_that_is_not_a_trace_is_named(tmp_path, capsys, content, message):
    path = tmp_path / "trace.json"
    path.write_text(content)
    with pytest.raises(report.ReportError, match=message) as raised:
        report.load_trace(path)
    assert str(path) in str(raised.value) and "rlm ask --trace FILE" in str(raised.value)
    assert report.main([str(path), "-o", str(tmp_path / "out.html")]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out.html").exists()


def test_missing_and_binary_files_are_named(tmp_path, capsys):
    assert report.main([str(tmp_path / "nope.json")]) == 2
    assert "nope.json: no such file; give the JSON file that `rlm ask --trace FILE` writes" in capsys.readouterr().err
    binary = tmp_path / "trace.bin"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(report.ReportError, match="is not UTF-8 text, so it is not a trace"):
        report.load_trace(binary)
    with pytest.raises(report.ReportError, match="the given int is not a trace"):
        report.render_report(42)


def test_an_unwritable_output_is_named(tmp_path, capsys):
    trace = tmp_path / "t.json"
    trace.write_text(kinds_trajectory().to_json())
    assert report.main([str(trace), "-o", str(tmp_path / "missing" / "r.html")]) == 2
    assert "cannot write" in capsys.readouterr().err


# Browser


class Chromium:
    """Headless Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``): it reads
    commands on fd 3 and writes replies and events on fd 4, NUL-separated JSON."""

    def __init__(self, binary: str, profile: Path):
        to_chrome, self.commands = os.pipe()
        self.replies, from_chrome = os.pipe()
        # The child's ends above 9, so that moving them onto 3 and 4 cannot overwrite one with the other (bash,
        # not sh: dash takes one-digit descriptors only).
        to_chrome, from_chrome = (self._above_9(fd) for fd in (to_chrome, from_chrome))
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{to_chrome} 4>&{from_chrome}', binary, "--headless", "--no-sandbox",
             "--disable-gpu", "--remote-debugging-pipe", f"--user-data-dir={profile}", "--no-first-run",
             "--disable-background-networking", "--hide-scrollbars", "about:blank"],
            pass_fds=(to_chrome, from_chrome), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome)
        os.close(from_chrome)
        self.buffer, self.last_id, self.events, self.session = b"", 0, [], None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Network", "Runtime"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=1280, height=1000, deviceScaleFactor=1, mobile=False)

    @staticmethod
    def _above_9(fd: int) -> int:
        moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(fd)
        return moved

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        self.last_id += 1
        message: dict[str, Any] = {"id": self.last_id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        reply = self._read(lambda m: m.get("id") == self.last_id, timeout)
        assert "error" not in reply, f"{method}: {reply['error']}"
        return reply["result"]

    def wait_for(self, method: str, timeout: float = 30) -> dict[str, Any]:
        return self._read(lambda m: m.get("method") == method, timeout)

    def _read(self, wanted: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self.buffer:
                raw, _, self.buffer = self.buffer.partition(b"\0")
                message = json.loads(raw)
                if "method" in message:
                    self.events.append(message)
                if wanted(message):
                    return message
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.replies], [], [], left)[0]:
                raise TimeoutError(f"Chromium did not answer within {timeout} s")
            chunk = os.read(self.replies, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self.buffer += chunk

    def open(self, path: Path) -> None:
        self.events.clear()
        self.call("Page.navigate", url=path.as_uri())
        self.wait_for("Page.loadEventFired")

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click (pressed and released) on the middle of the element's first line."""
        x, y = self.js(f"(() => {{const e = document.querySelector({json.dumps(selector)}); "
                       "e.scrollIntoView({block: 'center'}); const r = e.getClientRects()[0]; "
                       "return [r.left + Math.min(r.width / 2, 60), r.top + Math.min(r.height / 2, 9)];})()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self) -> bytes:
        height = self.js("document.documentElement.scrollHeight")
        self.call("Emulation.setDeviceMetricsOverride", width=1280, height=min(height, 4000), deviceScaleFactor=1,
                  mobile=False)
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (TimeoutError, RuntimeError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.commands)
        os.close(self.replies)


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    browser = Chromium(CHROMIUM, tmp_path_factory.mktemp("chromium-profile"))
    yield browser
    browser.close()


def requests(browser: Chromium) -> list[str]:
    return [e["params"]["request"]["url"] for e in browser.events if e["method"] == "Network.requestWillBeSent"]


@needs_chromium
def test_the_page_renders_and_loads_nothing_but_itself(chromium, graph_result, tmp_path):
    page = report.write_report(graph_result, tmp_path / "graph.html")
    chromium.open(page)
    assert chromium.js("document.title") == "RLM report: What is the launch code?"
    text = chromium.js("document.body.innerText")
    assert "accepted" in text and "Problems (3)" in text and "Iteration 2" in text
    assert chromium.js("document.querySelectorAll('#timeline details[open]').length") == 0
    assert chromium.js("document.querySelector('#budget-chart').getBoundingClientRect().height") > 100
    assert not [e for e in chromium.events if e["method"] == "Runtime.exceptionThrown"]
    assert requests(chromium) == [page.as_uri()]
    assert chromium.js("typeof window.__pwned") == "undefined"


@needs_chromium
def test_clicking_expands_the_tree(chromium, graph_result, tmp_path):
    chromium.open(report.write_report(graph_result, tmp_path / "graph.html"))
    visible = "(i => document.getElementById(i).checkVisibility())"
    child = chromium.js("document.querySelector('#r-i2 details.run').id")
    child_cell = chromium.js(f"document.getElementById({json.dumps(child)}).querySelector('.cell').id")
    assert chromium.js(f"{visible}('r-i2')") and not chromium.js(f"{visible}({json.dumps(child_cell)})")
    chromium.click("#r-i2 > summary")
    assert chromium.js("document.querySelector('#r-i2').open") is True
    first_cell = chromium.js("document.querySelector('#r-i2 .cell').id")
    assert chromium.js(f"{visible}({json.dumps(first_cell)})")
    assert not chromium.js(f"{visible}({json.dumps(child_cell)})")
    chromium.click(f'[id="{child}"] > summary')
    chromium.click(f'[id="{child}"] details.it > summary')
    assert chromium.js(f"{visible}({json.dumps(child_cell)})")
    chromium.click("button[data-act=collapse]")
    assert chromium.js("document.querySelectorAll('#timeline details[open]').length") == 0
    chromium.click("#problems a")  # a problem's link opens every fold around it
    time.sleep(0.2)
    target = chromium.js("decodeURIComponent(location.hash.slice(1))")
    assert target and chromium.js(f"{visible}({json.dumps(target)})")
    chromium.click("button[data-act=expand]")
    assert chromium.js("[...document.querySelectorAll('#timeline details')].every(d => d.open)")


@needs_chromium
def test_a_load_slipped_into_the_page_is_blocked(chromium, tmp_path):
    """What escaping keeps out, the Content-Security-Policy would still stop: inject loads and an
    inline script as if escaping had failed, and see Chromium block each one."""
    html = report.render_report(kinds_trajectory())
    slipped = ('<img src="http://127.0.0.1:9/i.png"><link rel="stylesheet" href="http://127.0.0.1:9/s.css">'
               '<script src="http://127.0.0.1:9/s.js"></script><iframe src="http://127.0.0.1:9/f"></iframe>'
               "<script>window.__pwned = 5</script>")
    page = tmp_path / "slipped.html"
    page.write_text(html.replace("<body>", "<body>" + slipped, 1))
    chromium.open(page)
    time.sleep(0.5)
    outside = {e["params"]["requestId"]: e["params"]["request"]["url"] for e in chromium.events
               if e["method"] == "Network.requestWillBeSent" and "127.0.0.1" in e["params"]["request"]["url"]}
    blocked = {e["params"]["requestId"] for e in chromium.events
               if e["method"] == "Network.loadingFailed" and e["params"].get("blockedReason") == "csp"}
    assert len(outside) >= 3 and set(outside) <= blocked, (outside, blocked)
    assert chromium.js("typeof window.__pwned") == "undefined"
    chromium.js("location.hash = '#r-i1'")  # the page's own script still runs: it opens the fold
    assert chromium.js("document.querySelector('#r-i1').open") is True


@needs_chromium
def test_screenshot_of_the_demo_run(chromium, tmp_path):
    """The DSPy long-document recipe's scripted run, its root iteration 2 and sub-calls opened by
    clicks. RLM_REPORT_SCREENSHOT=PATH keeps the PNG (the committed one: cookbook/report_demo.png)."""
    from cookbook import dspy_long_document_qa
    from tests.recipe_models import needle_dspy_lms

    lm, sub_lm = needle_dspy_lms()
    out = dspy_long_document_qa.main([], lm=lm, sub_lm=sub_lm)
    page = report.write_report(out, tmp_path / "demo.html", name="python -m cookbook.dspy_long_document_qa")
    chromium.open(page)
    chromium.click("#r-i2 > summary")
    chromium.click("#r-i2 details.batch > summary")
    chromium.click("#r-i2 details.batch details.sub > summary")
    assert "The launch code for project Heron is 7291." in chromium.js("document.body.innerText")
    png = chromium.screenshot()
    width, height = struct.unpack(">II", png[16:24])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and width == 1280 and height > 1000
    if os.environ.get("RLM_REPORT_SCREENSHOT"):
        Path(os.environ["RLM_REPORT_SCREENSHOT"]).write_bytes(png)
