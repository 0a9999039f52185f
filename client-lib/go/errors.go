package dbswap

import "dbswap.dev/dbswap/protocol"

// Codes of the errors this package makes besides those the agent sends
// (protocol.Code*).
const (
	// CodeDisconnected: the connection to the agent was lost before the
	// answer.
	CodeDisconnected = "disconnected"
	// CodeClosed: the client (or the pool) was closed.
	CodeClosed = "closed"
	// CodeUnavailable: the agent reports no database server available.
	CodeUnavailable = "unavailable"
	// CodeNoValue: no value for the target, and none is coming (no agent
	// and no environment variable, or the value does not connect here).
	CodeNoValue = "no-value"
	// CodeConninfo: a connection string that cannot be used (never
	// quoted).
	CodeConninfo = "conninfo"
	// CodeBusy: a second subscription to one target on one Client.
	CodeBusy = "busy"
	// CodeTimeout: the agent took the connection and did not answer hello
	// in time.
	CodeTimeout = "timeout"
)

// Error is every failure dbswap itself decides: an error the agent sent,
// a protocol violation, no server available. Code says which; errors.Is
// matches it against the sentinels below by code:
//
//	if errors.Is(err, dbswap.ErrForbidden) { ... }
//
// Message never holds a secret. Errors of the database driver pass
// through as the driver made them (their text redacted where dbswap
// passes them on).
type Error struct {
	Code    string
	Message string
	Target  string // the target concerned, if any
	Err     error  // the cause, if any
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "dbswap: " + e.Code
	}
	return "dbswap: " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Is matches a sentinel (an *Error with a Code and nothing else) by code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.Target == "" && t.Err == nil && t.Code == e.Code
}

// Sentinels for errors.Is, one per code.
var (
	ErrProtocol      = &Error{Code: protocol.CodeProtocol}
	ErrVersion       = &Error{Code: protocol.CodeVersion}
	ErrHelloRequired = &Error{Code: protocol.CodeHelloRequired}
	ErrUnknownType   = &Error{Code: protocol.CodeUnknownType}
	ErrUnknownTarget = &Error{Code: protocol.CodeUnknownTarget}
	ErrNotSubscribed = &Error{Code: protocol.CodeNotSubscribed}
	ErrLimit         = &Error{Code: protocol.CodeLimit}
	ErrRefused       = &Error{Code: protocol.CodeRefused}
	ErrForbidden     = &Error{Code: protocol.CodeForbidden}
	ErrInternal      = &Error{Code: protocol.CodeInternal}
	ErrDisconnected  = &Error{Code: CodeDisconnected}
	ErrClosed        = &Error{Code: CodeClosed}
	ErrUnavailable   = &Error{Code: CodeUnavailable}
	ErrNoValue       = &Error{Code: CodeNoValue}
	ErrConninfo      = &Error{Code: CodeConninfo}
	ErrBusy          = &Error{Code: CodeBusy}
	ErrTimeout       = &Error{Code: CodeTimeout}
)
