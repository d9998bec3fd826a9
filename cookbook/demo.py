"""Shared pieces of the recipes: a long demo document and scripted models for offline runs.

Scripted models are for demonstrations and tests only; pass ``--model`` to a
recipe to use a real one (any litellm model string, with ``--api-base`` for a
local OpenAI-compatible server).
"""

from __future__ import annotations

import argparse
import random
import re
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

NEEDLE = "The launch code for project Heron is 7291."


def long_document(paragraphs: int = 4000, seed: int = 7) -> str:
    """A few hundred thousand characters of filler with one needle sentence in the middle."""
    rng = random.Random(seed)
    words = "report quarterly revenue team meeting schedule budget review vendor contract shipment".split()
    body = [" ".join(rng.choice(words) for _ in range(14)).capitalize() + "." for _ in range(paragraphs)]
    body.insert(paragraphs // 2, NEEDLE)
    return "\n".join(body)


def sentence_with_a_number(text: str) -> str:
    """What the demo sub-model answers: the first sentence of ``text`` with a digit, else 'none'."""
    hit = re.search(r"[^.\n]*\d[^.\n]*\.", text)
    return hit.group(0).strip() if hit else "none"


class ExtractingChatModel(BaseChatModel):
    """A stand-in LangChain sub-model answering with :func:`sentence_with_a_number`."""

    @property
    def _llm_type(self) -> str:
        return "demo-extractor"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        reply = sentence_with_a_number(str(messages[-1].content))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=reply))])


def scripted_root(*cells: str) -> FakeListChatModel:
    """A root model that replies with each code cell in turn."""
    return FakeListChatModel(responses=[f"Next step.\n```repl\n{code}\n```" for code in cells])


# The code a capable root model writes for the needle question: chunk, ask, keep hits.
NEEDLE_CELLS = (
    "print(len(context))\nchunks = [context[i:i + 20000] for i in range(0, len(context), 20000)]\nprint(len(chunks))",
    "answers = llm_query_batched(['Quote the sentence with a launch code, or say none:\\n' + c for c in chunks])\n"
    "hits = [a for a in answers if a != 'none']\nprint(hits)",
    "FINAL(hits[0] if hits else 'not found')",
)


def model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="litellm model string for a real run (default: scripted demo models)")
    parser.add_argument("--sub-model", help="litellm model string for sub-calls (default: --model)")
    parser.add_argument("--api-base", help="base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1")


def models(args: argparse.Namespace, *demo_cells: str) -> tuple[Any, Any]:
    """(root, sub) for a recipe: the real ones named on the command line, or the demo pair."""
    if args.model:
        return args.model, args.sub_model or args.model
    return scripted_root(*demo_cells), ExtractingChatModel()
