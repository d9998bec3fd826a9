"""benchmarks/optimize_root_prompt.py runs end to end: it scores, compiles and scores again.

The "model" is a scripted OpenAI-compatible server whose root replies find the asked gate's code
with a regular expression: every run scores, so BootstrapFewShot keeps its two best as demos."""

from __future__ import annotations

import json

from benchmarks import optimize_root_prompt
from tests.scripted_openai import ScriptedOpenAI

CELL = ("import re\ngate = re.search(r'for the (\\w+) gate', question).group(1)\n"
        "code = re.search('access code for the ' + gate + r' gate is (\\d+)', context).group(1)\n"
        "print(code)\nSUBMIT(answer=code)")
REPLY = f"[[ ## reasoning ## ]]\nFind the code.\n\n[[ ## code ## ]]\n```python\n{CELL}\n```\n\n[[ ## completed ## ]]"


def test_the_benchmark_scores_untuned_and_tuned_programs_on_the_dev_tasks(tmp_path):
    with ScriptedOpenAI([REPLY]) as server:
        results = optimize_root_prompt.main(["--train", "2", "--dev", "2", "--tokens", "512", "--model", "openai/x",
                                             "--api-base", server.api_base, "--out", str(tmp_path)])
    assert (results["untuned_accuracy"], results["bootstrap_accuracy"], results["bootstrap_lift"]) == (1.0, 1.0, 0.0)
    assert results["bootstrap_demos"] == 2
    assert json.loads((tmp_path / "optimize_root_prompt.json").read_text()) == results
