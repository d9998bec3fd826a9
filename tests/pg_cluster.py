"""A private PostgreSQL cluster on 127.0.0.1 for tests and benchmarks: initdb into a temporary
directory, start on a free port, stop (and delete) at the end.

PostgreSQL refuses to run as root; as root the cluster belongs to ``nobody`` (``runuser``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PG_BIN = Path(os.environ.get("RLM_PG_BIN", "/usr/lib/postgresql/15/bin"))
CLUSTER_USER = "nobody"


def missing() -> str | None:
    """Why no cluster can start here (the binaries are absent), or ``None``."""
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        return (f"PostgreSQL binaries not found in {PG_BIN} (install postgresql-15, e.g. `bash .ci/setup` as root, "
                "or set RLM_PG_BIN)")
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_cluster_user(args: list[str]) -> list[str]:
    return ["runuser", "-u", CLUSTER_USER, "--", *args] if os.geteuid() == 0 else args


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """Start a throwaway cluster; yield its connection string; stop and delete it on exit.

    Raises:
        RuntimeError: the binaries are absent, or initdb/pg_ctl failed (with their output).
    """
    reason = missing()
    if reason is not None:
        raise RuntimeError(reason)
    root = Path(tempfile.mkdtemp(prefix="rlm-pg-"))
    data, sockets = root / "data", root / "run"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, CLUSTER_USER)
        shutil.chown(sockets, CLUSTER_USER)
    root.chmod(0o700)
    port = _free_port()
    ctl = str(PG_BIN / "pg_ctl")
    try:
        _run(_as_cluster_user([str(PG_BIN / "initdb"), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                               "--no-sync", "-D", str(data)]))
        _run(_as_cluster_user([ctl, "-D", str(data), "-l", str(root / "log"), "-w", "start", "-o",
                               f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off "
                               "-c max_connections=100"]))
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(_as_cluster_user([ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]),
                           capture_output=True, timeout=60)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:6])} failed ({done.returncode}): {done.stdout[-2000:]}"
                           f"{done.stderr[-2000:]}")
