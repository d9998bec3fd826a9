"""rlm_dspy.RLM composed with other DSPy modules: an RLM finds the fact, ChainOfThought writes the report.

    python cookbook/dspy_composed_program.py [--model openai/gpt-4o-mini] [--api-base URL]

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


class ResearchAndReport(dspy.Module):
    """Search a long document with an RLM, then report on the finding in one short paragraph."""

    def __init__(self, sub_lm: dspy.LM | None = None):
        super().__init__()
        self.find = RLM("context, question -> finding", max_iters=8, sub_lm=sub_lm)
        self.report = dspy.ChainOfThought("question, finding -> report")

    def forward(self, context: str, question: str) -> dspy.Prediction:
        finding = self.find(context=context, question=question).finding
        return self.report(question=question, finding=finding)


def main(argv: list[str] | None = None, *, lm: dspy.BaseLM | None = None,
         sub_lm: dspy.BaseLM | None = None) -> dspy.Prediction:
    """Research and report on the demo document; ``lm`` (both modules' LM) and ``sub_lm`` (the
    RLM's sub-calls) replace the LMs the command line names."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_arguments(parser)
    args = parse_args(parser, argv)
    root, sub = lms(args, lm, sub_lm)
    program = ResearchAndReport(sub_lm=sub)
    with dspy.context(lm=root):
        out = program(context=long_document(), question="What is the launch code for project Heron?")
    print(out.report)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
