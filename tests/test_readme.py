"""The README's snippets for the embedded model run exactly as shown (a new user copies them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_block(containing: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    (block,) = [b for b in blocks if containing in b]
    return block


@pytest.mark.e2e
def test_the_embedded_model_snippet_runs_as_shown():
    import dspy

    from tests.processes import llama_servers

    before = llama_servers()
    names: dict = {}
    try:
        exec(compile(python_block('create_rlm_graph("local")'), "README.md", "exec"), names)  # noqa: S102
        configured = dspy.settings.lm
    finally:
        dspy.configure(lm=None)  # the snippet configures DSPy for the whole process; later tests expect none
    started = llama_servers() - before
    assert len(started) <= 1  # one server for the whole process, shared by all three
    assert names["api_base"].startswith("http://127.0.0.1:") and names["model"].startswith("openai/")
    assert configured.kwargs["api_base"] == names["api_base"]
    assert names["rlm"].sub_lm.kwargs["api_base"] == names["api_base"]
    assert type(names["graph"]).__name__ == "RLMGraph"
