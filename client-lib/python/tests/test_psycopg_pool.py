"""dbswap.psycopg.ConnectionPool's cases that need no database: refused
targets, no agent, no server available.  Rotations and failovers against
a real server are tests/integration/test_python.py's."""

import threading
import time

import pytest

pytest.importorskip("psycopg_pool")

import dbswap  # noqa: E402
from dbswap.psycopg import ConnectionPool  # noqa: E402

from conftest import INSTANCE, update  # noqa: E402


def serve_subscribe(agent, **kw):
    """Accepts the pool's client, answers hello and its subscribe."""
    def run():
        peer = agent.accept()
        peer.hello()
        peer.answer_subscribe(**kw)
        box["peer"] = peer
    box = {}
    t = threading.Thread(target=run)
    t.start()
    return t, box


def test_a_forbidden_target_fails_checkouts_at_once(agent):
    t, _ = serve_subscribe(agent, errors={"DATABASE_URL": "forbidden"})
    with ConnectionPool(socket=agent.path, name="unit") as pool:
        t0 = time.monotonic()
        with pytest.raises(dbswap.ForbiddenError) as e:
            with pool.connection(timeout=10):
                pass
        assert time.monotonic() - t0 < 2
        assert isinstance(e.value, PermissionError)
        assert "DATABASE_URL" in str(e.value)
    t.join(5)


def test_an_unknown_target_is_a_lookup_error(agent):
    t, _ = serve_subscribe(agent, errors={"NOPE_URL": "unknown-target"})
    with ConnectionPool("NOPE_URL", socket=agent.path, name="unit") as pool:
        with pytest.raises(LookupError):
            pool.getconn(timeout=10)
    t.join(5)


def test_no_agent_and_no_environment_value(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with ConnectionPool(socket=str(tmp_path / "absent.sock")) as pool:
        t0 = time.monotonic()
        with pytest.raises(dbswap.NoValueError) as e:
            pool.getconn(timeout=10)
        assert time.monotonic() - t0 < 2
        assert "absent.sock" in str(e.value)
        assert "$DATABASE_URL is not set" in str(e.value)


def test_no_server_available_fails_at_once_and_is_acked(agent):
    secret = "postgresql://app:s3cret@db/app"
    t, box = serve_subscribe(agent, updates={"DATABASE_URL": update(
        1, secret, reason="unavailable", server="none")})
    with ConnectionPool(socket=agent.path, name="unit") as pool:
        t.join(5)
        with pytest.raises(dbswap.UnavailableError) as e:
            pool.getconn(timeout=10)
        assert isinstance(e.value, ConnectionError)
        assert "s3cret" not in str(e.value)
        a = box["peer"].recv_type("ack")
        assert (a["generation"], a["instance"]) == (1, INSTANCE)
        assert pool.generation == 1
        assert "s3cret" not in repr(pool)
