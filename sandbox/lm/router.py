"""A ``litellm.Router`` as an LM client: calls spread over several endpoints, with the
router's own retries, cooldowns and fallbacks.

``as_lm_client(router)`` (and so every ``model=``/``sub_model=`` of the adapters that
takes a litellm model string) accepts a Router with one model group; for a Router
with several, say which group to call: ``RouterClient(router, "gpt-4o-mini")``.
Nothing here retries: the Router does (``num_retries``, ``fallbacks``).
"""

from __future__ import annotations

import sys
from typing import Any

from sandbox.lm.clients import Completion, Messages, completion_from_response, litellm_input_tokens, price_usd


class RouterClient:
    """An :class:`~sandbox.lm.clients.LMClient` over ``router.acompletion(model=<group>, ...)``.

    Args:
        router: a ``litellm.Router``.
        model: the model group to call; may be left out when the router has only one.
        **completion_kwargs: passed to every call (``temperature=...``).

    Raises:
        TypeError: ``router`` is not a ``litellm.Router``.
        ValueError: ``model`` is not one of the router's groups, or is needed and missing.
    """

    def __init__(self, router: Any, model: str | None = None, **completion_kwargs: Any):
        if not is_router(router):
            raise TypeError(f"RouterClient needs a litellm.Router, got {type(router).__name__}")
        groups = sorted(set(router.registry().names()))
        if model is None:
            if len(groups) != 1:
                raise ValueError(f"this Router has the model groups {groups}; say which one to call: "
                                 "RouterClient(router, '<group>')")
            model = groups[0]
        if model not in groups:
            raise ValueError(f"the Router has no model group {model!r}; its groups are {groups}")
        self.router = router
        self.model = model
        self.completion_kwargs = completion_kwargs

    def __repr__(self) -> str:
        return f"RouterClient(model={self.model!r})"

    def deployment_models(self) -> list[str]:
        """The litellm model strings of all the router's deployments (a fallback may take any group)."""
        return [str(d["litellm_params"]["model"]) for d in self.router.registry().deployments() or []]

    async def acomplete(self, messages: Messages, *, max_tokens: int) -> Completion:
        response = await self.router.acompletion(model=self.model, messages=messages, max_tokens=max_tokens,
                                                 **self.completion_kwargs)
        return completion_from_response(response, self.model)

    def estimate_cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """An upper bound: the priciest deployment of the router (a fallback may answer)."""
        return max((price_usd(m, prompt_tokens, completion_tokens) for m in self.deployment_models()), default=0.0)

    def input_window(self) -> int | None:
        """The smallest input window among the router's deployments; ``None`` if one is unknown."""
        windows = [litellm_input_tokens(m) for m in self.deployment_models()]
        return None if not windows or None in windows else min(windows)  # type: ignore[type-var]


def is_router(value: Any) -> bool:
    """Whether ``value`` is a ``litellm.Router``."""
    # A Router exists only once litellm has defined the class; litellm may be half imported (rlm ask
    # imports it on a background thread), so look the class up rather than the module's attribute.
    router_type = getattr(sys.modules.get("litellm"), "Router", None)
    return router_type is not None and isinstance(value, router_type)


def router_client(model: Any) -> RouterClient | None:
    """``RouterClient(model)`` when ``model`` is a ``litellm.Router``, else ``None``."""
    return RouterClient(model) if is_router(model) else None
