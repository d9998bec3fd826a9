"""The `rlm` command and the local-model manager's failure paths (no real model needed here)."""

from __future__ import annotations

import json
import socket
import sys
import types

import pytest

from sandbox import cli
from sandbox.local import LocalModelError, LocalModelServer, assemble_model
from tests.openai_stub import OpenAIStub


def completion(content: str) -> tuple[int, dict]:
    body = OpenAIStub.completion({"model": "m", "messages": [{"role": "user", "content": ""}]})
    body["choices"][0]["message"]["content"] = content
    return 200, body


@pytest.fixture
def stub():
    with OpenAIStub() as server:
        yield server


@pytest.fixture
def document(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text("alpha beta gamma\n" * 100)
    return path


def test_ask_with_the_graph_engine(stub, document, tmp_path, capsys):
    stub.responses = [completion("```repl\nprint(len(context))\n```"), completion("```repl\nFINAL('done')\n```")]
    trace = tmp_path / "trace.json"
    code = cli.main(["ask", "how long?", "--context", str(document), "--model", "openai/stub",
                     "--api-base", stub.api_base, "--trace", str(trace)])
    out = capsys.readouterr()
    assert code == 0
    assert "Answer: done" in out.out and "Stopped: final after 2 iterations" in out.out
    assert "iteration 2" in out.err  # the live progress line
    assert json.loads(trace.read_text())["trajectory"]["events"][-1]["kind"] == "final"


def test_ask_with_the_dspy_engine(stub, document, capsys):
    def reply(code: str) -> str:
        return f"[[ ## reasoning ## ]]\nnext\n\n[[ ## code ## ]]\n```python\n{code}\n```\n\n[[ ## completed ## ]]"

    stub.responses = [completion(reply("print(context[:80])")), completion(reply("SUBMIT(answer='via dspy')"))]
    code = cli.main(["ask", "q", "--context", str(document), "--model", "openai/stub", "--api-base", stub.api_base,
                     "--engine", "dspy"])
    assert code == 0 and "Answer: via dspy" in capsys.readouterr().out


def test_budget_exhaustion_prints_the_partial_answer_and_exits_1(stub, document, capsys):
    stub.responses = [completion("```repl\nx = 1\n```")] * 5
    code = cli.main(["ask", "q", "--context", str(document), "--model", "openai/stub", "--api-base", stub.api_base,
                     "--budget", "max_llm_calls=2"])
    assert code == 1 and "Stopped: max_llm_calls" in capsys.readouterr().out


def test_context_from_stdin(stub, monkeypatch, capsys):
    stub.responses = [completion("```repl\nFINAL(len(context))\n```")]
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=types.SimpleNamespace(read=lambda: b"12345")))
    assert cli.main(["ask", "q", "--context", "-", "--model", "openai/stub", "--api-base", stub.api_base]) == 0
    assert "Answer: 5" in capsys.readouterr().out


@pytest.mark.parametrize("content,message", [
    (None, "context file not found"),
    (b"\x00\x01binary", "looks binary"),
    (b"\xff\xfe\xfa", "not UTF-8"),
    (b"  \n ", "is empty"),
])
def test_bad_context_files(tmp_path, capsys, content, message):
    path = tmp_path / "ctx.txt"
    if content is not None:
        path.write_bytes(content)
    assert cli.main(["ask", "q", "--context", str(path), "--model", "openai/x"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("budget,message", [
    ("max_calls=3", "KEY one of"), ("max_llm_calls=lots", "not a number"), ("max_seconds=-1", "must be >= 0"),
])
def test_bad_budget(document, capsys, budget, message):
    assert cli.main(["ask", "q", "--context", str(document), "--model", "openai/x", "--budget", budget]) == 2
    assert message in capsys.readouterr().err


def test_unreachable_model_exits_3(document, capsys):
    code = cli.main(["ask", "q", "--context", str(document), "--model", "openai/nothing-here",
                     "--api-base", "http://127.0.0.1:9/v1"])
    assert code == 3 and "cannot use model openai/nothing-here" in capsys.readouterr().err


def test_unknown_model_string_exits_with_a_clear_message(document, capsys):
    with pytest.raises(ValueError, match="does not know how to route"):
        cli.main(["ask", "q", "--context", str(document), "--model", "not-a-provider-model"])


def _fake_parts(tmp_path, monkeypatch, chunks):
    names = []
    for i, chunk in enumerate(chunks):
        name = f"fake_model_part_{i}"
        part = tmp_path / f"{name}.bin"
        part.write_bytes(chunk)
        module = types.ModuleType(name)
        module.get_part_path = lambda p=part: str(p)
        monkeypatch.setitem(sys.modules, name, module)
        names.append(name)
    return tuple(names)


def test_model_assembly_verifies_the_checksum(tmp_path, monkeypatch):
    import hashlib

    import sandbox.local as local

    parts = _fake_parts(tmp_path, monkeypatch, [b"abc", b"def"])
    monkeypatch.setattr(local, "MODEL_BYTES", 6)
    good = hashlib.sha256(b"abcdef").hexdigest()
    path = assemble_model(tmp_path / "cache", parts=parts, sha256=good)
    assert path.read_bytes() == b"abcdef"
    with pytest.raises(LocalModelError, match="checksum"):
        assemble_model(tmp_path / "other", parts=parts, sha256="0" * 64)
    assert not (tmp_path / "other" / local.MODEL_FILE).exists()


def test_missing_model_package_names_the_extra(tmp_path):
    with pytest.raises(LocalModelError, match=r"rlm-runtime\[local\]"):
        assemble_model(tmp_path, parts=("no_such_model_part_package",))


def test_taken_port_is_a_clear_error(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"x")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(LocalModelError, match=f"port {port}"):
            LocalModelServer(model, port=port).start()


def test_server_that_dies_at_start_is_reported_and_reaped(tmp_path):
    bad = tmp_path / "not-a-model.gguf"
    bad.write_bytes(b"this is not a GGUF file")
    server = LocalModelServer(bad, log_path=tmp_path / "server.log", startup_timeout=60)
    with pytest.raises(LocalModelError, match="exited with code"):
        server.start()
    assert not server.running


def test_bench_runs_the_suite_and_writes_results(stub, tmp_path, capsys):
    stub.responses = [completion("The launch code is 1234.")] * 3
    code = cli.main(["bench", "--tasks", "niah", "--lengths", "1000", "--engines", "direct", "--seeds", "1",
                     "--model", "openai/stub", "--api-base", stub.api_base, "--out", str(tmp_path)])
    assert code == 0
    results = json.loads((tmp_path / "long_context.json").read_text())
    (row,) = results.values()
    assert row["runs"] == 1 and 0.0 <= row["accuracy"] <= 1.0
    assert (tmp_path / "long_context.svg").read_text().startswith("<svg")
    assert "niah" in capsys.readouterr().out
