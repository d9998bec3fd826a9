"""BM25 libraries for ``search`` compared; results go to benchmarks/results/search.json and search.md.

    python benchmarks/search_bench.py [--quick]

For ``bm25s`` and ``rank-bm25`` at 1M and 10M characters of generated text (Zipf-distributed
made-up words in sentences and lines), each in a fresh process: the time to build the index
from the passages (tokenizing included, with the same tokens for both), the mean time of one
query (3 words, scoring every passage and taking the top 5), the peak and retained memory of
building it (tracemalloc, in a second process, since tracing slows the build) and the growth
of the process's peak RSS. The passages are those ``sandbox.engine.search`` cuts; cutting them is
timed once per size. ``--quick`` runs 1M only. ``rank-bm25`` is not a dependency of the
package: install it first (``pip install rank-bm25``).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import write_results  # noqa: E402

from sandbox.engine.search import STOPWORDS, passage_spans  # noqa: E402

LIBRARIES = ("bm25s", "rank_bm25")
SIZES = {"1M": 1_000_000, "10M": 10_000_000}
VOCABULARY = 50_000
QUERIES = 30
RARE = "quetzalcoatlus"  # planted once: both libraries must rank its passage first


def generate(chars: int, seed: int = 0) -> str:
    """``chars`` characters of sentences of Zipf-distributed made-up words, a line break every few sentences,
    with ``RARE`` planted once in the middle."""
    rng = np.random.default_rng(seed)
    syllables = np.array(["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "pa", "qu", "ob", "el", "an", "is"])
    words = ["".join(rng.choice(syllables, size=rng.integers(2, 5))) + str(i % 7) for i in range(VOCABULARY)]
    weights = 1.0 / np.arange(1, VOCABULARY + 1)
    picks = rng.choice(VOCABULARY, size=chars // 5, p=weights / weights.sum())
    lengths = rng.integers(6, 24, size=len(picks) // 6)
    parts, at = [], 0
    for n, length in enumerate(lengths):
        parts.append(" ".join(words[i] for i in picks[at:at + length]).capitalize() + (".\n" if n % 5 == 4 else ". "))
        at += length
    text = "".join(parts)[:chars]
    middle = len(text) // 2
    return text[:middle] + f" {RARE} " + text[middle:]


def rss_mb() -> float:
    """The process's resident memory now, in MB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 1e6


def build(library: str, passages: list[str]) -> Any:
    """A BM25 index of ``passages`` with ``library``, tokenizing included."""
    import bm25s

    if library == "bm25s":
        index = bm25s.BM25()
        index.index(bm25s.tokenize(passages, stopwords=STOPWORDS, show_progress=False), show_progress=False)
        return index
    import rank_bm25

    return rank_bm25.BM25Okapi(bm25s.tokenize(passages, stopwords=STOPWORDS, return_ids=False, show_progress=False))


def top(index: Any, query: str, k: int = 5) -> list[int]:
    """The indices of the ``k`` best passages for ``query``, best first."""
    import bm25s

    words = bm25s.tokenize(query, stopwords=STOPWORDS, return_ids=False, show_progress=False)[0]
    scores = np.asarray(index.get_scores(words))
    best = np.argpartition(-scores, k - 1)[:k]
    return best[np.argsort(-scores[best], kind="stable")].tolist()


def measure(library: str, chars: int, traced: bool) -> dict[str, Any]:
    """One library at one size, in this process: timings and RSS, or (``traced``) tracemalloc's numbers."""
    text = generate(chars)
    began = time.perf_counter()
    passages = [text[start:end] for start, end in passage_spans(text)]
    split_s = time.perf_counter() - began
    if traced:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        index = build(library, passages)
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return {"peak_traced_mb": round((peak - base) / 1e6, 1), "retained_traced_mb": round((current - base) / 1e6, 1)}
    rss_before = rss_mb()
    began = time.perf_counter()
    index = build(library, passages)
    index_s = time.perf_counter() - began
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3 - rss_before
    words = sorted({w for p in passages[:200] for w in p.split()})
    rng = np.random.default_rng(1)
    queries = [" ".join(rng.choice(words, size=3)) for _ in range(QUERIES)]
    began = time.perf_counter()
    for query in queries:
        top(index, query)
    query_ms = (time.perf_counter() - began) / QUERIES * 1000
    rare_first = RARE in passages[top(index, f"where is {RARE}")[0]]
    return {"passages": len(passages), "split_s": round(split_s, 3), "index_s": round(index_s, 3),
            "query_ms": round(query_ms, 3), "rss_growth_mb": round(rss_growth, 1), "rare_term_first": rare_first}


def in_child(library: str, chars: int, traced: bool) -> dict[str, Any]:
    """:func:`measure` in a fresh interpreter, so one build's memory cannot colour the next."""
    args = [sys.executable, __file__, "--one", library, str(chars)] + (["--traced"] if traced else [])
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1M characters only")
    parser.add_argument("--one", nargs=2, metavar=("LIBRARY", "CHARS"), help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.traced)))
        return
    from importlib.metadata import version

    results: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                               "bm25s": version("bm25s"), "rank_bm25": version("rank-bm25")}
    for size, chars in SIZES.items():
        if args.quick and size != "1M":
            continue
        for library in LIBRARIES:
            row = {**in_child(library, chars, traced=False), **in_child(library, chars, traced=True)}
            results.update({f"{library}_{size}_{name}": value for name, value in row.items()})
    print(write_results("search", results))


if __name__ == "__main__":
    main()
