"""Where the RLM graph keeps the context, so that checkpoints hold only a reference to it.

LangGraph saves a run's raw input in its first checkpoint; a 10 MB context would
be copied into every thread. The graph puts the context here and passes
``context_ref`` (a content hash) through the graph instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

from sandbox.context import Context, check_context


def context_ref(context: Context) -> str:
    data = context if isinstance(context, str) else json.dumps(context)
    kind = "str" if isinstance(context, str) else "list"
    return f"{kind}:sha256:{hashlib.sha256(data.encode('utf-8')).hexdigest()}"


class ContextStore(Protocol):
    def put(self, context: Context) -> str:
        """Store ``context``; return its reference."""
        ...

    def get(self, ref: str) -> Context:
        """The context stored under ``ref``; ``KeyError`` if it is not here."""
        ...


class MemoryContextStore:
    """Keeps the ``max_entries`` most recently used contexts in this process."""

    def __init__(self, max_entries: int = 16):
        self._items: OrderedDict[str, Context] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def put(self, context: Context) -> str:
        ref = context_ref(check_context(context))
        with self._lock:
            self._items[ref] = context
            self._items.move_to_end(ref)
            while len(self._items) > self._max:
                self._items.popitem(last=False)
        return ref

    def get(self, ref: str) -> Context:
        with self._lock:
            self._items.move_to_end(ref)
            return self._items[ref]


class FileContextStore:
    """Content-addressed files in ``directory``; survives the process, for resuming from checkpoints."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)

    def _path(self, ref: str) -> Path:
        kind, _, digest = ref.split(":")
        if kind not in ("str", "list") or len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise KeyError(f"not a context reference: {ref!r}")
        return self.directory / f"{digest}.{'txt' if kind == 'str' else 'json'}"

    def put(self, context: Context) -> str:
        ref = context_ref(check_context(context))
        path = self._path(ref)
        if not path.exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(context if isinstance(context, str) else json.dumps(context), encoding="utf-8")
            tmp.replace(path)
        return ref

    def get(self, ref: str) -> Context:
        path = self._path(ref)
        if not path.exists():
            raise KeyError(ref)
        text = path.read_text(encoding="utf-8")
        return text if ref.startswith("str:") else json.loads(text)
