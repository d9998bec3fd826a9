"""llm_map: the map half of map-reduce for a small model (meaning in sub-calls, counting in code), and the
chunking it shares with search."""

from __future__ import annotations

import re

import pytest

from sandbox import Budget, Trajectory
from sandbox.engine.bridge import parse_answer
from sandbox.engine.chunks import chunk_spans
from sandbox.engine.session import Session
from tests.conftest import FakeLM

RECORDS = "\n".join(f"record {i}: label={'refund' if i % 3 == 0 else 'billing'}" for i in range(300))


def count_refunds(prompt: str) -> str:
    """A sub-model that counts the refund records in the text it is given."""
    return f"{prompt.split('Text:', 1)[1].count('label=refund')}."


@pytest.fixture
def session(runner):
    opened = []

    def make(context, lm):
        opened.append(Session(variables={"context": context}, sub_lm=lm, budget=Budget(), trajectory=Trajectory("q"),
                              runner=runner))
        return opened[-1]

    yield make
    for each in opened:
        each.close()


@pytest.mark.parametrize("text", [RECORDS, RECORDS.replace("\n", " "), "x" * 10_000, ""])
def test_chunks_cover_the_text_once_in_order_within_the_size(text):
    spans = chunk_spans(text, 1000)
    assert "".join(text[start:end] for start, end in spans) == text
    assert all(0 < end - start <= 1000 for start, end in spans)
    assert all(end - start >= 500 for start, end in spans[:-1])


def test_chunks_end_at_line_ends_where_there_are_some():
    assert all(RECORDS[end - 1] == "\n" for _, end in chunk_spans(RECORDS, 1000)[:-1])


@pytest.mark.parametrize("text,value", [("42.", 42), (" 1,204 ", 1204), ("Yes", True), ("no.", False),
                                        ("3.5", 3.5), ('["a", "b"]', ["a", "b"]), ("`Paris`.", "Paris"),
                                        ("It depends", "It depends")])
def test_short_answers_are_parsed(text, value):
    assert parse_answer(text) == value


def test_a_count_over_the_context_is_exact_when_each_record_is_in_one_chunk(session):
    lm = FakeLM(count_refunds)
    s = session(RECORDS, lm)
    result = s.run_cell("counts = llm_map('How many records here have label refund? One number.', "
                        "chunk_chars=2000)\nprint(sum(counts), len(counts))", iteration=1)
    total, chunks = map(int, result.output.split())
    assert total == 100 and chunks == len(lm.calls) > 1  # 300 records, every third a refund
    assert all(re.match(r"How many records", prompt) for prompt in lm.calls)


def test_items_map_over_what_the_code_gives_and_failures_stay_in_place(session):
    def answer(prompt):
        if "boom" in prompt:
            raise RuntimeError("sub-model down")
        return "yes" if "refund" in prompt.split("Text:")[1] else "no"

    s = session("unused", FakeLM(answer))
    result = s.run_cell("print(llm_map('About a refund?', ['a refund', 'a bill', 'boom']))", iteration=1)
    assert result.output.startswith("[True, False, 'ERROR: RuntimeError")


@pytest.mark.parametrize("call,message", [
    ("llm_map('')", "instruction must be a non-empty str"),
    ("llm_map('q', 'not a list')", "items must be a list of str"),
    ("llm_map('q', chunk_chars=10)", "chunk_chars must be an int from 200"),
])
def test_argument_errors_reach_the_cell(session, call, message):
    lm = FakeLM()
    result = session(RECORDS, lm).run_cell(call, iteration=1)
    assert message in result.error and lm.calls == []


def test_the_guide_offers_llm_map_over_the_searched_variable():
    from sandbox.engine.prompts import repl_guide

    assert "consecutive chunks of `document`" in repl_guide(max_output_chars=100, can_recurse=False,
                                                            searched="document")
    assert "llm_map" not in repl_guide(max_output_chars=100, can_recurse=False, searched=None)
