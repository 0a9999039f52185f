#!/usr/bin/env node
// Load generator for the Node.js pool, driven by the integration tests
// (tests/integration/test_node.py's fixture, the *.test.js files here)
// and the benchmarks, as tests/helpers/pool-load.c is for the C pool:
// the same options where they mean the same, the same JSON lines, so
// common.py's NodeLoad reads it as PoolLoad reads pool-load.
//
//   node load.js --pool pg|dbswap [--threads N] [--seconds S] [--max M]
//                [--min M] [--acquire-ms A] [--hold MS] [--pause-ms MS]
//                [--tx] [--name NAME] [--progress-ms MS]
//                [--socket PATH] [--target NAME]
//
// The pool comes from a factory chosen by --pool:
//   pg      a plain pg.Pool on the connection string read from stdin (its
//           first line: a secret never goes into argv);
//   dbswap  the package's createPool({ target, socket, ... }) (target
//           default DATABASE_URL, socket default: the package's), imported
//           from client-lib/node/index.js, else as the package itself
//           ("dbswap"); a clear error when neither is there.
// Both get max (default N), min (if given), connectionTimeoutMillis (A,
// default 10000) and application_name (NAME).
//
// It waits for a first successful SELECT 1 (retried for 10 s, else a
// set-up error), checks out --min connections at once and returns them
// (a warm pool), then runs N async loops that each: run SELECT 1 through
// pool.query() or, with --tx, every other iteration BEGIN; SELECT
// pg_backend_pid(); COMMIT on a client from pool.connect(); with --hold
// the client (checked out for SELECT 1 too) is kept MS more ms before
// release; then sleep --pause-ms.  A failed iteration (checkout or
// statement) counts once in "failures", and its loop sleeps 10 ms more
// (a pool that fails at once would otherwise spin); a client whose
// statement failed is released with the error (destroyed).  Errors whose
// code is EHOSTDOWN or contains "UNAVAILABLE" (the dbswap pool with no
// server available) count in "unavailable" too.  The pool's 'error'
// events (idle clients lost) are counted ("pool_errors"), not failures.
//
// Latency is what the app waits for, from before the query (or checkout)
// to after the release, --hold included, the pause not; successful
// iterations only, in a log-bucketed histogram (1 %), max exact.
//
// Lines on stdout, one JSON object each:
//   progress, every --progress-ms (default 500):
//     {"t": 1.5, "mono": 8123.456789, "queries": n, "failures": n,
//      "qps": r, "generation": g, "size": s, "idle": i, "waiting": w,
//      "old": o, "first_failure_t": 0.7, "last_failure_t": 1.2,
//      "unavailable": n}
//   each of the first 20 failures (also described on stderr):
//     {"failure": {"t": 0.7, "loop": 3, "code": "57P01", "error": "..."}}
//   the summary, last, with no "t" (that is how a reader tells it):
//     {"mono": ..., "queries": n, "failures": n, "failures_by_loop": [n, ...],
//      "generation": g,
//      "stats": {...}, "current_user_at_end": "app", "port_at_end": 5432,
//      "first_failure_t": ..., "last_failure_t": ..., "unavailable": n,
//      "latency_us": {"p50": 120, "p99": 900, "max": 15000},
//      "stuck": 0, "pool_errors": 0, "seconds": 12.3, "qps": r}
// t and the failure times are seconds since the loops started (null
// before a failure); mono is CLOCK_MONOTONIC in seconds (Python's
// time.monotonic()), so a driver can place its events on the same axis.
// generation and old come from the pool's stats() or generation, if it
// has them (a pg.Pool: null and 0); size, idle, waiting are totalCount,
// idleCount, waitingCount; "stats" is the pool's stats() (if any) with
// those counts and the config.
//
// SIGTERM, SIGINT or --seconds stop it: the loops finish their iteration
// (1 s at most: those still running then, say on a hung server, are
// "stuck"), SELECT current_user, current_setting('port') runs through
// pool.query() (--acquire-ms at most; the "_at_end" fields are null if it
// failed), the pool is ended (5 s at most; not with stuck loops), the
// summary is printed and the process exits: 0 when nothing failed, 1
// after a failure, stuck loops or a set-up error, 2 for bad usage.
//
// As a module, runLoad(pool, options) runs the same loops on a pool the
// caller made (and ends), stopped by options.signal (an AbortSignal) or
// options.seconds; options.onLine gets each line's object; it resolves
// with the summary.

import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const PACKAGE_INDEX = new URL('../../index.js', import.meta.url);
const READY_TIMEOUT_MS = 10000;
const STOP_GRACE_MS = 1000;
const END_TIMEOUT_MS = 5000;
// Enough to see what went wrong without flooding the test's log.
const FAILURES_SHOWN = 20;
const FAILURE_BACKOFF_MS = 10;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const monoNs = () => process.hrtime.bigint();
const mono = () => Number(monoNs()) / 1e9;
const round = (x, d = 3) => (x === null ? null : Number(x.toFixed(d)));

/** A latency histogram: buckets 1 % wide, the max exact. */
export class Histogram {
  static #LOG_STEP = Math.log(1.01);
  #counts = new Map();
  count = 0;
  max = 0;

  add(us) {
    const v = Math.max(1, Math.round(us));
    const b = Math.ceil(Math.log(v) / Histogram.#LOG_STEP);
    this.#counts.set(b, (this.#counts.get(b) ?? 0) + 1);
    this.count++;
    if (v > this.max) this.max = v;
  }

  /** The nearest-rank percentile p (0-100), in whole µs; null if empty. */
  percentile(p) {
    if (this.count === 0) return null;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    let seen = 0;
    for (const b of [...this.#counts.keys()].sort((x, y) => x - y)) {
      seen += this.#counts.get(b);
      if (seen >= rank) return Math.min(this.max, Math.round(Math.exp(b * Histogram.#LOG_STEP)));
    }
    return this.max;
  }

  summary() {
    return { p50: this.percentile(50), p99: this.percentile(99), max: this.count ? this.max : null };
  }
}

function oneLine(err) {
  const msg = err instanceof Error ? err.message : String(err);
  return (msg || '(no message)').replace(/[\r\n]+/g, ' ').trim();
}

function isUnavailable(err) {
  const code = String(err?.code ?? '');
  return code === 'EHOSTDOWN' || /UNAVAILABLE/i.test(code);
}

function poolCounts(pool) {
  const s = typeof pool.stats === 'function' ? pool.stats() ?? {} : {};
  return {
    generation: s.generation ?? pool.generation ?? null,
    size: pool.totalCount ?? null,
    idle: pool.idleCount ?? null,
    waiting: pool.waitingCount ?? null,
    old: s.old ?? 0,
    stats: s,
  };
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * Runs the loops on pool until options.signal aborts or options.seconds
 * pass.  options: threads (8), tx, holdMs, pauseMs, progressMs (500),
 * acquireMs (10000, the final query's limit), config (reported in
 * stats), onLine(obj), log(text) (stderr).  Resolves with the summary.
 */
export async function runLoad(pool, options = {}) {
  const o = {
    threads: 8, tx: false, holdMs: 0, pauseMs: 0, progressMs: 500,
    acquireMs: 10000, seconds: 0, config: {},
    onLine: () => {}, log: (text) => process.stderr.write(`load: ${text}\n`),
    ...options,
  };
  const st = {
    queries: 0, failures: 0, unavailable: 0, poolErrors: 0,
    firstFailure: null, lastFailure: null, stop: false,
    byLoop: new Array(o.threads).fill(0),
  };
  const hist = new Histogram();
  const onPoolError = (err) => {
    if (st.poolErrors++ < FAILURES_SHOWN) o.log(`pool error: ${oneLine(err)}`);
  };
  pool.on?.('error', onPoolError);

  const start = monoNs();
  const since = () => Number(monoNs() - start) / 1e9;

  const fail = (loop, err) => {
    const t = since();
    st.firstFailure ??= t;
    st.lastFailure = t;
    if (isUnavailable(err)) st.unavailable++;
    st.byLoop[loop]++;
    if (st.failures++ < FAILURES_SHOWN) {
      const code = err?.code ?? null;
      o.onLine({ failure: { t: round(t), loop, code, error: oneLine(err) } });
      o.log(`loop ${loop}: ${code ? code + ': ' : ''}${oneLine(err)}`);
    }
  };

  async function onClient(work) {
    const client = await pool.connect();
    // A connection lost between two statements is an 'error' event on
    // the checked-out client (fatal without a listener, as pg's docs
    // say); the next statement fails with it, or the release is told.
    let lost;
    const onLost = (err) => { lost ??= err; };
    client.on('error', onLost);
    let failed;
    try {
      await work(client);
      if (o.holdMs) await sleep(o.holdMs);
    } catch (err) {
      failed = err;
    }
    client.off('error', onLost);
    client.release(failed ?? lost);
    if (failed) throw failed;
  }

  async function selectOne(q) {
    const r = await q.query('SELECT 1 AS one');
    if (r.rows.length !== 1 || r.rows[0].one !== 1) throw new Error('SELECT 1: unexpected result');
  }

  async function transaction(client) {
    await client.query('BEGIN');
    const r = await client.query('SELECT pg_backend_pid() AS pid');
    if (r.rows.length !== 1 || !(r.rows[0].pid > 0)) throw new Error('SELECT pg_backend_pid(): unexpected result');
    await client.query('COMMIT');
  }

  let running = 0;
  async function loop(id) {
    running++;
    try {
      for (let n = 0; !st.stop; n++) {
        const t0 = monoNs();
        try {
          if (o.tx && n % 2 === 1) await onClient(transaction);
          else if (o.holdMs) await onClient(selectOne);
          else await selectOne(pool);
          hist.add(Number(monoNs() - t0) / 1000);
          st.queries++;
        } catch (err) {
          fail(id, err);
          await sleep(FAILURE_BACKOFF_MS);
        }
        if (o.pauseMs && !st.stop) await sleep(o.pauseMs);
      }
    } finally {
      running--;
    }
  }

  let lastQ = 0;
  let lastT = 0;
  const progress = () => {
    const t = since();
    const c = poolCounts(pool);
    o.onLine({
      t: round(t), mono: round(mono(), 6), queries: st.queries, failures: st.failures,
      qps: round(t > lastT ? (st.queries - lastQ) / (t - lastT) : 0, 1),
      generation: c.generation, size: c.size, idle: c.idle, waiting: c.waiting, old: c.old,
      first_failure_t: round(st.firstFailure), last_failure_t: round(st.lastFailure),
      unavailable: st.unavailable,
    });
    lastQ = st.queries;
    lastT = t;
  };
  const timer = setInterval(progress, o.progressMs);

  const loops = Array.from({ length: o.threads }, (_, i) => loop(i));
  await new Promise((resolve) => {
    const stop = () => resolve();
    if (o.signal?.aborted) stop();
    o.signal?.addEventListener('abort', stop, { once: true });
    if (o.seconds > 0) setTimeout(stop, o.seconds * 1000).unref();
  });
  st.stop = true;
  const seconds = since();
  await Promise.race([Promise.allSettled(loops), sleep(STOP_GRACE_MS)]);
  const stuck = running;
  clearInterval(timer);
  progress();

  let user = null;
  let port = null;
  try {
    const r = await withTimeout(
      pool.query("SELECT current_user AS u, current_setting('port') AS p"),
      o.acquireMs, 'the last query');
    user = r.rows[0].u;
    port = Number(r.rows[0].p);
  } catch (err) {
    o.log(`the last query failed: ${oneLine(err)}`);
  }
  const c = poolCounts(pool);
  pool.off?.('error', onPoolError);
  return {
    mono: round(mono(), 6),
    queries: st.queries,
    failures: st.failures,
    failures_by_loop: st.byLoop,
    generation: c.generation,
    stats: {
      generation: c.generation, old: c.old, ...c.stats,
      totalCount: c.size, idleCount: c.idle, waitingCount: c.waiting, config: o.config,
    },
    current_user_at_end: user,
    port_at_end: port,
    first_failure_t: round(st.firstFailure),
    last_failure_t: round(st.lastFailure),
    unavailable: st.unavailable,
    latency_us: hist.summary(),
    stuck,
    pool_errors: st.poolErrors,
    seconds: round(seconds),
    qps: round(seconds > 0 ? st.queries / seconds : 0, 1),
  };
}

// -- the command

const USAGE = `usage: load.js --pool pg|dbswap [--threads N] [--seconds S] [--max M]
       [--min M] [--acquire-ms A] [--hold MS] [--pause-ms MS] [--tx]
       [--name NAME] [--progress-ms MS] [--socket PATH] [--target NAME]
(--pool pg reads the connection string from stdin)`;

class UsageError extends Error {}

function parseCommandLine(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      pool: { type: 'string' },
      threads: { type: 'string', default: '8' },
      seconds: { type: 'string', default: '0' },
      max: { type: 'string' },
      min: { type: 'string' },
      'acquire-ms': { type: 'string', default: '10000' },
      hold: { type: 'string', default: '0' },
      'pause-ms': { type: 'string', default: '0' },
      tx: { type: 'boolean', default: false },
      name: { type: 'string', default: 'node-load' },
      'progress-ms': { type: 'string', default: '500' },
      socket: { type: 'string' },
      target: { type: 'string', default: 'DATABASE_URL' },
    },
    strict: true,
  });
  const int = (name, min) => {
    const v = values[name];
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v) || Number(v) < min) throw new UsageError(`--${name}: a whole number from ${min}`);
    return Number(v);
  };
  if (values.pool !== 'pg' && values.pool !== 'dbswap') throw new UsageError('--pool: pg or dbswap');
  const threads = int('threads', 1);
  return {
    pool: values.pool, threads, seconds: int('seconds', 0), max: int('max', 1) ?? threads,
    min: int('min', 0), acquireMs: int('acquire-ms', 1), holdMs: int('hold', 0),
    pauseMs: int('pause-ms', 0), tx: values.tx, name: values.name,
    progressMs: int('progress-ms', 10), socket: values.socket, target: values.target,
  };
}

async function importDbswap() {
  if (existsSync(fileURLToPath(PACKAGE_INDEX))) return import(PACKAGE_INDEX.href);
  try {
    return await import('dbswap');
  } catch (err) {
    throw new Error(`--pool dbswap needs the dbswap package: no ${fileURLToPath(PACKAGE_INDEX)}, ` +
      `and import('dbswap') failed (${oneLine(err)})`);
  }
}

/** The pool factories, by --pool: (options, config) -> a pool. */
export const poolFactories = {
  async pg(opts, config) {
    const url = readFileSync(0, 'utf8').split('\n')[0].trim();
    if (!url) throw new Error('--pool pg: no connection string on stdin');
    const { default: pg } = await import('pg');
    return new pg.Pool({ connectionString: url, ...config });
  },
  async dbswap(opts, config) {
    const mod = await importDbswap();
    if (typeof mod.createPool !== 'function') throw new Error('the dbswap package has no createPool()');
    return mod.createPool({
      target: opts.target, ...(opts.socket && { socket: opts.socket }), ...config,
    });
  },
};

async function waitReady(pool, log) {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    try {
      await pool.query('SELECT 1');
      return;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`no first connection within ${READY_TIMEOUT_MS} ms: ${oneLine(err)}`);
      log(`not ready yet: ${oneLine(err)}`);
      await sleep(100);
    }
  }
}

async function warm(pool, n) {
  const clients = await Promise.allSettled(Array.from({ length: n }, () => pool.connect()));
  for (const r of clients) if (r.status === 'fulfilled') r.value.release();
}

async function main() {
  // Found by `node --test` discovery (a file under test/): not a test.
  if (process.env.NODE_TEST_CONTEXT && process.argv.length <= 2) return 0;
  let opts;
  try {
    opts = parseCommandLine(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`load.js: ${oneLine(err)}\n${USAGE}\n`);
    return 2;
  }
  const log = (text) => process.stderr.write(`${opts.name}: ${text}\n`);
  const write = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
  const config = {
    max: opts.max, connectionTimeoutMillis: opts.acquireMs, application_name: opts.name,
    ...(opts.min !== undefined && { min: opts.min }),
  };

  const ac = new AbortController();
  for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => ac.abort());

  let pool;
  try {
    pool = await poolFactories[opts.pool](opts, config);
    pool.on?.('error', () => {}); // counted by runLoad; never fatal
    await waitReady(pool, log);
    if (opts.min) await warm(pool, opts.min);
  } catch (err) {
    log(`set-up failed: ${oneLine(err)}`);
    return 1;
  }

  const summary = await runLoad(pool, {
    threads: opts.threads, tx: opts.tx, holdMs: opts.holdMs, pauseMs: opts.pauseMs,
    progressMs: opts.progressMs, acquireMs: opts.acquireMs, seconds: opts.seconds,
    signal: ac.signal, config, onLine: write, log,
  });
  if (summary.stuck === 0) {
    try {
      await withTimeout(pool.end(), END_TIMEOUT_MS, 'pool.end()');
    } catch (err) {
      log(oneLine(err));
    }
  }
  write(summary);
  return summary.failures === 0 && summary.stuck === 0 ? 0 : 1;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().then(
    (code) => process.stdout.write('', () => process.exit(code)),
    (err) => {
      process.stderr.write(`load.js: ${err?.stack ?? err}\n`);
      process.exit(1);
    });
}
