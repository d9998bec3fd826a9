"""The `rlm` command and the local-model manager's failure paths (no real model needed here)."""

from __future__ import annotations

import json
import socket
import sys
import types

import pytest

from sandbox.app import cli
from sandbox.lm.local import LocalModelError, LocalModelServer, assemble_model
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
    stub.responses = [completion("Let me think first."), completion("```repl\nprint(len(context))\n```"),
                      completion("```repl\nFINAL('done')\n```")]
    trace = tmp_path / "trace.json"
    code = cli.main(["ask", "how long?", "--context", str(document), "--model", "openai/stub",
                     "--api-base", stub.api_base, "--trace", str(trace)])
    out = capsys.readouterr()
    assert code == 0
    assert "Answer: done" in out.out and "Stopped: final after 3 iterations" in out.out
    assert f"Trace: {trace}" in out.out
    assert json.loads(trace.read_text())["events"]["events"][-1]["kind"] == "final"
    # One line per iteration, saying what happened; the code before its result; the answer only once.
    lines = out.err.splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith("iteration")] == \
        ["iteration 1", "iteration 2", "iteration 3"]
    assert "  no code ran; the reply began: Let me think first." in lines
    assert lines[lines.index("  | print(len(context))") + 1].startswith("  -> ok, printed: 1700 (")
    assert "answer" not in out.err.lower() and out.out.count("done") == 1
    assert "\r" not in out.err  # not a terminal: no status line redrawn in place


def test_ask_writes_the_trajectory_report_and_rlm_report_writes_it_from_the_trace(stub, document, tmp_path,
                                                                                     capsys):
    stub.responses = [completion("```repl\nprint(len(context))\n```"), completion("```repl\nFINAL('done')\n```")]
    trace, page, again = tmp_path / "trace.json", tmp_path / "run.html", tmp_path / "again.html"
    code = cli.main(["ask", "how long?", "--context", str(document), "--model", "openai/stub",
                     "--api-base", stub.api_base, "--trace", str(trace), "--report", str(page)])
    out = capsys.readouterr().out
    assert code == 0 and f"Report: {page}" in out and "Stopped: final after 2 iterations" in out
    assert "<html" in page.read_text() and "print(len(context))" in page.read_text()
    assert cli.main(["report", str(trace), "-o", str(again)]) == 0
    assert "print(len(context))" in again.read_text()
    capsys.readouterr()
    assert cli.main(["report", str(document)]) == 2  # not a trace: named, exit 2
    assert capsys.readouterr().err.startswith(f"rlm report: {document}")


def test_ask_with_the_dspy_engine(stub, document, capsys):
    def reply(code: str) -> str:
        return f"[[ ## reasoning ## ]]\nnext\n\n[[ ## code ## ]]\n```python\n{code}\n```\n\n[[ ## completed ## ]]"

    stub.responses = [completion(reply("print(context[:80])")), completion(reply("SUBMIT(answer='via dspy')"))]
    code = cli.main(["ask", "q", "--context", str(document), "--model", "openai/stub", "--api-base", stub.api_base,
                     "--engine", "dspy"])
    assert code == 0 and "Answer: via dspy" in capsys.readouterr().out


def test_the_dspy_engine_shows_the_root_calls_tokens(stub, document, capsys):
    stub.responses = [completion("[[ ## reasoning ## ]]\nr\n\n[[ ## code ## ]]\n```python\nSUBMIT(answer=context[:2])\n"
                                 "```\n\n[[ ## completed ## ]]")]
    assert cli.main(["ask", "q", "--context", str(document), "--model", "openai/stub", "--api-base", stub.api_base,
                     "--engine", "dspy"]) == 0
    assert "iteration 1: the model replied in " in (err := capsys.readouterr().err) and "(16 tokens)" in err


def test_budget_exhaustion_prints_the_partial_answer_and_exits_1(stub, document, capsys):
    stub.responses = [completion("```repl\nprint(context[:5])\n```"), completion("```repl\nx = 1\n```"),
                      completion("It is alpha.")]  # the last for `extract`, on the call held for it
    code = cli.main(["ask", "q", "--context", str(document), "--model", "openai/stub", "--api-base", stub.api_base,
                     "--budget", "max_llm_calls=3"])
    out = capsys.readouterr().out
    assert code == 1 and "Answer: It is alpha." in out
    assert "Stopped: max_llm_calls after 2 iterations (the answer is partial)" in out


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


@pytest.mark.parametrize("engine", ["graph", "dspy"])
def test_unreachable_server_is_one_line_asking_whether_it_runs(document, capsys, engine):
    code = cli.main(["ask", "q", "--context", str(document), "--model", "openai/nothing-here",
                     "--api-base", "http://127.0.0.1:9/v1", "--engine", engine])
    out = capsys.readouterr()
    assert code == 3
    assert out.err.splitlines()[-1] == ("rlm: cannot reach the model server at http://127.0.0.1:9/v1 "
                                        "(InternalServerError: Connection error.); is a server running at that URL?")
    assert "Give Feedback" not in out.out + out.err and out.out == ""  # litellm's banner is off


@pytest.mark.parametrize("argv,message", [
    (["ask", "", "--context", "DOC"], "the question is empty"),
    (["ask", "  ", "--context", "DOC"], "the question is empty"),
    (["ask", "q", "--context", "DOC", "--model", "nosuchmodel"],
     "--model 'nosuchmodel' is not a model litellm knows: give provider/model, e.g. openai/gpt-4o-mini; "
     "or --api-base URL for an OpenAI-compatible server"),
    (["ask", "q", "--context", "DOC", "--model", "openai/x", "--sub-model", "nosuch"], "--sub-model 'nosuch'"),
    (["ask", "q", "--context", "DIR", "--model", "openai/x"], "is a directory; give one text file"),
    (["ask", "q", "--context", "DOC", "--model", "openai/x", "--budget", "max_depth=2"],
     "max_depth is not a budget cap; use --max-depth 2"),
    (["ask", "q", "--context", "DOC", "--api-base", "http://127.0.0.1:9/v1"], "needs a model served there"),
    (["ask", "q", "--context", "DOC", "--model", "openai/x", "--trace", "/no/such/dir/t.json"],
     "the folder /no/such/dir does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(document, capsys, argv, message):
    argv = [str(document) if a == "DOC" else str(document.parent) if a == "DIR" else a for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlm: ") and message in err and len(err.splitlines()) == 1


def test_default_model_and_server_from_the_environment(stub, document, monkeypatch, capsys):
    stub.responses = [completion("```repl\nFINAL('from env' + context[:0])\n```")]
    monkeypatch.setenv("RLM_MODEL", "openai/stub")
    monkeypatch.setenv("RLM_API_BASE", stub.api_base)
    assert cli.main(["ask", "q", "--context", str(document)]) == 0
    assert "Answer: from env" in capsys.readouterr().out
    assert stub.requests[0]["body"]["model"] == "stub"
    monkeypatch.setenv("RLM_MODEL", "nosuch")
    assert cli.main(["ask", "q", "--context", str(document)]) == 2
    assert "$RLM_MODEL 'nosuch' is not a model" in capsys.readouterr().err


def test_json_puts_one_object_on_stdout(stub, document, tmp_path, capsys):
    stub.responses = [completion("```repl\nprint(context[:5])\n```"), completion("```repl\nFINAL('done')\n```")]
    trace = tmp_path / "t.json"
    code = cli.main(["ask", "q", "--context", str(document), "--model", "openai/stub", "--api-base", stub.api_base,
                     "--json", "--trace", str(trace)])
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert code == 0 and out.out.count("\n") == 1
    assert set(result) == {"answer", "stop_reason", "iterations", "usage", "trace", "report"}
    assert (result["answer"], result["stop_reason"], result["iterations"], result["trace"]) == \
        ("done", "final", 2, str(trace))
    assert result["usage"]["llm_calls"] == 2 and result["usage"]["tokens"] == 32
    assert "iteration 2" in out.err and trace.exists()


def test_quiet_shows_no_progress(stub, document, capsys):
    stub.responses = [completion("```repl\nprint(context[:5])\n```"), completion("```repl\nFINAL('done')\n```")]
    code = cli.main(["ask", "q", "--context", str(document), "--model", "openai/stub", "--api-base", stub.api_base,
                     "--quiet"])
    out = capsys.readouterr()
    assert code == 0 and out.err == "" and "Answer: done" in out.out


def test_version_is_the_installed_distributions(capsys, monkeypatch):
    import importlib.metadata

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"rlm {importlib.metadata.version('rlm-sandbox')}"

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert "version unknown" in cli.installed_version()


def test_help_gives_every_default_and_the_exit_codes(capsys):
    import argparse

    commands = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("ask", "serve"):
        for action in commands.choices[name]._actions:
            assert action.help, (name, action.dest)
            if action.option_strings and action.nargs != 0 and not action.required:  # options with a value
                assert "(default: " in action.help, (name, action.dest)
    with pytest.raises(SystemExit):
        cli.main(["ask", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "exit codes: 0 answered; 1 stopped by a budget" in text and "130 interrupted" in text


def test_bench_help_shows_the_suites_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and out.startswith("usage: rlm bench") and "--tasks" in out and "--lengths" in out


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

    import sandbox.lm.local as local

    parts = _fake_parts(tmp_path, monkeypatch, [b"abc", b"def"])
    monkeypatch.setattr(local, "MODEL_BYTES", 6)
    good = hashlib.sha256(b"abcdef").hexdigest()
    path = assemble_model(tmp_path / "cache", parts=parts, sha256=good)
    assert path.read_bytes() == b"abcdef"
    with pytest.raises(LocalModelError, match="checksum"):
        assemble_model(tmp_path / "other", parts=parts, sha256="0" * 64)
    assert not (tmp_path / "other" / local.MODEL_FILE).exists()


def test_missing_model_package_names_the_extra(tmp_path):
    with pytest.raises(LocalModelError, match=r"rlm-sandbox\[local\]"):
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


@pytest.mark.parametrize("reply_truth,accuracy", [(True, 1.0), (False, 0.0)])
def test_bench_runs_the_suite_and_writes_results(stub, tmp_path, capsys, reply_truth, accuracy):
    from sandbox.app.bench.tasks import niah

    truth = niah(1000, 0).truth  # the case `rlm bench` builds for this task, length and seed
    stub.responses = [completion(f"The launch code is {truth if reply_truth else truth + 1}.")] * 3
    code = cli.main(["bench", "--tasks", "niah", "--lengths", "1000", "--engines", "direct", "--seeds", "1",
                     "--model", "openai/stub", "--api-base", stub.api_base, "--out", str(tmp_path)])
    assert code == 0
    results = json.loads((tmp_path / "long_context.json").read_text())
    (row,) = results.values()
    assert row["runs"] == 1 and row["accuracy"] == accuracy
    assert (tmp_path / "long_context.svg").read_text().startswith("<svg")
    assert "niah" in capsys.readouterr().out
