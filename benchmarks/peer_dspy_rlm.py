"""DSPy's own RLM tests, run against ``rlm_dspy.RLM``; results go to benchmarks/results/peer_dspy_rlm.json and .md.

    python benchmarks/peer_dspy_rlm.py --dspy-checkout PATH [--stock]

PATH is a checkout of the stanfordnlp/dspy repository. Its ``tests/predict/test_rlm.py``
(with ``tests/conftest.py``, ``tests/mock_interpreter.py`` and ``tests/test_utils/``) is
copied to a temporary directory and run with pytest, ``dspy.RLM`` and
``dspy.predict.rlm.RLM`` patched to ``rlm_dspy.RLM``; ``--stock`` runs them unpatched,
against the installed dspy, for the baseline. DSPy's async tests need pytest-asyncio:
without it they fail, and the script says so. Tests marked ``deno`` are skipped, as in
DSPy's own default run. CI has no network, so CI does not run this.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import write_results  # noqa: E402

TEST_FILES = ("tests/conftest.py", "tests/mock_interpreter.py", "tests/test_utils", "tests/predict/test_rlm.py",
              "tests/predict/snapshots")
PATCH = """import dspy
import dspy.predict.rlm

import rlm_dspy

dspy.RLM = dspy.predict.rlm.RLM = rlm_dspy.RLM
"""


def copy_tests(checkout: Path, into: Path) -> None:
    """The RLM tests of ``checkout`` and what they import, as a package under ``into``."""
    if not (checkout / "tests/predict/test_rlm.py").is_file():
        raise SystemExit(f"{checkout} has no tests/predict/test_rlm.py: give a checkout of the stanfordnlp/dspy "
                         "repository")
    for name in TEST_FILES:
        source, target = checkout / name, into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        elif source.is_file():
            shutil.copy2(source, target)
    for package in ("tests", "tests/predict"):
        (into / package / "__init__.py").touch()
    (into / "rlm_patch.py").write_text(PATCH)


def run_tests(workdir: Path, *, stock: bool) -> Path:
    """pytest on the copied tests; returns its JUnit XML report."""
    report = workdir / "report.xml"
    plugins = [] if stock else ["-p", "rlm_patch"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(workdir), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugins,
                    "tests/predict/test_rlm.py", f"--junitxml={report}"], cwd=workdir, env=env, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not report.is_file():
        raise SystemExit("pytest wrote no report: run the tests by hand in a copy to see why")
    return report


def summarize(report: Path) -> dict[str, object]:
    """Counts and each failure with its first line, from a JUnit XML report."""
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    failures = {}
    for case in ElementTree.parse(report).iter("testcase"):
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        if problem is not None:
            counts["failed"] += 1
            failures[f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"] = \
                (problem.get("message") or "").splitlines()[0][:160] if problem.get("message") else ""
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return {**counts, "failures": failures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dspy-checkout", type=Path, help="a checkout of the stanfordnlp/dspy repository")
    parser.add_argument("--stock", action="store_true", help="run against the installed dspy.RLM (the baseline)")
    args = parser.parse_args()
    if args.dspy_checkout is None:
        parser.exit(2, "nothing was run: give --dspy-checkout PATH, a checkout of the stanfordnlp/dspy repository\n")
    import dspy

    with tempfile.TemporaryDirectory(prefix="peer-dspy-rlm-") as tmp:
        workdir = Path(tmp)
        copy_tests(args.dspy_checkout.resolve(), workdir)
        summary = summarize(run_tests(workdir, stock=args.stock))
    target = f"dspy.RLM {dspy.__version__} (stock)" if args.stock else "rlm_dspy.RLM"
    results = {"target": target, "passed": summary["passed"], "failed": summary["failed"],
               "skipped": summary["skipped"],
               "pytest_asyncio": importlib.util.find_spec("pytest_asyncio") is not None}
    name = "peer_dspy_rlm_stock" if args.stock else "peer_dspy_rlm"
    print(write_results(name, {**results, **{f"failed: {k}": v for k, v in summary["failures"].items()}}))
    if not results["pytest_asyncio"]:
        print("\npytest-asyncio is not installed: DSPy's async tests fail for that reason alone "
              "(pip install pytest-asyncio)")


if __name__ == "__main__":
    main()
