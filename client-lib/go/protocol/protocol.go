// Package protocol is the dbswap wire protocol, version 2 (ipc/PROTOCOL.md
// in the dbswap repository is the contract): frames, messages, their fields
// and limits. It knows nothing of connections, subscriptions or pools; the
// package dbswap builds its client on it, and a test can build a fake agent
// on it.
//
// A frame is a 4-byte big-endian body length and a body of exactly one
// msgpack map. Decode checks a body in two steps: a walk over the raw bytes
// (structure, nesting, string keys, no key twice, no NUL in a string, the
// reserved byte 0xc1, no trailing bytes), then a check of every field of the
// message's type. Anything wrong is a violation: an *Error whose text never
// quotes a value (a value may be a secret).
package protocol

import (
	"fmt"
	"regexp"
)

// Versions and limits (PROTOCOL.md, "Limits"; ipc/protocol.h).
const (
	// Version is the protocol version offered first.
	Version = 2
	// VersionMin is the oldest version a client falls back to for an
	// older agent.
	VersionMin = 1
	// FrameHeader is the length prefix of every frame.
	FrameHeader = 4
	// FrameMax is the largest frame body: far above any message, and it
	// bounds what a peer can make the other buffer. A larger announced
	// length is refused before anything is read for it.
	FrameMax = 65536
	// NameMax bounds names, targets, codes, reasons: env variable and
	// program names are far shorter; it bounds status and log lines.
	NameMax = 255
	// NackMessageMax bounds a nack's message: one error line with
	// context; it goes to the agent's log and into status replies.
	NackMessageMax = 1024
	// SubscribeMax is the most targets per subscribe, and per client.
	SubscribeMax = 64
	// DepthMax is the deepest msgpack nesting, the message's own map being
	// level 1: messages need 5 (the status reply), deeper is hostile.
	DepthMax = 6
	// InstanceLen is the length of an agent instance: 16 lowercase hex
	// digits (64 random bits).
	InstanceLen = 16
	// PoolSizeMax bounds pool_max and pool_min: beyond any server's
	// max_connections.
	PoolSizeMax = 10000
	// PoolTimeoutMaxMS bounds pool_timeout_ms and pool_idle_timeout_ms: a
	// day.
	PoolTimeoutMaxMS = 86400000
	// DefaultSocket is the agent's socket when neither an option nor
	// $DBSWAP_SOCKET names one.
	DefaultSocket = "/run/dbswap/dbswap.sock"
)

// Error codes the agent sends (PROTOCOL.md, "Error codes").
const (
	CodeProtocol      = "protocol"
	CodeVersion       = "version"
	CodeHelloRequired = "hello-required"
	CodeUnknownType   = "unknown-type"
	CodeUnknownTarget = "unknown-target"
	CodeNotSubscribed = "not-subscribed"
	CodeLimit         = "limit"
	CodeRefused       = "refused"
	CodeForbidden     = "forbidden"
	CodeInternal      = "internal"
)

// Error is a protocol violation: a frame or message that breaks the rules.
// Its text names the rule, never a value.
type Error struct {
	Reason string
}

func (e *Error) Error() string { return "protocol violation: " + e.Reason }

func violation(format string, args ...any) *Error {
	return &Error{Reason: fmt.Sprintf(format, args...)}
}

var instanceRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

// ValidInstance reports whether s is an agent instance: 16 lowercase hex
// digits.
func ValidInstance(s string) bool { return instanceRE.MatchString(s) }

// Message is one message of either side, with the fields of its type (the
// others are zero). Optional fields that can be told absent from zero carry
// a Has flag or are pointers. Conninfo is a secret: Message has a String
// method that leaves it out, so that a message printed by mistake shows
// none.
type Message struct {
	Type string

	ID    uint64 // request id, when HasID
	HasID bool

	// hello
	Version uint64
	Name    string
	PID     int64
	// hello (agent), update, ack, nack: the agent instance; "" is absent
	Instance string

	// subscribe
	Targets []string

	// update, ack, nack, settings, failover, failback, reconnect
	Target string
	// update, ack, nack; ok (when HasGeneration)
	Generation    uint64
	HasGeneration bool
	Conninfo      string // update: a secret
	Reason        string // update: "" is absent (rotation)
	Server        string // update: "" is absent (primary)
	Standby       bool   // update
	Force         bool   // failover, failback

	// error: Code and Text (the field "message"); nack: Text
	Code string
	Text string

	// settings: nil when not set
	PoolMax           *uint64
	PoolMin           *uint64
	PoolTimeoutMS     *uint64
	PoolIdleTimeoutMS *uint64

	// status reply: agent, targets, files, keys and truncated as decoded
	// (maps of string keys, []any, int64, uint64, string, bool, nil)
	Status map[string]any
}

// String describes the message without its connection string.
func (m Message) String() string {
	s := m.Type
	if m.HasID {
		s += fmt.Sprintf(" id %d", m.ID)
	}
	if m.Target != "" {
		s += " target " + m.Target
	}
	if m.Type == "update" || m.Type == "ack" || m.Type == "nack" || m.HasGeneration {
		s += fmt.Sprintf(" generation %d", m.Generation)
	}
	if m.Code != "" {
		s += " code " + m.Code
	}
	return s
}

// GoString is String: %#v must not print the connection string either.
func (m Message) GoString() string { return "protocol.Message{" + m.String() + "}" }

// From says who may send a message type.
type From int

const (
	FromClient From = 1 << iota
	FromAgent
	FromBoth = FromClient | FromAgent
)

// Types lists every message type and who sends it; a type not here is one
// this package does not know (a newer peer's).
var Types = map[string]From{
	"hello":     FromBoth,
	"subscribe": FromClient,
	"update":    FromAgent,
	"settings":  FromAgent,
	"ack":       FromClient,
	"nack":      FromClient,
	"status":    FromBoth,
	"reload":    FromClient,
	"ping":      FromClient,
	"failover":  FromClient,
	"failback":  FromClient,
	"reconnect": FromClient,
	"ok":        FromAgent,
	"error":     FromBoth,
}
