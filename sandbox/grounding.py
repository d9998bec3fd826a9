"""Grounded answers: what an answer states must come from what the run read, not from the model.

Two checks an engine applies before it accepts a final answer, both code only (no LM call):

- **Look before answering** (:func:`reads_inputs`): a final answer that comes before any cell
  has read the inputs (by name, or through ``search``) is refused. A cell that feeds a slice of
  ``context`` to ``llm_query`` and answers with the result in the same cell has read it; its
  answer is then checked by grounding. A small model's typical
  failure is a first cell that feeds values it invented to ``llm_query`` and calls ``FINAL``
  in the same cell, without ever looking at ``context``.
- **Grounding** (:class:`GroundingCheck`): the answer's load-bearing tokens (numbers, quoted
  strings, codes that mix letters and digits, capitalized names) must occur in the inputs or
  in what the cells printed once one had read them. A token found nowhere is reported back as
  feedback, which is the evaluate-then-refine loop applied where it pays most. An honest
  "not found" has no such tokens and passes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from sandbox.evaluator import Evaluation

_NUMBER = re.compile(r"(?<![\w.])[-+]?\d(?:[\d,]*\d)?(?:\.\d+)?(?![\w])")
_QUOTED = re.compile(r"\"([^\"\n]{2,80})\"|“([^”\n]{2,80})”")
_CODE = re.compile(r"\b(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[A-Za-z0-9][\w-]{2,}\b")
_NAME = re.compile(r"\b[A-Z][a-z]+(?:[ \t]+[A-Z][a-z]+)*\b")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
# Capitalized words that start sentences rather than name anything.
_COMMON = frozenset("""a an and answer are as at based but by code for found from he her his how i if in is it its
none not of on or she so that the their there these they this those to total was we were what when where which who
why yes no with you your""".split())
MAX_CHECKED_TOKENS = 20  # a long prose answer is checked on its first load-bearing tokens
# An input no longer than this is one a model may have read whole (DSPy's engine shows it in full),
# so both engines apply the checks only over longer ones.
SEEN_WHOLE_CHARS = 1_000


def reads_inputs(code: str, names: Iterable[str]) -> bool:
    """Whether ``code`` reads one of the input variables ``names`` (or searches them)."""
    words = set(re.findall(r"[A-Za-z_]\w*", code))
    return bool(words & (set(names) | {"search"}))


def load_bearing_tokens(answer: str) -> list[str]:
    """The tokens of ``answer`` that carry its claim and could be invented: numbers (but single
    digits), quoted strings, letter-and-digit codes and capitalized names."""
    found: list[str] = []
    for match in _QUOTED.finditer(answer):
        found.append(match.group(1) or match.group(2))
    for pattern in (_NUMBER, _CODE):
        found += [m.group(0).strip("+") for m in pattern.finditer(answer)]
    for match in _NAME.finditer(answer):
        words = [w for w in match.group(0).split() if w.lower() not in _COMMON]
        if words:
            found.append(" ".join(words))
    unique = []
    for token in found:
        plain = _THOUSANDS.sub("", token)
        if plain not in unique and not (plain.isdigit() and len(plain) == 1):
            unique.append(plain)
    return unique[:MAX_CHECKED_TOKENS]


def _text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


class GroundingCheck:
    """Checks answers against the run's ``inputs`` and the evidence added with :meth:`add`.

    Args:
        inputs: the run's input variables by name (``context``, the query, and the rest); a token
            the answer repeats from any of them has its source.
        example_values: values of the worked examples the model was shown (names, dates). An
            answer holding one the inputs do not hold copied it from an example, even when a cell
            printed it (copied example code feeds the example's words to ``llm_query``, which
            echoes them).
    """

    def __init__(self, inputs: Mapping[str, Any], *, example_values: Iterable[str] = ()):
        self._sources = [_text_of(value) for value in inputs.values()]
        self._inputs = len(self._sources)
        self._example_values = tuple(example_values)
        self._haystack: str | None = None  # lower-cased, thousands separators dropped; built on first use

    def add(self, text: str) -> None:
        """Count ``text`` (what a cell printed once the inputs had been read) as something the run read."""
        if text:
            self._sources.append(text)
            self._haystack = None

    def _normalized(self) -> str:
        if self._haystack is None:
            self._haystack = _THOUSANDS.sub("", "\n".join(self._sources).lower())
        return self._haystack

    def missing(self, answer: Any) -> list[str]:
        """The load-bearing tokens of ``answer`` that occur in no source."""
        return self._unsourced(load_bearing_tokens(_text_of(answer)))

    def _unsourced(self, tokens: list[str]) -> list[str]:
        haystack = self._normalized()
        missing = []
        for token in tokens:
            needle = token.lower()
            # A plain substring test first: a 40 MB context is scanned by the regex only for tokens it holds.
            if needle not in haystack or not re.search(r"(?<![\w.])" + re.escape(needle) + r"(?![\w])", haystack):
                missing.append(token)
        return missing

    def copied(self, answer: Any) -> list[str]:
        """The example values that ``answer`` holds and the inputs do not (case-sensitive: example
        values are names and dates, and this scans the inputs without copying them)."""
        text = _text_of(answer)
        return [value for value in self._example_values
                if value in text and not any(value in source for source in self._sources[:self._inputs])]

    def __call__(self, answer: Any) -> Evaluation:
        """The verdict on ``answer``: passed when every load-bearing token has a source and none comes
        from a worked example; the score is the fraction that pass; the feedback names the rest."""
        copied = self.copied(answer)
        if copied:
            named = ", ".join(repr(value) for value in copied)
            return Evaluation(0.0, False, f"{named} {'comes' if len(copied) == 1 else 'come'} from the worked "
                              "example in your instructions, whose query and data are made up; it is not in "
                              "your context. Answer your own query from what your code finds in `context`.")
        tokens = load_bearing_tokens(_text_of(answer))
        missing = self._unsourced(tokens)
        if not missing:
            return Evaluation(1.0, True)
        named = ", ".join(repr(t) for t in missing[:5])
        return Evaluation(1 - len(missing) / len(tokens), False,
                          f"{named} {'does' if len(missing) == 1 else 'do'} not occur in the inputs or in anything "
                          "your code printed from them. Find where the answer is stated (search or print the "
                          "passage), or answer that it is not stated.")


def premature_answer(unseen: Iterable[str], *, finish: str) -> str:
    """The feedback for a ``finish`` call (``FINAL``, ``SUBMIT``) made before any code read ``unseen``."""
    names = ", ".join(f"`{name}`" for name in unseen)
    return (f"[Refused] {finish} came before your code had read {names}, so the answer cannot come from it. "
            "Read it first (a search, or print the lines around a keyword), then call "
            f"{finish} with what it says.")
