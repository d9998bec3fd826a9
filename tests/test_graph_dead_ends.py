"""The graph engine's dead ends (#16): no answer at a cap, a failing cell sent again and again,
``FINAL(name)`` written as text, replies with several code blocks, and a worked example that
only splits on newlines. Scripted replies here; the real embedded model at the end (e2e)."""

from __future__ import annotations

import re

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command

from cookbook.demo import long_document
from rlm_graph import FileContextStore, create_rlm_graph
from sandbox import Budget, Completion, LiteLLMClient
from sandbox.parsing import code_from_field, parse_reply
from sandbox.prompts import root_system_prompt
from tests.conftest import FakeLM
from tests.test_rlm_graph import cell, script, thread, upper_lm

CODE_PRINTED = "The access code for the north gate is 98321."
STOPPED = "The run has stopped"  # how the extract request begins


class ScriptedRoot:
    """A root model that keeps every chat it was sent; ``reply(messages)`` answers it."""

    model = "scripted/root"

    def __init__(self, reply):
        self.chats: list[list[dict[str, str]]] = []
        self.reply = reply

    async def acomplete(self, messages, *, max_tokens):
        self.chats.append([dict(m) for m in messages])
        return Completion(text=self.reply(messages), prompt_tokens=10, completion_tokens=10, model=self.model)


def asks_to_extract(messages) -> bool:
    return STOPPED in messages[-1]["content"]


def cells_then_extract(code: str, extracted: str = "98321") -> ScriptedRoot:
    """Sends ``code`` at every iteration, and ``extracted`` when asked for the answer at a stop."""
    return ScriptedRoot(lambda messages: extracted if asks_to_extract(messages) else cell(code))


def extract_calls(out) -> list[dict]:
    return [e for e in out["trajectory"]["events"] if e["kind"] == "lm_call" and e.get("step") == "extract"]


# -- a failing cell sent again ------------------------------------------------------------------


def outputs_of(graph, config) -> list[str]:
    return [m["content"] for m in graph.get_state(config).values["messages"] if m["content"].startswith("REPL output")]


def test_a_repeated_failing_cell_is_named_in_the_feedback():
    failing = "hits = context.split('\\n')\nprint(hits[5])"
    root = script(cell(failing), cell(failing.replace("\n", "   \n\n")), cell(failing), cell("print('other')\nhits[5]"),
                  cell("FINAL('done')"))
    graph = create_rlm_graph(root, sub_model=upper_lm(), checkpointer=InMemorySaver())
    out = graph.invoke({"query": "q", "context": "c"}, thread())
    assert out["answer"] == "done"
    first, second, third, other, _ = outputs_of(graph, thread())  # the last: the FINAL cell
    assert "IndexError" in first and "same code" not in first
    assert "failed 2 times in a row" in second and "failed 3 times in a row" in third
    assert "IndexError" in other and "same code" not in other  # different code: a new streak
    notes = [e["message"] for e in out["trajectory"]["events"] if e["kind"] == "note"]
    assert notes == ["the same failing cell ran 2 times in a row", "the same failing cell ran 3 times in a row"]


def test_a_success_between_two_failures_ends_the_streak():
    root = script(cell("1/0"), cell("print(1)"), cell("1/0"), cell("FINAL(0)"))
    graph = create_rlm_graph(root, sub_model=upper_lm(), checkpointer=InMemorySaver())
    graph.invoke({"query": "q", "context": "c"}, thread())
    assert not any("same code" in output for output in outputs_of(graph, thread()))


def test_the_repetition_count_survives_a_resume(tmp_path):
    db, store = str(tmp_path / "c.db"), FileContextStore(tmp_path / "ctx")
    with SqliteSaver.from_conn_string(db) as saver:
        graph = create_rlm_graph(script(cell("1/0"), cell("1/0")), sub_model=upper_lm(), checkpointer=saver,
                                 review="code", context_store=store)
        graph.invoke({"query": "q", "context": "c"}, thread())
        graph.invoke(Command(resume=True), thread())
    with SqliteSaver.from_conn_string(db) as saver:
        graph = create_rlm_graph(script(cell("FINAL(1)")), sub_model=upper_lm(), checkpointer=saver,
                                 review="code", context_store=store)
        graph.invoke(Command(resume=True), thread())
        assert "failed 2 times in a row" in outputs_of(graph, thread())[-1]


# -- FINAL(name) written as text ----------------------------------------------------------------


@pytest.mark.parametrize("final,expected", [
    ("FINAL(answer)", "north gate 98321"),  # a REPL variable: its value
    ("FINAL(done)", "done"),  # no such variable: the word itself
    ("FINAL('answer')", "answer"),  # quoted: the text itself
    ("FINAL(forty two)", "forty two"),  # not a name
])
def test_final_as_text_resolves_a_name_against_the_repl(final, expected):
    graph = create_rlm_graph(script(cell("answer = 'north gate 98321'"), final), sub_model=upper_lm())
    assert graph.invoke({"query": "q", "context": "c"})["answer"] == expected


def test_parse_reply_marks_a_bare_name_and_code_from_field_keeps_it_literal():
    assert parse_reply("FINAL(answer)").final_is_name
    assert not parse_reply("FINAL('answer')").final_is_name and not parse_reply("FINAL(class)").final_is_name
    assert code_from_field("```python\nx = 1\n```\nFINAL(answer)").code == ("x = 1",)
    assert code_from_field("Thinking.\n```text\nnothing\n```\nFINAL(answer)").code == ("FINAL('answer')",)


# -- replies with several code blocks -----------------------------------------------------------


TWO_BLOCKS = ("First I look.\n```repl\nhits = [p for p in context.split('. ') if 'gate' in p]\nprint(hits)\n```\n"
              "REPL output:\n['invented by the model']\n"
              "Then I ask.\n```repl\nanswer = llm_query('code? ' + hits[0])\nFINAL(answer)\n```\n"
              "REPL output:\nmore invention")


def test_every_block_of_a_reply_runs_in_order():
    graph = create_rlm_graph(script(TWO_BLOCKS), sub_model=upper_lm(), checkpointer=InMemorySaver())
    out = graph.invoke({"query": "q", "context": "The north gate code is 98321. The rest is filler."}, thread())
    assert out["answer"] == "CODE? THE NORTH GATE CODE IS 98321" and out["iterations"] == 1
    assert [e["code"].splitlines()[0] for e in out["trajectory"]["events"] if e["kind"] == "cell"] == [
        "hits = [p for p in context.split('. ') if 'gate' in p]", "answer = llm_query('code? ' + hits[0])"]
    kept = graph.get_state(thread()).values["messages"][2]["content"]
    assert kept.endswith("FINAL(answer)\n```") and "more invention" not in kept


def test_blocks_after_a_failing_block_are_not_run_and_the_feedback_says_so():
    reply = "```repl\nprint('one')\n```\n```repl\n1/0\n```\n```repl\nFINAL('never')\n```"
    graph = create_rlm_graph(script(reply, cell("FINAL('after')")), sub_model=upper_lm(),
                             checkpointer=InMemorySaver())
    out = graph.invoke({"query": "q", "context": "c"}, thread())
    assert out["answer"] == "after"
    output, _ = outputs_of(graph, thread())
    assert "[block 1 of 3]\none" in output and "[block 2 of 3]" in output and "ZeroDivisionError" in output
    assert "Block 2 failed, so the 1 block(s) after it were not run." in output and "[block 3" not in output


def test_several_blocks_survive_review_and_a_resume_in_a_fresh_graph(tmp_path):
    db, store = str(tmp_path / "c.db"), FileContextStore(tmp_path / "ctx")
    reply = "```repl\nnote = llm_query(context)\n```\nand\n```repl\nn = len(note)\n```"
    with SqliteSaver.from_conn_string(db) as saver:
        graph = create_rlm_graph(script(reply, cell("FINAL(note + str(n))")), sub_model=upper_lm(),
                                 checkpointer=saver, review="code", context_store=store)
        paused = graph.invoke({"query": "q", "context": "abc"}, thread())
        assert paused["__interrupt__"][0].value["code"] == "note = llm_query(context)\n\nn = len(note)"
        paused = graph.invoke(Command(resume=True), thread())
        assert paused["__interrupt__"][0].value["code"] == "FINAL(note + str(n))"
    never = FakeLM(lambda p: pytest.fail("a sub-call was repeated on resume"))
    with SqliteSaver.from_conn_string(db) as saver:
        graph = create_rlm_graph(script("unused"), sub_model=never, checkpointer=saver, review="code",
                                 context_store=store)
        assert graph.invoke(Command(resume=True), thread())["answer"] == "ABC3"


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
