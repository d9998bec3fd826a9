"""A trajectory report: one RLM run as one self-contained HTML page.

    rlm report TRACE.json -o report.html

The page shows the answer and why the run stopped, what went wrong (cell errors, failed
sub-calls, budget stops, notes, rejected answers) with links into the timeline, tokens and LM
calls over time, a table of the root's iterations, and the call tree: each iteration's model
reply, the code of each cell with the sub-calls, searches and child RLMs (``rlm_query``) it
started, its output and error, evaluator verdicts and the final answer. Child runs are folded
inside the cell that started them. Everything below an iteration stays collapsed until clicked.

It reads what the runtime produces: the JSON ``rlm ask --trace`` writes, a LangGraph
``invoke`` result (a dict with ``trajectory``), a DSPy ``Prediction`` (``.events``), or a bare
trajectory dict. Nothing on the page comes from the network: every value from the trace is
escaped, and a Content-Security-Policy forbids every load except the page's own inline style
and script, which it allows by hash.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.engine.stops import COMPLETE_STOPS, meaning as stop_meaning
from sandbox.engine.trajectory import Trajectory

DSPY_RESERVED = frozenset({"trajectory", "final_reasoning", "stop_reason", "usage", "events"})
COMMON_FIELDS = ("kind", "depth", "t")
CALL_KINDS = ("lm_call", "sub_call")
FENCE = re.compile(r"```[^\n]*\n.*?(?:```|\Z)", re.S)
TRACE_HINT = "give the JSON file that `rlm ask --trace FILE` writes, or a run's result saved with json.dump"

STYLE = """
:root{--bg:#fff;--fg:#1d2330;--mute:#667085;--line:#d9dee7;--card:#f6f8fb;--code:#f3f5f8;--ok:#177245;
--warn:#a15c00;--bad:#b42318;--acc:#2357c6;--hot:#fff4d6}
@media (prefers-color-scheme:dark){:root{--bg:#14171c;--fg:#e3e7ee;--mute:#98a2b3;--line:#323844;--card:#1b1f26;
--code:#20252e;--ok:#5cc48b;--warn:#f0a33a;--bad:#ff7a70;--acc:#8ab4ff;--hot:#3a3220}}
*{box-sizing:border-box}body{margin:0 auto;max-width:1200px;padding:16px 20px 80px;background:var(--bg);color:var(--fg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:26px 0 8px;border-bottom:1px solid var(--line);padding-bottom:4px}
a{color:var(--acc)}.mute{color:var(--mute)}.ok{color:var(--ok)}.warn{color:var(--warn)}.bad{color:var(--bad)}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 14px;margin:8px 0}
.grid{display:grid;grid-template-columns:max-content 1fr;gap:4px 14px}.grid>b{color:var(--mute);font-weight:600}
pre{background:var(--code);border:1px solid var(--line);border-radius:6px;padding:8px 10px;margin:4px 0 8px;
white-space:pre-wrap;overflow-wrap:anywhere;max-height:28em;overflow:auto;font:12.5px/1.4 ui-monospace,Menlo,Consolas,monospace}
pre.err{border-color:var(--bad);color:var(--bad)}.lbl{font-size:12px;font-weight:600;color:var(--mute);margin-top:6px}
details{border-left:2px solid var(--line);margin:3px 0 3px 4px;padding-left:10px}details[open]{border-left-color:var(--acc)}
summary{cursor:pointer;padding:2px 0;list-style-position:outside}summary:hover{background:var(--card)}
.t{font:12px ui-monospace,Menlo,monospace;color:var(--mute);display:inline-block;min-width:6.5em}
.k{display:inline-block;font-size:11px;font-weight:700;border-radius:4px;padding:0 5px;margin-right:6px;
border:1px solid var(--line);background:var(--card)}
.badge{display:inline-block;font-size:11px;border-radius:10px;padding:0 7px;margin-left:6px;border:1px solid currentColor}
.it>summary{font-weight:600}.run>summary{font-weight:600;color:var(--acc)}.run{border-left-width:4px}
.cell,.verdict,.final,.flag{margin:6px 0;padding:4px 0 4px 10px;border-left:2px solid var(--line)}
.flag{border-left-color:var(--warn)}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{border-bottom:1px solid var(--line);padding:3px 8px;
text-align:right}th:first-child,td:first-child,td.l{text-align:left}tr.hot td{background:var(--hot)}
.toolbar button{font:inherit;font-size:12px;margin-right:6px;padding:2px 10px;border:1px solid var(--line);
border-radius:5px;background:var(--card);color:var(--fg);cursor:pointer}
ul.problems{margin:0;padding-left:18px}svg{width:100%;height:auto;background:var(--card);border:1px solid var(--line);
border-radius:8px}svg text{fill:var(--mute);font:11px system-ui,sans-serif}svg .tok{stroke:var(--acc);fill:none;stroke-width:2}
svg .calls{stroke:var(--ok);fill:none;stroke-width:1.5;stroke-dasharray:4 3}svg .axis{stroke:var(--line)}
svg .mark{stroke:var(--bad);stroke-width:1.5}svg .itm{stroke:var(--line);stroke-dasharray:2 3}
.problem{border-left-color:var(--bad)}details.problem>summary .badge{color:var(--bad)}
.flash{outline:3px solid var(--acc);outline-offset:2px}
"""

SCRIPT = """(function(){
function openTo(el){for(var d=el;d;d=d.parentElement){if(d.tagName==='DETAILS'){d.open=true;}}}
function go(){var id=decodeURIComponent(location.hash.slice(1));var el=id&&document.getElementById(id);if(!el){return;}
openTo(el);el.scrollIntoView({block:'start'});el.classList.add('flash');
setTimeout(function(){el.classList.remove('flash');},1600);}
window.addEventListener('hashchange',go);
document.addEventListener('click',function(e){
var a=e.target.closest('a[href^="#"]');if(a){setTimeout(go,0);return;}
var b=e.target.closest('button[data-act]');if(!b){return;}var act=b.getAttribute('data-act');
document.querySelectorAll('#timeline details').forEach(function(d){
d.open=act==='expand'?true:act==='collapse'?false:(d.classList.contains('problem')||d.querySelector('.problem')!==null);});});
go();})();"""


class ReportError(ValueError):
    """The input is not a trace this report can read; the message names the problem and what to give."""


@dataclass
class Run:
    """One RLM of the tree: its query, events in recorded order, and child runs in start order."""

    query: str
    depth: int
    events: list[Any]
    children: list[Run]


@dataclass
class Trace:
    """What the report shows: the run's outputs, why it stopped, its usage and its trajectory."""

    outputs: dict[str, Any]
    stop_reason: str | None
    iterations: Any
    usage: Mapping[str, Any] | None
    root: Run
    source: str = ""


def load_trace(source: Any, name: str = "") -> Trace:
    """Read a trace from any of the shapes the runtime produces.

    Args:
        source: a path (``str`` or ``os.PathLike``) to a JSON trace file; a run's result dict
            (``rlm ask --trace`` JSON, a LangGraph ``invoke`` result); a DSPy ``Prediction`` with
            ``.events``; a trajectory dict (``{"query", "depth", "events", "children"}``); or a
            :class:`~sandbox.engine.trajectory.Trajectory`.
        name: how to name the source in error messages and on the page (default: the path, or
            the kind of object).

    Returns:
        The :class:`Trace`.

    Raises:
        ReportError: the file is missing or not JSON, or the data is not one of these shapes.
    """
    if isinstance(source, (str, os.PathLike)):
        return _read_file(Path(source))
    if isinstance(source, Trajectory):
        data: Any = source.to_dict()
    elif isinstance(getattr(source, "events", None), Mapping) and callable(getattr(source, "keys", None)):
        data = {key: source[key] for key in source.keys()}  # a DSPy Prediction
    else:
        data = source
    trace = _from_data(data, name or f"the given {type(source).__name__}")
    trace.source = name
    return trace


def render_report(source: Any, name: str = "") -> str:
    """The report page for a trace, as one HTML string with no external references.

    Args:
        source: any input :func:`load_trace` takes.
        name: how to name the source on the page (default: the path, or the kind of object).

    Returns:
        The HTML document.

    Raises:
        ReportError: ``source`` is not a trace (see :func:`load_trace`).
    """
    return _Page(load_trace(source, name)).html()


def write_report(source: Any, path: str | os.PathLike[str], name: str = "") -> Path:
    """Write the report page for a trace to ``path``.

    Args:
        source: any input :func:`load_trace` takes.
        path: where to write the HTML file (its folder must exist).
        name: how to name the source on the page (default: the path, or the kind of object).

    Returns:
        The path written.

    Raises:
        ReportError: ``source`` is not a trace (see :func:`load_trace`).
        OSError: the file cannot be written.
    """
    out = Path(path)
    out.write_text(render_report(source, name), encoding="utf-8")
    return out


def _read_file(path: Path) -> Trace:
    if not path.is_file():
        raise ReportError(f"{path}: no such file; {TRACE_HINT}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ReportError(f"{path} is not UTF-8 text, so it is not a trace; {TRACE_HINT}") from None
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path} is not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                          f"{TRACE_HINT}") from None
    return _from_data(data, str(path))


def _from_data(data: Any, name: str) -> Trace:
    if not isinstance(data, Mapping):
        raise ReportError(f"{name} is not a trace: expected a run's result (an object with an 'events' "
                          f"object) or a trajectory (an object with an 'events' list), got {_describe(data)}; "
                          f"{TRACE_HINT}")
    usage = data.get("usage") if isinstance(data.get("usage"), Mapping) else None
    if isinstance(data.get("events"), Mapping) and "final_reasoning" in data:  # a DSPy Prediction
        outputs = {key: value for key, value in data.items() if key not in DSPY_RESERVED}
        return Trace(outputs, data.get("stop_reason"), (usage or {}).get("iterations"), usage,
                     _run(data["events"], f"{name}: events"), name)
    for key in ("events", "trajectory"):  # a LangGraph result or rlm ask --trace (older traces: `trajectory`)
        if isinstance(data.get(key), Mapping):
            return Trace({"answer": data.get("answer")}, data.get("stop_reason"), data.get("iterations"), usage,
                         _run(data[key], f"{name}: {key}"), name)
    if isinstance(data.get("events"), list):  # a bare trajectory: the answer is in its final event
        root = _run(data, name)
        final = next((e for e in reversed(root.events) if isinstance(e, Mapping) and e.get("kind") == "final"), {})
        iterations = sum(1 for e in root.events if isinstance(e, Mapping) and e.get("kind") == "iteration")
        return Trace({"answer": final.get("answer")}, final.get("stop_reason"), iterations, None, root, name)
    raise ReportError(f"{name} is not a trace: expected a run's result (an object with an 'events' "
                      f"object) or a trajectory (an object with an 'events' list), got {_describe(data)}; "
                      f"{TRACE_HINT}")


def _run(data: Any, where: str) -> Run:
    if not isinstance(data, Mapping):
        raise ReportError(f"{where} is not a trajectory (an object with an 'events' list): it is {_describe(data)}; "
                          f"{TRACE_HINT}")
    if not isinstance(data.get("events"), list):
        found = _describe(data["events"]) if "events" in data else "missing"
        raise ReportError(f"{where}: 'events' is {found}, not a list of events; {TRACE_HINT}")
    children = data.get("children", [])
    if not isinstance(children, list):
        raise ReportError(f"{where}: 'children' is {_describe(children)}, not a list of trajectories; {TRACE_HINT}")
    depth = data.get("depth", 0)
    return Run(_text(data.get("query", "")), depth if isinstance(depth, int) else 0, data["events"],
               [_run(child, f"{where}: children[{i}]") for i, child in enumerate(children)])


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        keys = ", ".join(repr(str(k)) for k in list(value)[:8])
        return f"an object with keys {keys}" if keys else "an empty object"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    return f"a {type(value).__name__}"


def _esc(value: Any) -> str:
    return html.escape(_text(value), quote=True)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, default=str, ensure_ascii=False)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int(value: Any) -> int:
    number = _num(value)
    return int(number) if number is not None else 0


def _clip(value: Any, limit: int = 110) -> str:
    line = " ".join(_text(value).split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


def _tokens(event: Mapping[str, Any]) -> int:
    return _int(event.get("prompt_tokens")) + _int(event.get("completion_tokens"))


def _secs(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:,.3f} s" if abs(value) < 10 else f"{value:,.1f} s"


def _raw(value: Any) -> str:
    return f"<pre>{html.escape(json.dumps(value, indent=1, default=str, ensure_ascii=False))}</pre>"


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@dataclass
class _Totals:
    """What one run and its children spent, counted from the events."""

    tokens: int = 0
    calls: int = 0
    sub_calls: int = 0
    runs: int = 1
    errors: int = 0

    def add(self, other: _Totals) -> None:
        self.tokens += other.tokens
        self.calls += other.calls
        self.sub_calls += other.sub_calls
        self.runs += other.runs
        self.errors += other.errors


def _totals(run: Run) -> _Totals:
    totals = _Totals()
    for event in run.events:
        if isinstance(event, Mapping):
            kind = event.get("kind")
            if kind in CALL_KINDS:
                totals.tokens += _tokens(event)
                totals.calls += 1
                totals.sub_calls += kind == "sub_call"
            totals.errors += bool(event.get("error")) and kind in ("cell", "sub_call")
    for child in run.children:
        totals.add(_totals(child))
    return totals


@dataclass
class _Problem:
    t: float | None
    depth: int
    anchor: str
    text: str
    severe: bool


@dataclass
class _Page:
    """Renders one trace; collects the problems, chart points and iteration rows while it walks the tree."""

    trace: Trace
    problems: list[_Problem] = field(default_factory=list)
    points: list[tuple[float, int]] = field(default_factory=list)  # (absolute t, tokens) per LM call
    stops: list[tuple[float, str]] = field(default_factory=list)  # budget events
    rows: list[tuple[str, str, float | None, float | None, _Totals, str]] = field(default_factory=list)
    iteration_starts: list[tuple[float, str]] = field(default_factory=list)
    end: float = 0.0
    _ids: int = 0

    def html(self) -> str:
        timeline = self._run(self.trace.root, 0.0, "r")
        title = _clip(self.trace.root.query or "RLM run", 80)
        csp = (f"default-src 'none'; style-src {_csp_hash(STYLE)}; script-src {_csp_hash(SCRIPT)}; "
               "img-src 'none'; base-uri 'none'; form-action 'none'")
        return "\n".join([
            "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>RLM report: {_esc(title)}</title><style>{STYLE}</style></head><body>",
            self._header(), self._problems(), self._chart(), self._iteration_table(),
            '<h2>Timeline</h2><div class="toolbar"><button type="button" data-act="expand">Expand all</button>'
            '<button type="button" data-act="problems">Open problems</button>'
            '<button type="button" data-act="collapse">Collapse all</button></div>',
            f'<div id="timeline">{timeline}</div>', f"<script>{SCRIPT}</script></body></html>",
        ])

    def _id(self) -> str:
        self._ids += 1
        return f"e{self._ids}"

    def _header(self) -> str:
        trace, totals = self.trace, _totals(self.trace.root)
        stop = _text(trace.stop_reason) or "unknown"
        verdict = "ok" if stop in COMPLETE_STOPS else "warn"
        meaning = stop_meaning(stop)
        labelled = len(trace.outputs) > 1
        outputs = "".join((f'<div class="lbl">{_esc(key)}</div>' if labelled else "") +
                          f'<pre id="answer-{i}">{_esc(value)}</pre>' for i, (key, value) in enumerate(trace.outputs.items()))
        usage = trace.usage or {}
        used = (f"{_int(usage.get('llm_calls')):,} LM calls, {_int(usage.get('tokens')):,} tokens "
                f"({_int(usage.get('prompt_tokens')):,} in, {_int(usage.get('completion_tokens')):,} out), "
                f"${_num(usage.get('cost_usd')) or 0:.4f}, {_secs(_num(usage.get('seconds')))}"
                if trace.usage is not None else
                f"{totals.calls:,} LM calls, {totals.tokens:,} tokens (counted from the events; the trace has "
                "no usage)")
        return "".join([
            f'<h1>RLM run report</h1><div class="mute">{_esc(trace.source)}</div>',
            '<div class="card grid"><b>Query</b><div><pre>', _esc(trace.root.query), "</pre></div>",
            f'<b>Stopped</b><div id="stop" class="{verdict}"><b>{_esc(stop)}</b> <span class="mute">'
            f"{_esc(meaning)}</span></div>",
            f"<b>Iterations</b><div>{_esc(trace.iterations)}</div><b>Usage</b><div>{_esc(used)}</div>",
            f"<b>Tree</b><div>{totals.runs} run(s), {totals.sub_calls:,} sub-calls, "
            f'<span class="{"bad" if totals.errors else "mute"}">{totals.errors} error(s)</span></div>',
            f"<b>Answer</b><div>{outputs}</div></div>",
        ])

    def _problems(self) -> str:
        if not self.problems:
            return ('<h2>Problems</h2><div class="card mute" id="problems">No cell errors, failed sub-calls, '
                    "budget stops, notes or rejected answers.</div>")
        items = "".join(
            f'<li class="{"bad" if p.severe else "warn"}"><span class="t">{_secs(p.t)}</span>'
            f'{"depth " + str(p.depth) + ": " if p.depth else ""}<a href="#{p.anchor}">{_esc(p.text)}</a></li>'
            for p in sorted(self.problems, key=lambda p: (p.t is None, p.t or 0.0)))
        return (f'<h2>Problems ({len(self.problems)})</h2><div class="card" id="problems">'
                f'<ul class="problems">{items}</ul></div>')

    def _chart(self) -> str:
        width, height, left, right, top, bottom = 900, 200, 60, 50, 14, 28
        end = max(self.end, *(t for t, _ in self.points), 1e-3) if self.points else max(self.end, 1e-3)
        points = sorted(self.points)
        total_tokens, total_calls = sum(tokens for _, tokens in points), len(points)

        def x(t: float) -> float:
            return left + (width - left - right) * t / end

        def y(value: float, top_value: float) -> float:
            return height - bottom - (height - top - bottom) * (value / top_value if top_value else 0)

        tokens_line, calls_line, tokens, calls = [f"{x(0):.1f},{y(0, 1):.1f}"], [f"{x(0):.1f},{y(0, 1):.1f}"], 0, 0
        for t, spent in points:
            tokens_line.append(f"{x(t):.1f},{y(tokens, total_tokens):.1f}")  # a step: flat until the call ends
            calls_line.append(f"{x(t):.1f},{y(calls, total_calls):.1f}")
            tokens, calls = tokens + spent, calls + 1
            tokens_line.append(f"{x(t):.1f},{y(tokens, total_tokens):.1f}")
            calls_line.append(f"{x(t):.1f},{y(calls, total_calls):.1f}")
        marks = "".join(f'<line class="itm" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" y2="{height - bottom}"/>'
                        f'<text x="{x(t) + 2:.1f}" y="{height - bottom - 4}">{_esc(label)}</text>'
                        for t, label in self.iteration_starts)
        marks += "".join(f'<line class="mark" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" y2="{height - bottom}">'
                         f"<title>{_esc(message)}</title></line>" for t, message in self.stops)
        svg = (f'<svg id="budget-chart" viewBox="0 0 {width} {height}" role="img" '
               f'aria-label="tokens and LM calls over time">'
               f'<line class="axis" x1="{left}" x2="{width - right}" y1="{height - bottom}" y2="{height - bottom}"/>'
               f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{height - bottom}"/>{marks}'
               f'<polyline class="tok" points="{" ".join(tokens_line)}"/>'
               f'<polyline class="calls" points="{" ".join(calls_line)}"/>'
               f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{total_tokens:,}</text>'
               f'<text x="{left - 6}" y="{height - bottom}" text-anchor="end">0</text>'
               f'<text x="{width - right + 4}" y="{top + 4}">{total_calls} calls</text>'
               f'<text x="{left}" y="{height - 8}">0 s</text>'
               f'<text x="{width - right}" y="{height - 8}" text-anchor="end">{end:,.2f} s</text></svg>')
        usage = self.trace.usage or {}
        note = ""
        if self.trace.usage is not None and _int(usage.get("tokens")) != total_tokens:
            note = (f" The usage says {_int(usage.get('tokens')):,} tokens; the LM calls' events account for "
                    f"{total_tokens:,} (a model that reports no token counts records 0).")
        return ('<h2>Budget use over time</h2><div class="mute">Cumulative tokens (solid) and LM calls (dashed, '
                "root and sub-calls of the whole tree) against seconds since the run started; dotted lines mark "
                f"the root's iterations, red lines budget stops.{_esc(note)}</div>{svg}")

    def _iteration_table(self) -> str:
        if not self.rows:
            return ""
        costliest = max(self.rows, key=lambda row: (row[4].tokens, row[3] or 0.0))[0]
        body = "".join(
            f'<tr class="{"hot" if anchor == costliest and len(self.rows) > 1 else ""}">'
            f'<td><a href="#{anchor}">{_esc(label)}</a></td><td>{_secs(start)}</td><td>{_secs(seconds)}</td>'
            f"<td>{totals.tokens:,}</td><td>{totals.calls:,}</td><td>{totals.sub_calls:,}</td>"
            f'<td>{totals.runs - 1}</td><td class="l">{_esc(outcome)}</td></tr>'
            for anchor, label, start, seconds, totals, outcome in self.rows)
        return ("<h2>Root iterations</h2><table id=\"iterations\"><thead><tr><th>iteration</th><th>starts</th>"
                "<th>took</th><th>tokens</th><th>LM calls</th><th>sub-calls</th><th>child runs</th>"
                f'<th class="l">outcome</th></tr></thead><tbody>{body}</tbody></table>'
                '<div class="mute">Tokens and calls include the iteration\'s sub-calls and child runs; the '
                "costliest iteration is highlighted.</div>")

    def _run(self, run: Run, offset: float, path: str) -> str:
        groups: list[tuple[Mapping[str, Any] | None, list[Any]]] = [(None, [])]
        for event in run.events:
            if isinstance(event, Mapping) and event.get("kind") == "iteration":
                groups.append((event, []))
            else:
                groups[-1][1].append(event)
        children = iter(run.children)
        starts = [self._abs(offset, head) if head is not None else None for head, _ in groups]
        starts.append(None)
        parts = [self._group(run, offset, head, events, children, f"{path}-i{i}", starts[i + 1])
                 for i, (head, events) in enumerate(groups) if head is not None or events]
        rest = list(children)  # children without an rlm_query event to fold them into
        parts += [self._child(child, offset, "", f"{path}.x{i}") for i, child in enumerate(rest)]
        return "".join(parts)

    def _group(self, run: Run, offset: float, head: Mapping[str, Any] | None, events: list[Any],
               children: Iterator[Run], anchor: str, next_start: float | None) -> str:
        start = self._abs(offset, head) if head is not None else None
        if start is not None and run.depth == 0:
            self.iteration_starts.append((start, f"i{_text(head.get('iteration'))}"))
        before = len(self.problems)
        body, totals, outcome = self._events(run, offset, events, children, anchor)
        times = [t for t in (self._abs(offset, e) for e in events if isinstance(e, Mapping)) if t is not None]
        end = next_start if next_start is not None else max(times, default=start)
        seconds = end - start if start is not None and end is not None else None
        label = f"Iteration {_text(head.get('iteration'))}" if head is not None else "Before the first iteration"
        if run.depth == 0:
            self.rows.append((anchor, label, start, seconds, totals, outcome))
        stats = [f"{totals.tokens:,} tokens", f"{totals.calls} LM calls"]
        if totals.sub_calls:
            stats.append(f"{totals.sub_calls} sub-calls")
        if totals.runs > 1:
            stats.append(f"{totals.runs - 1} child run(s)")
        found = len(self.problems) - before
        flagged = f" · {found} problem(s)" if found else ""
        return (f'<details class="it{" problem" if found else ""}" id="{anchor}"><summary><span class="t">'
                f'+{_secs(start)}</span>{_esc(label)} <span class="mute">· took {_secs(seconds)} · {", ".join(stats)}'
                f'</span><span class="badge mute">{_esc(_clip(outcome, 70))}{flagged}</span></summary>{body}</details>')

    def _events(self, run: Run, offset: float, events: list[Any], children: Iterator[Run],
                path: str) -> tuple[str, _Totals, str]:
        """The HTML of one iteration's events: each cell with the calls it made folded between its code and
        its output; its totals; and its outcome in a few words."""
        parts: list[str] = []
        pending: list[Any] = []
        totals = _Totals(runs=1)
        outcome = "no cell"

        def flush() -> str:
            html_text = self._calls(run, offset, pending, children, path, totals)
            pending.clear()
            return html_text

        for event in events:
            kind = event.get("kind") if isinstance(event, Mapping) else None
            if kind == "cell":
                parts.append(self._cell(run, offset, event, flush()))
                outcome = (_text(event.get("error")).strip().splitlines() or ["error"])[-1] if event.get("error") \
                    else "FINAL" if event.get("has_final") else "ok"
            elif kind in ("lm_call", "evaluation", "final"):
                parts.append(flush())
                parts.append(getattr(self, f"_{kind}")(run, offset, event))
                if kind == "lm_call":
                    totals.tokens += _tokens(event)
                    totals.calls += 1
                    self.points.append((self._abs(offset, event) or 0.0, _tokens(event)))
                elif kind == "final":
                    outcome = f"final: {_text(event.get('stop_reason'))}"
            else:
                pending.append(event)
        parts.append(flush())
        return "".join(parts), totals, outcome

    def _calls(self, run: Run, offset: float, events: list[Any], children: Iterator[Run], path: str,
               totals: _Totals) -> str:
        """Sub-calls (consecutive ones grouped), searches, child runs, budget stops, notes and unknown events."""
        parts: list[str] = []
        batch: list[str] = []
        batch_tokens = 0

        def close_batch() -> None:
            if len(batch) > 1:
                parts.append(f'<details class="batch"><summary><span class="k k-sub_call">{len(batch)} sub-calls'
                             f'</span><span class="mute">{batch_tokens:,} tokens</span></summary>{"".join(batch)}'
                             "</details>")
            else:
                parts.extend(batch)
            batch.clear()

        for event in events:
            kind = event.get("kind") if isinstance(event, Mapping) else None
            if kind == "sub_call":
                batch.append(self._sub_call(run, offset, event))
                batch_tokens += _tokens(event)
                totals.tokens += _tokens(event)
                totals.calls += 1
                totals.sub_calls += 1
                self.points.append((self._abs(offset, event) or 0.0, _tokens(event)))
                continue
            close_batch()
            batch_tokens = 0
            if kind == "rlm_query":
                parts.append(self._rlm_query(run, offset, event, children, path, totals))
            elif kind in ("search", "budget", "note", "compaction"):
                parts.append(getattr(self, f"_{kind}")(run, offset, event))
                if kind == "compaction":  # an LM call of its own, counted in the budget
                    totals.tokens += _tokens(event)
                    totals.calls += 1
            else:
                parts.append(self._unknown(run, offset, event))
        close_batch()
        return "".join(parts)

    def _abs(self, offset: float, event: Mapping[str, Any]) -> float | None:
        t = _num(event.get("t"))
        if t is None:
            return None
        self.end = max(self.end, offset + t)
        return offset + t

    def _stamp(self, offset: float, event: Mapping[str, Any], kind: str) -> str:
        """When the event's work began (events are recorded when it ends, with its ``seconds``) and its kind."""
        end, took = self._abs(offset, event), _num(event.get("seconds"))
        began = end - took if end is not None and took is not None else end
        return f'<span class="t">+{_secs(began)}</span><span class="k k-{kind}">{kind}</span>'

    def _problem(self, run: Run, offset: float, event: Mapping[str, Any], anchor: str, text: str,
                 severe: bool = True) -> None:
        self.problems.append(_Problem(self._abs(offset, event), run.depth, anchor, text, severe))

    def _extras(self, event: Mapping[str, Any], shown: tuple[str, ...]) -> str:
        """The fields this page does not lay out, so that nothing in the trace is hidden."""
        rest = {key: value for key, value in event.items() if key not in shown and key not in COMMON_FIELDS}
        if not rest:
            return ""
        items = "".join(f"<b>{_esc(key)}</b><div>{_esc(value)}</div>" for key, value in rest.items())
        return f'<div class="grid mute">{items}</div>'

    def _lm_call(self, run: Run, offset: float, event: Mapping[str, Any]) -> str:
        reply = _text(event.get("reply"))
        reasoning = FENCE.sub("", reply).strip()
        step = f" ({_text(event.get('step'))})" if event.get("step") else ""
        return (f'<div class="lm">{self._stamp(offset, event, "lm_call")}<b>root model reply{_esc(step)}</b> '
                f'<span class="mute">{_tokens(event):,} tokens ({_int(event.get("prompt_tokens")):,} in, '
                f'{_int(event.get("completion_tokens")):,} out) · {_secs(_num(event.get("seconds")))}</span>'
                f'<div class="lbl">reasoning</div><pre>{_esc(reasoning or "(none besides the code)")}</pre>'
                f'<details><summary class="mute">full reply ({len(reply):,} characters)</summary>'
                f"<pre>{_esc(reply)}</pre></details>"
                f'{self._extras(event, ("iteration", "reply", "prompt_tokens", "completion_tokens", "seconds", "step"))}'
                "</div>")

    def _cell(self, run: Run, offset: float, event: Mapping[str, Any], calls: str) -> str:
        anchor = self._id()
        error = _text(event.get("error"))
        flags = [f"{_secs(_num(event.get('seconds')))}"]
        if event.get("has_final"):
            flags.append("calls FINAL")
        if event.get("limit"):
            flags.append(f"stopped by the {_text(event.get('limit'))} limit")
        if event.get("restarted"):
            flags.append("the worker was restarted")
        if error:
            self._problem(run, offset, event, anchor, f"cell error: {_clip(error.strip().splitlines()[-1], 140)}")
        elif event.get("limit"):
            self._problem(run, offset, event, anchor, f"cell stopped by the {_text(event.get('limit'))} limit")
        output = _text(event.get("output"))
        return (f'<div class="cell{" problem" if error else ""}" id="{anchor}">{self._stamp(offset, event, "cell")}'
                f'<span class="mute">{_esc(" · ".join(flags))}</span>'
                f'<div class="lbl">code ({_int(event.get("code_chars")):,} characters)</div>'
                f'<pre>{_esc(event.get("code"))}</pre>{calls}'
                f'<div class="lbl">output ({_int(event.get("output_chars")):,} characters)</div>'
                f'<pre>{_esc(output) if output else "(nothing printed)"}</pre>'
                + (f'<div class="lbl bad">error</div><pre class="err">{_esc(error)}</pre>' if error else "")
                + self._extras(event, ("iteration", "code", "code_chars", "output", "output_chars", "error",
                                       "error_chars", "limit", "has_final", "seconds", "restarted")) + "</div>")

    def _sub_call(self, run: Run, offset: float, event: Mapping[str, Any]) -> str:
        anchor = self._id()
        error = _text(event.get("error"))
        if error:
            self._problem(run, offset, event, anchor, f"sub-call failed: {_clip(error, 140)}")
        answer = f'<span class="bad">{_esc(_clip(error, 80))}</span>' if error else _esc(_clip(event.get("answer"), 70))
        return (f'<details class="sub{" problem" if error else ""}" id="{anchor}"><summary>'
                f'{self._stamp(offset, event, "sub_call")}{_esc(_clip(event.get("prompt"), 70))} '
                f'<span class="mute">→</span> {answer}</summary>'
                f'<div class="mute">{_esc(event.get("model"))} · {_tokens(event):,} tokens · '
                f'{_secs(_num(event.get("seconds")))} · prompt {_int(event.get("prompt_chars")):,} characters</div>'
                f'<div class="lbl">prompt</div><pre>{_esc(event.get("prompt"))}</pre>'
                + (f'<div class="lbl bad">error</div><pre class="err">{_esc(error)}</pre>' if error else
                   f'<div class="lbl">answer</div><pre>{_esc(event.get("answer"))}</pre>')
                + self._extras(event, ("prompt", "prompt_chars", "answer", "error", "prompt_tokens",
                                       "completion_tokens", "seconds", "model")) + "</details>")

    def _rlm_query(self, run: Run, offset: float, event: Mapping[str, Any], children: Iterator[Run], path: str,
                   totals: _Totals) -> str:
        anchor = self._id()
        shown = ("prompt", "child_depth", "degraded", "reason", "context_chars")
        if event.get("degraded"):
            self._problem(run, offset, event, anchor, f"rlm_query degraded: {_clip(event.get('reason'), 140)}", False)
            return (f'<div class="flag" id="{anchor}">{self._stamp(offset, event, "rlm_query")}'
                    f'<b>{_esc(_clip(event.get("prompt"), 90))}</b> <span class="warn">{_esc(event.get("reason"))}'
                    f"</span>{self._extras(event, shown)}</div>")
        child = next(children, None)
        if child is None:
            return (f'<div class="flag" id="{anchor}">{self._stamp(offset, event, "rlm_query")}'
                    f'{_esc(_clip(event.get("prompt"), 90))} <span class="mute">(the trace holds no child run for '
                    f"it)</span>{self._extras(event, shown)}</div>")
        totals.add(_totals(child))
        context = f", context {_int(event.get('context_chars')):,} characters"
        # The child's clock starts when it is created, just before its rlm_query event is recorded.
        return self._child(child, offset + (_num(event.get("t")) or 0.0), self._stamp(offset, event, "rlm_query"),
                           f"{path}.{anchor}", context)

    def _child(self, child: Run, offset: float, stamp: str, path: str, context: str = "") -> str:
        totals = _totals(child)
        final = next((e for e in reversed(child.events) if isinstance(e, Mapping) and e.get("kind") == "final"), {})
        errors = f', <span class="bad">{totals.errors} error(s)</span>' if totals.errors else ""
        body = self._run(child, offset, path)
        return (f'<details class="run" id="{path}"><summary>{stamp}child RLM at depth {child.depth}: '
                f"{_esc(_clip(child.query, 80))} <span class=\"mute\">→ {_esc(_clip(final.get('answer'), 60))} "
                f"({_esc(final.get('stop_reason'))}) · {totals.tokens:,} tokens, {totals.calls} LM calls"
                f"{_esc(context)}</span>{errors}</summary><div class=\"lbl\">query</div><pre>{_esc(child.query)}</pre>"
                f"{body}</details>")

    def _search(self, run: Run, offset: float, event: Mapping[str, Any]) -> str:
        hits = event.get("hits") if isinstance(event.get("hits"), list) else []
        rows = "".join(f"<tr><td>{_esc(hit.get('offset'))}</td><td>{_esc(hit.get('score'))}</td>"
                       f"<td>{_esc(hit.get('doc', ''))}</td></tr>" for hit in hits if isinstance(hit, Mapping))
        return (f'<details class="search"><summary>{self._stamp(offset, event, "search")}'
                f'{_esc(_clip(event.get("query"), 80))} <span class="mute">k={_esc(event.get("k"))}, '
                f"{len(hits)} hits · {_secs(_num(event.get('seconds')))}"
                f'{" · built the index" if event.get("built_index") else ""}</span></summary>'
                f'<table><thead><tr><th>offset</th><th>score</th><th>doc</th></tr></thead><tbody>{rows}</tbody></table>'
                f'<div class="lbl">best passage</div><pre>{_esc(event.get("top"))}</pre>'
                f'{self._extras(event, ("query", "k", "hits", "top", "built_index", "seconds"))}</details>')

    def _budget(self, run: Run, offset: float, event: Mapping[str, Any]) -> str:
        anchor = self._id()
        count = _int(event.get("count"))
        message = f"budget: {_text(event.get('message') or event.get('limit'))}" + (f" (×{count})" if count > 1 else "")
        self._problem(run, offset, event, anchor, message)
        self.stops.append((self._abs(offset, event) or 0.0, message))
        return (f'<div class="flag problem" id="{anchor}">{self._stamp(offset, event, "budget")}<b>{_esc(message)}</b>'
                f'<div class="lbl">spent at that moment</div>{_raw(event.get("spent"))}'
                f'{self._extras(event, ("limit", "message", "spent", "count"))}</div>')

    def _note(self, run: Run, offset: float, event: Mapping[str, Any]) -> str:
        anchor = self._id()
        count = _int(event.get("count"))
        message = _text(event.get("message")) + (f" (×{count})" if count > 1 else "")
        self._problem(run, offset, event, anchor, f"note: {_clip(message, 140)}", False)
        return (f'<div class="flag" id="{anchor}">{self._stamp(offset, event, "note")}{_esc(message)}'
                f'{self._extras(event, ("message", "count", "iteration"))}</div>')

    def _compaction(self, run: Run, offset: float, event: Mapping[str, Any]) -> str:
        anchor = self._id()
        message = (f"compacted the {_int(event.get('steps'))} oldest steps: {_int(event.get('chars_before')):,} "
                   f"characters became {_int(event.get('chars_after')):,}")
        self._problem(run, offset, event, anchor, message, False)
        return (f'<details class="flag" id="{anchor}"><summary>{self._stamp(offset, event, "compaction")}'
                f'{_esc(message)} <span class="mute">{_tokens(event):,} tokens</span></summary>'
                f'<div class="lbl">summary</div><pre>{_esc(event.get("summary"))}</pre>'
                f'{self._extras(event, ("steps", "chars_before", "chars_after", "summary", "iteration"))}</details>')

    def _evaluation(self, run: Run, offset: float, event: Mapping[str, Any]) -> str:
        anchor = self._id()
        passed = bool(event.get("passed"))
        if not passed:
            self._problem(run, offset, event, anchor,
                          f"answer rejected (score {_text(event.get('score'))}): {_clip(event.get('feedback'), 120)}",
                          False)
        return (f'<div class="verdict" id="{anchor}">{self._stamp(offset, event, "evaluation")}'
                f'<b class="{"ok" if passed else "warn"}">{"passed" if passed else "rejected"}</b> score '
                f'{_esc(event.get("score"))} · decision <b>{_esc(event.get("decision"))}</b> '
                f'({_esc(event.get("reason"))}) <span class="mute">{_esc(event.get("checkpoint"))}</span>'
                f'<div class="lbl">feedback</div><pre>{_esc(event.get("feedback") or "(none)")}</pre>'
                f'{self._extras(event, ("iteration", "score", "passed", "feedback", "decision", "reason", "checkpoint"))}'
                "</div>")

    def _final(self, run: Run, offset: float, event: Mapping[str, Any]) -> str:
        stop = _text(event.get("stop_reason"))
        return (f'<div class="final" id="{self._id()}">{self._stamp(offset, event, "final")}stop '
                f'<b class="{"ok" if stop in COMPLETE_STOPS else "warn"}">{_esc(stop)}</b>'
                f'<div class="lbl">answer</div><pre>{_esc(event.get("answer"))}</pre>'
                f'{self._extras(event, ("answer", "stop_reason", "iteration"))}</div>')

    def _unknown(self, run: Run, offset: float, event: Any) -> str:
        kind = event.get("kind") if isinstance(event, Mapping) else None
        label = f"unknown event kind {_clip(kind, 40)!r}" if isinstance(kind, str) else "event without a kind"
        stamp = (f'<span class="t">+{_secs(self._abs(offset, event))}</span>' if isinstance(event, Mapping) else "")
        return (f'<details class="unknown"><summary>{stamp}<span class="k">{_esc(label)}</span>'
                f'<span class="mute">shown as recorded</span></summary>{_raw(event)}</details>')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``rlm report`` arguments: ``TRACE`` and ``-o/--output``.

    Args:
        parser: the (sub)parser to add them to.
    """
    parser.add_argument("trace", metavar="TRACE.json", help="a trace: the JSON `rlm ask --trace FILE` writes, "
                                                            "or a run's result or trajectory saved as JSON")
    parser.add_argument("-o", "--output", metavar="REPORT.html",
                        help="where to write the page (default: TRACE with the suffix .html)")


def run(args: argparse.Namespace) -> int:
    """Write the report for parsed ``rlm report`` arguments; print its path, or the problem.

    Args:
        args: the namespace :func:`add_arguments` defines.

    Returns:
        0 when the page was written, 2 when the trace could not be read or the page not written.
    """
    output = Path(args.output) if args.output else Path(args.trace).with_suffix(".html")
    try:
        write_report(args.trace, output)
    except ReportError as exc:
        print(f"rlm report: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"rlm report: cannot write {output}: {exc.strerror or exc}; give a writable path with -o",
              file=sys.stderr)
        return 2
    print(f"Report: {output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``rlm report TRACE.json [-o report.html]``.

    Args:
        argv: the arguments after ``report`` (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 written, 2 bad input.
    """
    parser = argparse.ArgumentParser(prog="rlm report", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
