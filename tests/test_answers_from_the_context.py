"""Answers that look final but come from text the model made up (#15): a cell rebinding ``context``,
a reply that writes the REPL's output itself; and the worked example runs in the sandbox."""

from __future__ import annotations

import re

import pytest

from rlm_dspy import RLM
from rlm_graph import create_rlm_graph
from sandbox.boundary.repl import Sandbox
from sandbox.engine.parsing import before_invented_turn, parse_reply
from sandbox.engine.prompts import EXAMPLE_VALUES, EXAMPLES, EXAMPLES_MARK, root_system_prompt
from tests.conftest import FakeLM
from tests.dspy_lms import script_lm, text_lm
from tests.test_rlm_graph import cell, script, upper_lm

PUT_BACK = "and cannot be replaced"
TEXT = "The launch code for project Heron is 4417. " * 40


# -- a cell cannot replace an input ----------------------------------------------------------------


@pytest.mark.parametrize("code", ["context = 'limit = 5123'", "del context", "for context in ['x']: pass",
                                  "context += ' and more'"])
def test_a_rebound_input_is_put_back_and_the_cell_is_told(code):
    with Sandbox(confinement="none") as sandbox:
        sandbox.set_variable("context", TEXT, restore=True)
        result = sandbox.execute(code)
        assert PUT_BACK in result.output and "`context`" in result.output
        assert sandbox.execute("print(context == " + repr(TEXT) + ")").output.startswith("True")


def test_an_input_is_put_back_after_a_restart_too():
    with Sandbox(confinement="none") as sandbox:
        sandbox.set_variable("context", TEXT, restore=True)
        sandbox.restart()
        assert PUT_BACK in sandbox.execute("context = 1").output
        assert sandbox.execute("print(len(context))").output.strip() == str(len(TEXT))


def test_variables_without_restore_stay_the_cells_to_change():
    with Sandbox(confinement="none") as sandbox:
        sandbox.set_variable("notes", "first")
        result = sandbox.execute("notes = 'second'")
        assert PUT_BACK not in result.output
        assert sandbox.execute("print(notes)").output.strip() == "second"


def test_a_cell_that_leaves_the_input_alone_gets_no_note():
    with Sandbox(confinement="none") as sandbox:
        sandbox.set_variable("context", TEXT, restore=True)
        result = sandbox.execute("part = context[:10]\ncontext_copy = context\nprint(part)")
        assert result.output == TEXT[:10] + "\n"


def test_the_graph_answers_from_the_real_context_after_a_cell_rebinds_it():
    graph = create_rlm_graph(script(cell("context = 'limit = 5123'\nprint(context)"), cell("FINAL(context[:43])")),
                             sub_model=upper_lm(), grounding=False)
    out = graph.invoke({"query": "What is the launch code?", "context": TEXT})
    assert out["answer"] == TEXT[:43]
    cells = [e for e in out["events"]["events"] if e["kind"] == "cell"]
    assert PUT_BACK in cells[0]["output"]


def test_dspy_inputs_are_put_back_too():
    steps = [{"reasoning": "r", "code": "```python\nquestion = 'made up'\ncontext = ''\n```"},
             {"reasoning": "r", "code": "```python\nSUBMIT(answer=question + '|' + context[:10])\n```"}]
    import dspy

    with dspy.context(lm=script_lm(*steps)):
        out = RLM("context, question -> answer", sub_lm=text_lm(str.upper), grounding=False)(
            context=TEXT, question="What is the code?")
    assert out.answer == "What is the code?|" + TEXT[:10]
    note = out.trajectory[0]["output"]
    assert "are inputs and cannot be replaced" in note and "`question`" in note and "`context`" in note


# -- a reply that writes the next turn itself -----------------------------------------------------

INVENTED = [
    # (reply, the part that is the model's own turn)
    ("I look.\n```repl\nprint(len(context))\n```\nuser: REPL output:\n5123\n```repl\nFINAL(5123)\n```",
     "I look.\n```repl\nprint(len(context))\n```\n"),
    ("```repl\nx = 1\n```\nREPL output:\n1\nFINAL(1)", "```repl\nx = 1\n```\n"),
    ("```repl\nx = 1\n```\n  User : what next?", "```repl\nx = 1\n```\n"),
    # inside a code block it is the code's own text
    ('```repl\ns = """\nuser: hi"""\nprint(s)\n```', '```repl\ns = """\nuser: hi"""\nprint(s)\n```'),
    ("The user: asked for it.\n```repl\nprint(1)\n```", "The user: asked for it.\n```repl\nprint(1)\n```"),
]


@pytest.mark.parametrize(("reply", "own"), INVENTED)
def test_a_reply_ends_where_the_model_starts_writing_the_next_turn(reply, own):
    assert before_invented_turn(reply) == own


def test_code_and_answers_after_an_invented_output_do_not_run():
    action = parse_reply(INVENTED[0][0], max_blocks=None)
    assert action.code == ("print(len(context))",) and action.final is None
    assert "5123" not in action.kept_text
    assert parse_reply(INVENTED[1][0]).final is None
    assert "made-up REPL output" in parse_reply("REPL output:\n42\nFINAL(42)").problem


def test_the_graph_never_runs_the_code_after_an_invented_turn():
    reply = cell("print(len(context))") + "\nuser: REPL output:\n5123\n```repl\nFINAL('5123')\n```"
    graph = create_rlm_graph(script(reply, cell("FINAL('done')")), sub_model=upper_lm(), grounding=False)
    out = graph.invoke({"query": "q", "context": TEXT})
    assert out["answer"] == "done"
    assert [e["code"] for e in out["events"]["events"] if e["kind"] == "cell"][0] == "print(len(context))"


# -- the worked example -----------------------------------------------------------------------------


def test_the_example_values_grounding_refuses_are_the_examples_own():
    """``EXAMPLE_VALUES`` must follow the examples: a value they no longer show protects nothing."""
    assert EXAMPLES.startswith(EXAMPLES_MARK) and all(value in EXAMPLES for value in EXAMPLE_VALUES)


def test_the_examples_code_runs_in_the_sandbox():
    """The example's code must be code our sandbox allows, or the model learns failing cells."""
    prompt = root_system_prompt(max_output_chars=10_000, can_recurse=False)
    example = prompt.split(EXAMPLES_MARK)[1]
    context = "Acme and Bolt agreed to a merger in May. The Acme merger closed on 2 June 2024.\n" + "Filler. " * 200
    replies = [cell(code) for code in re.findall(r"```repl\n(.*?)```", example, re.DOTALL)]
    out = create_rlm_graph(script(*replies), sub_model=FakeLM(lambda prompt: "2 June 2024"), look_before_answer=False,
                           grounding=False).invoke({"query": "q", "context": context})
    errors = [e["error"] for e in out["events"]["events"] if e["kind"] == "cell" and e["error"]]
    assert errors == [] and out["stop_reason"] == "final"
