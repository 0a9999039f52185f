/*
 * The client against a fake agent: handshake and version fallback,
 * subscriptions, updates and acks with instances, an agent restart,
 * refusals and backoff, violations, requests and their timeouts, close().
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { after, test } from 'node:test'
import { inspect } from 'node:util'

import { Client, createPool, DbswapError } from '../index.js'
import { FRAME_MAX } from '../src/protocol.js'
import { FakeAgent, newInstance, once, tempSocketPath, until, withId } from './helpers/fake-agent.js'

const T = 'DATABASE_URL'
const V1 = 'postgresql://app:pw1@db/x'
const V2 = 'postgresql://app:pw2@db/x'

const cleanups = []
after(async () => {
  for (const fn of cleanups.reverse()) await fn()
})

/** A started fake agent, stopped after the tests. */
async function agentFor(o) {
  const agent = await new FakeAgent(o).listen()
  cleanups.push(async () => {
    await agent.stop()
    agent.cleanup()
  })
  return agent
}

/** A client with its log lines collected, closed after the tests. */
function clientFor(agentOrPath, o = {}) {
  const lines = []
  const client = new Client({ socket: agentOrPath.path ?? agentOrPath, name: 'test-app', log: (level, m) => lines.push(`${level}: ${m}`), ...o })
  client.lines = lines
  cleanups.push(() => client.close())
  return client
}

test('hello: version 2, the name and pid; the agent instance', async () => {
  const agent = await agentFor()
  const client = clientFor(agent)
  const info = await once(client, 'connect')
  assert.deepEqual(info, { version: 2, instance: agent.instance, name: 'dbswapd 0.1.0', pid: 811 })
  assert.equal(client.connected, true)
  assert.equal(client.instance, agent.instance)
  const hello = agent.received[0].msg
  assert.equal(hello.type, 'hello')
  assert.equal(hello.version, 2)
  assert.equal(hello.name, 'test-app')
  assert.equal(hello.pid, process.pid)
  assert.equal(typeof hello.id, 'number')
})

test('an agent that speaks only version 1: fallback at once, acks without instance, 2 offered again after a loss', async () => {
  const agent = await agentFor({ maxVersion: 1 })
  agent.define(T, V1)
  const client = clientFor(agent)
  const updates = []
  client.on('update', (u) => updates.push(u))
  await client.subscribe(T)
  assert.equal(client.version, 1)
  assert.equal(client.instance, null)
  const offers = agent.received.filter((r) => r.msg.type === 'hello').map((r) => r.msg.version)
  assert.deepEqual(offers, [2, 1])
  assert.ok(client.lines.some((l) => /does not speak protocol version 2; using version 1/.test(l)))
  assert.equal(updates.length, 1)
  assert.equal(updates[0].instance, null)
  assert.equal(client.ack(updates[0]), true)
  const ack = await agent.waitFor((m) => m.type === 'ack')
  assert.deepEqual(ack, { type: 'ack', target: T, generation: 1 })
  // A ping is unknown to a version-1 agent: it still shows it alive.
  agent.handle.ping = (conn, msg) => conn.send(withId({ type: 'error', code: 'unknown-type', message: 'what is ping' }, msg))
  assert.equal(typeof (await client.ping()), 'number')

  for (const conn of agent.conns) conn.destroy()
  await until(() => agent.received.filter((r) => r.msg.type === 'hello').length >= 4, 3000, 'a new hello pair')
  const later = agent.received.filter((r) => r.msg.type === 'hello').map((r) => r.msg.version)
  assert.deepEqual(later.slice(2, 4), [2, 1])
})

test('subscribe: all or nothing; refusals reject with the agent\'s code and are not kept', async () => {
  const agent = await agentFor()
  agent.define('A_URL', V1)
  const client = clientFor(agent)
  await assert.rejects(client.subscribe(['A_URL', 'NOPE_URL']), (err) => {
    assert.ok(err instanceof DbswapError)
    assert.equal(err.code, 'unknown-target')
    assert.deepEqual(err.targets, ['A_URL', 'NOPE_URL'])
    return true
  })
  assert.equal(client.lastUpdate('A_URL'), null)
  agent.allowed = new Set()
  await assert.rejects(client.subscribe('A_URL'), { code: 'forbidden' })
  agent.allowed = null
  await client.subscribe('A_URL')
  assert.equal(client.lastUpdate('A_URL').conninfo, V1)
  // Bad names never reach the agent.
  await assert.rejects(client.subscribe('9LIVES'), TypeError)
  await assert.rejects(client.subscribe('A-B'), TypeError)
  const many = Array.from({ length: 64 }, (_, i) => `T${i}`)
  await assert.rejects(client.subscribe(many), { code: 'limit' })
  // After a reconnection only the accepted target is subscribed again.
  const before = agent.received.length
  for (const conn of agent.conns) conn.destroy()
  await once(client, 'connect')
  await agent.waitFor((m, c) => m.type === 'subscribe' && agent.received.indexOf(agent.received.find((r) => r.msg === m)) >= before)
  const resubs = agent.received.slice(before).filter((r) => r.msg.type === 'subscribe').map((r) => r.msg.targets)
  assert.deepEqual(resubs, [['A_URL']])
})

test('updates and acks carry the instance; an ack for an earlier instance is not sent', async () => {
  const agent = await agentFor()
  agent.define(T, V1, { reason: 'rotation' })
  const client = clientFor(agent)
  const first = once(client, 'update')
  await client.subscribe(T)
  const u1 = await first
  assert.equal(u1.target, T)
  assert.equal(u1.generation, 1)
  assert.equal(u1.instance, agent.instance)
  assert.equal(u1.conninfo, V1)
  assert.equal(u1.reason, 'rotation')
  assert.equal(u1.server, 'primary')
  assert.equal(u1.standby, false)
  assert.equal(client.ack(u1), true)
  assert.deepEqual(await agent.waitFor((m) => m.type === 'ack'), { type: 'ack', target: T, generation: 1, instance: agent.instance })
  // Not a value this client was given: nothing sent.
  assert.equal(client.ack({ target: T, generation: 7, instance: agent.instance }), false)
  assert.equal(client.ack({ target: T, generation: 1, instance: newInstance() }), false)
  assert.throws(() => client.ack({ target: 'OTHER', generation: 1 }), { code: 'not-subscribed' })
  // Settings come as an event and stay readable.
  const s = once(client, 'settings')
  agent.pushSettings(T, { pool_max: 7, pool_timeout_ms: 100 })
  assert.deepEqual({ ...(await s) }, { target: T, poolMax: 7, poolMin: undefined, poolTimeoutMs: 100, poolIdleTimeoutMs: undefined })
  assert.equal(client.settings(T).poolMax, 7)
})

test('an agent restart: an acked value that is the same is acked quietly, a changed one is an update', async () => {
  const { path, cleanup } = tempSocketPath()
  cleanups.push(cleanup)
  let agent = new FakeAgent({ path })
  await agent.listen()
  agent.define(T, V1)
  const client = clientFor(path)
  const updates = []
  client.on('update', (u) => updates.push(u))
  await client.subscribe(T)
  const old = updates[0]
  client.ack(old)
  await agent.waitFor((m) => m.type === 'ack')
  await agent.stop()

  // The new run: generation 1 again, another instance, the same value.
  agent = new FakeAgent({ path })
  cleanups.push(() => agent.stop())
  await agent.listen()
  agent.generations.set(T, 4) // it numbers from elsewhere, to tell
  agent.define(T, V1)
  await until(() => agent.acks(T).length === 1, 5000, 'the quiet ack')
  assert.deepEqual(agent.acks(T)[0], { type: 'ack', target: T, generation: 5, instance: agent.instance })
  assert.equal(updates.length, 1, 'no update event for the same value')
  // A late ack of the old run's update is not sent to the new one.
  assert.equal(client.ack(old), false)

  agent.publish(T, V2)
  await until(() => updates.length === 2)
  assert.equal(updates[1].generation, 6)
  assert.equal(updates[1].instance, agent.instance)
})

test('an unacked value comes again after a reconnection; a reconnect generation always comes', async () => {
  const agent = await agentFor()
  agent.define(T, V1)
  const client = clientFor(agent)
  const updates = []
  client.on('update', (u) => updates.push(u))
  await client.subscribe(T)
  for (const conn of agent.conns) conn.destroy()
  await until(() => updates.length === 2, 3000, 'the value again')
  client.ack(updates[1])
  agent.publish(T, V1, { reason: 'reconnect' })
  await until(() => updates.length === 3, 3000, 'the reconnect')
  assert.equal(updates[2].reason, 'reconnect')
})

test('a refusal right after accept: the backoff keeps growing', async () => {
  const agent = await agentFor()
  const times = []
  agent.on('connection', (conn) => {
    times.push(Date.now())
    conn.send({ type: 'error', code: 'limit', message: 'too many clients' })
    conn.close()
  })
  const client = clientFor(agent)
  const errors = []
  client.on('error', (e) => errors.push(e))
  await until(() => times.length >= 7, 5000, 'seven attempts')
  await client.close()
  const gaps = times.slice(1).map((t, i) => t - times[i])
  // 20 ms doubling, with jitter between half and all of it.
  assert.ok(gaps[5] >= 300, `gaps ${gaps}`)
  assert.ok(gaps[5] > gaps[0] * 4, `gaps ${gaps}`)
  assert.ok(errors.length >= 6 && errors.every((e) => e.code === 'limit'))
  assert.match(errors[0].message, /refused the connection: limit: too many clients/)
})

test('no agent: said once, retried with backoff, connected when it comes', async () => {
  const { path, cleanup } = tempSocketPath()
  cleanups.push(cleanup)
  const client = clientFor(path)
  const disconnects = []
  client.on('disconnect', (e) => disconnects.push(e))
  await until(() => disconnects.length >= 3)
  assert.equal(client.lastError.code, 'ENOENT')
  assert.equal(client.lines.filter((l) => /cannot reach the agent/.test(l)).length, 1)
  const status = client.status({ timeout: 3000 })
  const agent = new FakeAgent({ path })
  cleanups.push(() => agent.stop())
  await agent.listen()
  await once(client, 'connect')
  assert.equal(client.lastError, null)
  assert.ok(client.lines.some((l) => /connected to the agent/.test(l)))
  assert.equal((await status).agent.instance, agent.instance, 'a request made before is sent once connected')
})

test('violations by the agent: a clear error, a new connection, never a hang', async () => {
  const agent = await agentFor()
  agent.define(T, V1)
  const client = clientFor(agent)
  const errors = []
  client.on('error', (e) => errors.push(e))
  await client.subscribe(T)

  const cases = [
    ['an oversized frame', (conn) => conn.sendRaw(Buffer.from([0x00, 0x01, 0x00, 0x01])), /frame of 65537 bytes announced/],
    ['garbage', (conn) => conn.sendRaw(Buffer.from([0, 0, 0, 4, 0x81, 0xa1, 0x61, 0xc1])), /reserved/],
    ['an update without instance', (conn) => conn.send({ type: 'update', target: T, generation: 9, conninfo: V2 }), /without instance/],
    ['an update of another instance', (conn) => conn.send({ type: 'update', target: T, generation: 9, conninfo: V2, instance: newInstance() }), /another agent instance/],
    ['a message only clients send', (conn) => conn.send({ type: 'subscribe', targets: [T] }), /only clients send/],
    ['a second hello', (conn) => conn.send({ type: 'hello', version: 2, name: 'x', pid: 1, instance: agent.instance }), /second hello/],
    ['a bad settings message', (conn) => conn.sendUnchecked({ type: 'settings', target: T, pool_max: 0 }), /pool_max/],
  ]
  for (const [what, send, pattern] of cases) {
    const before = agent.connections
    agent.handle.status = () => {} // never answered
    const pending = client.status({ timeout: 0 })
    await until(() => agent.received.some((r) => r.msg.type === 'status' && !r.seen))
    for (const r of agent.received) r.seen = true
    const n = errors.length
    for (const conn of agent.conns) send(conn)
    await assert.rejects(pending, { code: 'disconnected' }, what)
    await until(() => errors.length > n, 3000, what)
    assert.equal(errors.at(-1).code, 'protocol', what)
    assert.match(errors.at(-1).message, pattern, what)
    await until(() => agent.connections > before && client.connected, 3000, `reconnection after ${what}`)
  }
})

test('ECONNRESET is end-of-file: no error, a reconnection', async () => {
  const agent = await agentFor()
  const client = clientFor(agent)
  const errors = []
  client.on('error', (e) => errors.push(e))
  await once(client, 'connect')
  // Closing with the client's messages unread in the socket: the client's
  // read fails with ECONNRESET rather than end-of-file.  The agent's side
  // stops reading once its stream buffer is full; the rest stays in the
  // kernel.
  const [conn] = agent.conns
  conn.socket.pause()
  const pending = []
  for (let i = 0; i < 20000; i++) pending.push(client.ping({ timeout: 0 }).catch((e) => e))
  // Not a fixed pause: on a busy machine the writes take longer.
  await until(() => conn.socket.readableLength >= conn.socket.readableHighWaterMark, 10000, "the agent's side to stop reading")
  await new Promise((r) => setTimeout(r, 20))
  const disconnected = once(client, 'disconnect')
  conn.destroy()
  const err = await disconnected
  assert.equal(err.cause?.code, 'ECONNRESET')
  assert.equal((await pending[0]).code, 'disconnected')
  assert.equal(err.code, 'disconnected')
  assert.match(err.message, /connection closed/)
  await once(client, 'connect')
  assert.equal(errors.length, 0)
})

test('requests: ids, replies, agent errors as rejections, timeouts', async () => {
  const agent = await agentFor()
  agent.define(T, V1)
  const client = clientFor(agent)
  const st = await client.status()
  assert.equal(st.agent.instance, agent.instance)
  assert.deepEqual(st.targets, [])
  assert.equal(typeof (await client.ping()), 'number')

  agent.handle.reload = (conn, msg) => conn.send(withId({ type: 'ok' }, msg))
  agent.handle.failover = (conn, msg) => conn.send(withId({ type: 'ok', generation: 3 }, msg))
  agent.handle.failback = (conn, msg) => conn.send(withId({ type: 'error', code: 'refused', message: 'the primary is in recovery' }, msg))
  agent.handle.reconnect = (conn, msg) => conn.send(withId(msg.target ? { type: 'ok', generation: 4 } : { type: 'ok' }, msg))
  assert.equal(await client.reload(), undefined)
  assert.deepEqual(await client.failover(T), { generation: 3 })
  await assert.rejects(client.failback(T), (err) => err.code === 'refused' && /the primary is in recovery/.test(err.message))
  await assert.rejects(client.failback(T, { force: true }), (err) => err.code === 'refused')
  assert.deepEqual(agent.received.filter((r) => r.msg.type === 'failback').map((r) => r.msg.force), [undefined, true])
  await assert.rejects(client.failback(T, { force: 'yes' }), TypeError)
  assert.deepEqual(await client.reconnect(T), { generation: 4 })
  assert.deepEqual(await client.reconnect(), { generation: undefined })
  assert.deepEqual(agent.received.filter((r) => r.msg.type === 'reconnect').map((r) => r.msg.target), [T, undefined])
  agent.handle.reload = (conn, msg) => conn.send(withId({ type: 'error', code: 'forbidden', message: 'not an admin' }, msg))
  await assert.rejects(client.reload(), (err) => err instanceof DbswapError && err.code === 'forbidden')
  await assert.rejects(client.failover('no good'), TypeError)

  // Replies in any order find their request.
  const held = []
  agent.handle.ping = (conn, msg) => held.push([conn, msg])
  const p1 = client.ping()
  const p2 = client.ping()
  await until(() => held.length === 2)
  held[1][0].send({ type: 'ok', id: held[1][1].id })
  await p2
  held[0][0].send({ type: 'ok', id: held[0][1].id })
  await p1
  // An error that answers nothing is an 'error' event.
  const e = once(client, 'error')
  for (const conn of agent.conns) conn.send({ type: 'error', code: 'not-subscribed', message: 'ack for a target not subscribed' })
  assert.equal((await e).code, 'not-subscribed')

  agent.handle.status = () => {}
  const started = Date.now()
  await assert.rejects(client.status({ timeout: 80 }), (err) => err.code === 'timeout' && /did not answer status within 80 ms/.test(err.message))
  assert.ok(Date.now() - started < 1000)
  assert.equal(client.connected, true, 'a timeout keeps the connection')
})

test('nack: sent to the update\'s instance, cut to 1024 bytes, the secret masked', async () => {
  const agent = await agentFor()
  agent.define(T, V1)
  const client = clientFor(agent)
  const u = once(client, 'update')
  await client.subscribe(T)
  const update = await u
  assert.equal(client.nack(update, `cannot connect with ${V1}: ${'x'.repeat(2000)}`), true)
  const nack = await agent.waitFor((m) => m.type === 'nack')
  assert.equal(nack.generation, 1)
  assert.equal(nack.instance, agent.instance)
  assert.ok(Buffer.byteLength(nack.message) <= 1024)
  assert.ok(nack.message.endsWith('...'))
  assert.ok(!nack.message.includes('pw1'))
  assert.match(nack.message, /postgresql:\/\/app:\*\*\*\*@db\/x/)
  assert.equal(client.nack({ target: T, generation: 1, instance: newInstance() }, 'x'), false)
})

test('an update never shows its connection string', async () => {
  const agent = await agentFor()
  agent.define(T, 'postgresql://app:TOPSECRET@db/x', { server: 'secondary', standby: true, reason: 'failover' })
  const client = clientFor(agent)
  const u = once(client, 'update')
  await client.subscribe(T)
  const update = await u
  for (const shown of [String(update), `${update}`, inspect(update), inspect(update, { depth: 9, showHidden: true }), JSON.stringify(update), JSON.stringify({ update }), inspect({ ...update }), inspect(client, { depth: 9 })]) {
    assert.ok(!shown.includes('TOPSECRET'), shown)
  }
  assert.match(String(update), /DATABASE_URL generation 1 \(failover, secondary, standby\): postgresql:\/\/app:\*\*\*\*@db\/x/)
  assert.equal(update.maskedConninfo, 'postgresql://app:****@db/x')
  assert.equal(update.conninfo, 'postgresql://app:TOPSECRET@db/x')
  assert.throws(() => {
    update.conninfo = 'x'
  })
})

test('updates(): the value in force, then each new one; ends at close()', async () => {
  const agent = await agentFor()
  agent.define(T, V1)
  const client = clientFor(agent)
  const it = client.updates(T)
  const seen = []
  const done = (async () => {
    for await (const u of it) {
      seen.push(u.conninfo)
      if (seen.length === 1) agent.publish(T, V2)
    }
  })()
  await until(() => seen.length === 2)
  assert.deepEqual(seen, [V1, V2])
  // a second iterator starts with the value in force
  const it2 = client.updates(T)
  assert.equal((await it2.next()).value.conninfo, V2)
  await it2.return()
  await client.close()
  await done
  assert.deepEqual(await it.next(), { value: undefined, done: true })
  // A refused target ends its iterator with the error.
  const other = clientFor(agent)
  await assert.rejects(other.updates('NOPE_URL').next(), { code: 'unknown-target' })
})

test('close(): what waits is rejected, nothing is left running', async () => {
  const agent = await agentFor()
  agent.handle.status = () => {}
  const client = clientFor(agent)
  const pending = assert.rejects(client.status({ timeout: 0 }), { code: 'closed' })
  await once(client, 'connect')
  await client.close()
  await pending
  await assert.rejects(client.ping(), { code: 'closed' })
  assert.equal(client.connected, false)
  assert.equal(client.close(), client.close(), 'close() twice is the same promise')
})

test('an error with no listener goes to the log, it does not throw', async () => {
  const agent = await agentFor()
  const client = clientFor(agent)
  await once(client, 'connect')
  for (const conn of agent.conns) conn.send({ type: 'error', code: 'internal', message: 'out of memory' })
  await until(() => client.lines.some((l) => /error: .*internal: out of memory/.test(l)))
})

test('the process can exit once the client is closed, with or without an agent', async () => {
  const agent = await agentFor()
  const { path } = tempSocketPath()
  for (const socket of [agent.path, path]) {
    const script = `
      import { Client } from ${JSON.stringify(new URL('../index.js', import.meta.url).href)}
      const c = new Client({ socket: ${JSON.stringify(socket)}, log: () => {} })
      setTimeout(() => c.close(), 150)
    `
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: 'inherit' })
    const started = Date.now()
    const code = await new Promise((resolve) => child.on('exit', resolve))
    assert.equal(code, 0)
    assert.ok(Date.now() - started < 3000, 'exited soon after close()')
  }
})

test('a frame body at the limit from the agent is read', async () => {
  const agent = await agentFor()
  agent.define(T, 'x')
  const client = clientFor(agent)
  await client.subscribe(T)
  const big = 'h'.repeat(FRAME_MAX - 200)
  const u = once(client, 'update')
  agent.publish(T, `host=${big}`)
  assert.equal((await u).conninfo.length, big.length + 5)
})

test('a subscribe that times out after it was sent is kept: the late ok and the updates count, and they are acked', async () => {
  const agent = await new FakeAgent({}).listen()
  agent.define('DATABASE_URL', 'host=db password=x')
  const orig = agent.handle.subscribe
  agent.handle.subscribe = (conn, msg) => setTimeout(() => orig(conn, msg), 300) // a slow agent
  const client = new Client({ socket: agent.path, log: () => {} })
  const updates = []
  client.on('update', (u) => {
    updates.push(u.generation)
    client.ack(u)
  })
  try {
    const err = await client.subscribe('DATABASE_URL', { timeout: 100 }).then(() => null, (e) => e)
    assert.equal(err?.code, 'timeout')
    await until(() => updates.length === 1, 2000, 'the late update')
    const g = agent.publish('DATABASE_URL', 'host=db password=y')
    await agent.waitFor((m) => m.type === 'ack' && m.generation === g, 2000)
    assert.deepEqual(updates, [1, g])
    assert.equal(client.lastUpdate('DATABASE_URL').generation, g)
  } finally {
    await client.close()
    await agent.stop()
    agent.cleanup()
  }
})

test('a subscribe that times out after it was sent and is then refused is dropped', async () => {
  const agent = await new FakeAgent({}).listen()
  const orig = agent.handle.subscribe
  agent.handle.subscribe = (conn, msg) => setTimeout(() => orig(conn, msg), 300)
  const client = new Client({ socket: agent.path, log: () => {} })
  try {
    const err = await client.subscribe('NOPE_URL', { timeout: 100 }).then(() => null, (e) => e)
    assert.equal(err?.code, 'timeout')
    await new Promise((r) => setTimeout(r, 400))
    // Dropped: subscribing again asks the agent again (and is refused).
    const again = await client.subscribe('NOPE_URL', { timeout: 2000 }).then(() => null, (e) => e)
    assert.equal(again?.code, 'unknown-target')
  } finally {
    await client.close()
    await agent.stop()
    agent.cleanup()
  }
})

test('an agent that breaks the protocol right after hello is not reconnected to in a loop: the backoff grows, the log line is said once', async () => {
  const agent = await new FakeAgent({}).listen()
  agent.define('DATABASE_URL', 'host=db password=x')
  agent.handle.subscribe = (conn) => conn.sendUnchecked({ type: 'settings', target: 'DATABASE_URL', pool_max: 0 })
  const lines = []
  const log = (level, m) => lines.push(`${level}: ${m}`)
  const client = new Client({ socket: agent.path, log })
  client.subscribe('DATABASE_URL', { timeout: 0 }).catch(() => {})
  // A pool logs the errors it hears from its client too.
  const agent2 = await new FakeAgent({}).listen()
  agent2.define('DATABASE_URL', 'host=db password=x')
  agent2.handle.subscribe = agent.handle.subscribe
  const poolLines = []
  const pool = createPool({ socket: agent2.path, log: (level, m) => poolLines.push(`${level}: ${m}`) })
  try {
    await new Promise((r) => setTimeout(r, 1500))
    assert.ok(agent.connections <= 8, `${agent.connections} connections in 1.5 s`)
    assert.ok(agent2.connections <= 8, `${agent2.connections} connections of the pool in 1.5 s`)
    assert.equal(lines.filter((l) => /bad message/.test(l)).length, 1, lines.join('\n'))
    assert.equal(poolLines.filter((l) => /bad message/.test(l)).length, 1, poolLines.join('\n'))
  } finally {
    await client.close()
    await pool.end()
    await agent.stop()
    await agent2.stop()
    agent.cleanup()
    agent2.cleanup()
  }
})

test('after a session that lasted, the client reconnects at once (the backoff starts over)', async () => {
  const agent = await new FakeAgent({}).listen()
  agent.define('DATABASE_URL', 'host=db password=x')
  const client = new Client({ socket: agent.path, log: () => {} })
  try {
    await client.subscribe('DATABASE_URL')
    for (let i = 0; i < 3; i++) {
      await new Promise((r) => setTimeout(r, 1100))
      const before = agent.connections
      for (const conn of agent.conns) conn.destroy()
      const t0 = Date.now()
      await until(() => client.connected && agent.connections > before, 2000, 'a new session')
      assert.ok(Date.now() - t0 < 300, `back after ${Date.now() - t0} ms`)
    }
  } finally {
    await client.close()
    await agent.stop()
    agent.cleanup()
  }
})
