"""A private asyncio event loop on a daemon thread, for sync code that drives async LM calls.

Sandbox host functions run in worker threads and must wait for async LM calls
with a deadline; submitting to one long-lived loop (rather than ``asyncio.run``
per call) keeps litellm's per-loop HTTP clients valid and lets a deadline cancel
the pending requests themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import weakref
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

T = TypeVar("T")


class AsyncRunner:
    """Runs coroutines on its own loop thread; :meth:`run` waits with an optional timeout."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # A runner dropped without close() (a run abandoned at an interrupt) still stops its thread.
        self._finalizer = weakref.finalize(self, _stop_loop, self.__dict__)

    def __deepcopy__(self, memo: dict[int, Any]) -> AsyncRunner:
        return AsyncRunner()  # a loop thread cannot be copied; a copy starts its own when used

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                # Made in an empty context: the loop's own handles (its self-pipe reader) keep the
                # context they were made in for the loop's life, and a caller's (a LangGraph node's
                # config, which holds its graph) would keep that graph alive as long as the loop.
                loop = contextvars.Context().run(asyncio.new_event_loop)
                thread = threading.Thread(target=loop.run_forever, name="rlm-async-runner", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T], *, timeout: float | None = None,
            context: contextvars.Context | None = None) -> T:
        """Run ``coro`` to completion; on ``timeout`` cancel it and raise ``TimeoutError``.

        The coroutine runs in ``context`` (default: a copy of the caller's), so callbacks
        and stream writers that live in context variables keep working.
        """
        loop = self._ensure_loop()
        context = context if context is not None else contextvars.copy_context()
        future: Future[T] = Future()

        def start() -> None:
            task = loop.create_task(coro, context=context)
            task.add_done_callback(lambda t: _settle(future, t))
            future.add_done_callback(lambda f: loop.call_soon_threadsafe(task.cancel) if f.cancelled() else None)

        loop.call_soon_threadsafe(start)
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            future.cancel()
            raise TimeoutError(f"did not finish within {timeout:.3g} s") from None

    def close(self) -> None:
        with self._lock:
            _stop_loop(self.__dict__)


class CallTimedOut(TimeoutError):
    """:func:`call_with_timeout` stopped waiting (told apart from a ``TimeoutError`` the call raised)."""


def call_with_timeout(fn: Callable[..., T], *args: Any, timeout: float | None) -> T:
    """``fn(*args)``, waited for at most ``timeout`` seconds (``None``: no limit).

    With a timeout the call runs on its own thread, in a copy of the caller's context
    variables (DSPy settings, callbacks); past the timeout it is abandoned, not stopped: it
    finishes in the background and its result is dropped. The thread is a daemon, so an
    abandoned call never keeps the process alive at exit (a pool's worker would be joined).

    Raises:
        CallTimedOut: ``fn`` did not return within ``timeout`` seconds.
    """
    if timeout is None:
        return fn(*args)
    future: Future[T] = Future()
    _on_daemon_thread("rlm-timed-call", fn, args, lambda ok, value: _resolve(future, ok, value))
    try:
        return future.result(timeout=max(0.0, timeout))
    except FutureTimeout:
        if future.done():  # it finished in time and raised a TimeoutError of its own
            raise
        raise CallTimedOut(f"did not finish within {timeout:.3g} s") from None


async def in_own_thread(fn: Callable[..., T], *args: Any) -> T:
    """Await ``fn(*args)``, a blocking call, run on a thread of its own.

    The call runs in a copy of the caller's context variables (DSPy settings, usage trackers,
    callbacks), as :func:`asyncio.to_thread` would, but on a fresh daemon thread rather than the
    loop's default executor, whose few workers (``cpu_count + 4``) would queue a wide fan-out.
    If the awaiting task is cancelled (a deadline), the call is abandoned, not stopped: it
    finishes in the background, its result is dropped, and it never keeps the process alive at
    exit.

    Raises:
        Whatever ``fn`` raises.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():  # the awaiter may have been cancelled meanwhile
            _resolve(future, ok, value)

    def deliver(ok: bool, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            loop.call_soon_threadsafe(settle, ok, value)

    _on_daemon_thread("rlm-blocking-call", fn, args, deliver)
    return await future


def _on_daemon_thread(name: str, fn: Callable[..., Any], args: tuple[Any, ...],
                      deliver: Callable[[bool, Any], None]) -> None:
    """Start ``fn(*args)`` on a daemon thread named ``name``, in a copy of the caller's context
    variables; when it ends, call ``deliver(True, result)`` or ``deliver(False, exception)`` on
    that thread. A daemon: an abandoned call never keeps the process alive at exit (a pool's
    worker would be joined)."""
    context = contextvars.copy_context()

    def call() -> None:
        try:
            ok, value = True, context.run(fn, *args)
        except BaseException as exc:  # noqa: BLE001 - the waiter gets it
            ok, value = False, exc
        deliver(ok, value)

    threading.Thread(target=call, name=name, daemon=True).start()


def _resolve(future: Future[Any] | asyncio.Future[Any], ok: bool, value: Any) -> None:
    """Give ``future`` its result (``ok``) or its exception."""
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


async def _cancel_pending() -> None:
    """Cancel and await every other task (e.g. litellm's background logging worker), so that
    closing the loop leaves nothing pending to complain later."""
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _stop_loop(attrs: dict[str, Any]) -> None:
    loop, thread = attrs.get("_loop"), attrs.get("_thread")
    attrs["_loop"] = attrs["_thread"] = None
    if loop is not None and not loop.is_closed():
        if loop.is_running() and thread is not threading.current_thread():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_cancel_pending(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        if not loop.is_running():
            loop.close()


def _settle(future: Future[Any], task: asyncio.Task[Any]) -> None:
    if future.done():
        return
    if task.cancelled():
        future.cancel()
    elif task.exception() is not None:
        future.set_exception(task.exception())
    else:
        future.set_result(task.result())
