package dbswap

import (
	"fmt"
	"log/slog"
	"time"
)

// Update is a value the agent published for a target. The connection
// string is a secret: Conninfo gives it; every printed form (String,
// GoString, LogValue, %v, %+v, %#v) shows it masked.
type Update struct {
	Target     string
	Generation uint64
	// Instance is the agent run that numbered Generation ("" from a
	// version-1 agent): generation numbers mean something only with it.
	Instance string
	// Reason: rotation, failover, failback, manual, unavailable,
	// reconnect, promoted, demoted (PROTOCOL.md, "update").
	Reason string
	// Server: primary, secondary, or none (no server is available: do not
	// connect; fail requests fast until the next update).
	Server string
	// Standby: the server is a read-only standby.
	Standby bool

	conninfo string
}

// Conninfo returns the libpq connection string: a secret.
func (u Update) Conninfo() string { return u.conninfo }

// MaskedConninfo returns the connection string with its passwords masked.
func (u Update) MaskedConninfo() string { return MaskConninfo(u.conninfo) }

// String describes the update, its connection string masked.
func (u Update) String() string {
	standby := ""
	if u.Standby {
		standby = ", standby"
	}
	return fmt.Sprintf("%s generation %d (%s, %s%s): %s", u.Target, u.Generation, u.Reason, u.Server, standby, u.MaskedConninfo())
}

// GoString is String: %#v must not print the secret either.
func (u Update) GoString() string { return "dbswap.Update{" + u.String() + "}" }

// Format prints String for every verb, so that %+v and %#v mask too.
func (u Update) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		fmt.Fprint(f, u.GoString())
		return
	}
	fmt.Fprint(f, u.String())
}

// LogValue masks the update in slog records.
func (u Update) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("target", u.Target),
		slog.Uint64("generation", u.Generation),
		slog.String("instance", u.Instance),
		slog.String("reason", u.Reason),
		slog.String("server", u.Server),
		slog.Bool("standby", u.Standby),
		slog.String("conninfo", u.MaskedConninfo()),
	)
}

// Urgent reports whether the update says the old server is dead or hung
// (reason failover or unavailable) or that no server is available: a pool
// switches at once instead of making before breaking.
func (u Update) Urgent() bool {
	return u.Reason == "failover" || u.Reason == "unavailable" || u.Server == "none"
}

// Settings are a target's pool settings from the agent's env files
// (PROTOCOL.md, "settings"); nil: not set (the pool's own value or
// default applies).
type Settings struct {
	Target          string
	PoolMax         *int
	PoolMin         *int
	PoolTimeout     *time.Duration
	PoolIdleTimeout *time.Duration
}

func (s Settings) String() string {
	f := func(name string, v any) string {
		switch x := v.(type) {
		case *int:
			if x != nil {
				return fmt.Sprintf(" %s=%d", name, *x)
			}
		case *time.Duration:
			if x != nil {
				return fmt.Sprintf(" %s=%s", name, *x)
			}
		}
		return ""
	}
	return s.Target + " settings:" + f("max", s.PoolMax) + f("min", s.PoolMin) +
		f("timeout", s.PoolTimeout) + f("idle_timeout", s.PoolIdleTimeout)
}

// EventKind says what an Event carries.
type EventKind int

const (
	// EventUpdate: a new value (Update); the app switches to it, then
	// acks it (Client.Ack).
	EventUpdate EventKind = iota + 1
	// EventRenumber: the value in use came again under a new number (the
	// agent restarted, or the client reconnected); the client acked it
	// by itself (Sent says whether the ack went out). Update has the new
	// numbering.
	EventRenumber
	// EventSettings: the target's pool settings changed (Settings).
	EventSettings
	// EventRefused: the agent refused the subscription (Err: an *Error,
	// errors.Is(err, ErrForbidden), ErrUnknownTarget, ErrLimit, ...); it
	// is asked again after 1 s, doubling to 60 s, and at every new
	// session.
	EventRefused
	// EventAccepted: the agent accepted the subscription after refusing
	// it.
	EventAccepted
)

func (k EventKind) String() string {
	switch k {
	case EventUpdate:
		return "update"
	case EventRenumber:
		return "renumber"
	case EventSettings:
		return "settings"
	case EventRefused:
		return "refused"
	case EventAccepted:
		return "accepted"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is what a Subscription delivers, in the order the agent sent it.
type Event struct {
	Kind     EventKind
	Update   Update   // EventUpdate, EventRenumber
	Settings Settings // EventSettings
	Err      error    // EventRefused
	Sent     bool     // EventRenumber: the client's ack went out
}
