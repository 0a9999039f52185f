"""The connection to dbswapd for asyncio: handshake (version 2, falling
back to 1), per-target subscriptions, updates and settings, acks and
nacks, requests with ids and timeouts, and reconnection with backoff.  The
same behaviour as libdbswap's client.c and the Node client.

One task owns the connection: it connects, says hello, then reads frames
and resolves each reply by its ``id``; updates go to callbacks and to the
async iterators of updates().  Writes go straight to the transport's
buffer, so ack() and nack() need no await.

Agent instances: each run of the agent has an id, and its generation
numbers mean something only with it.  An ack or nack goes out only when
the connected agent is the update's instance, so an ack meant for an
earlier run is never counted for the same number of this one.  A value the
app already acked that comes again (the agent restarted, or the client
reconnected) is acked quietly, without an update callback.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable

from . import protocol as P
from ._util import backoff, logger, program_name, truncate_utf8
from .conninfo import redact
from .errors import (AgentTimeoutError, ClientClosedError, DbswapError,
                     DisconnectedError, LimitError, NotSubscribedError,
                     ProtocolViolation, error_for_code)
from .types import SessionInfo, Settings, Update

__all__ = ["AsyncClient", "RECONNECT_FIRST", "RECONNECT_MAX",
           "SESSION_STABLE", "REQUEST_TIMEOUT"]

#: Reconnection backoff, seconds: the first retry comes quickly (an agent
#: restarted by systemd is back within milliseconds), then it doubles, up to
#: 2 s so that a client is back within 2 s of the agent's return.
RECONNECT_FIRST = 0.020
RECONNECT_MAX = 2.0
#: Only a session that stayed up this long after its hello starts the
#: backoff over: an agent that refuses or breaks right after hello is not
#: hammered (PROTOCOL.md, Session).
SESSION_STABLE = 2.0
#: Default time a request waits for its answer, and a connection attempt
#: for the agent's hello (a stopped agent's socket may still accept).
REQUEST_TIMEOUT = 5.0
#: The same violation by the agent is logged at most once in this.
_VIOLATION_REPEAT = 60.0

_TARGET_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DEFAULT: Any = object()


def check_target(target: Any) -> str:
    if (type(target) is not str or not _TARGET_RE.fullmatch(target)
            or len(target) > P.NAME_MAX):
        raise ValueError(f"not a target name: {target!r} (letters, digits "
                         f"and _, not starting with a digit)")
    return target


class _Subscription:
    __slots__ = ("target", "active", "conninfo", "server", "standby",
                 "delivered", "instance", "acked", "last", "settings")

    def __init__(self, target: str) -> None:
        self.target = target
        self.active = False        # the agent accepted it
        self.conninfo: str | None = None  # last value delivered (secret)
        self.server: str | None = None
        self.standby = False
        self.delivered = 0         # its generation
        self.instance: str | None = None  # and the agent run numbering it
        self.acked = False         # the app acked the delivered value
        self.last: Update | None = None
        self.settings: Settings | None = None


class _Request:
    __slots__ = ("msg", "future", "retry", "id", "late", "started")

    def __init__(self, msg: dict[str, Any], future: asyncio.Future,
                 retry: bool) -> None:
        self.msg = msg
        self.future = future
        self.retry = retry  # sent again in the next session if unanswered
        self.id = 0         # 0: not sent in this session
        self.late: Callable[[DbswapError | None], None] | None = None
        self.started = 0.0


class _Lost(Exception):
    """The session ended (EOF, reset): the message says how."""


class AsyncClient:
    """A connection to dbswapd, for asyncio.

    ``async with AsyncClient() as client:`` (or ``await client.start()``
    and ``await client.aclose()``).  The socket is ``socket``, else
    $DBSWAP_SOCKET, else /run/dbswap/dbswap.sock.  ``name`` is shown in the
    agent's status (default: the script's name).  ``request_timeout``
    (seconds, None: for ever) bounds each request and each hello.

    Callbacks (plain functions or coroutine functions, run on the loop;
    each returns a function that removes it): on_update(Update),
    on_settings(Settings), on_connect(SessionInfo), on_disconnect(exc),
    on_error(DbswapError): an error from the agent that answers no request
    (a re-subscribe refused after a reconnection: ``exc.target`` names the
    target), or a protocol violation of the agent's.
    """

    def __init__(self, socket: str | os.PathLike[str] | None = None, *,
                 name: str | None = None,
                 request_timeout: float | None = REQUEST_TIMEOUT) -> None:
        path = socket or os.environ.get("DBSWAP_SOCKET") or P.DEFAULT_SOCKET
        self._path = os.fspath(path)
        name = program_name() if name is None else str(name)
        self._name = truncate_utf8(name.replace("\0", "?") or "python",
                                   P.NAME_MAX)
        self._timeout = request_timeout
        self._subs: dict[str, _Subscription] = {}
        self._pending: list[_Request] = []
        self._sent: dict[int, _Request] = {}
        self._next_id = 0
        self._writer: asyncio.StreamWriter | None = None
        self._session: SessionInfo | None = None
        self._offer = P.PROTOCOL_VERSION
        self._closed = False
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_error: BaseException | None = None
        self._warned_down = False
        self._cbs: dict[str, list[Callable[..., Any]]] = {
            k: [] for k in ("update", "settings", "connect", "disconnect",
                            "error", "renumber")}
        self._iterators: set[_UpdateIterator] = set()
        self._tasks: set[asyncio.Task] = set()
        self._violation_said = -1e9
        self._violation_last = ""
        self._violation_quiet = 0

    # ---- lifecycle ----

    async def start(self) -> "AsyncClient":
        """Starts connecting (in the background; returns at once)."""
        if self._closed:
            raise ClientClosedError("the client is closed")
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(self._run(),
                                                name="dbswap-client")
        return self

    async def __aenter__(self) -> "AsyncClient":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the connection, fails what waits for the agent
        (ClientClosedError), ends the iterators.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except BaseException:  # cancelled, or it had failed: both done
                pass
        for t in list(self._tasks):
            t.cancel()
        for req in list(self._pending):
            self._settle(req, ClientClosedError("the client was closed"))
        for it in list(self._iterators):
            it.end(None)
        self._iterators.clear()

    # ---- state ----

    @property
    def socket_path(self) -> str:
        return self._path

    @property
    def connected(self) -> bool:
        """True while a session with the agent is up (hello answered)."""
        return self._session is not None

    @property
    def session(self) -> SessionInfo | None:
        return self._session

    @property
    def instance(self) -> str | None:
        """The connected agent's instance (None when not connected, or
        from a version-1 agent)."""
        return self._session.instance if self._session else None

    @property
    def version(self) -> int | None:
        return self._session.version if self._session else None

    @property
    def last_error(self) -> BaseException | None:
        """Why the last connection attempt failed (None once connected)."""
        return self._last_error

    @property
    def closed(self) -> bool:
        return self._closed

    def last_update(self, target: str) -> Update | None:
        sub = self._subs.get(target)
        return sub.last if sub else None

    def settings(self, target: str) -> Settings | None:
        sub = self._subs.get(target)
        return sub.settings if sub else None

    def subscribed(self, target: str) -> bool:
        """Whether the agent accepted target (and it is followed across
        reconnections)."""
        sub = self._subs.get(target)
        return bool(sub and sub.active)

    def __repr__(self) -> str:
        return (f"<AsyncClient socket={self._path!r} name={self._name!r} "
                f"connected={self.connected} instance={self.instance!r} "
                f"targets={list(self._subs)!r}>")

    # ---- callbacks ----

    def _on(self, kind: str, fn: Callable[..., Any]) -> Callable[[], None]:
        self._cbs[kind].append(fn)

        def remove() -> None:
            try:
                self._cbs[kind].remove(fn)
            except ValueError:
                pass
        return remove

    def on_update(self, fn: Callable[[Update], Any]) -> Callable[[], None]:
        return self._on("update", fn)

    def on_settings(self, fn: Callable[[Settings], Any]) -> Callable[[], None]:
        return self._on("settings", fn)

    def on_connect(self, fn: Callable[[SessionInfo], Any]) -> Callable[[], None]:
        return self._on("connect", fn)

    def on_disconnect(self, fn: Callable[[BaseException], Any]) -> Callable[[], None]:
        return self._on("disconnect", fn)

    def on_error(self, fn: Callable[[DbswapError], Any]) -> Callable[[], None]:
        return self._on("error", fn)

    def _on_renumber(self, fn: Callable[[Update, bool], Any]) -> Callable[[], None]:
        """For pools: the client acked the value in use again under a new
        number (update, whether the ack was sent)."""
        return self._on("renumber", fn)

    def _emit(self, kind: str, *args: Any) -> None:
        for fn in list(self._cbs[kind]):
            try:
                r = fn(*args)
                if inspect.isawaitable(r):
                    self._spawn(r)
            except Exception:
                logger.exception("dbswap: a %s callback failed", kind)

    def _spawn(self, aw: Awaitable[Any]) -> None:
        async def run() -> None:
            try:
                await aw
            except Exception:
                logger.exception("dbswap: a callback failed")
        t = asyncio.ensure_future(run())
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def _error(self, err: DbswapError) -> None:
        if self._cbs["error"]:
            self._emit("error", err)
        else:
            logger.error("dbswap: %s", err)

    # ---- the connection ----

    async def _run(self) -> None:
        attempt = 0
        while not self._closed:
            stable = fallback = False
            try:
                reader, writer = await asyncio.open_unix_connection(
                    self._path, limit=P.FRAME_MAX + P.FRAME_HEADER)
            except OSError as e:
                self._down(e, f"{e.strerror or e}")
            else:
                try:
                    stable, fallback = await self._serve(reader, writer)
                except Exception:  # a bug here must not end reconnection
                    logger.exception("dbswap: the session with the agent at "
                                     "%s failed", self._path)
                finally:
                    self._session = None
                    self._writer = None
                    writer.close()
            if self._closed:
                return
            if fallback:
                continue  # at once, offering the older version
            self._offer = P.PROTOCOL_VERSION  # the agent may come back newer
            if stable:
                attempt = 0
            delay = backoff(attempt, RECONNECT_FIRST, RECONNECT_MAX)
            attempt += 1
            await asyncio.sleep(delay)

    def _down(self, err: BaseException, why: str) -> None:
        """A connection attempt failed: said once until a session starts."""
        self._last_error = err
        if not self._warned_down:
            logger.warning("dbswap: cannot reach the agent at %s: %s; "
                           "retrying", self._path, why)
            self._warned_down = True

    async def _read(self, reader: asyncio.StreamReader) -> dict[str, Any]:
        try:
            header = await reader.readexactly(P.FRAME_HEADER)
            # An oversized frame is refused before its body is read.
            body = await reader.readexactly(P.frame_length(header))
        except asyncio.IncompleteReadError:
            raise _Lost("connection closed") from None
        except ConnectionResetError:
            # The agent closed with our messages unread in its socket: the
            # same as end-of-file (PROTOCOL.md).
            raise _Lost("connection closed") from None
        except OSError as e:
            raise _Lost(e.strerror or str(e)) from None
        return P.decode_message(body)

    def _write(self, msg: dict[str, Any]) -> None:
        assert self._writer is not None
        self._writer.write(P.encode_message(msg))

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def _serve(self, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> tuple[bool, bool]:
        """One connection: hello, then messages until it ends.  Returns
        (stable, fallback): whether the session lasted SESSION_STABLE,
        and whether to connect again at once offering an older version."""
        self._writer = writer
        hello_id = self._new_id()
        try:
            self._write({"type": "hello", "id": hello_id,
                         "version": self._offer, "name": self._name,
                         "pid": os.getpid()})
            msg = await asyncio.wait_for(self._read(reader), self._timeout)
        except TimeoutError:
            self._writer = None
            self._down(AgentTimeoutError(
                f"the agent at {self._path} did not answer hello within "
                f"{self._timeout} s"), "it did not answer hello in time")
            return False, False
        except _Lost as e:
            self._writer = None
            self._down(DisconnectedError(
                f"the agent at {self._path} closed the connection before "
                f"answering hello"), str(e))
            return False, False
        except ProtocolViolation as e:
            self._writer = None
            self._violation(e, before_hello=True)
            return False, False
        if msg["type"] == "error":
            self._writer = None
            code = msg["code"]
            if (msg.get("id") == hello_id and code == "version"
                    and self._offer > P.PROTOCOL_VERSION_MIN):
                logger.info("dbswap: the agent at %s does not speak protocol "
                            "version %d; using version %d (its acks cannot "
                            "be told from those for an earlier run of the "
                            "agent)", self._path, self._offer,
                            self._offer - 1)
                self._offer -= 1
                return False, True
            err = error_for_code(code, f"the agent at {self._path} refused "
                                 f"the connection: {code}: {msg['message']}")
            self._last_error = err
            self._error(err)
            return False, False
        why = None
        if msg["type"] != "hello":
            why = f"a {msg['type']} message came before the agent's hello"
        elif msg.get("id") != hello_id:
            why = "the agent's hello does not answer ours"
        elif msg["version"] != self._offer:
            why = (f"the agent answered hello with version {msg['version']}"
                   f", not {self._offer}")
        elif msg["version"] >= 2 and "instance" not in msg:
            why = "the agent's hello has no instance"
        if why:
            self._writer = None
            self._violation(ProtocolViolation(why), before_hello=True)
            return False, False

        self._session = SessionInfo(msg["version"], msg.get("instance"),
                                    msg["name"], msg["pid"])
        started = time.monotonic()
        self._last_error = None
        if self._warned_down:
            logger.info("dbswap: connected to the agent at %s", self._path)
        self._warned_down = False
        end: BaseException
        try:
            self._emit("connect", self._session)
            for sub in list(self._subs.values()):
                if sub.active:
                    self._resubscribe(sub.target)
            for req in list(self._pending):
                if not req.id:
                    self._send(req)
            while not self._closed:
                self._handle(await self._read(reader))
            end = ClientClosedError("the client was closed")
        except _Lost as e:
            logger.warning("dbswap: lost the agent at %s (%s); keeping the "
                           "last values and reconnecting", self._path, e)
            self._warned_down = True
            end = DisconnectedError(f"lost the agent at {self._path} ({e})")
        except ProtocolViolation as e:
            self._violation(e, before_hello=False)
            end = e
        finally:
            self._session = None
            self._writer = None
            for req in list(self._sent.values()):
                if req.late is not None:
                    del self._sent[req.id]
                    continue
                # A subscribe is sent again in the next session; anything
                # else may have been done, or not: the caller decides.
                del self._sent[req.id]
                req.id = 0
                if not req.retry:
                    self._settle(req, DisconnectedError(
                        f"lost the connection to the agent at {self._path} "
                        f"before it answered"))
        self._emit("disconnect", end)
        return time.monotonic() - started >= SESSION_STABLE, False

    def _violation(self, err: ProtocolViolation, before_hello: bool) -> None:
        """The agent broke the protocol: a clear error, and a new
        connection."""
        e = ProtocolViolation(f"bad message from the agent at {self._path}: "
                              f"{err}; reconnecting")
        if before_hello:
            self._last_error = e
        if self._cbs["error"]:
            self._emit("error", e)
            return
        # An agent that does the same at every session: logged once a
        # minute.
        now = time.monotonic()
        if str(err) != self._violation_last or \
                now - self._violation_said >= _VIOLATION_REPEAT:
            more = (f" ({self._violation_quiet} more times since it was last "
                    f"said)" if self._violation_quiet else "")
            self._violation_last = str(err)
            self._violation_said = now
            self._violation_quiet = 0
            logger.error("dbswap: %s%s", e, more)
        else:
            self._violation_quiet += 1

    def _handle(self, msg: dict[str, Any]) -> None:
        mtype = msg["type"]
        spec = P.MESSAGES.get(mtype)
        if spec is None:
            return  # a type newer than this client
        if spec.sender == "client":
            raise ProtocolViolation(f"a {mtype} message, which only clients "
                                    f"send")
        if mtype == "hello":
            raise ProtocolViolation("a second hello")
        if mtype == "update":
            return self._on_update_msg(msg)
        if mtype == "settings":
            return self._on_settings_msg(msg)
        # ok, status, error: a reply, or an error that answers nothing
        req = self._sent.pop(msg["id"], None) if "id" in msg else None
        if req is not None:
            if req.late is not None:
                req.late(self._reply_error(req, msg)
                         if mtype == "error" else None)
                return
            return self._on_reply(req, msg)
        if mtype == "error":
            self._error(error_for_code(
                msg["code"], f"the agent at {self._path} says: "
                f"{msg['code']}: {msg['message']}"))

    # ---- updates ----

    def _on_update_msg(self, msg: dict[str, Any]) -> None:
        session = self._session
        assert session is not None
        instance = msg.get("instance")
        if session.version >= 2 and instance is None:
            raise ProtocolViolation("an update without instance")
        if session.instance and instance is not None and \
                instance != session.instance:
            raise ProtocolViolation("an update numbered by another agent "
                                    "instance")
        sub = self._subs.get(msg["target"])
        if sub is None:
            return
        update = Update.from_message(msg)
        # A reconnect repeats the value on purpose: the app must replace
        # its connections.  Only a new one does: the agent sends the
        # current generation again whenever the client subscribes again.
        renew = update.reason == "reconnect" and not (
            update.generation == sub.delivered and instance == sub.instance)
        if (sub.conninfo is not None and sub.acked and not renew
                and (sub.conninfo, sub.server, sub.standby)
                == (update.conninfo, update.server, update.standby)):
            # The value in use again, renumbered: ack it quietly.
            sub.delivered, sub.instance, sub.last = \
                update.generation, instance, update
            sent = self._send_ack(sub.target, update.generation, instance)
            self._emit("renumber", update, sent)
            return
        sub.conninfo, sub.server, sub.standby = \
            update.conninfo, update.server, update.standby
        sub.delivered, sub.instance = update.generation, instance
        sub.acked = False
        sub.last = update
        self._emit("update", update)
        for it in list(self._iterators):
            it.push(update)

    def _on_settings_msg(self, msg: dict[str, Any]) -> None:
        sub = self._subs.get(msg["target"])
        if sub is None:
            return
        sub.settings = Settings.from_message(msg)
        self._emit("settings", sub.settings)

    # ---- requests ----

    async def _request(self, msg: dict[str, Any], timeout: Any = _DEFAULT,
                       retry: bool = False,
                       late: Callable[[DbswapError | None], None] | None = None
                       ) -> Any:
        if self._closed:
            raise ClientClosedError("the client is closed")
        await self.start()
        assert self._loop is not None
        req = _Request(msg, self._loop.create_future(), retry)
        self._pending.append(req)
        if self._session is not None:
            self._send(req)
        wait = self._timeout if timeout is _DEFAULT else timeout
        try:
            return await asyncio.wait_for(asyncio.shield(req.future), wait)
        except (TimeoutError, asyncio.CancelledError) as e:
            if req.future.done() and not req.future.cancelled() and \
                    isinstance(e, TimeoutError):
                return req.future.result()
            was_sent = req.id != 0
            self._settle(req, None, None, quiet=True)
            if was_sent and late is not None:
                # Its answer may still come: what the agent did is then
                # known (a subscribe it accepted).
                req.late = late
                self._sent[req.id] = req
            if isinstance(e, asyncio.CancelledError):
                raise
            raise AgentTimeoutError(f"the agent at {self._path} did not "
                                    f"answer {msg['type']} within {wait} s",
                                    target=msg.get("target")) from None

    def _send(self, req: _Request) -> None:
        req.id = self._new_id()
        self._sent[req.id] = req
        req.started = time.monotonic()
        self._write({**req.msg, "id": req.id})

    def _settle(self, req: _Request, exc: BaseException | None,
                value: Any = None, quiet: bool = False) -> None:
        try:
            self._pending.remove(req)
        except ValueError:
            return
        if req.id:
            self._sent.pop(req.id, None)
        if quiet or req.future.done():
            return
        if exc is not None:
            req.future.set_exception(exc)
            # Nobody may wait for it any more (a caller that timed out).
            req.future.exception()
        else:
            req.future.set_result(value)

    def _reply_error(self, req: _Request, msg: dict[str, Any]) -> DbswapError:
        targets = req.msg.get("targets") or [req.msg.get("target")]
        return error_for_code(msg["code"], f"the agent at {self._path} says: "
                              f"{msg['code']}: {msg['message']}",
                              target=targets[0] if targets else None)

    def _on_reply(self, req: _Request, msg: dict[str, Any]) -> None:
        mtype = msg["type"]
        if req.msg["type"] == "ping" and (
                mtype == "ok" or (mtype == "error"
                                  and msg["code"] == "unknown-type")):
            # A version-1 agent has no ping: its unknown-type shows it
            # alive just the same.
            return self._settle(req, None, time.monotonic() - req.started)
        if mtype == "error":
            return self._settle(req, self._reply_error(req, msg))
        if req.msg["type"] == "status" and mtype != "status":
            return self._settle(req, ProtocolViolation(
                f"the agent at {self._path} answered status with {mtype}"))
        reply = {k: v for k, v in msg.items() if k not in ("type", "id")}
        self._settle(req, None, reply)

    async def subscribe(self, targets: str | Iterable[str], *,
                        timeout: float | None = _DEFAULT) -> None:
        """Follows each target: the agent sends its current value (an
        update callback), its settings, then answers.  Each target is
        subscribed on its own request, so one refused (unknown, forbidden,
        a limit) takes no other down: the first refusal is raised
        (UnknownTargetError, ForbiddenError, ...; ``exc.target`` names it)
        once every answer is in, and the targets accepted stay followed,
        across reconnections.  Before the agent is reachable a request
        waits, at most ``timeout``."""
        names = [targets] if isinstance(targets, str) else list(targets)
        unique = list(dict.fromkeys(check_target(t) for t in names))
        added = [t for t in unique if t not in self._subs]
        if len(self._subs) + len(added) > P.SUBSCRIBE_MAX:
            raise LimitError(f"a client may follow at most {P.SUBSCRIBE_MAX}"
                             f" targets")
        results = await asyncio.gather(
            *(self._subscribe_one(t, timeout) for t in unique),
            return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def _subscribe_one(self, target: str, timeout: Any) -> None:
        sub = self._subs.get(target)
        if sub is None:
            sub = self._subs[target] = _Subscription(target)

        def drop() -> None:
            s = self._subs.get(target)
            if s is not None and not s.active:
                del self._subs[target]

        def late(err: DbswapError | None) -> None:
            # Timed out once sent: the agent may still take it.
            if err is not None:
                drop()
            elif target in self._subs:
                self._subs[target].active = True
        try:
            await self._request({"type": "subscribe", "targets": [target]},
                                timeout, retry=True, late=late)
        except AgentTimeoutError:
            if not self._sent_for(target):
                drop()
            raise
        except BaseException:
            drop()
            raise
        sub.active = True

    def _sent_for(self, target: str) -> bool:
        return any(r.late is not None and r.msg.get("targets") == [target]
                   for r in self._sent.values())

    def _resubscribe(self, target: str) -> None:
        """At each new session, one subscribe per target: a target the agent
        no longer has fails alone, as an error callback."""
        async def run() -> None:
            try:
                await self._request({"type": "subscribe",
                                     "targets": [target]}, None)
            except (DisconnectedError, ClientClosedError):
                pass
            except DbswapError as e:
                e.target = target
                self._error(e)
        t = asyncio.ensure_future(run())
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def ack(self, update: Update) -> bool:
        """Tells the agent the app now uses the update's generation.  Sent
        only if the connected agent is the instance that numbered it and
        gave this client that generation (or a newer one).  While
        disconnected the ack is remembered: the value is acked quietly when
        the agent sends it again.  Returns whether an ack was sent now."""
        sub = self._subs.get(update.target)
        if sub is None:
            raise NotSubscribedError(f"not subscribed to {update.target}",
                                     target=update.target)
        if not update.generation or update.instance != sub.instance or \
                update.generation > sub.delivered:
            return False
        if update.generation == sub.delivered:
            sub.acked = True
        if not self._agent_is(update.instance):
            return False
        return self._send_ack(update.target, update.generation,
                              update.instance)

    def nack(self, update: Update, message: str) -> bool:
        """Tells the agent the app cannot switch to the update's generation
        and why (shown in ``dbswapctl status``): cut to 1024 bytes, the
        update's secrets masked.  Returns whether a nack was sent."""
        if update.target not in self._subs:
            raise NotSubscribedError(f"not subscribed to {update.target}",
                                     target=update.target)
        if not update.generation or not self._agent_is(update.instance):
            return False
        text = redact(str(message).replace("\0", "?"), update.conninfo)
        msg: dict[str, Any] = {
            "type": "nack", "target": update.target,
            "generation": update.generation,
            "message": truncate_utf8(text, P.NACK_MESSAGE_MAX)}
        if update.instance:
            msg["instance"] = update.instance
        self._write(msg)
        return True

    def _agent_is(self, instance: str | None) -> bool:
        return self._session is not None and \
            self._session.instance == instance

    def _send_ack(self, target: str, generation: int,
                  instance: str | None) -> bool:
        if self._session is None:
            return False
        msg: dict[str, Any] = {"type": "ack", "target": target,
                               "generation": generation}
        if instance:
            msg["instance"] = instance
        self._write(msg)
        return True

    async def status(self, *, timeout: float | None = _DEFAULT) -> dict[str, Any]:
        """The agent's status (PROTOCOL.md, "status"): agent, targets,
        files, keys.  Connection strings in it come masked by the agent."""
        return await self._request({"type": "status"}, timeout)

    async def ping(self, *, timeout: float | None = _DEFAULT) -> float:
        """Checks that the agent's loop answers: the round trip, seconds."""
        return await self._request({"type": "ping"}, timeout)

    async def reload(self, *, timeout: float | None = _DEFAULT) -> None:
        """The agent re-reads its env files (admin)."""
        await self._request({"type": "reload"}, timeout)

    async def reconnect(self, target: str | None = None, *,
                        timeout: float | None = _DEFAULT) -> int | None:
        """The agent publishes target's value again (every target's without
        one), so pools replace every connection (admin).  The new
        generation for a single target, when one was published."""
        msg: dict[str, Any] = {"type": "reconnect"}
        if target is not None:
            msg["target"] = check_target(target)
        return (await self._request(msg, timeout)).get("generation")

    async def failover(self, target: str, *, force: bool = False,
                       timeout: float | None = _DEFAULT) -> int | None:
        """Switches target to its secondary now (admin); the generation."""
        return await self._switch("failover", target, force, timeout)

    async def failback(self, target: str, *, force: bool = False,
                       timeout: float | None = _DEFAULT) -> int | None:
        """Switches target back to its primary now (admin)."""
        return await self._switch("failback", target, force, timeout)

    async def _switch(self, kind: str, target: str, force: bool,
                      timeout: Any) -> int | None:
        msg: dict[str, Any] = {"type": kind, "target": check_target(target)}
        if force:
            msg["force"] = True
        return (await self._request(msg, timeout)).get("generation")

    def updates(self, target: str | None = None) -> AsyncIterator[Update]:
        """The updates of target (of every subscribed target without one):
        first the value in force, if one came already, then each new one.
        Subscribes to target if needed (a refusal ends the iteration with
        its error).  Ends when the client is closed."""
        if target is not None:
            check_target(target)
        it = _UpdateIterator(target, self._iterators.discard)
        for sub in self._subs.values():
            if sub.last is not None and target in (None, sub.target):
                it.push(sub.last)
        if self._closed:
            it.end(None)
            return it
        self._iterators.add(it)
        if target is not None and target not in self._subs:
            async def sub() -> None:
                try:
                    await self.subscribe(target, timeout=None)
                except DbswapError as e:
                    it.end(e)
            t = asyncio.ensure_future(sub())
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)
        return it


class _UpdateIterator:
    """The async iterator behind AsyncClient.updates()."""

    def __init__(self, target: str | None,
                 detach: Callable[["_UpdateIterator"], None]) -> None:
        self._target = target
        self._detach = detach
        self._queue: asyncio.Queue[Update | None] = asyncio.Queue()
        self._done = False
        self._error: BaseException | None = None

    def push(self, update: Update) -> None:
        if not self._done and self._target in (None, update.target):
            self._queue.put_nowait(update)

    def end(self, err: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        self._error = err
        self._detach(self)
        self._queue.put_nowait(None)

    def __aiter__(self) -> "_UpdateIterator":
        return self

    async def __anext__(self) -> Update:
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # for the next call too
            err, self._error = self._error, None
            if err is not None:
                raise err
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        self.end(None)
