package pgxswap

// What the pool's convenience calls return: pgx's own results, with the
// connection released when the app is done with them (as pgxpool's).

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// poolRows releases its connection when closed, or read to the end.
type poolRows struct {
	pgx.Rows
	c *pgxpool.Conn
}

func (r *poolRows) Close() {
	r.Rows.Close()
	if r.c != nil {
		r.c.Release()
		r.c = nil
	}
}

func (r *poolRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.Close()
	return false
}

func (r *poolRows) Scan(dest ...any) error {
	err := r.Rows.Scan(dest...)
	if err != nil {
		r.Close()
	}
	return err
}

func (r *poolRows) Values() ([]any, error) {
	v, err := r.Rows.Values()
	if err != nil {
		r.Close()
	}
	return v, err
}

// Conn is nil: the connection belongs to the pool, as pgxpool's rows say.
func (r *poolRows) Conn() *pgx.Conn { return nil }

// poolRow releases its connection in Scan.
type poolRow struct {
	r pgx.Row
	c *pgxpool.Conn
}

func (r *poolRow) Scan(dest ...any) error {
	defer r.c.Release()
	return r.r.Scan(dest...)
}

// poolTx releases its connection at Commit or Rollback.
type poolTx struct {
	pgx.Tx
	c *pgxpool.Conn
}

func (t *poolTx) Commit(ctx context.Context) error {
	err := t.Tx.Commit(ctx)
	if t.c != nil {
		t.c.Release()
		t.c = nil
	}
	return err
}

func (t *poolTx) Rollback(ctx context.Context) error {
	err := t.Tx.Rollback(ctx)
	if t.c != nil {
		t.c.Release()
		t.c = nil
	}
	return err
}

// poolBatch releases its connection at Close.
type poolBatch struct {
	pgx.BatchResults
	c *pgxpool.Conn
}

func (b *poolBatch) Close() error {
	err := b.BatchResults.Close()
	if b.c != nil {
		b.c.Release()
		b.c = nil
	}
	return err
}

// Failed calls' results: the error again at every use.

type errRows struct{ err error }

func (errRows) Close()                                       {}
func (e errRows) Err() error                                 { return e.err }
func (errRows) CommandTag() pgconn.CommandTag                { return pgconn.CommandTag{} }
func (errRows) FieldDescriptions() []pgconn.FieldDescription { return nil }
func (errRows) Next() bool                                   { return false }
func (e errRows) Scan(...any) error                          { return e.err }
func (e errRows) Values() ([]any, error)                     { return nil, e.err }
func (errRows) RawValues() [][]byte                          { return nil }
func (errRows) Conn() *pgx.Conn                              { return nil }

type errRow struct{ err error }

func (e errRow) Scan(...any) error { return e.err }

type errBatch struct{ err error }

func (e errBatch) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, e.err }
func (e errBatch) Query() (pgx.Rows, error)         { return errRows{e.err}, e.err }
func (e errBatch) QueryRow() pgx.Row                { return errRow{e.err} }
func (e errBatch) Close() error                     { return e.err }
