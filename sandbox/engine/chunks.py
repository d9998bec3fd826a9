"""Cutting a long text into pieces at natural boundaries: line ends, else sentence ends, else spaces.

Shared by ``search`` (overlapping passages) and ``llm_map`` (consecutive chunks, so that a
count over the chunks counts each record once). Works on a text with no newlines, and on
one with no spaces at all (then at the window's edge).
"""

from __future__ import annotations

SENTENCE_ENDS = (". ", "? ", "! ", "; ", "\u3002")


def cut_point(text: str, lo: int, hi: int, default: int) -> int:
    """The best place in ``[lo, hi]`` to start a new piece of ``text``: after the last line end
    there, else after the last sentence end, else after the last space, else ``default``."""
    newline = text.rfind("\n", lo, hi)
    if newline >= 0:
        return newline + 1
    sentence = max((i + len(mark) for mark in SENTENCE_ENDS if (i := text.rfind(mark, lo, hi)) >= 0), default=-1)
    if sentence >= 0:
        return sentence
    space = max(text.rfind(" ", lo, hi), text.rfind("\t", lo, hi))
    return space + 1 if space >= 0 else default


def chunk_spans(text: str, size: int) -> list[tuple[int, int]]:
    """Consecutive, non-overlapping pieces of ``text`` of at most ``size`` characters (at least half
    that, but the last), as ``(start, end)`` offsets that together cover the text.

    Args:
        text: the text to cut.
        size: the most characters in one piece (>= 2).

    Returns:
        The pieces' spans, in order; none for an empty text.
    """
    spans, start, n = [], 0, len(text)
    while start < n:
        end = n if n - start <= size else cut_point(text, start + size // 2, start + size, start + size)
        spans.append((start, end))
        start = end
    return spans
