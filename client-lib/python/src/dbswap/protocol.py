"""The dbswap wire protocol, version 2 (ipc/PROTOCOL.md is the contract):
frames, messages, their fields and limits.  It knows nothing of
connections, subscriptions or pools.

A frame is a 4-byte big-endian body length and a body of exactly one
msgpack map.  Bodies are checked in two steps, as ipc/ and the Node client
do: a walk over the raw bytes (structure, nesting, string keys, no key
twice, no NUL in a string, the reserved byte 0xc1, no trailing bytes), then
a check of every field of the message's type.  Anything wrong is a
violation: decode_message() raises ProtocolViolation with a message that
never quotes a value (a value may be a secret).
"""

from __future__ import annotations

import re
import struct
from typing import Any, Callable

import msgpack

from .errors import ProtocolViolation

__all__ = [
    "PROTOCOL_VERSION", "PROTOCOL_VERSION_MIN", "FRAME_HEADER", "FRAME_MAX",
    "NAME_MAX", "NACK_MESSAGE_MAX", "SUBSCRIBE_MAX", "DEPTH_MAX",
    "INSTANCE_LEN", "POOL_SIZE_MAX", "POOL_TIMEOUT_MAX_MS", "DEFAULT_SOCKET",
    "MESSAGES", "decode_message", "encode_message", "FrameReader",
]

#: The version this package offers first.
PROTOCOL_VERSION = 2
#: The oldest version it falls back to for an older agent.
PROTOCOL_VERSION_MIN = 1
#: Length prefix of every frame.
FRAME_HEADER = 4
#: Largest frame body: far above any message, and it bounds what a peer can
#: make the other buffer.  A larger announced length is refused before
#: anything is read into memory for it.
FRAME_MAX = 65536
#: Names, targets, codes, reasons: env variable and program names are far
#: shorter; it bounds status and log lines.
NAME_MAX = 255
#: A nack's message: one error line with context.
NACK_MESSAGE_MAX = 1024
#: Targets per subscribe, and per client.
SUBSCRIBE_MAX = 64
#: msgpack nesting, the message's own map being level 1: messages need 5
#: (the status reply), deeper is hostile.
DEPTH_MAX = 6
#: An agent instance: 16 lowercase hex digits (64 random bits).
INSTANCE_LEN = 16
#: Bounds of pool_max and pool_min: beyond any server's max_connections.
POOL_SIZE_MAX = 10000
#: Bounds of pool_timeout_ms and pool_idle_timeout_ms: a day.
POOL_TIMEOUT_MAX_MS = 86400000
#: The socket used when neither an argument nor $DBSWAP_SOCKET names one.
DEFAULT_SOCKET = "/run/dbswap/dbswap.sock"

_UINT64_MAX = (1 << 64) - 1
_INT64_MIN = -(1 << 63)
_INSTANCE_RE = re.compile(r"[0-9a-f]{16}")
_HEADER = struct.Struct(">I")


def _violation(why: str) -> ProtocolViolation:
    return ProtocolViolation(why)


# ---- the structure walk ----

# For each head byte: (kind, payload bytes, size bytes).  kind is one of
# int, map, array, str, nil, bool, float, bin, ext, bad; for containers
# and strings with a size field, "size bytes" is that field's width.
def _head_table() -> list[tuple[str, int, int]]:
    t: list[tuple[str, int, int]] = []
    for b in range(256):
        if b <= 0x7F or b >= 0xE0:
            t.append(("int", 0, 0))
        elif b <= 0x8F:
            t.append(("map", b & 0x0F, -1))  # -1: count in the byte
        elif b <= 0x9F:
            t.append(("array", b & 0x0F, -1))
        elif b <= 0xBF:
            t.append(("str", b & 0x1F, 0))
        else:
            t.append({
                0xC0: ("nil", 0, 0), 0xC1: ("bad", 0, 0),
                0xC2: ("bool", 0, 0), 0xC3: ("bool", 0, 0),
                0xC4: ("bin", 0, 1), 0xC5: ("bin", 0, 2), 0xC6: ("bin", 0, 4),
                0xC7: ("ext", 1, 1), 0xC8: ("ext", 1, 2), 0xC9: ("ext", 1, 4),
                0xCA: ("float", 4, 0), 0xCB: ("float", 8, 0),
                0xCC: ("int", 1, 0), 0xCD: ("int", 2, 0),
                0xCE: ("int", 4, 0), 0xCF: ("int", 8, 0),
                0xD0: ("int", 1, 0), 0xD1: ("int", 2, 0),
                0xD2: ("int", 4, 0), 0xD3: ("int", 8, 0),
                0xD4: ("ext", 2, 0), 0xD5: ("ext", 3, 0), 0xD6: ("ext", 5, 0),
                0xD7: ("ext", 9, 0), 0xD8: ("ext", 17, 0),
                0xD9: ("str", 0, 1), 0xDA: ("str", 0, 2), 0xDB: ("str", 0, 4),
                0xDC: ("array", 0, 2), 0xDD: ("array", 0, 4),
                0xDE: ("map", 0, 2), 0xDF: ("map", 0, 4),
            }[b])
    return t


_HEADS = _head_table()


def _walk(buf: bytes, pos: int, level: int, keys: set[bytes] | None) -> int:
    """Checks the msgpack value at pos; returns where it ends.  keys: when
    the value is a map key, the keys of that map so far."""
    n = len(buf)
    if pos >= n:
        raise _violation("frame ends inside a msgpack value")
    kind, payload, size = _HEADS[buf[pos]]
    pos += 1
    if kind == "bad":
        raise _violation("frame holds the reserved msgpack byte 0xc1")
    if kind in ("map", "array"):
        if size == -1:
            count = payload
        else:
            if pos + size > n:
                raise _violation("frame ends inside a msgpack value")
            count = int.from_bytes(buf[pos:pos + size], "big")
            pos += size
        if level >= DEPTH_MAX:
            raise _violation(f"message nests deeper than {DEPTH_MAX} levels")
        is_map = kind == "map"
        if is_map:
            count *= 2
        # Every element takes at least a byte: a count beyond what is left
        # is a lie, refused before looping over it.
        if count > n - pos:
            raise _violation("frame ends inside a msgpack value")
        seen: set[bytes] | None = set() if is_map else None
        for i in range(count):
            is_key = is_map and i % 2 == 0
            if pos >= n:
                raise _violation("frame ends inside a msgpack value")
            if is_key and _HEADS[buf[pos]][0] != "str":
                raise _violation("a map has a key that is not a string")
            pos = _walk(buf, pos, level + 1, seen if is_key else None)
        return pos
    length = payload
    if size > 0:
        if pos + size > n:
            raise _violation("frame ends inside a msgpack value")
        length += int.from_bytes(buf[pos:pos + size], "big")
        pos += size
    if length > n - pos:
        raise _violation("frame ends inside a msgpack value")
    if kind == "str":
        s = buf[pos:pos + length]
        if b"\0" in s:
            raise _violation("a string holds a NUL byte")
        if keys is not None:
            if s in keys:
                raise _violation("a map has the same key twice")
            keys.add(s)
    return pos + length


def _check_structure(body: bytes) -> None:
    if len(body) == 0:
        raise _violation("frame is empty: no msgpack value")
    if _HEADS[body[0]][0] != "map":
        raise _violation("message is not a map")
    if _walk(body, 0, 0, None) != len(body):
        raise _violation("frame has bytes after its msgpack value")


# ---- fields ----

# Each checker returns None when the value is good, else why not.
Checker = Callable[[Any], "str | None"]


def _is_int(v: Any) -> bool:
    return type(v) is int  # bool is an int subclass, and not an integer here


def _uint(lo: int = 0, hi: int = _UINT64_MAX) -> Checker:
    def check(v: Any) -> str | None:
        if not _is_int(v):
            return "is not an integer"
        if v < lo or v > hi:
            return f"is out of range ({lo} to {hi})"
        return None
    return check


def _int(v: Any) -> str | None:
    if not _is_int(v):
        return "is not an integer"
    return "is out of range" if v < _INT64_MIN or v > _UINT64_MAX else None


def _str(limit: int) -> Checker:
    def check(v: Any) -> str | None:
        if type(v) is not str:
            return "is not a string"
        if "\0" in v:
            return "holds a NUL byte"
        if len(v) > limit // 4 and len(v.encode("utf-8", "surrogatepass")) > limit:
            return f"is longer than {limit} bytes"
        return None
    return check


def _bool(v: Any) -> str | None:
    return None if type(v) is bool else "is not a boolean"


def _instance(v: Any) -> str | None:
    if type(v) is not str or not _INSTANCE_RE.fullmatch(v):
        return f"is not {INSTANCE_LEN} lowercase hex digits"
    return None


def _names(v: Any) -> str | None:
    if type(v) is not list:
        return "is not an array"
    if len(v) > SUBSCRIBE_MAX:
        return f"names more than {SUBSCRIBE_MAX} targets"
    for t in v:
        err = _str(NAME_MAX)(t)
        if err:
            return f"has an entry that {err}"
    return None


def _map(v: Any) -> str | None:
    return None if type(v) is dict else "is not a map"


def _maps(v: Any) -> str | None:
    if type(v) is not list:
        return "is not an array"
    return None if all(type(e) is dict for e in v) else \
        "has an entry that is not a map"


# Strings for which nil stands for absent.
_STRINGY = frozenset(("name", "target", "conninfo", "reason", "server",
                      "instance", "code", "message"))

_ID = _uint()
_TARGET = _str(NAME_MAX)
_GENERATION = _uint()


class _Spec:
    __slots__ = ("sender", "required", "optional")

    def __init__(self, sender: str, required: dict[str, Checker],
                 optional: dict[str, Checker]) -> None:
        self.sender = sender  # agent, client or both
        self.required = required
        self.optional = optional


#: Every message type: who sends it, its required and optional fields.
MESSAGES: dict[str, _Spec] = {
    "hello": _Spec("both", {"version": _uint(), "name": _str(NAME_MAX),
                            "pid": _int}, {"instance": _instance}),
    "subscribe": _Spec("client", {"targets": _names}, {}),
    "update": _Spec("agent", {"target": _TARGET, "generation": _GENERATION,
                              "conninfo": _str(FRAME_MAX)},
                    {"reason": _str(NAME_MAX), "server": _str(NAME_MAX),
                     "standby": _bool, "instance": _instance}),
    "settings": _Spec("agent", {"target": _TARGET}, {
        "pool_max": _uint(1, POOL_SIZE_MAX),
        "pool_min": _uint(0, POOL_SIZE_MAX),
        "pool_timeout_ms": _uint(0, POOL_TIMEOUT_MAX_MS),
        "pool_idle_timeout_ms": _uint(0, POOL_TIMEOUT_MAX_MS)}),
    "ack": _Spec("client", {"target": _TARGET, "generation": _GENERATION},
                 {"instance": _instance}),
    "nack": _Spec("client", {"target": _TARGET, "generation": _GENERATION,
                             "message": _str(NACK_MESSAGE_MAX)},
                  {"instance": _instance}),
    # The reply's tree is described in PROTOCOL.md and passed on as it is,
    # its containers checked.
    "status": _Spec("both", {}, {"agent": _map, "targets": _maps,
                                 "files": _maps, "keys": _maps,
                                 "truncated": _bool}),
    "reload": _Spec("client", {}, {}),
    "ping": _Spec("client", {}, {}),
    "failover": _Spec("client", {"target": _TARGET}, {"force": _bool}),
    "failback": _Spec("client", {"target": _TARGET}, {"force": _bool}),
    "reconnect": _Spec("client", {}, {"target": _TARGET}),
    "ok": _Spec("agent", {}, {"generation": _GENERATION}),
    "error": _Spec("both", {"code": _str(NAME_MAX),
                            "message": _str(FRAME_MAX)}, {}),
}


def _check_fields(msg: dict[str, Any]) -> dict[str, Any]:
    """msg's fields checked against its type's spec; returns the message
    with only the fields it knows (nil strings dropped)."""
    mtype = msg.get("type")
    err = _str(NAME_MAX)(mtype)
    if err:
        raise _violation(f'field "type" {err}')
    spec = MESSAGES.get(mtype)
    out: dict[str, Any] = {"type": mtype}
    if spec is None:
        return out  # a newer type: the caller decides
    for fields, required in ((spec.required, True), (spec.optional, False),
                             ({"id": _ID}, False)):
        for key, check in fields.items():
            value = msg.get(key)
            if key not in msg or (value is None and key in _STRINGY):
                if required:
                    raise _violation(f'{mtype} message lacks field "{key}"')
                continue
            err = check(value)
            if err:
                raise _violation(f'field "{key}" of a {mtype} message {err}')
            out[key] = value
    if (mtype == "settings" and "pool_min" in out and "pool_max" in out
            and out["pool_min"] > out["pool_max"]):
        raise _violation("settings message has pool_min over pool_max")
    return out


def decode_message(body: bytes) -> dict[str, Any]:
    """Decodes and checks one frame body.  Returns the message with the
    fields of its type only; a type this module does not know comes back as
    ``{"type": ...}`` alone.  Raises ProtocolViolation for any violation."""
    if len(body) > FRAME_MAX:
        raise _violation(f"frame of {len(body)} bytes is over the "
                         f"{FRAME_MAX}-byte limit")
    body = bytes(body)
    _check_structure(body)
    try:
        value = msgpack.unpackb(body, raw=False, strict_map_key=True,
                                use_list=True)
    except (ValueError, msgpack.UnpackException):
        # The walk accepted it, so this is what the decoder refuses on its
        # own: a string that is not UTF-8, a malformed timestamp.
        raise _violation("message cannot be decoded") from None
    if "type" not in value:
        raise _violation('message has no "type" field')
    return _check_fields(value)


def encode_message(msg: dict[str, Any]) -> bytes:
    """One message as a frame (header and body), after checking it as the
    receiver will.  Raises ProtocolViolation for a message that breaks the
    rules."""
    checked = _check_fields(msg) if msg.get("type") in MESSAGES else msg
    body = msgpack.packb(checked, use_bin_type=True)
    if len(body) > FRAME_MAX:
        raise _violation(f"message of {len(body)} bytes is over the "
                         f"{FRAME_MAX}-byte limit")
    return _HEADER.pack(len(body)) + body


def frame_length(header: bytes) -> int:
    """The body length a frame header announces; ProtocolViolation when it
    is over FRAME_MAX (nothing should be read for such a frame)."""
    (n,) = _HEADER.unpack(header)
    if n > FRAME_MAX:
        raise _violation(f"frame of {n} bytes announced, over the "
                         f"{FRAME_MAX}-byte limit")
    return n


class FrameReader:
    """Splits a byte stream into frame bodies.  A header announcing more
    than FRAME_MAX is refused at once, before its body is waited for."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def push(self, data: bytes) -> list[bytes]:
        """The bodies completed by data, in order."""
        self._buf += data
        bodies = []
        while len(self._buf) >= FRAME_HEADER:
            n = frame_length(bytes(self._buf[:FRAME_HEADER]))
            if len(self._buf) < FRAME_HEADER + n:
                break
            bodies.append(bytes(self._buf[FRAME_HEADER:FRAME_HEADER + n]))
            del self._buf[:FRAME_HEADER + n]
        return bodies

    @property
    def pending(self) -> int:
        """Bytes received and not yet part of a complete frame."""
        return len(self._buf)
