"""Reading the root LM's reply (sandbox.engine.parsing), case by case."""

from __future__ import annotations

import pytest

from sandbox.engine.parsing import Action, before_invented_turn, code_from_field, parse_reply, without_code_blocks

FENCE = "```"


@pytest.mark.parametrize("reply,code,final,final_var,is_name", [
    (f"Look first.\n{FENCE}repl\nprint(len(context))\n{FENCE}", ("print(len(context))",), None, None, False),
    (f"{FENCE}python\nx = 1\n{FENCE}", ("x = 1",), None, None, False),
    (f"{FENCE}py\nx = 1\n{FENCE}", ("x = 1",), None, None, False),
    (f"{FENCE}\nx = 1\n{FENCE}", ("x = 1",), None, None, False),  # untagged blocks run
    (f"{FENCE}repl\nx = 1\n", ("x = 1",), None, None, False),  # an unclosed block runs to the end
    ("FINAL(42)", (), "42", None, False),
    ("Done.\nFINAL('The code is 7291.')", (), "The code is 7291.", None, False),
    ('FINAL("a, b")', (), "a, b", None, False),
    ("FINAL(answer)", (), "answer", None, True),  # may name a REPL variable
    ("FINAL(class)", (), "class", None, False),  # a keyword is no variable
    ("FINAL_VAR(result)", (), None, "result", False),
    ("FINAL_VAR('result')", (), None, "result", False),
    (f"{FENCE}repl\nx = 1\n{FENCE}\nFINAL(x)", ("x = 1",), None, None, False),  # code first: the answer waits
])
def test_what_a_reply_asks_for(reply, code, final, final_var, is_name):
    action = parse_reply(reply)
    assert (action.code, action.final, action.final_var, action.final_is_name, action.problem) == \
        (code, final, final_var, is_name, None)


@pytest.mark.parametrize("reply,problem", [
    ("", "Your reply was empty"),
    ("   \n", "Your reply was empty"),
    (None, "Your reply was empty"),
    ("user: REPL output:\n7291", "began with a made-up REPL output"),
    ("I think the answer is 7291.", "no ```repl code block and no FINAL(answer)"),
    (f"{FENCE}bash\nls\n{FENCE}", "tagged bash; only ```repl or ```python"),
    (f"{FENCE}repl\n\n{FENCE}", "tagged repl"),  # an empty block runs nothing
])
def test_a_reply_that_asks_for_nothing_gets_a_problem_to_report(reply, problem):
    action = parse_reply(reply)
    assert action.code == () and action.final is None and problem in action.problem


def test_max_blocks_picks_the_first_blocks_and_keeps_the_text_up_to_the_last_one_run():
    reply = f"a\n{FENCE}repl\nx = 1\n{FENCE}\nb\n{FENCE}repl\ny = 2\n{FENCE}\ninvented output"
    one = parse_reply(reply)
    assert one.code == ("x = 1",) and one.kept_text == f"a\n{FENCE}repl\nx = 1\n{FENCE}"
    every = parse_reply(reply, max_blocks=None)
    assert every.code == ("x = 1", "y = 2") and every.kept_text.endswith(f"y = 2\n{FENCE}")


@pytest.mark.parametrize("max_blocks", [0, -1, True, 1.5, "1"])
def test_max_blocks_must_be_none_or_a_positive_int(max_blocks):
    with pytest.raises(ValueError, match="max_blocks must be None or an integer >= 1"):
        parse_reply("FINAL(1)", max_blocks=max_blocks)


@pytest.mark.parametrize("text,kept", [
    ("thought\nuser: REPL output: 1", "thought\n"),
    ("thought\n  REPL output:\n1", "thought\n"),
    ("thought\nUSER: hi", "thought\n"),
    (f"{FENCE}repl\nprint('user: x')\n{FENCE}\nmore", f"{FENCE}repl\nprint('user: x')\n{FENCE}\nmore"),
    (f"{FENCE}repl\ns = '''\nuser: x'''\n{FENCE}", f"{FENCE}repl\ns = '''\nuser: x'''\n{FENCE}"),  # in code
    ("a user: mid-line is prose", "a user: mid-line is prose"),
])
def test_before_invented_turn_cuts_at_a_turn_line_outside_code(text, kept):
    assert before_invented_turn(text) == kept


def test_without_code_blocks_cuts_blocks_of_every_tag():
    assert without_code_blocks(f"a\n{FENCE}bash\nls\n{FENCE}b\n{FENCE}repl\nx\n{FENCE}c") == "a\nb\nc"


@pytest.mark.parametrize("value,expected", [
    ("x = 1", Action(code=("x = 1",))),
    ("\nx = 1\n", Action(code=("x = 1",))),
    (f"{FENCE}python\nx = 1\n{FENCE}", Action(code=("x = 1",), kept_text=f"{FENCE}python\nx = 1\n{FENCE}")),
    ("FINAL_VAR(x) is not code", Action(code=("FINAL_VAR(x) is not code",))),  # bare: run as written
    (f"{FENCE}text\nFINAL(x)\n{FENCE}\nFINAL(x)", Action(code=("FINAL('x')",))),  # literal, not a name
    (f"{FENCE}text\nhi\n{FENCE}\nFINAL_VAR(x)", Action(code=("FINAL_VAR('x')",))),
])
def test_code_from_a_dspy_code_field(value, expected):
    assert code_from_field(value) == expected


@pytest.mark.parametrize("value", [None, "", "  ", 3])
def test_an_empty_or_missing_code_field_is_a_problem(value):
    assert code_from_field(value).problem == "The `code` field was empty. Write Python code to run in the REPL."
