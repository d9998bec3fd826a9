"""Optimizing an RLM program with BootstrapFewShot: demos from a strong teacher lift a weak student.

    python cookbook/dspy_optimizer_run.py [--model M --teacher-model T] [--save program.json]

BootstrapFewShot keeps the teacher's runs that scored as demos in the student's prompt, so name a
teacher stronger than the student. Both run on the embedded local model unless --model and
--teacher-model name others. Prints the dev accuracy before and after.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import dspy

if not __package__:  # run as a file, from any directory: make this checkout's cookbook importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cookbook.demo import model_arguments, parse_args
from cookbook.demo_dspy import lms, named_lm
from rlm_dspy import RLM


def task_set(n: int, offset: int = 0) -> list[dspy.Example]:
    """Short documents that each hide one code number; the answer is the number."""
    return [dspy.Example(context=f"filler text. code: {1000 + i}. more filler.", query="What is the code?",
                         answer=str(1000 + i)).with_inputs("context", "query") for i in range(offset, offset + n)]


def metric(example: dspy.Example, pred: dspy.Prediction, trace=None) -> float:
    return float(str(pred.answer) == example.answer)


def program(sub_lm: dspy.BaseLM | None = None) -> RLM:
    """The program to tune; its sub-calls go to ``sub_lm`` (default: the configured LM)."""
    return RLM("context, query -> answer", max_iters=3, sub_lm=sub_lm)


def score(prog: dspy.Module, devset: list[dspy.Example]) -> float:
    return dspy.Evaluate(devset=devset, metric=metric, num_threads=1, display_progress=False)(prog).score / 100


def main(argv: list[str] | None = None, *, lm: dspy.BaseLM | None = None, teacher_lm: dspy.BaseLM | None = None,
         sub_lm: dspy.BaseLM | None = None) -> dict[str, float]:
    """Score, tune and score again; ``lm`` (the student), ``teacher_lm`` and ``sub_lm`` replace the
    LMs the command line names (the teacher defaults to the student)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_arguments(parser)
    parser.add_argument("--teacher-model", help="litellm model string of the teacher (default: --model)")
    parser.add_argument("--save", help="where to save the optimized program (JSON)")
    args = parse_args(parser, argv)
    student_lm, sub = lms(args, lm, sub_lm)
    if teacher_lm is None:
        teacher_lm = named_lm(args.teacher_model, args.api_base) if args.teacher_model else student_lm
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
