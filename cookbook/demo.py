"""Shared pieces of the recipes: a long demo document, and the command-line options naming their models.

Every recipe runs on the embedded local model by default (the model string ``"local"``; it needs
the ``local`` extra). ``--model`` names another: any litellm model string, with ``--api-base``
for an OpenAI-compatible server (e.g. a bigger local model behind llama.cpp).
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from typing import Any

NEEDLE = "The launch code for project Heron is 7291."
LOCAL = "local"  # the model string naming the embedded model, for rlm_graph and rlm_dspy alike


def long_document(paragraphs: int = 4000, seed: int = 7) -> str:
    """A few hundred thousand characters of filler with one needle sentence in the middle."""
    rng = random.Random(seed)
    words = "report quarterly revenue team meeting schedule budget review vendor contract shipment".split()
    body = [" ".join(rng.choice(words) for _ in range(14)).capitalize() + "." for _ in range(paragraphs)]
    body.insert(paragraphs // 2, NEEDLE)
    return "\n".join(body)


def model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=LOCAL,
                        help="litellm model string, e.g. openai/gpt-4o-mini (default: local, the embedded model)")
    parser.add_argument("--sub-model", help="litellm model string for sub-calls (default: --model)")
    parser.add_argument("--api-base", help="base URL of an OpenAI-compatible server serving --model and "
                                           "--sub-model, e.g. http://127.0.0.1:8080/v1")


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, refusing ``--api-base`` with the embedded model (it has its own server)."""
    args = parser.parse_args(argv)
    if args.api_base and LOCAL in (args.model, args.sub_model):
        parser.error("--api-base is for a model on another server: name it with --model "
                     "(and --sub-model), e.g. --model openai/NAME; the embedded model needs none")
    return args


def graph_models(args: argparse.Namespace, model: Any = None, sub_model: Any = None) -> tuple[Any, Any]:
    """(model, sub_model) for a LangGraph recipe: the ones given (chat models, clients...), else the
    strings ``--model`` and ``--sub-model`` name; a ``None`` sub-model means the root's."""
    return (model if model is not None else args.model), (sub_model if sub_model is not None else args.sub_model)
