"""Passage search over an RLM context: BM25 over overlapping windows, built once, on the first search.

The context is cut into passages of at most ``PASSAGE_CHARS`` characters that overlap by
about ``OVERLAP_CHARS``, each cut made at a line end where the window has one, else at a
sentence end, else at a space, else (text with no spaces at all) at the window's edge. A
list context is cut document by document, so no passage spans two documents. The index
keeps only the passages' spans; the text of a hit is sliced from the context when it is
returned, with its character offset so the model can read around it.

The library is ``bm25s``, chosen over ``rank-bm25`` by measurement (benchmarks/search_bench.py,
results in benchmarks/results/search.md). At 10M characters (18,241 passages) ``bm25s`` takes a
little longer to build (2.5 s against 1.9 s) and peaks higher while building (65 MB traced
against 49 MB), but then holds half the memory (16 MB against 33 MB) and answers a query in
0.2 ms against 23 ms: ``rank-bm25`` scores every passage in a Python loop, so its queries slow
down as the context grows, while ``bm25s`` reads only the query words' entries of a sparse
matrix. The index is built once and a cell may search it many times, so query time is what
counts. ``bm25s`` is under active development and needs only numpy.
"""

from __future__ import annotations

import threading
from typing import Any, NamedTuple

import bm25s
import numpy as np

from sandbox.engine.chunks import cut_point
from sandbox.engine.context import Context

PASSAGE_CHARS = 800
OVERLAP_CHARS = 200
DEFAULT_K = 5
MAX_K = 50
MAX_QUERY_CHARS = 10_000
STOPWORDS = "en"


class Span(NamedTuple):
    """Where one passage lies: ``context[start:end]``, or ``context[doc][start:end]`` for a list context."""

    doc: int | None
    start: int
    end: int


def passage_spans(text: str) -> list[tuple[int, int]]:
    """Overlapping windows of ``text``, as ``(start, end)`` offsets, in order.

    Each window is at most ``PASSAGE_CHARS`` characters and at least half that (but the last);
    it ends at a line end, sentence end or space when its second half has one. The next window
    starts at such a boundary between ``OVERLAP_CHARS`` and half that before the previous one
    ends (``OVERLAP_CHARS`` before it where there is none).

    Args:
        text: the text to cut.

    Returns:
        The windows' spans; none for an empty text.
    """
    size, overlap = PASSAGE_CHARS, OVERLAP_CHARS
    spans, start, n = [], 0, len(text)
    while start < n:
        end = n if n - start <= size else cut_point(text, start + size // 2, start + size, start + size)
        spans.append((start, end))
        if end == n:
            break
        start = cut_point(text, end - overlap, end - overlap // 2, end - overlap)
    return spans


def check_search_args(query: Any, k: Any) -> None:
    """Raise the error a model should see for a wrong ``search(query, k)`` call.

    Raises:
        TypeError: ``query`` is not a str, or ``k`` is not an int.
        ValueError: ``query`` is blank or longer than ``MAX_QUERY_CHARS``, or ``k`` is outside ``1..MAX_K``.
    """
    if not isinstance(query, str):
        raise TypeError(f"search(query, k={DEFAULT_K}): query must be a str of words to look for, "
                        f"got {type(query).__name__}")
    if not query.strip():
        raise ValueError("search(query, k): query is empty; pass the words to look for, e.g. search('merger date')")
    if len(query) > MAX_QUERY_CHARS:
        raise ValueError(f"search(query, k): query is {len(query):,} characters; pass a few words to look for "
                         f"(at most {MAX_QUERY_CHARS:,} characters), not a text")
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"search(query, k): k must be an int from 1 to {MAX_K}, got {type(k).__name__}")
    if not 1 <= k <= MAX_K:
        raise ValueError(f"search(query, k): k must be from 1 to {MAX_K}, got {k}")


class PassageIndex:
    """BM25 search over the passages of one context; the index is built on the first search, once.

    Thread-safe: concurrent first searches build the index once.
    """

    def __init__(self, context: Context):
        self.context = context
        self._spans: list[Span] | None = None
        self._bm25: bm25s.BM25 | None = None
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        """Whether the index has been built (by an earlier search)."""
        return self._spans is not None

    def _text(self, span: Span) -> str:
        document = self.context if span.doc is None else self.context[span.doc]
        return document[span.start:span.end]

    def _index(self) -> tuple[list[Span], bm25s.BM25 | None]:
        with self._lock:
            if self._spans is None:
                if isinstance(self.context, str):
                    spans = [Span(None, *s) for s in passage_spans(self.context)]
                else:
                    spans = [Span(i, *s) for i, doc in enumerate(self.context) for s in passage_spans(doc)]
                if spans:
                    self._bm25 = bm25s.BM25()
                    tokens = bm25s.tokenize([self._text(s) for s in spans], stopwords=STOPWORDS, show_progress=False)
                    self._bm25.index(tokens, show_progress=False)
                self._spans = spans
            return self._spans, self._bm25

    def search(self, query: str, k: int = DEFAULT_K) -> list[dict[str, Any]]:
        """The ``k`` passages that best match ``query`` (BM25), best first.

        Args:
            query: words to look for; case does not matter, and common English words count for nothing.
            k: how many passages to return at most, 1 to ``MAX_K``.

        Returns:
            One dict per passage that shares a word with the query: ``offset`` (its first character's
            index in the context, or in its document), ``text`` (``context[offset:offset + len(text)]``),
            ``score`` (a float; higher is better) and, for a list context, ``doc`` (the document's
            index). Empty when no passage matches.

        Raises:
            TypeError, ValueError: the arguments are wrong (see :func:`check_search_args`), or the
                query has no word the index can use.
        """
        check_search_args(query, k)
        words = bm25s.tokenize(query, stopwords=STOPWORDS, return_ids=False, show_progress=False)[0]
        if not words:
            raise ValueError(f"search(query, k): {query!r} has no word to search for (words of two or more "
                             "letters or digits, not common words like 'the'); pass names or rare words from the query")
        spans, bm25 = self._index()
        if bm25 is None:
            return []
        scores = bm25.get_scores(words)
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        ranked = sorted((i for i in top.tolist() if scores[i] > 0), key=lambda i: (-scores[i], i))
        return [self._hit(spans[i], float(scores[i])) for i in ranked]

    def _hit(self, span: Span, score: float) -> dict[str, Any]:
        hit: dict[str, Any] = {"offset": span.start, "text": self._text(span), "score": round(score, 4)}
        if span.doc is not None:
            hit["doc"] = span.doc
        return hit
