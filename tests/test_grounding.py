"""Grounded answers: look before answering, and the code-only grounding checkpoint, in both engines."""

from __future__ import annotations

import dspy
import pytest

from rlm_dspy import RLM
from rlm_graph import create_rlm_graph
from sandbox import Evaluation
from sandbox.engine.grounding import GroundingCheck, load_bearing_tokens, reads_inputs
from tests.conftest import FakeLM
from tests.dspy_lms import script_lm, text_lm
from tests.test_rlm_graph import cell, script, upper_lm

FILLER = "The committee met again and discussed the budget at length. " * 60  # longer than the 1,000-char preview
CONTEXT = FILLER + "The access code for the north gate is 98,321. " + FILLER


def step(code: str) -> dict[str, str]:
    return {"reasoning": "next", "code": f"```python\n{code}\n```"}


LOOK = step("i = context.find('access code')\nprint(context[i:i + 60])")


def run(rlm: RLM, root, **inputs):
    with dspy.context(lm=root):
        return rlm(**inputs)


@pytest.mark.parametrize("answer,tokens", [
    ("The access code for the north gate is 98321.", ["98321"]),
    ('Alice Smith paid $45,213.50 for order XK-42B ("blue whale").', ["blue whale", "45213.50", "XK-42B",
                                                                       "Alice Smith"]),
    ("It is not stated in the document.", []),
    ("There are 3 of them.", []),  # single digits are too common to check
])
def test_load_bearing_tokens(answer, tokens):
    assert load_bearing_tokens(answer) == tokens


def test_a_token_is_grounded_only_by_a_whole_occurrence_in_a_source():
    check = GroundingCheck({"context": "the code is 98,321; Alice went home", "query": "which code?"})
    assert check("The code is 98321").passed and check("alice").passed and check("98,321").passed
    verdict = check("The code is 983210, said Bob")
    assert not verdict.passed and verdict.score == 0.0
    assert "'983210', 'Bob' do not occur" in verdict.feedback and "not stated" in verdict.feedback
    check.add("computed total: 983210")
    assert check.missing("983210 and Bob") == ["Bob"]


@pytest.mark.parametrize("context,answer,copied", [
    ("the merger closed in May", "It closed on 2 June 2024.", ["2 June 2024"]),
    ("the merger closed in May", "Acme and Bolt merged.", ["Acme", "Bolt"]),
    ("Acme Corp closed on 2 June 2024", "Acme closed on 2 June 2024.", []),  # the context holds them: not copied
    ("the merger closed in May", "It closed in May.", []),
])
def test_an_answer_holding_a_worked_examples_value_the_context_lacks_is_copied(context, answer, copied):
    check = GroundingCheck({"context": context}, example_values=("Acme", "Bolt", "2 June 2024"))
    check.add("llm_query said: 2 June 2024, Acme, Bolt")  # printed, yet still not the context's
    assert check.copied(answer) == copied
    verdict = check(answer)
    assert verdict.passed == (not copied)
    if copied:
        assert "from the worked example" in verdict.feedback and repr(copied[0]) in verdict.feedback


def test_reads_inputs_looks_for_the_input_names_in_the_code():
    assert reads_inputs("print(context[:100])", ["context"])
    assert reads_inputs("hits = search('gate')", ["context"])
    assert not reads_inputs("x = llm_query('sum of 120, 30, 50')\nprint(x)", ["context"])


def test_a_submit_before_looking_at_a_long_context_is_refused_then_accepted():
    root = script_lm(step("x = llm_query('the code? 12345')\nSUBMIT(answer=x)"), LOOK, step("SUBMIT(answer='98321')"))
    out = run(RLM("context, query -> answer", sub_lm=text_lm(lambda p: "12345")), root, context=CONTEXT,
              query="What is the access code for the north gate?")
    assert (out.answer, out.stop_reason) == ("98321", "final")
    assert "[Refused] SUBMIT came before your code had read `context`" in out.trajectory[0]["output"]


def test_an_answer_not_in_the_context_goes_back_with_the_token_named():
    root = script_lm(LOOK, step("SUBMIT(answer='The code is 45213')"), step("SUBMIT(answer='The code is 98321')"))
    out = run(RLM("context, query -> answer", sub_lm=text_lm(str.upper)), root, context=CONTEXT, query="code?")
    assert (out.answer, out.stop_reason) == ("The code is 98321", "final")
    assert "'45213' does not occur in the inputs" in out.trajectory[2]["output"]
    [evaluation] = [e for e in out.events["events"] if e["kind"] == "evaluation"]
    assert (evaluation["checkpoint"], evaluation["decision"]) == ("grounding", "refine")


def test_grounding_comes_before_the_users_evaluator():
    seen = []

    def evaluator(query, answer):
        seen.append(answer)
        return Evaluation(1.0, True)

    root = script_lm(LOOK, step("SUBMIT(answer='45213')"), step("SUBMIT(answer='98321')"))
    out = run(RLM("context, query -> answer", sub_lm=text_lm(str.upper), evaluator=evaluator), root,
              context=CONTEXT, query="code?")
    assert (out.answer, out.stop_reason) == ("98321", "accepted") and seen == ["98321"]


def test_both_checks_can_be_turned_off():
    root = script_lm(step("SUBMIT(answer='45213')"))
    rlm = RLM("context, query -> answer", sub_lm=text_lm(str.upper), look_before_answer=False, grounding=False)
    assert run(rlm, root, context=CONTEXT, query="code?").answer == "45213"


def test_inputs_shown_in_full_may_be_answered_at_once_as_with_dspy_rlm():
    root = script_lm(step("SUBMIT(answer='42')"))
    out = run(RLM("context, query -> answer", sub_lm=text_lm(str.upper)), root, context="short", query="?")
    assert (out.answer, out.stop_reason) == ("42", "final")


def test_search_ranks_the_long_input_whatever_its_name():
    root = script_lm(step("hit = search('access code gate')[0]\nprint(hit['text'])"),
                     step("SUBMIT(answer='98321')"))
    out = run(RLM("document, question -> answer", sub_lm=text_lm(str.upper)), root, document=CONTEXT,
              question="What is the access code for the north gate?")
    assert "access code for the north gate is 98,321" in out.trajectory[0]["output"]
    assert (out.answer, out.stop_reason) == ("98321", "final")
    assert "the k passages of `document`" in root.scripted.prompts[0]


# -- the graph engine ----------------------------------------------------------------------


def graph_run(*replies, **options):
    graph = create_rlm_graph(script(*replies), sub_model=upper_lm(), **options)
    return graph.invoke({"query": "What is the access code for the north gate?", "context": CONTEXT})


def user_turns(out) -> str:
    return "\n".join(str(e.get("message", "")) for e in out["events"]["events"] if e["kind"] == "note")


def test_the_graph_refuses_a_final_before_looking_then_accepts_one_after():
    out = graph_run(cell("FINAL('12345')"), "FINAL(12345)", cell("i = context.find('access code')\nx = context[i:i + 60]"),
                    cell("print(x)"), cell("FINAL('98321')"))
    assert (out["answer"], out["stop_reason"]) == ("98321", "final")
    assert user_turns(out).count("FINAL before looking at the context") == 2  # in a cell, and in prose


def test_the_graph_sends_an_ungrounded_answer_back_naming_the_token():
    out = graph_run(cell("i = context.find('access code')\nprint(context[i:i + 60])"), cell("FINAL('45213')"),
                    cell("FINAL('98321')"))
    assert (out["answer"], out["stop_reason"]) == ("98321", "final")
    [evaluation] = [e for e in out["events"]["events"] if e["kind"] == "evaluation"]
    assert (evaluation["checkpoint"], evaluation["decision"]) == ("grounding", "refine")
    assert "'45213' does not occur" in evaluation["feedback"]


def test_the_graph_sends_back_an_answer_copied_from_its_worked_example():
    """The example's code, run on another context, prints what llm_query makes of the example's
    query; plain grounding would take that as read. The example's values are refused anyway."""
    copied = cell('answer = llm_query("When did the Acme merger close? " + context[:100])\nprint(answer)\nFINAL(answer)')
    out = create_rlm_graph(script(copied, cell("i = context.find('access code')\nprint(context[i:i + 60])"),
                                  cell("FINAL('98321')")),
                           sub_model=FakeLM(lambda prompt: "It closed on 2 June 2024.")).invoke(
        {"query": "What is the access code for the north gate?", "context": CONTEXT})
    assert (out["answer"], out["stop_reason"]) == ("98321", "final")
    [evaluation] = [e for e in out["events"]["events"] if e["kind"] == "evaluation"]
    assert "'2 June 2024' comes from the worked example" in evaluation["feedback"]


def test_the_graph_checks_can_be_turned_off_and_skip_short_contexts():
    assert graph_run(cell("FINAL('45213')"), look_before_answer=False, grounding=False)["answer"] == "45213"
    graph = create_rlm_graph(script(cell("FINAL('45213')")), sub_model=upper_lm())
    assert graph.invoke({"query": "q", "context": "short"})["answer"] == "45213"


def test_an_answer_a_sub_call_read_from_the_context_may_come_in_the_same_cell():
    code = "i = context.find('access code')\nSUBMIT(answer=llm_query('The code? ' + context[i:i + 80]))"
    out = run(RLM("context, query -> answer", sub_lm=text_lm(lambda p: "98321")), script_lm(step(code)),
              context=CONTEXT, query="code?")
    assert (out.answer, out.stop_reason) == ("98321", "final")
    graph = create_rlm_graph(script(cell("FINAL(llm_query('The code? ' + context[3600:3700]))")),
                             sub_model=FakeLM(lambda prompt: "98321"))
    assert graph.invoke({"query": "code?", "context": CONTEXT})["answer"] == "98321"


def test_a_long_context_is_checked_window_by_window_without_a_copy(monkeypatch):
    import sandbox.engine.grounding as grounding

    monkeypatch.setattr(grounding, "WINDOW_CHARS", 64)  # many cuts, some through the tokens
    filler = "lorem ipsum dolor sit amet " * 40
    context = f"{filler}Total: 1,234,567 units. {filler}Marie Curie won. {filler}code AB-12x. {filler}"
    check = GroundingCheck({"context": context})
    assert check._sources[0] is context  # the input itself: no joined or lower-cased copy is kept
    for token in ("1234567", "Marie Curie", "AB-12x", "units"):
        assert check.missing(token) == [], token
    assert check.missing("1234568") == ["1234568"]
    assert check.missing("Curie Marie") == ["Curie Marie"]
    assert check.missing("234567") == ["234567"]  # inside a number, not a token of its own


def test_a_long_context_is_scanned_holding_little_memory():
    import tracemalloc

    context = "record 12 holds value 34\n" * 400_000  # 10 MB
    check = GroundingCheck({"context": context})
    tracemalloc.start()
    try:
        assert check.missing("It is 999999") == ["999999"]  # not there: the whole context is scanned
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # a window, its lower-cased copy and that without separators: 3 MB at once in 1 MiB windows
    assert peak < 500_000


def test_a_list_context_is_searched_document_by_document():
    docs = ["the first says 4,200", "the second names Ada Lovelace"]
    check = GroundingCheck({"context": docs})
    assert check._sources[0] is docs[0]
    assert check.missing("4200 and Ada Lovelace") == []
