"""psycopg 3 for asyncio: AsyncConnectionPool, the twin of
dbswap.psycopg.ConnectionPool on psycopg_pool.AsyncConnectionPool (read
that module's header for the swap rules; they are the same).

Everything runs on the app's event loop: the AsyncClient's callbacks post
events to a queue, and one task ("the worker") handles them in order, so
that a swap is never interleaved with another; probes run as tasks of
their own and post their result.
"""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

import psycopg
import psycopg_pool
from psycopg import conninfo as pg_conninfo

from ._util import backoff, logger, truncate_utf8
from .aio import AsyncClient
from .errors import ClientClosedError, DbswapError, NoValueError, UnavailableError
from .protocol import NACK_MESSAGE_MAX
from .psycopg import (AUTH_TRIES, DRAIN_TIMEOUT, RETRY_FIRST,
                      RETRY_MAX, WARM_TIMEOUT, ConnectionPool, PoolClosed,
                      PoolTimeout, _Gen, _connect_kwargs, _is_auth_error, _masked_error,
                      _shutdown)
from .types import Settings, Update


def _masking_async(cls: type[psycopg.AsyncConnection]
                   ) -> type[psycopg.AsyncConnection]:
    """As dbswap.psycopg's _masking, for AsyncConnection."""
    class Masking(cls):  # type: ignore[valid-type, misc]
        @classmethod
        async def connect(klass, conninfo: str = "", **kwargs: Any) -> Any:
            try:
                return await super().connect(conninfo, **kwargs)
            except psycopg.Error as e:
                raise _masked_error(e, conninfo) from None

    Masking.__name__ = cls.__name__
    Masking.__qualname__ = cls.__qualname__
    return Masking

__all__ = ["AsyncConnectionPool"]

_URGENT = ("failover", "unavailable")


class AsyncConnectionPool:
    """psycopg_pool.AsyncConnectionPool's API following a target of the
    agent: ``async with AsyncConnectionPool() as pool:`` (or ``await
    pool.open()`` / ``await pool.close()``), ``async with
    pool.connection() as conn:``, getconn/putconn, wait, get_stats.  The
    same arguments as dbswap.psycopg.ConnectionPool; ``client`` is an
    AsyncClient."""

    _effective = ConnectionPool._effective
    _sizes = ConnectionPool._sizes
    _error_line = ConnectionPool._error_line
    _grace_over = ConnectionPool._grace_over

    def __init__(self, target: str = "DATABASE_URL", *,
                 client: AsyncClient | None = None, socket: str | None = None,
                 name: str | None = None,
                 min_size: int | None = None, max_size: int | None = None,
                 timeout: float | None = None, max_idle: float | None = None,
                 drain_timeout: float = DRAIN_TIMEOUT,
                 warm_timeout: float = WARM_TIMEOUT,
                 kwargs: dict[str, Any] | None = None,
                 connection_class: type[psycopg.AsyncConnection] = psycopg.AsyncConnection,
                 configure: Callable[[Any], Any] | None = None,
                 check: Callable[[Any], Any] | None = None,
                 reset: Callable[[Any], Any] | None = None,
                 max_lifetime: float = 3600.0) -> None:
        self._target = target
        self._explicit = {"min_size": min_size, "max_size": max_size,
                          "timeout": timeout, "max_idle": max_idle}
        self._settings: Settings | None = None
        self._drain_timeout = drain_timeout
        self._warm_timeout = warm_timeout
        self._kwargs = dict(kwargs or {})
        self._pool_args = dict(connection_class=_masking_async(connection_class),
                               configure=configure, check=check, reset=reset,
                               max_lifetime=max_lifetime)
        self._client_arg = client
        self._client_opts = {"socket": socket, "name": name}
        self._client: AsyncClient | None = None
        self._current: _Gen | None = None
        self._next: _Gen | None = None
        self._retiring: set[_Gen] = set()
        self._owner: dict[int, _Gen] = {}
        self._subscribe_error: DbswapError | None = None
        self._subscribing = False
        self._opened = False
        self._closed = False
        self._warned_env = False
        self._started = 0.0
        self._changed: asyncio.Condition | None = None
        self._events: asyncio.Queue[tuple[Any, ...]] | None = None
        self._tasks: set[asyncio.Task] = set()
        self._removers: list[Callable[[], None]] = []
        self._timers: set[asyncio.TimerHandle] = set()

    # ---- psycopg_pool's API ----

    async def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        if self._closed:
            raise PoolClosed(f"the pool for {self._target} is closed")
        if not self._opened:
            self._opened = True
            self._started = time.monotonic()
            self._changed = asyncio.Condition()
            self._events = asyncio.Queue()
            c = self._client = self._client_arg or await AsyncClient(
                **self._client_opts).start()
            self._removers = [
                c.on_update(lambda u: self._post("update", u)),
                c._on_renumber(lambda u, sent: self._post("renumber", u)),
                c.on_settings(lambda s: self._post("settings", s)),
                c.on_connect(lambda s: self._post("connect")),
                c.on_disconnect(lambda e: self._post("disconnect")),
                c.on_error(lambda e: self._post("refused", e)
                           if e.target == self._target else None),
            ]
            self._spawn(self._work())
            self._post("start")
        if wait:
            await self.wait(timeout)

    async def wait(self, timeout: float = 30.0) -> None:
        assert self._changed is not None
        deadline = time.monotonic() + timeout
        async with self._changed:
            while not (self._current and (self._current.opened
                                          or self._current.unavailable)):
                err = self._no_value_error()
                if err is not None:
                    raise err
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PoolTimeout(f"{self._target}: no usable value "
                                      f"within {timeout} s")
                try:
                    await asyncio.wait_for(self._changed.wait(),
                                           min(left, 0.1))
                except TimeoutError:
                    pass

    async def getconn(self, timeout: float | None = None) -> Any:
        if timeout is None:
            timeout = self._effective("timeout")
        deadline = time.monotonic() + timeout
        while True:
            g = await self._pick(deadline, timeout)
            assert g.pool is not None
            try:
                conn = await g.pool.getconn(
                    timeout=max(0.0, deadline - time.monotonic()))
            except PoolClosed:
                self._release_user(g)
                if self._closed:
                    raise
                continue
            except BaseException:
                self._release_user(g)
                raise
            g.out.add(conn)
            self._owner[id(conn)] = g
            if not g.opened:
                g.opened = True
                self._post("opened", g)
            return conn

    async def putconn(self, conn: Any) -> None:
        g = self._owner.pop(id(conn), None)
        if g is None:
            raise ValueError("this connection is not from this pool")
        g.out.discard(conn)
        assert g.pool is not None
        try:
            await g.pool.putconn(conn)
        finally:
            self._release_user(g)

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[Any]:
        conn = await self.getconn(timeout)
        try:
            async with conn:
                yield conn
        finally:
            await self.putconn(conn)

    async def close(self, timeout: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        gens = [g for g in (self._current, self._next, *self._retiring)
                if g is not None]
        for remove in self._removers:
            remove()
        for t in self._timers:
            t.cancel()
        await self._notify()
        deadline = time.monotonic() + timeout
        while any(g.users for g in gens) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for t in list(self._tasks):
            t.cancel()
        for g in gens:
            if g.pool is not None:
                await g.pool.close(timeout=1.0)
        if self._client_arg is None and self._client is not None:
            await self._client.aclose()

    async def __aenter__(self) -> "AsyncConnectionPool":
        await self.open()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    @property
    def target(self) -> str:
        return self._target

    @property
    def generation(self) -> int | None:
        g = self._current
        return g.update.generation if g else None

    @property
    def closed(self) -> bool:
        return self._closed

    def get_stats(self) -> dict[str, int]:
        g = self._current
        gens = [x for x in (self._current, self._next, *self._retiring)
                if x is not None]
        stats = dict(g.pool.get_stats()) if g and g.pool else {}
        stats["generations_open"] = sum(1 for x in gens if x.pool)
        stats["connections_out"] = sum(len(x.out) for x in gens)
        return stats

    def __repr__(self) -> str:
        return (f"<dbswap.psycopg.AsyncConnectionPool target={self._target!r}"
                f" generation={self.generation!r} closed={self._closed}>")

    # ---- checkouts ----

    async def _pick(self, deadline: float, timeout: float) -> _Gen:
        assert self._changed is not None
        async with self._changed:
            while True:
                if self._closed:
                    raise PoolClosed(f"the pool for {self._target} is closed")
                g = self._current
                if g is not None:
                    if g.unavailable:
                        raise UnavailableError(
                            f"{self._target}: no database server is available"
                            f" (the agent reports the primary and the "
                            f"secondary down, generation "
                            f"{g.update.generation}); failing at once until "
                            f"one is back", target=self._target)
                    if g.given_up:
                        raise NoValueError(
                            f"{self._target}: {g.describe(self._target)} "
                            f"was refused {g.auth_failures} times here; "
                            f"waiting for a new value", target=self._target)
                    g.users += 1
                    return g
                err = self._no_value_error()
                if err is not None:
                    raise err
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PoolTimeout(f"{self._target}: no value within "
                                      f"{timeout} s (waiting for the agent)")
                try:
                    # Woken by changes, and every 50 ms for the
                    # environment's value (no event says "no agent came").
                    await asyncio.wait_for(self._changed.wait(),
                                           min(left, 0.05))
                except TimeoutError:
                    self._consider_env()

    def _release_user(self, g: _Gen) -> None:
        g.users -= 1
        if g.retired and g.users == 0 and g in self._retiring:
            self._finish(g)
            self._maybe_ack()

    def _no_value_error(self) -> DbswapError | None:
        if self._closed:
            return ClientClosedError(f"the pool for {self._target} is closed")
        if self._subscribe_error is not None:
            e = self._subscribe_error
            return type(e)(f"{self._target}: {e}", code=e.code,
                           target=self._target)
        nxt = self._next
        if nxt is not None and nxt.last_error is not None:
            state = "given up" if nxt.given_up else "retrying"
            return NoValueError(
                f"{self._target}: {nxt.describe(self._target)} does not "
                f"connect from here ({state}): "
                f"{self._error_line(nxt, nxt.last_error)}",
                target=self._target)
        c = self._client
        if (nxt is None and c is not None and self._grace_over()
                and not c.connected and c.last_error is not None
                and not os.environ.get(self._target)):
            e = c.last_error
            return NoValueError(
                f"no value for {self._target}: no usable agent at "
                f"{c.socket_path} ({getattr(e, 'code', None) or e}) and "
                f"${self._target} is not set", target=self._target)
        return None

    # ---- the worker ----

    def _spawn(self, coro: Any) -> asyncio.Task:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    def _post(self, *event: Any) -> None:
        if self._events is not None and not self._closed:
            self._events.put_nowait(event)

    async def _notify(self) -> None:
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    async def _work(self) -> None:
        assert self._events is not None
        while not self._closed:
            ev = await self._events.get()
            try:
                r = getattr(self, "_ev_" + ev[0])(*ev[1:])
                if asyncio.iscoroutine(r):
                    await r
            except Exception:
                logger.exception("dbswap: %s: handling %s failed",
                                 self._target, ev[0])
            await self._notify()

    def _ev_start(self) -> None:
        c = self._client
        assert c is not None
        s = c.settings(self._target)
        if s is not None:
            self._ev_settings(s)
        known = c.last_update(self._target)
        if known is not None:
            self._post("update", known)
        self._subscribe()

    def _ev_connect(self) -> None:
        assert self._client is not None
        if self._subscribe_error is not None or (
                not self._subscribing
                and not self._client.subscribed(self._target)):
            self._subscribe()

    def _ev_disconnect(self) -> None:
        self._consider_env()

    def _subscribe(self) -> None:
        if self._subscribing or self._closed:
            return
        self._subscribing = True

        async def run() -> None:
            assert self._client is not None
            try:
                await self._client.subscribe(self._target, timeout=None)
            except ClientClosedError:
                return
            except DbswapError as e:
                self._post("refused", e)
                return
            finally:
                self._subscribing = False
            self._subscribe_error = None
        self._spawn(run())

    def _ev_refused(self, err: DbswapError) -> None:
        logger.error("dbswap: %s: the agent refused the subscription: %s",
                     self._target, err)
        self._subscribe_error = err

    def _consider_env(self) -> None:
        c = self._client
        if (self._closed or self._current or self._next or c is None
                or not self._grace_over() or c.connected
                or c.last_error is None):
            return
        value = os.environ.get(self._target)
        if not value:
            return
        if not self._warned_env:
            logger.info("dbswap: no agent at %s; using $%s from the "
                        "environment", c.socket_path, self._target)
            self._warned_env = True
        g = _Gen(Update(self._target, 0, value, reason="environment"),
                 from_env=True)
        self._next = g
        self._start_warm(g)

    async def _ev_update(self, update: Update) -> None:
        if update.target != self._target or self._closed:
            return
        cur, nxt = self._current, self._next

        def same(g: _Gen | None) -> bool:
            return g is not None and not g.from_env and \
                g.update.generation == update.generation and \
                g.update.instance == update.instance
        if same(cur) or same(nxt):
            self._maybe_ack()
            return
        if update.reason != "reconnect" and cur is not None and \
                cur.update.same_value(update) and not cur.unavailable:
            cur.update, cur.acked, cur.from_env = update, False, False
            await self._abandon_next()
            self._maybe_ack()
            return
        await self._abandon_next()
        g = _Gen(update)
        urgent = g.unavailable or (cur is not None and (
            cur.unavailable or update.reason in _URGENT))
        if urgent:
            await self._switch(g, destroy=True)
            if not g.unavailable:
                self._start_warm(g, probe_only=True)
        else:
            self._next = g
            self._start_warm(g)

    async def _ev_renumber(self, update: Update) -> None:
        cur = self._current
        if cur is not None and not cur.from_env and \
                cur.update.same_value(update):
            cur.update, cur.acked = update, True
            await self._abandon_next()
        else:
            await self._ev_update(update)

    def _ev_settings(self, settings: Settings) -> None:
        if settings.target != self._target:
            return
        self._settings = settings
        lo, hi = self._sizes()
        for g in (self._current, self._next):
            if g is not None and g.pool is not None:
                self._spawn(g.pool.resize(lo, hi))
                g.pool.timeout = self._effective("timeout")
                g.pool.max_idle = self._effective("max_idle")

    def _ev_opened(self, g: _Gen) -> None:
        self._maybe_ack()

    def _ev_retry(self, g: _Gen) -> None:
        if g is self._next and not self._closed:
            self._start_warm(g)

    # ---- values ----

    def _make_pool(self, g: _Gen) -> psycopg_pool.AsyncConnectionPool:
        lo, hi = self._sizes()
        return psycopg_pool.AsyncConnectionPool(
            g.update.conninfo,
            kwargs=_connect_kwargs(g.update.conninfo, self._kwargs), min_size=lo,
            max_size=hi, timeout=self._effective("timeout"),
            max_idle=self._effective("max_idle"), open=False,
            name=f"dbswap-{self._target}-{g.update.generation}",
            **self._pool_args)

    def _start_warm(self, g: _Gen, probe_only: bool = False) -> None:
        async def run() -> None:
            err: BaseException | None = None
            try:
                params = pg_conninfo.conninfo_to_dict(g.update.conninfo)
                extra = dict(self._kwargs)
                if "connect_timeout" not in params:
                    extra["connect_timeout"] = max(1, int(self._warm_timeout))
                conn = await psycopg.AsyncConnection.connect(
                    g.update.conninfo, **extra)
                await conn.close()
                if not probe_only:
                    pool = self._make_pool(g)
                    try:
                        await pool.open(wait=self._sizes()[0] > 0,
                                        timeout=self._warm_timeout)
                    except BaseException:
                        await pool.close(timeout=0)
                        raise
                    g.pool = pool
            except Exception as e:
                err = e
            self._post("warmed", g, err)
        self._spawn(run())

    async def _ev_warmed(self, g: _Gen, err: BaseException | None) -> None:
        if err is None:
            g.opened = True
            if g is self._next and not self._closed:
                await self._switch(g, destroy=False)
            elif g is not self._current and g.pool is not None:
                await g.pool.close(timeout=0)
            self._maybe_ack()
            return
        if g is not self._next and g is not self._current:
            return
        g.failures += 1
        g.last_error = err
        line = self._error_line(g, err)
        if _is_auth_error(err):
            g.auth_failures += 1
        if _is_auth_error(err) and g.auth_failures >= AUTH_TRIES:
            g.given_up = True
            logger.error("dbswap: %s: %s refused %d times (%s); not trying it "
                         "again, so as not to lock the role out",
                         self._target, g.describe(self._target),
                         g.auth_failures, line)
        elif g is self._next:
            delay = backoff(g.failures - 1, RETRY_FIRST, RETRY_MAX)
            logger.warning("dbswap: %s: %s does not connect from here: %s; "
                           "staying on the current value, retry in %.1f s",
                           self._target, g.describe(self._target), line, delay)
            loop = asyncio.get_running_loop()
            h = loop.call_later(delay, self._post, "retry", g)
            self._timers.add(h)
        if not g.from_env and self._client is not None:
            self._client.nack(g.update, truncate_utf8(
                f"cannot connect with generation {g.update.generation} from "
                f"pid {os.getpid()}: {line}", NACK_MESSAGE_MAX))

    async def _abandon_next(self) -> None:
        g, self._next = self._next, None
        if g is not None and g.pool is not None:
            await g.pool.close(timeout=0)

    async def _switch(self, g: _Gen, destroy: bool) -> None:
        if g.pool is None and not g.unavailable:
            g.pool = self._make_pool(g)
            await g.pool.open(wait=False)
        old = self._current
        if self._next is g:
            self._next = None
        self._current = g
        busy = len(old.out) if old else 0
        if old is not None:
            self._retire(old, destroy)
        if destroy:
            for r in self._retiring:
                for conn in list(r.out):
                    _shutdown(conn)
        if g.unavailable:
            logger.error("dbswap: %s: no database server is available; "
                         "checkouts fail at once until one is back",
                         self._target)
        elif old is not None:
            logger.info("dbswap: %s: switched to %s (%s); %d busy "
                        "connection(s) on the old value", self._target,
                        g.describe(self._target), g.update.reason, busy)
        self._maybe_ack()

    def _retire(self, g: _Gen, destroy: bool) -> None:
        g.retired = True
        self._retiring.add(g)
        if g.pool is not None:
            # As the sync pool's: on a failover, a short wait for its
            # workers (one may be connecting to a hung server).
            self._spawn(g.pool.close(timeout=0.1 if destroy else 1.0))
        if destroy:
            for conn in list(g.out):
                _shutdown(conn)
        elif g.users:
            def deadline() -> None:
                for conn in list(g.out):
                    _shutdown(conn)
            h = asyncio.get_running_loop().call_later(self._drain_timeout,
                                                      deadline)
            self._timers.add(h)
        if g.users == 0:
            self._finish(g)

    def _finish(self, g: _Gen) -> None:
        self._retiring.discard(g)

    def _maybe_ack(self) -> None:
        g = self._current
        if (g is None or g.from_env or g.acked or self._retiring
                or self._closed or not (g.opened or g.unavailable)):
            return
        g.acked = True
        if self._client is not None:
            try:
                self._client.ack(g.update)
            except DbswapError as e:
                logger.warning("dbswap: %s: ack failed: %s", self._target, e)
