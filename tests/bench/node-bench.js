#!/usr/bin/env node
// Node pool benchmark worker: one pool in one Node process, running the
// loads a driver asks for, so that the driver (tests/bench/node.py) can
// make a plain pg.Pool and createPool() take turns, each in a process of
// its own (as in an app: one kind of pool, its code monomorphic), both
// kept warm.  The Node counterpart of pool-bench.c.
//
//   node node-bench.js --pool pg|dbswap [--fake] [--socket PATH]
//        [--target NAME] [--max M] [--pkg DIR]
//
// --pool pg: a pg.Pool on the connection string read from stdin's first
// line (a secret: never in argv, never printed); --pool dbswap: the
// package's createPool() on the agent's socket (stdin's first line is
// read and ignored).  --pkg: the package directory (default
// client-lib/node), so that a scratch copy with a change can be measured
// the same way.  --fake: the pool's pg Client is FakeClient, which needs
// no server (connect and every query answer in setImmediate, a turn of
// the event loop as a socket's read would be): what is left is the
// pool's own work, and the CPU time per query is the pool's cost.
//
// The pool: max = M (default 8), idleTimeoutMillis 0 (nothing closes
// while the other process has its turn), pg's other defaults, M
// connections opened before the first line (dbswap: min = M).
//
// Then, one command per line on stdin, one JSON line on stdout each:
//   {"op": "pairs", "loops": n, "seconds": s}   connect() + release(),
//                                               no query
//   {"op": "select", "loops": n, "seconds": s}  `await pool.query(
//                                               'SELECT 1')`, timed
// n concurrent async loops for s seconds, answered with a RUN:
//   {"seconds": wall, "cpu_seconds": this process's CPU time, "ops": n,
//    "failures": n, "latency_us": {"p50", "p99", "max"} (null for pairs)}
// First line out: {"ready": true, "node": "v20...", "pg": "8.x", "max": M}.
// At EOF on stdin the pool ends and the last line is {"end": true,
// "stats": the dbswap pool's stats() or null}.  Exit status 1 after a
// failure or a set-up error, 2 for bad usage.
'use strict'

const { EventEmitter } = require('node:events')
const { createRequire } = require('node:module')
const path = require('node:path')
const { pathToFileURL } = require('node:url')
const { createInterface } = require('node:readline')
const { parseArgs } = require('node:util')

const FAILURE_BACKOFF_MS = 10
const LOG_STEP = Math.log(1.01)

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const now = () => process.hrtime.bigint()

/** Latency histogram: buckets 1 % wide in a plain array, max exact;
 * nothing allocated per sample. */
class Histogram {
  constructor() {
    this.counts = new Float64Array(2048)
    this.n = 0
    this.max = 0
  }

  add(us) {
    const v = us < 1 ? 1 : us
    this.counts[Math.min(2047, Math.ceil(Math.log(v) / LOG_STEP))]++
    this.n++
    if (v > this.max) this.max = v
  }

  pct(p) {
    const rank = Math.max(1, Math.ceil((p / 100) * this.n))
    let seen = 0
    for (let b = 0; b < this.counts.length; b++) {
      seen += this.counts[b]
      if (seen >= rank) return Math.min(this.max, Math.round(Math.exp(b * LOG_STEP)))
    }
    return Math.round(this.max)
  }

  summary() {
    if (!this.n) return { p50: null, p99: null, max: null }
    return { p50: this.pct(50), p99: this.pct(99), max: Math.round(this.max) }
  }
}

/** Runs `loops` concurrent loops of body(pool) for `seconds`; one RUN. */
async function timed(loops, seconds, body, hist) {
  let stop = false
  let ops = 0
  let failures = 0
  const firstErrors = []
  // A deadline each loop checks, not only a timer: a checkout from an
  // idle pool resolves in microtasks, which would starve the timer.
  let deadline
  async function loop() {
    while (!stop) {
      if (now() >= deadline) {
        stop = true
        break
      }
      const t0 = hist ? now() : 0n
      try {
        await body()
        if (hist) hist.add(Number(now() - t0) / 1000)
        ops++
      } catch (err) {
        failures++
        if (firstErrors.length < 3) firstErrors.push(String(err?.message ?? err))
        await sleep(FAILURE_BACKOFF_MS)
      }
    }
  }
  const cpu0 = process.cpuUsage()
  const t0 = now()
  deadline = t0 + BigInt(Math.round(seconds * 1e9))
  await Promise.all(Array.from({ length: loops }, loop))
  const wall = Number(now() - t0) / 1e9
  const cpu = process.cpuUsage(cpu0)
  for (const e of firstErrors) process.stderr.write(`node-bench: ${e}\n`)
  return {
    seconds: wall,
    cpu_seconds: (cpu.user + cpu.system) / 1e6,
    ops,
    failures,
    latency_us: hist ? hist.summary() : null,
  }
}

function selectOne(pool) {
  return async () => {
    const r = await pool.query('SELECT 1 AS one')
    if (r.rows[0].one !== 1) throw new Error('SELECT 1: unexpected result')
  }
}

function pair(pool) {
  return async () => {
    const c = await pool.connect()
    c.release()
  }
}

async function warm(pool, n) {
  const clients = await Promise.all(Array.from({ length: n }, () => pool.connect()))
  for (const c of clients) c.release()
}

async function waitReady(pool) {
  const deadline = Date.now() + 10000
  for (;;) {
    try {
      await pool.query('SELECT 1')
      return
    } catch (err) {
      if (Date.now() > deadline) throw err
      await sleep(100)
    }
  }
}

/** A pg Client that needs no server: connect and query answer in
 * setImmediate. */
class FakeClient extends EventEmitter {
  static RESULT = { rows: [{ one: 1 }], rowCount: 1 }

  constructor(config) {
    super()
    this.config = config
    this._queryable = true // what pg-pool checks on release
    this._ending = false
  }

  connect(cb) {
    const done = new Promise((resolve) => setImmediate(resolve))
    if (!cb) return done
    done.then(() => cb())
    return undefined
  }

  query(text, values, cb) {
    if (typeof values === 'function') cb = values
    if (cb) {
      setImmediate(cb, null, FakeClient.RESULT)
      return undefined
    }
    return new Promise((resolve) => setImmediate(resolve, FakeClient.RESULT))
  }

  end(cb) {
    this._ending = true
    this._queryable = false
    const done = new Promise((resolve) => setImmediate(resolve)).then(() => this.emit('end'))
    if (!cb) return done
    done.then(() => cb())
    return undefined
  }
}

const USAGE = 'usage: node node-bench.js --pool pg|dbswap [--fake] [--socket PATH] [--target NAME] [--max M] [--pkg DIR] < conninfo-then-commands'

async function main() {
  let o
  try {
    const { values } = parseArgs({
      options: {
        pool: { type: 'string' },
        fake: { type: 'boolean', default: false },
        socket: { type: 'string' },
        target: { type: 'string', default: 'DATABASE_URL' },
        max: { type: 'string', default: '8' },
        pkg: { type: 'string', default: path.join(__dirname, '..', '..', 'client-lib', 'node') },
      },
      strict: true,
    })
    o = { ...values, max: Number(values.max), pkg: path.resolve(values.pkg) }
    if (o.pool !== 'pg' && o.pool !== 'dbswap') throw new Error('--pool: pg or dbswap')
    if (o.pool === 'dbswap' && !o.socket) throw new Error('--pool dbswap needs --socket')
    if (!(o.max >= 1)) throw new Error('--max: a whole number from 1')
  } catch (err) {
    process.stderr.write(`node-bench: ${err.message}\n${USAGE}\n`)
    return 2
  }
  const input = createInterface({ input: process.stdin, crlfDelay: Infinity })
  const lines = input[Symbol.asyncIterator]()
  const first = await lines.next()
  const url = first.done ? '' : first.value.trim()
  const req = createRequire(path.join(o.pkg, 'package.json'))
  const pg = req('pg')
  const config = { max: o.max, idleTimeoutMillis: 0, application_name: 'node-bench', ...(o.fake && { Client: FakeClient }) }
  let pool
  if (o.pool === 'pg') {
    if (!url && !o.fake) throw new Error('--pool pg: no connection string on stdin')
    pool = new pg.Pool({ connectionString: url || 'postgresql://fake@127.0.0.1/fake', ...config })
  } else {
    const dbswap = await import(pathToFileURL(path.join(o.pkg, 'index.js')).href)
    pool = dbswap.createPool({ target: o.target, socket: o.socket, min: o.max, ...config })
  }
  pool.on('error', (err) => process.stderr.write(`node-bench: pool error: ${err.message}\n`))
  const write = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
  let failed = false
  try {
    await waitReady(pool)
    await warm(pool, o.max)
    write({ ready: true, node: process.version, pg: req('pg/package.json').version, max: o.max })
    for (;;) {
      const line = await lines.next()
      if (line.done) break
      if (!line.value.trim()) continue
      const cmd = JSON.parse(line.value)
      const body = { pairs: pair, select: selectOne }[cmd.op]
      if (!body || !(cmd.loops >= 1) || !(cmd.seconds > 0)) throw new Error(`bad command: ${line.value}`)
      const run = await timed(cmd.loops, cmd.seconds, body(pool), cmd.op === 'select' ? new Histogram() : null)
      if (run.failures) failed = true
      write(run)
    }
  } finally {
    const stats = typeof pool.stats === 'function' ? pool.stats() : null
    await pool.end().catch(() => {})
    write({ end: true, stats })
  }
  return failed ? 1 : 0
}

main().then(
  (code) => process.stdout.write('', () => process.exit(code)),
  (err) => {
    process.stderr.write(`node-bench: ${err?.stack ?? err}\n`)
    process.exit(1)
  },
)
