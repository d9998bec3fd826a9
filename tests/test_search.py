"""search(query, k): BM25 passages of the context with their offsets, indexed once per Session, on the host."""

from __future__ import annotations

import json
import threading

import bm25s
import pytest

from sandbox.search import MAX_K, OVERLAP_CHARS, PASSAGE_CHARS, PassageIndex, passage_spans

RARE = "quetzalcoatlus"


def haystack(lines: int = 400, needle_at: int | None = None) -> str:
    """Lines of common words, with ``RARE`` in line ``needle_at``."""
    rows = [f"line {i}: the river carries boats and the boats carry grain to the market." for i in range(lines)]
    if needle_at is not None:
        rows[needle_at] = f"line {needle_at}: a {RARE} skeleton lies by the river market."
    return "\n".join(rows)


def assert_hits_point_into(context, hits):
    for hit in hits:
        document = context if "doc" not in hit else context[hit["doc"]]
        assert document[hit["offset"]:hit["offset"] + len(hit["text"])] == hit["text"]


@pytest.fixture
def builds(monkeypatch):
    """How many BM25 indexes were built."""
    count = [0]
    index = bm25s.BM25.index

    def counting(self, *args, **kwargs):
        count[0] += 1
        return index(self, *args, **kwargs)

    monkeypatch.setattr(bm25s.BM25, "index", counting)
    return count


# -- passages ---------------------------------------------------------------------------

def test_passages_overlap_cover_the_text_and_end_at_line_ends():
    text = haystack()
    spans = passage_spans(text)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    for (start, end), (next_start, _) in zip(spans, spans[1:]):
        assert PASSAGE_CHARS // 2 <= end - start <= PASSAGE_CHARS
        assert text[end - 1] == "\n" and text[next_start - 1] == "\n"  # whole lines
        assert start < next_start < end and end - next_start <= OVERLAP_CHARS  # they overlap
    hits = PassageIndex(text).search("river boats grain", k=MAX_K)
    assert len(hits) == MAX_K
    assert_hits_point_into(text, hits)


def test_a_context_without_newlines_is_cut_at_sentences_then_anywhere():
    sentences = " ".join(f"Sentence {i} names item {i}." for i in range(300))
    spans = passage_spans(sentences)
    assert len(spans) > 5 and all(sentences[end - 2:end] == ". " for _, end in spans[:-1])
    blob = "x" * 5000
    assert passage_spans(blob)[:3] == [(0, PASSAGE_CHARS), (PASSAGE_CHARS - OVERLAP_CHARS, 2 * PASSAGE_CHARS - OVERLAP_CHARS),
                                       (2 * (PASSAGE_CHARS - OVERLAP_CHARS), 3 * PASSAGE_CHARS - 2 * OVERLAP_CHARS)]
    assert passage_spans(blob)[-1][1] == 5000 and passage_spans("") == []
    context = blob + f" {RARE} " + blob
    (hit,) = PassageIndex(context).search(RARE)
    assert RARE in hit["text"]
    assert_hits_point_into(context, [hit])


def test_a_list_context_gives_each_hit_its_document_and_offset_there():
    docs = [haystack(40), "", haystack(40, needle_at=30), "short note on grain"]
    hits = PassageIndex(docs).search(f"{RARE} grain", k=MAX_K)
    assert hits[0]["doc"] == 2 and RARE in hits[0]["text"] and hits[0]["offset"] > 0
    assert {hit["doc"] for hit in hits} == {0, 2, 3}
    assert_hits_point_into(docs, hits)
    assert PassageIndex(["", ""]).search("grain") == [] and PassageIndex("").search("grain") == []


# -- ranking ----------------------------------------------------------------------------

def test_the_passage_with_the_rare_term_comes_first_and_scores_fall():
    context = haystack(needle_at=250)
    hits = PassageIndex(context).search(f"river market {RARE}", k=8)
    assert len(hits) == 8 and RARE in hits[0]["text"]
    assert sum(RARE in hit["text"] for hit in hits[1:]) <= 1  # at most the overlapping neighbour
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True) and all(isinstance(s, float) and s > 0 for s in scores)
    assert PassageIndex(context).search("unicorn") == []  # no passage shares a word: nothing, not noise
    json.dumps(hits)  # plain values only: they cross into the sandbox


# -- arguments --------------------------------------------------------------------------

@pytest.mark.parametrize("args,error,match", [
    ((None,), TypeError, "query must be a str"),
    (("   ",), ValueError, "query is empty"),
    (("river", 0), ValueError, "k must be from 1 to 50, got 0"),
    (("river", MAX_K + 1), ValueError, "k must be from 1 to 50"),
    (("river", True), TypeError, "k must be an int"),
    (("river", 2.0), TypeError, "k must be an int"),
    (("the and of",), ValueError, "has no word to search for"),
])
def test_wrong_arguments_are_named_for_the_model(args, error, match, builds):
    with pytest.raises(error, match=match):
        PassageIndex(haystack()).search(*args)
    assert builds[0] == 0  # refused before any index is built



def test_concurrent_first_searches_build_one_index(builds):
    index, answers = PassageIndex(haystack(needle_at=3)), []
    threads = [threading.Thread(target=lambda: answers.append(index.search(RARE))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert builds[0] == 1 and len(answers) == 8 and all(a == answers[0] for a in answers)
