"""Optimizing an RLM program with BootstrapFewShot: demos from a strong teacher lift a weak student.

    python cookbook/dspy_optimizer_run.py [--model M --teacher-model T] [--save program.json]

With scripted demo models the student writes the right code only when a demo shows it
how; the optimizer's job is to find those demos.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import dspy

if not __package__:  # run as a file, from any directory: make this checkout's cookbook importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cookbook.demo import model_arguments
from cookbook.demo_dspy import fields, function_lm, text_lm
from rlm_dspy import RLM

GOOD_CODE = "import re\nSUBMIT(answer=re.search(r'code: (\\d+)', context).group(1))"
LESSON = "regular expression"


def task_set(n: int, offset: int = 0) -> list[dspy.Example]:
    """Short documents that each hide one code number; the answer is the number."""
    return [dspy.Example(context=f"filler text. code: {1000 + i}. more filler.", query="What is the code?",
                         answer=str(1000 + i)).with_inputs("context", "query") for i in range(offset, offset + n)]


def metric(example: dspy.Example, pred: dspy.Prediction, trace=None) -> float:
    return float(str(pred.answer) == example.answer)


def taught_lm(*, always_right: bool = False) -> dspy.LM:
    """The scripted root LM: right when taught (a demo using re.search, or an instruction naming a
    regular expression), or always (a teacher)."""

    def reply(messages):
        system, prompt = messages[0][1], "\n".join(text for _, text in messages)
        if "extract the final outputs" in system:
            return fields(answer="unknown")
        taught = always_right or "re.search" in prompt or LESSON in system
        return fields(reasoning="find the code", code=GOOD_CODE if taught else "SUBMIT(answer='unknown')")

    return function_lm(reply, model="scripted/task")


def program(sub_lm: dspy.LM | None = None) -> RLM:
    return RLM("context, query -> answer", max_iters=3, sub_lm=sub_lm or text_lm(str.upper))


def score(prog: dspy.Module, devset: list[dspy.Example]) -> float:
    return dspy.Evaluate(devset=devset, metric=metric, num_threads=1, display_progress=False)(prog).score / 100


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_arguments(parser)
    parser.add_argument("--teacher-model", help="litellm model string of the teacher (default: --model)")
    parser.add_argument("--save", help="where to save the optimized program (JSON)")
    args = parser.parse_args(argv)
    if args.model:
        student_lm = dspy.LM(args.model, api_base=args.api_base)
        teacher_lm = dspy.LM(args.teacher_model or args.model, api_base=args.api_base)
        sub = dspy.LM(args.sub_model or args.model, api_base=args.api_base)
    else:
        student_lm, teacher_lm, sub = taught_lm(), taught_lm(always_right=True), None
    trainset, devset = task_set(6), task_set(6, offset=20)
    with dspy.context(lm=student_lm):
        before = score(program(sub), devset)
        optimizer = dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=2, max_labeled_demos=0,
                                          teacher_settings={"lm": teacher_lm})
        tuned = optimizer.compile(program(sub), trainset=trainset)
        after = score(tuned, devset)
    if args.save:
        tuned.save(args.save)
    print(f"dev accuracy: {before:.2f} before, {after:.2f} after BootstrapFewShot "
          f"({len(tuned.generate_action.demos)} demos)")
    return {"before": before, "after": after}


if __name__ == "__main__":
    main(sys.argv[1:])
