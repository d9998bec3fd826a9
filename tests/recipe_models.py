"""Scripted stand-ins for the cookbook recipes' models, so every recipe runs offline in tests.

A recipe takes its models as keyword arguments of ``main`` (by default it builds real ones from
its command line); tests pass these instead. They play a capable model on each recipe's task:

- the needle question (``cookbook.demo.long_document``): the root writes :data:`NEEDLE_CELLS`
  (chunk the context, ask a sub-model about each chunk, keep the hits), the sub-model answers
  with :func:`sentence_with_a_number`;
- the optimizer recipe's toy task: :func:`taught_lm` finds the code only when taught.
"""

from __future__ import annotations

import re

import dspy
from langchain_core.language_models import BaseChatModel

from tests.dspy_lms import fields, function_lm, stepwise_rlm_lm, stepwise_rlm_reply, text_lm
from tests.scripted_chat import FunctionChatModel, scripted_root

# The code a capable root model writes for the needle question: chunk, ask, keep hits.
NEEDLE_CELLS = (
    "print(len(context))\nchunks = [context[i:i + 20000] for i in range(0, len(context), 20000)]\nprint(len(chunks))",
    "answers = llm_query_batched(['Quote the sentence with a launch code, or say none:\\n' + c for c in chunks])\n"
    "hits = [a for a in answers if a != 'none']\nprint(hits)",
    "FINAL(hits[0] if hits else 'not found')",
)

# The optimizer recipe's toy task: the code that solves it, and the word that teaches it.
GOOD_CODE = "import re\nSUBMIT(answer=re.search(r'code: (\\d+)', context).group(1))"
LESSON = "regular expression"


def sentence_with_a_number(text: str) -> str:
    """What the scripted sub-model answers: the first sentence of ``text`` with a digit, else 'none'."""
    hit = re.search(r"[^.\n]*\d[^.\n]*\.", text)
    return hit.group(0).strip() if hit else "none"


def needle_chat_models() -> tuple[BaseChatModel, BaseChatModel]:
    """(model, sub_model) for the LangGraph recipes: LangChain chat models answering the needle question."""
    return scripted_root(*NEEDLE_CELLS), FunctionChatModel(reply=sentence_with_a_number)


def needle_sub_lm() -> dspy.LM:
    """The DSPy sub-LM of the needle question."""
    return text_lm(sentence_with_a_number)


def needle_dspy_lms() -> tuple[dspy.LM, dspy.LM]:
    """(lm, sub_lm) for cookbook/dspy_long_document_qa.py: rlm_dspy.RLM's root and sub-LM on the needle question."""
    return stepwise_rlm_lm(NEEDLE_CELLS), needle_sub_lm()


def research_and_report_lm() -> dspy.LM:
    """The root LM of cookbook/dspy_composed_program.py, for both of its modules: the RLM's steps on
    the needle question, and a ChainOfThought report that quotes the finding."""
    rlm_reply = stepwise_rlm_reply(NEEDLE_CELLS)

    def reply(messages):
        if "`report`" in messages[0][1]:
            finding = re.search(r"\[\[ ## finding ## \]\]\n(.*)", messages[-1][1]).group(1)
            return fields(reasoning="The RLM found it.", report=f"Report: {finding}")
        return rlm_reply(messages)

    return function_lm(reply, model="scripted/root")


def taught_lm(*, always_right: bool = False) -> dspy.LM:
    """The optimizer recipe's root LM: right when taught (a demo using re.search, or an instruction
    naming a regular expression), or always (a teacher)."""

    def reply(messages):
        system, prompt = messages[0][1], "\n".join(text for _, text in messages)
        if "extract the final outputs" in system:
            return fields(answer="unknown")
        taught = always_right or "re.search" in prompt or LESSON in system
        return fields(reasoning="find the code", code=GOOD_CODE if taught else "SUBMIT(answer='unknown')")

    return function_lm(reply, model="scripted/task")
