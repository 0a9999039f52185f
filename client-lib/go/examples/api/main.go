// Command api is an API server in the shape of the services dbswap grew
// from, moved onto pgxswap.
//
// Before, the service held its pgxpool.Pool in a Manager, and an operator
// (or a deploy script) called an admin RPC after each password change:
//
//	type Manager struct {
//		mu   sync.RWMutex
//		pool *pgxpool.Pool
//	}
//
//	// Reload re-reads DATABASE_URL from the env file, opens a new pool,
//	// swaps it in and closes the old one: queries in flight on the old
//	// pool fail, the old password must stay valid until someone has
//	// called Reload on every replica, and nobody knows when that is.
//	func (m *Manager) Reload(ctx context.Context) error { ... }
//
//	func (s *AdminServer) ReloadDatabase(ctx context.Context, _ *pb.Empty) (*pb.Empty, error) {
//		return &pb.Empty{}, s.mgr.Reload(ctx)
//	}
//
// Now the pool follows dbswapd: a rotation, a failover and a failback reach
// it by themselves, queries in flight finish on the old connections, and
// the agent knows when every replica uses the new password (dbswapctl set
// --wait returns then). The handlers are unchanged: they were written
// against the methods *pgxpool.Pool and *pgxswap.Pool share (DB below), and
// the reload RPC is kept as a no-op for the scripts that still call it.
//
// Run it beside an agent:
//
//	DBSWAP_SOCKET=/run/dbswap/dbswap.sock go run ./examples/api -listen :8080
//	curl localhost:8080/accounts/1
//	curl localhost:8080/dbswap
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"dbswap.dev/dbswap"
	"dbswap.dev/dbswap/pgxswap"
)

// DB is what the handlers need: *pgxpool.Pool and *pgxswap.Pool both have
// it, so code written for the one runs on the other.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Begin(ctx context.Context) (pgx.Tx, error)
}

var (
	_ DB = (*pgxpool.Pool)(nil)
	_ DB = (*pgxswap.Pool)(nil)
)

// Server holds the handlers' dependencies; no Manager, no reload.
type Server struct {
	db   DB
	pool *pgxswap.Pool // for the status page
}

func (s *Server) account(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		http.Error(w, "bad id", http.StatusBadRequest)
		return
	}
	var balance int64
	err = s.db.QueryRow(r.Context(), "SELECT balance FROM accounts WHERE id = $1", id).Scan(&balance)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		http.Error(w, "no such account", http.StatusNotFound)
	case err != nil:
		dbError(w, err)
	default:
		json.NewEncoder(w).Encode(map[string]any{"id": id, "balance": balance})
	}
}

func (s *Server) transfer(w http.ResponseWriter, r *http.Request) {
	var req struct{ From, To, Amount int64 }
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	tx, err := s.db.Begin(r.Context())
	if err != nil {
		dbError(w, err)
		return
	}
	defer tx.Rollback(context.Background()) // after Commit: a no-op
	if _, err := tx.Exec(r.Context(), "UPDATE accounts SET balance = balance - $1 WHERE id = $2", req.Amount, req.From); err != nil {
		dbError(w, err)
		return
	}
	if _, err := tx.Exec(r.Context(), "UPDATE accounts SET balance = balance + $1 WHERE id = $2", req.Amount, req.To); err != nil {
		dbError(w, err)
		return
	}
	if err := tx.Commit(r.Context()); err != nil {
		dbError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// reloadDatabase is the old admin call, kept for the scripts that still
// make it: the pool follows the agent, there is nothing to reload.
func (s *Server) reloadDatabase(w http.ResponseWriter, _ *http.Request) {
	json.NewEncoder(w).Encode(map[string]any{"reloaded": false,
		"why": "the pool follows dbswapd; rotations and failovers need no reload"})
}

func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	st := s.pool.Stats()
	json.NewEncoder(w).Encode(map[string]any{"generation": st.Generation, "acked": st.Acked,
		"server": st.Server, "reason": st.Reason, "from_environment": st.FromEnvironment,
		"unavailable": st.Unavailable, "switches": st.Switches, "draining_pools": st.Old})
}

// dbError answers 503 while no server is available (the agent says so:
// fail fast, retry later), else 500. pgx's errors never hold the password.
func dbError(w http.ResponseWriter, err error) {
	if errors.Is(err, dbswap.ErrUnavailable) {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "database unavailable", http.StatusServiceUnavailable)
		return
	}
	slog.Error("query failed", "err", err)
	http.Error(w, "database error", http.StatusInternalServerError)
}

func main() {
	listen := flag.String("listen", ":8080", "address to serve on")
	target := flag.String("target", "DATABASE_URL", "the agent's target (and the env variable without an agent)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Instead of pgxpool.New(ctx, os.Getenv("DATABASE_URL")) and a
	// Manager: the pool follows the agent (or uses $DATABASE_URL when no
	// agent runs, as on a laptop).
	pool, err := pgxswap.NewWithConfig(ctx, pgxswap.Config{
		Target: *target,
		Configure: func(c *pgxpool.Config) error {
			c.ConnConfig.RuntimeParams["application_name"] = "api"
			return nil
		},
	})
	if err != nil {
		slog.Error("dbswap pool", "err", err)
		os.Exit(1)
	}
	defer pool.Close()

	s := &Server{db: pool, pool: pool}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /accounts/{id}", s.account)
	mux.HandleFunc("POST /transfer", s.transfer)
	mux.HandleFunc("POST /admin/reload-database", s.reloadDatabase)
	mux.HandleFunc("GET /dbswap", s.status)
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	slog.Info("serving", "addr", *listen, "target", *target)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		slog.Error("serve", "err", err)
		os.Exit(1)
	}
}
