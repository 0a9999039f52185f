#!/usr/bin/env node
// Node pool benchmark: what createPool() costs an app against a plain
// pg.Pool on the same server, both in this one process.  Driven by
// tests/bench/node.py, which runs PostgreSQL and the agent; the Node
// counterpart of pool-bench.c.
//
//   node node-bench.js --socket PATH [--target NAME] [--loops 1,8]
//        [--max M] [--seconds S] [--rounds R] [--pair-seconds P]
//        [--warmup-seconds W] [--fake-seconds F] [--fake-rounds FR]
//        [--pkg DIR] [--compare-pkg DIR]  < conninfo
//
// stdin: first line, the connection string for the plain pg.Pool (a
// secret: never in argv, never printed).  The dbswap pool gets its value
// from the agent.  --pkg: the package directory (default
// client-lib/node); --compare-pkg: a third pool, "dbswap_b", from another
// copy of the package (a scratch copy with a change), measured in the same
// rounds as the others.
//
// Every pool: max = M (default the largest --loops), idleTimeoutMillis 0
// (none closes while another is measured), pg's other defaults, M
// connections opened before anything is measured (dbswap: min = M).
//
//   (i)   connect() + release() with no query, P seconds (default 2) per
//         pool, for each loop count;
//   (ii)  N async loops of `await pool.query('SELECT 1')`, the pools in
//         turn in R rounds (default 20) of S seconds (default 1), the
//         order rotated every round, so that drift in the machine weighs
//         on all alike (short rounds: on a shared machine the drift is
//         sub-second); a W seconds run of each first (default 1),
//         unmeasured, for the JIT;
//   (iii) the same loops on pools whose pg Client is FakeClient (no
//         server: every answer comes in setImmediate), FR rounds (default
//         5) of F seconds (default 1): what is left is the pools' own
//         work, so the CPU time per query is the pool's cost.
//
// Output: one JSON object on stdout, raw figures only (node.py derives
// rates and ratios):
//   {"node": "v20...", "pg": "8.x", "max": M, "rounds": R, "seconds": S,
//    "pair_seconds": P, "warmup_seconds": W, "fake_rounds": FR,
//    "fake_seconds": F, "pools": ["pg", "dbswap"(, "dbswap_b")],
//    "pairs": [{"loops": n, "pg": RUN, "dbswap": RUN}, ...],
//    "select": [{"loops": n, "rounds": [{"order": ["pg", "dbswap"],
//                "pg": RUN, "dbswap": RUN}, ...]}, ...],
//    "fake": as "select",
//    "dbswap_stats": {...}, "dbswap_generation": g}
// where RUN is {"seconds": wall, "cpu_seconds": this process's CPU time,
// "ops": n, "failures": n, "latency_us": {"p50", "p99", "max"} (null for
// pairs)}.  Exit status 1 if anything failed, 2 for bad usage.
'use strict'

const { EventEmitter } = require('node:events')
const { createRequire } = require('node:module')
const { readFileSync } = require('node:fs')
const path = require('node:path')
const { pathToFileURL } = require('node:url')
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
 * setImmediate (a turn of the event loop, as a socket's read would), so
 * that what is left is the pools' own work. */
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

/** R rounds of every pool in turn, S seconds each, the order rotated
 * every round; first a W seconds run of each, unmeasured. */
async function alternate(pools, n, o, body, label) {
  const names = Object.keys(pools)
  const rate = (run) => (run.ops / run.seconds).toFixed(0)
  for (const p of Object.values(pools)) await timed(n, o.warmup, body(p), null)
  const rounds = []
  for (let r = 0; r < o.rounds; r++) {
    const k = r % names.length
    const order = [...names.slice(k), ...names.slice(0, k)]
    const round = { order }
    for (const name of order) round[name] = await timed(n, o.seconds, body(pools[name]), new Histogram())
    rounds.push(round)
    process.stderr.write(`node-bench: ${label}, ${n} loop(s), round ${r + 1}/${o.rounds}: ${names.map((x) => `${x} ${rate(round[x])}/s`).join(', ')}\n`)
  }
  return rounds
}

async function main() {
  let o
  try {
    const { values } = parseArgs({
      options: {
        socket: { type: 'string' },
        target: { type: 'string', default: 'DATABASE_URL' },
        loops: { type: 'string', default: '1,8' },
        max: { type: 'string' },
        seconds: { type: 'string', default: '1' },
        rounds: { type: 'string', default: '20' },
        'pair-seconds': { type: 'string', default: '2' },
        'warmup-seconds': { type: 'string', default: '1' },
        'fake-seconds': { type: 'string', default: '1' },
        'fake-rounds': { type: 'string', default: '5' },
        pkg: { type: 'string', default: path.join(__dirname, '..', '..', 'client-lib', 'node') },
        'compare-pkg': { type: 'string' },
      },
      strict: true,
    })
    const loops = values.loops.split(',').map(Number)
    o = {
      socket: values.socket, target: values.target, loops,
      max: values.max ? Number(values.max) : Math.max(...loops),
      seconds: Number(values.seconds), rounds: Number(values.rounds),
      pairSeconds: Number(values['pair-seconds']), warmup: Number(values['warmup-seconds']),
      fakeSeconds: Number(values['fake-seconds']), fakeRounds: Number(values['fake-rounds']),
      pkg: path.resolve(values.pkg),
      comparePkg: values['compare-pkg'] && path.resolve(values['compare-pkg']),
    }
    if (!o.socket || loops.some((n) => !(n >= 1)) || !(o.seconds > 0) || !(o.rounds >= 1) ||
        !(o.fakeSeconds > 0) || !(o.fakeRounds >= 0) || !(o.pairSeconds > 0) || !(o.warmup >= 0)) {
      throw new Error('bad arguments')
    }
  } catch (err) {
    process.stderr.write(`node-bench: ${err.message}\nusage: node node-bench.js --socket PATH [--target NAME] [--loops 1,8] [--max M] [--seconds S] [--rounds R] [--pair-seconds P] [--warmup-seconds W] [--fake-seconds F] [--fake-rounds FR] [--pkg DIR] [--compare-pkg DIR] < conninfo\n`)
    return 2
  }
  const url = readFileSync(0, 'utf8').split('\n')[0].trim()
  const req = createRequire(path.join(o.pkg, 'package.json'))
  const pg = req('pg')
  const packages = { dbswap: await import(pathToFileURL(path.join(o.pkg, 'index.js')).href) }
  if (o.comparePkg) packages.dbswap_b = await import(pathToFileURL(path.join(o.comparePkg, 'index.js')).href)

  const common = { max: o.max, idleTimeoutMillis: 0, application_name: 'node-bench' }
  /** pg.Pool and createPool() (and the compared copy's), on the server or
   * on FakeClient. */
  function makePools(extra) {
    const pools = { pg: new pg.Pool({ connectionString: url, ...common, ...extra }) }
    for (const [name, mod] of Object.entries(packages)) {
      pools[name] = mod.createPool({ target: o.target, socket: o.socket, min: o.max, ...common, ...extra })
    }
    for (const p of Object.values(pools)) p.on('error', (err) => process.stderr.write(`node-bench: pool error: ${err.message}\n`))
    return pools
  }
  async function ready(pools) {
    for (const p of Object.values(pools)) {
      await waitReady(p)
      await warm(p, o.max)
    }
  }
  const end = (pools) => Promise.allSettled(Object.values(pools).map((p) => p.end()))

  const out = {
    node: process.version, pg: req('pg/package.json').version, max: o.max,
    rounds: o.rounds, seconds: o.seconds, pair_seconds: o.pairSeconds,
    warmup_seconds: o.warmup, fake_rounds: o.fakeRounds, fake_seconds: o.fakeSeconds,
    pools: ['pg', ...Object.keys(packages)],
    pairs: [], select: [], fake: [],
  }
  let pools = makePools({})
  try {
    await ready(pools)
    for (const n of o.loops) {
      const entry = { loops: n }
      for (const [name, p] of Object.entries(pools)) {
        await timed(n, Math.min(0.5, o.pairSeconds), pair(p), null)
        entry[name] = await timed(n, o.pairSeconds, pair(p), null)
      }
      out.pairs.push(entry)
    }
    for (const n of o.loops) out.select.push({ loops: n, rounds: await alternate(pools, n, o, selectOne, 'SELECT 1') })
    out.dbswap_stats = typeof pools.dbswap.stats === 'function' ? pools.dbswap.stats() : null
    out.dbswap_generation = pools.dbswap.generation
  } finally {
    await end(pools)
  }
  if (o.fakeRounds > 0) {
    pools = makePools({ Client: FakeClient })
    try {
      await ready(pools)
      const fo = { ...o, rounds: o.fakeRounds, seconds: o.fakeSeconds, warmup: Math.min(o.warmup, o.fakeSeconds) }
      for (const n of o.loops) out.fake.push({ loops: n, rounds: await alternate(pools, n, fo, selectOne, 'fake client') })
    } finally {
      await end(pools)
    }
  }
  const failed = [...out.pairs, ...out.select.flatMap((s) => s.rounds), ...out.fake.flatMap((s) => s.rounds)]
    .some((e) => out.pools.some((x) => e[x].failures))
  process.stdout.write(JSON.stringify(out) + '\n')
  return failed ? 1 : 0
}

main().then(
  (code) => process.stdout.write('', () => process.exit(code)),
  (err) => {
    process.stderr.write(`node-bench: ${err?.stack ?? err}\n`)
    process.exit(1)
  },
)
