"""The graph engine's dead ends (#16): no answer at a cap, a failing cell sent again and again,
``FINAL(name)`` written as text, replies with several code blocks, and a worked example that
only splits on newlines. Scripted replies here; the real embedded model at the end (e2e)."""

from __future__ import annotations

import re

from rlm_graph import create_rlm_graph
from sandbox.prompts import root_system_prompt
from tests.test_rlm_graph import cell, script, upper_lm


# -- the worked example -------------------------------------------------------------------------


def example_search_cell() -> str:
    prompt = root_system_prompt(max_output_chars=10_000, can_recurse=False)
    return re.findall(r"```repl\n(.*?)```", prompt.split("Example of the exchange:")[1], re.DOTALL)[0]


def test_the_worked_examples_search_splits_a_context_without_newlines():
    context = "Acme and Bolt agreed to a merger in May. The Acme merger closed on 2 June 2024. " + "Filler. " * 500
    graph = create_rlm_graph(script(cell(example_search_cell() + "FINAL(hits)")), sub_model=upper_lm())
    hits = graph.invoke({"query": "q", "context": context})["answer"]
    assert hits == ["Acme and Bolt agreed to a merger in May.", "The Acme merger closed on 2 June 2024."]
