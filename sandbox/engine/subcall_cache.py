"""Sub-call answers kept in a LangGraph ``BaseStore``, shared across runs and processes.

Opt in by wrapping the sub-model: ``CachedLM(sub_lm, SubCallCache(store))`` (the graph
does it with ``create_rlm_graph(..., cache_sub_calls=True)``). An ``llm_query`` whose
prompt, model and settings (``max_tokens``, the client's ``completion_kwargs``) match an
earlier one is answered from the store: no LM call, nothing charged to the budget, and
the trajectory's ``sub_call`` event says ``cached: true``. With a ``PostgresStore`` every
worker shares the answers. Two workers asking the same new prompt at once both call the
model (the later answer is kept).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sandbox.lm.clients import Completion, LMClient, Messages, estimate_cost, input_window_tokens

NAMESPACE = ("rlm", "llm_cache")


class SubCallCache:
    """Answers in ``store`` under ``namespace``, keyed by a hash of the request.

    Args:
        store: a LangGraph ``BaseStore`` (``InMemoryStore``, ``PostgresStore``, ...).
        namespace: where in the store the answers live.
        ttl_minutes: how long an answer is kept, on stores that support TTLs (``None``: the store's default).
    """

    def __init__(self, store: Any, *, namespace: tuple[str, ...] = NAMESPACE, ttl_minutes: float | None = None):
        for method in ("get", "put"):
            if not callable(getattr(store, method, None)):
                raise TypeError(f"SubCallCache needs a LangGraph BaseStore, got {type(store).__name__}")
        self.store = store
        self.namespace = namespace
        self.ttl_minutes = ttl_minutes

    def __deepcopy__(self, memo: dict[int, Any]) -> SubCallCache:
        return self  # a shared service, like its store's connection: DSPy deep-copies modules that hold one

    @staticmethod
    def key(lm: LMClient, messages: Messages, max_tokens: int) -> str:
        """The hash naming one request: model, settings and messages."""
        request = {"model": lm.model, "max_tokens": max_tokens, "messages": messages,
                   "settings": getattr(lm, "completion_kwargs", None) or {}}
        return hashlib.sha256(json.dumps(request, sort_keys=True, default=repr).encode("utf-8")).hexdigest()

    def lookup(self, lm: LMClient, messages: Messages, max_tokens: int) -> Completion | None:
        """The cached answer to this request (costing nothing), or ``None``."""
        item = self.store.get(self.namespace, self.key(lm, messages, max_tokens))
        if item is None:
            return None
        return Completion(text=item.value["text"], model=item.value.get("model", lm.model), cost_usd=0.0)

    def remember(self, lm: LMClient, messages: Messages, max_tokens: int, completion: Completion) -> None:
        """Keep ``completion`` as the answer to this request."""
        ttl = {} if self.ttl_minutes is None or not getattr(self.store, "supports_ttl", False) \
            else {"ttl": self.ttl_minutes}
        self.store.put(self.namespace, self.key(lm, messages, max_tokens),
                       {"text": completion.text, "model": completion.model}, index=False, **ttl)


class CachedLM:
    """``lm`` with a :class:`SubCallCache`: the host functions look up its sub-calls first.

    Only sub-calls (``llm_query`` and its batched and mapped forms) read the cache; as a
    root model it is just ``lm``.
    """

    def __init__(self, lm: LMClient, cache: SubCallCache):
        self.lm = lm
        self.cache = cache
        self.model = lm.model
        self.completion_kwargs = getattr(lm, "completion_kwargs", None) or {}

    def __repr__(self) -> str:
        return f"CachedLM({self.lm!r})"

    async def acomplete(self, messages: Messages, *, max_tokens: int) -> Completion:
        return await self.lm.acomplete(messages, max_tokens=max_tokens)

    def estimate_cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return estimate_cost(self.lm, prompt_tokens, completion_tokens)

    def input_window(self) -> int | None:
        return input_window_tokens(self.lm)
