"""The protocol layer: frames and messages, the same rules as ipc/ and the
Node client (ipc/PROTOCOL.md): sizes at the limit and one past it, keys,
nesting, field types and bounds."""

import struct

import msgpack
import pytest

from dbswap import ProtocolViolation
from dbswap import protocol as P


def body(msg):
    return msgpack.packb(msg, use_bin_type=True)


def update(**kw):
    msg = {"type": "update", "target": "DATABASE_URL", "generation": 3,
           "conninfo": "postgresql://app:secret@db/app",
           "instance": "5d1c0e93a7f2b648"}
    msg.update(kw)
    return msg


def test_the_example_hello_frame_of_protocol_md():
    frame = P.encode_message({"type": "hello", "version": 2,
                              "name": "billing-api", "pid": 4242, "id": 1})
    assert frame[:4] == bytes.fromhex("00000031")
    assert frame[4:16] == bytes.fromhex("85a474797065a568656c6c6f")
    assert len(frame) == 4 + 49


def test_a_body_of_exactly_frame_max_is_read_and_one_byte_more_is_not():
    base = len(body(update(conninfo="")))
    # a str 16 header is 3 bytes, the empty fixstr 1: pad to the limit.
    msg = update(conninfo="x" * (P.FRAME_MAX - base - 2))
    b = body(msg)
    assert len(b) == P.FRAME_MAX
    assert P.decode_message(b)["conninfo"] == msg["conninfo"]
    with pytest.raises(ProtocolViolation, match="over the 65536-byte limit"):
        P.decode_message(body(update(conninfo="x" * (P.FRAME_MAX - base - 1))))


def test_frame_reader_refuses_an_oversized_header_before_its_body():
    r = P.FrameReader()
    assert r.push(struct.pack(">I", P.FRAME_MAX) + b"\x80") == []
    r = P.FrameReader()
    with pytest.raises(ProtocolViolation, match="65537 bytes announced"):
        r.push(struct.pack(">I", P.FRAME_MAX + 1))


def test_frame_reader_splits_and_joins():
    f1 = P.encode_message({"type": "ping", "id": 1})
    f2 = P.encode_message({"type": "ping", "id": 2})
    data = f1 + f2
    r = P.FrameReader()
    out = []
    for i in range(len(data)):
        out += r.push(data[i:i + 1])
    assert [P.decode_message(b)["id"] for b in out] == [1, 2]
    assert r.pending == 0


def test_nesting_six_levels_is_fine_and_seven_is_a_violation():
    msg = {"type": "status", "targets": [{"lagging": [{"a": [1]}]}]}
    # status(1) targets(2) target(3) lagging(4) entry(5) a(6): six levels
    assert P.decode_message(body(msg))["targets"]
    deeper = {"type": "status",
              "targets": [{"lagging": [{"a": [{"b": 1}]}]}]}
    with pytest.raises(ProtocolViolation, match="deeper than 6"):
        P.decode_message(body(deeper))


@pytest.mark.parametrize("raw, why", [
    (b"", "empty"),
    (b"\x91\xa1x", "not a map"),
    (bytes.fromhex("82a474797065a470696e67a474797065a470696e67"),
     "same key twice"),
    (bytes.fromhex("82a474797065a470696e67") + b"\x01\x02", "not a string"),
    (bytes.fromhex("81a474797065a470696e67") + b"\x00", "after its msgpack"),
    (bytes.fromhex("81a474797065a570696e"), "ends inside"),
    (bytes.fromhex("81a474797065c1"), "0xc1"),
    (bytes.fromhex("82a474797065a470696e67a16ea3610062"), "NUL"),
    (bytes.fromhex("81a474797065dd7fffffff"), "ends inside"),
])
def test_structural_violations(raw, why):
    with pytest.raises(ProtocolViolation, match=why):
        P.decode_message(raw)


def test_a_string_that_is_not_utf8_is_a_violation():
    raw = bytes.fromhex("82a474797065a470696e67a16ea2c328")
    with pytest.raises(ProtocolViolation, match="cannot be decoded"):
        P.decode_message(raw)


@pytest.mark.parametrize("field, value, why", [
    ("generation", -1, "out of range"),
    ("generation", True, "not an integer"),
    ("generation", 1.0, "not an integer"),
    ("generation", 1 << 64, None),  # cannot even be packed
    ("instance", "0123456789ABCDEF", "lowercase hex"),
    ("instance", "0123456789abcde", "lowercase hex"),
    ("instance", 5, "lowercase hex"),
    ("standby", 1, "not a boolean"),
    ("target", "x" * 256, "longer than 255"),
    ("conninfo", b"bytes", "not a string"),
])
def test_field_violations(field, value, why):
    if why is None:
        with pytest.raises(OverflowError):
            body(update(**{field: value}))
        return
    with pytest.raises(ProtocolViolation, match=why):
        P.decode_message(body(update(**{field: value})))


def test_required_fields_and_nil_strings():
    m = update()
    del m["conninfo"]
    with pytest.raises(ProtocolViolation, match='lacks field "conninfo"'):
        P.decode_message(body(m))
    with pytest.raises(ProtocolViolation, match='lacks field "target"'):
        P.decode_message(body(update(target=None)))
    # nil stands for an absent optional string; unknown keys are dropped
    got = P.decode_message(body(update(reason=None, extra={"a": 1})))
    assert "reason" not in got and "extra" not in got
    assert got["generation"] == 3


def test_a_type_this_client_does_not_know_comes_back_alone():
    assert P.decode_message(body({"type": "future", "x": 1})) == \
        {"type": "future"}
    with pytest.raises(ProtocolViolation, match='no "type"'):
        P.decode_message(body({"x": 1}))


def test_settings_bounds():
    ok = {"type": "settings", "target": "DATABASE_URL", "pool_max": 10000,
          "pool_min": 0, "pool_timeout_ms": 86400000}
    assert P.decode_message(body(ok))["pool_max"] == 10000
    for key, value in [("pool_max", 0), ("pool_max", 10001),
                       ("pool_timeout_ms", 86400001),
                       ("pool_idle_timeout_ms", -1)]:
        with pytest.raises(ProtocolViolation, match="out of range"):
            P.decode_message(body({**ok, key: value}))
    with pytest.raises(ProtocolViolation, match="pool_min over pool_max"):
        P.decode_message(body({**ok, "pool_max": 2, "pool_min": 3}))


def test_encode_checks_what_it_sends():
    with pytest.raises(ProtocolViolation, match="longer than 1024"):
        P.encode_message({"type": "nack", "target": "T", "generation": 1,
                          "message": "x" * 1025})
    with pytest.raises(ProtocolViolation, match="more than 64"):
        P.encode_message({"type": "subscribe",
                          "targets": [f"T{i}" for i in range(65)]})
    with pytest.raises(ProtocolViolation, match="lowercase hex"):
        P.encode_message({"type": "ack", "target": "T", "generation": 1,
                          "instance": "nope"})
    frame = P.encode_message({"type": "nack", "target": "T", "generation": 1,
                              "message": "é" * 512})
    assert P.decode_message(frame[4:])["message"] == "é" * 512


def test_violation_messages_never_quote_values():
    secret = "postgresql://app:hunter2hunter2@db/app"
    for bad in [update(conninfo=secret, generation="x"),
                update(conninfo=secret, instance=secret)]:
        with pytest.raises(ProtocolViolation) as e:
            P.decode_message(body(bad))
        assert "hunter2" not in str(e.value)
