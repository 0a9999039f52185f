// Command pgxload drives the pgxswap pool for the integration tests
// (tests/integration/test_go.py), which read its JSON lines as they read
// tests/helpers/pool-load.c's.
//
//	pgxload load --socket PATH --target NAME --loops N [--tx] [--pause-ms MS]
//	             [--progress-ms MS] [--max N] [--min N] [--query-timeout-ms MS]
//
// A pool and N goroutines that loop: SELECT 1 through QueryRow or, with
// --tx, every other iteration Begin, SELECT pg_backend_pid(), Commit. Each
// iteration runs under a context of --query-timeout-ms (default 10000): a
// query on a hung server fails then rather than blocking its loop for
// good. A failed call is a failure (the first 20 go to stderr). Every
// --progress-ms (default 200) a progress line:
//
//	{"t": 1.2, "queries": n, "failures": n, "generation": g, "acked": g,
//	 "switches": n, "old": n, "from_environment": false,
//	 "queries_by_loop": [n, ...], "failures_by_loop": [n, ...],
//	 "max_conns": n, "min_conns": n, "total_conns": n}
//
// After SIGTERM or SIGINT the loops finish their iteration (1 s at most:
// those still in one then are "stuck", and the pool is not closed, since
// Close would wait for them), SELECT current_user and the server's port
// run, and a last line (no "t") follows:
//
//	{"queries": n, "failures": n, "generation": g, "stuck": n,
//	 "queries_by_loop": [n, ...], "failures_by_loop": [n, ...],
//	 "stats": {"generation": g, "acked": g, "old": n, "switches": n,
//	 "total_conns": n}, "current_user_at_end": "app", "port_at_end": 5432}
//
// Exit status 0 when nothing failed and no loop was stuck, 1 otherwise, 2
// for bad usage.
//
//	pgxload hold --socket PATH --target NAME [--progress-ms MS]
//
// Holds one connection across whatever the test does (a rotation): it
// acquires it and says {"held_pid": pid, "generation": g}; then every
// --progress-ms (default 100) a progress line, with the backend pid a
// query through the pool (not the held connection) got:
//
//	{"t": 1.2, "generation": g, "acked": g, "acked_ok": true, "old": n,
//	 "switches": n, "pool_pid": pid}   ("pool_error" instead if it failed)
//
// SIGUSR1: SELECT pg_backend_pid() on the held connection, then its
// release: {"held_query_pid": pid} (or "held_query_error"), then
// {"released": true}. SIGTERM or SIGINT: a connection still held is
// released, the pool closed, and a last line {"queries": n, "failures":
// n, "stats": {...}} (no "t") follows.
// Exit status 0 when nothing failed.
//
//	pgxload probe --socket PATH --target NAME [--other NAME]
//
// One JSON line: what Acquire and Exec on a pool of NAME, and a plain
// subscription's Wait, gave (each {"ok": true} or {"code", "message",
// "is_forbidden", "is_unknown_target", "ms"}), and with --other the
// current_user through a pool of that target.
//
//	pgxload bench --socket PATH --target NAME ... < conninfo
//
// The benchmark of tests/bench/go.py: read bench.go's header.
//
//	pgxload connfail --socket PATH --target NAME
//
// A pool of at most 4 connections; one acquired (SELECT current_user on
// it), then every idle one, all held, so that the next Acquire must dial;
// then a line {"ready": true, "user": "...", "held": n}. On
// SIGUSR1 (the test has made new connections fail meanwhile) a second
// Acquire, and one line: {"acquire": {"code", "message", ...} as probe's,
// "verbose": the error with %+v, "connect_error": whether errors.As
// reaches a *pgconn.ConnectError}.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"dbswap.dev/dbswap"
	"dbswap.dev/dbswap/pgxswap"
	"github.com/jackc/pgx/v5/pgconn"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: pgxload load|probe|hold|bench|connfail --socket PATH --target NAME ...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "load":
		os.Exit(load(os.Args[2:]))
	case "probe":
		os.Exit(probe(os.Args[2:]))
	case "hold":
		os.Exit(hold(os.Args[2:]))
	case "bench":
		os.Exit(bench(os.Args[2:]))
	case "connfail":
		os.Exit(connfail(os.Args[2:]))
	}
	fmt.Fprintf(os.Stderr, "pgxload: unknown command %q\n", os.Args[1])
	os.Exit(2)
}

// stopGrace: how long the loops get to finish their iteration after the
// stop (load.js's STOP_GRACE_MS).
const stopGrace = time.Second

var out = json.NewEncoder(os.Stdout)
var outMu sync.Mutex

func emit(v any) {
	outMu.Lock()
	defer outMu.Unlock()
	out.Encode(v)
}

func logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func load(args []string) int {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	socket := fs.String("socket", "", "agent socket")
	target := fs.String("target", "DATABASE_URL", "target")
	loops := fs.Int("loops", 8, "query loops")
	tx := fs.Bool("tx", false, "every other iteration a transaction")
	pause := fs.Int("pause-ms", 1, "pause between iterations")
	progress := fs.Int("progress-ms", 200, "progress line interval")
	max := fs.Int("max", 0, "MaxConns (0: agent's or default)")
	min := fs.Int("min", 0, "MinConns")
	name := fs.String("name", "pgxload", "client name")
	queryTimeout := fs.Int("query-timeout-ms", 10000, "bound of one iteration")
	if fs.Parse(args) != nil {
		return 2
	}
	pool, err := pgxswap.NewWithConfig(context.Background(), pgxswap.Config{Target: *target,
		ClientConfig: dbswap.Config{Socket: *socket, Name: *name}, MaxConns: int32(*max), MinConns: int32(*min),
		Logger: logger()})
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgxload: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err = pool.Ping(ctx)
	cancel()
	if err != nil {
		pool.Close()
		fmt.Fprintf(os.Stderr, "pgxload: no first connection: %v\n", err)
		return 1
	}

	var queries, failures atomic.Int64
	byLoop := make([]atomic.Int64, *loops)
	failedByLoop := make([]atomic.Int64, *loops)
	counts := func(a []atomic.Int64) []int64 {
		out := make([]int64, len(a))
		for i := range a {
			out[i] = a[i].Load()
		}
		return out
	}
	var stop atomic.Bool
	var running atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < *loops; i++ {
		wg.Add(1)
		running.Add(1)
		go func(n int) {
			defer wg.Done()
			defer running.Add(-1)
			for iter := 0; !stop.Load(); iter++ {
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(*queryTimeout)*time.Millisecond)
				err := once(ctx, pool, *tx && iter%2 == 1)
				cancel()
				if err != nil {
					failedByLoop[n].Add(1)
					if f := failures.Add(1); f <= 20 {
						fmt.Fprintf(os.Stderr, "pgxload: loop %d: %.3f s: %v\n", n, time.Since(start).Seconds(), err)
					}
				} else {
					byLoop[n].Add(1)
					queries.Add(1)
				}
				if *pause > 0 {
					time.Sleep(time.Duration(*pause) * time.Millisecond)
				}
			}
		}(i)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	tick := time.NewTicker(time.Duration(*progress) * time.Millisecond)
	defer tick.Stop()
	for running := true; running; {
		select {
		case <-sig:
			running = false
		case <-tick.C:
			st := pool.Stats()
			line := map[string]any{"t": time.Since(start).Seconds(), "queries": queries.Load(), "failures": failures.Load(),
				"generation": st.Generation, "acked": st.Acked, "switches": st.Switches, "old": st.Old,
				"from_environment": st.FromEnvironment, "queries_by_loop": counts(byLoop),
				"failures_by_loop": counts(failedByLoop)}
			if st.Current != nil {
				line["max_conns"], line["min_conns"] = st.Current.MaxConns(), st.MinConns
				line["total_conns"] = st.Current.TotalConns()
			}
			emit(line)
		}
	}
	stop.Store(true)
	// The loops finish their iteration; one still in it after a second
	// (on a hung server) is stuck.
	finished := make(chan struct{})
	go func() {
		wg.Wait()
		close(finished)
	}()
	stuck := 0
	select {
	case <-finished:
	case <-time.After(stopGrace):
		stuck = int(running.Load())
	}
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var user, port any
	var u string
	var pt int32
	if err := pool.QueryRow(ctx, "SELECT current_user, current_setting('port')::int").Scan(&u, &pt); err == nil {
		user, port = u, pt
	} else {
		fmt.Fprintf(os.Stderr, "pgxload: the last query: %v\n", err)
	}
	st := pool.Stats()
	total := int32(0)
	if st.Current != nil {
		total = st.Current.TotalConns()
	}
	emit(map[string]any{"queries": queries.Load(), "failures": failures.Load(), "generation": st.Generation,
		"stuck": stuck, "queries_by_loop": counts(byLoop), "failures_by_loop": counts(failedByLoop),
		"stats": map[string]any{"generation": st.Generation, "acked": st.Acked, "old": st.Old, "switches": st.Switches,
			"total_conns": total}, "current_user_at_end": user, "port_at_end": port})
	if stuck == 0 {
		// Close waits for the connections in use: not with a loop stuck
		// on one.
		pool.Close()
	}
	if failures.Load() > 0 || user == nil || stuck > 0 {
		return 1
	}
	return 0
}

func once(ctx context.Context, pool *pgxswap.Pool, tx bool) error {
	if !tx {
		var one int
		if err := pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
			return err
		}
		if one != 1 {
			return fmt.Errorf("SELECT 1 gave %d", one)
		}
		return nil
	}
	t, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	var pid int32
	if err := t.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Rollback(ctx)
		return err
	}
	return t.Commit(ctx)
}

func describe(err error, t0 time.Time) map[string]any {
	ms := time.Since(t0).Milliseconds()
	if err == nil {
		return map[string]any{"ok": true, "ms": ms}
	}
	code := ""
	var de *dbswap.Error
	if errors.As(err, &de) {
		code = de.Code
	}
	return map[string]any{"code": code, "message": err.Error(), "ms": ms,
		"is_forbidden": errors.Is(err, dbswap.ErrForbidden), "is_unknown_target": errors.Is(err, dbswap.ErrUnknownTarget)}
}

func probe(args []string) int {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	socket := fs.String("socket", "", "agent socket")
	target := fs.String("target", "DATABASE_URL", "target")
	other := fs.String("other", "", "a target that works")
	if fs.Parse(args) != nil {
		return 2
	}
	res := map[string]any{"uid": os.Getuid()}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgxswap.NewWithConfig(ctx, pgxswap.Config{Target: *target,
		ClientConfig: dbswap.Config{Socket: *socket, Name: "pgxload-probe"}, Logger: logger()})
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgxload: %v\n", err)
		return 1
	}
	t0 := time.Now()
	c, err := pool.Acquire(ctx)
	if err == nil {
		c.Release()
	}
	res["acquire"] = describe(err, t0)
	t0 = time.Now()
	_, err = pool.Exec(ctx, "SELECT 1")
	res["exec"] = describe(err, t0)
	pool.Close()

	client := dbswap.NewClient(dbswap.Config{Socket: *socket, Name: "pgxload-probe-client", Logger: logger()})
	sub, err := client.Subscribe(*target)
	t0 = time.Now()
	if err == nil {
		err = sub.Wait(ctx)
	}
	res["subscribe"] = describe(err, t0)
	client.Close()

	if *other != "" {
		p, err := pgxswap.NewWithConfig(ctx, pgxswap.Config{Target: *other,
			ClientConfig: dbswap.Config{Socket: *socket, Name: "pgxload-probe-other"}, Logger: logger()})
		if err == nil {
			var u string
			t0 = time.Now()
			err = p.QueryRow(ctx, "SELECT current_user").Scan(&u)
			if err == nil {
				res["other"] = map[string]any{"ok": true, "value": u}
			} else {
				res["other"] = describe(err, t0)
			}
			p.Close()
		}
	}
	emit(res)
	return 0
}

func hold(args []string) int {
	fs := flag.NewFlagSet("hold", flag.ContinueOnError)
	socket := fs.String("socket", "", "agent socket")
	target := fs.String("target", "DATABASE_URL", "target")
	progress := fs.Int("progress-ms", 100, "progress line interval")
	name := fs.String("name", "pgxload-hold", "client name")
	if fs.Parse(args) != nil {
		return 2
	}
	// Signals first: one that comes before the pool is up is not lost.
	release := make(chan os.Signal, 1)
	signal.Notify(release, syscall.SIGUSR1)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	pool, err := pgxswap.NewWithConfig(context.Background(), pgxswap.Config{Target: *target,
		ClientConfig: dbswap.Config{Socket: *socket, Name: *name}, Logger: logger()})
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgxload: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	held, err := pool.Acquire(ctx)
	var pid int32
	if err == nil {
		err = held.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid)
		if err != nil {
			held.Release()
		}
	}
	cancel()
	if err != nil {
		pool.Close()
		fmt.Fprintf(os.Stderr, "pgxload: no connection to hold: %v\n", err)
		return 1
	}
	emit(map[string]any{"held_pid": pid, "generation": pool.Stats().Generation})

	var queries, failures int64
	start := time.Now()
	tick := time.NewTicker(time.Duration(*progress) * time.Millisecond)
	defer tick.Stop()
	for running := true; running; {
		select {
		case <-sig:
			running = false
		case <-release:
			if held == nil {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			var p int32
			if err := held.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&p); err != nil {
				failures++
				emit(map[string]any{"held_query_error": err.Error()})
			} else {
				queries++
				emit(map[string]any{"held_query_pid": p})
			}
			cancel()
			held.Release()
			held = nil
			emit(map[string]any{"released": true})
		case <-tick.C:
			st := pool.Stats()
			line := map[string]any{"t": time.Since(start).Seconds(), "generation": st.Generation, "acked": st.Acked,
				"acked_ok": st.AckedOK, "old": st.Old, "switches": st.Switches}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			var p int32
			if err := pool.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&p); err != nil {
				failures++
				line["pool_error"] = err.Error()
			} else {
				queries++
				line["pool_pid"] = p
			}
			cancel()
			emit(line)
		}
	}
	if held != nil {
		held.Release()
	}
	st := pool.Stats()
	pool.Close()
	emit(map[string]any{"queries": queries, "failures": failures, "generation": st.Generation,
		"stats": map[string]any{"generation": st.Generation, "acked": st.Acked, "old": st.Old, "switches": st.Switches}})
	if failures > 0 {
		return 1
	}
	return 0
}

func connfail(args []string) int {
	fs := flag.NewFlagSet("connfail", flag.ContinueOnError)
	socket := fs.String("socket", "", "agent socket")
	target := fs.String("target", "DATABASE_URL", "target")
	if fs.Parse(args) != nil {
		return 2
	}
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgxswap.NewWithConfig(ctx, pgxswap.Config{Target: *target,
		ClientConfig: dbswap.Config{Socket: *socket, Name: "pgxload-connfail"}, MaxConns: 4, MinConns: 1,
		Logger: logger()})
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgxload: %v\n", err)
		return 1
	}
	defer pool.Close()
	held, err := pool.Acquire(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgxload: no first connection: %v\n", err)
		return 1
	}
	defer held.Release()
	var u string
	if err := held.QueryRow(ctx, "SELECT current_user").Scan(&u); err != nil {
		fmt.Fprintf(os.Stderr, "pgxload: the first query: %v\n", err)
		return 1
	}
	n := 1
	for st := pool.Stats(); st.Current != nil; st = pool.Stats() {
		if st.Current.ConstructingConns() > 0 { // the pool's own, for MinConns
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if st.Current.IdleConns() == 0 {
			break
		}
		c, err := pool.Acquire(ctx)
		if err != nil {
			fmt.Fprintf(os.Stderr, "pgxload: an idle connection: %v\n", err)
			return 1
		}
		defer c.Release()
		n++
	}
	if st := pool.Stats(); st.Current == nil || st.Current.TotalConns() >= st.Current.MaxConns() {
		fmt.Fprintf(os.Stderr, "pgxload: %d connections held, none left to dial\n", n)
		return 1
	}
	emit(map[string]any{"ready": true, "user": u, "held": n})
	<-usr1
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel2()
	t0 := time.Now()
	c, err := pool.Acquire(ctx2)
	if err == nil {
		c.Release()
	}
	var ce *pgconn.ConnectError
	res := map[string]any{"acquire": describe(err, t0), "connect_error": errors.As(err, &ce)}
	if err != nil {
		res["verbose"] = fmt.Sprintf("%+v", err)
	}
	emit(res)
	return 0
}
