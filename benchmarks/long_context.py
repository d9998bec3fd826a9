"""The long-context suite from a source checkout, writing to benchmarks/results/ (``rlm bench`` is the
same suite; ``python benchmarks/long_context.py --help`` for its options)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import RESULTS  # noqa: E402
from sandbox.app.bench.suite import main  # noqa: E402

if __name__ == "__main__":
    main(results=RESULTS)
