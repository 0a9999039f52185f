package dbswap_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"dbswap.dev/dbswap"
	"dbswap.dev/dbswap/internal/fakeagent"
	"dbswap.dev/dbswap/protocol"
)

const (
	inst1  = "0123456789abcdef"
	inst2  = "fedcba9876543210"
	secret = "s3cretPW"
	wait   = 5 * time.Second
)

var conninfo = "postgresql://app:" + secret + "@db/app"

// logBuf collects log lines, for the checks that no secret is logged.
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

func newClient(t *testing.T, a *fakeagent.Agent) (*dbswap.Client, *logBuf) {
	t.Helper()
	lb := &logBuf{}
	c := dbswap.NewClient(dbswap.Config{Socket: a.Path, Name: "unit",
		Logger: slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	t.Cleanup(func() { c.Close() })
	return c, lb
}

func nextEvent(t *testing.T, s *dbswap.Subscription) dbswap.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	e, err := s.Next(ctx)
	if err != nil {
		t.Fatalf("no event for %s: %v", s.Target(), err)
	}
	return e
}

func update(target string, gen uint64, instance, conninfo string) protocol.Message {
	return protocol.Message{Type: "update", Target: target, Generation: gen, Instance: instance, Conninfo: conninfo}
}

func TestHelloSubscribePerTargetAndRefusal(t *testing.T) {
	a := fakeagent.Start(t)
	c, logs := newClient(t, a)
	subA, err := c.Subscribe("DATABASE_URL")
	if err != nil {
		t.Fatal(err)
	}
	subB, _ := c.Subscribe("REPORTS_URL")
	if _, err := c.Subscribe("DATABASE_URL"); !errors.Is(err, dbswap.ErrBusy) {
		t.Errorf("a second subscription to one target: %v, want ErrBusy", err)
	}
	if _, err := c.Subscribe("1BAD"); err == nil {
		t.Error("a bad target name was taken")
	}

	conn := a.Accept(t, wait)
	hello := conn.Hello(t, inst1)
	if hello.Version != 2 || hello.Name != "unit" || hello.PID != int64(os.Getpid()) {
		t.Errorf("hello: %s version %d name %q pid %d", hello, hello.Version, hello.Name, hello.PID)
	}
	// One subscribe per target, each with an id of its own.
	byTarget := map[string]protocol.Message{}
	for i := 0; i < 2; i++ {
		m := conn.Expect(t, "subscribe", wait)
		if len(m.Targets) != 1 || !m.HasID {
			t.Fatalf("subscribe %v: want one target and an id", m.Targets)
		}
		byTarget[m.Targets[0]] = m
	}
	if byTarget["DATABASE_URL"].ID == byTarget["REPORTS_URL"].ID {
		t.Error("both subscribes have the same id")
	}
	conn.Send(t, update("DATABASE_URL", 1, inst1, conninfo))
	conn.Send(t, protocol.Message{Type: "ok", ID: byTarget["DATABASE_URL"].ID, HasID: true})
	conn.Send(t, protocol.Message{Type: "error", ID: byTarget["REPORTS_URL"].ID, HasID: true, Code: "forbidden", Text: "uid 1000 may not subscribe to REPORTS_URL"})

	e := nextEvent(t, subA)
	if e.Kind != dbswap.EventUpdate || e.Update.Conninfo() != conninfo || e.Update.Generation != 1 || e.Update.Instance != inst1 ||
		e.Update.Reason != "rotation" || e.Update.Server != "primary" {
		t.Errorf("event %v %v", e.Kind, e.Update)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := subA.Wait(ctx); err != nil {
		t.Errorf("DATABASE_URL: %v", err)
	}
	err = subB.Wait(ctx)
	if !errors.Is(err, dbswap.ErrForbidden) || errors.Is(err, dbswap.ErrUnknownTarget) {
		t.Errorf("REPORTS_URL: %v, want ErrForbidden", err)
	}
	if !strings.Contains(err.Error(), "REPORTS_URL") || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("the refusal does not say what: %v", err)
	}
	if e := nextEvent(t, subB); e.Kind != dbswap.EventRefused || !errors.Is(e.Err, dbswap.ErrForbidden) {
		t.Errorf("REPORTS_URL event %v %v", e.Kind, e.Err)
	}
	// The refused target alone is asked again, about a second later.
	t0 := time.Now()
	m := conn.Expect(t, "subscribe", 3*time.Second)
	if len(m.Targets) != 1 || m.Targets[0] != "REPORTS_URL" {
		t.Errorf("asked again for %v", m.Targets)
	}
	if d := time.Since(t0); d < 700*time.Millisecond {
		t.Errorf("asked again after %s, want about 1 s", d)
	}
	conn.Send(t, protocol.Message{Type: "ok", ID: m.ID, HasID: true})
	if e := nextEvent(t, subB); e.Kind != dbswap.EventAccepted {
		t.Errorf("after the ok: %v", e.Kind)
	}
	if strings.Contains(logs.String(), secret) {
		t.Errorf("the log holds the password:\n%s", logs)
	}
}

func TestVersionFallback(t *testing.T) {
	a := fakeagent.Start(t)
	c, _ := newClient(t, a)
	conn := a.Accept(t, wait)
	h := conn.Recv(t, wait)
	if h.Version != 2 {
		t.Fatalf("first offer %d", h.Version)
	}
	conn.Send(t, protocol.Message{Type: "error", ID: h.ID, HasID: true, Code: "version", Text: "this agent speaks version 1"})
	conn.Close()
	// At once, not after a backoff.
	t0 := time.Now()
	conn2 := a.Accept(t, wait)
	h2 := conn2.Recv(t, wait)
	if h2.Version != 1 {
		t.Errorf("second offer %d, want 1", h2.Version)
	}
	if d := time.Since(t0); d > 500*time.Millisecond {
		t.Errorf("fell back after %s", d)
	}
	conn2.Send(t, protocol.Message{Type: "hello", ID: h2.ID, HasID: true, Version: 1, Name: "old", PID: 1})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := c.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if info, _ := c.Session(); info.Version != 1 || info.Instance != "" {
		t.Errorf("session %+v", info)
	}
	// A version-1 agent has no ping: its unknown-type shows it alive.
	go func() {
		m := conn2.Expect(t, "ping", wait)
		conn2.Send(t, protocol.Message{Type: "error", ID: m.ID, HasID: true, Code: "unknown-type", Text: "ping"})
	}()
	if _, err := c.Ping(ctx); err != nil {
		t.Errorf("ping of a version-1 agent: %v", err)
	}
	// Lost: the next connection offers 2 again (the agent may be newer).
	conn2.Close()
	conn3 := a.Accept(t, wait)
	if h3 := conn3.Recv(t, wait); h3.Version != 2 {
		t.Errorf("after a loss: offer %d, want 2", h3.Version)
	}
}

func TestAckInstanceAndRenumber(t *testing.T) {
	a := fakeagent.Start(t)
	c, _ := newClient(t, a)
	sub, _ := c.Subscribe("DATABASE_URL")
	conn := a.Accept(t, wait)
	conn.Hello(t, inst1)
	s := conn.Expect(t, "subscribe", wait)
	conn.Send(t, update("DATABASE_URL", 4, inst1, conninfo))
	conn.Send(t, protocol.Message{Type: "ok", ID: s.ID, HasID: true})
	e := nextEvent(t, sub)
	if !c.Ack(e.Update) {
		t.Fatal("the ack was not sent")
	}
	ack := conn.Expect(t, "ack", wait)
	if ack.Target != "DATABASE_URL" || ack.Generation != 4 || ack.Instance != inst1 {
		t.Errorf("ack %s instance %q", ack, ack.Instance)
	}
	// A future generation is not acked.
	future := e.Update
	future.Generation = 9
	if c.Ack(future) {
		t.Error("a generation the agent never sent was acked")
	}

	// The agent restarts (a new instance) with the same value: the client
	// acks the new numbering by itself, with the new instance.
	conn.Close()
	conn2 := a.Accept(t, wait)
	conn2.Hello(t, inst2)
	s2 := conn2.Expect(t, "subscribe", wait)
	conn2.Send(t, update("DATABASE_URL", 1, inst2, conninfo))
	conn2.Send(t, protocol.Message{Type: "ok", ID: s2.ID, HasID: true})
	ack2 := conn2.Expect(t, "ack", wait)
	if ack2.Generation != 1 || ack2.Instance != inst2 {
		t.Errorf("quiet ack: %s instance %q", ack2, ack2.Instance)
	}
	if ev := nextEvent(t, sub); ev.Kind != dbswap.EventRenumber || !ev.Sent || ev.Update.Instance != inst2 {
		t.Errorf("event %v sent %v %v", ev.Kind, ev.Sent, ev.Update)
	}
	// The old run's update is never acked to the new run.
	if c.Ack(e.Update) {
		t.Error("generation 4 of the old instance was acked to the new one")
	}
	// A new value is an update, not acked by itself.
	conn2.Send(t, update("DATABASE_URL", 2, inst2, conninfo+"2"))
	ev := nextEvent(t, sub)
	if ev.Kind != dbswap.EventUpdate || ev.Update.Generation != 2 {
		t.Errorf("event %v %v", ev.Kind, ev.Update)
	}
	// Nack: the message masked (the value and its password), cut to 1024
	// bytes.
	long := "cannot connect with " + ev.Update.Conninfo() + ": password " + secret + "2 rejected " + strings.Repeat("é", 600)
	if !c.Nack(ev.Update, long) {
		t.Fatal("the nack was not sent")
	}
	nack := conn2.Expect(t, "nack", wait)
	if strings.Contains(nack.Text, secret) || len(nack.Text) > protocol.NackMessageMax || nack.Instance != inst2 {
		t.Errorf("nack of %d bytes, instance %q: %.120s", len(nack.Text), nack.Instance, nack.Text)
	}
	// The reconnect reason repeats the value on purpose: an update.
	conn2.Send(t, protocol.Message{Type: "update", Target: "DATABASE_URL", Generation: 3, Instance: inst2, Conninfo: conninfo + "2", Reason: "reconnect"})
	if ev := nextEvent(t, sub); ev.Kind != dbswap.EventUpdate || ev.Update.Reason != "reconnect" {
		t.Errorf("reconnect: %v %v", ev.Kind, ev.Update)
	}
}

func TestSettings(t *testing.T) {
	a := fakeagent.Start(t)
	c, _ := newClient(t, a)
	sub, _ := c.Subscribe("DATABASE_URL")
	conn := a.Accept(t, wait)
	conn.Hello(t, inst1)
	conn.Expect(t, "subscribe", wait)
	max, tmo := uint64(30), uint64(1500)
	conn.Send(t, protocol.Message{Type: "settings", Target: "DATABASE_URL", PoolMax: &max, PoolTimeoutMS: &tmo})
	e := nextEvent(t, sub)
	if e.Kind != dbswap.EventSettings || e.Settings.PoolMax == nil || *e.Settings.PoolMax != 30 || e.Settings.PoolMin != nil ||
		*e.Settings.PoolTimeout != 1500*time.Millisecond {
		t.Errorf("settings %v %v", e.Kind, e.Settings)
	}
	if s, ok := sub.Settings(); !ok || *s.PoolMax != 30 {
		t.Errorf("Settings() %v %v", s, ok)
	}
}

// The agent breaks the protocol: the client drops the connection and comes
// back with backoff; a frame of exactly 65536 bytes is fine, one byte more
// is not.
func TestAgentViolationsAndFrameLimit(t *testing.T) {
	a := fakeagent.Start(t)
	c, logs := newClient(t, a)
	sub, _ := c.Subscribe("DATABASE_URL")
	conn := a.Accept(t, wait)
	conn.Hello(t, inst1)
	conn.Expect(t, "subscribe", wait)

	// Exactly the limit: an update whose body is 65536 bytes.
	big := func(size int) []byte {
		base, _ := protocol.Encode(update("DATABASE_URL", 1, inst1, ""))
		// "" takes a byte; a string of 256 to 65535 bytes 3 and itself.
		n := size - (len(base) - 4) - 2
		prefix := "host=db password=" + secret + " application_name="
		f, err := protocol.Encode(update("DATABASE_URL", 1, inst1, prefix+strings.Repeat("x", n-len(prefix))))
		if err != nil || len(f)-4 != size {
			t.Fatalf("built %d bytes (%v), want %d", len(f)-4, err, size)
		}
		return f[4:]
	}
	conn.SendBody(t, big(protocol.FrameMax))
	if e := nextEvent(t, sub); e.Kind != dbswap.EventUpdate {
		t.Fatalf("a frame of 65536 bytes: %v", e.Kind)
	}
	// One byte over: announced in the header, refused before the body.
	hdr := []byte{0, 1, 0, 1}
	conn.SendRaw(t, hdr)
	if !conn.Closed(wait) {
		t.Fatal("the client kept a connection that announced 65537 bytes")
	}
	conn2 := a.Accept(t, wait)
	conn2.Hello(t, inst1)
	conn2.Expect(t, "subscribe", wait)
	// An update without instance in version 2: a violation.
	conn2.Send(t, protocol.Message{Type: "update", Target: "DATABASE_URL", Generation: 2, Conninfo: conninfo})
	if !conn2.Closed(wait) {
		t.Fatal("the client kept a connection after an update without instance")
	}
	conn3 := a.Accept(t, wait)
	conn3.Hello(t, inst1)
	conn3.Expect(t, "subscribe", wait)
	// A message only clients send, then a duplicate key.
	conn3.Send(t, protocol.Message{Type: "ack", Target: "DATABASE_URL", Generation: 1, Instance: inst1})
	if !conn3.Closed(wait) {
		t.Fatal("the client kept a connection after an ack from the agent")
	}
	out := logs.String()
	if !strings.Contains(out, "bad message from the agent") {
		t.Errorf("the violations were not logged:\n%s", out)
	}
	if strings.Contains(out, secret) {
		t.Errorf("the log holds the password:\n%s", out)
	}
}

// An agent that drops the client right after hello does not get a
// connection every 20 ms: the backoff starts over only after a session
// that lasted 2 s.
func TestBackoffNotResetByShortSessions(t *testing.T) {
	a := fakeagent.Start(t)
	newClient(t, a)
	n := 0
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		conn := a.TryAccept(time.Until(deadline))
		if conn == nil {
			break
		}
		n++
		conn.Hello(t, inst1)
		conn.Close()
	}
	// 20, 40, 80, 160, 320, 640 ms (each between half and all of it): at
	// most 8 in 1.5 s; without the rule, about 75.
	if n > 9 {
		t.Errorf("%d connections in 1.5 s: the backoff started over", n)
	}
	if n < 3 {
		t.Errorf("only %d connections in 1.5 s", n)
	}
}

func TestRequests(t *testing.T) {
	a := fakeagent.Start(t)
	c, _ := newClient(t, a)
	conn := a.Accept(t, wait)
	conn.Hello(t, inst1)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	go func() {
		m := conn.Expect(t, "reload", wait)
		conn.Send(t, protocol.Message{Type: "error", ID: m.ID, HasID: true, Code: "forbidden", Text: "reload needs an admin"})
		m = conn.Expect(t, "failover", wait)
		if !m.Force || m.Target != "DATABASE_URL" {
			t.Errorf("failover %s force %v", m, m.Force)
		}
		conn.Send(t, protocol.Message{Type: "ok", ID: m.ID, HasID: true, Generation: 7, HasGeneration: true})
		m = conn.Expect(t, "status", wait)
		conn.Send(t, protocol.Message{Type: "status", ID: m.ID, HasID: true, Status: map[string]any{
			"agent": map[string]any{"instance": inst1}, "targets": []map[string]any{{"name": "DATABASE_URL"}}}})
	}()
	err := c.Reload(ctx)
	if !errors.Is(err, dbswap.ErrForbidden) || !strings.Contains(err.Error(), "admin") {
		t.Errorf("reload: %v", err)
	}
	var de *dbswap.Error
	if !errors.As(err, &de) || de.Code != "forbidden" {
		t.Errorf("reload error %#v", err)
	}
	if g, err := c.Failover(ctx, "DATABASE_URL", true); err != nil || g != 7 {
		t.Errorf("failover: %d %v", g, err)
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st["agent"].(map[string]any)["instance"] != inst1 {
		t.Errorf("status %v", st)
	}
	// A request cut by a lost connection fails with ErrDisconnected.
	go func() {
		conn.Expect(t, "ping", wait)
		conn.Close()
	}()
	if _, err := c.Ping(ctx); !errors.Is(err, dbswap.ErrDisconnected) {
		t.Errorf("ping across a loss: %v", err)
	}
	// A request waits for the next session; a context ends the wait.
	short, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if _, err := c.Ping(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ping without agent: %v", err)
	}
	c.Close()
	if _, err := c.Ping(ctx); !errors.Is(err, dbswap.ErrClosed) {
		t.Errorf("ping after Close: %v", err)
	}
}

func TestNoAgent(t *testing.T) {
	c := dbswap.NewClient(dbswap.Config{Socket: t.TempDir() + "/none.sock", Logger: slog.New(slog.NewTextHandler(&logBuf{}, nil))})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := c.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait: %v", err)
	}
	err := c.LastError()
	if !errors.Is(err, dbswap.ErrDisconnected) || !strings.Contains(err.Error(), "none.sock") {
		t.Errorf("LastError: %v", err)
	}
}

func TestUpdateMasked(t *testing.T) {
	a := fakeagent.Start(t)
	c, _ := newClient(t, a)
	sub, _ := c.Subscribe("DATABASE_URL")
	conn := a.Accept(t, wait)
	conn.Hello(t, inst1)
	conn.Expect(t, "subscribe", wait)
	conn.Send(t, update("DATABASE_URL", 1, inst1, conninfo))
	u := nextEvent(t, sub).Update
	var lb logBuf
	slog.New(slog.NewJSONHandler(&lb, nil)).Info("got", "update", u)
	out := []string{fmt.Sprint(u), fmt.Sprintf("%v %+v %#v %s %q", u, u, u, u, u), u.String(), u.MaskedConninfo(), lb.String()}
	b, _ := json.Marshal(u)
	out = append(out, string(b))
	for _, s := range out {
		if strings.Contains(s, secret) {
			t.Errorf("%q shows the password", s)
		}
	}
	if u.MaskedConninfo() != "postgresql://app:****@db/app" {
		t.Errorf("masked %q", u.MaskedConninfo())
	}
}

// The masker hides at least what the agent's (common/mask.c) hides: the
// cases of tests/unit/test-mask.c, as the Node package runs them.
func TestMaskCases(t *testing.T) {
	raw, err := os.ReadFile("testdata/mask_cases.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases struct {
		Groups  map[string][][]*string `json:"groups"`
		Refused [][]string             `json:"refused"`
	}
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatal(err)
	}
	n := 0
	for group, list := range cases.Groups {
		for _, c := range list {
			in := *c[0]
			out := dbswap.MaskConninfo(in)
			if c[1] != nil && out != *c[1] {
				t.Errorf("%s: mask of %q = %q, want %q", group, in, out, *c[1])
			}
			for _, frag := range c[2:] {
				if strings.Contains(out, *frag) {
					t.Errorf("%s: mask of %q = %q leaks %q", group, in, out, *frag)
				}
			}
			n++
		}
	}
	for _, c := range cases.Refused {
		if out := dbswap.MaskConninfo(c[0]); out != c[1] {
			t.Errorf("refused: mask of %q = %q, want %q", c[0], out, c[1])
		}
		n++
	}
	if n < 100 {
		t.Errorf("only %d cases read", n)
	}
}

func TestRedact(t *testing.T) {
	nested := "host=db dbname='host=db password=n3sted user=app'"
	if s := dbswap.Redact(`database "host=db password=n3sted user=app" does not exist; password n3sted`, nested); strings.Contains(s, "n3sted") {
		t.Error(s)
	}
	if s := dbswap.Redact("invalid port \"p0rtpass\"", "host=db port=p0rtpass user=app"); strings.Contains(s, "p0rtpass") {
		t.Error(s)
	}
	if s := dbswap.Redact("could not connect to app:s3cretport", "postgresql://app:s3cretport/db"); strings.Contains(s, "s3cretport") {
		t.Error(s)
	}
	if s := dbswap.Redact("a b c", "postgresql://db/x?application_name=a:b@c"); s != "a b c" {
		t.Error(s)
	}
	if s := dbswap.Redact(`database "app" does not exist`, "host=db dbname=app password=pw12"); s != `database "app" does not exist` {
		t.Error(s)
	}
}
