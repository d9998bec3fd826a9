"""The root LM's instructions: how the REPL works, with one worked example (small models need it)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from sandbox.boundary.guards import ALLOWED_MODULES

EXAMPLES_MARK = "Example of the exchange"  # what starts the examples; tests look for it
# A small model copies an example's values as its own answer; grounding refuses an answer that
# holds one of these unless the context holds it too.
EXAMPLE_VALUES = ("Acme", "Bolt", "2 June 2024")
EXAMPLES = EXAMPLES_MARK + ''':

user: Query: When did the Acme merger close?
`context` is a str of 912,331 characters (1 line).
assistant: I will split the context into sentences, which works whatever its line breaks are, check that \
the split worked, and search the pieces for a name from the query, in lower case.
```repl
import re
pieces = re.split(r"(?<=[.!?])\\s+|\\n+", context)
print(len(pieces), max(len(p) for p in pieces))
hits = [p for p in pieces if "acme" in p.lower()]
print(len(hits))
print(hits[:5])
```
user: REPL output:
20412 388
3
['Acme and Bolt agreed to a merger in May.', 'The Acme merger closed on 2 June 2024.', 'Acme hired staff.']
assistant: The answer is in the hits; I ask llm_query to read them and finish.
```repl
answer = llm_query("Answer briefly. When did the Acme merger close? Text: " + " ".join(hits))
print(answer)
FINAL(answer)
```'''


def describe_tools(tools: Mapping[str, Callable[..., Any]]) -> str:
    """One line per user tool: its signature and the first line of its docstring."""
    lines = []
    for name, fn in sorted(tools.items()):
        try:
            signature = str(inspect.signature(fn))
        except (TypeError, ValueError):
            signature = "(...)"
        doc = (inspect.getdoc(fn) or "").strip().splitlines()
        lines.append(f"- `{name}{signature}`" + (f": {doc[0]}" if doc else ""))
    return "\n".join(lines)


def repl_guide(*, max_output_chars: int, can_recurse: bool, tools: Mapping[str, Callable[..., Any]] = {},
               rules: str | None = None, searched: str | None = "context") -> str:
    """What the REPL offers and refuses; shared by every engine so the LM sees one contract.
    ``rules`` describes another interpreter's runtime in place of :func:`sandbox_rules`;
    ``searched`` names the variable ``search`` ranks (``None``: there is no ``search``)."""
    recursion = ("- `rlm_query(prompt, context=None)` -> str: give a sub-problem (and optionally a str "
                 "context) to a child RLM that has its own REPL. Use it for hard sub-problems only.\n"
                 if can_recurse else "")
    search = ("" if "search" in tools or searched is None else
              f"- `search(query, k=5)` -> list[dict]: the k passages of `{searched}` that best match the words in "
              f"`query`, best first: {{'offset', 'text', 'score'}} (and 'doc' if `{searched}` is a list). Slice "
              f"`{searched}` at an offset to read around a hit.\n")
    mapping = ("" if "llm_map" in tools or searched is None else
               f"- `llm_map(instruction, items=None)` -> list: asks `instruction` about each item at once (default: "
               f"consecutive chunks of `{searched}`); the answers come back parsed (numbers, yes/no as True/False). "
               f"Count and combine them in code, e.g. `sum(llm_map('How many records here are about refunds? "
               f"Answer with one number.'))`.\n")
    user_tools = f"Other functions you can call:\n{describe_tools(tools)}\n" if tools else ""
    return f"""The REPL gives you:
- `context`: the data to work on (described in the query message). Never print all of it.
- `llm_query(prompt)` -> str: ask a language model about text you include in the prompt (it cannot see \
`context`). Keep each prompt to a few thousand characters.
- `llm_query_batched(prompts)` -> list[str]: many `llm_query` calls at once, answers in the same order. \
Prefer it to a loop of `llm_query`.
{recursion}{search}{mapping}- `FINAL(answer)`: finish with `answer`. `FINAL_VAR(name)`: finish with the variable called `name`.
- `print(...)`: output longer than {max_output_chars:,} characters is cut in the middle; print summaries \
and slices.
{user_tools}{sandbox_rules() if rules is None else rules}"""


def sandbox_rules() -> str:
    """What the restricted REPL allows and refuses, in two sentences for an LM."""
    return (f"Variables persist between your code blocks. Allowed imports: {', '.join(sorted(ALLOWED_MODULES))}.\n"
            'Not allowed: names or attributes starting with "_", open/exec/eval, other imports, `match`, '
            "`nonlocal`, `async`, `with` on your own classes.")


def root_system_prompt(*, max_output_chars: int, can_recurse: bool,
                       tools: Mapping[str, Callable[..., Any]] = {}, instructions: str | None = None) -> str:
    """The system prompt of the text-protocol engine (LangGraph): guide, protocol and example."""
    lead = instructions or ("You answer a query about a context that is too large to read at once. The context "
                            "is loaded in a Python REPL; you work on it by writing code.")
    return f"""{lead}

Reply with a short thought and one ```repl code block. You will see what it printed. Repeat until you \
know the answer, then call FINAL(answer) in a code block. Write FINAL only after you have seen the output \
that supports it. Check the shape of what you split before you rely on it: one piece, or pieces of many \
thousand characters, mean the split did not work; split another way, e.g. into chunks \
`[context[i:i + 20000] for i in range(0, len(context), 20000)]`. When a cell fails, change the code; the \
same code fails the same way again.

{repl_guide(max_output_chars=max_output_chars, can_recurse=can_recurse, tools=tools)}

{EXAMPLES}"""


def query_message(query: str, context_description: str) -> str:
    return f"Query: {query}\n{context_description}\nStart by looking at the context with code."


def output_message(outputs: list[str]) -> str:
    body = "\n\n".join(outputs) if outputs else "(the code printed nothing)"
    return f"REPL output:\n{body}\n\nContinue with one ```repl block, or call FINAL(answer) if you are done."


def repeated_failure_note(count: int) -> str:
    """What follows the error of a cell that failed ``count`` times in a row with the same code."""
    return (f"This is the same code that already failed; it has now failed {count} times in a row. Running "
            "it again will fail again: read the error, then change the code or take another approach.")


EXTRACT_SYSTEM_PROMPT = "You answer questions from notes."


def extract_request(query: str, notes: list[str], stopped_by: str) -> str:
    """The one request of a run that stopped without an answer: the query and what the REPL said.

    A digest, not the conversation: in the conversation small models go on writing code, or
    repeat the request back.

    Args:
        query: the run's query.
        notes: what the REPL (and reviewers, evaluators, parse errors) told the root LM, oldest first.
        stopped_by: the limit the run stopped at.

    Returns:
        The user message to send.
    """
    body = "\n---\n".join(notes) if notes else "(nothing was printed)"
    return (f"Query: {query}\n\nNotes (what a program printed while it worked on the query, until it stopped "
            f"at {stopped_by}):\n{body}\n\nAnswer the query from the notes, in one or two sentences. If the "
            "notes do not show the answer, say that it was not found.")
