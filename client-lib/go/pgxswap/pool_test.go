package pgxswap_test

// The pool against a fake agent, for what needs no server: refusals,
// no server available, no agent and no value, Close. The swaps themselves
// run against the real agent and PostgreSQL in tests/integration/
// test_go.py.

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"dbswap.dev/dbswap"
	"dbswap.dev/dbswap/internal/fakeagent"
	"dbswap.dev/dbswap/pgxswap"
	"dbswap.dev/dbswap/protocol"
)

const (
	inst = "0123456789abcdef"
	wait = 5 * time.Second
)

type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newPool(t *testing.T, socket, target string) (*pgxswap.Pool, *logBuf) {
	t.Helper()
	lb := &logBuf{}
	p, err := pgxswap.NewWithConfig(context.Background(), pgxswap.Config{Target: target,
		ClientConfig: dbswap.Config{Socket: socket, Name: "pool-unit"},
		Logger:       slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p, lb
}

func TestForbiddenTargetFailsFast(t *testing.T) {
	a := fakeagent.Start(t)
	p, _ := newPool(t, a.Path, "DATABASE_URL")
	conn := a.Accept(t, wait)
	conn.Hello(t, inst)
	s := conn.Expect(t, "subscribe", wait)
	conn.Send(t, protocol.Message{Type: "error", ID: s.ID, HasID: true, Code: "forbidden", Text: "uid 65534 may not subscribe to DATABASE_URL"})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	t0 := time.Now()
	_, err := p.Acquire(ctx)
	if !errors.Is(err, dbswap.ErrForbidden) {
		t.Fatalf("Acquire: %v, want ErrForbidden", err)
	}
	if !strings.Contains(err.Error(), "DATABASE_URL") {
		t.Errorf("the error does not name the target: %v", err)
	}
	if time.Since(t0) > time.Second {
		t.Errorf("failed after %s", time.Since(t0))
	}
	if _, err := p.Exec(ctx, "SELECT 1"); !errors.Is(err, dbswap.ErrForbidden) {
		t.Errorf("Exec: %v", err)
	}
	if err := p.QueryRow(ctx, "SELECT 1").Scan(new(int)); !errors.Is(err, dbswap.ErrForbidden) {
		t.Errorf("QueryRow: %v", err)
	}
}

func TestUnknownTarget(t *testing.T) {
	a := fakeagent.Start(t)
	p, _ := newPool(t, a.Path, "NOPE_URL")
	conn := a.Accept(t, wait)
	conn.Hello(t, inst)
	s := conn.Expect(t, "subscribe", wait)
	conn.Send(t, protocol.Message{Type: "error", ID: s.ID, HasID: true, Code: "unknown-target", Text: "no target NOPE_URL"})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := p.Ping(ctx); !errors.Is(err, dbswap.ErrUnknownTarget) {
		t.Fatalf("Ping: %v, want ErrUnknownTarget", err)
	}
}

func TestNoServerAvailableFailsAtOnceAndIsAcked(t *testing.T) {
	a := fakeagent.Start(t)
	p, _ := newPool(t, a.Path, "DATABASE_URL")
	conn := a.Accept(t, wait)
	conn.Hello(t, inst)
	s := conn.Expect(t, "subscribe", wait)
	conn.Send(t, protocol.Message{Type: "update", Target: "DATABASE_URL", Generation: 3, Instance: inst,
		Conninfo: "host=/nonexistent password=zz9pw", Reason: "unavailable", Server: "none"})
	conn.Send(t, protocol.Message{Type: "ok", ID: s.ID, HasID: true})
	// Acked: no connection of an older value is held.
	ack := conn.Expect(t, "ack", wait)
	if ack.Generation != 3 || ack.Instance != inst {
		t.Errorf("ack %s", ack)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	t0 := time.Now()
	_, err := p.Acquire(ctx)
	if !errors.Is(err, dbswap.ErrUnavailable) || time.Since(t0) > 100*time.Millisecond {
		t.Errorf("Acquire: %v after %s", err, time.Since(t0))
	}
	if strings.Contains(err.Error(), "zz9pw") {
		t.Errorf("the error shows the password: %v", err)
	}
	if st := p.Stats(); !st.Unavailable || st.Generation != 3 || !st.AckedOK || st.Acked != 3 {
		t.Errorf("stats %+v", st)
	}
}

func TestNoAgentNoValue(t *testing.T) {
	t.Setenv("DBSWAP_UNIT_NOWHERE_URL", "")
	p, _ := newPool(t, t.TempDir()+"/none.sock", "DBSWAP_UNIT_NOWHERE_URL")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	t0 := time.Now()
	_, err := p.Acquire(ctx)
	if !errors.Is(err, dbswap.ErrNoValue) {
		t.Fatalf("Acquire: %v, want ErrNoValue", err)
	}
	if !strings.Contains(err.Error(), "none.sock") || !strings.Contains(err.Error(), "$DBSWAP_UNIT_NOWHERE_URL") {
		t.Errorf("the error does not say why: %v", err)
	}
	if time.Since(t0) > 2*time.Second {
		t.Errorf("failed after %s", time.Since(t0))
	}
}

func TestClose(t *testing.T) {
	a := fakeagent.Start(t)
	p, _ := newPool(t, a.Path, "DATABASE_URL")
	p.Close()
	p.Close() // twice is fine
	if _, err := p.Acquire(context.Background()); !errors.Is(err, dbswap.ErrClosed) {
		t.Errorf("Acquire after Close: %v", err)
	}
}

func TestSecondPoolOnOneClient(t *testing.T) {
	a := fakeagent.Start(t)
	c := dbswap.NewClient(dbswap.Config{Socket: a.Path})
	defer c.Close()
	p, err := pgxswap.NewWithConfig(context.Background(), pgxswap.Config{Client: c})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := pgxswap.NewWithConfig(context.Background(), pgxswap.Config{Client: c}); !errors.Is(err, dbswap.ErrBusy) {
		t.Errorf("a second pool for DATABASE_URL on one client: %v", err)
	}
}
