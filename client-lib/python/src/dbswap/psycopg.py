"""psycopg 3: a psycopg_pool.ConnectionPool look-alike that follows a
target of the agent.

Each value (generation) gets a psycopg_pool.ConnectionPool of its own.  A
new value from the agent becomes ``next``: one connection is opened with it
to learn whether it works from here (a probe: its error, masked, is what
the agent is told in a nack), then its pool is opened and filled to
min_size, and only then do checkouts move to it (make-before-break).  The
old pool is closed: idle connections at once, those checked out when they
come back (psycopg_pool closes a connection returned to a closed pool),
and those still out at the drain deadline have their sockets shut down.
When no connection of an older value is left, the generation is acked, so
``dbswapctl set --wait`` returns only when the old password is out of use.

A failover (reason failover or unavailable) breaks before it makes: the old
server is dead or hung, so the new value is current at once and the
sockets of the old value's busy connections are shut down (a query on one
fails once; none after).  While the agent reports no server (server
``none``) checkouts fail at once with UnavailableError.

A value that does not connect from here is nacked, retried with backoff
while the old one keeps serving, and given up after AUTH_TRIES
authentication failures so that the role is never locked out.  Without an
agent (none answers within AGENT_GRACE) the pool uses $TARGET from the
environment, and says so once; an agent that appears later takes over.

Threads: the dbswap Client's thread only posts events; one worker thread
("dbswap-pool") owns the swaps; a probe thread per value being tried;
checkouts run on the app's threads.  One lock guards the state.
"""

from __future__ import annotations

import asyncio
import os
import queue
import socket
import threading
import time
from typing import Any, Callable

import psycopg
import psycopg_pool
from psycopg import conninfo as pg_conninfo

from ._util import backoff, logger, truncate_utf8
from .client import Client
from .conninfo import redact
from .errors import ClientClosedError, DbswapError, NoValueError, UnavailableError
from .protocol import NACK_MESSAGE_MAX
from .types import Settings, Update

__all__ = ["ConnectionPool", "DRAIN_TIMEOUT", "WARM_TIMEOUT", "AGENT_GRACE",
           "AUTH_TRIES", "PoolTimeout", "PoolClosed"]

PoolTimeout = psycopg_pool.PoolTimeout
PoolClosed = psycopg_pool.PoolClosed

#: Busy connections of an old value have their sockets shut down after this.
DRAIN_TIMEOUT = 30.0
#: How long a new value's probe and its pool's min_size connections may take.
WARM_TIMEOUT = 5.0
#: How long to wait for an agent before using the environment's value: long
#: enough for a local agent to answer, short for a developer.
AGENT_GRACE = 0.2
#: Authentication failures before a value is given up.
AUTH_TRIES = 5
#: A connection attempt's bound (libpq's connect_timeout) where neither the
#: value nor the app's kwargs set one, as libdbswap's: libpq waits for ever
#: by default, and a hung server would hold a pool worker or a checkout.
CONNECT_TIMEOUT = 5
#: Retry of a value that fails to connect here: 100 ms doubling to 30 s.
RETRY_FIRST = 0.1
RETRY_MAX = 30.0
#: Defaults where neither the app nor the agent sets a value: libdbswap's
#: (one warm connection, ten at most), psycopg_pool's timeouts.
DEFAULT_MIN_SIZE = 1
DEFAULT_MAX_SIZE = 10
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_IDLE = 600.0

_URGENT = ("failover", "unavailable")


def _is_auth_error(err: BaseException) -> bool:
    state = getattr(err, "sqlstate", None)
    if state in ("28P01", "28000"):
        return True
    text = str(err)
    return "password authentication failed" in text or \
        "authentication failed" in text


def _connect_kwargs(conninfo: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """kwargs, with connect_timeout = CONNECT_TIMEOUT unless it or the
    value sets one."""
    try:
        params = pg_conninfo.conninfo_to_dict(conninfo)
    except psycopg.Error:
        return kwargs  # connect() says so, masked
    if "connect_timeout" in kwargs or "connect_timeout" in params:
        return kwargs
    return {**kwargs, "connect_timeout": CONNECT_TIMEOUT}


def _masked_error(err: psycopg.Error, conninfo: str) -> psycopg.Error:
    """err again, its text cleaned of conninfo's secrets: libpq's messages
    may quote a host or another part of the value."""
    return type(err)(redact(str(err), conninfo))


def _masking(cls: type[psycopg.Connection]) -> type[psycopg.Connection]:
    """cls, whose connect() fails with the error masked.  psycopg_pool
    connects through connection_class.connect() and logs what it raises (a
    refill that fails between a rotation's ALTER ROLE and its new value)."""
    class Masking(cls):  # type: ignore[valid-type, misc]
        @classmethod
        def connect(klass, conninfo: str = "", **kwargs: Any) -> Any:
            try:
                return super().connect(conninfo, **kwargs)
            except psycopg.Error as e:
                raise _masked_error(e, conninfo) from None

    Masking.__name__ = cls.__name__
    Masking.__qualname__ = cls.__qualname__
    return Masking


def _shutdown(conn: psycopg.Connection) -> None:
    """Shuts a busy connection's socket down (from any thread): the query
    on it fails at once, and the connection is closed when it comes back.
    Closing it here would free its descriptor under the thread using it."""
    try:
        if conn.closed:
            return
        fd = os.dup(conn.fileno())
    except Exception:
        return
    s = socket.socket(fileno=fd)
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        s.close()


class _Gen:
    """One value and its psycopg_pool."""

    def __init__(self, update: Update, from_env: bool = False) -> None:
        self.update = update
        self.from_env = from_env
        self.unavailable = update.server == "none"
        self.pool: psycopg_pool.ConnectionPool | None = None
        self.users = 0          # checkouts in getconn or out
        self.out: set[Any] = set()
        self.opened = False     # one connection of it opened
        self.acked = False
        self.failures = 0
        self.auth_failures = 0
        self.given_up = False
        self.last_error: BaseException | None = None
        self.retired = False
        self.drain_timer: threading.Timer | None = None

    def describe(self, target: str) -> str:
        return (f"${target} from the environment" if self.from_env
                else f"generation {self.update.generation}")


class _Checkout:
    """ConnectionPool.connection()'s context manager: a class, not a
    generator, for it runs on every checkout."""

    __slots__ = ("_pool", "_timeout", "_conn")

    def __init__(self, pool: "ConnectionPool", timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._conn: Any = None

    def __enter__(self) -> Any:
        conn = self._pool.getconn(self._timeout)
        try:
            conn.__enter__()
        except BaseException:
            self._pool.putconn(conn)
            raise
        self._conn = conn
        return conn

    def __exit__(self, *exc: Any) -> None:
        conn, self._conn = self._conn, None
        try:
            conn.__exit__(*exc)
        finally:
            self._pool.putconn(conn)


class ConnectionPool:
    """A pool of psycopg connections for one target (default
    DATABASE_URL), with psycopg_pool.ConnectionPool's API: connection(),
    getconn(), putconn(), open(), close(), wait(), get_stats(); a context
    manager.  The connection parameters come from the agent's value;
    ``kwargs`` (connection keyword arguments such as autocommit or
    row_factory), ``connection_class``, ``configure``, ``check``, ``reset``
    and ``max_lifetime`` go to each generation's psycopg_pool.

    min_size, max_size, timeout and max_idle: the app's values win, else the
    agent's settings (DATABASE_POOL_MIN, _MAX, _TIMEOUT, _IDLE_TIMEOUT),
    else 1, 10, 30 s, 600 s.  drain_timeout: how long busy connections of
    an old value may stay (seconds).

    client: a dbswap.Client to share (else the pool makes one on
    ``socket`` with ``name``, and closes it with the pool).
    """

    def __init__(self, target: str = "DATABASE_URL", *,
                 client: Client | None = None, socket: str | None = None,
                 name: str | None = None,
                 min_size: int | None = None, max_size: int | None = None,
                 timeout: float | None = None, max_idle: float | None = None,
                 drain_timeout: float = DRAIN_TIMEOUT,
                 warm_timeout: float = WARM_TIMEOUT,
                 kwargs: dict[str, Any] | None = None,
                 connection_class: type[psycopg.Connection] = psycopg.Connection,
                 configure: Callable[[Any], None] | None = None,
                 check: Callable[[Any], None] | None = None,
                 reset: Callable[[Any], None] | None = None,
                 max_lifetime: float = 3600.0,
                 open: bool = True) -> None:
        self._target = target
        self._explicit = {"min_size": min_size, "max_size": max_size,
                          "timeout": timeout, "max_idle": max_idle}
        self._settings: Settings | None = None
        self._timeout = self._effective("timeout")  # a checkout's default
        self._drain_timeout = drain_timeout
        self._warm_timeout = warm_timeout
        self._kwargs = dict(kwargs or {})
        self._pool_args = dict(connection_class=_masking(connection_class),
                               configure=configure, check=check, reset=reset,
                               max_lifetime=max_lifetime)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._current: _Gen | None = None
        self._next: _Gen | None = None
        self._retiring: set[_Gen] = set()
        self._owner: dict[int, _Gen] = {}  # id(conn) -> its generation
        self._events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._subscribe_error: DbswapError | None = None
        self._subscribing = False
        self._opened = False
        self._closed = False
        self._warned_env = False
        self._started = 0.0
        self._client_arg = client
        self._client_opts = {"socket": socket, "name": name}
        self._client: Client | None = None
        self._removers: list[Callable[[], None]] = []
        self._worker: threading.Thread | None = None
        self._retry_timer: threading.Timer | None = None
        self._on_swap: list[Callable[[dict[str, Any]], None]] = []
        if open:
            self.open()

    # ---- psycopg_pool's API ----

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Connects to the agent and subscribes (in the background).  With
        wait=True, returns once a value is in use (PoolTimeout after
        timeout)."""
        with self._lock:
            if self._closed:
                raise PoolClosed(f"the pool for {self._target} is closed")
            if not self._opened:
                self._opened = True
                self._started = time.monotonic()
                self._client = self._client_arg or Client(**self._client_opts)
                c = self._client
                self._removers = [
                    c.on_update(lambda u: self._post("update", u)),
                    c._on_renumber(lambda u, sent: self._post("renumber", u)),
                    c.on_settings(lambda s: self._post("settings", s)),
                    c.on_connect(lambda s: self._post("connect")),
                    c.on_disconnect(lambda e: self._post("disconnect")),
                    c.on_error(self._on_client_error),
                ]
                self._worker = threading.Thread(target=self._work,
                                                name="dbswap-pool",
                                                daemon=True)
                self._worker.start()
                self._post("start")
        if wait:
            self.wait(timeout)

    def wait(self, timeout: float = 30.0) -> None:
        """Waits until a value is in use and has opened a connection."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self._current and (self._current.opened
                                          or self._current.unavailable)):
                err = self._no_value_error()
                if err is not None:
                    raise err
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PoolTimeout(f"{self._target}: no usable value "
                                      f"within {timeout} s")
                self._cond.wait(min(left, 0.1))

    def getconn(self, timeout: float | None = None) -> Any:
        """A connection of the current value; give it back with
        putconn().  Prefer connection()."""
        if timeout is None:
            timeout = self._timeout
        deadline = time.monotonic() + timeout
        while True:
            g = self._pick(deadline, timeout)
            assert g.pool is not None
            try:
                conn = g.pool.getconn(timeout=max(0.0, deadline -
                                                  time.monotonic()))
            except PoolClosed:
                # Retired between the pick and the checkout (a swap):
                # the current value serves it.
                self._release_user(g)
                if self._closed:
                    raise
                continue
            except BaseException:
                self._release_user(g)
                raise
            with self._lock:
                g.out.add(conn)
                self._owner[id(conn)] = g
                first = not g.opened
                g.opened = True
            if first:
                self._post("opened", g)
            return conn

    def putconn(self, conn: Any) -> None:
        """Gives a connection back: to its value's pool (which closes it if
        that value is retired)."""
        with self._lock:
            g = self._owner.pop(id(conn), None)
            if g is None:
                raise ValueError("this connection is not from this pool")
            g.out.discard(conn)
        assert g.pool is not None
        try:
            g.pool.putconn(conn)
        finally:
            self._release_user(g)

    def connection(self, timeout: float | None = None) -> "_Checkout":
        """A connection checked out for the block, as psycopg_pool's: the
        transaction committed on success, rolled back on an exception, the
        connection returned to the pool."""
        return _Checkout(self, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Closes the pool: checkouts fail from now on, idle connections
        close, those in use close when returned (waited for up to timeout),
        and the dbswap client closes if the pool made it."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
            gens = [g for g in (self._current, self._next, *self._retiring)
                    if g is not None]
        for remove in self._removers:
            try:
                remove()
            except Exception:
                pass
        self._post("stop")
        if self._worker is not None:
            self._worker.join(timeout)
        if self._retry_timer is not None:
            self._retry_timer.cancel()
        deadline = time.monotonic() + timeout
        with self._cond:
            while any(g.users for g in gens) and time.monotonic() < deadline:
                self._cond.wait(min(0.05, max(0.0, deadline - time.monotonic())))
        for g in gens:
            if g.drain_timer is not None:
                g.drain_timer.cancel()
            if g.pool is not None:
                g.pool.close(timeout=1.0)
        if self._client_arg is None and self._client is not None:
            self._client.close()

    def __enter__(self) -> "ConnectionPool":
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- state ----

    @property
    def target(self) -> str:
        return self._target

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def generation(self) -> int | None:
        """The generation checkouts get now (0: the environment's value),
        None before any value."""
        g = self._current
        return g.update.generation if g else None

    @property
    def client(self) -> Client | None:
        return self._client

    @property
    def min_size(self) -> int:
        return self._sizes()[0]

    @property
    def max_size(self) -> int:
        return self._sizes()[1]

    def get_stats(self) -> dict[str, int]:
        """The current value's psycopg_pool stats, and ``generations_open``
        (values with connections: 2 during a swap) and ``connections_out``
        (checked out, of every value)."""
        with self._lock:
            g = self._current
            gens = [x for x in (self._current, self._next, *self._retiring)
                    if x is not None]
            stats = dict(g.pool.get_stats()) if g and g.pool else {}
            stats["generations_open"] = sum(1 for x in gens if x.pool)
            stats["connections_out"] = sum(len(x.out) for x in gens)
        return stats

    def on_swap(self, fn: Callable[[dict[str, Any]], None]) -> None:
        """fn(info) after each switch (on the pool's thread): target,
        generation, reason, server, previous_generation, immediate."""
        self._on_swap.append(fn)

    def __repr__(self) -> str:
        return (f"<dbswap.psycopg.ConnectionPool target={self._target!r} "
                f"generation={self.generation!r} closed={self._closed}>")

    # ---- checkouts ----

    def _pick(self, deadline: float, timeout: float) -> _Gen:
        """The current value, counted as used (so that it is not finished
        under the checkout); waits for a first value until deadline."""
        with self._lock:  # the condition's: its wait() below may use it
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
                    if g.given_up and g.last_error is not None:
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
                self._cond.wait(left)

    def _release_user(self, g: _Gen) -> None:
        # The lock itself, not the condition: this runs for every checkout.
        # Only close() waits for users to go (checkouts wait for values).
        with self._lock:
            g.users -= 1
            done = g.retired and g.users == 0 and g in self._retiring
            if done:
                self._finish(g)
            if self._closed:
                self._cond.notify_all()
        if done:
            self._maybe_ack()

    def _no_value_error(self) -> DbswapError | None:
        """Why a checkout with no current value cannot wait for one, or
        None when one may come."""
        if self._closed:
            return ClientClosedError(f"the pool for {self._target} is closed")
        if self._subscribe_error is not None:
            e = self._subscribe_error
            err = type(e)(f"{self._target}: {e}", code=e.code,
                          target=self._target)
            return err
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

    def _grace_over(self) -> bool:
        return time.monotonic() - self._started >= AGENT_GRACE

    # ---- the worker ----

    def _post(self, *event: Any) -> None:
        self._events.put(event)

    def _on_client_error(self, err: DbswapError) -> None:
        if err.target == self._target:
            self._post("refused", err)

    def _work(self) -> None:
        while True:
            # Without a value yet, look at the environment from time to
            # time (no event says "no agent came").
            wait = 0.05 if self._current is None and self._next is None \
                else None
            try:
                ev = self._events.get(timeout=wait)
            except queue.Empty:
                ev = ("tick",)
            if ev[0] == "stop":
                return
            try:
                getattr(self, "_ev_" + ev[0])(*ev[1:])
            except Exception:
                logger.exception("dbswap: %s: handling %s failed",
                                 self._target, ev[0])

    def _ev_start(self) -> None:
        # A shared client may follow the target already: its value and
        # settings are this pool's too.
        c = self._client
        settings = c.settings(self._target)
        if settings is not None:
            self._ev_settings(settings)
        known = c.last_update(self._target)
        if known is not None:
            self._ev_update(known)
        self._subscribe()

    def _ev_tick(self) -> None:
        self._consider_env()
        with self._cond:
            self._cond.notify_all()  # checkouts re-read _no_value_error

    def _ev_connect(self) -> None:
        if self._subscribe_error is not None or not self._subscribing and \
                not self._client.subscribed(self._target):
            self._subscribe()

    def _ev_disconnect(self) -> None:
        self._consider_env()

    def _subscribe(self) -> None:
        if self._subscribing or self._closed:
            return
        self._subscribing = True
        c = self._client
        f = asyncio.run_coroutine_threadsafe(
            c.aio.subscribe(self._target, timeout=None), c.loop)
        f.add_done_callback(lambda f: self._post("subscribed", f))

    def _ev_subscribed(self, f: Any) -> None:
        self._subscribing = False
        try:
            f.result()
        except ClientClosedError:
            return
        except DbswapError as e:
            self._ev_refused(e)
            return
        except BaseException:
            return
        with self._cond:
            self._subscribe_error = None

    def _ev_refused(self, err: DbswapError) -> None:
        if self._closed:
            return
        logger.error("dbswap: %s: the agent refused the subscription: %s",
                     self._target, err)
        with self._cond:
            self._subscribe_error = err
            self._cond.notify_all()

    def _consider_env(self) -> None:
        """No agent: the environment's value, once it is clear none is
        there."""
        c = self._client
        if (self._closed or self._current or self._next or c is None
                or not self._grace_over() or c.connected
                or c.last_error is None):
            return
        value = os.environ.get(self._target)
        if not value:
            return
        if not self._warned_env:
            e = c.last_error
            logger.info("dbswap: no agent at %s (%s); using $%s from the "
                        "environment", c.socket_path,
                        getattr(e, "code", None) or e, self._target)
            self._warned_env = True
        g = _Gen(Update(self._target, 0, value, reason="environment"),
                 from_env=True)
        self._next = g
        self._start_warm(g)

    def _ev_update(self, update: Update) -> None:
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
        reconnect = update.reason == "reconnect"
        if not reconnect and cur is not None and \
                cur.update.same_value(update) and not cur.unavailable:
            # The value in use, renumbered (an agent restart): keep the
            # connections, ack the new number.
            with self._lock:
                cur.update, cur.acked, cur.from_env = update, False, False
            self._abandon_next()
            self._maybe_ack()
            return
        self._abandon_next()
        g = _Gen(update)
        urgent = g.unavailable or (cur is not None and (
            cur.unavailable or update.reason in _URGENT))
        if urgent:
            self._switch(g, destroy=True)
            if not g.unavailable:
                self._start_warm(g, probe_only=True)
        else:
            self._next = g
            self._start_warm(g)

    def _ev_renumber(self, update: Update) -> None:
        cur = self._current
        if cur is not None and not cur.from_env and \
                cur.update.same_value(update):
            with self._lock:
                cur.update, cur.acked = update, True
            self._abandon_next()
        else:
            self._ev_update(update)

    def _ev_settings(self, settings: Settings) -> None:
        if settings.target != self._target:
            return
        self._settings = settings
        self._timeout = self._effective("timeout")
        lo, hi = self._sizes()
        with self._lock:
            gens = [g for g in (self._current, self._next) if g and g.pool]
        for g in gens:
            assert g.pool is not None
            g.pool.resize(lo, hi)
            g.pool.timeout = self._effective("timeout")
            g.pool.max_idle = self._effective("max_idle")

    def _ev_opened(self, g: _Gen) -> None:
        self._maybe_ack()

    def _ev_retry(self, g: _Gen) -> None:
        if g is self._next and not self._closed:
            self._start_warm(g)

    # ---- values ----

    def _effective(self, key: str) -> Any:
        v = self._explicit.get(key)
        if v is not None:
            return v
        s = self._settings
        if s is not None:
            if key == "timeout" and s.pool_timeout_ms is not None:
                return s.pool_timeout_ms / 1000
            if key == "max_idle" and s.pool_idle_timeout_ms is not None:
                return s.pool_idle_timeout_ms / 1000
        return {"timeout": DEFAULT_TIMEOUT, "max_idle": DEFAULT_MAX_IDLE}[key]

    def _sizes(self) -> tuple[int, int]:
        s = self._settings
        hi = self._explicit["max_size"] or (s and s.pool_max) or \
            DEFAULT_MAX_SIZE
        lo = self._explicit["min_size"]
        if lo is None:
            lo = s.pool_min if s and s.pool_min is not None \
                else DEFAULT_MIN_SIZE
        return min(lo, hi), hi

    def _make_pool(self, g: _Gen) -> psycopg_pool.ConnectionPool:
        lo, hi = self._sizes()
        return psycopg_pool.ConnectionPool(
            g.update.conninfo,
            kwargs=_connect_kwargs(g.update.conninfo, self._kwargs), min_size=lo,
            max_size=hi, timeout=self._effective("timeout"),
            max_idle=self._effective("max_idle"), open=False,
            name=f"dbswap-{self._target}-{g.update.generation}",
            **self._pool_args)

    def _start_warm(self, g: _Gen, probe_only: bool = False) -> None:
        """Tries g on a thread of its own: a probe connection (its error is
        what a nack says), then, unless probe_only, its pool opened and
        filled to min_size.  Posts ("warmed", g, error)."""
        def run() -> None:
            err: BaseException | None = None
            try:
                params = pg_conninfo.conninfo_to_dict(g.update.conninfo)
                extra = dict(self._kwargs)
                if "connect_timeout" not in params:
                    extra["connect_timeout"] = max(1, int(self._warm_timeout))
                extra.pop("autocommit", None)
                extra.pop("row_factory", None)
                extra.pop("prepare_threshold", None)
                with psycopg.connect(g.update.conninfo, **extra):
                    pass
                if not probe_only:
                    pool = self._make_pool(g)
                    lo = self._sizes()[0]
                    try:
                        pool.open(wait=lo > 0, timeout=self._warm_timeout)
                    except BaseException:
                        pool.close(timeout=0)
                        raise
                    g.pool = pool
            except Exception as e:
                err = e
            self._post("warmed", g, err, probe_only)
        threading.Thread(target=run, name="dbswap-probe", daemon=True).start()

    def _ev_warmed(self, g: _Gen, err: BaseException | None,
                   probe_only: bool) -> None:
        if err is None:
            with self._lock:
                g.opened = True
            if g is self._next and not self._closed:
                self._switch(g, destroy=False)
            elif g is not self._current and g.pool is not None:
                g.pool.close(timeout=0)  # abandoned meanwhile
            self._maybe_ack()
            return
        if g is not self._next and g is not self._current:
            return
        g.failures += 1
        g.last_error = err
        line = self._error_line(g, err)
        auth = _is_auth_error(err)
        if auth:
            g.auth_failures += 1
        if auth and g.auth_failures >= AUTH_TRIES:
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
            t = threading.Timer(delay, self._post, ("retry", g))
            t.daemon = True
            t.start()
            self._retry_timer = t
        else:
            logger.warning("dbswap: %s: cannot open a connection with %s: %s",
                           self._target, g.describe(self._target), line)
        if not g.from_env and self._client is not None:
            msg = truncate_utf8(f"cannot connect with generation "
                                f"{g.update.generation} from pid "
                                f"{os.getpid()}: {line}", NACK_MESSAGE_MAX)
            try:
                self._client.nack(g.update, msg)
            except DbswapError:
                pass
        with self._cond:
            self._cond.notify_all()

    def _error_line(self, g: _Gen, err: BaseException) -> str:
        text = " ".join(str(err).split())
        return redact(text, g.update.conninfo)

    def _abandon_next(self) -> None:
        g = self._next
        if g is None:
            return
        self._next = None
        if self._retry_timer is not None:
            self._retry_timer.cancel()
        if g.pool is not None:
            g.pool.close(timeout=0)

    def _switch(self, g: _Gen, destroy: bool) -> None:
        """Makes g the current value; the old one drains (or, destroy,
        has its busy connections shut down now)."""
        if g.pool is None and not g.unavailable:
            g.pool = self._make_pool(g)
            g.pool.open(wait=False)
        with self._cond:
            old = self._current
            if self._next is g:
                self._next = None
            self._current = g
            busy = len(old.out) if old else 0
            if old is not None:
                self._retire(old, destroy)
            if destroy:
                # A failover: the older values still draining were on the
                # dead server too.
                for r in self._retiring:
                    for conn in list(r.out):
                        _shutdown(conn)
            self._cond.notify_all()
        what = g.describe(self._target)
        if g.unavailable:
            logger.error("dbswap: %s: no database server is available (the "
                         "agent reports the primary and the secondary down);"
                         " checkouts fail at once until one is back",
                         self._target)
        elif old is not None and destroy:
            logger.warning("dbswap: %s: %s to the %s (%s): %d busy "
                           "connection(s) on the old server shut down",
                           self._target, g.update.reason, g.update.server,
                           what, busy)
        elif old is not None:
            logger.info("dbswap: %s: switched to %s; %d busy connection(s) on "
                        "the old value close when returned", self._target,
                        what, busy)
        info = {"target": self._target, "generation": g.update.generation,
                "reason": g.update.reason, "server": g.update.server,
                "previous_generation": old.update.generation if old else None,
                "immediate": destroy, "from_environment": g.from_env}
        for fn in list(self._on_swap):
            try:
                fn(info)
            except Exception:
                logger.exception("dbswap: an on_swap callback failed")
        self._maybe_ack()

    def _retire(self, g: _Gen, destroy: bool) -> None:
        """Under the lock: g's pool closes (idle connections now, busy ones
        when returned); busy ones are shut down now (destroy) or at the
        drain deadline."""
        g.retired = True
        self._retiring.add(g)
        if g.pool is not None:
            # psycopg_pool fails the checkouts waiting on it only once its
            # workers stopped (or the timeout passed); on a failover one may
            # be connecting to a hung server: a short wait (the others stop
            # well within it).
            threading.Thread(target=g.pool.close,
                             kwargs={"timeout": 0.1 if destroy else 1.0},
                             name="dbswap-close", daemon=True).start()
        if destroy:
            for conn in list(g.out):
                _shutdown(conn)
        elif g.users:
            def deadline() -> None:
                with self._lock:
                    busy = list(g.out)
                if busy:
                    logger.warning("dbswap: %s: %d connection(s) of %s still "
                                   "busy at the drain deadline: shut down",
                                   self._target, len(busy),
                                   g.describe(self._target))
                with self._lock:
                    for conn in list(g.out):
                        _shutdown(conn)
            g.drain_timer = threading.Timer(self._drain_timeout, deadline)
            g.drain_timer.daemon = True
            g.drain_timer.start()
        if g.users == 0:
            self._finish(g)

    def _finish(self, g: _Gen) -> None:
        """Under the lock: no connection of g is left."""
        self._retiring.discard(g)
        if g.drain_timer is not None:
            g.drain_timer.cancel()

    def _maybe_ack(self) -> None:
        """Acks the current generation once no connection of an older value
        is left (and one of its own opened)."""
        with self._lock:
            g = self._current
            if (g is None or g.from_env or g.acked or self._retiring
                    or self._closed or not (g.opened or g.unavailable)):
                return
            g.acked = True
            update = g.update
        try:
            if self._client is not None:
                self._client.ack(update)
        except DbswapError as e:
            logger.warning("dbswap: %s: ack failed: %s", self._target, e)


# The asyncio twin, on psycopg_pool.AsyncConnectionPool (imported last: it
# builds on this module's pieces).
from ._psycopg_async import AsyncConnectionPool  # noqa: E402

__all__ += ["AsyncConnectionPool"]
