package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// body encodes a map with its keys in the given order (pairs).
func body(t *testing.T, pairs ...any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.EncodeMapLen(len(pairs) / 2)
	for i := 0; i < len(pairs); i += 2 {
		enc.EncodeString(pairs[i].(string))
		if err := enc.Encode(pairs[i+1]); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func mustViolate(t *testing.T, name string, b []byte) {
	t.Helper()
	_, err := Decode(b)
	var pe *Error
	if !errors.As(err, &pe) {
		t.Errorf("%s: Decode = %v, want a violation", name, err)
	}
}

func TestDecodeViolations(t *testing.T) {
	const inst = "0123456789abcdef"
	update := func(extra ...any) []byte {
		return body(t, append([]any{"type", "update", "target", "DATABASE_URL", "generation", 1,
			"conninfo", "host=db password=s3cret", "instance", inst}, extra...)...)
	}
	if _, err := Decode(update()); err != nil {
		t.Fatalf("a good update: %v", err)
	}
	mustViolate(t, "empty frame", nil)
	mustViolate(t, "not a map", []byte{0x01})
	mustViolate(t, "trailing byte", append(update(), 0xc0))
	mustViolate(t, "truncated", update()[:10])
	b := body(t, "type", "ping", "x", 1)
	b[len(b)-1] = 0xc1
	mustViolate(t, "reserved byte 0xc1", b)
	mustViolate(t, "duplicate key", body(t, "type", "ping", "type", "ping"))
	mustViolate(t, "NUL in a string", body(t, "type", "ping", "x", "a\x00b"))
	mustViolate(t, "NUL in a key", body(t, "type", "ping", "a\x00", 1))
	mustViolate(t, "no type", body(t, "id", 1))
	mustViolate(t, "type not a string", body(t, "type", 1))
	mustViolate(t, "update without conninfo", body(t, "type", "update", "target", "T", "generation", 1))
	mustViolate(t, "generation negative", body(t, "type", "update", "target", "T", "generation", -1, "conninfo", "x"))
	mustViolate(t, "generation a string", body(t, "type", "update", "target", "T", "generation", "1", "conninfo", "x"))
	mustViolate(t, "instance not hex", update("instance", "0123456789ABCDEF"))
	mustViolate(t, "target too long", body(t, "type", "ack", "target", strings.Repeat("x", NameMax+1), "generation", 1))
	mustViolate(t, "settings min over max", body(t, "type", "settings", "target", "T", "pool_max", 2, "pool_min", 3))
	mustViolate(t, "pool_max 0", body(t, "type", "settings", "target", "T", "pool_max", 0))
	mustViolate(t, "pool_timeout_ms over a day", body(t, "type", "settings", "target", "T", "pool_timeout_ms", PoolTimeoutMaxMS+1))
	mustViolate(t, "error without message", body(t, "type", "error", "code", "x"))
	mustViolate(t, "standby not a bool", update("standby", 1))
	mustViolate(t, "conninfo binary", body(t, "type", "update", "target", "T", "generation", 1, "conninfo", []byte("x")))

	// A map key that is not a string (an integer key).
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.EncodeMapLen(2)
	enc.EncodeString("type")
	enc.EncodeString("ping")
	enc.EncodeInt(1)
	enc.EncodeInt(1)
	mustViolate(t, "integer key", buf.Bytes())

	// Nesting: the message's map is level 1; 6 levels pass, 7 do not.
	nest := func(levels int) []byte {
		var v any = 1
		for i := 0; i < levels-1; i++ {
			v = []any{v}
		}
		return body(t, "type", "status", "agent", map[string]any{"x": v})
	}
	if _, err := Decode(nest(5)); err != nil { // map, agent map, 4 arrays = 6 levels
		t.Errorf("6 levels: %v", err)
	}
	mustViolate(t, "7 levels", nest(6))

	// A count that lies (an array of 2^32-1 entries in a short frame).
	lie := body(t, "type", "ping", "x", 1)
	lie = append(lie[:len(lie)-1], 0xdd, 0xff, 0xff, 0xff, 0xff)
	mustViolate(t, "array count beyond the frame", lie)
}

func TestDecodeLenient(t *testing.T) {
	// Unknown keys ignored, nil for an optional string is absent, unknown
	// types come back as their type alone.
	m, err := Decode(body(t, "type", "update", "target", "T", "generation", 3, "conninfo", "x",
		"reason", nil, "newer_field", map[string]any{"a": 1}))
	if err != nil {
		t.Fatal(err)
	}
	if m.Reason != "" || m.Generation != 3 || m.Conninfo != "x" {
		t.Errorf("got %+v", m)
	}
	m, err = Decode(body(t, "type", "brand-new", "whatever", []any{1, 2}))
	if err != nil || m.Type != "brand-new" {
		t.Errorf("unknown type: %v %v", m, err)
	}
	// Integers of any width: a uint64 generation, an int8 pid.
	m, err = Decode(body(t, "type", "hello", "version", uint64(2), "name", "x", "pid", int8(-1), "instance", "0123456789abcdef"))
	if err != nil || m.PID != -1 || m.Version != 2 {
		t.Errorf("hello: %+v %v", m, err)
	}
	m, err = Decode(body(t, "type", "ok", "id", uint64(1)<<63, "generation", uint64(1)<<40))
	if err != nil || m.ID != 1<<63 || m.Generation != 1<<40 || !m.HasGeneration {
		t.Errorf("ok: %+v %v", m, err)
	}
}

func TestFrameLimit(t *testing.T) {
	frame := func(n uint32) []byte {
		b := make([]byte, 4)
		binary.BigEndian.PutUint32(b, n)
		return b
	}
	// One byte over: refused from the header alone, nothing read after.
	_, err := ReadFrame(bytes.NewReader(frame(FrameMax + 1)))
	var pe *Error
	if !errors.As(err, &pe) {
		t.Errorf("65537: %v, want a violation", err)
	}
	// Exactly the limit: read whole.
	b := append(frame(FrameMax), make([]byte, FrameMax)...)
	got, err := ReadFrame(bytes.NewReader(b))
	if err != nil || len(got) != FrameMax {
		t.Errorf("65536: %d bytes, %v", len(got), err)
	}
	// Cut inside a body: unexpected EOF; between frames: EOF.
	if _, err := ReadFrame(bytes.NewReader(append(frame(10), 1, 2))); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("cut body: %v", err)
	}
	if _, err := ReadFrame(bytes.NewReader(nil)); !errors.Is(err, io.EOF) {
		t.Errorf("no frame: %v", err)
	}
	// An update whose body is exactly FrameMax bytes decodes; one byte
	// more is refused by Decode too.
	for _, extra := range []int{0, 1} {
		base := body(t, "type", "update", "target", "T", "generation", 1, "conninfo", "")
		// "" takes a byte; a string of n bytes (256 to 65535) takes 3
		// of header and n.
		n := FrameMax - len(base) - 2 + extra
		full := body(t, "type", "update", "target", "T", "generation", 1, "conninfo", strings.Repeat("x", n))
		_, err := Decode(full)
		if len(full) != FrameMax+extra {
			t.Fatalf("built %d bytes, want %d", len(full), FrameMax+extra)
		}
		if (err == nil) != (extra == 0) {
			t.Errorf("body of %d bytes: %v", len(full), err)
		}
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	max, min := uint64(20), uint64(2)
	msgs := []Message{
		{Type: "hello", ID: 1, HasID: true, Version: 2, Name: "app", PID: 42},
		{Type: "subscribe", ID: 2, HasID: true, Targets: []string{"DATABASE_URL"}},
		{Type: "ack", Target: "T", Generation: 3, Instance: "0123456789abcdef"},
		{Type: "nack", Target: "T", Generation: 3, Instance: "0123456789abcdef", Text: "no"},
		{Type: "settings", Target: "T", PoolMax: &max, PoolMin: &min},
		{Type: "failover", Target: "T", Force: true},
		{Type: "ok", ID: 9, HasID: true, Generation: 5, HasGeneration: true},
	}
	for _, m := range msgs {
		f, err := Encode(m)
		if err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		if int(binary.BigEndian.Uint32(f)) != len(f)-4 {
			t.Errorf("%s: bad header", m)
		}
		got, err := Decode(f[4:])
		if err != nil {
			t.Fatalf("%s: decode: %v", m, err)
		}
		if got.String() != m.String() {
			t.Errorf("round trip: %s, want %s", got, m)
		}
	}
	// What the receiver would refuse is refused here.
	if _, err := Encode(Message{Type: "nack", Target: "T", Generation: 1, Text: strings.Repeat("x", NackMessageMax+1)}); err == nil {
		t.Error("a nack message over 1024 bytes was encoded")
	}
	if _, err := Encode(Message{Type: "ack", Target: "T", Generation: 1, Instance: "xyz"}); err == nil {
		t.Error("an ack with a bad instance was encoded")
	}
	// The wire example of PROTOCOL.md: hello is 0x31 bytes there with
	// its own field order; ours carries the same fields.
	f, _ := Encode(Message{Type: "hello", ID: 1, HasID: true, Version: 2, Name: "billing-api", PID: 4242})
	if len(f)-4 != 0x31 {
		t.Errorf("hello of PROTOCOL.md's example: %d bytes, want 49", len(f)-4)
	}
}

func TestMessageStringHidesConninfo(t *testing.T) {
	m := Message{Type: "update", Target: "T", Generation: 1, Conninfo: "host=db password=s3cret"}
	for _, s := range []string{m.String(), m.GoString()} {
		if strings.Contains(s, "s3cret") {
			t.Errorf("%q shows the conninfo", s)
		}
	}
}
