"""A scripted OpenAI-compatible server with a fixed latency per call, for the anchors benchmark.

    python benchmarks/latency_server.py --latency 0.1    # prints its api_base on the first line

It runs in its own process so that its work never competes with the client's for the GIL.
Connections are kept alive (HTTP/1.1), as a real provider's are. A prompt that begins with
``sub-q`` is a sub-call, answered ``"ok"``. Any other request is a root call, answered in the
dialect its model name begins with (``rlms``, ``dspy``, else the graph's ``repl`` blocks): the
first asks for the fan-out cell (:data:`FANOUT_CELL`), and once its output marker is in the
chat, the answer. ``GET /log`` returns every request's arrival time (``time.time()``) and
model; ``POST /reset`` clears it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from typing import Any

SUB_PREFIX = "sub-q"
MARKER = "FANOUT-OK"
# The marker is built at run time, so the code itself never contains it.
FANOUT_CELL = ("r = llm_query_batched(['{prefix} %d %s' % (i, context[:8]) for i in range({n})])\n"
               "print('FANOUT' + '-OK', len(r))")
FINISH = {"repl": "FINAL(str(len(r)))", "rlms": "answer['content'] = str(len(r))\nanswer['ready'] = True",
          "dspy": "SUBMIT(answer=str(len(r)))"}


def dialect(model: str) -> str:
    """Which RLM's reply format a root call of ``model`` wants."""
    for name in ("rlms", "dspy"):
        if model.startswith(name):
            return name
    return "repl"


def fanout_size(model: str) -> int:
    """The number of sub-calls the fan-out cell makes: the model name's last ``-`` part (``dspy-256``)."""
    tail = model.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 256


def root_reply(body: dict[str, Any]) -> str:
    """The script: the fan-out cell until its output is in the chat, then the answer."""
    model = str(body.get("model", ""))
    done = any(MARKER in str(m.get("content", "")) for m in body["messages"])
    code = FINISH[dialect(model)] if done else FANOUT_CELL.format(prefix=SUB_PREFIX, n=fanout_size(model))
    if dialect(model) == "dspy":
        return f"[[ ## reasoning ## ]]\nnext\n\n[[ ## code ## ]]\n```python\n{code}\n```\n\n[[ ## completed ## ]]"
    return f"```repl\n{code}\n```"


def completion(body: dict[str, Any]) -> dict[str, Any]:
    last = str(body["messages"][-1].get("content", ""))
    text = "ok" if last.startswith(SUB_PREFIX) else root_reply(body)
    return {"id": "c1", "object": "chat.completion", "created": 0, "model": body.get("model", ""),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}}


class LatencyServer:
    """The server: plain HTTP/1.1 on asyncio streams, so that a wait of ``latency`` costs no thread
    and 64 calls at once cost the server almost nothing (a threaded ``http.server`` adds tens of
    milliseconds per call at that load on two cores)."""

    def __init__(self, latency: float):
        self.latency = latency
        self.log: list[dict[str, Any]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                arrived = time.time()
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                raw = await reader.readexactly(int(headers.get("content-length") or 0))
                payload = await self.answer(method, path, json.loads(raw or b"{}"), arrived)
                data = json.dumps(payload).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def answer(self, method: str, path: str, body: dict[str, Any], arrived: float) -> Any:
        if method == "GET":
            return self.log
        if path.endswith("/reset"):
            self.log.clear()
            return {}
        self.log.append({"t": arrived, "model": body.get("model", "")})
        await asyncio.sleep(self.latency)
        return completion(body)


async def serve(latency: float) -> None:
    server = await asyncio.start_server(LatencyServer(latency).handle, "127.0.0.1", 0, backlog=512)
    print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.1, help="seconds each chat completion takes")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.latency))


if __name__ == "__main__":
    main()
