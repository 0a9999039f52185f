// Package fakeagent is a scripted dbswapd for the unit tests: a Unix
// socket whose connections the test reads and answers message by message,
// built on the protocol package (so it checks what the client sends as
// the agent would).
package fakeagent

import (
	"bufio"
	"encoding/binary"
	"net"
	"path/filepath"
	"testing"
	"time"

	"dbswap.dev/dbswap/protocol"
)

// Agent listens on a socket in the test's temp dir.
type Agent struct {
	Path  string
	ln    net.Listener
	conns chan *Conn
}

// Start listens; the listener and every connection close with the test.
func Start(t testing.TB) *Agent {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatalf("fake agent: listen: %v", err)
	}
	a := &Agent{Path: path, ln: ln, conns: make(chan *Conn, 64)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.conns <- &Conn{c: c, br: bufio.NewReader(c)}
		}
	}()
	t.Cleanup(a.Close)
	return a
}

// Close stops listening and closes the connections not taken.
func (a *Agent) Close() {
	a.ln.Close()
	for {
		select {
		case c := <-a.conns:
			c.Close()
		default:
			return
		}
	}
}

// Accept returns the next connection, failing the test after timeout.
func (a *Agent) Accept(t testing.TB, timeout time.Duration) *Conn {
	t.Helper()
	select {
	case c := <-a.conns:
		t.Cleanup(c.Close)
		return c
	case <-time.After(timeout):
		t.Fatalf("fake agent: no connection within %s", timeout)
		return nil
	}
}

// TryAccept returns the next connection, or nil after timeout.
func (a *Agent) TryAccept(timeout time.Duration) *Conn {
	select {
	case c := <-a.conns:
		return c
	case <-time.After(timeout):
		return nil
	}
}

// Conn is one client connection.
type Conn struct {
	c  net.Conn
	br *bufio.Reader
}

func (c *Conn) Close() { c.c.Close() }

// Recv reads one message, failing the test on a violation or a timeout.
func (c *Conn) Recv(t testing.TB, timeout time.Duration) protocol.Message {
	t.Helper()
	m, err := c.TryRecv(timeout)
	if err != nil {
		t.Fatalf("fake agent: reading a message: %v", err)
	}
	return m
}

// TryRecv reads one message or returns the error (io.EOF when the client
// closed).
func (c *Conn) TryRecv(timeout time.Duration) (protocol.Message, error) {
	c.c.SetReadDeadline(time.Now().Add(timeout))
	body, err := protocol.ReadFrame(c.br)
	if err != nil {
		return protocol.Message{}, err
	}
	return protocol.Decode(body)
}

// Send encodes and sends m.
func (c *Conn) Send(t testing.TB, m protocol.Message) {
	t.Helper()
	f, err := protocol.Encode(m)
	if err != nil {
		t.Fatalf("fake agent: encoding %s: %v", m, err)
	}
	c.SendRaw(t, f)
}

// SendRaw sends bytes as they are.
func (c *Conn) SendRaw(t testing.TB, b []byte) {
	t.Helper()
	c.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.c.Write(b); err != nil {
		t.Fatalf("fake agent: write: %v", err)
	}
}

// SendBody sends body as one frame.
func (c *Conn) SendBody(t testing.TB, body []byte) {
	t.Helper()
	f := make([]byte, 4+len(body))
	binary.BigEndian.PutUint32(f, uint32(len(body)))
	copy(f[4:], body)
	c.SendRaw(t, f)
}

// Hello reads the client's hello and answers it with version 2 and
// instance; it returns the client's hello.
func (c *Conn) Hello(t testing.TB, instance string) protocol.Message {
	t.Helper()
	m := c.Recv(t, 5*time.Second)
	if m.Type != "hello" {
		t.Fatalf("fake agent: first message %s, want hello", m.Type)
	}
	c.Send(t, protocol.Message{Type: "hello", ID: m.ID, HasID: m.HasID, Version: m.Version,
		Name: "dbswapd fake", PID: 1, Instance: instance})
	return m
}

// Expect reads messages until one of type typ (skipping acks and pings
// unless asked for), failing after timeout.
func (c *Conn) Expect(t testing.TB, typ string, timeout time.Duration) protocol.Message {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("fake agent: no %s message within %s", typ, timeout)
		}
		m, err := c.TryRecv(left)
		if err != nil {
			t.Fatalf("fake agent: waiting for %s: %v", typ, err)
		}
		if m.Type == typ {
			return m
		}
	}
}

// Closed reports whether the client closed the connection within timeout
// (reading and dropping what it sends meanwhile).
func (c *Conn) Closed(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		c.c.SetReadDeadline(deadline)
		if _, err := protocol.ReadFrame(c.br); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return false
			}
			return true
		}
	}
	return false
}
