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


def test_psycopg_pool_sees_connect_errors_masked(caplog):
    """psycopg_pool logs each failed connect (a refill between a rotation's
    ALTER ROLE and its new value) and its PoolTimeout may carry it: libpq
    quotes the host, and a host (here a socket dir) may hold any part of
    the value.  The pools' connection_class raises them masked."""
    from dbswap._psycopg_async import _masking_async
    from dbswap.psycopg import _masking
    import asyncio
    import psycopg

    secret = "Pw-0f-the-app"
    conninfo = (f"host=/nonexistent/{secret} port=5 user=app "
                f"password={secret} dbname=app connect_timeout=1")
    with pytest.raises(psycopg.OperationalError) as raw:
        psycopg.Connection.connect(conninfo)
    assert secret in str(raw.value)  # what libpq says: the premise
    with pytest.raises(psycopg.OperationalError) as e:
        _masking(psycopg.Connection).connect(conninfo)
    assert secret not in str(e.value) and "nonexistent" in str(e.value)
    assert e.value.__cause__ is None and e.value.__suppress_context__

    async def aconnect():
        await _masking_async(psycopg.AsyncConnection).connect(conninfo)
    with pytest.raises(psycopg.OperationalError) as e:
        asyncio.run(aconnect())
    assert secret not in str(e.value)

    # psycopg_pool's own log lines, on the class the adapter gives it.
    import logging
    import psycopg_pool
    with ConnectionPool(socket="/nonexistent/agent.sock", name="unit",
                        open=False) as adapter:
        cls = adapter._pool_args["connection_class"]
    assert issubclass(cls, psycopg.Connection)
    caplog.set_level(logging.WARNING, logger="psycopg.pool")
    p = psycopg_pool.ConnectionPool(conninfo, connection_class=cls,
                                    min_size=1, open=False,
                                    reconnect_timeout=1)
    p.open(wait=False)
    time.sleep(1.5)
    p.close()
    assert "error connecting" in caplog.text
    assert secret not in caplog.text


def test_connections_are_bounded_by_a_connect_timeout():
    """libpq waits for ever by default: a hung server would hold a pool
    worker or a checkout.  Every connection the adapters open has
    connect_timeout unless the value or the app's kwargs set one."""
    from dbswap.psycopg import CONNECT_TIMEOUT, _connect_kwargs

    assert _connect_kwargs("host=db dbname=app", {}) == \
        {"connect_timeout": CONNECT_TIMEOUT}
    assert _connect_kwargs("host=db connect_timeout=2", {}) == {}
    assert _connect_kwargs("postgresql://db/app?connect_timeout=2", {}) == {}
    assert _connect_kwargs("host=db", {"connect_timeout": 9}) == \
        {"connect_timeout": 9}
    assert _connect_kwargs("host=db", {"autocommit": True}) == \
        {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT}
    # A value libpq cannot parse: connect() says so (masked), not this.
    assert _connect_kwargs("host='db", {}) == {}


def test_sqlalchemy_creator_raises_connect_errors_masked(monkeypatch):
    """The engine's creator gives up after CONNECT_WAIT with libpq's error:
    masked, as the pools' are."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    import psycopg
    import dbswap.sqlalchemy as dsa

    secret = "Pw-0f-the-app"
    monkeypatch.setattr(dsa, "CONNECT_WAIT", 0.3)
    monkeypatch.setenv("DATABASE_URL",
                       f"host=/nonexistent/{secret} port=5 user=app "
                       f"password={secret} dbname=app")
    engine = dsa.create_engine(socket="/nonexistent/agent.sock", name="unit")
    try:
        with pytest.raises(sqlalchemy.exc.OperationalError) as e:
            engine.connect()
        text = str(e.value)
        assert secret not in text and "nonexistent" in text, text
        assert isinstance(e.value.orig, psycopg.OperationalError)
    finally:
        engine.dispose()
        engine.dbswap.close()
