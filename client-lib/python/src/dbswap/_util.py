"""Small helpers shared by the clients and the pools."""

from __future__ import annotations

import logging
import os
import random
import sys

logger = logging.getLogger("dbswap")


def backoff(attempt: int, first: float, most: float) -> float:
    """A retry delay in seconds: first * 2**attempt, at most ``most``, with
    jitter (between half and all of it) so that clients that lost the agent
    together do not come back together.  libdbswap's backoff_ms() rule."""
    base = min(first * (2 ** min(attempt, 30)), most)
    return base / 2 + random.random() * base / 2


def truncate_utf8(s: str, limit: int) -> str:
    """s cut to at most limit bytes of UTF-8 on a character boundary,
    ending in "..." when it had to cut."""
    b = s.encode("utf-8", "replace")
    if len(b) <= limit:
        return s
    return b[:limit - 3].decode("utf-8", "ignore") + "..."


def program_name() -> str:
    """The name shown in the agent's status: the script's file name."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "python"
    return os.path.basename(argv0) or "python"
