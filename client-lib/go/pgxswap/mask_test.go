package pgxswap

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// pgconn quotes the host in a connect error, and a host (here a socket
// directory) may hold any part of the value: what Acquire returns is
// masked, and errors.As still finds the driver's error.
func TestConnectErrorMasked(t *testing.T) {
	const secret = "Pw-0f-the-app"
	conninfo := "host=/nonexistent/" + secret + " port=5 user=app password=" + secret + " dbname=app"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, raw := pgconn.Connect(ctx, conninfo)
	if raw == nil || !strings.Contains(raw.Error(), secret) {
		t.Fatalf("premise: pgconn's error quotes the host: %v", raw)
	}
	err := masked(raw, conninfo)
	if strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "nonexistent") {
		t.Errorf("masked: %q", err.Error())
	}
	var ce *pgconn.ConnectError
	if !errors.As(err, &ce) {
		t.Errorf("errors.As does not reach *pgconn.ConnectError")
	}
	plain := errors.New("no secret here")
	if masked(plain, conninfo) != plain {
		t.Errorf("an error with nothing to mask is wrapped")
	}
}
