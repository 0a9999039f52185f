"""What the agent tells a client, as frozen dataclasses: a target's value
(Update), its pool settings (Settings), and the session (SessionInfo).
An Update's connection string is a secret: repr() and str() show it
masked; only the ``conninfo`` attribute holds it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .conninfo import mask_conninfo

__all__ = ["Update", "Settings", "SessionInfo"]


@dataclass(frozen=True, repr=False, eq=True)
class Update:
    """A value the agent published for a target.

    reason: rotation, failover, failback, manual, unavailable, reconnect,
    promoted, demoted (absent on the wire: rotation); ``environment`` for
    the value a pool took from the environment without an agent.  server:
    primary, secondary, or none (no server available: do not connect).
    instance: the agent run that numbered the generation (None from a
    version-1 agent, and for the environment's value)."""

    target: str
    generation: int
    conninfo: str = field(compare=True)
    instance: str | None = None
    reason: str = "rotation"
    server: str = "primary"
    standby: bool = False

    @classmethod
    def from_message(cls, msg: dict[str, Any]) -> "Update":
        return cls(target=msg["target"], generation=msg["generation"],
                   conninfo=msg["conninfo"], instance=msg.get("instance"),
                   reason=msg.get("reason") or "rotation",
                   server=msg.get("server") or "primary",
                   standby=msg.get("standby", False))

    @property
    def masked_conninfo(self) -> str:
        """The connection string with its passwords masked."""
        return mask_conninfo(self.conninfo)

    def same_value(self, other: "Update | None") -> bool:
        """Whether other is this value (numbers aside): what a client
        compares after an agent restart, which numbers from 1 again."""
        return other is not None and (self.conninfo, self.server,
                                      self.standby) == (
            other.conninfo, other.server, other.standby)

    def __repr__(self) -> str:
        return (f"Update(target={self.target!r}, generation={self.generation}"
                f", instance={self.instance!r}, reason={self.reason!r}, "
                f"server={self.server!r}, standby={self.standby}, "
                f"conninfo={self.masked_conninfo!r})")

    def __str__(self) -> str:
        standby = ", standby" if self.standby else ""
        return (f"{self.target} generation {self.generation} ({self.reason}, "
                f"{self.server}{standby}): {self.masked_conninfo}")


@dataclass(frozen=True)
class Settings:
    """A target's pool settings from the agent's env files; None: not set
    (the pool uses its own value or default)."""

    target: str
    pool_max: int | None = None
    pool_min: int | None = None
    pool_timeout_ms: int | None = None
    pool_idle_timeout_ms: int | None = None

    @classmethod
    def from_message(cls, msg: dict[str, Any]) -> "Settings":
        return cls(target=msg["target"], pool_max=msg.get("pool_max"),
                   pool_min=msg.get("pool_min"),
                   pool_timeout_ms=msg.get("pool_timeout_ms"),
                   pool_idle_timeout_ms=msg.get("pool_idle_timeout_ms"))


@dataclass(frozen=True)
class SessionInfo:
    """A session with the agent: the protocol version agreed, the agent's
    instance (None from a version-1 agent), its name and pid."""

    version: int
    instance: str | None
    name: str
    pid: int
