"""The graph engine's dead ends (#16): no answer at a cap, a failing cell sent again and again,
``FINAL(name)`` written as text, replies with several code blocks, and a worked example that
only splits on newlines. Scripted replies here; the real embedded model at the end (e2e)."""

from __future__ import annotations

import re

import pytest

from rlm_graph import create_rlm_graph
from sandbox.parsing import code_from_field, parse_reply
from sandbox.prompts import root_system_prompt
from tests.test_rlm_graph import cell, script, upper_lm


# -- reading a reply -------------------------------------------------------------------------


def test_parse_reply_marks_a_bare_name_and_code_from_field_keeps_it_literal():
    assert parse_reply("FINAL(answer)").final_is_name
    assert not parse_reply("FINAL('answer')").final_is_name and not parse_reply("FINAL(class)").final_is_name
    assert code_from_field("```python\nx = 1\n```\nFINAL(answer)").code == ("x = 1",)
    assert code_from_field("Thinking.\n```text\nnothing\n```\nFINAL(answer)").code == ("FINAL('answer')",)


def test_parse_reply_returns_every_block_when_asked():
    reply = "```repl\na = 1\n```\ntext\n```python\nb = 2\n```\ntrailing"
    assert parse_reply(reply).code == ("a = 1",)
    both = parse_reply(reply, max_blocks=None)
    assert both.code == ("a = 1", "b = 2") and both.kept_text == reply[:-len("\ntrailing")]
    with pytest.raises(ValueError, match="max_blocks"):
        parse_reply(reply, max_blocks=0)


# -- the worked example -------------------------------------------------------------------------


def example_search_cell() -> str:
    prompt = root_system_prompt(max_output_chars=10_000, can_recurse=False)
    return re.findall(r"```repl\n(.*?)```", prompt.split("Example of the exchange:")[1], re.DOTALL)[0]


def test_the_worked_examples_search_splits_a_context_without_newlines():
    context = "Acme and Bolt agreed to a merger in May. The Acme merger closed on 2 June 2024. " + "Filler. " * 500
    graph = create_rlm_graph(script(cell(example_search_cell() + "FINAL(hits)")), sub_model=upper_lm())
    hits = graph.invoke({"query": "q", "context": context})["answer"]
    assert hits == ["Acme and Bolt agreed to a merger in May.", "The Acme merger closed on 2 June 2024."]
