// Package pgxswap is a pgx connection pool that follows a dbswapd target:
// Pool has the methods of *pgxpool.Pool that apps call (Acquire, Query,
// QueryRow, Exec, Begin, SendBatch, CopyFrom, Ping, Close) and swaps to
// each new value the agent publishes by itself.
//
// Each value is served by a *pgxpool.Pool of its own (a generation). A new
// value (reason rotation, failback, manual, reconnect, promoted, demoted)
// is made before the old one is broken: the new generation's pool opens its
// first connections (MinConns, at least one), then new calls go to it, and
// the old pool is closed: its idle connections at once, busy ones as they
// are released, those still busy at the drain deadline (DrainTimeout) shut
// down. When no connection of an older value is left, the generation is
// acked, so that `dbswapctl set --wait` returns only when the old password
// is out of use.
//
// A failover (reason failover or unavailable) breaks before it makes: the
// old server is dead or hung, so the new value is used at once and the old
// connections are shut down (a query on one fails once; none after). While
// the agent reports no server (server "none"), calls fail at once with
// dbswap.ErrUnavailable.
//
// A value that does not connect from here is nacked (the error, masked),
// retried with backoff (100 ms doubling to 30 s) while the old one keeps
// serving, and given up after 5 authentication failures so that the role
// is not locked out. Without an agent (none answers within AgentGrace) the
// pool uses the environment variable named by the target, and says so
// once; an agent that appears later takes over. The pool settings the
// agent pushes (DATABASE_POOL_MAX, _MIN, _TIMEOUT, _IDLE_TIMEOUT) apply
// unless the Config sets them; a change of them rebuilds the pool, make
// before break, with no new generation.
package pgxswap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/puddle/v2"

	"dbswap.dev/dbswap"
	"dbswap.dev/dbswap/protocol"
)

// Defaults, each overridable in Config.
const (
	// DrainTimeout: busy connections of an old value are shut down after
	// this.
	DrainTimeout = 30 * time.Second
	// WarmTimeout bounds the opening of a new value's first connections.
	WarmTimeout = 10 * time.Second
	// ConnectTimeout bounds each connection attempt (its handshake too)
	// when the value has no connect_timeout, as libdbswap's pool does;
	// Configure may set cfg.ConnConfig.ConnectTimeout instead.
	ConnectTimeout = 5 * time.Second
	// ConnectWait: how long a call waits when the current value cannot
	// open a connection (between a rotation's ALTER ROLE and the switch to
	// its new value, between a crash and the failover) for a new value or
	// a retry that works: libdbswap's default acquire timeout.
	ConnectWait = 5 * time.Second
	// AgentGrace: how long to wait for an agent before using the
	// environment's value: long enough for a local agent to answer, short
	// for a developer without one.
	AgentGrace = 200 * time.Millisecond
	// AuthTries: authentication failures before a value is given up.
	AuthTries = 5

	retryFirst = 100 * time.Millisecond
	retryMax   = 30 * time.Second
)

// Config configures a Pool; the zero value follows DATABASE_URL on the
// default socket.
type Config struct {
	// Target is the agent's target to follow; default DATABASE_URL. It is
	// also the environment variable used without an agent.
	Target string
	// Client is a dbswap client to share (one Pool per target per
	// Client); nil: the pool makes its own from ClientConfig and closes it
	// with the pool.
	Client       *dbswap.Client
	ClientConfig dbswap.Config
	// Configure adjusts each generation's pgxpool.Config after it was
	// parsed from the value and the settings applied: hooks
	// (AfterConnect, PrepareConn, AfterRelease, BeforeClose), tracers,
	// health check period, lifetimes. Connection parameters come from the
	// agent's value: leave ConnConfig's host, user and password alone.
	Configure func(*pgxpool.Config) error
	// MaxConns, MinConns, MaxConnIdleTime, AcquireTimeout: when set (not
	// 0) they win over the agent's settings, which win over the value's
	// pool_* parameters and pgxpool's defaults. AcquireTimeout bounds how
	// long Acquire waits for a connection (besides its context).
	MaxConns        int32
	MinConns        int32
	MaxConnIdleTime time.Duration
	AcquireTimeout  time.Duration
	// DrainTimeout, WarmTimeout, ConnectWait, AgentGrace: see the
	// constants of the same names (0: those).
	DrainTimeout time.Duration
	WarmTimeout  time.Duration
	ConnectWait  time.Duration
	AgentGrace   time.Duration
	// Logger gets the pool's log lines (never a secret); default the
	// client's, else slog.Default().
	Logger *slog.Logger
}

// gen is one value's pool.
type gen struct {
	seq         int
	conninfo    string
	fromEnv     bool
	unavailable bool
	pool        *pgxpool.Pool
	key         settingsKey
	opened      atomic.Bool // a connection of it opened once
	drained     chan struct{}

	mu     sync.Mutex
	update dbswap.Update
	socks  map[net.Conn]struct{} // raw sockets, for a shutdown
	// refuse: no new socket to the value's server (it was failed over
	// from, or abandoned), pgx's cancel requests included.
	refuse bool

	// run goroutine only
	acked        bool
	failures     int
	authFailures int
	givenUp      bool
	lastErr      error
	retired      bool
	warmed       bool
}

func (g *gen) getUpdate() dbswap.Update {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.update
}

func (g *gen) setUpdate(u dbswap.Update) {
	g.mu.Lock()
	g.update = u
	g.mu.Unlock()
}

// is reports whether u carries the value g serves.
func (g *gen) is(u dbswap.Update) bool {
	cur := g.getUpdate()
	return !g.unavailable && u.Server != "none" && g.conninfo == u.Conninfo() && cur.Server == u.Server && cur.Standby == u.Standby
}

// shutdown closes every socket of g: queries on them fail now, and the
// connections are destroyed as they are released. A net.Conn's Close is
// safe while another goroutine reads or writes it. refuse: no socket to
// the value's server is opened from now on. On a failover that server is
// dead or hung, and pgx sends a cancel request for each connection closed
// under a query (PgConn.asyncClose), on a socket of its own that waits
// for the server's answer for up to 15 s: on a hung server the old pool's
// Close, and with it the new generation's ack, would wait that long.
func (g *gen) shutdown(refuse bool) {
	g.mu.Lock()
	socks := g.socks
	g.socks = map[net.Conn]struct{}{}
	if refuse {
		g.refuse = true
	}
	g.mu.Unlock()
	for c := range socks {
		c.Close()
	}
}

// trackedConn removes itself from its gen when closed.
type trackedConn struct {
	net.Conn
	g    *gen
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.g.mu.Lock()
		delete(c.g.socks, c.Conn)
		c.g.mu.Unlock()
	})
	return c.Conn.Close()
}

// errRefused: a socket to the server of a value failed over from (or
// abandoned).
var errRefused = errors.New("dbswap: no new connection to a server this pool left")

type settingsKey struct {
	max, min int32
	idle     time.Duration
}

type warmResult struct {
	g   *gen
	err error // nil: at least one connection opened
}

// Pool is a connection pool following a target of the agent. Every
// method is safe for concurrent use.
type Pool struct {
	cfg        Config
	target     string
	client     *dbswap.Client
	ownsClient bool
	sub        *dbswap.Subscription
	log        *slog.Logger

	cur      atomic.Pointer[gen]
	closed   atomic.Bool
	switches atomic.Int64
	acquireT atomic.Int64 // acquire timeout in ns; -1: do not wait

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced when cur or noValue change
	noValue  error         // why calls without a value fail now
	retiring map[*gen]struct{}
	settings *dbswap.Settings
	acked    uint64 // the generation last acked, for Stats
	ackedOK  bool

	closeCh  chan struct{}
	done     chan struct{}
	warmDone chan warmResult
	drainCh  chan *gen
	openedCh chan *gen

	// run goroutine only
	next        *gen
	seq         int
	retry       *time.Timer
	retryC      <-chan time.Time
	graceOver   bool
	warnedNoEnv bool
	envSaid     bool
}

// New makes a pool following target (DATABASE_URL when ""). It does not
// wait for a value or a connection (like pgxpool.New): calls wait for the
// first value, bounded by their context; Ping waits for a connection.
func New(ctx context.Context, target string) (*Pool, error) {
	return NewWithConfig(ctx, Config{Target: target})
}

// NewWithConfig makes a pool from cfg; see New.
func NewWithConfig(_ context.Context, cfg Config) (*Pool, error) {
	p := &Pool{cfg: cfg, target: cfg.Target}
	if p.target == "" {
		p.target = "DATABASE_URL"
	}
	if p.cfg.DrainTimeout <= 0 {
		p.cfg.DrainTimeout = DrainTimeout
	}
	if p.cfg.WarmTimeout <= 0 {
		p.cfg.WarmTimeout = WarmTimeout
	}
	if p.cfg.ConnectWait <= 0 {
		p.cfg.ConnectWait = ConnectWait
	}
	if p.cfg.AgentGrace <= 0 {
		p.cfg.AgentGrace = AgentGrace
	}
	log := cfg.Logger
	if log == nil {
		log = cfg.ClientConfig.Logger
	}
	if log == nil {
		log = slog.Default()
	}
	p.log = log.With("component", "dbswap", "target", p.target)
	p.client = cfg.Client
	if p.client == nil {
		cc := cfg.ClientConfig
		if cc.Logger == nil {
			cc.Logger = log
		}
		p.client = dbswap.NewClient(cc)
		p.ownsClient = true
	}
	sub, err := p.client.Subscribe(p.target)
	if err != nil {
		if p.ownsClient {
			p.client.Close()
		}
		return nil, err
	}
	p.sub = sub
	p.changed = make(chan struct{})
	p.retiring = map[*gen]struct{}{}
	p.closeCh = make(chan struct{})
	p.done = make(chan struct{})
	p.warmDone = make(chan warmResult, 4)
	p.drainCh = make(chan *gen, 4)
	p.openedCh = make(chan *gen, 1)
	p.applyAcquireTimeout()
	go p.run()
	return p, nil
}

// Target returns the target followed.
func (p *Pool) Target() string { return p.target }

// Client returns the dbswap client the pool follows the agent with.
func (p *Pool) Client() *dbswap.Client { return p.client }

/* ---- the calls ---- */

// current returns the generation calls go to, waiting for a first one.
func (p *Pool) current(ctx context.Context) (*gen, error) {
	for {
		if p.closed.Load() {
			return nil, closedError()
		}
		if g := p.cur.Load(); g != nil {
			return g, nil
		}
		p.mu.Lock()
		err, ch := p.noValue, p.changed
		p.mu.Unlock()
		if err != nil {
			return nil, err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("dbswap: %s: no value from the agent yet: %w", p.target, ctx.Err())
		case <-p.closeCh:
		}
	}
}

func closedError() error {
	return &dbswap.Error{Code: dbswap.CodeClosed, Message: "the pool is closed"}
}

func (p *Pool) changedChan() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

// signalLocked wakes what waits for a change of the current value.
func (p *Pool) signalLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *Pool) setNoValue(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.noValue == err {
		return
	}
	p.noValue = err
	p.signalLocked()
}

func (p *Pool) unavailableError(g *gen) error {
	return &dbswap.Error{Code: dbswap.CodeUnavailable, Target: p.target,
		Message: fmt.Sprintf("%s: no database server is available (the agent reports the primary and the secondary down, generation %d); failing at once until one is back",
			p.target, g.getUpdate().Generation)}
}

// Acquire returns a connection of the current value; Release it when
// done. Between a rotation's ALTER ROLE and the switch to its value (or a
// crash and the failover) a new connection of the current value fails to
// open: Acquire then waits, up to ConnectWait, for the new value or a retry
// that works, as libdbswap's acquire does.
func (p *Pool) Acquire(ctx context.Context) (*pgxpool.Conn, error) {
	start := time.Now()
	wait := 20 * time.Millisecond
	for {
		g, err := p.current(ctx)
		if err != nil {
			return nil, err
		}
		if g.unavailable {
			return nil, p.unavailableError(g)
		}
		c, err := p.acquireFrom(ctx, g)
		if err == nil {
			return c, nil
		}
		err = masked(err, g.conninfo)
		if p.closed.Load() {
			return nil, closedError()
		}
		if ctx.Err() != nil {
			return nil, err
		}
		if p.cur.Load() != g {
			continue // switched meanwhile (its pool closed under us): the new one
		}
		var ce *pgconn.ConnectError
		if errors.As(err, &ce) && ctx.Err() == nil && time.Since(start) < p.cfg.ConnectWait {
			select {
			case <-p.changedChan():
			case <-time.After(wait):
			case <-ctx.Done():
				return nil, err
			case <-p.closeCh:
				return nil, closedError()
			}
			if wait *= 2; wait > time.Second {
				wait = time.Second
			}
			continue
		}
		return nil, err
	}
}

// maskedError is a driver's error whose text quoted part of a value (pgconn
// names the host, which may hold anything): Error() is the text masked,
// and errors.As and errors.Is still reach the driver's error under it.
type maskedError struct {
	text string
	err  error
}

func (e *maskedError) Error() string { return e.text }
func (e *maskedError) Unwrap() error { return e.err }

// masked is err, or err behind a maskedError when its text holds a secret
// of conninfo.
func masked(err error, conninfo string) error {
	text := err.Error()
	if clean := dbswap.Redact(text, conninfo); clean != text {
		return &maskedError{text: clean, err: err}
	}
	return err
}

func (p *Pool) acquireFrom(ctx context.Context, g *gen) (*pgxpool.Conn, error) {
	t := time.Duration(p.acquireT.Load())
	if t < 0 {
		// The agent's DATABASE_POOL_TIMEOUT=0: no wait for a connection
		// in use to be released.
		if s := g.pool.Stat(); s.IdleConns() == 0 && s.TotalConns() >= s.MaxConns() {
			return nil, &dbswap.Error{Code: protocol.CodeLimit, Target: p.target,
				Message: fmt.Sprintf("%s: every connection is in use and the pool timeout is 0", p.target)}
		}
	} else if t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	c, err := g.pool.Acquire(ctx)
	if err != nil && errors.Is(err, puddle.ErrClosedPool) && p.cur.Load() == g && !p.closed.Load() {
		// Cannot happen: the current generation's pool is closed only
		// after it stopped being current.
		err = fmt.Errorf("dbswap: %s: the current pool is closed: %w", p.target, err)
	}
	return c, err
}

// AcquireFunc acquires a connection, calls f with it and releases it.
func (p *Pool) AcquireFunc(ctx context.Context, f func(*pgxpool.Conn) error) error {
	c, err := p.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	return f(c)
}

// Exec acquires a connection, runs sql and releases it.
func (p *Pool) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	c, err := p.Acquire(ctx)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	defer c.Release()
	return c.Exec(ctx, sql, args...)
}

// Query acquires a connection and runs sql; closing the rows (or reading
// them to the end) releases it.
func (p *Pool) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	c, err := p.Acquire(ctx)
	if err != nil {
		return errRows{err}, err
	}
	rows, err := c.Query(ctx, sql, args...)
	if err != nil {
		c.Release()
		return errRows{err}, err
	}
	return &poolRows{Rows: rows, c: c}, nil
}

// QueryRow acquires a connection and runs sql; Scan releases it. Errors
// are deferred to Scan, as pgx's.
func (p *Pool) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	c, err := p.Acquire(ctx)
	if err != nil {
		return errRow{err}
	}
	return &poolRow{r: c.QueryRow(ctx, sql, args...), c: c}
}

// SendBatch acquires a connection and sends b; closing the results
// releases it.
func (p *Pool) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	c, err := p.Acquire(ctx)
	if err != nil {
		return errBatch{err}
	}
	return &poolBatch{BatchResults: c.SendBatch(ctx, b), c: c}
}

// Begin acquires a connection and starts a transaction; Commit or
// Rollback releases it.
func (p *Pool) Begin(ctx context.Context) (pgx.Tx, error) {
	return p.BeginTx(ctx, pgx.TxOptions{})
}

// BeginTx is Begin with options.
func (p *Pool) BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error) {
	c, err := p.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	tx, err := c.BeginTx(ctx, opts)
	if err != nil {
		c.Release()
		return nil, err
	}
	return &poolTx{Tx: tx, c: c}, nil
}

// CopyFrom acquires a connection, copies rows into a table and releases
// it.
func (p *Pool) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	c, err := p.Acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Release()
	return c.CopyFrom(ctx, table, columns, src)
}

// Ping acquires a connection and checks that the server answers.
func (p *Pool) Ping(ctx context.Context) error {
	c, err := p.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	return c.Ping(ctx)
}

// Stats describes the pool now.
type Stats struct {
	// Generation is the value calls get (0 for the environment's).
	Generation uint64
	Instance   string
	Reason     string
	Server     string
	// HasValue: there is a current value (false before the first).
	HasValue        bool
	FromEnvironment bool
	Unavailable     bool
	// Acked is the generation the pool last acked (AckedOK false before
	// any).
	Acked   uint64
	AckedOK bool
	// Switches counts swaps to a new value or pool since the pool was
	// made.
	Switches int64
	// Old: pools of older values still draining; OldConns their
	// connections.
	Old      int
	OldConns int32
	// Current is the current value's pgxpool statistics (nil without
	// one, or while no server is available); MinConns its minimum.
	Current  *pgxpool.Stat
	MinConns int32
}

// Stats returns the pool's statistics.
func (p *Pool) Stats() Stats {
	var s Stats
	if g := p.cur.Load(); g != nil {
		g.mu.Lock()
		u, fromEnv := g.update, g.fromEnv
		g.mu.Unlock()
		s.HasValue = true
		s.Generation, s.Instance, s.Reason, s.Server = u.Generation, u.Instance, u.Reason, u.Server
		s.FromEnvironment, s.Unavailable = fromEnv, g.unavailable
		if g.pool != nil {
			s.Current = g.pool.Stat()
			s.MinConns = g.key.min
		}
	}
	s.Switches = p.switches.Load()
	p.mu.Lock()
	s.Acked, s.AckedOK = p.acked, p.ackedOK
	for g := range p.retiring {
		s.Old++
		if g.pool != nil {
			s.OldConns += g.pool.Stat().TotalConns()
		}
	}
	p.mu.Unlock()
	return s
}

// Close closes the pool: calls fail from now on (dbswap.ErrClosed), idle
// connections close, and Close waits for those in use to be released, as
// pgxpool's. The dbswap client closes too if the pool made it.
func (p *Pool) Close() {
	if !p.closed.CompareAndSwap(false, true) {
		<-p.done
		return
	}
	close(p.closeCh)
	<-p.done
	p.sub.Close()
	p.mu.Lock()
	p.signalLocked()
	var wait []*gen
	for g := range p.retiring {
		wait = append(wait, g)
	}
	p.mu.Unlock()
	if p.next != nil && p.next.pool != nil {
		p.next.shutdown(true)
		p.next.pool.Close()
	}
	if g := p.cur.Load(); g != nil && g.pool != nil {
		g.pool.Close()
	}
	for _, g := range wait {
		<-g.drained
	}
	if p.ownsClient {
		p.client.Close()
	}
}

/* ---- the run loop: every change of value happens here ---- */

func (p *Pool) run() {
	defer close(p.done)
	grace := time.NewTimer(p.cfg.AgentGrace)
	defer grace.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	// A shared client may have the value already.
	if u, ok := p.sub.Last(); ok {
		p.onUpdate(u)
	}
	if s, ok := p.sub.Settings(); ok {
		p.onSettings(s)
	}
	for {
		select {
		case <-p.closeCh:
			if p.retry != nil {
				p.retry.Stop()
			}
			return
		case <-p.sub.Ready():
			for e, ok := p.sub.TryNext(); ok; e, ok = p.sub.TryNext() {
				p.onEvent(e)
			}
		case r := <-p.warmDone:
			p.onWarm(r)
		case g := <-p.drainCh:
			p.mu.Lock()
			delete(p.retiring, g)
			p.mu.Unlock()
			p.maybeAck()
		case <-p.openedCh:
			p.maybeAck()
		case <-p.retryC:
			p.retryC = nil
			if p.next != nil {
				p.warm(p.next)
			}
		case <-grace.C:
			p.graceOver = true
			p.considerEnv()
		case <-tick.C:
			p.considerEnv()
		}
	}
}

func (p *Pool) onEvent(e dbswap.Event) {
	switch e.Kind {
	case dbswap.EventUpdate:
		p.onUpdate(e.Update)
	case dbswap.EventRenumber:
		p.onRenumber(e.Update, e.Sent)
	case dbswap.EventSettings:
		p.onSettings(e.Settings)
	case dbswap.EventRefused:
		// Calls without a value fail with the refusal (errors.Is
		// ErrForbidden, ErrUnknownTarget, ...) until the agent accepts.
		if p.cur.Load() == nil {
			p.setNoValue(e.Err)
		}
	case dbswap.EventAccepted:
		p.mu.Lock()
		nv := p.noValue
		p.mu.Unlock()
		if nv != nil {
			p.setNoValue(nil)
		}
	}
}

func (p *Pool) describe(g *gen) string {
	if g.fromEnv {
		return "$" + p.target + " from the environment"
	}
	return fmt.Sprintf("generation %d", g.getUpdate().Generation)
}

func (p *Pool) onUpdate(u dbswap.Update) {
	cur := p.cur.Load()
	same := func(g *gen) bool {
		if g == nil || g.fromEnv {
			return false
		}
		gu := g.getUpdate()
		return gu.Generation == u.Generation && gu.Instance == u.Instance
	}
	if same(cur) || same(p.next) {
		p.maybeAck()
		return
	}
	reconnect := u.Reason == "reconnect"
	if !reconnect && cur != nil && cur.is(u) {
		// The value in use, renumbered (an agent restart) or the agent
		// found after the environment's: keep the connections, ack.
		cur.setUpdate(u)
		if cur.fromEnv {
			cur.mu.Lock()
			cur.fromEnv = false // Stats reads it
			cur.mu.Unlock()
			p.log.Info(p.target + ": the agent is here; it has the same value as the environment")
		}
		cur.acked = false
		if p.next != nil {
			p.abandonNext()
		}
		p.maybeAck()
		return
	}
	urgent := u.Server == "none" || (cur != nil && (cur.unavailable || u.Reason == "failover" || u.Reason == "unavailable"))
	if !reconnect && p.next != nil && p.next.is(u) {
		// The value being tried, renumbered: its retries go on.
		p.next.setUpdate(u)
	} else {
		if p.next != nil {
			p.abandonNext()
		}
		if cur != nil && cur.fromEnv {
			p.log.Info(fmt.Sprintf("%s: the agent is here; switching from the environment's value to generation %d", p.target, u.Generation))
		}
		g, err := p.newGen(u, u.Conninfo(), false)
		if err != nil {
			p.log.Error(fmt.Sprintf("%s: generation %d cannot be used here: %s; staying on the current value", p.target, u.Generation, err))
			p.client.Nack(u, fmt.Sprintf("cannot use generation %d in pid %d: %s", u.Generation, os.Getpid(), err))
			return
		}
		p.next = g
		if !urgent {
			p.warm(g)
		}
	}
	if urgent {
		p.switchTo(p.next, true)
	}
}

func (p *Pool) onRenumber(u dbswap.Update, sent bool) {
	cur := p.cur.Load()
	if cur == nil || cur.fromEnv || !cur.is(u) {
		p.onUpdate(u) // not the value in use: a value as any other
		return
	}
	cur.setUpdate(u)
	cur.acked = true
	if p.next != nil {
		p.abandonNext()
	}
	p.mu.Lock()
	p.acked, p.ackedOK = u.Generation, true
	p.mu.Unlock()
	p.log.Debug(fmt.Sprintf("%s: generation %d is the value in use (acked: %v)", p.target, u.Generation, sent))
}

func (p *Pool) onSettings(s dbswap.Settings) {
	p.mu.Lock()
	p.settings = &s
	p.mu.Unlock()
	p.applyAcquireTimeout()
	cur := p.cur.Load()
	if p.next != nil {
		// A value being opened: again, with the new settings.
		u, conninfo, fromEnv := p.next.getUpdate(), p.next.conninfo, p.next.fromEnv
		p.abandonNext()
		if g, err := p.newGen(u, conninfo, fromEnv); err == nil {
			p.next = g
			p.warm(g)
		}
		return
	}
	if cur == nil || cur.unavailable {
		return
	}
	if parsed, err := pgxpool.ParseConfig(cur.conninfo); err != nil || cur.key == p.settingsKey(parsed) {
		return
	}
	// The pool's size or idle timeout changed: pgxpool cannot change them
	// in place, so the same value gets a pool of its own, made before the
	// old one is broken. No new generation: nothing to ack.
	g, err := p.newGen(cur.getUpdate(), cur.conninfo, cur.fromEnv)
	if err != nil {
		return
	}
	g.acked = cur.acked
	p.log.Info(fmt.Sprintf("%s: pool settings changed (%s): a new pool for the same value", p.target, s))
	p.next = g
	p.warm(g)
}

// applyAcquireTimeout: the Config's, else the agent's (0: no wait), else
// none.
func (p *Pool) applyAcquireTimeout() {
	t := p.cfg.AcquireTimeout
	if t == 0 {
		p.mu.Lock()
		if p.settings != nil && p.settings.PoolTimeout != nil {
			t = *p.settings.PoolTimeout
			if t == 0 {
				t = -1
			}
		}
		p.mu.Unlock()
	}
	p.acquireT.Store(int64(t))
}

// settingsKey is what the settings make of a parsed config.
func (p *Pool) settingsKey(c *pgxpool.Config) settingsKey {
	p.mu.Lock()
	s := p.settings
	p.mu.Unlock()
	k := settingsKey{max: c.MaxConns, min: c.MinConns, idle: c.MaxConnIdleTime}
	if s != nil {
		if s.PoolMax != nil {
			k.max = int32(*s.PoolMax)
		}
		if s.PoolMin != nil {
			k.min = int32(*s.PoolMin)
		}
		if s.PoolIdleTimeout != nil {
			k.idle = *s.PoolIdleTimeout
			if k.idle == 0 {
				// Idle connections beyond the minimum closed at once
				// (at the next health check).
				k.idle = time.Nanosecond
			}
		}
	}
	if p.cfg.MaxConns > 0 {
		k.max = p.cfg.MaxConns
	}
	if p.cfg.MinConns > 0 {
		k.min = p.cfg.MinConns
	}
	if p.cfg.MaxConnIdleTime > 0 {
		k.idle = p.cfg.MaxConnIdleTime
	}
	if k.min > k.max {
		k.min = k.max
	}
	return k
}

// newGen makes the pool of a value (none for server "none"). It opens no
// connection unless MinConns asks pgxpool to.
func (p *Pool) newGen(u dbswap.Update, conninfo string, fromEnv bool) (*gen, error) {
	p.seq++
	g := &gen{seq: p.seq, update: u, conninfo: conninfo, fromEnv: fromEnv, drained: make(chan struct{}),
		socks: map[net.Conn]struct{}{}}
	if u.Server == "none" {
		g.unavailable = true
		return g, nil
	}
	cfg, err := pgxpool.ParseConfig(conninfo)
	if err != nil {
		// pgx masks the password in its parse errors; the rest of the
		// string may hold one all the same.
		return nil, &dbswap.Error{Code: dbswap.CodeConninfo, Target: p.target,
			Message: fmt.Sprintf("%s: the connection string cannot be parsed by pgx: %s", p.target, dbswap.Redact(err.Error(), conninfo))}
	}
	g.key = p.settingsKey(cfg)
	cfg.MaxConns, cfg.MinConns, cfg.MaxConnIdleTime = g.key.max, g.key.min, g.key.idle
	if cfg.ConnConfig.ConnectTimeout == 0 {
		// pgx has no bound by default, and pgxpool's background connects
		// (MinConns) have no deadline: a hung server would hold them.
		cfg.ConnConfig.ConnectTimeout = ConnectTimeout
	}
	// Every socket of the value, for a shutdown at the drain deadline or
	// a failover.
	dial := cfg.ConnConfig.DialFunc
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		g.mu.Lock()
		refuse := g.refuse
		g.mu.Unlock()
		if refuse {
			return nil, errRefused
		}
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		g.mu.Lock()
		if g.refuse { // shut down while it was dialled
			g.mu.Unlock()
			c.Close()
			return nil, errRefused
		}
		g.socks[c] = struct{}{}
		g.mu.Unlock()
		return &trackedConn{Conn: c, g: g}, nil
	}
	if p.cfg.Configure != nil {
		if err := p.cfg.Configure(cfg); err != nil {
			return nil, err
		}
	}
	// Told once a connection of the value opened: its generation may be
	// acked (a failover's value is current before any).
	after := cfg.AfterConnect
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		if after != nil {
			if err := after(ctx, c); err != nil {
				return err
			}
		}
		if !g.opened.Swap(true) {
			select {
			case p.openedCh <- g:
			default:
			}
		}
		return nil
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, err
	}
	g.pool = pool
	return g, nil
}

// warm opens g's first connections (MinConns, at least one) in the
// background; the result comes to the run loop.
func (p *Pool) warm(g *gen) {
	n := int(g.key.min)
	if n < 1 {
		n = 1
	}
	timeout := p.cfg.WarmTimeout
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		conns := make(chan *pgxpool.Conn, n)
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			go func() {
				c, err := g.pool.Acquire(ctx)
				if err != nil {
					errs <- err
					return
				}
				conns <- c
			}()
		}
		var first error
		var held []*pgxpool.Conn
		for i := 0; i < n; i++ {
			select {
			case c := <-conns:
				held = append(held, c)
			case err := <-errs:
				if first == nil {
					first = err
				}
			}
		}
		for _, c := range held {
			c.Release()
		}
		r := warmResult{g: g}
		if len(held) == 0 {
			r.err = first
		}
		select {
		case p.warmDone <- r:
		case <-p.closeCh:
		}
	}()
}

func (p *Pool) onWarm(r warmResult) {
	g := r.g
	if g.retired {
		return
	}
	if r.err == nil {
		g.warmed = true
		if g == p.next {
			p.switchTo(g, false)
		} else {
			p.maybeAck()
		}
		return
	}
	if g == p.cur.Load() {
		// A value switched to at once (a failover) that does not connect:
		// nacked; calls keep trying it.
		line := p.errorLine(g, r.err)
		p.log.Warn(fmt.Sprintf("%s: cannot open a connection with %s: %s", p.target, p.describe(g), line))
		p.nack(g, line)
		return
	}
	if g != p.next {
		return
	}
	g.failures++
	g.lastErr = r.err
	line := p.errorLine(g, r.err)
	if isAuthError(r.err) {
		g.authFailures++
	}
	if g.authFailures >= AuthTries {
		g.givenUp = true
		p.log.Error(fmt.Sprintf("%s: %s refused %d times (%s); not trying it again, so as not to lock the role out; staying on the current value",
			p.target, p.describe(g), g.authFailures, line))
	} else {
		delay := backoffDelay(g.failures-1, retryFirst, retryMax)
		p.log.Warn(fmt.Sprintf("%s: %s does not connect from here: %s; staying on the current value, retry in %s",
			p.target, p.describe(g), line, delay.Round(time.Millisecond)))
		if p.retry != nil {
			p.retry.Stop()
		}
		p.retry = time.NewTimer(delay)
		p.retryC = p.retry.C
	}
	p.nack(g, line)
	if p.cur.Load() == nil {
		state := "retrying"
		if g.givenUp {
			state = "given up"
		}
		p.setNoValue(&dbswap.Error{Code: dbswap.CodeNoValue, Target: p.target, Err: r.err,
			Message: fmt.Sprintf("%s: %s does not connect from here (%s): %s", p.target, p.describe(g), state, line)})
	}
}

// errorLine is one line for an error about g's value, with no secret of
// it.
func (p *Pool) errorLine(g *gen, err error) string {
	return dbswap.Redact(err.Error(), g.conninfo)
}

func (p *Pool) nack(g *gen, line string) {
	if g.fromEnv {
		return
	}
	u := g.getUpdate()
	p.client.Nack(u, fmt.Sprintf("cannot connect with generation %d from pid %d: %s", u.Generation, os.Getpid(), line))
}

func isAuthError(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "28P01" || pe.Code == "28000")
}

func backoffDelay(attempt int, first, max time.Duration) time.Duration {
	d := first
	for i := 0; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d
}

func (p *Pool) abandonNext() {
	g := p.next
	p.next = nil
	if p.retry != nil {
		p.retry.Stop()
		p.retryC = nil
	}
	p.retire(g, true)
}

// switchTo makes g the current value. now: the old one's connections are
// shut down now (a failover); else it drains.
func (p *Pool) switchTo(g *gen, now bool) {
	old := p.cur.Load()
	if p.next == g {
		p.next = nil
		if p.retry != nil {
			p.retry.Stop()
			p.retryC = nil
		}
	}
	p.mu.Lock()
	p.cur.Store(g)
	p.noValue = nil
	p.signalLocked()
	var older []*gen
	for r := range p.retiring {
		older = append(older, r)
	}
	p.mu.Unlock()
	if old != nil {
		p.switches.Add(1)
		busy := int32(0)
		if old.pool != nil {
			busy = old.pool.Stat().AcquiredConns()
		}
		u := g.getUpdate()
		switch {
		case g.unavailable:
			p.log.Error(p.target + ": no database server is available (the agent reports the primary and the secondary down); calls fail at once until one is back")
		case old.unavailable:
			p.log.Info(fmt.Sprintf("%s: a database server is back: the %s (%s, %s)", p.target, u.Server, p.describe(g), u.Reason))
		case now:
			p.log.Warn(fmt.Sprintf("%s: %s to the %s (%s): %d busy connection(s) on the old server shut down", p.target, u.Reason, u.Server, p.describe(g), busy))
		default:
			p.log.Info(fmt.Sprintf("%s: switched to %s; %d busy connection(s) on the old value close when released", p.target, p.describe(g), busy))
		}
		p.retire(old, now)
	}
	if now {
		// A failover: the older values still draining were on the dead
		// server too.
		for _, r := range older {
			r.shutdown(true)
		}
	}
	if !g.unavailable && !g.warmed {
		p.warm(g) // switched to at once: its connections open now
	}
	p.maybeAck()
}

// retire closes g's pool in the background: idle connections now, busy
// ones when released, all of them shut down at the drain deadline (or at
// once with now).
func (p *Pool) retire(g *gen, now bool) {
	g.retired = true
	if now {
		g.shutdown(true)
	}
	p.mu.Lock()
	p.retiring[g] = struct{}{}
	p.mu.Unlock()
	drain := p.cfg.DrainTimeout
	go func() {
		if g.pool != nil {
			closed := make(chan struct{})
			go func() {
				g.pool.Close() // waits for the connections in use
				close(closed)
			}()
			select {
			case <-closed:
			case <-time.After(drain):
				busy := g.pool.Stat().AcquiredConns()
				p.log.Warn(fmt.Sprintf("%s: %d connection(s) of %s still in use after %s: shut down", p.target, busy, p.describe(g), drain))
				// The server is up: pgx's cancel requests may stop
				// the queries still running on it.
				g.shutdown(false)
				// A connection the app never gives back holds no
				// rotation up: its socket is closed, so no session of
				// the old value is left on the server.
				select {
				case <-closed:
				case <-time.After(time.Second):
				}
			}
		}
		close(g.drained)
		select {
		case p.drainCh <- g:
		case <-p.closeCh:
		}
	}()
}

// maybeAck acks the current generation once no connection of an older
// value is left and one of its own opened (a value that does not connect
// here is nacked instead).
func (p *Pool) maybeAck() {
	g := p.cur.Load()
	if g == nil || g.fromEnv || g.acked || p.closed.Load() {
		return
	}
	p.mu.Lock()
	old := len(p.retiring)
	p.mu.Unlock()
	if old > 0 || (!g.opened.Load() && !g.unavailable) {
		return
	}
	g.acked = true
	u := g.getUpdate()
	sent := p.client.Ack(u)
	p.mu.Lock()
	p.acked, p.ackedOK = u.Generation, true
	p.mu.Unlock()
	p.log.Debug(fmt.Sprintf("%s: generation %d in use, no older connection left (ack sent: %v)", p.target, u.Generation, sent))
}

// considerEnv: no agent, once it is clear none is there: the
// environment's value.
func (p *Pool) considerEnv() {
	if !p.graceOver || p.cur.Load() != nil || p.next != nil || p.closed.Load() {
		return
	}
	if p.client.Connected() {
		// An agent after all: a "no agent" error is out of date.
		p.mu.Lock()
		nv := p.noValue
		p.mu.Unlock()
		var de *dbswap.Error
		if errors.As(nv, &de) && de.Code == dbswap.CodeNoValue {
			p.setNoValue(nil)
		}
		return
	}
	last := p.client.LastError()
	if last == nil {
		return
	}
	value := os.Getenv(p.target)
	if value == "" {
		p.setNoValue(&dbswap.Error{Code: dbswap.CodeNoValue, Target: p.target, Err: last,
			Message: fmt.Sprintf("no value for %s: %v, and $%s is not set", p.target, last, p.target)})
		if !p.warnedNoEnv {
			p.warnedNoEnv = true
			p.log.Warn(fmt.Sprintf("no value for %s: %v, and $%s is not set; waiting for the agent", p.target, last, p.target))
		}
		return
	}
	if !p.envSaid {
		p.envSaid = true
		p.log.Info(fmt.Sprintf("%v; using $%s from the environment", last, p.target))
	}
	g, err := p.newGen(dbswap.Update{Target: p.target, Reason: "environment", Server: "primary"}, value, true)
	if err != nil {
		p.setNoValue(err)
		return
	}
	p.next = g
	p.warm(g)
}
