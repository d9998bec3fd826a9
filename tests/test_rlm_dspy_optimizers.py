"""DSPy optimizers tune rlm_dspy.RLM's root prompt: BootstrapFewShot, MIPROv2 and GEPA.

The toy task: find the code number in a context. The scripted "weak" root LM writes
the right code only when its prompt teaches it how: a demo that uses `re.search`
(what BootstrapFewShot adds) or an instruction mentioning a regular expression
(what MIPROv2 and GEPA propose). Each optimizer has to find that out.
"""

from __future__ import annotations

import json
import re

import dspy
import pytest

from cookbook.dspy_optimizer_run import metric, program, score, task_set
from rlm_dspy import RLM
from sandbox import Budget
from tests.dspy_lms import fields, function_lm, text_lm
from tests.recipe_models import LESSON, taught_lm


def feedback_metric(example, pred, trace=None, pred_name=None, pred_trace=None):
    value = metric(example, pred)
    feedback = "Correct." if value else f"Wrong: expected {example.answer}. Use a {LESSON} to find 'code: N'."
    return dspy.Prediction(score=value, feedback=feedback)


def output_fields(system: str) -> list[str]:
    section = system.split("Your output fields are:")[-1].split("All interactions")[0]
    return re.findall(r"\d+\. `(\w+)`", section)


def proposer_lm() -> dspy.LM:
    """Answers any DSPy signature (MIPROv2's proposer, GEPA's reflection); instruction fields get a
    proposal that teaches the lesson."""

    def reply(messages):
        system = messages[0][1]
        names = output_fields(system) or ["answer"]
        values = {name: f"Use a {LESSON} on `context` to find 'code: N', then SUBMIT it." if "instruction" in name
                  else "A dataset of short texts that each contain a code number." for name in names}
        return json.dumps(values) if "Outputs will be a JSON object" in system else fields(**values)

    return function_lm(reply, model="scripted/proposer")


@pytest.fixture(autouse=True)
def weak_student_lm():
    with dspy.context(lm=taught_lm()):
        yield


def test_bootstrap_few_shot_learns_from_a_teacher(tmp_path):
    trainset, devset = task_set(4), task_set(4, offset=10)
    student = program()
    assert score(student, devset) == 0.0
    optimizer = dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=2, max_labeled_demos=0,
                                      teacher_settings={"lm": taught_lm(always_right=True)})
    tuned = optimizer.compile(student, trainset=trainset)
    assert tuned.generate_action.demos and score(tuned, devset) == 1.0

    tuned.save(tmp_path / "bootstrapped.json")
    loaded = program()
    loaded.load(tmp_path / "bootstrapped.json")
    assert score(loaded, devset) == 1.0


def test_mipro_v2_finds_a_better_instruction(tmp_path):
    trainset, devset = task_set(6), task_set(4, offset=10)
    student = program()
    assert score(student, devset) == 0.0
    optimizer = dspy.MIPROv2(metric=metric, prompt_model=proposer_lm(), task_model=taught_lm(), auto=None,
                             num_candidates=2, max_bootstrapped_demos=0, max_labeled_demos=0, num_threads=1,
                             verbose=False)
    tuned = optimizer.compile(student, trainset=trainset, valset=devset, num_trials=3, minibatch=False)
    assert LESSON in tuned.generate_action.signature.instructions
    assert score(tuned, devset) == 1.0

    tuned.save(tmp_path / "mipro.json")
    loaded = program()
    loaded.load(tmp_path / "mipro.json")
    assert loaded.generate_action.signature.instructions == tuned.generate_action.signature.instructions


def test_gepa_reflects_on_feedback(tmp_path):
    trainset, devset = task_set(4), task_set(4, offset=10)
    student = program()
    assert score(student, devset) == 0.0
    optimizer = dspy.GEPA(metric=feedback_metric, reflection_lm=proposer_lm(), max_metric_calls=40,
                          reflection_minibatch_size=2, num_threads=1, use_merge=False, track_stats=False)
    tuned = optimizer.compile(student, trainset=trainset, valset=devset)
    assert score(tuned, devset) == 1.0

    tuned.save(tmp_path / "gepa.json")
    loaded = program()
    loaded.load(tmp_path / "gepa.json")
    assert score(loaded, devset) == 1.0


def test_budget_exhaustion_is_a_failed_example_not_an_abort():
    starved = RLM("context, query -> answer", max_iters=2, sub_lm=text_lm(str.upper), budget=Budget(max_tokens=50))
    optimizer = dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=2, max_labeled_demos=0,
                                      teacher_settings={"lm": taught_lm(always_right=True)})
    tuned = optimizer.compile(starved, trainset=task_set(3))  # every run is cut short; nothing raises
    assert tuned.generate_action.demos == []
    prediction = starved(**task_set(1)[0].inputs())
    assert prediction.stop_reason == "max_tokens"
