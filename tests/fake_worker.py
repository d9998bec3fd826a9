"""Source for hand-written workers that speak the frame protocol, to test what the host does
with a worker that lies or breaks it (monkeypatch ``sandbox.boundary.repl.WORKER_PROGRAM`` with it)."""

FRAME_IO = """
import os, struct, json
def exact(n):
    data = b''
    while len(data) < n:
        data += os.read(0, n - len(data))
    return data
def read():
    header = json.loads(exact(struct.unpack('>I', exact(4))[0]))
    exact(header.get('payload', 0))
    return header
def send_raw(body):
    os.write(1, struct.pack('>I', len(body)) + body)
def send(header):
    send_raw(json.dumps(header).encode())
read()
send({'type': 'ready'})
"""


def fake_worker(body: str) -> str:
    """A worker that answers ``init`` with ``ready``, then runs ``body`` (which may use
    ``read()``, ``send(header)`` and ``send_raw(bytes)``)."""
    return FRAME_IO + body
