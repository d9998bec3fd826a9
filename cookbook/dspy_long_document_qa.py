"""Long-document QA with rlm_dspy.RLM: the document stays in the REPL, the model reads it with code.

    python cookbook/dspy_long_document_qa.py [--model openai/gpt-4o-mini] [--api-base URL]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import dspy

if not __package__:  # run as a file, from any directory: make this checkout's cookbook importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cookbook.demo import NEEDLE_CELLS, long_document, model_arguments, sentence_with_a_number
from cookbook.demo_dspy import stepwise_rlm_lm, text_lm
from rlm_dspy import RLM
from sandbox import Budget


def lms(args: argparse.Namespace) -> tuple[dspy.LM, dspy.LM]:
    """(root, sub): real dspy.LMs from --model, or the scripted demo pair."""
    if args.model:
        return (dspy.LM(args.model, api_base=args.api_base),
                dspy.LM(args.sub_model or args.model, api_base=args.api_base))
    return stepwise_rlm_lm(NEEDLE_CELLS), text_lm(sentence_with_a_number)


def main(argv: list[str] | None = None) -> dspy.Prediction:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_arguments(parser)
    parser.add_argument("--question", default="What is the launch code for project Heron?")
    args = parser.parse_args(argv)
    root, sub = lms(args)
    rlm = RLM("context, question -> answer", max_iters=8, sub_lm=sub,
              budget=Budget(max_llm_calls=80, max_seconds=600))
    with dspy.context(lm=root):
        out = rlm(context=long_document(), question=args.question)
    print(f"answer: {out.answer}\nstop: {out.stop_reason}  usage: {out.usage}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
