package pgxswap_test

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"dbswap.dev/dbswap/pgxswap"
)

// poolAPI is the part of *pgxpool.Pool's API that apps call: *pgxswap.Pool
// must have it with the same signatures, so that code written for the one
// compiles against the other (checked at compile time).
type poolAPI interface {
	Acquire(ctx context.Context) (*pgxpool.Conn, error)
	AcquireFunc(ctx context.Context, f func(*pgxpool.Conn) error) error
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
	Begin(ctx context.Context) (pgx.Tx, error)
	BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error)
	CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error)
	Ping(ctx context.Context) error
	Close()
}

var (
	_ poolAPI = (*pgxpool.Pool)(nil)
	_ poolAPI = (*pgxswap.Pool)(nil)
)

// sqlcDBTX is the interface sqlc generates for pgx/v5 (its DBTX, with the
// CopyFrom and SendBatch it adds for :copyfrom and :batch queries):
// New(pool) of sqlc-generated code takes a *pgxswap.Pool.
type sqlcDBTX interface {
	Exec(context.Context, string, ...interface{}) (pgconn.CommandTag, error)
	Query(context.Context, string, ...interface{}) (pgx.Rows, error)
	QueryRow(context.Context, string, ...interface{}) pgx.Row
	CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error)
	SendBatch(context.Context, *pgx.Batch) pgx.BatchResults
}

var _ sqlcDBTX = (*pgxswap.Pool)(nil)
