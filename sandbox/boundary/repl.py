"""``Sandbox``: a persistent Python REPL whose cells run in a restricted worker process.

The host side owns every clock and every byte that comes back. A cell that ignores
its soft timeout is killed with its process group at ``timeout + kill_grace``; the
worker is restarted and the variables set from the host are loaded again. Nothing
the cell does can crash or hang the host: frames are size-capped JSON, reads and
writes have deadlines, and a malformed frame kills the worker.
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import keyword
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass
from typing import Any

from .caps import CapReached, Deadline
from .confine import ConfinementUnavailable, check_support, interpreter_read_paths
from .frames import MAX_FROM_WORKER, DeadlineChannel, FrameError
from .loader import PACKAGE_DIR, child_program
from .outbound import MAX_ERROR_CHARS, plain_problem
from .redact import describe_error

LIMITS = ("timeout", "memory", "output", "budget", "crash")
# "os": the worker confines itself with the kernel's mechanisms (sandbox.boundary.confine) before any
# cell runs; "none": the RestrictedPython policy and rlimits alone (unsafe for untrusted input).
CONFINEMENTS = ("os", "none")
RESERVED_NAMES = frozenset({"FINAL", "FINAL_VAR", "SUBMIT", "print"})
MAX_CELL_CHARS = 1_000_000  # no model writes more code than this in one cell; compiling it is not free
# The worker gets a bare ``sandbox`` package (no __init__): it loads only the compiler,
# frames, guards and worker modules, which starts faster and keeps host code out of it.
# The worker's program; tests put a hostile worker in its place to check the host's side.
WORKER_PROGRAM = child_program("worker", "main")
_START_TIMEOUT = 30.0
_MAX_OUTPUT_SLACK = 1000  # the truncation notice the worker adds to capped output and errors
# The sandbox's defaults: the one set every entry point starts from (``SandboxOptions`` has them).
# A cell's printed output is capped at dspy.RLM's own ``max_output_chars`` default, so the drop-in
# shows the root LM what DSPy would.
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_OUTPUT_CHARS = 10_000
DEFAULT_MEMORY_LIMIT_MB = 1024
DEFAULT_TOOL_TIMEOUT = 600.0
DEFAULT_MAX_FINAL_CHARS = 1_000_000
_PROTOCOL_BROKEN = ("crash limit: the worker broke the protocol and was killed; the REPL was restarted and "
                    "its variables were lost")


class SandboxError(Exception):
    """The sandbox could not do what was asked (closed, or the worker failed to start)."""


class WorkerStartError(SandboxError):
    """The worker process could not be started; the message carries its stderr."""


@dataclass(frozen=True)
class CellResult:
    """What one cell did.

    ``limit`` is ``"timeout"``, ``"memory"``, ``"output"``, ``"budget"`` or ``"crash"``
    when a limit stopped the cell, else ``None``. ``final`` is the value given to
    ``FINAL(...)``/``FINAL_VAR(name)`` (``has_final`` tells it apart from ``None``).
    ``restarted`` means the worker was killed and its code-made variables are gone.
    ``stopped_by`` names the budget cap (``"max_llm_calls"``, ``"max_seconds"``...) when
    ``limit`` is ``"budget"``.
    """

    output: str = ""
    error: str | None = None
    final: Any = None
    has_final: bool = False
    limit: str | None = None
    seconds: float = 0.0
    restarted: bool = False
    stopped_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_positive(name: str, value: Any, *, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
        raise ValueError(f"Sandbox({name}=...) must be a positive {'integer' if integer else 'number'}, "
                         f"got {value!r}")


def check_tools(tools: Mapping[str, Callable[..., Any]] | None,
                reserved: frozenset[str] = RESERVED_NAMES) -> dict[str, Callable[..., Any]]:
    """``tools`` as a dict, or a clear error for a bad name, a ``reserved`` name or a non-callable."""
    tools = dict(tools or {})
    for name, fn in tools.items():
        check_identifier(name, "tool name")
        if name in reserved:
            raise ValueError(f"tool name {name!r} collides with a name the REPL defines, so it is reserved")
        if not callable(fn):
            raise TypeError(f"tool {name!r} must be callable, got {type(fn).__name__}")
    return tools


def _check_submit_fields(fields: Sequence[str] | None) -> list[str] | None:
    if fields is None:
        return None
    if isinstance(fields, str):
        raise TypeError("submit_fields must be a sequence of field names, not a str")
    fields = list(fields)
    for name in fields:
        check_identifier(name, "output field name")
    if len(set(fields)) != len(fields):
        raise ValueError(f"output field names repeat: {fields}")
    return fields


def check_identifier(name: Any, what: str) -> None:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(f"{what} must be a Python identifier, got {name!r}")
    if name.startswith("_"):
        raise ValueError(f"{what} {name!r} starts with '_'; sandboxed code cannot use such names")


class Sandbox:
    """One REPL session in a worker process. Use as a context manager, or call :meth:`close`.

    ``tools`` are host callables; inside the sandbox each is a plain forwarding
    function whose arguments and result cross as JSON and whose exceptions cross as
    a type name and a redacted message. ``timeout`` bounds the cell's own time; the
    clock pauses while a tool runs, and each tool call is bounded by
    ``tool_timeout`` instead. A ``budget`` bounds everything by its wall clock.
    ``confinement="os"`` (the default) has the worker confine itself with seccomp,
    Landlock and, under root, a uid of its own before any cell runs (see
    :mod:`sandbox.boundary.confine`); ``"none"`` runs on the policy alone and is unsafe for
    untrusted input. ``max_final_chars`` bounds a ``FINAL``/``SUBMIT`` value.

    Raises:
        ConfinementUnavailable: ``confinement="os"`` cannot be applied here; the message
            says what is missing and how to allow it.
        WorkerStartError: the worker process could not be started.
    """

    def __init__(self, *, tools: Mapping[str, Callable[..., Any]] | None = None, timeout: float = DEFAULT_TIMEOUT,
                 memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB, max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
                 kill_grace: float = 1.0, tool_timeout: float = DEFAULT_TOOL_TIMEOUT, budget: Deadline | None = None,
                 confinement: str = "os",
                 max_tool_threads: int = 8, submit_fields: Sequence[str] | None = None,
                 max_final_chars: int = DEFAULT_MAX_FINAL_CHARS):
        tools = check_tools(tools)
        submit_fields = _check_submit_fields(submit_fields)
        _check_positive("timeout", timeout)
        _check_positive("kill_grace", kill_grace)
        _check_positive("tool_timeout", tool_timeout)
        _check_positive("max_output_chars", max_output_chars, integer=True)
        _check_positive("max_tool_threads", max_tool_threads, integer=True)
        _check_positive("memory_limit_mb", memory_limit_mb, integer=True)
        _check_positive("max_final_chars", max_final_chars, integer=True)
        if memory_limit_mb < 128:
            raise ValueError(f"Sandbox(memory_limit_mb=...) must be at least 128, got {memory_limit_mb}")
        if confinement not in CONFINEMENTS:
            raise ValueError(f"Sandbox(confinement=...) must be one of {', '.join(map(repr, CONFINEMENTS))}, "
                             f"got {confinement!r}")
        if confinement == "os":
            check_support()  # fail closed, before anything starts: says what is missing and how to allow it
        if budget is not None and not isinstance(budget, Deadline):
            raise TypeError(f"Sandbox(budget=...) must be a sandbox.Budget (anything with a .deadline), "
                            f"got {type(budget).__name__}")
        self.tools = tools
        self.submit_fields = submit_fields
        self.timeout = float(timeout)
        self.kill_grace = float(kill_grace)
        self.tool_timeout = float(tool_timeout)
        self.memory_limit_mb = int(memory_limit_mb)
        self.max_output_chars = int(max_output_chars)
        self.max_final_chars = int(max_final_chars)
        self.budget = budget
        self.confinement = confinement
        self._variables: dict[str, tuple[Any, bool]] = {}  # name -> (value, restore)
        self._lock = threading.RLock()
        self._pool = ThreadPoolExecutor(max_workers=max_tool_threads, thread_name_prefix="sandbox-tool")
        self._proc: subprocess.Popen[bytes] | None = None
        self._channel: DeadlineChannel | None = None
        self._closed = False
        self._state_lost = False
        self._workdir = tempfile.mkdtemp(prefix="rlm-sandbox-")
        self._box: dict[str, Any] = {"proc": None}  # what the finalizer must kill if close() is never called
        self._finalizer = weakref.finalize(self, _cleanup, self._box, self._pool, self._workdir)
        self.restarts = 0
        self._start_worker()

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Kill the worker and free everything; safe to call twice."""
        with self._lock:
            self._closed = True
            self._finalizer()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _start_worker(self) -> None:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-c", WORKER_PROGRAM, PACKAGE_DIR],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env={}, cwd=self._workdir, start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            raise WorkerStartError(f"could not start the sandbox worker ({sys.executable}): {exc}") from exc
        self._proc = self._box["proc"] = proc
        channel = DeadlineChannel(proc.stdout.fileno(), proc.stdin.fileno(),
                                  max_header=MAX_FROM_WORKER, max_payload=MAX_FROM_WORKER)
        self._channel = channel
        deadline = time.monotonic() + _START_TIMEOUT
        init = {"type": "init", "tools": sorted(self.tools), "submit_fields": self.submit_fields,
                "memory_limit_mb": self.memory_limit_mb,
                "max_output_chars": self.max_output_chars, "max_final_chars": self.max_final_chars,
                "confinement": self.confinement,
                # Worked out once per host process: the worker then needs no sysconfig or importlib.
                "read_paths": interpreter_read_paths() if self.confinement == "os" else None}
        try:
            ok = channel.write(init, None, deadline)
            reply = channel.read(deadline) if ok else None
        except (FrameError, OSError):
            reply = None
        if reply is not None and reply[0].get("type") == "refused":
            self._kill_worker()
            raise ConfinementUnavailable(str(reply[0].get("message", "the worker could not confine itself")))
        if reply is None or reply[0].get("type") != "ready":
            stderr = self._kill_worker(read_stderr=True)
            raise WorkerStartError(f"the sandbox worker did not start: {stderr.strip()[-2000:] or 'no output'}")
        proc.stderr.close()
        for name, (value, restore) in self._variables.items():
            self._send_variable(name, value, restore)

    def _kill_worker(self, *, read_stderr: bool = False) -> str:
        proc, self._proc, self._channel = self._proc, None, None
        self._box["proc"] = None
        stderr = ""
        if proc is not None:
            _kill_group(proc)
            if read_stderr and proc.stderr and not proc.stderr.closed:
                stderr = proc.stderr.read().decode("utf-8", "replace")
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream and not stream.closed:
                    stream.close()
        return stderr

    def restart(self) -> None:
        """Start a fresh worker; variables set with :meth:`set_variable` are loaded again."""
        with self._lock:
            self._ensure_open()
            self._kill_worker()
            self.restarts += 1
            self._start_worker()

    def _ensure_open(self) -> None:
        if self._closed:
            raise SandboxError("this Sandbox is closed; create a new one")
        if self._proc is None:
            self._start_worker()

    def configure(self, *, tools: Mapping[str, Callable[..., Any]] | None = None,
                  submit_fields: Sequence[str] | None = None) -> None:
        """Replace the tools and ``SUBMIT``'s output fields of a running sandbox; variables are kept."""
        tools, submit_fields = check_tools(tools), _check_submit_fields(submit_fields)
        with self._lock:
            self._ensure_open()
            self.tools, self.submit_fields = tools, submit_fields
            self._request({"type": "configure", "tools": sorted(tools), "submit_fields": submit_fields})

    # -- variables -------------------------------------------------------------------

    def set_variable(self, name: str, value: Any, *, restore: bool = False) -> None:
        """Bind ``name`` in the sandbox to a string or a JSON value (kept across restarts).

        With ``restore=True`` the binding is an input the cells may read but not replace: after a
        cell rebinds or deletes it, the worker puts it back and says so in that cell's output.
        """
        check_identifier(name, "variable name")
        if name in self.tools or name in RESERVED_NAMES:
            raise ValueError(f"variable name {name!r} is taken by a sandbox function")
        if isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"variable {name!r}: bytes cannot be loaded; decode them to str first "
                            "(e.g. value.decode('utf-8'))")
        if not isinstance(value, str):
            try:
                json.dumps(value)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"variable {name!r} must be a str or a JSON value (dict, list, number, "
                                f"bool, None), got {type(value).__name__}: {exc}") from None
        with self._lock:
            self._ensure_open()
            self._send_variable(name, value, restore)
            self._variables[name] = (value, restore)

    def _send_variable(self, name: str, value: Any, restore: bool) -> None:
        if isinstance(value, str):
            # Sent as UTF-8 a slice at a time (sandbox.boundary.frames.text_parts): no whole encoded copy.
            header, payload = {"type": "set", "name": name, "encoding": "str"}, value
        else:
            header, payload = {"type": "set", "name": name, "encoding": "json", "value": value}, None
        self._request({**header, "restore": restore}, payload)

    def get_variable(self, name: str) -> Any:
        """The value of ``name`` in the sandbox; it must be a string or JSON-serializable."""
        check_identifier(name, "variable name")
        with self._lock:
            self._ensure_open()
            header, payload = self._request({"type": "get", "name": name})
        if header.get("type") == "error":
            message = str(header.get("message", ""))
            raise (KeyError(message) if message.startswith("no variable") else TypeError(message))
        if header.get("encoding") == "str":
            return (payload or b"").decode("utf-8")
        return header.get("value")

    def variables(self) -> list[str]:
        """Names currently defined in the sandbox namespace."""
        with self._lock:
            self._ensure_open()
            return list(self._request({"type": "names"})[0].get("value", []))

    def _request(self, header: dict[str, Any],
                 payload: bytes | str | None = None) -> tuple[dict[str, Any], bytes | None]:
        deadline = time.monotonic() + _START_TIMEOUT + (len(payload) / 50e6 if payload else 0)
        try:
            if self._channel is not None and self._channel.write(header, payload, deadline):
                reply = self._channel.read(deadline)
                if reply is not None:
                    return reply
        except (FrameError, OSError):
            pass
        self._kill_worker()
        self._state_lost = True  # the next cell runs in a fresh worker: its result must say so
        raise SandboxError(f"the sandbox worker stopped answering a {header['type']!r} request; "
                           "it was killed and will restart on next use")

    # -- cells -----------------------------------------------------------------------

    def execute(self, code: str, *, timeout: float | None = None) -> CellResult:
        """Run one cell; variables persist to the next. Never raises for what the cell does."""
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, got {type(code).__name__}")
        if timeout is not None:
            _check_positive("timeout", timeout)
        if len(code) > MAX_CELL_CHARS:
            return CellResult(error=f"SyntaxError: the cell is {len(code):,} characters long; the limit is "
                                    f"{MAX_CELL_CHARS:,}: write shorter code and keep data in variables")
        with self._lock:
            self._ensure_open()
            result = _CellRun(self, code, float(timeout or self.timeout)).run()
            if self._state_lost:
                self._state_lost = False
                result = dataclasses.replace(result, restarted=True)
            return result

    def _crash(self, started: float, limit: str, error: str) -> CellResult:
        self._kill_worker()
        self.restarts += 1
        try:
            self._start_worker()
        except WorkerStartError as exc:
            error += f"; restarting the worker failed: {exc}"
        return CellResult(error=error, limit=limit, seconds=time.monotonic() - started, restarted=True,
                          stopped_by="max_seconds" if limit == "budget" else None)


class _CellRun:
    """The host's side of one cell: clocks, host-function calls, kill on overrun."""

    def __init__(self, sandbox: Sandbox, code: str, timeout: float):
        self.sb = sandbox
        self.code = code
        self.started = time.monotonic()
        self.compute_deadline = self.started + timeout  # moves later by the time tools take
        budget = sandbox.budget
        self.budget_deadline = budget.deadline if budget is not None else None
        self.budget_cap: str | None = None  # the cap a host function reported, if one stopped the cell

    def soft_deadline(self) -> tuple[float, str]:
        if self.budget_deadline is not None and self.budget_deadline <= self.compute_deadline:
            return self.budget_deadline, "budget"
        return self.compute_deadline, "timeout"

    def run(self) -> CellResult:
        sb = self.sb
        soft, limit = self.soft_deadline()
        if soft <= self.started:
            return CellResult(error="budget exhausted (max_seconds): no time left to run this cell",
                              limit="budget", stopped_by="max_seconds")
        header = {"type": "exec", "code": self.code, "timeout": soft - self.started, "timeout_limit": limit}
        while True:
            soft, limit = self.soft_deadline()
            hard = soft + sb.kill_grace
            try:
                if header is not None and not sb._channel.write(header, None, hard):
                    return self._overrun(limit)
                header = None
                frame = sb._channel.read(hard)
            except (FrameError, OSError):
                return self._died()
            if frame is None:
                return self._overrun(limit)
            reply, _ = frame
            if reply["type"] == "result":
                return self._result(reply)
            if reply["type"] != "call":
                return sb._crash(self.started, "crash", _PROTOCOL_BROKEN)
            header = self._call_tool(reply)

    def _call_tool(self, request: dict[str, Any]) -> dict[str, Any]:
        name, args, kwargs = request.get("name"), request.get("args"), request.get("kwargs")
        began = time.monotonic()
        reply = self._dispatch(name, args, kwargs)
        self.compute_deadline += time.monotonic() - began
        soft, limit = self.soft_deadline()
        return {"type": "return", **reply, "timeout": max(0.0, soft - time.monotonic()), "timeout_limit": limit}

    def _dispatch(self, name: Any, args: Any, kwargs: Any) -> dict[str, Any]:
        sb = self.sb
        if not isinstance(name, str) or name not in sb.tools or not isinstance(args, list) \
                or not isinstance(kwargs, dict):
            return {"error": {"type": "RuntimeError", "message": f"unknown host function {name!r}"}}
        wait = sb.tool_timeout
        budget_bound = self.budget_deadline is not None and self.budget_deadline - time.monotonic() < wait
        if budget_bound:
            wait = max(0.0, self.budget_deadline - time.monotonic())
        future = sb._pool.submit(contextvars.copy_context().run, sb.tools[name], *args, **kwargs)
        try:
            value = future.result(timeout=wait)
        except FutureTimeout:
            future.cancel()
            if budget_bound:
                return {"stop": "budget", "message": "budget limit: the run's wall-clock budget (max_seconds) "
                                                     f"ran out while {name}() was running"}
            return {"error": {"type": "TimeoutError",
                              "message": f"{name}() did not return within {sb.tool_timeout:g} s"}}
        except CapReached as exc:
            self.budget_cap = exc.limit
            return {"stop": "budget", "message": f"budget limit: {exc}"}
        except Exception as exc:  # noqa: BLE001 - every tool error becomes a sanitized message
            kind, message = describe_error(exc)
            return {"error": {"type": kind, "message": f"{name}() failed: {kind}: {message}"}}
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            return {"error": {"type": "TypeError",
                              "message": f"{name}() returned a {type(value).__name__}, which cannot "
                                         "cross into the sandbox (JSON values only)"}}
        return {"value": value}

    def _result(self, reply: dict[str, Any]) -> CellResult:
        limit = reply.get("limit")
        output, error, final = reply.get("output"), reply.get("error"), reply.get("final")
        # The host does not trust the worker's own caps: a worker the policy lost could
        # send any text or a value nested deep enough to overflow the host's stack.
        if limit not in (None, *LIMITS) or not isinstance(output, str) or not isinstance(error, (str, type(None))) \
                or len(output) > _MAX_OUTPUT_SLACK + 2 * self.sb.max_output_chars \
                or len(error or "") > _MAX_OUTPUT_SLACK + MAX_ERROR_CHARS \
                or plain_problem(final, max_chars=self.sb.max_final_chars) is not None:
            return self.sb._crash(self.started, "crash", "crash limit: the worker sent a malformed result and "
                                                         "was killed; the REPL was restarted")
        return CellResult(output=output, error=error, final=final,
                          has_final=bool(reply.get("has_final")), limit=limit,
                          seconds=time.monotonic() - self.started,
                          stopped_by=(self.budget_cap or "max_seconds") if limit == "budget" else None)

    def _overrun(self, limit: str) -> CellResult:
        what = ("the run's wall-clock budget (max_seconds) ran out" if limit == "budget"
                else f"the cell ignored its time limit for {self.sb.kill_grace:g} s more")
        return self.sb._crash(self.started, limit, f"{limit} limit: {what}; the worker was killed and "
                                                   "restarted, variables created by code were lost "
                                                   "(variables set by the host were restored)")

    def _died(self) -> CellResult:
        proc = self.sb._proc
        try:
            code = proc.wait(timeout=1.0) if proc is not None else None
        except subprocess.TimeoutExpired:  # it closed the channel or broke the protocol, but still runs
            return self.sb._crash(self.started, "crash", _PROTOCOL_BROKEN)
        how = (f"signal {signal.Signals(-code).name}" if isinstance(code, int) and code < 0
               else f"exit code {code}")
        hint = " (likely C stack exhaustion from deep nesting)" if code == -signal.SIGSEGV else ""
        return self.sb._crash(self.started, "crash", f"crash limit: the worker process died ({how}){hint}; "
                                                     "it was restarted, variables created by code were lost "
                                                     "(variables set by the host were restored)")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass
    proc.wait()


def _cleanup(box: dict[str, Any], pool: ThreadPoolExecutor, workdir: str) -> None:
    proc = box.get("proc")
    if proc is not None:
        _kill_group(proc)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream and not stream.closed:
                stream.close()
        box["proc"] = None
    pool.shutdown(wait=False, cancel_futures=True)
    shutil.rmtree(workdir, ignore_errors=True)
