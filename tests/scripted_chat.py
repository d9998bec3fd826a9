"""Scripted LangChain chat models for unit tests: a root model replying with given REPL cells, and a
sub-model answering each prompt with a Python function.

Scripted models are for unit tests only; recipes and end-to-end tests use a real model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult


class FunctionChatModel(BaseChatModel):
    """A chat model answering the last message's text with ``reply(text)``."""

    reply: Callable[[str], str]

    @property
    def _llm_type(self) -> str:
        return "scripted-function"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        text = self.reply(str(messages[-1].content))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def scripted_root(*cells: str) -> FakeListChatModel:
    """A root model that replies with each code cell in turn, in a ```repl block."""
    return FakeListChatModel(responses=[f"Next step.\n```repl\n{code}\n```" for code in cells])
