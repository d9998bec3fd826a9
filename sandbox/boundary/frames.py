"""Length-prefixed JSON frames: the only format that crosses the host/worker boundary.

A frame is a 4-byte big-endian header length, a UTF-8 JSON object (the header),
then ``header["payload"]`` raw bytes when the header names a payload. Large strings
travel as payloads so neither side builds a JSON copy of them.

Nothing is ever unpickled: a pickle from a compromised worker runs code in the host
(smolagents CVE-2025-14931). Sizes are capped before anything is allocated, and a
malformed frame is a protocol error that the host answers by killing the worker.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import select
import struct
import time
from collections.abc import Iterable, Iterator
from typing import Any

_LEN = struct.Struct(">I")
MAX_FROM_WORKER = 1 << 28  # 256 MiB: the most a worker may send the host in one frame
# A str payload is encoded this many characters at a time. Small enough that a slice and its
# encoding come from malloc's heap and are reused hot in cache: slices of 256 KiB or more get
# fresh pages from the kernel each time, and encode 10x slower (160 ms per 100 MB, not 15).
TEXT_SLICE_CHARS = 1 << 16


class FrameError(Exception):
    """A frame was malformed, too large, or the peer closed the pipe."""


def encode_header(header: dict[str, Any]) -> bytes:
    # "replace": a lone surrogate (json.loads('"\\ud800"')) becomes "?" instead of an error.
    body = json.dumps(header, ensure_ascii=False, allow_nan=True).encode("utf-8", "replace")
    return _LEN.pack(len(body)) + body


def parse_header(body: bytes | bytearray) -> dict[str, Any]:
    try:
        header = json.loads(body)
    except (ValueError, RecursionError) as exc:
        # RecursionError: a header nested deeper than this side's stack (a hostile worker).
        raise FrameError(f"frame header is not valid JSON: {type(exc).__name__}: {str(exc)[:200]}") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise FrameError("frame header must be a JSON object with a string 'type'")
    payload = header.get("payload", 0)
    if not isinstance(payload, int) or isinstance(payload, bool) or payload < 0:
        raise FrameError("frame 'payload' must be a non-negative integer")
    return header


class BlockingChannel:
    """Frame I/O on two blocking file descriptors (the worker's side)."""

    def __init__(self, fd_in: int, fd_out: int, *, max_header: int, max_payload: int):
        # Buffered: a payload is read straight into its bytes object, which is not zero-filled
        # first as a bytearray(n) is (one pass less over a 100 MB context's fresh pages).
        self._in = io.BufferedReader(io.FileIO(fd_in, "rb", closefd=False), 1 << 16)
        self._out = fd_out
        self._max_header = max_header
        self._max_payload = max_payload

    def _read_exact(self, n: int) -> bytes:
        data = self._in.read(n)
        if len(data) < n:
            raise FrameError("peer closed the channel")
        return data

    def read(self) -> tuple[dict[str, Any], bytes | None]:
        (size,) = _LEN.unpack(self._read_exact(4))
        if size > self._max_header:
            raise FrameError(f"frame header of {size} bytes exceeds {self._max_header}")
        header = parse_header(self._read_exact(size))
        n = header.get("payload", 0)
        if n > self._max_payload:
            raise FrameError(f"frame payload of {n} bytes exceeds {self._max_payload}")
        return header, (self._read_exact(n) if n else None)

    def write(self, header: dict[str, Any], payload: bytes | None = None) -> None:
        if payload is not None:
            header = {**header, "payload": len(payload)}
        self.write_encoded(encode_header(header))
        if payload:
            _write_all(self._out, payload)

    def write_encoded(self, frame: bytes) -> None:
        """Send a frame already made by :func:`encode_header` (no payload)."""
        _write_all(self._out, frame)


def utf8_slices(text: str, errors: str = "strict") -> Iterator[bytes]:
    """The UTF-8 bytes of ``text``, ``TEXT_SLICE_CHARS`` characters at a time: together the whole
    text's encoding (slices by code point encode to the whole's bytes), never all of it at once.

    Args:
        text: the str to encode.
        errors: the codec's error handler for lone surrogates (``"strict"`` raises).

    Returns:
        The slices' encodings, in order.

    Raises:
        UnicodeEncodeError: ``text`` holds a lone surrogate and ``errors`` is ``"strict"``.
    """
    return (text[i:i + TEXT_SLICE_CHARS].encode("utf-8", errors) for i in range(0, len(text), TEXT_SLICE_CHARS))


def text_parts(text: str) -> tuple[int, Iterator[bytes]]:
    """The UTF-8 size of ``text`` and its bytes (:func:`utf8_slices`), so a 100 MB str is sent
    without a whole encoded copy. ("replace": a lone surrogate becomes "?", as the worker decodes
    strict UTF-8.)"""
    size = len(text) if text.isascii() else sum(map(len, utf8_slices(text, "replace")))
    return size, utf8_slices(text, "replace")


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class DeadlineChannel:
    """Frame I/O with absolute deadlines on non-blocking descriptors (the host's side).

    ``read`` returns ``None`` when the deadline passes first, so a hung worker can
    never hang the host, and ``write`` gives up the same way.
    """

    def __init__(self, fd_in: int, fd_out: int, *, max_header: int, max_payload: int):
        self._in, self._out = fd_in, fd_out
        os.set_blocking(fd_in, False)
        os.set_blocking(fd_out, False)
        self._buf = bytearray()
        self._max_header = max_header
        self._max_payload = max_payload

    def _fill(self, need: int, deadline: float | None) -> bool:
        while len(self._buf) < need:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._in], [], [], wait)
            if not ready:
                return False
            chunk = os.read(self._in, max(1 << 16, min(need - len(self._buf), 1 << 24)))
            if not chunk:
                raise FrameError("worker closed the channel")
            self._buf += chunk
        return True

    def read(self, deadline: float | None) -> tuple[dict[str, Any], bytes | None] | None:
        try:
            return self._read(deadline)
        except FrameError:
            self._buf.clear()  # never parse the same bad bytes again
            raise

    def _read(self, deadline: float | None) -> tuple[dict[str, Any], bytes | None] | None:
        if not self._fill(4, deadline):
            return None
        (size,) = _LEN.unpack_from(self._buf)
        if size > self._max_header:
            raise FrameError(f"frame header of {size} bytes exceeds {self._max_header}")
        if not self._fill(4 + size, deadline):
            return None
        header = parse_header(self._buf[4 : 4 + size])
        n = header.get("payload", 0)
        if n > self._max_payload:
            raise FrameError(f"frame payload of {n} bytes exceeds {self._max_payload}")
        if not self._fill(4 + size + n, deadline):
            return None
        payload = bytes(self._buf[4 + size : 4 + size + n]) if n else None
        del self._buf[: 4 + size + n]
        return header, payload

    def write(self, header: dict[str, Any], payload: bytes | str | None, deadline: float | None) -> bool:
        """Send a frame; a str ``payload`` goes as its UTF-8 bytes (see :func:`text_parts`).

        Returns:
            Whether it was all written before ``deadline``.
        """
        parts: Iterable[bytes] = ()
        if isinstance(payload, str):
            size, parts = text_parts(payload)
            header = {**header, "payload": size}
        elif payload is not None:
            header, parts = {**header, "payload": len(payload)}, (payload,)
        for part in itertools.chain((encode_header(header),), parts):
            view = memoryview(part)
            while view:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                _, ready, _ = select.select([], [self._out], [], wait)
                if not ready:
                    return False
                try:
                    view = view[os.write(self._out, view[: 1 << 20]):]
                except BlockingIOError:
                    continue
        return True
