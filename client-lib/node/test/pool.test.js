/*
 * The pool without a server: what it is to the code that takes a
 * pg.Pool, and what it says when it has no value.  Its swaps run against
 * a real PostgreSQL in test/integration (meson test -C build node).
 */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import net from 'node:net'
import { test } from 'node:test'
import { inspect } from 'node:util'
import pg from 'pg'

import { Client, createPool, DbswapError } from '../index.js'
import { FakeAgent, once, tempSocketPath, until } from './helpers/fake-agent.js'
import { startFaultServer } from './helpers/pg-fault.js'

test('createPool() is a pg.Pool to instanceof checks (PrismaPg takes nothing else)', async () => {
  const socket = tempSocketPath()
  const pool = createPool({ socket: socket.path, log: () => {} })
  try {
    assert.ok(pool instanceof pg.Pool)
    assert.equal(pool.ending, false)
    assert.equal(typeof pool.then, 'undefined', 'a thenable pool would be awaited by TypeORM')
  } finally {
    await pool.end()
  }
  assert.equal(pool.ending, true)
  assert.equal(pool.ended, true)
  await assert.rejects(pool.query('select 1'), /after calling end/)
  socket.cleanup()
})

test('a socket option that is not a path is refused at once', () => {
  assert.throws(() => createPool({ socket: { path: '/x' }, log: () => {} }), TypeError)
})

test('no agent and no $target: a checkout fails, naming the socket and the variable', async () => {
  const target = 'DBSWAP_TEST_UNSET_URL'
  delete process.env[target]
  const { path: socket, cleanup } = tempSocketPath()
  const pool = createPool({ target, socket, log: () => {} })
  try {
    const err = await pool.connect().then(() => null, (e) => e)
    assert.ok(err instanceof DbswapError, String(err))
    assert.equal(err.code, 'no-value')
    assert.match(err.message, new RegExp(`no agent at ${socket}.*\\$${target} is not set`))
  } finally {
    await pool.end()
    cleanup()
  }
})

test('a value that does not connect: nacked, and the value is in no nack, log line, error or inspect()', async () => {
  const agent = await new FakeAgent({}).listen()
  const secret = 'pw-in-a-value-9f3'
  agent.define('DATABASE_URL', `postgresql://app:${secret}@127.0.0.1:1/x`)
  const lines = []
  const pool = createPool({ socket: agent.path, log: (level, m) => lines.push(`${level}: ${m}`) })
  try {
    const nack = await once(pool, 'nack')
    assert.equal(nack.generation, 1)
    assert.equal(nack.willRetry, true)
    assert.match(nack.message, /cannot connect with generation 1/)
    const err = await pool.connect().then(() => null, (e) => e)
    assert.equal(err?.code, 'no-value', String(err))
    const seen = [nack.message, err.message, ...lines, inspect(pool, { depth: 10, showHidden: true }), String(pool)].join('\n')
    assert.doesNotMatch(seen, new RegExp(secret))
    assert.ok(lines.some((l) => /does not connect from here/.test(l)), lines.join('\n'))
  } finally {
    await pool.end()
    await agent.stop()
    agent.cleanup()
  }
})

test('a refused target is asked again on each new session; once accepted, the refusal no longer fails checkouts', async () => {
  const { path, cleanup } = tempSocketPath()
  let agent = await new FakeAgent({ path }).listen() // without the target
  const pool = createPool({ socket: path, log: () => {} })
  const errors = []
  pool.on('error', (e) => errors.push(e))
  const subscribes = () => agent.received.filter((r) => r.msg.type === 'subscribe').length
  try {
    await until(() => errors.length > 0, 3000, 'the refusal')
    assert.equal(errors[0].code, 'unknown-target')
    let err = await pool.connect().then(() => null, (e) => e)
    assert.equal(err?.code, 'unknown-target', String(err))
    // The same agent, a new session: asked again, refused again, and
    // checkouts still fail at once.
    for (const conn of agent.conns) conn.destroy()
    await until(() => subscribes() >= 2, 3000, 'a second subscribe after the reconnection')
    await until(() => errors.length >= 2, 3000, 'the second refusal')
    err = await pool.connect().then(() => null, (e) => e)
    assert.equal(err?.code, 'unknown-target', String(err))
    // The agent restarts with the target: asked again, accepted, its value
    // tried (it does not connect: no server here), and checkouts fail with
    // that instead of the old refusal.
    await agent.stop()
    agent = new FakeAgent({ path })
    agent.define('DATABASE_URL', 'postgresql://app:pw@127.0.0.1:1/x')
    await agent.listen()
    await agent.waitFor((m) => m.type === 'subscribe')
    const nack = await once(pool, 'nack')
    assert.equal(nack.generation, 1)
    err = await pool.connect().then(() => null, (e) => e)
    assert.equal(err?.code, 'no-value', String(err))
  } finally {
    await pool.end()
    await agent.stop()
    cleanup()
  }
})

test('an agent restarted with the value in use: pool.generation and the ack follow the new numbering', async () => {
  const { path, cleanup } = tempSocketPath()
  // Server "none": the pool takes the value without a database server.
  const none = { server: 'none', reason: 'unavailable' }
  let agent = new FakeAgent({ path })
  agent.define('DATABASE_URL', 'postgresql://app:pw@db/x', none)
  agent.define('DATABASE_URL', 'postgresql://app:pw@db/x', none) // generation 2
  await agent.listen()
  const pool = createPool({ socket: path, log: () => {} })
  try {
    const acks = []
    pool.on('ack', (a) => acks.push(a))
    await agent.waitFor((m) => m.type === 'ack' && m.generation === 2)
    assert.equal(pool.generation, 2)
    await agent.stop()
    agent = new FakeAgent({ path })
    agent.define('DATABASE_URL', 'postgresql://app:pw@db/x', none) // the same value, generation 1 of a new run
    await agent.listen()
    const ack = await agent.waitFor((m) => m.type === 'ack')
    assert.deepEqual([ack.generation, ack.instance], [1, agent.instance])
    await until(() => pool.generation === 1, 1000, `pool.generation to be 1 (it is ${pool.generation})`)
    await until(() => acks.some((a) => a.generation === 1), 1000, 'an ack event for generation 1')
    const last = acks.at(-1)
    assert.deepEqual([last.generation, last.instance, last.sent], [1, agent.instance, true])
  } finally {
    await pool.end()
    await agent.stop()
    cleanup()
  }
})

test('a pool made on a shared Client takes the settings the client already has for its target', async () => {
  const agent = await new FakeAgent().listen()
  agent.define('DATABASE_URL', 'postgresql://app:pw@db/x', { server: 'none', reason: 'unavailable' })
  agent.settings.set('DATABASE_URL', { pool_max: 3, pool_min: 2, pool_timeout_ms: 1234 })
  const client = new Client({ socket: agent.path, log: () => {} })
  await client.subscribe('DATABASE_URL')
  assert.equal(client.settings('DATABASE_URL')?.poolMax, 3)
  const pool = createPool({ client, log: () => {} })
  try {
    assert.equal(pool.options.max, 3)
    assert.equal(pool.options.min, 2)
    assert.equal(pool.options.connectionTimeoutMillis, 1234)
  } finally {
    await pool.end()
    await client.close()
    await agent.stop()
    agent.cleanup()
  }
})

test('an agent that answers hello but never subscribe: checkouts fail after the request timeout, and subscribe is asked again', async () => {
  const agent = await new FakeAgent().listen()
  agent.define('DATABASE_URL', 'postgresql://app:pw@127.0.0.1:1/x')
  const answer = agent.handle.subscribe
  agent.handle.subscribe = () => {} // hung
  const client = new Client({ socket: agent.path, requestTimeout: 300, log: () => {} })
  const pool = createPool({ client, log: () => {} })
  pool.on('error', () => {})
  try {
    const r = await settled(pool.connect(), 3000)
    assert.notEqual(r, 'pending', 'the checkout still waits 3 s after it began')
    assert.equal(r.err?.code, 'timeout', String(r.err))
    assert.match(r.err.message, /did not answer subscribe/)
    await until(() => agent.received.filter((x) => x.msg.type === 'subscribe').length >= 2, 3000, 'subscribe asked again')
    // The agent answers again: the value comes, the timeout is forgotten.
    agent.handle.subscribe = answer
    await once(pool, 'nack', 3000)
    const err = await pool.connect().then(() => null, (e) => e)
    assert.equal(err?.code, 'no-value', String(err))
  } finally {
    await pool.end()
    await client.close()
    await agent.stop()
    agent.cleanup()
  }
})

/** Resolves with what p settles to, or 'pending' after ms. */
function settled(p, ms) {
  return Promise.race([
    p.then((v) => ({ value: v }), (err) => ({ err })),
    new Promise((resolve) => setTimeout(() => resolve('pending'), ms)),
  ])
}

test('the environment\'s value that does not connect: a nack event marked fromEnvironment and not sent; the agent\'s marked sent', async () => {
  const target = 'DBSWAP_TEST_ENV_NACK_URL'
  process.env[target] = 'postgresql://app:pw@127.0.0.1:1/x'
  const { path: socket, cleanup } = tempSocketPath()
  const pool = createPool({ target, socket, log: () => {} })
  try {
    const nack = await once(pool, 'nack')
    assert.equal(nack.generation, 0)
    assert.equal(nack.fromEnvironment, true)
    assert.equal(nack.sent, false)
  } finally {
    await pool.end()
    delete process.env[target]
    cleanup()
  }
  const agent = await new FakeAgent({}).listen()
  agent.define('DATABASE_URL', 'postgresql://app:pw@127.0.0.1:1/x')
  const pool2 = createPool({ socket: agent.path, log: () => {} })
  try {
    const nack = await once(pool2, 'nack')
    assert.equal(nack.fromEnvironment, false)
    assert.equal(nack.sent, true)
  } finally {
    await pool2.end()
    await agent.stop()
    agent.cleanup()
  }
})

test('index.js exports exactly the names the README\'s API import block shows', async () => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
  const block = /```js\nimport \{([\s\S]*?)\} from 'dbswap'\n```/.exec(readme.slice(readme.indexOf('## API')))
  assert.ok(block, 'README.md has the import block under "## API"')
  const named = block[1].replace(/\/\/.*$/gm, '').split(/[\s,]+/).filter(Boolean).sort()
  const exported = Object.keys(await import('../index.js')).sort()
  assert.deepEqual(exported, named)
})

test('package.json: the types index.d.ts imports are optional peer dependencies (@types/pg for pg)', () => {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'))
  const dts = readFileSync(new URL('../index.d.ts', import.meta.url), 'utf8')
  const modules = [...dts.matchAll(/^import [^;]* from '([^'.][^']*)';/gm)].map((m) => m[1]).filter((m) => !m.startsWith('node:'))
  assert.deepEqual(modules, ['pg'])
  for (const name of modules) {
    // pg ships no types: they are DefinitelyTyped's.
    const types = `@types/${name}`
    assert.ok(pkg.peerDependencies?.[types], `${types} is a peer dependency`)
    assert.equal(pkg.peerDependenciesMeta?.[types]?.optional, true, `${types} is optional (JavaScript apps need none)`)
  }
})

test('end() does not wait for a new value\'s connection that hangs (a server that accepts and never answers)', async () => {
  const sockets = new Set()
  const hung = net.createServer((sock) => sockets.add(sock))
  await new Promise((resolve) => hung.listen(0, '127.0.0.1', resolve))
  const agent = await new FakeAgent({}).listen()
  agent.define('DATABASE_URL', `host=127.0.0.1 port=${hung.address().port} user=x password=y dbname=z sslmode=disable`)
  const pool = createPool({ socket: agent.path, log: () => {} })
  try {
    await agent.waitFor((m) => m.type === 'subscribe')
    await new Promise((r) => setTimeout(r, 200)) // the warm-up hangs
    const t0 = Date.now()
    const res = await Promise.race([pool.end().then(() => 'ended'), new Promise((r) => setTimeout(() => r('still waiting'), 2000))])
    assert.equal(res, 'ended', `end() after ${Date.now() - t0} ms`)
  } finally {
    await agent.stop()
    agent.cleanup()
    for (const sock of sockets) sock.destroy()
    hung.close()
  }
})

test('many pools on one shared Client (one per target, up to 64) raise no MaxListenersExceededWarning', async () => {
  const agent = await new FakeAgent({}).listen()
  const client = new Client({ socket: agent.path, log: () => {} })
  const warnings = []
  const onWarning = (w) => warnings.push(`${w.name}: ${w.message}`)
  process.on('warning', onWarning)
  const pools = []
  try {
    for (let i = 0; i < 64; i++) {
      agent.define(`T${i}_URL`, 'host=/nonexistent user=x')
      pools.push(createPool({ client, target: `T${i}_URL`, log: () => {} }))
    }
    await new Promise((r) => setTimeout(r, 300))
    assert.deepEqual(warnings.filter((w) => /MaxListeners/.test(w)), [])
  } finally {
    process.off('warning', onWarning)
    for (const p of pools) await p.end()
    await client.close()
    await agent.stop()
    agent.cleanup()
  }
})

/** A pool on the fault server's URL, from the environment (no agent).
 * fault: startFaultServer()'s options; password: the value's. */
async function faultPool(t, options = {}, fault = {}, password = null) {
  const server = await startFaultServer(fault)
  const { path: socket, cleanup } = tempSocketPath()
  const target = 'DBSWAP_TEST_FAULT_URL'
  const user = password === null ? 'app' : `app:${encodeURIComponent(password)}`
  process.env[target] = `postgresql://${user}@127.0.0.1:${server.address().port}/db?sslmode=disable`
  const pool = createPool({ target, socket, max: 2, log: () => {}, ...options })
  t.after(async () => {
    await pool.end().catch(() => {})
    server.close()
    cleanup()
    delete process.env[target]
  })
  return pool
}

test('a released client that gets an error before it is back in its pg.Pool: the pool\'s error event, no crash, and the next query gets a live connection', async (t) => {
  const pool = await faultPool(t)
  const errors = []
  pool.on('error', (err) => errors.push(err))
  const uncaught = []
  const onUncaught = (err) => uncaught.push(err)
  process.on('uncaughtException', onUncaught)
  t.after(() => process.off('uncaughtException', onUncaught))
  await pool.query('SELECT 1')
  await pool.query('KILL') // its client is released, then the FATAL comes
  await new Promise((resolve) => setTimeout(resolve, 50))
  assert.deepEqual(uncaught.map(String), [])
  assert.equal(errors.length, 1)
  assert.equal(errors[0].code, '57P01')
  await pool.query('SELECT 2')
})

test('an error of an idle client with no error listener: logged, with the value\'s password masked', async (t) => {
  const secret = 'idle-pw-5e1c'
  const lines = []
  const pool = await faultPool(t, { log: (level, m) => lines.push(`${level}: ${m}`) }, { fatalMessage: `terminating connection of a client that sent ${secret}` }, secret)
  await pool.query('SELECT 1')
  await pool.query('KILL') // no 'error' listener: the pool logs it
  await until(() => lines.some((l) => /terminating connection/.test(l)), 20000, "the idle client's error in the log")
  assert.doesNotMatch(lines.join('\n'), new RegExp(secret))
  assert.ok(lines.some((l) => /^error: .*terminating connection of a client that sent \*\*\*\*/.test(l)), lines.join('\n'))
})

test('an app that guards its clients\' errors itself: the client the FATAL hit is not handed out again', async (t) => {
  const pool = await faultPool(t)
  pool.on('error', () => {})
  const seen = []
  pool.on('connect', (client) => client.on('error', (err) => seen.push(err.code)))
  await pool.query('SELECT 1')
  await pool.query('KILL')
  await pool.query('SELECT 2') // failed with "not queryable" on the dead client
  assert.deepEqual(seen, ['57P01'])
})

test('a poolFactory that drops the config\'s symbol keys: a clear error, not a TypeError from inside', async () => {
  const socket = tempSocketPath()
  process.env.DBSWAP_TEST_FACTORY_URL = 'postgresql://app:pw@127.0.0.1:1/x'
  const pool = createPool({
    target: 'DBSWAP_TEST_FACTORY_URL',
    socket: socket.path,
    log: () => {},
    Client: pg.Client,
    poolFactory: (config) => new pg.Pool(Object.fromEntries(Object.entries(config))),
  })
  try {
    const err = await pool.connect().then(() => null, (e) => e)
    assert.match(String(err?.message), /poolFactory.*symbol/)
  } finally {
    await pool.end()
    socket.cleanup()
    delete process.env.DBSWAP_TEST_FACTORY_URL
  }
})
