package protocol

// Decoding and encoding of frame bodies.

import (
	"bytes"
	"encoding/binary"
	"strings"

	"github.com/vmihailenco/msgpack/v5"
)

// kind is what a msgpack head byte starts, for the fields' type checks.
type kind int

const (
	kInt kind = iota
	kMap
	kArray
	kStr
	kNil
	kBool
	kFloat
	kBin
	kExt
)

func (k kind) String() string {
	return [...]string{"integer", "map", "array", "string", "nil", "boolean", "float", "binary", "extension"}[k]
}

func kindOf(b byte) kind {
	switch {
	case b <= 0x7f || b >= 0xe0 || (b >= 0xcc && b <= 0xd3):
		return kInt
	case b <= 0x8f || b == 0xde || b == 0xdf:
		return kMap
	case b <= 0x9f || b == 0xdc || b == 0xdd:
		return kArray
	case b <= 0xbf || (b >= 0xd9 && b <= 0xdb):
		return kStr
	case b == 0xc0:
		return kNil
	case b == 0xc2 || b == 0xc3:
		return kBool
	case b == 0xca || b == 0xcb:
		return kFloat
	case b >= 0xc4 && b <= 0xc6:
		return kBin
	}
	return kExt
}

var errTruncated = violation("frame ends inside a msgpack value")

// walk checks the msgpack value at pos and returns where it ends. keys:
// when the value is a map key, the keys of its map so far.
func walk(buf []byte, pos, level int, keys map[string]struct{}) (int, error) {
	if pos >= len(buf) {
		return 0, errTruncated
	}
	b := buf[pos]
	pos++
	k := kindOf(b)
	count := 0 // elements of a container (a map counts keys and values)
	skip := 0  // bytes of a scalar's payload
	sizeBytes := 0
	isMap := false
	switch {
	case b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3:
	case b <= 0x8f:
		isMap = true
		count = int(b&0x0f) * 2
	case b <= 0x9f:
		count = int(b & 0x0f)
	case b <= 0xbf:
		skip = int(b & 0x1f)
	default:
		switch b {
		case 0xc4, 0xd9:
			sizeBytes = 1
		case 0xc5, 0xda:
			sizeBytes = 2
		case 0xc6, 0xdb:
			sizeBytes = 4
		case 0xc7: // ext: a type byte too
			sizeBytes, skip = 1, 1
		case 0xc8:
			sizeBytes, skip = 2, 1
		case 0xc9:
			sizeBytes, skip = 4, 1
		case 0xcc, 0xd0:
			skip = 1
		case 0xcd, 0xd1:
			skip = 2
		case 0xca, 0xce, 0xd2:
			skip = 4
		case 0xcb, 0xcf, 0xd3:
			skip = 8
		case 0xd4:
			skip = 2
		case 0xd5:
			skip = 3
		case 0xd6:
			skip = 5
		case 0xd7:
			skip = 9
		case 0xd8:
			skip = 17
		case 0xdc:
			sizeBytes = 2
		case 0xdd:
			sizeBytes = 4
		case 0xde:
			sizeBytes, isMap = 2, true
		case 0xdf:
			sizeBytes, isMap = 4, true
		default:
			return 0, violation("frame holds the reserved msgpack byte 0xc1")
		}
		if sizeBytes > 0 {
			if pos+sizeBytes > len(buf) {
				return 0, errTruncated
			}
			n := 0
			for _, c := range buf[pos : pos+sizeBytes] {
				n = n<<8 | int(c)
			}
			pos += sizeBytes
			if k == kArray || k == kMap {
				if isMap {
					count = n * 2
				} else {
					count = n
				}
			} else {
				skip += n
			}
		}
	}

	if k == kMap || k == kArray {
		if level >= DepthMax {
			return 0, violation("message nests deeper than %d levels", DepthMax)
		}
		// Every element takes at least a byte: a count beyond what is
		// left is a lie, refused before looping over it.
		if count > len(buf)-pos {
			return 0, errTruncated
		}
		var seen map[string]struct{}
		if isMap {
			seen = make(map[string]struct{}, count/2)
		}
		for i := 0; i < count; i++ {
			isKey := isMap && i%2 == 0
			if pos >= len(buf) {
				return 0, errTruncated
			}
			if isKey && kindOf(buf[pos]) != kStr {
				return 0, violation("a map has a key that is not a string")
			}
			var err error
			var ks map[string]struct{}
			if isKey {
				ks = seen
			}
			if pos, err = walk(buf, pos, level+1, ks); err != nil {
				return 0, err
			}
		}
		return pos, nil
	}
	if skip > len(buf)-pos {
		return 0, errTruncated
	}
	if k == kStr {
		s := buf[pos : pos+skip]
		if bytes.IndexByte(s, 0) >= 0 {
			return 0, violation("a string holds a NUL byte")
		}
		if keys != nil {
			if _, dup := keys[string(s)]; dup {
				return 0, violation("a map has the same key twice")
			}
			keys[string(s)] = struct{}{}
		}
	}
	return pos + skip, nil
}

// checkStructure checks a body's structure and returns the msgpack kind of
// each value of the top-level map, by key.
func checkStructure(body []byte) (map[string]kind, error) {
	if len(body) == 0 {
		return nil, violation("frame is empty: no msgpack value")
	}
	if kindOf(body[0]) != kMap {
		return nil, violation("message is not a map")
	}
	end, err := walk(body, 0, 0, nil)
	if err != nil {
		return nil, err
	}
	if end != len(body) {
		return nil, violation("frame has bytes after its msgpack value")
	}
	// The top-level map again, shallowly, for the kinds of its values.
	pos := 1
	var n int
	switch b := body[0]; {
	case b <= 0x8f:
		n = int(b & 0x0f)
	case b == 0xde:
		n = int(binary.BigEndian.Uint16(body[1:]))
		pos = 3
	default:
		n = int(binary.BigEndian.Uint32(body[1:]))
		pos = 5
	}
	kinds := make(map[string]kind, n)
	for i := 0; i < n; i++ {
		keyStart := pos
		pos, _ = walk(body, pos, 1, nil) // checked above
		key, err := msgpack.NewDecoder(bytes.NewReader(body[keyStart:pos])).DecodeString()
		if err != nil {
			return nil, violation("a map key cannot be decoded")
		}
		kinds[key] = kindOf(body[pos])
		pos, _ = walk(body, pos, 1, nil)
	}
	return kinds, nil
}

// Decode decodes and checks one frame body. A type this package does not
// know comes back as a Message with Type alone; the caller decides (an
// agent answers unknown-type, a client ignores it).
func Decode(body []byte) (Message, error) {
	if len(body) > FrameMax {
		return Message{}, violation("frame of %d bytes is over the %d-byte limit", len(body), FrameMax)
	}
	kinds, err := checkStructure(body)
	if err != nil {
		return Message{}, err
	}
	dec := msgpack.NewDecoder(bytes.NewReader(body))
	dec.UseLooseInterfaceDecoding(true)
	v, err := dec.DecodeInterfaceLoose()
	if err != nil {
		return Message{}, violation("message cannot be decoded")
	}
	m, ok := v.(map[string]any)
	if !ok {
		return Message{}, violation("message is not a map of string keys")
	}
	if _, ok := m["type"]; !ok {
		return Message{}, violation("message has no \"type\" field")
	}
	return checkFields(m, kinds)
}

// Encode makes one frame (header and body) of msg, after checking it as
// the receiver will: a message that breaks the rules is an *Error.
func Encode(msg Message) ([]byte, error) {
	fields, err := wireFields(msg)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.Write([]byte{0, 0, 0, 0})
	enc := msgpack.NewEncoder(&buf)
	if err := enc.EncodeMapLen(len(fields)); err != nil {
		return nil, err
	}
	for _, f := range fields {
		if err := enc.EncodeString(f.key); err != nil {
			return nil, err
		}
		if err := encodeValue(enc, f.value); err != nil {
			return nil, err
		}
	}
	frame := buf.Bytes()
	n := len(frame) - FrameHeader
	if n > FrameMax {
		return nil, violation("message of %d bytes is over the %d-byte limit", n, FrameMax)
	}
	binary.BigEndian.PutUint32(frame, uint32(n))
	// Checked as the receiver checks it: what this side sends must pass
	// the other side's decoder.
	if _, err := Decode(frame[FrameHeader:]); err != nil {
		return nil, err
	}
	return frame, nil
}

func encodeValue(enc *msgpack.Encoder, v any) error {
	switch x := v.(type) {
	case string:
		return enc.EncodeString(x)
	case uint64:
		return enc.EncodeUint(x)
	case int64:
		return enc.EncodeInt(x)
	case bool:
		return enc.EncodeBool(x)
	case []string:
		if err := enc.EncodeArrayLen(len(x)); err != nil {
			return err
		}
		for _, s := range x {
			if err := enc.EncodeString(s); err != nil {
				return err
			}
		}
		return nil
	case map[string]any:
		return enc.EncodeMapSorted(x)
	case []map[string]any:
		if err := enc.EncodeArrayLen(len(x)); err != nil {
			return err
		}
		for _, e := range x {
			if err := enc.EncodeMapSorted(e); err != nil {
				return err
			}
		}
		return nil
	}
	return enc.Encode(v)
}

type field struct {
	key   string
	value any
}

// wireFields lists msg's fields as they go on the wire, in a fixed order.
func wireFields(m Message) ([]field, error) {
	if m.Type == "" {
		return nil, violation("message has no type")
	}
	f := []field{{"type", m.Type}}
	add := func(k string, v any) { f = append(f, field{k, v}) }
	if m.HasID {
		add("id", m.ID)
	}
	switch m.Type {
	case "hello":
		add("version", m.Version)
		add("name", m.Name)
		add("pid", m.PID)
		if m.Instance != "" {
			add("instance", m.Instance)
		}
	case "subscribe":
		t := m.Targets
		if t == nil {
			t = []string{}
		}
		add("targets", t)
	case "update":
		add("target", m.Target)
		add("generation", m.Generation)
		add("conninfo", m.Conninfo)
		if m.Reason != "" {
			add("reason", m.Reason)
		}
		if m.Server != "" {
			add("server", m.Server)
		}
		if m.Standby {
			add("standby", true)
		}
		if m.Instance != "" {
			add("instance", m.Instance)
		}
	case "settings":
		add("target", m.Target)
		for _, s := range []struct {
			k string
			v *uint64
		}{{"pool_max", m.PoolMax}, {"pool_min", m.PoolMin}, {"pool_timeout_ms", m.PoolTimeoutMS}, {"pool_idle_timeout_ms", m.PoolIdleTimeoutMS}} {
			if s.v != nil {
				add(s.k, *s.v)
			}
		}
	case "ack", "nack":
		add("target", m.Target)
		add("generation", m.Generation)
		if m.Type == "nack" {
			add("message", m.Text)
		}
		if m.Instance != "" {
			add("instance", m.Instance)
		}
	case "failover", "failback":
		add("target", m.Target)
		if m.Force {
			add("force", true)
		}
	case "reconnect":
		if m.Target != "" {
			add("target", m.Target)
		}
	case "ok":
		if m.HasGeneration {
			add("generation", m.Generation)
		}
	case "error":
		add("code", m.Code)
		add("message", m.Text)
	case "status":
		for _, k := range []string{"agent", "targets", "files", "keys", "truncated"} {
			if v, ok := m.Status[k]; ok {
				add(k, v)
			}
		}
	}
	return f, nil
}

/* ---- fields ---- */

// stringy fields are strings for which nil stands for absent.
var stringy = map[string]bool{"name": true, "target": true, "conninfo": true, "reason": true,
	"server": true, "instance": true, "code": true, "message": true}

type check func(v any, k kind) (any, string)

func uintIn(min, max uint64) check {
	return func(v any, k kind) (any, string) {
		if k != kInt {
			return nil, "is not an integer"
		}
		var u uint64
		switch x := v.(type) {
		case uint64:
			u = x
		case int64:
			if x < 0 {
				return nil, "is out of range"
			}
			u = uint64(x)
		default:
			return nil, "is not an integer"
		}
		if u < min || u > max {
			return nil, "is out of range"
		}
		return u, ""
	}
}

var anyUint = uintIn(0, ^uint64(0))

func anyInt(v any, k kind) (any, string) {
	if k != kInt {
		return nil, "is not an integer"
	}
	switch x := v.(type) {
	case int64:
		return x, ""
	case uint64:
		if x > 1<<63-1 {
			return nil, "is out of range"
		}
		return int64(x), ""
	}
	return nil, "is not an integer"
}

func str(max int) check {
	return func(v any, k kind) (any, string) {
		s, ok := v.(string)
		if k != kStr || !ok {
			return nil, "is not a string"
		}
		if strings.IndexByte(s, 0) >= 0 {
			return nil, "holds a NUL byte"
		}
		if len(s) > max {
			return nil, "is too long"
		}
		return s, ""
	}
}

func boolean(v any, k kind) (any, string) {
	b, ok := v.(bool)
	if k != kBool || !ok {
		return nil, "is not a boolean"
	}
	return b, ""
}

func instance(v any, k kind) (any, string) {
	s, ok := v.(string)
	if k != kStr || !ok || !ValidInstance(s) {
		return nil, "is not 16 lowercase hex digits"
	}
	return s, ""
}

func names(v any, k kind) (any, string) {
	a, ok := v.([]any)
	if k != kArray || !ok {
		return nil, "is not an array"
	}
	if len(a) > SubscribeMax {
		return nil, "names too many targets"
	}
	out := make([]string, 0, len(a))
	for _, e := range a {
		s, ok := e.(string)
		if !ok || len(s) > NameMax {
			return nil, "has an entry that is not a target name"
		}
		out = append(out, s)
	}
	return out, ""
}

func mapField(v any, k kind) (any, string) {
	m, ok := v.(map[string]any)
	if k != kMap || !ok {
		return nil, "is not a map"
	}
	return m, ""
}

func mapsArray(v any, k kind) (any, string) {
	a, ok := v.([]any)
	if k != kArray || !ok {
		return nil, "is not an array"
	}
	for _, e := range a {
		if _, ok := e.(map[string]any); !ok {
			return nil, "has an entry that is not a map"
		}
	}
	return a, ""
}

type spec struct {
	required map[string]check
	optional map[string]check
}

var (
	fID         = anyUint
	fName       = str(NameMax)
	fTarget     = str(NameMax)
	fCode       = str(NameMax)
	fMessage    = str(FrameMax)
	fConninfo   = str(FrameMax)
	fReason     = str(NameMax)
	fServer     = str(NameMax)
	fGeneration = anyUint
	poolSize    = uintIn(1, PoolSizeMax)
	poolMin     = uintIn(0, PoolSizeMax)
	poolTimeout = uintIn(0, PoolTimeoutMaxMS)
)

var specs = map[string]spec{
	"hello":     {map[string]check{"version": anyUint, "name": fName, "pid": anyInt}, map[string]check{"instance": instance}},
	"subscribe": {map[string]check{"targets": names}, nil},
	"update": {map[string]check{"target": fTarget, "generation": fGeneration, "conninfo": fConninfo},
		map[string]check{"reason": fReason, "server": fServer, "standby": boolean, "instance": instance}},
	"settings": {map[string]check{"target": fTarget}, map[string]check{"pool_max": poolSize, "pool_min": poolMin,
		"pool_timeout_ms": poolTimeout, "pool_idle_timeout_ms": poolTimeout}},
	"ack":  {map[string]check{"target": fTarget, "generation": fGeneration}, map[string]check{"instance": instance}},
	"nack": {map[string]check{"target": fTarget, "generation": fGeneration, "message": str(NackMessageMax)}, map[string]check{"instance": instance}},
	// The request has no fields; the reply's tree is described in
	// PROTOCOL.md and passed on as it is, its containers checked.
	"status":    {nil, map[string]check{"agent": mapField, "targets": mapsArray, "files": mapsArray, "keys": mapsArray, "truncated": boolean}},
	"reload":    {nil, nil},
	"ping":      {nil, nil},
	"failover":  {map[string]check{"target": fTarget}, map[string]check{"force": boolean}},
	"failback":  {map[string]check{"target": fTarget}, map[string]check{"force": boolean}},
	"reconnect": {nil, map[string]check{"target": fTarget}},
	"ok":        {nil, map[string]check{"generation": fGeneration}},
	"error":     {map[string]check{"code": fCode, "message": fMessage}, nil},
}

// checkFields checks m's fields against its type's spec and returns the
// Message with the fields it knows (nil strings dropped, unknown keys
// ignored).
func checkFields(m map[string]any, kinds map[string]kind) (Message, error) {
	t, why := str(NameMax)(m["type"], kinds["type"])
	if why != "" {
		return Message{}, violation("field \"type\" %s", why)
	}
	out := Message{Type: t.(string)}
	sp, known := specs[out.Type]
	if !known {
		return out, nil // a newer type: the caller decides
	}
	got := map[string]any{}
	take := func(key string, c check, required bool) error {
		v, has := m[key]
		if !has || (v == nil && stringy[key]) {
			if required {
				return violation("%s message lacks field %q", out.Type, key)
			}
			return nil
		}
		val, why := c(v, kinds[key])
		if why != "" {
			return violation("field %q of a %s message %s", key, out.Type, why)
		}
		got[key] = val
		return nil
	}
	for k, c := range sp.required {
		if err := take(k, c, true); err != nil {
			return Message{}, err
		}
	}
	for k, c := range sp.optional {
		if err := take(k, c, false); err != nil {
			return Message{}, err
		}
	}
	if err := take("id", fID, false); err != nil {
		return Message{}, err
	}

	if v, ok := got["id"]; ok {
		out.ID, out.HasID = v.(uint64), true
	}
	s := func(k string) string { v, _ := got[k].(string); return v }
	u := func(k string) *uint64 {
		if v, ok := got[k].(uint64); ok {
			return &v
		}
		return nil
	}
	out.Name, out.Instance, out.Target, out.Conninfo = s("name"), s("instance"), s("target"), s("conninfo")
	out.Reason, out.Server, out.Code, out.Text = s("reason"), s("server"), s("code"), s("message")
	if v, ok := got["version"].(uint64); ok {
		out.Version = v
	}
	if v, ok := got["pid"].(int64); ok {
		out.PID = v
	}
	if v, ok := got["generation"].(uint64); ok {
		out.Generation, out.HasGeneration = v, true
	}
	out.Standby, _ = got["standby"].(bool)
	out.Force, _ = got["force"].(bool)
	if v, ok := got["targets"].([]string); ok {
		out.Targets = v
	}
	out.PoolMax, out.PoolMin = u("pool_max"), u("pool_min")
	out.PoolTimeoutMS, out.PoolIdleTimeoutMS = u("pool_timeout_ms"), u("pool_idle_timeout_ms")
	if out.Type == "settings" && out.PoolMin != nil && out.PoolMax != nil && *out.PoolMin > *out.PoolMax {
		return Message{}, violation("settings message has pool_min over pool_max")
	}
	if out.Type == "status" {
		out.Status = map[string]any{}
		for _, k := range []string{"agent", "targets", "files", "keys", "truncated"} {
			if v, ok := got[k]; ok {
				out.Status[k] = v
			}
		}
	}
	return out, nil
}
