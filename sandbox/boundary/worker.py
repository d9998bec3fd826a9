"""The worker process: one persistent namespace that runs sandboxed cells.

Started by :class:`sandbox.boundary.repl.Sandbox` as ``python -I`` with an empty
environment in a temporary directory. It reads an ``init`` frame, builds the
policy, confines itself at the OS level (:func:`sandbox.boundary.confine.confine`: its own
uid when started as root, Landlock, seccomp, rlimits) or, with
``confinement="none"``, sets only its rlimits, then serves ``exec`` / ``set`` /
``get`` requests until its input closes. Host functions are reached by writing a
``call`` frame and waiting for the reply.
"""

from __future__ import annotations

import gc
import importlib
import os
import signal
import sys
import time
import traceback
from typing import Any

from .compiler import CHECK_ARGS, CHECK_STOP, IMPORT_FROM, SHOW, compile_cell
from .confine import ConfinementUnavailable, confine, set_rlimits
from .frames import MAX_FROM_WORKER, BlockingChannel, FrameError, encode_header
from .guards import Policy, plain_function
from .outbound import NotPlain, cap, clean_text, format_error, to_plain

_PRELOADED_CODECS = ("ascii", "latin_1", "cp1250", "cp1251", "cp1252", "iso8859_15", "utf_16", "utf_16_le",
                     "utf_16_be", "utf_32", "idna", "punycode", "mac_roman", "koi8_r", "unicode_escape")
_MAX_PLAIN_CHARS = MAX_FROM_WORKER // 2  # host-call arguments and variables read by the host: under its frame cap
# Sandbox code may run outside a cell (a value the host asks for has a custom items());
# it runs under this clock, never without one.
HOUSEKEEPING_SECONDS = 5.0

# Exception types a host-function error may be re-raised as inside the sandbox.
_HOST_ERROR_TYPES = {e.__name__: e for e in (TypeError, ValueError, KeyError, RuntimeError,
                                              TimeoutError, LookupError, ConnectionError)}


class CellStop(BaseException):
    """Ends a cell: a limit was hit or FINAL was called. Re-raised by every ``except``."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


class OutputBuffer:
    """Printed text of one cell: keeps the head and the tail, counts what was cut.

    Reports when more than ``flood_chars`` have been printed in total, so the worker
    stops a print loop instead of letting it run until the timeout.
    """

    def __init__(self, max_chars: int, flood_chars: int):
        self._half = max_chars // 2
        self._max = max_chars
        self._flood = flood_chars
        self._head: list[str] = []
        self._head_len = 0
        self._tail: list[str] = []
        self._tail_len = 0
        self.total = 0

    def write(self, text: str) -> bool:
        """Keep ``text`` (an exact str); True once the cell has printed more than the flood cap."""
        self.total += len(text)
        if self._head_len < self._half:
            take = text[: self._half - self._head_len]
            self._head.append(take)
            self._head_len += len(take)
            text = text[len(take):]
        if text:
            self._tail.append(text)
            self._tail_len += len(text)
            if self._tail_len > 2 * max(self._max - self._half, 1):
                joined = "".join(self._tail)[-(self._max - self._half):]
                self._tail, self._tail_len = [joined], len(joined)
        return self.total > self._flood

    def render(self) -> str:
        head = "".join(self._head)
        tail = "".join(self._tail)
        if self.total <= self._max:
            return clean_text(head + tail)
        tail = tail[-(self._max - self._half):] if self._max > self._half else ""
        cut = self.total - len(head) - len(tail)
        return clean_text(f"{head}\n... [{cut:,} characters truncated of {self.total:,}] ...\n{tail}")


class Worker:
    """One sandbox namespace and the clock that bounds every moment its code runs."""

    def __init__(self, channel: BlockingChannel, config: dict[str, Any]):
        self.channel = channel
        self.max_output_chars = int(config["max_output_chars"])
        self.max_final_chars = int(config["max_final_chars"])  # the largest answer FINAL/SUBMIT hands the host
        self.flood_chars = max(2_000_000, 100 * self.max_output_chars)
        self.policy = Policy(self.print)
        self.namespace: dict[str, Any] = self.policy.globals()
        self.reserved: dict[str, Any] = {}
        # The host's inputs (e.g. ``context``), put back after any cell that rebinds or deletes
        # them: a model that writes ``context = "..."`` would otherwise answer from text it made up.
        self.inputs: dict[str, Any] = {}
        self.submit_fields: list[str] | None = None
        # Values the sandbox made that the host displaced between cells: freed at the
        # start of the next cell, under its clock, so a finalizer never runs unclocked.
        self.graveyard: list[Any] = []
        self.configure(config)
        self.cell_count = 0
        self.sources: dict[str, list[str]] = {}
        self.running = False
        self._reset_cell_state(timeout_limit="timeout")

    def configure(self, config: dict[str, Any]) -> None:
        """(Re)define the names the host provides: tools, and SUBMIT's output fields."""
        for name in self.reserved:
            self.graveyard.append(self.namespace.pop(name, None))
        self.submit_fields = config.get("submit_fields")
        self.reserved = {
            CHECK_STOP: self.check_stop, CHECK_ARGS: self.policy.check_args, IMPORT_FROM: self.policy.import_from,
            SHOW: self.show,
            "FINAL": plain_function(self.final, "FINAL"), "FINAL_VAR": plain_function(self.final_var, "FINAL_VAR"),
            "SUBMIT": plain_function(self.submit, "SUBMIT"),
        }
        for name in config["tools"]:
            self.reserved[name] = self.make_tool(name)

    def _reset_cell_state(self, timeout_limit: str) -> None:
        self.out = OutputBuffer(self.max_output_chars, self.flood_chars)
        self.stop: CellStop | None = None
        self.in_host_call = False
        self.expired = False
        self.timeout_limit = timeout_limit
        self.has_final = False
        self.final_value: Any = None

    # -- the clock ---------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        """Start the clock: from here on sandbox code may run, and the alarm may stop it."""
        self.running = True
        gc.enable()  # cyclic garbage (and its finalizers) is collected only while the clock runs
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001), 0.05)

    def _disarm(self) -> None:
        self.running = False  # first: an alarm already pending then does nothing
        signal.setitimer(signal.ITIMER_REAL, 0)
        gc.disable()

    # -- names the sandbox sees ------------------------------------------------------

    def print(self, *args: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None,
              flush: bool = False) -> None:
        for what, value in (("sep", sep), ("end", end)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{what} must be None or a string, not {type(value).__name__}")
        # Exact strs only: a str subclass's join/__add__ could hand the buffer anything.
        sep = " " if sep is None else str.__str__(sep)
        end = "\n" if end is None else str.__str__(end)
        text = sep.join([str.__str__(str(a)) for a in args]) + end
        if file is None:
            self._write(text)
        else:
            self.policy.getattr(file, "write")(text)

    def show(self, value: Any) -> None:
        if value is not None:
            self._write(str.__str__(repr(value)) + "\n")

    def _write(self, text: str) -> None:
        if self.out.write(text):
            raise self._halt("output", f"output limit: the cell printed more than {self.flood_chars:,} "
                                       "characters and was stopped; print summaries or slices instead")

    def check_stop(self) -> None:
        if self.stop is not None:
            raise CellStop(self.stop.reason, self.stop.message)

    def _halt(self, reason: str, message: str) -> CellStop:
        """Record why the cell ends (the only record the worker trusts) and make the error to raise."""
        self.stop = CellStop(reason, message)
        return CellStop(reason, message)

    def final(self, value: Any) -> None:
        """FINAL(value): end the cell and hand ``value`` to the host as the answer."""
        try:
            plain = to_plain(value, max_chars=self.max_final_chars, strict=False)
        except NotPlain as exc:
            raise ValueError(f"FINAL: the answer cannot be returned because {exc}; "
                             "return something smaller, e.g. a summary or the first items") from None
        self.has_final, self.final_value = True, plain
        raise self._halt("final", "FINAL was called")

    def submit(self, *args: Any, **kwargs: Any) -> None:
        """SUBMIT(field=value, ...) or SUBMIT(v1, v2, ...) in field order: FINAL with a dict of fields."""
        fields = self.submit_fields
        if fields is None:
            if args and kwargs or len(args) > 1:
                raise TypeError("SUBMIT takes one value, or keyword arguments")
            self.final(args[0] if args else dict(kwargs))
        usage = f"SUBMIT({', '.join(fields)})"
        if len(args) > len(fields):
            raise TypeError(f"{usage} takes {len(fields)} values, got {len(args)}")
        values = dict(zip(fields, args))
        for key, value in kwargs.items():
            if key not in fields:
                raise TypeError(f"{usage}: unknown output field {key!r}")
            if key in values:
                raise TypeError(f"{usage}: {key!r} given twice")
            values[key] = value
        missing = [f for f in fields if f not in values]
        if missing:
            raise TypeError(f"{usage}: missing {', '.join(missing)}")
        self.final(values)

    def final_var(self, name: Any) -> None:
        """FINAL_VAR(name): FINAL with the value of the variable called ``name``."""
        # An exact str: a subclass's __eq__/startswith could name '__builtins__'.
        if type(name) is not str or not name.isidentifier() or name.startswith("_"):
            raise ValueError("FINAL_VAR expects the name of a variable as a string, e.g. FINAL_VAR('answer')")
        if name not in self.namespace or name in self.reserved:
            raise NameError(f"FINAL_VAR: no variable named {name!r}")
        self.final(self.namespace[name])

    def make_tool(self, name: str):
        def tool(*args: Any, **kwargs: Any) -> Any:
            return self.call_host(name, args, kwargs)
        tool.__name__ = tool.__qualname__ = name
        return tool

    def call_host(self, name: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        # Encoded once, here, while the clock runs: the frame that is sent is exactly what
        # was checked, and no user code (a dict subclass's items()) runs once the clock stops.
        try:
            request = encode_header({"type": "call", "name": name,
                                     "args": to_plain(args, max_chars=_MAX_PLAIN_CHARS, strict=True),
                                     "kwargs": to_plain(kwargs, max_chars=_MAX_PLAIN_CHARS, strict=True)})
        except NotPlain as exc:
            raise TypeError(f"{name}(): arguments must be JSON values (str, int, float, bool, None, "
                            f"lists, dicts with str keys), and {exc}") from None
        # The cell's clock pauses while the host works; the host bounds that time itself
        # and sends back how much the cell has left (and which limit that is).
        self.in_host_call = True
        signal.setitimer(signal.ITIMER_REAL, 0)
        left = 0.0
        try:
            self.channel.write_encoded(request)
            reply, _ = self.channel.read()
            left = float(reply.get("timeout", 0))
        except (FrameError, OSError):
            os._exit(3)  # the host is gone: there is nobody left to serve
        finally:
            self.in_host_call = False
            # Whatever happened above, the cell never goes on without a clock.
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001), 0.05)
        if reply.get("stop"):
            raise self._halt(str(reply["stop"]), str(reply.get("message", "")))
        self.timeout_limit = str(reply.get("timeout_limit", self.timeout_limit))
        if self.expired or left <= 0:
            raise self._halt(self.timeout_limit, self._timeout_message())
        if "error" in reply:
            error = reply["error"]
            raise _HOST_ERROR_TYPES.get(error.get("type"), RuntimeError)(str(error.get("message", "")))
        return reply.get("value")

    # -- cells -----------------------------------------------------------------------

    def _timeout_message(self) -> str:
        if self.timeout_limit == "budget":
            return "budget limit: the run's wall-clock budget (max_seconds) ran out during this cell"
        return "timeout limit: the cell ran past its time limit and was interrupted (variables kept)"

    def on_alarm(self, signum: int, frame: Any) -> None:
        # The alarm may land anywhere while the clock runs, the worker's own code included
        # (a C loop inside print's str() calls): every armed region catches the stop.
        if not self.running or (frame is not None and frame.f_code is _DISARM_CODE):
            return  # outside the clock, or stopping it
        if self.in_host_call:
            self.expired = True
            return
        if self.stop is not None:
            # A stop is pending but code still runs (an ``except f():`` type expression, or a
            # finalizer that swallowed it as unraisable): raise it again, every 50 ms.
            raise CellStop(self.stop.reason, self.stop.message)
        raise self._halt(self.timeout_limit, self._timeout_message())

    def execute(self, code: str, timeout: float, timeout_limit: str) -> dict[str, Any]:
        self.cell_count += 1
        filename = f"<cell {self.cell_count}>"
        started = time.monotonic()
        self._reset_cell_state(timeout_limit)  # frees only the worker's own, plain values
        error = None
        try:
            self._arm(timeout)  # compiling a huge cell takes time too
            compiled, error = self._compile(code, filename)
            if compiled is not None:
                error = self._run(compiled)
        except CellStop:
            pass  # the alarm landed in the worker's own code: the stop is recorded in self.stop
        except MemoryError:
            self._halt("memory", "memory limit: the worker ran out of memory after the cell; variables kept")
        finally:
            self._disarm()
        restored = self._restore_inputs()
        limit = None
        if self.stop is not None:  # the worker's own record decides, never the exception object
            limit, error = (None, None) if self.stop.reason == "final" else (self.stop.reason, self.stop.message)
        return self._result(error=error, limit=limit, started=started, restored=restored)

    def _restore_inputs(self) -> list[str]:
        """Put back the host's inputs a cell rebound or deleted; the names put back."""
        restored = []
        for name, value in self.inputs.items():
            # Unclocked but safe: an exact-str lookup and an identity test run no sandbox code, and
            # the displaced value is not freed here (a finalizer would run unclocked).
            current = self.namespace.get(name, self)
            if current is not value:
                if current is not self:
                    self.graveyard.append(current)  # freed under the next cell's clock
                self.namespace[name] = value
                restored.append(name)
        return restored

    def _compile(self, code: str, filename: str) -> tuple[Any, str | None]:
        """The compiled cell, or ``None`` and the error text."""
        try:
            compiled = compile_cell(code, filename)
        except SyntaxError as exc:
            return None, clean_text(f"SyntaxError: {exc}")
        except (RecursionError, MemoryError, ValueError) as exc:  # nesting too deep, NUL bytes
            return None, clean_text(f"SyntaxError: the cell cannot be compiled: {type(exc).__name__}: "
                                    f"{cap(str(exc), 200)}")
        self.sources[filename] = code.splitlines()
        return compiled, None

    def _run(self, compiled: Any) -> str | None:
        """Run a compiled cell under the armed clock; its error text, if it raised one."""
        self.graveyard.clear()
        self.namespace.update(self.reserved)  # a cell's own binding of these names is dropped here, clocked
        try:
            exec(compiled, self.namespace)
        except MemoryError:
            if self.stop is None:
                self._halt("memory", "memory limit: the cell ran out of memory (MemoryError); variables kept")
        except BaseException as exc:  # noqa: BLE001 - anything the cell raised is its error
            if self.stop is None:
                return self._format_error(exc)
        return None

    def _result(self, *, error: str | None, started: float, limit: str | None = None,
                restored: list[str] | None = None) -> dict[str, Any]:
        output = self.out.render()
        if restored:
            names = ", ".join(f"`{name}`" for name in restored)
            separator = "\n" if output and not output.endswith("\n") else ""
            what = "is an input" if len(restored) == 1 else "are inputs"
            output += (f"{separator}[note: {names} {what} and cannot be replaced: this cell assigned or deleted "
                       "it, and the original was put back. Keep your own values in new variables, "
                       "e.g. `part = ...`]\n")
        return {"type": "result", "output": output, "error": error, "limit": limit,
                "has_final": self.has_final, "final": self.final_value,
                "seconds": time.monotonic() - started}

    def _format_error(self, exc: BaseException) -> str:
        entries = [(frame.f_code.co_filename, lineno, frame.f_code.co_name)
                   for frame, lineno in traceback.walk_tb(exc.__traceback__)
                   if frame.f_code.co_filename in self.sources]
        try:
            # May run the sandbox's __str__ (the clock is still armed), which may return a
            # str subclass whose own methods must not run later: copy it to an exact str.
            message = clean_text(str(exc))
        except BaseException:  # noqa: BLE001 - a broken (or stopped) __str__ must not hide the error
            message = "<unprintable message>"
        return format_error(entries, self._source_line, type(exc).__name__, message)

    def _source_line(self, filename: str, lineno: int) -> str:
        source = self.sources.get(filename, [])
        return source[lineno - 1].strip() if 0 < lineno <= len(source) else ""

    # -- variables -------------------------------------------------------------------

    def set_variable(self, header: dict[str, Any], payload: bytes | None) -> dict[str, Any]:
        name = header["name"]
        if header.get("encoding") == "str":
            value: Any = payload.decode("utf-8") if payload is not None else ""  # the only copy made here
        else:
            value = header.get("value")
        if name in self.namespace:
            self.graveyard.append(self.namespace[name])
        self.namespace[name] = value
        if header.get("restore"):
            self.inputs[name] = value
        else:
            self.inputs.pop(name, None)
        return {"type": "ok"}

    def get_variable(self, name: str) -> tuple[dict[str, Any], bytes | None]:
        if name not in self.namespace or name.startswith("_") or name in self.reserved:
            return {"type": "error", "message": f"no variable named {name!r}"}, None
        value = self.namespace[name]
        if isinstance(value, str):
            data = clean_text(value).encode("utf-8")
            if len(data) > MAX_FROM_WORKER:  # the host would refuse the frame and kill the worker
                return {"type": "error", "message": f"variable {name!r} is {len(data):,} bytes as UTF-8; "
                                                    f"at most {MAX_FROM_WORKER:,} can be read"}, None
            return {"type": "value", "encoding": "str"}, data
        self._reset_cell_state("timeout")
        self._arm(HOUSEKEEPING_SECONDS)  # to_plain may call the value's own methods
        try:
            plain = to_plain(value, max_chars=_MAX_PLAIN_CHARS, strict=True)
        except NotPlain as exc:
            return {"type": "error", "message": f"variable {name!r} holds a {type(value).__name__}, "
                                                f"which is not JSON-serializable ({exc})"}, None
        except CellStop:
            return {"type": "error", "message": f"reading variable {name!r} took more than "
                                                f"{HOUSEKEEPING_SECONDS:g} s"}, None
        finally:
            self._disarm()
        return {"type": "value", "encoding": "json", "value": plain}, None

    def serve(self) -> None:
        while True:
            try:
                header, payload = self.channel.read()
            except FrameError:
                return
            kind = header["type"]
            try:
                reply, data = self._answer(kind, header, payload)
            except BaseException as exc:  # noqa: BLE001 - no request may end the worker
                reply, data = self._failed(kind, exc), None
            del payload  # drop the raw bytes before anything else allocates
            if reply is None:
                return
            self.channel.write(reply, data)

    def _answer(self, kind: str, header: dict[str, Any],
                payload: bytes | None) -> tuple[dict[str, Any] | None, bytes | None]:
        if kind == "exec":
            return self.execute(header["code"], float(header["timeout"]), header.get("timeout_limit", "timeout")), None
        if kind == "set":
            return self.set_variable(header, payload), None
        if kind == "get":
            return self.get_variable(header["name"])
        if kind == "configure":
            self.configure(header)
            return {"type": "ok"}, None
        if kind == "names":
            names = sorted(k for k in self.namespace if not k.startswith("_") and k not in self.reserved)
            return {"type": "value", "encoding": "json", "value": names}, None
        return None, None

    def _failed(self, kind: str, exc: BaseException) -> dict[str, Any]:
        """The reply for a request the worker could not answer: the session goes on."""
        self._disarm()
        message = clean_text(f"the sandbox worker could not answer {kind!r}: {type(exc).__name__}")
        if kind == "exec":
            return {"type": "result", "output": "", "error": message, "limit": None, "has_final": False,
                    "final": None, "seconds": 0.0}
        return {"type": "error", "message": message}


_DISARM_CODE = Worker._disarm.__code__


def preload() -> None:
    """Load now what allowlisted code imports lazily: once confined, the stdlib may be unreadable."""
    import _strptime  # noqa: F401 - datetime.strptime
    for codec in _PRELOADED_CODECS:
        importlib.import_module(f"encodings.{codec}")


def main() -> None:
    # Frames go over a private copy of stdout; stray writes to fd 1/2 go nowhere.
    out_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    channel = BlockingChannel(0, out_fd, max_header=1 << 26, max_payload=1 << 31)
    header, _ = channel.read()
    if header["type"] != "init":
        sys.exit(2)
    worker = Worker(channel, header)
    signal.signal(signal.SIGALRM, worker.on_alarm)
    preload()
    memory_limit_mb = int(header["memory_limit_mb"])
    try:
        if header["confinement"] == "os":
            confine(memory_limit_mb=memory_limit_mb, read_paths=header["read_paths"])  # the wall under the policy
        else:
            set_rlimits(memory_limit_mb)
    except ConfinementUnavailable as exc:
        channel.write({"type": "refused", "message": str(exc)})
        os._exit(2)
    gc.disable()  # see Worker._arm
    channel.write({"type": "ready", "pid": os.getpid()})
    worker.serve()
    # Skip interpreter finalization: it would run the sandbox's finalizers with no clock.
    os._exit(0)


if __name__ == "__main__":
    main()
