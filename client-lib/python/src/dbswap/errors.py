"""The package's exceptions.

Every failure dbswap itself decides (an error the agent sent, a protocol
violation, a timeout, no server available) is a DbswapError with a string
``code``; errors of the database driver (psycopg) pass through as psycopg
made them.  Each agent error code has its own class, which also derives from
the builtin exception that says the same thing, so that code written for
``PermissionError`` or ``LookupError`` catches them:

=================  ===========================  ======================
code               class                        also a
=================  ===========================  ======================
protocol           ProtocolViolation
version            VersionError
hello-required     HelloRequiredError
unknown-type       UnknownTypeError
unknown-target     UnknownTargetError           LookupError
not-subscribed     NotSubscribedError           LookupError
limit              LimitError
refused            RefusedError
forbidden          ForbiddenError               PermissionError
internal           InternalError
timeout            AgentTimeoutError            TimeoutError
disconnected       DisconnectedError            ConnectionError
closed             ClientClosedError
unavailable        UnavailableError             ConnectionError
no-value           NoValueError                 LookupError
=================  ===========================  ======================

Messages never hold a secret: a connection string appears masked, if at all.
"""

from __future__ import annotations

__all__ = [
    "DbswapError", "ProtocolViolation", "VersionError", "HelloRequiredError",
    "UnknownTypeError", "UnknownTargetError", "NotSubscribedError",
    "LimitError", "RefusedError", "ForbiddenError", "InternalError",
    "AgentTimeoutError", "DisconnectedError", "ClientClosedError",
    "UnavailableError", "NoValueError", "error_for_code",
]


class DbswapError(Exception):
    """Base class; ``code`` is the agent's error code or one of this
    package's (timeout, disconnected, closed, unavailable, no-value);
    ``target`` the target it is about, when there is one."""

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None,
                 target: str | None = None) -> None:
        # OSError subclasses read a 2-tuple of args as (errno, strerror):
        # one argument keeps str() the message for every class.
        super().__init__(message)
        if code is not None:
            self.code = code
        self.target = target

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.code

    def __reduce__(self):  # picklable across processes, code and all
        return (_rebuild, (type(self), str(self), self.code, self.target))


def _rebuild(cls, message, code, target):
    return cls(message, code=code, target=target)


class ProtocolViolation(DbswapError):
    """A frame or message that breaks ipc/PROTOCOL.md (either way)."""
    code = "protocol"


class VersionError(DbswapError):
    code = "version"


class HelloRequiredError(DbswapError):
    code = "hello-required"


class UnknownTypeError(DbswapError):
    code = "unknown-type"


class UnknownTargetError(DbswapError, LookupError):
    """The agent has no such target."""
    code = "unknown-target"


class NotSubscribedError(DbswapError, LookupError):
    code = "not-subscribed"


class LimitError(DbswapError):
    code = "limit"


class RefusedError(DbswapError):
    """A failover or failback the agent cannot do now; the message says
    why."""
    code = "refused"


class ForbiddenError(DbswapError, PermissionError):
    """The process's uid and groups may not do that (subscribe to that
    target, or an admin request)."""
    code = "forbidden"


class InternalError(DbswapError):
    code = "internal"


class AgentTimeoutError(DbswapError, TimeoutError):
    """The agent did not answer in time."""
    code = "timeout"


class DisconnectedError(DbswapError, ConnectionError):
    """The connection to the agent was lost before the answer came."""
    code = "disconnected"


class ClientClosedError(DbswapError):
    """The client (or the pool) was closed."""
    code = "closed"


class UnavailableError(DbswapError, ConnectionError):
    """The agent reports no database server available: checkouts fail at
    once until one is back."""
    code = "unavailable"


class NoValueError(DbswapError, LookupError):
    """The pool has no value for its target, and none is coming (no agent
    and no environment variable, or the target was refused)."""
    code = "no-value"


_BY_CODE: dict[str, type[DbswapError]] = {
    cls.code: cls for cls in (
        ProtocolViolation, VersionError, HelloRequiredError, UnknownTypeError,
        UnknownTargetError, NotSubscribedError, LimitError, RefusedError,
        ForbiddenError, InternalError, AgentTimeoutError, DisconnectedError,
        ClientClosedError, UnavailableError, NoValueError)
}


def error_for_code(code: str, message: str, *,
                   target: str | None = None) -> DbswapError:
    """The exception for an agent's error code (a DbswapError with that
    code for a code this package does not know)."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return DbswapError(message, code=code, target=target)
    return cls(message, target=target)
