"""The RLM graph's contexts in LangGraph's store, so that checkpoints hold only a reference.

LangGraph saves a run's raw input in its first checkpoint, and a plain ``str`` channel
in every checkpoint that writes it; a 10 MB context would be copied into every
thread. The graph instead puts the context into its ``BaseStore`` once, under its
content hash (``str:sha256:<hex>``, or ``list:...`` for a list of str), and passes
that reference through the state. Any worker with the same store (``PostgresStore``,
``SqliteStore``; the default ``InMemoryStore`` lives only in its process) can load it.

Layout: namespace ``("rlm", "contexts", <hex>)``; keys ``"0"``, ``"1"``, ... hold
``{"text": chunk}`` (at most ``CHUNK_CHARS`` characters each), then ``"meta"`` holds
``{"kind", "chunks", "chars"}``. ``meta`` is written last, so a context whose
``meta`` is there is complete.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict

from langgraph.store.base import BaseStore, GetOp, PutOp

from sandbox.boundary.frames import utf8_slices
from sandbox.engine.context import Context, check_context

NAMESPACE = ("rlm", "contexts")
CHUNK_CHARS = 1 << 20  # one store item: about 1 MB of text (a PostgresStore row, a JSONB value)


def _encode(context: Context) -> tuple[str, str]:
    """(kind, text) of a checked context: a list of str is stored as its JSON."""
    return ("str", context) if isinstance(context, str) else ("list", json.dumps(context))


def context_ref(context: Context) -> str:
    """The content-addressed reference of ``context``: ``"<kind>:sha256:<hex>"``.

    The text is hashed a small slice at a time (:func:`sandbox.boundary.frames.utf8_slices`): its
    UTF-8 bytes are never all held at once (a 100 MB context would otherwise be copied once more
    just to be hashed), and slices that small are hashed 2.5x faster than 1 MB ones.
    """
    kind, text = _encode(context)
    digest = hashlib.sha256()
    for part in utf8_slices(text):
        digest.update(part)
    return f"{kind}:sha256:{digest.hexdigest()}"


def _namespace(ref: str) -> tuple[str, ...]:
    kind, algorithm, digest = (ref.split(":") + ["", ""])[:3]
    if kind not in ("str", "list") or algorithm != "sha256" or len(digest) != 64 \
            or any(c not in "0123456789abcdef" for c in digest):
        raise KeyError(f"not a context reference: {ref!r:.100}")
    return (*NAMESPACE, digest)


def put_context(store: BaseStore, context: Context, *, chunk_chars: int | None = CHUNK_CHARS) -> str:
    """Store ``context`` (once: a context already there is not written again).

    Args:
        store: the graph's store.
        context: a str or a list of str.
        chunk_chars: the most characters one store item holds; ``None``: one item holds the whole
            text (a store in this process's memory then keeps the caller's str itself, not a copy).

    Returns:
        Its reference, for ``context_ref`` in the graph's state.

    Raises:
        TypeError: ``context`` is not a str or a list of str.
    """
    context = check_context(context)
    ref = context_ref(context)
    namespace = _namespace(ref)
    if store.get(namespace, "meta") is not None:
        return ref
    kind, text = _encode(context)
    step = chunk_chars or len(text) or 1
    chunks = [text] if step >= len(text) else [text[i:i + step] for i in range(0, len(text), step)]
    store.batch([PutOp(namespace, str(i), {"text": chunk}, index=False) for i, chunk in enumerate(chunks)])
    store.put(namespace, "meta", {"kind": kind, "chunks": len(chunks), "chars": len(text)}, index=False)
    return ref


def get_context(store: BaseStore, ref: str) -> Context:
    """The context stored under ``ref``.

    Raises:
        KeyError: it is not in ``store`` (or ``ref`` is not a context reference).
        ValueError: what the store holds does not hash to ``ref`` (a damaged or partial copy).
    """
    namespace = _namespace(ref)
    meta = store.get(namespace, "meta")
    if meta is None:
        raise KeyError(ref)
    items = store.batch([GetOp(namespace, str(i)) for i in range(int(meta.value["chunks"]))])
    if any(item is None for item in items):
        raise ValueError(f"the store holds only part of context {ref}: chunks are missing")
    text = "".join(item.value["text"] for item in items)
    context: Context = text if meta.value["kind"] == "str" else json.loads(text)
    if context_ref(context) != ref:
        raise ValueError(f"the store's copy of context {ref} does not match its hash; put it again")
    return context


def delete_context(store: BaseStore, ref: str) -> None:
    """Remove the context stored under ``ref`` (``meta`` first: a partial one reads as absent)."""
    namespace = _namespace(ref)
    meta = store.get(namespace, "meta")
    if meta is None:
        return
    store.delete(namespace, "meta")
    store.batch([PutOp(namespace, str(i), None) for i in range(int(meta.value["chunks"]))])


class KeptContexts:
    """The contexts kept in a store only this process uses (a graph's default ``InMemoryStore``):
    the ``limit`` most recently used; older ones are deleted. Each is one item holding the
    caller's str itself (no row size to respect, so no chunk copies).

    Without it, a long-lived graph serving many documents would keep every one of them in
    memory. A run paused (or checkpointed) while ``limit`` newer contexts came cannot resume
    from this store: give such a graph a store of its own (``store=``).
    """

    def __init__(self, store: BaseStore, limit: int = 16):
        self.store = store
        self.limit = limit
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, context: Context) -> str:
        """:func:`put_context`, then delete the least recently used contexts past ``limit``."""
        ref = put_context(self.store, context, chunk_chars=None)
        with self._lock:
            self._recent[ref] = None
            self._recent.move_to_end(ref)
            stale = [self._recent.popitem(last=False)[0] for _ in range(len(self._recent) - self.limit)]
        for old in stale:
            delete_context(self.store, old)
        return ref


class HandedContexts:
    """The contexts that runs starting in this process were given, by reference, while they run.

    A fresh run's first node takes its context from here instead of reading it back from the
    store: no joined copy of the chunks and no second hash. A resumed run, or one in another
    process, reads the store (:func:`get_context`), which checks the hash.
    """

    def __init__(self) -> None:
        self._held: dict[str, tuple[Context, int]] = {}
        self._lock = threading.Lock()

    def hand(self, ref: str, context: Context) -> None:
        """Hold ``context`` under ``ref`` until a matching :meth:`release`."""
        with self._lock:
            held = self._held.get(ref)
            self._held[ref] = (context, 1 if held is None else held[1] + 1)

    def release(self, ref: str) -> None:
        """Drop one hold on ``ref`` (the context goes when its last run ends)."""
        with self._lock:
            held = self._held.pop(ref, None)
            if held is not None and held[1] > 1:
                self._held[ref] = (held[0], held[1] - 1)

    def get(self, store: BaseStore, ref: str) -> Context:
        """The context under ``ref``: the one handed over, else :func:`get_context` from ``store``."""
        with self._lock:
            held = self._held.get(ref)
        return held[0] if held is not None else get_context(store, ref)
