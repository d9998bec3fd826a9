"""DSPy optimizers tune rlm_dspy.RLM's root prompt on a real model: dev accuracy untuned vs tuned.

    python benchmarks/optimize_root_prompt.py [--train 6] [--dev 6] [--tokens 2048]
        [--optimizers bootstrap,mipro] [--max-iterations 4] [--model M --api-base URL]

The model is the embedded local one unless ``--model`` names another. The tasks are the
long-context suite's needles with near-miss distractors (:func:`sandbox.app.bench.tasks.distractors`):
training tasks from seeds 1000 and up, dev tasks from seeds 2000 and up, so no dev context was
seen in training. The metric is the task's own scorer (the true code, and no distractor code, in
the answer). ``bootstrap`` is BootstrapFewShot (the untuned program as its own teacher: the runs
that scored become demos); ``mipro`` is MIPROv2 with a small search (instruction and demo
candidates proposed by the same model, which is not shown the training contexts) sized for a
2-core machine. Every program is scored on
the same dev set. Results go to optimize_root_prompt.{json,md} in ``--out`` (benchmarks/results/).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dspy  # noqa: E402

from benchmarks.report import RESULTS, write_results  # noqa: E402
from rlm_dspy import RLM  # noqa: E402
from sandbox import Budget  # noqa: E402
from sandbox.app.bench.suite import endpoint_arguments  # noqa: E402
from sandbox.app.bench.tasks import distractors  # noqa: E402
from sandbox.app.cli import endpoint_lm, model_endpoint  # noqa: E402

TRAIN_SEEDS, DEV_SEEDS = 1000, 2000


def examples(count: int, first_seed: int, tokens: int) -> list[dspy.Example]:
    """``count`` distractor tasks from consecutive seeds, as DSPy examples (the case rides along)."""
    cases = [distractors(tokens, seed) for seed in range(first_seed, first_seed + count)]
    return [dspy.Example(context=c.context, question=c.question, answer=str(c.truth), case=c)
            .with_inputs("context", "question") for c in cases]


def metric(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> float:
    """The task's own score: the true code is in the answer and no distractor code is."""
    return example.case.score(prediction.answer)


def program(sub_lm: dspy.BaseLM, max_iterations: int) -> RLM:
    return RLM("context, question -> answer", max_iters=max_iterations, sub_lm=sub_lm,
               budget=Budget(max_seconds=300))


def evaluate(prog: dspy.Module, devset: list[dspy.Example], label: str) -> dict[str, float]:
    """Dev accuracy in [0, 1] and the median seconds per task; a line per task on stdout."""
    scores, seconds = [], []
    for example in devset:
        started = time.monotonic()
        prediction = prog(**example.inputs())
        scores.append(metric(example, prediction))
        seconds.append(time.monotonic() - started)
        print(f"{label:9s} seed {example.case.seed}  score {scores[-1]:.0f}  {seconds[-1]:5.1f}s  "
              f"answer {str(prediction.answer)[:60]!r}", flush=True)
    return {"accuracy": round(sum(scores) / len(scores), 3), "median_s": round(sorted(seconds)[len(seconds) // 2], 1)}


def tune(name: str, student: RLM, trainset: list[dspy.Example]) -> tuple[dspy.Module, int]:
    """The compiled program and how many demos its root predictor holds."""
    if name == "bootstrap":
        optimizer = dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=2, max_labeled_demos=0)
        tuned = optimizer.compile(student, trainset=trainset)
    elif name == "mipro":
        optimizer = dspy.MIPROv2(metric=metric, auto=None, num_candidates=2, max_bootstrapped_demos=1,
                                 max_labeled_demos=0, num_threads=1, verbose=False)
        # data_aware_proposer would show the proposer whole training contexts: past a small model's window.
        tuned = optimizer.compile(student, trainset=trainset, num_trials=3, minibatch=False, data_aware_proposer=False)
    else:
        raise ValueError(f"unknown optimizer {name!r}: choose bootstrap or mipro")
    return tuned, len(tuned.generate_action.demos)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=6, help="training tasks")
    parser.add_argument("--dev", type=int, default=6, help="dev tasks")
    parser.add_argument("--tokens", type=int, default=2048, help="context length of each task in tokens")
    parser.add_argument("--optimizers", default="bootstrap", help="comma-separated: bootstrap, mipro")
    parser.add_argument("--max-iterations", type=int, default=4)
    endpoint_arguments(parser, RESULTS)
    args = parser.parse_args(argv)
    trainset = examples(args.train, TRAIN_SEEDS, args.tokens)
    devset = examples(args.dev, DEV_SEEDS, args.tokens)
    results: dict[str, Any] = {"train_tasks": args.train, "dev_tasks": args.dev, "tokens": args.tokens,
                               "max_iterations": args.max_iterations}
    with model_endpoint(args) as endpoint:
        results["model"] = endpoint.model
        sub_lm = endpoint_lm(endpoint, endpoint.sub_model, max_tokens=512)
        with dspy.context(lm=endpoint_lm(endpoint, endpoint.model, max_tokens=512)):
            untuned = evaluate(program(sub_lm, args.max_iterations), devset, "untuned")
            results.update({f"untuned_{key}": value for key, value in untuned.items()})
            for name in args.optimizers.split(","):
                started = time.monotonic()
                tuned, demos = tune(name, program(sub_lm, args.max_iterations), trainset)
                results[f"{name}_compile_s"] = round(time.monotonic() - started, 1)
                results[f"{name}_demos"] = demos
                scored = evaluate(tuned, devset, name)
                results.update({f"{name}_{key}": value for key, value in scored.items()})
                results[f"{name}_lift"] = round(scored["accuracy"] - untuned["accuracy"], 3)
    print(write_results("optimize_root_prompt", results, args.out))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
