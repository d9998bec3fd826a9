"""The graph engine's dead ends (#16): no answer at a cap, a failing cell sent again and again,
``FINAL(name)`` written as text, replies with several code blocks, and a worked example that
only splits on newlines. Scripted replies here; the real embedded model at the end (e2e)."""

from __future__ import annotations

import re

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.store.memory import InMemoryStore
from langgraph.types import Command

from cookbook.demo import long_document
from rlm_graph import create_rlm_graph
from sandbox import Budget, BudgetExceeded, Completion, LiteLLMClient
from sandbox.engine.budget import hold_last_call
from sandbox.engine.parsing import code_from_field, parse_reply
from sandbox.engine.prompts import EXAMPLES_MARK, root_system_prompt
from sandbox.lm.clients import metered_completion
from tests.conftest import FakeLM
from tests.test_rlm_graph import cell, script, thread, upper_lm

CODE_PRINTED = "The access code for the north gate is 98321."
STOPPED = "Answer the query from the notes"  # what only the extract request says


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
    return [e for e in out["events"]["events"] if e["kind"] == "lm_call" and e.get("step") == "extract"]


# -- an answer at the iteration cap and at budget stops ---------------------------------------


def test_the_iteration_cap_ends_with_an_answer_read_from_the_printed_output():
    root = cells_then_extract(f"print({CODE_PRINTED!r})")
    out = create_rlm_graph(root, sub_model=upper_lm(), max_iterations=3).invoke({"query": "q", "context": "c"})
    assert out["stop_reason"] == "max_iterations" and out["iterations"] == 3
    assert out["answer"] == "98321" and len(extract_calls(out)) == 1
    extract_chat = root.chats[-1]
    assert len(root.chats) == 4 and asks_to_extract(extract_chat)
    request = extract_chat[-1]["content"]
    assert request.startswith("Query: q") and "stopped at max_iterations" in request
    assert request.count(CODE_PRINTED) == 3  # what each cell printed
    assert len(extract_chat) == 2 and "```repl" not in extract_chat[0]["content"]  # not the REPL protocol
    assert out["usage"]["llm_calls"] == 4


def test_extract_uses_the_call_held_from_the_start_and_never_passes_the_cap():
    root = cells_then_extract(f"print({CODE_PRINTED!r})")
    out = create_rlm_graph(root, sub_model=upper_lm(), max_iterations=10,
                           budget=Budget(max_llm_calls=3)).invoke({"query": "q", "context": "c"})
    assert out["stop_reason"] == "max_llm_calls" and out["answer"] == "98321"
    assert out["usage"]["llm_calls"] == 3 and len(root.chats) == 3 and out["iterations"] == 2


def test_a_budget_stop_inside_a_cell_extracts_from_what_the_cell_printed():
    root = cells_then_extract(f"print({CODE_PRINTED!r})\nfor i in range(100):\n    llm_query('x')")
    out = create_rlm_graph(root, sub_model=upper_lm(), budget=Budget(max_llm_calls=4)).invoke(
        {"query": "q", "context": "c"})
    assert out["stop_reason"] == "max_llm_calls" and out["answer"] == "98321"
    assert out["usage"]["llm_calls"] == 4  # root, two sub-calls, extract
    assert CODE_PRINTED in root.chats[-1][-1]["content"]


def test_extract_drops_the_oldest_exchanges_to_fit_the_tokens_held_for_it():
    root = cells_then_extract("print('x' * 3000)")
    out = create_rlm_graph(root, sub_model=upper_lm(), max_iterations=20, root_max_tokens=50,
                           budget=Budget(max_tokens=20_000)).invoke({"query": "q", "context": "c"})
    assert out["stop_reason"] == "max_tokens" and out["answer"] == "98321"
    request = root.chats[-1][-1]["content"]
    assert 0 < request.count("x" * 3000) < out["iterations"]  # the oldest outputs were left out
    assert request.startswith("Query: q") and len(request) < 20_000 // 5


def test_no_extract_when_the_run_already_has_an_answer():
    graph = create_rlm_graph(script(cell("FINAL('draft')"), cell("x = 1")), sub_model=upper_lm(),
                             evaluator=lambda q, a: (0.5, "improve it"), max_refinements=5, max_iterations=2)
    out = graph.invoke({"query": "q", "context": "c"})
    assert out["stop_reason"] == "max_iterations" and out["answer"] == "draft"
    assert extract_calls(out) == [] and out["usage"]["llm_calls"] == 2  # the held call was given back


def test_an_extract_reply_of_code_is_no_answer():
    root = cells_then_extract("x = 1", extracted=cell("FINAL(x)"))
    out = create_rlm_graph(root, sub_model=upper_lm(), max_iterations=1).invoke({"query": "q", "context": "c"})
    assert out["stop_reason"] == "max_iterations" and out["answer"] is None
    assert any(e["kind"] == "note" and "was code" in e["message"] for e in out["events"]["events"])


def test_an_extract_reply_naming_a_variable_gives_its_value():
    root = cells_then_extract("code = 98321", extracted="FINAL(code)")
    out = create_rlm_graph(root, sub_model=upper_lm(), max_iterations=1).invoke({"query": "q", "context": "c"})
    assert out["answer"] == 98321


def test_a_child_rlm_at_its_cap_gives_its_parent_an_extracted_answer():
    def reply(messages):
        if asks_to_extract(messages):
            return "child says 98321"
        if "count the words" in messages[1]["content"]:
            return cell("x = 1")  # the child never finishes
        if len(messages) == 2:
            return cell("sub = rlm_query('count the words', 'one two three')")
        return cell("FINAL(sub)")

    out = create_rlm_graph(ScriptedRoot(reply), sub_model=upper_lm(), max_depth=1, max_iterations=2).invoke(
        {"query": "q", "context": "c"})
    assert out["stop_reason"] == "final" and out["answer"] == "child says 98321"


def test_extract_survives_a_crash_and_a_resume_in_a_fresh_graph(tmp_path):
    db, store = str(tmp_path / "c.db"), InMemoryStore()

    def crashing(messages):
        if asks_to_extract(messages):
            raise ConnectionError("the provider went away")
        return cell("note = llm_query(context)\nprint(note)")

    with SqliteSaver.from_conn_string(db) as saver:
        graph = create_rlm_graph(ScriptedRoot(crashing), sub_model=upper_lm(), max_iterations=2,
                                 checkpointer=saver, store=store)
        with pytest.raises(ConnectionError):
            graph.invoke({"query": "q", "context": "abc"}, thread())
        before = graph.get_state(thread())
        assert before.next == ("extract",) and before.values["usage"]["llm_calls"] == 4  # the hold not counted

    never = FakeLM(lambda p: pytest.fail("a sub-call was repeated on resume"))
    root = cells_then_extract("unused", extracted="ABC")
    with SqliteSaver.from_conn_string(db) as saver:
        graph = create_rlm_graph(root, sub_model=never, max_iterations=2, checkpointer=saver, store=store)
        out = graph.invoke(None, thread())
    assert out["answer"] == "ABC" and out["stop_reason"] == "max_iterations"
    assert len(root.chats) == 1 and root.chats[0][-1]["content"].count("ABC") == 2  # the outputs before the crash
    assert out["usage"]["llm_calls"] == 5


def test_no_call_is_held_when_the_cap_leaves_none_beside_it():
    root = cells_then_extract("x = 1")
    out = create_rlm_graph(root, sub_model=upper_lm(), budget=Budget(max_llm_calls=1)).invoke(
        {"query": "q", "context": "c"})
    assert out["stop_reason"] == "max_llm_calls" and out["answer"] is None
    assert len(root.chats) == 1 and out["usage"]["llm_calls"] == 1  # the root got the only call
    assert any(e["kind"] == "budget" and e["message"].startswith("extract skipped")
               for e in out["events"]["events"])


def test_a_call_that_does_not_fit_its_hold_is_refused_and_the_hold_given_back(runner):
    budget = Budget(max_tokens=1_000)
    held = hold_last_call(budget)
    assert held.tokens == 200 and budget.llm_calls == 1
    with pytest.raises(BudgetExceeded, match="200 are held"):
        runner.run(metered_completion(FakeLM(), [{"role": "user", "content": "x" * 500}], budget=budget,
                                      max_tokens=10, held=held))
    assert budget.llm_calls == 0
    budget.reserve_call(tokens=1_000)  # nothing is held any more


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
    notes = [e["message"] for e in out["events"]["events"] if e["kind"] == "note"]
    assert notes == ["the same failing cell ran 2 times in a row", "the same failing cell ran 3 times in a row"]


def test_a_success_between_two_failures_ends_the_streak():
    root = script(cell("1/0"), cell("print(1)"), cell("1/0"), cell("FINAL(0)"))
    graph = create_rlm_graph(root, sub_model=upper_lm(), checkpointer=InMemorySaver())
    graph.invoke({"query": "q", "context": "c"}, thread())
    assert not any("same code" in output for output in outputs_of(graph, thread()))


def test_the_repetition_count_survives_a_resume(tmp_path):
    db, store = str(tmp_path / "c.db"), InMemoryStore()
    with SqliteSaver.from_conn_string(db) as saver:
        graph = create_rlm_graph(script(cell("1/0"), cell("1/0")), sub_model=upper_lm(), checkpointer=saver,
                                 review="code", store=store)
        graph.invoke({"query": "q", "context": "c"}, thread())
        graph.invoke(Command(resume=True), thread())
    with SqliteSaver.from_conn_string(db) as saver:
        graph = create_rlm_graph(script(cell("FINAL(1)")), sub_model=upper_lm(), checkpointer=saver,
                                 review="code", store=store)
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
              "Then I ask.\n```repl\nanswer = llm_query('code? ' + hits[0])\nFINAL(answer)\n```\n"
              "REPL output:\nmore invention")


def test_every_block_of_a_reply_runs_in_order():
    graph = create_rlm_graph(script(TWO_BLOCKS), sub_model=upper_lm(), checkpointer=InMemorySaver())
    out = graph.invoke({"query": "q", "context": "The north gate code is 98321. The rest is filler."}, thread())
    assert out["answer"] == "CODE? THE NORTH GATE CODE IS 98321" and out["iterations"] == 1
    assert [e["code"].splitlines()[0] for e in out["events"]["events"] if e["kind"] == "cell"] == [
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
    db, store = str(tmp_path / "c.db"), InMemoryStore()
    reply = "```repl\nnote = llm_query(context)\n```\nand\n```repl\nn = len(note)\n```"
    with SqliteSaver.from_conn_string(db) as saver:
        graph = create_rlm_graph(script(reply, cell("FINAL(note + str(n))")), sub_model=upper_lm(),
                                 checkpointer=saver, review="code", store=store)
        paused = graph.invoke({"query": "q", "context": "abc"}, thread())
        assert paused["__interrupt__"][0].value["code"] == "note = llm_query(context)\n\nn = len(note)"
        paused = graph.invoke(Command(resume=True), thread())
        assert paused["__interrupt__"][0].value["code"] == "FINAL(note + str(n))"
    never = FakeLM(lambda p: pytest.fail("a sub-call was repeated on resume"))
    with SqliteSaver.from_conn_string(db) as saver:
        graph = create_rlm_graph(script("unused"), sub_model=never, checkpointer=saver, review="code",
                                 store=store)
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
    return re.findall(r"```repl\n(.*?)```", prompt.split(EXAMPLES_MARK)[1], re.DOTALL)[0]


def test_the_worked_examples_search_splits_a_context_without_newlines():
    context = "Acme and Bolt agreed to a merger in May. The Acme merger closed on 2 June 2024. " + "Filler. " * 500
    graph = create_rlm_graph(script(cell(example_search_cell() + "FINAL(hits)")), sub_model=upper_lm(),
                             look_before_answer=False)  # the example's own split is under test
    hits = graph.invoke({"query": "q", "context": context})["answer"]
    assert hits == ["Acme and Bolt agreed to a merger in May.", "The Acme merger closed on 2 June 2024."]


# -- with the real embedded model (temperature 0 unless said otherwise) ---------------------------
# No wall-clock caps: on a loaded machine a max_seconds stop would skip the extract these check.

QUESTION = "What is the launch code for project Heron?"
HARD_QUESTION = "How many sentences mention the word vendor, and which project has a launch code?"


@pytest.fixture(scope="module")
def server():
    from sandbox.lm.local import LocalModelServer

    with LocalModelServer() as running:
        yield running


def real_root(server, **kwargs) -> LiteLLMClient:
    return LiteLLMClient(server.model, api_base=server.api_base, api_key="sk-local-no-key", **kwargs)


def one_line_document() -> str:
    return long_document().replace("\n", " ")


@pytest.mark.e2e
def test_real_run_at_the_iteration_cap_returns_an_extracted_answer(server):
    graph = create_rlm_graph(real_root(server, temperature=0), max_iterations=1)
    out = graph.invoke({"query": HARD_QUESTION, "context": one_line_document()})
    assert out["stop_reason"] == "max_iterations" and len(extract_calls(out)) == 1
    assert isinstance(out["answer"], str) and out["answer"].strip() and STOPPED not in out["answer"]


@pytest.mark.e2e
def test_real_run_stopped_by_the_call_cap_answers_from_what_the_repl_printed(server):
    graph = create_rlm_graph(real_root(server, temperature=0), max_iterations=10, budget=Budget(max_llm_calls=2))
    out = graph.invoke({"query": QUESTION, "context": one_line_document()})
    assert out["stop_reason"] == "max_llm_calls" and out["usage"]["llm_calls"] == 2
    printed = " ".join(e["output"] for e in out["events"]["events"] if e["kind"] == "cell")
    # The first cell printed the needle; the answer at the cap, on the call held for it, carries it.
    assert "7291" in printed and "7291" in str(out["answer"])


@pytest.mark.e2e
def test_real_model_following_the_worked_example_finds_the_needle_without_newlines(server):
    graph = create_rlm_graph(real_root(server, temperature=0), max_iterations=4)
    out = graph.invoke({"query": QUESTION, "context": one_line_document()})
    assert "7291" in str(out["answer"])


@pytest.mark.e2e
def test_real_run_names_every_repeated_failing_cell_and_ends_with_an_answer(server):
    graph = create_rlm_graph(real_root(server), max_iterations=6)  # sampled
    out = graph.invoke({"query": QUESTION, "context": one_line_document()})
    assert out["answer"] is not None and str(out["answer"]).strip()
    events = out["events"]["events"]
    cells = [e for e in events if e["kind"] == "cell"]
    repeats = sum(1 for a, b in zip(cells, cells[1:]) if a["error"] and b["error"] and a["code"] == b["code"])
    assert len([e for e in events if e["kind"] == "note" and "times in a row" in e["message"]]) == repeats
