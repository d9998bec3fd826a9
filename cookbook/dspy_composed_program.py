"""rlm_dspy.RLM composed with other DSPy modules: an RLM finds the fact, ChainOfThought writes the report.

    python cookbook/dspy_composed_program.py [--model openai/gpt-4o-mini]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import dspy

if not __package__:  # run as a file, from any directory: make this checkout's cookbook importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cookbook.demo import NEEDLE_CELLS, long_document, model_arguments, sentence_with_a_number
from cookbook.demo_dspy import fields, function_lm, stepwise_rlm_reply, text_lm
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


def demo_lm() -> dspy.LM:
    """One scripted LM for both modules: the RLM's steps, and a report that quotes the finding."""
    rlm_reply = stepwise_rlm_reply(NEEDLE_CELLS)

    def reply(messages):
        if "`report`" in messages[0][1]:
            finding = re.search(r"\[\[ ## finding ## \]\]\n(.*)", messages[-1][1]).group(1)
            return fields(reasoning="The RLM found it.", report=f"Report: {finding}")
        return rlm_reply(messages)

    return function_lm(reply, model="scripted/root")


def main(argv: list[str] | None = None) -> dspy.Prediction:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_arguments(parser)
    args = parser.parse_args(argv)
    if args.model:
        root = dspy.LM(args.model, api_base=args.api_base)
        sub = dspy.LM(args.sub_model or args.model, api_base=args.api_base)
    else:
        root, sub = demo_lm(), text_lm(sentence_with_a_number)
    program = ResearchAndReport(sub_lm=sub)
    with dspy.context(lm=root):
        out = program(context=long_document(), question="What is the launch code for project Heron?")
    print(out.report)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
