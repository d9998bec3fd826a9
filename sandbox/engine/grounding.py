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
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from sandbox.engine.evaluator import Evaluation

_NUMBER = re.compile(r"(?<![\w.])[-+]?\d(?:[\d,]*\d)?(?:\.\d+)?(?![\w])")
_QUOTED = re.compile(r"\"([^\"\n]{2,80})\"|“([^”\n]{2,80})”")
_CODE = re.compile(r"\b(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[A-Za-z0-9][\w-]{2,}\b")
_NAME = re.compile(r"\b[A-Z][a-z]+(?:[ \t]+[A-Z][a-z]+)*\b")
# A thousands separator: a comma after a digit and before three (the comma first: the scan looks for commas).
_THOUSANDS = re.compile(r",(?<=\d,)(?=\d{3}\b)")
# Capitalized words that start sentences rather than name anything.
_COMMON = frozenset("""a an and answer are as at based but by code for found from he her his how i if in is it its
none not of on or she so that the their there these they this those to total was we were what when where which who
why yes no with you your""".split())
MAX_CHECKED_TOKENS = 20  # a long prose answer is checked on its first load-bearing tokens
# A long source is normalized this much at a time, never as a whole copy: a window, its lower-cased
# copy and that without separators are held at once, 3 MB of the host's peak in 1 MiB windows.
WINDOW_CHARS = 1 << 16
# How near a window's cut edge its normalized text may differ from the whole's (the separator
# pattern looks one character back and four ahead; a token's boundaries one each way).
_EDGE_CHARS = 8
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


def _sources_of(value: Any) -> list[str]:
    """The texts an input is searched as: a str itself, each str of a list of str (not a JSON copy
    of the list), else its JSON."""
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return list(value)
    return [_text_of(value)]


def _windows(text: str, margin: int) -> Iterator[tuple[str, bool, bool]]:
    """``text`` in overlapping windows of about ``WINDOW_CHARS``, each lower-cased with thousands
    separators dropped, with whether it starts and ends ``text``. Windows overlap by ``margin``
    characters, so a match spanning fewer than ``margin - 32`` of them lies whole inside one
    window, ``_EDGE_CHARS`` away from its cut edges."""
    if len(text) <= WINDOW_CHARS:
        yield _THOUSANDS.sub("", text.lower()), True, True
        return
    for start in range(0, len(text), WINDOW_CHARS):
        end = start + WINDOW_CHARS + margin
        yield _THOUSANDS.sub("", text[start:end].lower()), start == 0, end >= len(text)
        if end >= len(text):
            return


def _found(needle: str, window: tuple[str, bool, bool]) -> bool:
    """Whether ``needle`` occurs as a whole token in ``window``, away from its cut edges (there, the
    characters around it were cut off; the next window holds it whole)."""
    text, first, last = window
    if needle not in text:
        return False
    low, high = (0 if first else _EDGE_CHARS), (len(text) if last else len(text) - _EDGE_CHARS)
    pattern = re.compile(r"(?<![\w.])" + re.escape(needle) + r"(?![\w])")
    return any(low <= m.start() and m.end() <= high for m in pattern.finditer(text))


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
        # The inputs themselves, never a joined or lower-cased copy (a 100 MB context stays one).
        self._sources = [text for value in inputs.values() for text in _sources_of(value)]
        self._inputs = len(self._sources)
        self._example_values = tuple(example_values)

    def add(self, text: str) -> None:
        """Count ``text`` (what a cell printed once the inputs had been read) as something the run read."""
        if text:
            self._sources.append(text)

    def missing(self, answer: Any) -> list[str]:
        """The load-bearing tokens of ``answer`` that occur in no source."""
        return self._unsourced(load_bearing_tokens(_text_of(answer)))

    def _unsourced(self, tokens: list[str]) -> list[str]:
        """The tokens found in no source, each compared lower-cased, thousands separators dropped.

        Sources are normalized a window at a time (a long one never as a whole copy); a plain
        substring test comes first, so a 40 MB context is scanned by the regex only for tokens it holds.
        """
        needles = {token: token.lower() for token in tokens}
        # A needle of n characters spans at most 2n of a source (with the separators it dropped).
        margin = 2 * max((len(needle) for needle in needles.values()), default=0) + 64
        missing = dict(needles)
        for source in self._sources:
            for window in _windows(source, margin):
                for token, needle in list(missing.items()):
                    if _found(needle, window):
                        del missing[token]
                if not missing:
                    return []
        return [token for token in tokens if token in missing]

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
