"""What a LangGraph checkpointer stores for a thread, measured through its public API (not its tables)."""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver


def stored_sizes(saver: BaseCheckpointSaver, config: dict[str, Any]) -> list[int]:
    """The serialized size in bytes of each checkpoint of ``config``'s thread, with its pending writes,
    as the saver's own serializer encodes them."""
    sizes = []
    for saved in saver.list(config):
        size = len(saver.serde.dumps_typed(saved.checkpoint)[1])
        size += sum(len(saver.serde.dumps_typed(value)[1]) for _, _, value in saved.pending_writes or [])
        sizes.append(size)
    return sizes
