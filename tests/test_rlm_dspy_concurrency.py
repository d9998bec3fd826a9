"""Eight rlm_dspy.RLM calls at once in one process, the DSPy way (dspy.Parallel, dspy.Evaluate):
each gets its own worker, ledger and trajectory, and its own budget holds."""

from __future__ import annotations

import threading

import dspy
import pytest

from rlm_dspy import RLM
from sandbox import Budget
from sandbox.engine.session import SandboxOptions
from tests.dspy_lms import function_lm, stepwise_rlm_lm

# Each run asks for `n` sub-calls, n being the query's last word; 1 root call + n must fit max_llm_calls=4.
CELL = "n = int(query.split()[-1])\nanswers = [llm_query(query) for _ in range(n)]\nSUBMIT(answer=answers[0])"
QUERIES = [f"item{i} {2 if i % 2 else 5}" for i in range(8)]


def barrier_sub_lm(parties: int) -> dspy.LM:
    """A sub-LM whose first ``parties`` calls wait for each other: the runs must really overlap."""
    barrier, lock, seen = threading.Barrier(parties, timeout=60), threading.Lock(), [0]

    def reply(messages):
        with lock:
            seen[0] += 1
            first_wave = seen[0] <= parties
        if first_wave:
            barrier.wait()
        return messages[-1][1].upper()

    return function_lm(reply, model="scripted/sub")


def check(query: str, prediction: dspy.Prediction) -> None:
    """One run's outcome depends on its own query and budget only."""
    own_prompts = {e["prompt"] for e in prediction.events["events"] if e["kind"] == "sub_call"}
    assert own_prompts == {query}  # its trajectory holds its own sub-calls, no one else's
    if query.endswith(" 2"):
        assert (prediction.answer, prediction.stop_reason) == (query.upper(), "final")
        assert prediction.usage["llm_calls"] == 3
    else:  # 1 + 5 calls do not fit its own max_llm_calls=4, whatever the others spent
        assert prediction.stop_reason == "max_llm_calls" and prediction.answer == "extracted"
        assert prediction.usage["llm_calls"] <= 4


@pytest.fixture
def rlm():
    return RLM("query -> answer", sub_lm=barrier_sub_lm(len(QUERIES)), budget=Budget(max_llm_calls=4))


def test_dspy_parallel_runs_eight_isolated_calls_at_once(rlm):
    examples = [dspy.Example(query=q).with_inputs("query") for q in QUERIES]
    with dspy.context(lm=stepwise_rlm_lm([CELL], extract={"answer": "extracted"})):
        predictions = dspy.Parallel(num_threads=8)([(rlm, example) for example in examples])
    for query, prediction in zip(QUERIES, predictions, strict=True):
        check(query, prediction)


def test_dspy_evaluate_with_eight_threads_scores_each_call_on_its_own(rlm):
    devset = [dspy.Example(query=q, expected=q.upper() if q.endswith(" 2") else "extracted").with_inputs("query")
              for q in QUERIES]
    checked = []

    def metric(example, prediction, trace=None):
        check(example.query, prediction)
        checked.append(example.query)
        return prediction.answer == example.expected

    with dspy.context(lm=stepwise_rlm_lm([CELL], extract={"answer": "extracted"})):
        result = dspy.Evaluate(devset=devset, metric=metric, num_threads=8, provide_traceback=True)(rlm)
    assert sorted(checked) == sorted(QUERIES) and result.score == 100.0


def test_one_runs_batched_sub_calls_are_all_in_flight_at_once():
    """16 sub-calls at max_concurrency=16 overlap (each waits for all the others), past the
    few workers of an event loop's default executor that DSPy's async calls would queue on."""
    cell = ("answers = llm_query_batched([query + str(i) for i in range(16)])\n"
            "print(len(answers), answers[0])\nSUBMIT(answer=answers[0])")
    rlm = RLM("query -> answer", sub_lm=barrier_sub_lm(16), sandbox_options=SandboxOptions(max_concurrency=16))
    with dspy.context(lm=stepwise_rlm_lm([cell])):
        prediction = rlm(query="item")
    assert (prediction.answer, prediction.stop_reason) == ("ITEM0", "final")
    assert prediction.usage["llm_calls"] == 17
