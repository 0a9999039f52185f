"""The connection to dbswapd for threaded code: an AsyncClient run on an
event loop in a background thread of its own ("dbswap-client"), one source
of truth for the protocol.  Blocking methods wait for the loop's answer;
callbacks run on the background thread and must not block (a pool hands
the work to a thread of its own).
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from typing import Any, Callable, Coroutine, Iterable, Iterator, TypeVar

from .aio import REQUEST_TIMEOUT, AsyncClient, _DEFAULT
from .errors import DbswapError
from .types import SessionInfo, Settings, Update

__all__ = ["Client"]

T = TypeVar("T")


class Client:
    """A connection to dbswapd, for threads.  The same arguments,
    properties and methods as AsyncClient, blocking; use it as a context
    manager or call close().

    Callbacks (on_update, on_settings, on_connect, on_disconnect,
    on_error) run on the client's thread: they must return quickly.
    """

    def __init__(self, socket: str | os.PathLike[str] | None = None, *,
                 name: str | None = None,
                 request_timeout: float | None = REQUEST_TIMEOUT) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="dbswap-client", daemon=True)
        self._thread.start()
        self._closed = False

        async def make() -> AsyncClient:
            return await AsyncClient(socket, name=name,
                                     request_timeout=request_timeout).start()
        self._aio: AsyncClient = self._call(make())

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a blocking dbswap call from a dbswap "
                               "callback would wait for itself")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _in_loop(self, fn: Callable[[], T]) -> T:
        """fn() on the loop's thread (the client's state is that thread's)."""
        if threading.current_thread() is self._thread:
            return fn()

        async def run() -> T:
            return fn()
        return self._call(run())

    # ---- lifecycle ----

    def close(self) -> None:
        """Closes the connection and stops the thread.  Idempotent."""
        if self._closed:
            return
        self._closed = True

        async def shutdown() -> None:
            await self._aio.aclose()
            # The calls of other threads waiting on the loop were failed
            # (ClientClosedError): let them finish, so that their threads
            # hear of it, before the loop stops.
            me = asyncio.current_task()
            others = [t for t in asyncio.all_tasks() if t is not me]
            if others:
                _, pending = await asyncio.wait(others, timeout=1.0)
                for t in pending:
                    t.cancel()
        self._call(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def aio(self) -> AsyncClient:
        """The AsyncClient underneath (its loop is the client's thread)."""
        return self._aio

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    # ---- state ----

    @property
    def socket_path(self) -> str:
        return self._aio.socket_path

    @property
    def connected(self) -> bool:
        return self._aio.connected

    @property
    def session(self) -> SessionInfo | None:
        return self._aio.session

    @property
    def instance(self) -> str | None:
        return self._aio.instance

    @property
    def version(self) -> int | None:
        return self._aio.version

    @property
    def last_error(self) -> BaseException | None:
        return self._aio.last_error

    @property
    def closed(self) -> bool:
        return self._closed

    def last_update(self, target: str) -> Update | None:
        return self._aio.last_update(target)

    def settings(self, target: str) -> Settings | None:
        return self._aio.settings(target)

    def subscribed(self, target: str) -> bool:
        return self._aio.subscribed(target)

    def __repr__(self) -> str:
        return "<Client" + repr(self._aio)[len("<AsyncClient"):]

    # ---- callbacks ----

    def on_update(self, fn: Callable[[Update], Any]) -> Callable[[], None]:
        return self._in_loop(lambda: self._aio.on_update(fn))

    def on_settings(self, fn: Callable[[Settings], Any]) -> Callable[[], None]:
        return self._in_loop(lambda: self._aio.on_settings(fn))

    def on_connect(self, fn: Callable[[SessionInfo], Any]) -> Callable[[], None]:
        return self._in_loop(lambda: self._aio.on_connect(fn))

    def on_disconnect(self, fn: Callable[[BaseException], Any]) -> Callable[[], None]:
        return self._in_loop(lambda: self._aio.on_disconnect(fn))

    def on_error(self, fn: Callable[[DbswapError], Any]) -> Callable[[], None]:
        return self._in_loop(lambda: self._aio.on_error(fn))

    def _on_renumber(self, fn: Callable[[Update, bool], Any]) -> Callable[[], None]:
        return self._in_loop(lambda: self._aio._on_renumber(fn))

    # ---- requests ----

    def subscribe(self, targets: str | Iterable[str], *,
                  timeout: float | None = _DEFAULT) -> None:
        targets = targets if isinstance(targets, str) else list(targets)
        self._call(self._aio.subscribe(targets, timeout=timeout))

    def ack(self, update: Update) -> bool:
        return self._in_loop(lambda: self._aio.ack(update))

    def nack(self, update: Update, message: str) -> bool:
        return self._in_loop(lambda: self._aio.nack(update, message))

    def status(self, *, timeout: float | None = _DEFAULT) -> dict[str, Any]:
        return self._call(self._aio.status(timeout=timeout))

    def ping(self, *, timeout: float | None = _DEFAULT) -> float:
        return self._call(self._aio.ping(timeout=timeout))

    def reload(self, *, timeout: float | None = _DEFAULT) -> None:
        self._call(self._aio.reload(timeout=timeout))

    def reconnect(self, target: str | None = None, *,
                  timeout: float | None = _DEFAULT) -> int | None:
        return self._call(self._aio.reconnect(target, timeout=timeout))

    def failover(self, target: str, *, force: bool = False,
                 timeout: float | None = _DEFAULT) -> int | None:
        return self._call(self._aio.failover(target, force=force,
                                             timeout=timeout))

    def failback(self, target: str, *, force: bool = False,
                 timeout: float | None = _DEFAULT) -> int | None:
        return self._call(self._aio.failback(target, force=force,
                                             timeout=timeout))

    def updates(self, target: str | None = None, *,
                timeout: float | None = None) -> Iterator[Update]:
        """The updates of target (every subscribed target's without one) as
        a blocking iterator: the value in force first, then each new one.
        Ends when the client closes, or when none comes within timeout
        seconds (None: waits for ever)."""
        q: queue.Queue[Any] = queue.Queue()
        done = object()

        async def pump() -> None:
            try:
                async for u in self._aio.updates(target):
                    q.put(u)
            except BaseException as e:  # a refusal ends it with its error
                q.put(e)
            q.put(done)
        fut = asyncio.run_coroutine_threadsafe(pump(), self._loop)
        try:
            while True:
                try:
                    item = q.get(timeout=timeout)
                except queue.Empty:
                    return
                if item is done:
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, asyncio.CancelledError):
                        return
                    raise item
                yield item
        finally:
            fut.cancel()
