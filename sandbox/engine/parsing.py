"""Reading the root LM's reply: code blocks to run, or a final answer written as text."""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass

CODE_TAGS = frozenset({"repl", "python", "py", "python3", ""})
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_FINAL_TEXT = re.compile(r"^[ \t]*FINAL(_VAR)?\((.*)\)[ \t]*$", re.MULTILINE | re.DOTALL)
# A line where the model starts writing the next turn itself ("user: REPL output: ..."), outside code.
_NEXT_TURN = re.compile(r"^[ \t]*(?:user[ \t]*:|REPL output[ \t]*:)", re.MULTILINE | re.IGNORECASE)


@dataclass(frozen=True)
class Action:
    """What a reply asks for: ``code`` to run, or a ``final`` answer, or a ``problem`` to report back.

    ``final_is_name`` marks a ``FINAL(x)`` written as text with ``x`` unquoted and a Python
    identifier: ``x`` may be the name of a REPL variable rather than the answer itself.
    """

    code: tuple[str, ...] = ()
    final: str | None = None
    final_var: str | None = None
    problem: str | None = None
    kept_text: str | None = None  # the reply up to the end of the last block that runs: what history should keep
    final_is_name: bool = False


def parse_reply(text: str, *, max_blocks: int | None = 1) -> Action:
    """What a root LM reply asks for: its code blocks, else a final answer written as text.

    Code blocks are those tagged repl/python (or untagged). Without code, a line ``FINAL(...)``
    or ``FINAL_VAR(name)`` outside any block is the answer.

    Args:
        text: the reply.
        max_blocks: how many code blocks to return, in order (``None``: all of them).

    Returns:
        The action; ``kept_text`` is the reply up to the end of the last block returned.

    Raises:
        ValueError: ``max_blocks`` is not ``None`` or an integer >= 1.
    """
    if max_blocks is not None and (isinstance(max_blocks, bool) or not isinstance(max_blocks, int)
                                   or max_blocks < 1):
        raise ValueError(f"max_blocks must be None or an integer >= 1, got {max_blocks!r}")
    if not isinstance(text, str) or not text.strip():
        return Action(problem="Your reply was empty. Reply with a ```repl code block.")
    text = before_invented_turn(text)
    if not text.strip():
        return Action(problem="Your reply began with a made-up REPL output. Reply with a ```repl code block; "
                              "the REPL's real output comes in the next message.")
    blocks = [(match.group(1).lower(), match.group(2), match.end()) for match in _FENCE.finditer(text)]
    runnable = [(body, end) for tag, body, end in blocks if tag in CODE_TAGS and body.strip()][:max_blocks]
    if runnable:
        # Only the reply up to the last block that runs is kept: models (small ones especially)
        # keep writing past it, inventing the REPL's output and more code.
        return Action(code=tuple(body.strip("\n") for body, _ in runnable), kept_text=text[:runnable[-1][1]])
    match = _FINAL_TEXT.search(without_code_blocks(text))
    if match:
        value = match.group(2).strip()
        if match.group(1):
            return Action(final_var=value.strip("'\""))
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            return Action(final=value[1:-1])
        return Action(final=value, final_is_name=value.isidentifier() and not keyword.iskeyword(value))
    if blocks:
        tags = ", ".join(sorted({t or "untagged" for t, _, _ in blocks}))
        return Action(problem=f"Your code block was tagged {tags}; only ```repl or ```python blocks are "
                              "run. Put the code in such a block.")
    return Action(problem="Your reply had no ```repl code block and no FINAL(answer). "
                          "Write code in a ```repl block, or call FINAL(answer).")


def before_invented_turn(text: str) -> str:
    """``text`` up to where the model starts writing the next turn itself (``user:``, ``REPL output:``).

    Small models go on past their code, inventing what the REPL printed and answering from that;
    nothing after that point is the model's own turn, so none of it runs or counts as an answer.
    """
    fences = [match.span() for match in _FENCE.finditer(text)]
    for turn in _NEXT_TURN.finditer(text):
        if not any(start <= turn.start() < end for start, end in fences):
            return text[:turn.start()]
    return text


def without_code_blocks(text: str) -> str:
    """``text`` with its fenced blocks (whatever their tag) cut out."""
    return _FENCE.sub("", text)


def code_from_field(value: object) -> Action:
    """The code of a structured ``code`` output (DSPy): fenced or bare; ``None``, empty or a
    non-Python fence becomes a ``problem`` to report back instead of a crash."""
    if not isinstance(value, str) or not value.strip():
        return Action(problem="The `code` field was empty. Write Python code to run in the REPL.")
    if "```" not in value:
        return Action(code=(value.strip("\n"),))
    action = parse_reply(value)
    if action.final_var is not None:
        return Action(code=(f"FINAL_VAR({action.final_var!r})",))
    if action.final is not None:
        return Action(code=(f"FINAL({action.final!r})",))
    return action
