"""The worker process: one persistent namespace that runs sandboxed cells.

Started by :class:`sandbox.repl.Sandbox` as ``python -I`` with an empty
environment in a temporary directory. It reads an ``init`` frame, applies its
own resource limits and (when started as root) drops to an unprivileged user,
then serves ``exec`` / ``set`` / ``get`` requests until its input closes. Host
functions are reached by writing a ``call`` frame and waiting for the reply.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import signal
import sys
import time
import traceback
from typing import Any

from sandbox.compiler import CHECK_STOP, IMPORT_FROM, SHOW, compile_cell
from sandbox.frames import BlockingChannel, FrameError
from sandbox.guards import Policy, plain_function

UNPRIVILEGED_ID = 65534  # nobody / nogroup
_PRELOADED_CODECS = ("ascii", "latin_1", "cp1250", "cp1251", "cp1252", "iso8859_15", "utf_16", "utf_16_le",
                     "utf_16_be", "utf_32", "idna", "punycode", "mac_roman", "koi8_r", "unicode_escape")
_THIS_FILE = __file__
_MAX_MESSAGE = 2000

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

    Stops the cell once more than ``flood_chars`` have been printed in total, so a
    print loop cannot run until the timeout just to be thrown away.
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

    def write(self, text: str) -> None:
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
        if self.total > self._flood:
            raise CellStop("output", f"output limit: the cell printed more than {self._flood:,} characters "
                                     "and was stopped; print summaries or slices instead")

    def render(self) -> str:
        head = "".join(self._head)
        tail = "".join(self._tail)
        if self.total <= self._max:
            return head + tail
        tail = tail[-(self._max - self._half):] if self._max > self._half else ""
        cut = self.total - len(head) - len(tail)
        return f"{head}\n... [{cut:,} characters truncated of {self.total:,}] ...\n{tail}"


class Worker:
    def __init__(self, channel: BlockingChannel, config: dict[str, Any]):
        self.channel = channel
        self.max_output_chars = int(config["max_output_chars"])
        self.flood_chars = max(2_000_000, 100 * self.max_output_chars)
        self.policy = Policy(self.print)
        self.namespace: dict[str, Any] = self.policy.globals()
        self.reserved: dict[str, Any] = {}
        self.submit_fields: list[str] | None = None
        self.configure(config)
        self.cell_count = 0
        self.sources: dict[str, list[str]] = {}
        self._reset_cell_state(timeout_limit="timeout")

    def configure(self, config: dict[str, Any]) -> None:
        """(Re)define the names the host provides: tools, and SUBMIT's output fields."""
        for name in self.reserved:
            self.namespace.pop(name, None)
        self.submit_fields = config.get("submit_fields")
        self.reserved = {
            CHECK_STOP: self.check_stop, IMPORT_FROM: self.policy.import_from, SHOW: self.show,
            "FINAL": plain_function(self.final, "FINAL"), "FINAL_VAR": plain_function(self.final_var, "FINAL_VAR"),
            "SUBMIT": plain_function(self.submit, "SUBMIT"),
        }
        for name in config["tools"]:
            self.reserved[name] = self.make_tool(name)

    def _reset_cell_state(self, timeout_limit: str) -> None:
        self.out = OutputBuffer(self.max_output_chars, self.flood_chars)
        self.stop: CellStop | None = None
        self.running = False
        self.in_host_call = False
        self.expired = False
        self.timeout_limit = timeout_limit
        self.has_final = False
        self.final_value: Any = None

    # -- names the sandbox sees ------------------------------------------------------

    def print(self, *args: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None,
              flush: bool = False) -> None:
        text = (" " if sep is None else sep).join(str(a) for a in args) + ("\n" if end is None else end)
        if file is None:
            self.out.write(text)
        else:
            self.policy.getattr(file, "write")(text)

    def show(self, value: Any) -> None:
        if value is not None:
            self.out.write(repr(value) + "\n")

    def check_stop(self) -> None:
        if self.stop is not None:
            raise CellStop(self.stop.reason, self.stop.message)

    def _halt(self, reason: str, message: str) -> CellStop:
        self.stop = CellStop(reason, message)
        return CellStop(reason, message)

    def final(self, value: Any) -> None:
        """FINAL(value): end the cell and hand ``value`` to the host as the answer."""
        self.has_final, self.final_value = True, _json_or_str(value)
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
        self.final({key: _json_or_str(value) for key, value in values.items()})

    def final_var(self, name: Any) -> None:
        """FINAL_VAR(name): FINAL with the value of the variable called ``name``."""
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
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
        try:
            header = {"type": "call", "name": name, "args": list(args), "kwargs": kwargs}
            json.dumps(header)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name}(): arguments must be JSON values (str, int, float, bool, None, "
                            f"lists, dicts with str keys): {exc}") from None
        # The cell's clock pauses while the host works; the host bounds that time itself
        # and sends back how much the cell has left (and which limit that is).
        self.in_host_call = True
        signal.setitimer(signal.ITIMER_REAL, 0)
        try:
            self.channel.write(header)
            reply, _ = self.channel.read()
        finally:
            self.in_host_call = False
        if reply.get("stop"):
            raise self._halt(str(reply["stop"]), str(reply.get("message", "")))
        self.timeout_limit = str(reply.get("timeout_limit", self.timeout_limit))
        if self.expired or float(reply.get("timeout", 0)) <= 0:
            raise self._halt(self.timeout_limit, self._timeout_message())
        signal.setitimer(signal.ITIMER_REAL, float(reply["timeout"]), 0.05)
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
        # Never raise inside the worker's own bookkeeping, only inside sandboxed work.
        if not self.running or (frame is not None and frame.f_code.co_filename == _THIS_FILE):
            return
        if self.in_host_call:
            self.expired = True
            return
        raise self._halt(self.timeout_limit, self._timeout_message())

    def execute(self, code: str, timeout: float, timeout_limit: str) -> dict[str, Any]:
        self._reset_cell_state(timeout_limit)
        self.cell_count += 1
        filename = f"<cell {self.cell_count}>"
        started = time.monotonic()
        error = limit = None
        try:
            compiled = compile_cell(code, filename)
        except SyntaxError as exc:
            return self._result(error=f"SyntaxError: {exc}", started=started)
        self.sources[filename] = code.splitlines()
        self.namespace.update(self.reserved)
        try:
            try:
                self.running = True
                signal.setitimer(signal.ITIMER_REAL, max(timeout, 0.001), 0.05)
                exec(compiled, self.namespace)
            finally:
                self.running = False
                signal.setitimer(signal.ITIMER_REAL, 0)
        except CellStop as stop:
            if stop.reason != "final":
                limit, error = stop.reason, stop.message
        except MemoryError:
            limit, error = "memory", "memory limit: the cell ran out of memory (MemoryError); variables kept"
        except BaseException as exc:  # noqa: BLE001 - anything the cell raised is its error
            error = self._format_error(exc)
        return self._result(error=error, limit=limit, started=started)

    def _result(self, *, error: str | None, started: float, limit: str | None = None) -> dict[str, Any]:
        return {"type": "result", "output": self.out.render(), "error": error, "limit": limit,
                "has_final": self.has_final, "final": self.final_value,
                "seconds": time.monotonic() - started}

    def _format_error(self, exc: BaseException) -> str:
        lines = []
        for frame, lineno in traceback.walk_tb(exc.__traceback__):
            filename = frame.f_code.co_filename
            if filename in self.sources:
                source = self.sources[filename]
                text = source[lineno - 1].strip() if 0 < lineno <= len(source) else ""
                lines.append(f'  {filename}, line {lineno}, in {frame.f_code.co_name}\n    {text}')
        try:
            message = str(exc)
        except Exception:  # noqa: BLE001 - a broken __str__ must not hide the error
            message = "<unprintable message>"
        if len(message) > _MAX_MESSAGE:
            message = message[:_MAX_MESSAGE] + f"... [{len(message) - _MAX_MESSAGE:,} characters cut]"
        head = ["Traceback (most recent call last):", *lines] if lines else []
        return "\n".join([*head, f"{type(exc).__name__}: {message}"])

    # -- variables -------------------------------------------------------------------

    def set_variable(self, header: dict[str, Any], payload: bytearray | None) -> dict[str, Any]:
        name = header["name"]
        if header.get("encoding") == "str":
            value: Any = payload.decode("utf-8") if payload is not None else ""  # the only copy made here
        else:
            value = header.get("value")
        self.namespace[name] = value
        return {"type": "ok"}

    def get_variable(self, name: str) -> tuple[dict[str, Any], bytes | None]:
        if name not in self.namespace or name.startswith("_") or name in self.reserved:
            return {"type": "error", "message": f"no variable named {name!r}"}, None
        value = self.namespace[name]
        if isinstance(value, str):
            return {"type": "value", "encoding": "str"}, value.encode("utf-8")
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            return {"type": "error", "message": f"variable {name!r} holds a {type(value).__name__}, "
                                                "which is not JSON-serializable"}, None
        return {"type": "value", "encoding": "json", "value": value}, None

    def serve(self) -> None:
        while True:
            try:
                header, payload = self.channel.read()
            except FrameError:
                return
            kind = header["type"]
            if kind == "exec":
                self.channel.write(self.execute(header["code"], float(header["timeout"]),
                                                header.get("timeout_limit", "timeout")))
            elif kind == "set":
                reply = self.set_variable(header, payload)
                del payload  # drop the raw bytes before anything else allocates
                self.channel.write(reply)
            elif kind == "get":
                self.channel.write(*self.get_variable(header["name"]))
            elif kind == "configure":
                self.configure(header)
                self.channel.write({"type": "ok"})
            elif kind == "names":
                names = sorted(k for k in self.namespace if not k.startswith("_") and k not in self.reserved)
                self.channel.write({"type": "value", "encoding": "json", "value": names})
            else:
                return


def _json_or_str(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def apply_limits(memory_limit_mb: int, drop_privileges: bool) -> None:
    """Process-level walls behind the policy: memory, no files, no core dumps, no forks."""
    # Load now what allowlisted code imports lazily: after the drop the stdlib may be unreadable.
    import _strptime  # noqa: F401 - datetime.strptime
    for codec in _PRELOADED_CODECS:
        importlib.import_module(f"encodings.{codec}")
    limit = memory_limit_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if drop_privileges and os.geteuid() == 0:
        os.setgroups([])
        os.setgid(UNPRIVILEGED_ID)
        os.setuid(UNPRIVILEGED_ID)
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))


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
    apply_limits(int(header["memory_limit_mb"]), bool(header["drop_privileges"]))
    channel.write({"type": "ready", "pid": os.getpid()})
    worker.serve()


if __name__ == "__main__":
    main()
