"""Which embedded-model servers are running: to prove a test left none behind, or started one only."""

from __future__ import annotations

from pathlib import Path

from sandbox.lm.local import SERVER_MODULE


def llama_servers() -> set[int]:
    """PIDs of running (not zombie) embedded-model servers (``python -m sandbox.lm.llama_server``)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and f"-m\0{SERVER_MODULE}\0".encode() in (entry / "cmdline").read_bytes() and \
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                pids.add(int(entry.name))
        except OSError:
            pass
    return pids
