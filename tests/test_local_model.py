"""The embedded model from Python and from `rlm serve`: reuse of a warm server, one server per process,
the placeholder key. The e2e tests start the real model; the others use stand-ins on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sandbox import LiteLLMClient
from sandbox.lm.clients import PLACEHOLDER_API_KEY
from sandbox.lm.clients import as_lm_client
from sandbox.lm.local import ALIAS, LocalModelError, local_endpoint, model_assembled, served_at, warm_endpoint
import sandbox.lm.local as local
from tests.openai_stub import OpenAIStub
from tests.processes import llama_servers

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = [{"role": "user", "content": "hi"}]


class ModelList:
    """A server on 127.0.0.1 that answers GET /v1/models with the given model names (an `rlm serve`
    stand-in when one is our alias, another program's server otherwise)."""

    def __init__(self, *names: str):
        listing = json.dumps({"object": "list", "data": [{"id": n, "object": "model"} for n in names]}).encode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200 if self.path == "/v1/models" else 404)
                self.send_header("Content-Length", str(len(listing)))
                self.end_headers()
                self.wfile.write(listing)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def warm():
    server = ModelList(ALIAS)
    yield server
    server.close()


@pytest.fixture
def no_process_server(monkeypatch):
    """This process has no embedded server of its own yet; starting one records the start instead."""
    started = []

    class Recorded:
        def __init__(self):
            self.port = 40000 + len(started)
            self.running = False

        def start(self, notify=None):
            time.sleep(0.2)  # long enough for racing threads to pile up behind the lock
            started.append(self)
            self.running = True
            return self

        model = f"openai/{ALIAS}"

        @property
        def api_base(self):
            return f"http://127.0.0.1:{self.port}/v1"

    monkeypatch.setattr(local, "_process_server", None)
    monkeypatch.setattr(local, "LocalModelServer", Recorded)
    return started


def test_a_warm_server_is_reused(warm, no_process_server, monkeypatch):
    endpoint = local_endpoint(port=warm.port)
    assert endpoint == (f"openai/{ALIAS}", f"http://127.0.0.1:{warm.port}/v1", PLACEHOLDER_API_KEY)
    monkeypatch.setenv("RLM_LOCAL_PORT", str(warm.port))
    assert local_endpoint().api_base == endpoint.api_base and warm_endpoint() == endpoint
    client = as_lm_client("local")
    assert isinstance(client, LiteLLMClient) and client.model == f"openai/{ALIAS}"
    assert client.api_base == endpoint.api_base and client._api_key == PLACEHOLDER_API_KEY
    assert no_process_server == []


def test_a_port_serving_something_else_is_never_reused(no_process_server):
    other = ModelList("somebody-elses-model")
    try:
        assert not served_at(other.port)
        endpoint = local_endpoint(port=other.port)
    finally:
        other.close()
    assert len(no_process_server) == 1 and endpoint.api_base == no_process_server[0].api_base


def test_one_embedded_server_per_process_however_many_threads_ask(no_process_server, monkeypatch):
    monkeypatch.setenv("RLM_LOCAL_PORT", "9")  # nothing serves there
    endpoints = []
    threads = [threading.Thread(target=lambda: endpoints.append(local_endpoint())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(no_process_server) == 1 and len(set(endpoints)) == 1 and len(endpoints) == 8


def test_create_rlm_graph_takes_local(warm, no_process_server, monkeypatch):
    from rlm_graph import create_rlm_graph

    monkeypatch.setenv("RLM_LOCAL_PORT", str(warm.port))
    create_rlm_graph("local")
    assert no_process_server == []  # the warm one
    monkeypatch.setenv("RLM_LOCAL_PORT", "9")
    create_rlm_graph("local", sub_model="local")
    create_rlm_graph("local")
    assert len(no_process_server) == 1  # then this process's own, once


def test_local_comes_without_api_base_or_key():
    with pytest.raises(ValueError, match="model='local' is the embedded model"):
        as_lm_client("local", api_base="http://127.0.0.1:1/v1")


def test_a_bad_port_variable_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("RLM_LOCAL_PORT", "eighty")
    with pytest.raises(LocalModelError, match="RLM_LOCAL_PORT='eighty' is not a port number"):
        local_endpoint()


def test_assembly_is_announced_only_when_the_model_is_not_assembled(tmp_path, monkeypatch):
    def stop_here(*args, **kwargs):
        raise LocalModelError("stopped before any server starts")

    monkeypatch.setattr(local, "assemble_model", stop_here)
    monkeypatch.setenv("RLM_MODEL_DIR", str(tmp_path))
    notices = []
    with pytest.raises(LocalModelError, match="stopped before"):
        local.LocalModelServer().start(notices.append)
    assert not model_assembled() and len(notices) == 1 and "first run only" in notices[0]
    with (tmp_path / local.MODEL_FILE).open("wb") as model:
        model.truncate(local.MODEL_BYTES)  # sparse: the right size, no disk used
    notices.clear()
    with pytest.raises(LocalModelError, match="stopped before"):
        local.LocalModelServer().start(notices.append)
    assert model_assembled() and notices == []


@pytest.mark.parametrize("environment_key,sent", [(None, f"Bearer {PLACEHOLDER_API_KEY}"),
                                                  ("sk-from-env", "Bearer sk-from-env")])
def test_api_base_without_a_key_sends_a_placeholder_unless_the_environment_has_one(
        monkeypatch, runner, environment_key, sent):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    if environment_key:
        monkeypatch.setenv("OPENAI_API_KEY", environment_key)
    with OpenAIStub() as stub:
        client = LiteLLMClient("openai/stub", api_base=stub.api_base, max_retries=0)
        assert runner.run(client.acomplete(MESSAGES, max_tokens=5)).text == "echo: hi"
    assert stub.requests[0]["authorization"] == sent


def test_local_lm_for_dspy_points_at_the_embedded_model(monkeypatch):
    import dspy

    from rlm_dspy import lm as rlm_dspy_lm

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with OpenAIStub() as stub:
        monkeypatch.setattr(rlm_dspy_lm, "local_endpoint",
                            lambda: local.LocalEndpoint(f"openai/{ALIAS}", stub.api_base, PLACEHOLDER_API_KEY))
        lm = rlm_dspy_lm.local_lm(cache=False)
        assert isinstance(lm, dspy.LM) and lm.model == f"openai/{ALIAS}"
        assert lm("hi") == ["echo: hi"]
    request = stub.requests[0]
    assert request["body"]["max_tokens"] == rlm_dspy_lm.LOCAL_MAX_TOKENS and request["body"]["model"] == ALIAS
    assert request["authorization"] == f"Bearer {PLACEHOLDER_API_KEY}"


def test_rlm_dspy_takes_local_as_its_sub_lm(monkeypatch):
    from rlm_dspy import RLM
    from rlm_dspy import lm as rlm_dspy_lm

    monkeypatch.setattr(rlm_dspy_lm, "local_endpoint",
                        lambda: local.LocalEndpoint(f"openai/{ALIAS}", "http://127.0.0.1:9/v1", PLACEHOLDER_API_KEY))
    sub = RLM("context -> answer", sub_lm="local").sub_lm
    assert sub.model == f"openai/{ALIAS}" and sub.kwargs["api_base"] == "http://127.0.0.1:9/v1"


def test_serve_refuses_a_port_it_already_serves(warm, capsys):
    from sandbox.app import cli

    assert cli.main(["serve", "--port", str(warm.port)]) == 2
    assert f"already served at http://127.0.0.1:{warm.port}/v1" in capsys.readouterr().err


# -- with the real embedded model ------------------------------------------------------------------


@pytest.mark.e2e
def test_rlm_serve_is_reused_by_python_and_rlm_ask_and_stops_on_sigterm(tmp_path):
    port = local.free_loopback_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RLM_LOCAL_PORT": str(port)}
    serve = subprocess.Popen([sys.executable, "-m", "sandbox.app.cli", "serve", "--port", str(port)], cwd=ROOT, env=env,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not served_at(port) and serve.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert served_at(port), serve.stderr.read() if serve.poll() is not None else "not up in 300 s"
        servers = llama_servers()

        endpoint = local_endpoint(port=port)  # Python: the warm one, no server of its own
        assert endpoint.api_base == f"http://127.0.0.1:{port}/v1" and local._process_server is None
        client = LiteLLMClient(endpoint.model, api_base=endpoint.api_base, api_key=endpoint.api_key)
        from sandbox.lm.aio import AsyncRunner

        runner = AsyncRunner()
        try:
            assert runner.run(client.acomplete(MESSAGES, max_tokens=4)).completion_tokens > 0
        finally:
            runner.close()

        document = tmp_path / "doc.txt"
        document.write_text("The launch code is 7291.\n" * 20)
        ask = subprocess.Popen([sys.executable, "-m", "sandbox.app.cli", "ask", "What is the launch code?", "--context",
                                str(document), "--budget", "max_llm_calls=1", "--json"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = set()
        while ask.poll() is None:  # no second llama server appears at any point of the run
            seen |= llama_servers()
            time.sleep(0.2)
        out, err = ask.communicate()
        assert ask.returncode in (0, 1), err
        assert seen <= servers and "starting the embedded" not in err and "keeps warm" in err
        assert json.loads(out)["usage"]["llm_calls"] == 1

        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=30) == 0
        assert "stopped" in serve.stderr.read()
        assert not (servers & llama_servers()) and not served_at(port)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
