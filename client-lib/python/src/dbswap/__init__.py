"""dbswap: follow the database credentials dbswapd publishes.

- ``Client`` (threads) and ``AsyncClient`` (asyncio): the connection to the
  agent (ipc/PROTOCOL.md, version 2): subscribe, updates, acks, requests.
- ``dbswap.psycopg.ConnectionPool``: a psycopg_pool.ConnectionPool
  look-alike that swaps make-before-break on every new value
  (``pip install dbswap[psycopg]``).
- ``dbswap.sqlalchemy.create_engine``: a SQLAlchemy 2 engine whose
  connections follow the value (``pip install dbswap[sqlalchemy]``).
"""

from .aio import AsyncClient
from .client import Client
from .conninfo import mask_conninfo, redact
from .errors import (AgentTimeoutError, ClientClosedError, DbswapError,
                     DisconnectedError, ForbiddenError, HelloRequiredError,
                     InternalError, LimitError, NotSubscribedError,
                     NoValueError, ProtocolViolation, RefusedError,
                     UnavailableError, UnknownTargetError, UnknownTypeError,
                     VersionError)
from .protocol import DEFAULT_SOCKET, PROTOCOL_VERSION
from .types import SessionInfo, Settings, Update

__version__ = "0.1.0"

__all__ = [
    "AsyncClient", "Client", "Update", "Settings", "SessionInfo",
    "mask_conninfo", "redact", "DEFAULT_SOCKET", "PROTOCOL_VERSION",
    "DbswapError", "ProtocolViolation", "VersionError", "HelloRequiredError",
    "UnknownTypeError", "UnknownTargetError", "NotSubscribedError",
    "LimitError", "RefusedError", "ForbiddenError", "InternalError",
    "AgentTimeoutError", "DisconnectedError", "ClientClosedError",
    "UnavailableError", "NoValueError",
]
