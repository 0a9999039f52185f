"""The clients (Client, and AsyncClient under it) against the fake agent:
hello and its version fallback, per-target subscribe, agent errors as
exceptions, acks with the instance, reconnection with backoff and
re-subscription, violations by the agent, masking."""

import asyncio
import os
import struct
import threading
import time

import msgpack
import pytest

import dbswap
from dbswap import (AgentTimeoutError, AsyncClient, Client, ForbiddenError,
                    UnknownTargetError, Update)

from conftest import INSTANCE, INSTANCE2, update

SECRET = "postgresql://app:s3cret-pw@db:5432/app"
SECRET2 = "postgresql://app:n3w-pw@db:5432/app"


def wait_for(pred, timeout=5, what="the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.005)
    raise AssertionError(f"no {what} within {timeout} s")


@pytest.fixture
def client(agent):
    c = Client(agent.path, name="unit", request_timeout=2)
    yield c
    c.close()


def subscribe_in_thread(c, targets):
    """c.subscribe(targets) on a thread: (thread, result box)."""
    box = {}

    def run():
        try:
            c.subscribe(targets)
            box["ok"] = True
        except BaseException as e:
            box["error"] = e
    t = threading.Thread(target=run)
    t.start()
    return t, box


def test_hello_offers_version_2_with_name_and_pid(agent, client):
    peer = agent.accept()
    h = peer.hello()
    assert (h["version"], h["name"], h["pid"]) == (2, "unit", os.getpid())
    assert isinstance(h["id"], int)
    wait_for(lambda: client.connected, what="the session")
    assert client.instance == INSTANCE and client.version == 2


def test_version_error_falls_back_to_1_at_once(agent, client):
    peer = agent.accept()
    h = peer.recv()
    t0 = time.monotonic()
    peer.send({"type": "error", "id": h["id"], "code": "version",
               "message": "this agent speaks version 1"})
    peer.close()
    peer2 = agent.accept()
    h2 = peer2.hello(version=1, instance=None)
    assert time.monotonic() - t0 < 0.5
    assert h2["version"] == 1
    wait_for(lambda: client.connected)
    assert client.version == 1 and client.instance is None


def test_each_target_is_subscribed_on_its_own_request(agent, client):
    peer = agent.accept()
    peer.hello()
    seen = []
    client.on_update(seen.append)
    t, box = subscribe_in_thread(client, ["DATABASE_URL", "REPORTS_URL"])
    m1 = peer.recv_type("subscribe")
    m2 = peer.recv_type("subscribe")
    assert {tuple(m1["targets"]), tuple(m2["targets"])} == \
        {("DATABASE_URL",), ("REPORTS_URL",)}
    assert m1["id"] != m2["id"]
    by_target = {m1["targets"][0]: m1, m2["targets"][0]: m2}
    peer.send({"type": "update", "target": "DATABASE_URL",
               **update(1, SECRET)})
    peer.send({"type": "ok", "id": by_target["DATABASE_URL"]["id"]})
    peer.send({"type": "error", "id": by_target["REPORTS_URL"]["id"],
               "code": "forbidden", "message": "uid 1000 may not follow"})
    t.join(5)
    err = box["error"]
    assert isinstance(err, ForbiddenError)
    assert isinstance(err, PermissionError)
    assert err.code == "forbidden" and err.target == "REPORTS_URL"
    assert "may not follow" in str(err)
    # The other target is followed all the same.
    assert client.subscribed("DATABASE_URL")
    assert not client.subscribed("REPORTS_URL")
    assert [u.generation for u in seen] == [1]
    assert client.last_update("DATABASE_URL").conninfo == SECRET


def test_unknown_target_is_a_lookup_error(agent, client):
    peer = agent.accept()
    peer.hello()
    t, box = subscribe_in_thread(client, "NOPE_URL")
    peer.answer_subscribe(errors={"NOPE_URL": "unknown-target"})
    t.join(5)
    assert isinstance(box["error"], UnknownTargetError)
    assert isinstance(box["error"], LookupError)


def test_ack_carries_the_update_instance(agent, client):
    peer = agent.accept()
    peer.hello()
    t, box = subscribe_in_thread(client, "DATABASE_URL")
    peer.answer_subscribe({"DATABASE_URL": update(4, SECRET)})
    t.join(5)
    u = client.last_update("DATABASE_URL")
    assert client.ack(u) is True
    a = peer.recv_type("ack")
    assert (a["target"], a["generation"], a["instance"]) == \
        ("DATABASE_URL", 4, INSTANCE)
    # An update of another instance, or a future generation: not sent.
    other = Update("DATABASE_URL", 4, SECRET, instance=INSTANCE2)
    assert client.ack(other) is False
    assert client.ack(Update("DATABASE_URL", 9, SECRET,
                             instance=INSTANCE)) is False
    peer.nothing()


def test_nack_masks_the_value_and_is_cut(agent, client):
    peer = agent.accept()
    peer.hello()
    t, _ = subscribe_in_thread(client, "DATABASE_URL")
    peer.answer_subscribe({"DATABASE_URL": update(2, SECRET)})
    t.join(5)
    u = client.last_update("DATABASE_URL")
    assert client.nack(u, f"failed with {SECRET} (s3cret-pw) " + "x" * 2000)
    n = peer.recv_type("nack")
    assert "s3cret-pw" not in n["message"]
    assert "****" in n["message"]
    assert len(n["message"].encode()) <= 1024
    assert n["instance"] == INSTANCE


def test_reconnects_resubscribes_and_acks_the_same_value_quietly(agent):
    c = Client(agent.path, name="unit", request_timeout=2)
    try:
        seen = []
        c.on_update(seen.append)
        peer = agent.accept()
        peer.hello()
        t, _ = subscribe_in_thread(c, ["DATABASE_URL", "OTHER_URL"])
        for _ in range(2):
            peer.answer_subscribe({"DATABASE_URL": update(3, SECRET)})
        t.join(5)
        c.ack(c.last_update("DATABASE_URL"))
        peer.recv_type("ack")
        # The agent restarts: new instance, generations from 1.
        peer.close()
        t0 = time.monotonic()
        peer2 = agent.accept()
        assert time.monotonic() - t0 < 1.0, "reconnection took too long"
        peer2.hello(instance=INSTANCE2)
        subs = [peer2.recv_type("subscribe"), peer2.recv_type("subscribe")]
        assert sorted(s["targets"][0] for s in subs) == \
            ["DATABASE_URL", "OTHER_URL"]
        assert all(len(s["targets"]) == 1 for s in subs)
        for s in subs:
            if s["targets"] == ["DATABASE_URL"]:
                peer2.send({"type": "update", "target": "DATABASE_URL",
                            **update(1, SECRET, instance=INSTANCE2)})
            peer2.send({"type": "ok", "id": s["id"]})
        a = peer2.recv_type("ack")
        assert (a["generation"], a["instance"]) == (1, INSTANCE2)
        assert [u.generation for u in seen] == [3], \
            "the same value must not be an update again"
        # A new value is.
        peer2.send({"type": "update", "target": "DATABASE_URL",
                    **update(2, SECRET2, instance=INSTANCE2,
                             reason="rotation")})
        wait_for(lambda: len(seen) == 2)
        assert seen[1].conninfo == SECRET2 and seen[1].instance == INSTANCE2
    finally:
        c.close()


def test_a_refused_target_at_reconnection_is_an_error_callback(agent, client):
    errors = []
    client.on_error(errors.append)
    peer = agent.accept()
    peer.hello()
    t, _ = subscribe_in_thread(client, "DATABASE_URL")
    peer.answer_subscribe({"DATABASE_URL": update(1, SECRET)})
    t.join(5)
    peer.close()
    peer2 = agent.accept()
    peer2.hello(instance=INSTANCE2)
    peer2.answer_subscribe(errors={"DATABASE_URL": "forbidden"})
    wait_for(lambda: errors)
    assert isinstance(errors[0], ForbiddenError)
    assert errors[0].target == "DATABASE_URL"


def test_backoff_grows_while_the_agent_refuses(agent, client):
    """An agent that closes every connection at once: 20 ms doubling, so a
    handful of attempts in a second, not hundreds."""
    t0 = time.monotonic()
    times = []
    while time.monotonic() - t0 < 1.0:
        try:
            p = agent.accept(timeout=max(0.01, 1.0 - (time.monotonic() - t0)))
        except OSError:
            break
        times.append(time.monotonic())
        p.close()
    assert 4 <= len(times) <= 10, times
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[-1] > gaps[0]
    assert isinstance(client.last_error, dbswap.DisconnectedError)


def test_requests_are_matched_by_id_between_updates(agent, client):
    peer = agent.accept()
    peer.hello()
    t, _ = subscribe_in_thread(client, "DATABASE_URL")
    peer.answer_subscribe({"DATABASE_URL": update(1, SECRET)})
    t.join(5)
    box = {}
    th = threading.Thread(target=lambda: box.update(s=client.status()))
    th.start()
    m = peer.recv_type("status")
    peer.send({"type": "update", "target": "DATABASE_URL",
               **update(2, SECRET2)})
    peer.send({"type": "ok", "id": m["id"] + 1000})  # answers nothing
    peer.send({"type": "status", "id": m["id"], "agent": {"pid": 7},
               "targets": [], "files": [], "keys": []})
    th.join(5)
    assert box["s"]["agent"] == {"pid": 7}
    assert client.last_update("DATABASE_URL").generation == 2


def test_a_request_without_answer_times_out(agent):
    c = Client(agent.path, name="unit", request_timeout=0.3)
    try:
        peer = agent.accept()
        peer.hello()
        wait_for(lambda: c.connected)
        with pytest.raises(AgentTimeoutError) as e:
            c.ping()
        assert isinstance(e.value, TimeoutError)
    finally:
        c.close()


def test_ping_from_a_version_1_agent_counts_unknown_type_as_alive(agent,
                                                                  client):
    peer = agent.accept()
    h = peer.recv()
    peer.send({"type": "error", "id": h["id"], "code": "version",
               "message": "this agent speaks version 1"})
    peer = agent.accept()
    peer.hello(version=1, instance=None)
    box = {}
    th = threading.Thread(target=lambda: box.update(rtt=client.ping()))
    th.start()
    m = peer.recv_type("ping")
    peer.send({"type": "error", "id": m["id"], "code": "unknown-type",
               "message": "no ping"})
    th.join(5)
    assert box["rtt"] >= 0


@pytest.mark.parametrize("bad", [
    struct.pack(">I", 65537),                       # oversized frame
    struct.pack(">I", 0),                           # empty frame
    b"\x00\x00\x00\x02\x81\xc1",                    # reserved byte
])
def test_a_violation_by_the_agent_reconnects(agent, client, bad):
    peer = agent.accept()
    peer.hello()
    wait_for(lambda: client.connected)
    peer.send_raw(bad)
    peer2 = agent.accept()
    peer2.hello(instance=INSTANCE2)
    wait_for(lambda: client.instance == INSTANCE2)


def test_an_update_of_another_instance_is_a_violation(agent, client):
    peer = agent.accept()
    peer.hello()
    t, _ = subscribe_in_thread(client, "DATABASE_URL")
    peer.answer_subscribe({"DATABASE_URL": update(1, SECRET)})
    t.join(5)
    peer.send({"type": "update", "target": "DATABASE_URL",
               **update(2, SECRET2, instance=INSTANCE2)})
    agent.accept().hello()
    assert client.last_update("DATABASE_URL").generation == 1


def test_update_and_client_reprs_mask_the_secret(agent, client):
    peer = agent.accept()
    peer.hello()
    t, _ = subscribe_in_thread(client, "DATABASE_URL")
    peer.answer_subscribe({"DATABASE_URL": update(1, SECRET)})
    t.join(5)
    u = client.last_update("DATABASE_URL")
    for text in (repr(u), str(u), repr(client), f"{u}"):
        assert "s3cret-pw" not in text
    assert "app:****@db" in repr(u)


def test_async_client_updates_iterator_and_callbacks(agent):
    async def main():
        async with AsyncClient(agent.path, name="aio") as c:
            got = []
            c.on_update(got.append)
            peer = await asyncio.to_thread(agent.accept)
            await asyncio.to_thread(peer.hello)
            it = c.updates("DATABASE_URL")
            await asyncio.to_thread(peer.answer_subscribe,
                                    {"DATABASE_URL": update(1, SECRET)})
            first = await asyncio.wait_for(it.__anext__(), 5)
            assert first.generation == 1
            await asyncio.to_thread(peer.send, {
                "type": "update", "target": "DATABASE_URL",
                **update(2, SECRET2)})
            second = await asyncio.wait_for(it.__anext__(), 5)
            assert second.conninfo == SECRET2
            assert [u.generation for u in got] == [1, 2]
            assert c.ack(second)
            a = await asyncio.to_thread(peer.recv_type, "ack")
            assert a["generation"] == 2
            await it.aclose()
    asyncio.run(main())


def test_async_subscribe_raises_forbidden(agent):
    async def main():
        async with AsyncClient(agent.path, name="aio") as c:
            peer = await asyncio.to_thread(agent.accept)
            await asyncio.to_thread(peer.hello)
            task = asyncio.ensure_future(c.subscribe("SECRET_URL"))
            await asyncio.to_thread(peer.answer_subscribe,
                                    errors={"SECRET_URL": "forbidden"})
            with pytest.raises(PermissionError):
                await task
    asyncio.run(main())


def test_close_fails_waiting_requests(agent):
    c = Client(agent.path, name="unit", request_timeout=None)
    box = {}

    def run():
        try:
            c.status()
        except BaseException as e:
            box["e"] = e
    th = threading.Thread(target=run)
    th.start()
    time.sleep(0.1)
    c.close()
    th.join(5)
    assert isinstance(box["e"], dbswap.ClientClosedError)


def test_settings_are_kept_per_target(agent, client):
    peer = agent.accept()
    peer.hello()
    got = []
    client.on_settings(got.append)
    t, _ = subscribe_in_thread(client, "DATABASE_URL")
    m = peer.recv_type("subscribe")
    peer.send({"type": "update", "target": "DATABASE_URL",
               **update(1, SECRET)})
    peer.send({"type": "settings", "target": "DATABASE_URL", "pool_max": 7,
               "pool_min": 2})
    peer.send({"type": "ok", "id": m["id"]})
    t.join(5)
    s = client.settings("DATABASE_URL")
    assert (s.pool_max, s.pool_min, s.pool_timeout_ms) == (7, 2, None)
    assert got == [s]


def test_msgpack_is_the_only_runtime_dependency():
    import pathlib
    import tomllib
    meta = tomllib.loads((pathlib.Path(__file__).parent.parent /
                          "pyproject.toml").read_text())["project"]
    assert meta["dependencies"] == ["msgpack>=1.0.3"]
    assert set(meta["optional-dependencies"]) == {"psycopg", "sqlalchemy"}
    assert meta["requires-python"] == ">=3.11"
    assert msgpack.version >= (1, 0, 3)
