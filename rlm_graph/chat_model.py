"""A LangChain chat model behind the runtime's :class:`~sandbox.lm.clients.LMClient` protocol."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from sandbox.lm.clients import Completion, LMClient, Messages, as_lm_client

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel


class ChatModelClient:
    """Calls ``model.ainvoke``; ``max_tokens`` is bound per call (providers that ignore it, ignore it).

    Runs inside the caller's context, so LangChain callbacks and LangGraph's
    ``stream_mode="messages"`` see the tokens.
    """

    def __init__(self, model: BaseChatModel):
        self.chat_model = model
        self.model = getattr(model, "model_name", None) or getattr(model, "model", None) or type(model).__name__

    async def acomplete(self, messages: Messages, *, max_tokens: int) -> Completion:
        try:
            bound = self.chat_model.bind(max_tokens=max_tokens)
        except (TypeError, ValueError, NotImplementedError):
            bound = self.chat_model
        from langchain_core.messages import convert_to_messages

        reply = await bound.ainvoke(convert_to_messages(messages))
        usage = getattr(reply, "usage_metadata", None) or {}
        text = reply.content if isinstance(reply.content, str) else _text_of(reply.content)
        return Completion(text=text, prompt_tokens=int(usage.get("input_tokens", 0) or 0),
                          completion_tokens=int(usage.get("output_tokens", 0) or 0), model=str(self.model))


def _text_of(content: list[Any]) -> str:
    return "".join(part if isinstance(part, str) else str(part.get("text", "")) for part in content)


def is_chat_model(value: Any) -> bool:
    """Whether ``value`` is a LangChain chat model; asks only when LangChain's model classes were
    imported (a chat model exists only then), so a run on a model string never imports them."""
    models = sys.modules.get("langchain_core.language_models")
    return models is not None and isinstance(value, models.BaseChatModel)


def as_client(model: Any, *, api_base: str | None = None, api_key: str | None = None) -> LMClient:
    """A chat model, a litellm model string (with optional ``api_base``), a ``litellm.Router``, or an LMClient."""
    if is_chat_model(model):
        return ChatModelClient(model)
    if isinstance(model, str):
        return as_lm_client(model, api_base=api_base, api_key=api_key)
    try:
        return as_lm_client(model)
    except TypeError:
        raise TypeError(f"model must be a LangChain BaseChatModel or a litellm model string (or a litellm.Router), "
                        f"got {type(model).__name__}") from None
