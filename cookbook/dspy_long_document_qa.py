"""Long-document QA with rlm_dspy.RLM: the document stays in the REPL, the model reads it with code.

    python cookbook/dspy_long_document_qa.py [--model openai/gpt-4o-mini] [--api-base URL]

Runs on the embedded local model unless --model names another.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import dspy

if not __package__:  # run as a file, from any directory: make this checkout's cookbook importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cookbook.demo import long_document, model_arguments, parse_args
from cookbook.demo_dspy import lms
from rlm_dspy import RLM
from sandbox import Budget


def main(argv: list[str] | None = None, *, lm: dspy.BaseLM | None = None,
         sub_lm: dspy.BaseLM | None = None) -> dspy.Prediction:
    """Answer the question about the demo document; ``lm`` (the root) and ``sub_lm`` replace the
    LMs the command line names."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_arguments(parser)
    parser.add_argument("--question", default="What is the launch code for project Heron?")
    args = parse_args(parser, argv)
    root, sub = lms(args, lm, sub_lm)
    rlm = RLM("context, question -> answer", max_iters=8, sub_lm=sub,
              budget=Budget(max_llm_calls=80, max_seconds=600))
    with dspy.context(lm=root):
        out = rlm(context=long_document(), question=args.question)
    print(f"answer: {out.answer}\nstop: {out.stop_reason}  usage: {out.usage}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
