"""A fake agent for the unit tests: a Unix socket in a temp dir, driven
step by step from the test's thread (accept, read a message, answer).  It
checks nothing of what it reads (the tests do) and sends whatever it is
told, raw bytes too, so that the client's edge cases can be provoked."""

from __future__ import annotations

import os
import socket
import struct
import tempfile
import time
from typing import Any

import msgpack
import pytest

INSTANCE = "0123456789abcdef"
INSTANCE2 = "fedcba9876543210"


class Peer:
    """One connection the fake agent accepted."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(5)
        self.buf = b""

    def _read(self, n: int, timeout: float) -> bytes:
        self.sock.settimeout(timeout)
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the client closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self, timeout: float = 5) -> dict[str, Any]:
        (n,) = struct.unpack(">I", self._read(4, timeout))
        return msgpack.unpackb(self._read(n, timeout), raw=False)

    def recv_type(self, mtype: str, timeout: float = 5) -> dict[str, Any]:
        """The next message of that type (others skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.recv(max(0.01, deadline - time.monotonic()))
            if m.get("type") == mtype:
                return m

    def nothing(self, within: float = 0.2) -> None:
        """Asserts the client sends nothing within that time."""
        try:
            m = self.recv(within)
        except (socket.timeout, TimeoutError):
            return
        raise AssertionError(f"unexpected message {m!r}")

    def send(self, msg: dict[str, Any]) -> None:
        body = msgpack.packb(msg, use_bin_type=True)
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def hello(self, version: int = 2, instance: str | None = INSTANCE
              ) -> dict[str, Any]:
        """Reads the client's hello and answers it."""
        h = self.recv()
        assert h["type"] == "hello", h
        reply = {"type": "hello", "id": h["id"], "version": version,
                 "name": "dbswapd fake", "pid": 1}
        if instance is not None:
            reply["instance"] = instance
        self.send(reply)
        return h

    def answer_subscribe(self, updates: dict[str, dict[str, Any]] | None = None,
                         errors: dict[str, str] | None = None,
                         timeout: float = 5) -> dict[str, Any]:
        """Reads one subscribe and answers it: the target's update (from
        updates) then ok, or the error code from errors."""
        m = self.recv_type("subscribe", timeout)
        (target,) = m["targets"]
        if errors and target in errors:
            self.send({"type": "error", "id": m["id"], "code": errors[target],
                       "message": f"{errors[target]} for {target}"})
            return m
        if updates and target in updates:
            self.send({"type": "update", "target": target, **updates[target]})
        self.send({"type": "ok", "id": m["id"]})
        return m

    def close(self) -> None:
        self.sock.close()


class FakeAgent:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="dbswap-py-")
        self.path = os.path.join(self.dir, "agent.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(16)
        self.peers: list[Peer] = []

    def accept(self, timeout: float = 5) -> Peer:
        self.sock.settimeout(timeout)
        conn, _ = self.sock.accept()
        p = Peer(conn)
        self.peers.append(p)
        return p

    def close(self) -> None:
        for p in self.peers:
            p.close()
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.rmdir(self.dir)


def update(generation: int, conninfo: str, instance: str = INSTANCE,
           **extra: Any) -> dict[str, Any]:
    return {"generation": generation, "conninfo": conninfo,
            "instance": instance, **extra}


@pytest.fixture
def agent():
    a = FakeAgent()
    yield a
    a.close()
