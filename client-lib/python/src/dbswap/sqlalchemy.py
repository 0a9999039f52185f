"""SQLAlchemy 2: an Engine whose connections follow a target of the agent.

create_engine() makes an ordinary ``sqlalchemy.Engine`` on the psycopg
dialect with a ``creator`` that connects with the value in force, and pool
event listeners that keep each connection's generation:

- a new value is tried first with one connection (make-before-break; a
  failure is nacked and retried with backoff while the old value serves);
  then it becomes the value new connections get, and the idle
  connections of the old one are replaced (each checked out once by the
  adapter: refused at checkout, closed, connected again);
- a connection of an older value is invalidated (closed) when it is
  checked in, and refused at checkout (SQLAlchemy then connects again,
  with the new value);
- a failover (reason failover or unavailable) switches at once, and the
  sockets of the old value's checked-out connections are shut down;
- the generation is acked when no connection of an older value is left.

The engine's ``dbswap`` attribute is the EngineFollower (generation,
close()).  engine.dispose() keeps working as usual.  Pool settings pushed by
the agent are not applied (SQLAlchemy's pool size is fixed at creation).
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from typing import Any

import psycopg
import sqlalchemy
from sqlalchemy import event, exc

from ._util import backoff, logger, truncate_utf8
from .client import Client
from .conninfo import redact
from .errors import DbswapError, NoValueError, UnavailableError
from .protocol import NACK_MESSAGE_MAX
from .psycopg import (AGENT_GRACE, AUTH_TRIES, RETRY_FIRST, RETRY_MAX,
                      WARM_TIMEOUT, _connect_kwargs, _is_auth_error,
                      _masked_error, _shutdown)
from .types import Update

__all__ = ["create_engine", "EngineFollower"]

_INFO_KEY = "dbswap_generation"
#: How long a new connection of the value in force may keep failing (its
#: retries 20 ms doubling) before the checkout fails with its error.
CONNECT_WAIT = 5.0
CONNECT_RETRY_FIRST = 0.02


class EngineFollower:
    """Follows the agent for one engine; see create_engine()."""

    def __init__(self, target: str, client: Client, owns_client: bool,
                 warm_timeout: float, first_value_timeout: float) -> None:
        self.target = target
        self.client = client
        self._owns_client = owns_client
        self._warm_timeout = warm_timeout
        self._first_timeout = first_value_timeout
        self._lock = threading.Condition()
        self._value: Update | None = None      # what new connections get
        self._seq = 0                          # local number of _value
        self._live: dict[int, int] = {}        # seq -> connections open
        self._out: dict[int, tuple[Any, int]] = {}  # id(dbapi) -> (conn, seq)
        self._born: dict[int, int] = {}        # id(dbapi) -> seq, creator
        self._acked_seq = -1
        self._opened_seq = -1
        self._next: Update | None = None
        self._failures = 0
        self._auth_failures = 0
        self._refused: DbswapError | None = None
        self._started = time.monotonic()
        self._closed = False
        self._events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.engine: sqlalchemy.Engine | None = None
        self._thread = threading.Thread(target=self._work, daemon=True,
                                        name="dbswap-engine")

    @property
    def generation(self) -> int | None:
        v = self._value
        return v.generation if v else None

    # ---- the creator and the pool events ----

    def creator(self) -> Any:
        with self._lock:
            deadline = time.monotonic() + self._first_timeout
            while self._value is None:
                if self._refused is not None:
                    raise self._refused
                value = self._env_value()
                if value is not None:
                    self._value = Update(self.target, 0, value,
                                         reason="environment")
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NoValueError(f"{self.target}: no value within "
                                       f"{self._first_timeout} s",
                                       target=self.target)
                self._lock.wait(min(left, 0.05))
        # Between a rotation's ALTER ROLE (or a server's crash) and the
        # agent's next value, the value in force no longer connects: a
        # new connection waits for that value, retrying, up to
        # CONNECT_WAIT, as libdbswap's and the Node pool's do.
        wait_until = time.monotonic() + CONNECT_WAIT
        attempt = 0
        while True:
            with self._lock:
                value, seq = self._value, self._seq
            if value.server == "none":
                raise UnavailableError(
                    f"{self.target}: no database server is available (the "
                    f"agent reports the primary and the secondary down); "
                    f"failing at once until one is back", target=self.target)
            try:
                conn = psycopg.connect(value.conninfo,
                                       **_connect_kwargs(value.conninfo, {}))
                break
            except psycopg.OperationalError as e:
                left = wait_until - time.monotonic()
                if left <= 0:
                    # libpq quotes the host: the app sees it masked.
                    raise _masked_error(e, value.conninfo) from None
                with self._lock:
                    if self._seq == seq:
                        self._lock.wait(min(left, backoff(
                            attempt, CONNECT_RETRY_FIRST, 1.0)))
                attempt += 1
            except psycopg.Error as e:  # a value libpq cannot parse
                raise _masked_error(e, value.conninfo) from None
        with self._lock:
            self._born[id(conn)] = seq
            if self._opened_seq < seq:
                self._opened_seq = seq
        return conn

    def _env_value(self) -> str | None:
        c = self.client
        if (time.monotonic() - self._started >= AGENT_GRACE
                and not c.connected and c.last_error is not None):
            v = os.environ.get(self.target)
            if v:
                return v
        return None

    def _on_connect(self, dbapi: Any, record: Any) -> None:
        with self._lock:
            seq = self._born.pop(id(dbapi), self._seq)
            record.info[_INFO_KEY] = seq
            self._live[seq] = self._live.get(seq, 0) + 1

    def _on_close(self, dbapi: Any, record: Any) -> None:
        seq = record.info.pop(_INFO_KEY, None)
        if seq is None:
            return
        with self._lock:
            self._live[seq] -= 1
            if not self._live[seq]:
                del self._live[seq]
            self._out.pop(id(dbapi), None)
        self._post("check")

    def _on_checkout(self, dbapi: Any, record: Any, proxy: Any) -> None:
        seq = record.info.get(_INFO_KEY)
        if seq is not None and seq < self._seq:
            # An old value's connection still in a pool: SQLAlchemy
            # invalidates it and connects again (with the new value).
            raise exc.DisconnectionError("an older dbswap value")
        with self._lock:
            self._out[id(dbapi)] = (dbapi, seq)

    def _on_checkin(self, dbapi: Any, record: Any) -> None:
        if dbapi is None:
            return
        with self._lock:
            self._out.pop(id(dbapi), None)
        seq = record.info.get(_INFO_KEY)
        if seq is not None and seq < self._seq:
            record.invalidate()

    # ---- the worker ----

    def start(self) -> None:
        self.client.on_update(lambda u: self._post("update", u))
        self.client.on_error(lambda e: self._post("refused", e)
                             if e.target == self.target else None)
        self._thread.start()
        f = asyncio.run_coroutine_threadsafe(
            self.client.aio.subscribe(self.target, timeout=None),
            self.client.loop)
        f.add_done_callback(lambda f: self._post("subscribed", f))

    def _post(self, *ev: Any) -> None:
        self._events.put(ev)

    def _work(self) -> None:
        while True:
            ev = self._events.get()
            if ev[0] == "stop":
                return
            try:
                getattr(self, "_ev_" + ev[0])(*ev[1:])
            except Exception:
                logger.exception("dbswap: %s: handling %s failed",
                                 self.target, ev[0])

    def _ev_subscribed(self, f: Any) -> None:
        try:
            f.result()
        except DbswapError as e:
            self._ev_refused(e)
        except BaseException:
            pass

    def _ev_refused(self, e: DbswapError) -> None:
        logger.error("dbswap: %s: the agent refused the subscription: %s",
                     self.target, e)
        with self._lock:
            self._refused = type(e)(f"{self.target}: {e}", code=e.code,
                                    target=self.target)
            self._lock.notify_all()

    def _ev_update(self, u: Update) -> None:
        if u.target != self.target or self._closed:
            return
        cur = self._value
        if cur is not None and u.reason != "reconnect" and \
                cur.same_value(u) and cur.server != "none":
            with self._lock:
                self._value = u  # renumbered: same connections
            self._ev_check()
            return
        urgent = u.server == "none" or (cur is not None and (
            cur.server == "none" or u.reason in ("failover", "unavailable")))
        self._next = u
        self._failures = self._auth_failures = 0
        if urgent:
            self._switch(u, True)
        else:
            self._try(u)  # the first value too: acked once it connects

    def _ev_retry(self, u: Update) -> None:
        if u is self._next:
            self._try(u)

    def _try(self, u: Update) -> None:
        """Make-before-break: one connection with the new value first."""
        try:
            with psycopg.connect(u.conninfo,
                                 connect_timeout=max(1, int(self._warm_timeout))):
                pass
        except Exception as e:
            self._failures += 1
            line = redact(" ".join(str(e).split()), u.conninfo)
            if _is_auth_error(e):
                self._auth_failures += 1
            give_up = self._auth_failures >= AUTH_TRIES
            msg = truncate_utf8(f"cannot connect with generation "
                                f"{u.generation} from pid {os.getpid()}: "
                                f"{line}", NACK_MESSAGE_MAX)
            try:
                self.client.nack(u, msg)
            except DbswapError:
                pass
            if give_up:
                logger.error("dbswap: %s: generation %d refused %d times "
                             "(%s); not trying it again", self.target,
                             u.generation, self._auth_failures, line)
                return
            delay = backoff(self._failures - 1, RETRY_FIRST, RETRY_MAX)
            logger.warning("dbswap: %s: generation %d does not connect from "
                           "here: %s; retry in %.1f s", self.target,
                           u.generation, line, delay)
            t = threading.Timer(delay, self._post, ("retry", u))
            t.daemon = True
            t.start()
            return
        if u is self._next:
            self._switch(u, False)

    def _switch(self, u: Update, urgent: bool) -> None:
        with self._lock:
            self._value = u
            self._seq += 1
            if not urgent and u.server != "none":
                self._opened_seq = self._seq  # the probe connected
            old_out = [c for c, s in self._out.values()
                       if s is not None and s < self._seq]
            self._lock.notify_all()
        self._next = None
        if urgent:
            for conn in old_out:
                _shutdown(conn)
        self._sweep()
        logger.info("dbswap: %s: switched to generation %d (%s)",
                    self.target, u.generation, u.reason)
        self._ev_check()

    def _sweep(self) -> None:
        """Replaces the idle connections of older values: each checkout of
        one is refused (_on_checkout), so SQLAlchemy closes it and connects
        again with the new value.  All are held until the last, so that a
        LIFO pool hands out each once.  (engine.dispose() would leave the
        connections out or being made meanwhile in the old pool, and
        nothing would close them.)"""
        pool = self.engine.pool if self.engine is not None else None
        checkedin = getattr(pool, "checkedin", None)
        if pool is None or checkedin is None:
            return
        held = []
        try:
            for _ in range(checkedin()):
                with self._lock:
                    if not any(s < self._seq for s in self._live):
                        break
                try:
                    held.append(pool.connect())
                except Exception as e:
                    logger.info("dbswap: %s: replacing an idle connection "
                                "failed: %s", self.target,
                                redact(str(e), self._value.conninfo
                                       if self._value else None))
                    break
        finally:
            for fairy in held:
                fairy.close()

    def _ev_check(self) -> None:
        with self._lock:
            v, seq = self._value, self._seq
            if v is None or v.generation == 0 or self._acked_seq == seq:
                return
            if any(s < seq for s in self._live):
                return
            if v.server != "none" and self._opened_seq < seq:
                return
            self._acked_seq = seq
        try:
            self.client.ack(v)
        except DbswapError as e:
            logger.warning("dbswap: %s: ack failed: %s", self.target, e)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._post("stop")
        self._thread.join(5)
        if self._owns_client:
            self.client.close()


def create_engine(target: str = "DATABASE_URL", *,
                  client: Client | None = None, socket: str | None = None,
                  name: str | None = None, url: str = "postgresql+psycopg://",
                  warm_timeout: float = WARM_TIMEOUT,
                  first_value_timeout: float = 30.0,
                  **kwargs: Any) -> sqlalchemy.Engine:
    """A SQLAlchemy Engine for target whose connections follow the agent's
    value.  kwargs go to sqlalchemy.create_engine() (pool_size,
    max_overflow, pool_pre_ping, echo, ...); ``creator`` is the package's.
    Close it with ``engine.dbswap.close()`` after ``engine.dispose()``."""
    if "creator" in kwargs:
        raise TypeError("create_engine: creator is dbswap's own")
    follower = EngineFollower(target, client or Client(socket, name=name),
                              client is None, warm_timeout,
                              first_value_timeout)
    engine = sqlalchemy.create_engine(url, creator=follower.creator, **kwargs)
    follower.engine = engine
    event.listen(engine, "connect", follower._on_connect)
    event.listen(engine, "close", follower._on_close)
    event.listen(engine, "checkout", follower._on_checkout)
    event.listen(engine, "checkin", follower._on_checkin)
    engine.dbswap = follower  # type: ignore[attr-defined]
    follower.start()
    return engine
