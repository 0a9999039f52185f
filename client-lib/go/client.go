// Package dbswap is the Go client of dbswapd, the agent that publishes
// validated database credentials and failovers over a Unix socket
// (ipc/PROTOCOL.md in the dbswap repository).
//
// A Client connects to the agent, says hello (protocol version 2, falling
// back to 1 for an older agent), follows targets (one subscribe per target,
// each on its own request id), keeps the last value of each, acks a
// generation with the agent instance that numbered it, and reconnects with
// backoff (20 ms doubling to 2 s, starting over only after a connection that
// stayed up 2 s). Every method is safe for concurrent use; every method that
// waits takes a context.Context.
//
// The package dbswap.dev/dbswap/pgxswap builds a pgx pool on it that swaps
// connections by itself; most apps need only that.
package dbswap

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"dbswap.dev/dbswap/protocol"
)

// Reconnection backoff: the first retry comes quickly (an agent restarted
// by systemd is back within milliseconds), then it doubles up to 2 s, so
// that a client is back within 2 s of the agent's return. It starts over
// only after a session that lasted SessionStable: an agent that drops the
// client right after hello (a limit, the idle timeout of a forbidden uid)
// is not hammered.
const (
	ReconnectFirst = 20 * time.Millisecond
	ReconnectMax   = 2 * time.Second
	SessionStable  = 2 * time.Second
	// HelloTimeout is how long a connection attempt waits for the agent's
	// hello by default: a stopped agent's socket may still accept.
	HelloTimeout = 5 * time.Second
	// WriteTimeout bounds one frame's write: an agent that does not read
	// for this long is dropped and reconnected to.
	WriteTimeout = 5 * time.Second
	// A refused subscription is asked for again after this, doubling.
	resubscribeFirst = time.Second
	resubscribeMax   = 60 * time.Second
	// The same protocol violation by the agent is logged once in this.
	violationRepeat = time.Minute
	// Frames queued for the writer: far beyond a session's needs (a
	// subscribe per target, acks); a full queue means the agent stopped
	// reading.
	outQueue = 1024
)

// Config configures a Client; the zero value is usable.
type Config struct {
	// Socket is the agent's socket; default $DBSWAP_SOCKET, else
	// /run/dbswap/dbswap.sock.
	Socket string
	// Name is shown in the agent's status and log; default the program's
	// file name.
	Name string
	// HelloTimeout: how long a connection attempt waits for the agent's
	// hello (default 5 s).
	HelloTimeout time.Duration
	// Logger gets the client's log lines (never a secret); default
	// slog.Default().
	Logger *slog.Logger
}

// SessionInfo describes the connected agent.
type SessionInfo struct {
	Version  int    // the session's protocol version
	Instance string // the agent instance ("" from a version-1 agent)
	Name     string // the agent's name and version, "dbswapd 0.1.0"
	PID      int64
}

const (
	stateIdle = iota
	stateHello
	stateReady
	stateClosed
)

// Client is a connection to dbswapd, re-made whenever it is lost. Create
// one with NewClient; Close it when done.
type Client struct {
	path         string
	name         string
	helloTimeout time.Duration
	log          *slog.Logger

	mu       sync.Mutex
	state    int
	sess     *session
	info     SessionInfo
	offer    uint64
	lastErr  error
	nextID   uint64
	reqs     map[uint64]*request // sent in this session; nil: abandoned
	queue    []*request          // not sent yet
	subs     map[string]*Subscription
	subIDs   map[uint64]*Subscription // subscribe ids of this session
	readyCh  chan struct{}            // closed when a session is up
	warned   bool                     // "cannot reach" said since the last session
	violLast string
	violAt   time.Time
	violMore int

	closeCh chan struct{}
	done    chan struct{}
}

// NewClient starts a client: it connects in the background, and keeps
// reconnecting until Close. It does not wait for the agent (Wait does).
func NewClient(cfg Config) *Client {
	path := cfg.Socket
	if path == "" {
		path = os.Getenv("DBSWAP_SOCKET")
	}
	if path == "" {
		path = protocol.DefaultSocket
	}
	name := cfg.Name
	if name == "" && len(os.Args) > 0 {
		name = filepath.Base(os.Args[0])
	}
	if name == "" {
		name = "go"
	}
	name = truncateUTF8(strings.ReplaceAll(name, "\x00", "?"), protocol.NameMax)
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	c := &Client{
		path:         path,
		name:         name,
		helloTimeout: cfg.HelloTimeout,
		log:          log.With("component", "dbswap"),
		offer:        protocol.Version,
		reqs:         map[uint64]*request{},
		subs:         map[string]*Subscription{},
		subIDs:       map[uint64]*Subscription{},
		readyCh:      make(chan struct{}),
		closeCh:      make(chan struct{}),
		done:         make(chan struct{}),
	}
	if c.helloTimeout <= 0 {
		c.helloTimeout = HelloTimeout
	}
	go c.run()
	return c
}

// SocketPath returns the agent's socket path in use.
func (c *Client) SocketPath() string { return c.path }

// Connected reports whether a session with the agent is up.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == stateReady
}

// Session describes the connected agent; ok false when not connected.
func (c *Client) Session() (info SessionInfo, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.info, c.state == stateReady
}

// LastError says why the last connection attempt failed (nil once
// connected, and before the first attempt ended).
func (c *Client) LastError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

// Wait waits until a session with the agent is up, or ctx is done.
func (c *Client) Wait(ctx context.Context) error {
	for {
		c.mu.Lock()
		if c.state == stateReady {
			c.mu.Unlock()
			return nil
		}
		if c.state == stateClosed {
			c.mu.Unlock()
			return c.closedError()
		}
		ch := c.readyCh
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *Client) closedError() error {
	return &Error{Code: CodeClosed, Message: "the client is closed"}
}

// Close ends the connection and the reconnection loop, fails what waits
// for the agent (ErrClosed) and ends every subscription. It returns once
// the background goroutines are gone.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		<-c.done
		return nil
	}
	c.state = stateClosed
	close(c.closeCh)
	if c.sess != nil {
		c.sess.kill()
	}
	err := c.closedError()
	for _, r := range c.queue {
		r.finish(protocol.Message{}, err)
	}
	c.queue = nil
	for id, r := range c.reqs {
		if r != nil {
			r.finish(protocol.Message{}, err)
		}
		delete(c.reqs, id)
	}
	for _, s := range c.subs {
		s.closeLocked()
	}
	c.mu.Unlock()
	<-c.done
	return nil
}

/* ---- the connection ---- */

// session is one connection: its writer goroutine sends what is queued.
type session struct {
	conn net.Conn
	out  chan []byte
	dead chan struct{}
	once sync.Once
}

func (s *session) kill() {
	s.once.Do(func() {
		close(s.dead)
		s.conn.Close()
	})
}

// send queues a frame; a full queue kills the session (the agent is not
// reading).
func (s *session) send(frame []byte) bool {
	select {
	case <-s.dead:
		return false
	default:
	}
	select {
	case s.out <- frame:
		return true
	default:
		s.kill()
		return false
	}
}

func (s *session) writer() {
	for {
		select {
		case <-s.dead:
			return
		case f := <-s.out:
			s.conn.SetWriteDeadline(time.Now().Add(WriteTimeout))
			_, err := s.conn.Write(f)
			protocol.Zero(f) // a nack may quote an error; nothing else is secret
			if err != nil {
				s.kill()
				return
			}
		}
	}
}

func (c *Client) run() {
	defer close(c.done)
	attempts := 0
	for {
		fallback, stable := c.connectOnce()
		if stable {
			attempts = 0
		}
		var delay time.Duration
		if !fallback {
			delay = backoff(attempts, ReconnectFirst, ReconnectMax)
			attempts++
		}
		select {
		case <-c.closeCh:
			return
		case <-time.After(delay):
		}
	}
}

// backoff is a retry delay: first * 2^attempt, at most max, with jitter
// (between half and all of it) so that clients that lost the agent
// together do not come back together. libdbswap's backoff_ms().
func backoff(attempt int, first, max time.Duration) time.Duration {
	base := first
	for i := 0; i < attempt && base < max; i++ {
		base *= 2
	}
	if base > max {
		base = max
	}
	return base/2 + time.Duration(rand.Int64N(int64(base/2)+1))
}

// attemptFailed records why a connection attempt failed, said once until
// a session starts again.
func (c *Client) attemptFailed(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateClosed {
		return
	}
	c.lastErr = err
	if !c.warned {
		c.warned = true
		c.log.Warn(fmt.Sprintf("cannot reach the agent at %s: %v; retrying", c.path, err))
	}
}

func (c *Client) newID() uint64 {
	c.nextID++
	return c.nextID
}

// connectOnce makes one connection and runs its session until it ends.
// fallback: connect again at once, offering an older version. stable: the
// session lasted long enough to start the backoff over.
func (c *Client) connectOnce() (fallback, stable bool) {
	ctx, cancel := context.WithTimeout(context.Background(), c.helloTimeout)
	go func() {
		select {
		case <-c.closeCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.path)
	cancel()
	if err != nil {
		c.attemptFailed(dialError(c.path, err))
		return false, false
	}
	s := &session{conn: conn, out: make(chan []byte, outQueue), dead: make(chan struct{})}
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		conn.Close()
		return false, false
	}
	c.sess = s
	c.state = stateHello
	helloID := c.newID()
	offer := c.offer
	c.mu.Unlock()
	go s.writer()
	defer func() {
		s.kill()
		c.mu.Lock()
		if c.sess == s {
			c.sess = nil
			if c.state != stateClosed {
				c.state = stateIdle
			}
		}
		c.mu.Unlock()
	}()

	frame, err := protocol.Encode(protocol.Message{Type: "hello", ID: helloID, HasID: true,
		Version: offer, Name: c.name, PID: int64(os.Getpid())})
	if err != nil { // our own name broke a rule: cannot happen
		c.attemptFailed(err)
		return false, false
	}
	s.send(frame)
	conn.SetReadDeadline(time.Now().Add(c.helloTimeout))
	br := bufio.NewReader(conn)
	msg, err := readMessage(br)
	if err != nil {
		var pe *protocol.Error
		switch {
		case errors.As(err, &pe):
			c.violation(err)
		case isTimeout(err):
			c.attemptFailed(&Error{Code: CodeTimeout, Message: fmt.Sprintf("the agent at %s did not answer hello within %s", c.path, c.helloTimeout), Err: err})
		default:
			c.attemptFailed(&Error{Code: CodeDisconnected, Message: fmt.Sprintf("the agent at %s closed the connection before answering hello", c.path), Err: err})
		}
		c.resetOffer()
		return false, false
	}
	switch {
	case msg.Type == "error" && msg.HasID && msg.ID == helloID && msg.Code == protocol.CodeVersion && offer > protocol.VersionMin:
		c.log.Info(fmt.Sprintf("the agent at %s does not speak protocol version %d; using version %d "+
			"(its acks cannot be told from those for an earlier run of the agent)", c.path, offer, offer-1))
		c.mu.Lock()
		c.offer = offer - 1
		c.mu.Unlock()
		return true, false
	case msg.Type == "error":
		err := &Error{Code: msg.Code, Message: fmt.Sprintf("the agent at %s refused the connection: %s: %s", c.path, msg.Code, msg.Text)}
		c.attemptFailed(err)
		c.resetOffer()
		return false, false
	case msg.Type != "hello":
		c.violation(fmt.Errorf("a %s message came before the agent's hello", msg.Type))
		c.resetOffer()
		return false, false
	case !msg.HasID || msg.ID != helloID:
		c.violation(errors.New("the agent's hello does not answer ours"))
		c.resetOffer()
		return false, false
	case msg.Version != offer:
		c.violation(fmt.Errorf("the agent answered hello with version %d, not %d", msg.Version, offer))
		c.resetOffer()
		return false, false
	case msg.Version >= 2 && msg.Instance == "":
		c.violation(errors.New("the agent's hello has no instance"))
		c.resetOffer()
		return false, false
	}
	conn.SetReadDeadline(time.Time{})
	start := time.Now()
	if !c.sessionUp(s, msg) {
		return false, false
	}
	err = c.readLoop(s, br)
	c.sessionLost(s, err)
	c.resetOffer()
	return false, time.Since(start) >= SessionStable
}

// resetOffer: after anything but a version fallback the next connection
// offers the newest version again (the agent may have been upgraded).
func (c *Client) resetOffer() {
	c.mu.Lock()
	c.offer = protocol.Version
	c.mu.Unlock()
}

func dialError(path string, err error) error {
	why := err.Error()
	var se syscall.Errno
	if errors.As(err, &se) {
		why = se.Error()
	}
	return &Error{Code: CodeDisconnected, Message: fmt.Sprintf("no agent at %s (%s)", path, why), Err: err}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// readMessage reads and decodes one frame, zeroing its bytes.
func readMessage(r io.Reader) (protocol.Message, error) {
	body, err := protocol.ReadFrame(r)
	if err != nil {
		return protocol.Message{}, err
	}
	msg, err := protocol.Decode(body)
	protocol.Zero(body)
	return msg, err
}

func (c *Client) sessionUp(s *session, hello protocol.Message) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateClosed {
		return false
	}
	c.state = stateReady
	c.info = SessionInfo{Version: int(hello.Version), Instance: hello.Instance, Name: hello.Name, PID: hello.PID}
	c.lastErr = nil
	if c.warned {
		c.log.Info("connected to the agent at " + c.path)
	}
	c.warned = false
	close(c.readyCh)
	// One subscribe per target: one refused does not take the others down.
	for _, sub := range c.subs {
		c.sendSubscribeLocked(sub)
	}
	for _, r := range c.queue {
		c.sendRequestLocked(r)
	}
	c.queue = nil
	return true
}

func (c *Client) sessionLost(s *session, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateClosed {
		return
	}
	var pe *protocol.Error
	if errors.As(err, &pe) {
		c.violationLocked(err)
	} else {
		why := "connection closed"
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, net.ErrClosed) {
			why = err.Error()
		}
		// ECONNRESET is end-of-file here: the agent closed with our
		// messages still unread in its socket (PROTOCOL.md).
		c.log.Warn(fmt.Sprintf("lost the agent at %s (%s); keeping the last values and reconnecting", c.path, why))
	}
	c.warned = true
	c.state = stateIdle
	c.sess = nil
	c.readyCh = make(chan struct{})
	c.subIDs = map[uint64]*Subscription{}
	lost := &Error{Code: CodeDisconnected, Message: fmt.Sprintf("lost the connection to the agent at %s before it answered", c.path)}
	for id, r := range c.reqs {
		if r != nil {
			r.finish(protocol.Message{}, lost)
		}
		delete(c.reqs, id)
	}
}

// violation: the agent broke the protocol. Logged (the same text at most
// once a minute); the connection is dropped and made again with backoff.
func (c *Client) violation(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateClosed {
		return
	}
	c.violationLocked(err)
	if c.state != stateReady {
		c.lastErr = &Error{Code: protocol.CodeProtocol, Message: fmt.Sprintf("bad message from the agent at %s: %v", c.path, err), Err: err}
	}
}

func (c *Client) violationLocked(err error) {
	text := err.Error()
	now := time.Now()
	if text == c.violLast && now.Sub(c.violAt) < violationRepeat {
		c.violMore++
		return
	}
	more := ""
	if c.violMore > 0 {
		more = fmt.Sprintf(" (%d more times since it was last said)", c.violMore)
	}
	c.violLast, c.violAt, c.violMore = text, now, 0
	c.log.Error(fmt.Sprintf("bad message from the agent at %s: %s; reconnecting%s", c.path, text, more))
}

func (c *Client) readLoop(s *session, br *bufio.Reader) error {
	for {
		msg, err := readMessage(br)
		if err != nil {
			return err
		}
		if err := c.handle(s, msg); err != nil {
			return err
		}
	}
}

// handle dispatches one message of a ready session; an error ends it.
func (c *Client) handle(s *session, msg protocol.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != s {
		return net.ErrClosed
	}
	from, known := protocol.Types[msg.Type]
	if !known {
		return nil // a type newer than this client
	}
	if from == protocol.FromClient {
		return &protocol.Error{Reason: fmt.Sprintf("a %s message, which only clients send", msg.Type)}
	}
	switch msg.Type {
	case "hello":
		return &protocol.Error{Reason: "a second hello"}
	case "update":
		return c.onUpdate(msg)
	case "settings":
		c.onSettings(msg)
		return nil
	}
	// ok, status, error: a reply, or an error that answers nothing.
	if msg.HasID {
		if sub, ok := c.subIDs[msg.ID]; ok {
			delete(c.subIDs, msg.ID)
			c.onSubscribeAnswer(sub, msg)
			return nil
		}
		if r, ok := c.reqs[msg.ID]; ok {
			delete(c.reqs, msg.ID)
			if r != nil {
				c.onReply(r, msg)
			}
			return nil
		}
	}
	if msg.Type == "error" {
		c.log.Error(fmt.Sprintf("the agent at %s says: %s: %s", c.path, msg.Code, msg.Text))
	}
	return nil
}

/* ---- subscriptions ---- */

var targetRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Subscription follows one target. Its events (Next) come in the order
// the agent sent them.
type Subscription struct {
	c      *Client
	target string

	// under c.mu
	answered   bool
	answeredCh chan struct{}
	active     bool
	refused    error
	retryDelay time.Duration
	retry      *time.Timer
	hasValue   bool
	conninfo   string
	server     string
	standby    bool
	delivered  uint64
	instance   string
	acked      bool
	last       *Update
	settings   *Settings
	events     []Event
	notify     chan struct{} // a token when events were added
	closed     bool
}

// Subscribe follows target: the agent sends its value (an EventUpdate),
// then every new one. It does not wait for the agent (Subscription.Wait
// does). A target is followed across reconnections; a refused one is asked
// for again. One Subscription per target per Client: a second is ErrBusy.
func (c *Client) Subscribe(target string) (*Subscription, error) {
	if !targetRE.MatchString(target) || len(target) > protocol.NameMax {
		return nil, &Error{Code: protocol.CodeUnknownTarget, Message: fmt.Sprintf("not a target name: %q (letters, digits and _, not starting with a digit)", target)}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateClosed {
		return nil, c.closedError()
	}
	if _, ok := c.subs[target]; ok {
		return nil, &Error{Code: CodeBusy, Message: target + " is followed already on this client", Target: target}
	}
	if len(c.subs) >= protocol.SubscribeMax {
		return nil, &Error{Code: protocol.CodeLimit, Message: fmt.Sprintf("a client may follow at most %d targets", protocol.SubscribeMax), Target: target}
	}
	s := &Subscription{c: c, target: target, answeredCh: make(chan struct{}), notify: make(chan struct{}, 1)}
	c.subs[target] = s
	if c.state == stateReady {
		c.sendSubscribeLocked(s)
	}
	return s, nil
}

func (c *Client) sendSubscribeLocked(s *Subscription) {
	if c.sess == nil {
		return
	}
	id := c.newID()
	frame, err := protocol.Encode(protocol.Message{Type: "subscribe", ID: id, HasID: true, Targets: []string{s.target}})
	if err != nil {
		return
	}
	c.subIDs[id] = s
	c.sess.send(frame)
}

func (c *Client) onSubscribeAnswer(s *Subscription, msg protocol.Message) {
	if s.closed {
		return
	}
	first := !s.answered
	if !s.answered {
		s.answered = true
		close(s.answeredCh)
	}
	if msg.Type != "error" {
		s.active = true
		if s.refused != nil {
			s.refused = nil
			c.log.Info(fmt.Sprintf("%s: the agent at %s accepts the subscription now", s.target, c.path))
			s.push(Event{Kind: EventAccepted})
		}
		s.retryDelay = 0
		if s.retry != nil {
			s.retry.Stop()
			s.retry = nil
		}
		return
	}
	err := &Error{Code: msg.Code, Target: s.target,
		Message: fmt.Sprintf("%s: the agent at %s refused the subscription: %s: %s", s.target, c.path, msg.Code, msg.Text)}
	if first || s.refused == nil || s.refused.(*Error).Code != msg.Code {
		c.log.Warn(err.Message)
	}
	s.refused = err
	s.push(Event{Kind: EventRefused, Err: err})
	// Asked again alone: 1 s doubling to 60 s (and at every new session).
	if s.retryDelay == 0 {
		s.retryDelay = resubscribeFirst
	} else if s.retryDelay *= 2; s.retryDelay > resubscribeMax {
		s.retryDelay = resubscribeMax
	}
	if s.retry != nil {
		s.retry.Stop()
	}
	s.retry = time.AfterFunc(s.retryDelay, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.state == stateReady && !s.closed && s.refused != nil && c.subs[s.target] == s {
			c.sendSubscribeLocked(s)
		}
	})
}

// push adds an event (under c.mu) and wakes a reader.
func (s *Subscription) push(e Event) {
	if s.closed {
		return
	}
	s.events = append(s.events, e)
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

func (s *Subscription) closeLocked() {
	if s.closed {
		return
	}
	s.closed = true
	if s.retry != nil {
		s.retry.Stop()
	}
	if !s.answered {
		s.answered = true
		close(s.answeredCh)
	}
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Target returns the target followed.
func (s *Subscription) Target() string { return s.target }

// Wait waits for the agent's first answer to the subscription: nil when
// it accepted it, the refusal (an *Error: ErrForbidden, ErrUnknownTarget,
// ErrLimit, ...) when it refused it, or ctx's error.
func (s *Subscription) Wait(ctx context.Context) error {
	select {
	case <-s.answeredCh:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if s.closed {
		return s.c.closedError()
	}
	return s.refused
}

// Err returns the refusal in force (nil when accepted or not answered
// yet).
func (s *Subscription) Err() error {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.refused
}

// Last returns the last update received, ok false before any.
func (s *Subscription) Last() (Update, bool) {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if s.last == nil {
		return Update{}, false
	}
	return *s.last, true
}

// Settings returns the pool settings in force, ok false when none were
// sent.
func (s *Subscription) Settings() (Settings, bool) {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if s.settings == nil {
		return Settings{}, false
	}
	return *s.settings, true
}

// Ready returns a channel that receives a token when events are waiting
// (TryNext takes them): for a select loop.
func (s *Subscription) Ready() <-chan struct{} { return s.notify }

// TryNext takes the next event without waiting; ok false when none is
// waiting.
func (s *Subscription) TryNext() (e Event, ok bool) {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if len(s.events) == 0 {
		return Event{}, false
	}
	e = s.events[0]
	s.events[0] = Event{}
	s.events = s.events[1:]
	if len(s.events) > 0 {
		select {
		case s.notify <- struct{}{}:
		default:
		}
	}
	return e, true
}

// Next waits for the next event. It fails with ErrClosed once the
// subscription or the client is closed, or with ctx's error.
func (s *Subscription) Next(ctx context.Context) (Event, error) {
	for {
		if e, ok := s.TryNext(); ok {
			return e, nil
		}
		s.c.mu.Lock()
		closed := s.closed
		s.c.mu.Unlock()
		if closed {
			return Event{}, s.c.closedError()
		}
		select {
		case <-s.notify:
		case <-ctx.Done():
			return Event{}, ctx.Err()
		}
	}
}

// Close stops following the target on this client (the agent still
// counts the subscription until the connection ends). Idempotent.
func (s *Subscription) Close() error {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if s.c.subs[s.target] == s {
		delete(s.c.subs, s.target)
	}
	s.closeLocked()
	return nil
}

func (c *Client) onUpdate(msg protocol.Message) error {
	if c.info.Version >= 2 && msg.Instance == "" {
		return &protocol.Error{Reason: "an update without instance"}
	}
	if c.info.Instance != "" && msg.Instance != "" && msg.Instance != c.info.Instance {
		return &protocol.Error{Reason: "an update numbered by another agent instance"}
	}
	s := c.subs[msg.Target]
	if s == nil || s.closed {
		return nil
	}
	u := Update{Target: msg.Target, Generation: msg.Generation, Instance: msg.Instance,
		Reason: msg.Reason, Server: msg.Server, Standby: msg.Standby, conninfo: msg.Conninfo}
	if u.Reason == "" {
		u.Reason = "rotation"
	}
	if u.Server == "" {
		u.Server = "primary"
	}
	// A reconnect repeats the value on purpose: the app must replace its
	// connections. Only a new one does: the agent sends the current
	// generation again whenever the client subscribes again.
	renew := u.Reason == "reconnect" && !(u.Generation == s.delivered && u.Instance == s.instance)
	if s.hasValue && s.acked && s.conninfo == u.conninfo && s.server == u.Server && s.standby == u.Standby && !renew {
		// The value in use again: the agent restarted with new numbering,
		// or sent it again after a reconnection. Acked quietly, with the
		// new numbering.
		s.delivered, s.instance, s.last = u.Generation, u.Instance, &u
		sent := c.sendAckLocked(s.target, u.Generation, u.Instance)
		s.push(Event{Kind: EventRenumber, Update: u, Sent: sent})
		return nil
	}
	s.hasValue, s.conninfo, s.server, s.standby = true, u.conninfo, u.Server, u.Standby
	s.delivered, s.instance, s.acked, s.last = u.Generation, u.Instance, false, &u
	s.push(Event{Kind: EventUpdate, Update: u})
	return nil
}

func (c *Client) onSettings(msg protocol.Message) {
	s := c.subs[msg.Target]
	if s == nil || s.closed {
		return
	}
	st := Settings{Target: msg.Target}
	n := func(v *uint64) *int {
		if v == nil {
			return nil
		}
		x := int(*v)
		return &x
	}
	ms := func(v *uint64) *time.Duration {
		if v == nil {
			return nil
		}
		d := time.Duration(*v) * time.Millisecond
		return &d
	}
	st.PoolMax, st.PoolMin = n(msg.PoolMax), n(msg.PoolMin)
	st.PoolTimeout, st.PoolIdleTimeout = ms(msg.PoolTimeoutMS), ms(msg.PoolIdleTimeoutMS)
	s.settings = &st
	s.push(Event{Kind: EventSettings, Settings: st})
}

/* ---- acks and nacks ---- */

// Ack tells the agent the app now uses u's generation. Sent only when the
// connected agent is the instance that numbered it and gave this client
// that generation (or a newer one); otherwise nothing is sent: the agent
// restarted since, and if its value is the one acked here the client acks
// it by itself when it comes (EventRenumber). It reports whether an ack
// went out.
func (c *Client) Ack(u Update) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.subs[u.Target]
	if s == nil || u.Generation == 0 || u.Instance != s.instance || u.Generation > s.delivered {
		return false
	}
	if u.Generation == s.delivered {
		s.acked = true
	}
	if !c.agentIsLocked(u.Instance) {
		return false
	}
	return c.sendAckLocked(u.Target, u.Generation, u.Instance)
}

// Nack tells the agent the app cannot switch to u's generation, and why
// (shown in dbswapctl status). The message is cut to 1024 bytes; u's
// connection string and its secrets, if the message quotes them, are
// masked. Sent only to the instance that numbered it; reports whether it
// went out.
func (c *Client) Nack(u Update, message string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.subs[u.Target] == nil || u.Generation == 0 || !c.agentIsLocked(u.Instance) {
		return false
	}
	text := strings.ReplaceAll(Redact(message, u.conninfo), "\x00", "?")
	frame, err := protocol.Encode(protocol.Message{Type: "nack", Target: u.Target, Generation: u.Generation,
		Instance: u.Instance, Text: truncateUTF8(text, protocol.NackMessageMax)})
	if err != nil {
		return false
	}
	return c.sess.send(frame)
}

func (c *Client) agentIsLocked(instance string) bool {
	return c.state == stateReady && c.info.Instance == instance
}

func (c *Client) sendAckLocked(target string, generation uint64, instance string) bool {
	if c.state != stateReady {
		return false
	}
	frame, err := protocol.Encode(protocol.Message{Type: "ack", Target: target, Generation: generation, Instance: instance})
	if err != nil {
		return false
	}
	return c.sess.send(frame)
}

/* ---- requests ---- */

type result struct {
	msg protocol.Message
	err error
}

type request struct {
	msg   protocol.Message
	reply chan result
	start time.Time
}

func (r *request) finish(msg protocol.Message, err error) {
	select {
	case r.reply <- result{msg, err}:
	default:
	}
}

func (c *Client) sendRequestLocked(r *request) {
	m := r.msg
	m.ID, m.HasID = c.newID(), true
	frame, err := protocol.Encode(m)
	if err != nil {
		r.finish(protocol.Message{}, err)
		return
	}
	c.reqs[m.ID] = r
	r.start = time.Now()
	c.sess.send(frame)
}

func (c *Client) onReply(r *request, msg protocol.Message) {
	if msg.Type == "error" {
		// A version-1 agent has no ping: its unknown-type shows it alive.
		if r.msg.Type == "ping" && msg.Code == protocol.CodeUnknownType {
			r.finish(msg, nil)
			return
		}
		r.finish(msg, &Error{Code: msg.Code, Target: r.msg.Target,
			Message: fmt.Sprintf("the agent at %s says: %s: %s", c.path, msg.Code, msg.Text)})
		return
	}
	if r.msg.Type == "status" && msg.Type != "status" {
		r.finish(msg, &Error{Code: protocol.CodeProtocol, Message: fmt.Sprintf("the agent at %s answered status with %s", c.path, msg.Type)})
		return
	}
	r.finish(msg, nil)
}

// request sends msg (when a session is up: it waits for one) and waits
// for the answer. A request sent in a session that is lost before the
// answer fails with ErrDisconnected: it may have been carried out.
func (c *Client) request(ctx context.Context, msg protocol.Message) (protocol.Message, time.Duration, error) {
	r := &request{msg: msg, reply: make(chan result, 1)}
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		return protocol.Message{}, 0, c.closedError()
	}
	if c.state == stateReady {
		c.sendRequestLocked(r)
	} else {
		c.queue = append(c.queue, r)
	}
	c.mu.Unlock()
	select {
	case res := <-r.reply:
		return res.msg, time.Since(r.start), res.err
	case <-ctx.Done():
		c.mu.Lock()
		for i, q := range c.queue {
			if q == r {
				c.queue = append(c.queue[:i], c.queue[i+1:]...)
				break
			}
		}
		for id, q := range c.reqs {
			if q == r {
				c.reqs[id] = nil // its late answer is dropped
			}
		}
		c.mu.Unlock()
		return protocol.Message{}, 0, ctx.Err()
	}
}

// Ping checks that the agent's loop answers; it returns the round trip.
func (c *Client) Ping(ctx context.Context) (time.Duration, error) {
	_, rtt, err := c.request(ctx, protocol.Message{Type: "ping"})
	return rtt, err
}

// Status returns the agent's status (PROTOCOL.md, "status"): the keys
// agent, targets, files, keys and truncated, as decoded. Connection
// strings in it come masked by the agent.
func (c *Client) Status(ctx context.Context) (map[string]any, error) {
	msg, _, err := c.request(ctx, protocol.Message{Type: "status"})
	if err != nil {
		return nil, err
	}
	return msg.Status, nil
}

// Reload asks the agent to re-read its env files (an admin request).
func (c *Client) Reload(ctx context.Context) error {
	_, _, err := c.request(ctx, protocol.Message{Type: "reload"})
	return err
}

// Reconnect asks the agent to publish target's value again ("" for every
// target), so that pools replace every connection (an admin request). For
// a single target it returns the new generation (0 when none was
// published).
func (c *Client) Reconnect(ctx context.Context, target string) (uint64, error) {
	msg, _, err := c.request(ctx, protocol.Message{Type: "reconnect", Target: target})
	return msg.Generation, err
}

// Failover switches target to its secondary now (a drill; an admin
// request) and returns the new generation. force: even where it would
// split the brain (PROTOCOL.md, "failback").
func (c *Client) Failover(ctx context.Context, target string, force bool) (uint64, error) {
	msg, _, err := c.request(ctx, protocol.Message{Type: "failover", Target: target, Force: force})
	return msg.Generation, err
}

// Failback switches target back to its primary now (an admin request).
func (c *Client) Failback(ctx context.Context, target string, force bool) (uint64, error) {
	msg, _, err := c.request(ctx, protocol.Message{Type: "failback", Target: target, Force: force})
	return msg.Generation, err
}

// truncateUTF8 cuts s to at most max bytes on a character boundary, ending
// in "..." when it had to cut.
func truncateUTF8(s string, max int) string {
	if len(s) <= max {
		return s
	}
	end := max - 3
	for end > 0 && !utf8.RuneStart(s[end]) {
		end--
	}
	return s[:end] + "..."
}
