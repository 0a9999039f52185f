// pgxload bench: SELECT 1 through a plain pgxpool.Pool and through a
// pgxswap.Pool in one process, taking turns, for tests/bench/go.py.
//
//	pgxload bench --socket PATH --target NAME [--max M] [--loops 1,8]
//	              [--rounds R] [--seconds S] [--warmup S] < conninfo
//
// stdin's first line is the role's connection string (a secret: never in
// argv, never printed). Three pools, each MaxConns = MinConns = M (default
// 8) with M connections opened before anything is measured: "pgx", a
// pgxpool.Pool on the connection string; "dbswap", a pgxswap.Pool
// following the agent's target; "pgx_b", a second pgxpool.Pool, the A/A
// comparison (how far two identical pools differ here).
//
// For each number of loops N in --loops: each pool runs unmeasured for
// --warmup seconds, then --rounds rounds in which each pool in turn (the
// order rotated every round) runs N goroutines of
// QueryRow(ctx, "SELECT 1").Scan for --seconds. Only one pool runs at a
// time, so the process's CPU time during a run is that pool's. One JSON
// line per N:
//
//	{"loops": N, "rounds": [{"order": ["pgx", ...], "pgx": RUN,
//	  "dbswap": RUN, "pgx_b": RUN}, ...]}
//
// RUN: {"seconds": wall, "cpu_seconds": process CPU time, "ops": n,
// "failures": n, "latency_us": {"p50", "p99", "max"}}. The first line is
// {"ready": true, "go": version, "pgx": version, "max": M}; the last
// {"end": true, "stats": {"generation", "acked", "switches", "old"}}.
// Exit status 0 when no query failed, 1 otherwise, 2 for bad usage.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"dbswap.dev/dbswap"
	"dbswap.dev/dbswap/pgxswap"
)

// rowQuerier is what both pools offer for a one-row query.
type rowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Latency histogram: buckets 1 % wide, one per goroutine, nothing
// allocated per sample.
const histBuckets = 2048

var logStep = math.Log(1.01)

type histogram struct {
	counts [histBuckets]uint32
	n      uint64
	max    float64
}

func (h *histogram) add(us float64) {
	if us < 1 {
		us = 1
	}
	b := int(math.Ceil(math.Log(us) / logStep))
	if b >= histBuckets {
		b = histBuckets - 1
	}
	h.counts[b]++
	h.n++
	if us > h.max {
		h.max = us
	}
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	if o.max > h.max {
		h.max = o.max
	}
}

func (h *histogram) pct(p float64) float64 {
	rank := uint64(math.Max(1, math.Ceil(p/100*float64(h.n))))
	var seen uint64
	for b, c := range h.counts {
		seen += uint64(c)
		if seen >= rank {
			return math.Min(h.max, math.Round(math.Exp(float64(b)*logStep)))
		}
	}
	return math.Round(h.max)
}

func (h *histogram) summary() map[string]any {
	if h.n == 0 {
		return map[string]any{"p50": nil, "p99": nil, "max": nil}
	}
	return map[string]any{"p50": h.pct(50), "p99": h.pct(99), "max": math.Round(h.max)}
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

var benchFailures atomic.Int64

// timed runs loops goroutines of SELECT 1 on pool for seconds: one RUN.
func timed(pool rowQuerier, loops int, seconds float64) map[string]any {
	ctx := context.Background()
	var ops, failures atomic.Int64
	hists := make([]histogram, loops)
	var wg sync.WaitGroup
	cpu0 := cpuSeconds()
	t0 := time.Now()
	deadline := t0.Add(time.Duration(seconds * float64(time.Second)))
	for i := 0; i < loops; i++ {
		wg.Add(1)
		go func(h *histogram) {
			defer wg.Done()
			var n int64
			for {
				start := time.Now()
				if !start.Before(deadline) {
					break
				}
				var one int
				err := pool.QueryRow(ctx, "SELECT 1").Scan(&one)
				if err == nil && one != 1 {
					err = fmt.Errorf("SELECT 1 gave %d", one)
				}
				if err != nil {
					if f := benchFailures.Add(1); f <= 20 {
						fmt.Fprintf(os.Stderr, "pgxload bench: %v\n", err)
					}
					failures.Add(1)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				h.add(float64(time.Since(start).Nanoseconds()) / 1000)
				n++
			}
			ops.Add(n)
		}(&hists[i])
	}
	wg.Wait()
	wall := time.Since(t0).Seconds()
	cpu := cpuSeconds() - cpu0
	var all histogram
	for i := range hists {
		all.merge(&hists[i])
	}
	return map[string]any{"seconds": wall, "cpu_seconds": cpu, "ops": ops.Load(),
		"failures": failures.Load(), "latency_us": all.summary()}
}

// warm checks out n connections at once and gives them back, so that n
// are open before anything is measured.
func warm(ctx context.Context, acquire func(context.Context) (*pgxpool.Conn, error), n int) error {
	conns := make([]*pgxpool.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	for i := 0; i < n; i++ {
		c, err := acquire(ctx)
		if err != nil {
			return err
		}
		conns = append(conns, c)
	}
	return nil
}

func pgxVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/jackc/pgx/v5" {
				return d.Version
			}
		}
	}
	return ""
}

func bench(args []string) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	socket := fs.String("socket", "", "agent socket")
	target := fs.String("target", "DATABASE_URL", "target")
	max := fs.Int("max", 8, "MaxConns = MinConns of each pool")
	loopsList := fs.String("loops", "1,8", "comma-separated numbers of goroutines")
	rounds := fs.Int("rounds", 10, "rounds per number of goroutines")
	seconds := fs.Float64("seconds", 1, "seconds per pool per round")
	warmup := fs.Float64("warmup", 1, "unmeasured seconds per pool first")
	if fs.Parse(args) != nil {
		return 2
	}
	var loops []int
	for _, s := range strings.Split(*loopsList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "pgxload bench: --loops: %q is not a whole number from 1\n", s)
			return 2
		}
		loops = append(loops, n)
	}
	if *socket == "" || *max < 1 || *rounds < 1 || *seconds <= 0 || *warmup < 0 {
		fmt.Fprintln(os.Stderr, "pgxload bench: needs --socket, --max >= 1, --rounds >= 1, --seconds > 0")
		return 2
	}
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	url := strings.TrimSpace(line)
	if url == "" {
		fmt.Fprintf(os.Stderr, "pgxload bench: no connection string on stdin (%v)\n", err)
		return 2
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	plain := func() (*pgxpool.Pool, error) {
		cfg, err := pgxpool.ParseConfig(url)
		if err != nil {
			// pgx's parse errors may quote the string: say only that.
			return nil, fmt.Errorf("the connection string on stdin does not parse")
		}
		cfg.MaxConns, cfg.MinConns = int32(*max), int32(*max)
		cfg.ConnConfig.RuntimeParams["application_name"] = "pgxload-bench"
		p, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return nil, err
		}
		if err := warm(ctx, p.Acquire, *max); err != nil {
			p.Close()
			return nil, err
		}
		return p, nil
	}
	pgxA, err := plain()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgxload bench: pgxpool: %v\n", err)
		return 1
	}
	defer pgxA.Close()
	pgxB, err := plain()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgxload bench: pgxpool: %v\n", err)
		return 1
	}
	defer pgxB.Close()
	swap, err := pgxswap.NewWithConfig(ctx, pgxswap.Config{Target: *target,
		ClientConfig: dbswap.Config{Socket: *socket, Name: "pgxload-bench"},
		MaxConns:     int32(*max), MinConns: int32(*max), Logger: logger()})
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgxload bench: pgxswap: %v\n", err)
		return 1
	}
	defer swap.Close()
	if err := warm(ctx, swap.Acquire, *max); err != nil {
		fmt.Fprintf(os.Stderr, "pgxload bench: pgxswap: %v\n", err)
		return 1
	}

	names := []string{"pgx", "dbswap", "pgx_b"}
	pools := map[string]rowQuerier{"pgx": pgxA, "dbswap": swap, "pgx_b": pgxB}
	emit(map[string]any{"ready": true, "go": runtime.Version(), "pgx": pgxVersion(), "max": *max,
		"gomaxprocs": runtime.GOMAXPROCS(0)})
	for _, n := range loops {
		for _, name := range names {
			timed(pools[name], n, *warmup)
		}
		var out []map[string]any
		for r := 0; r < *rounds; r++ {
			k := r % len(names)
			order := append(append([]string{}, names[k:]...), names[:k]...)
			rnd := map[string]any{"order": order}
			for _, name := range order {
				rnd[name] = timed(pools[name], n, *seconds)
			}
			out = append(out, rnd)
		}
		emit(map[string]any{"loops": n, "rounds": out})
	}
	st := swap.Stats()
	emit(map[string]any{"end": true, "stats": map[string]any{"generation": st.Generation,
		"acked": st.Acked, "switches": st.Switches, "old": st.Old}})
	if benchFailures.Load() > 0 {
		return 1
	}
	return 0
}
