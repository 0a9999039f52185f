/*
 * A fake dbswapd for the tests: a Unix socket server speaking the protocol
 * through the package's own protocol module, scripted by the test.
 *
 * By default it behaves as the agent does: hello (version 2 with an
 * instance, or version 1 only), subscribe (all or nothing, the current
 * update and settings, then ok), acks and nacks recorded, ping, status.
 * A test overrides any message type with agent.handle[type] = (conn, msg).
 */
import { randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { encode } from '@msgpack/msgpack'

import { FrameReader, decodeMessage, encodeMessage } from '../../src/protocol.js'

export function tempSocketPath() {
  const dir = mkdtempSync(join(tmpdir(), 'dbswap-node-'))
  return { path: join(dir, 'agent.sock'), cleanup: () => rmSync(dir, { recursive: true, force: true }) }
}

export function newInstance() {
  return randomBytes(8).toString('hex')
}

export class FakeConn extends EventEmitter {
  constructor(agent, socket) {
    super()
    this.agent = agent
    this.socket = socket
    this.received = []
    this.subscribed = new Set()
    this.version = null
    this.reader = new FrameReader()
    socket.on('data', (chunk) => {
      for (const body of this.reader.push(chunk)) {
        const msg = decodeMessage(body)
        this.received.push(msg)
        agent.received.push({ conn: this, msg })
        this.emit('message', msg)
        agent.emit('message', msg, this)
        const handler = agent.handle[msg.type]
        if (handler) handler.call(agent, this, msg)
      }
    })
    socket.on('error', () => {})
    socket.on('close', () => {
      agent.conns.delete(this)
      this.emit('close')
    })
  }

  send(msg) {
    if (!this.socket.destroyed) this.socket.write(encodeMessage(msg))
  }

  /** Sends a message as it is, unchecked: for violations. */
  sendUnchecked(msg) {
    const body = Buffer.from(encode(msg))
    const header = Buffer.alloc(4)
    header.writeUInt32BE(body.length)
    this.sendRaw(Buffer.concat([header, body]))
  }

  sendRaw(bytes) {
    if (!this.socket.destroyed) this.socket.write(bytes)
  }

  close() {
    this.socket.end()
  }

  destroy() {
    this.socket.destroy()
  }
}

export class FakeAgent extends EventEmitter {
  /**
   * @param {object} [o]
   * @param {string} [o.path] socket path (default: a new temp dir)
   * @param {1 | 2} [o.maxVersion] newest version spoken (1: an old agent)
   * @param {string} [o.instance]
   */
  constructor(o = {}) {
    super()
    if (o.path) {
      this.path = o.path
      this.cleanup = () => {}
    } else {
      const t = tempSocketPath()
      this.path = t.path
      this.cleanup = t.cleanup
    }
    this.maxVersion = o.maxVersion ?? 2
    this.instance = o.instance ?? newInstance()
    this.values = new Map() // target -> { generation, conninfo, reason, server, standby }
    this.settings = new Map() // target -> settings fields
    this.generations = new Map() // target -> last generation number
    this.allowed = o.allowed ?? null // Set of targets a client may subscribe, null: all known
    this.conns = new Set()
    this.received = [] // { conn, msg }
    this.connections = 0
    this.handle = {
      hello: (conn, msg) => this.#hello(conn, msg),
      subscribe: (conn, msg) => this.#subscribe(conn, msg),
      ping: (conn, msg) => conn.send(withId({ type: 'ok' }, msg)),
      status: (conn, msg) =>
        conn.send(withId({ type: 'status', agent: { version: '0.1.0', instance: this.instance, pid: 1 }, targets: [], files: [], keys: [] }, msg)),
    }
    this.server = net.createServer((socket) => {
      this.connections++
      const conn = new FakeConn(this, socket)
      this.conns.add(conn)
      this.emit('connection', conn)
    })
  }

  listen() {
    return new Promise((resolve) => this.server.listen(this.path, () => resolve(this)))
  }

  /** Stops listening and drops every client (as an agent that exits). */
  stop() {
    for (const conn of this.conns) conn.destroy()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }

  /** Defines a target's value without publishing it (as at start). */
  define(target, conninfo, extra = {}) {
    const generation = (this.generations.get(target) ?? 0) + 1
    this.generations.set(target, generation)
    const value = { generation, conninfo, reason: 'rotation', server: 'primary', standby: false, ...extra }
    this.values.set(target, value)
    return value
  }

  /** Publishes a new value of target to its subscribers. */
  publish(target, conninfo, extra = {}) {
    const value = this.define(target, conninfo, extra)
    for (const conn of this.conns) if (conn.subscribed.has(target)) conn.send(this.updateMessage(target, conn))
    return value.generation
  }

  /** Sends target's settings to its subscribers. */
  pushSettings(target, settings) {
    this.settings.set(target, settings)
    for (const conn of this.conns) if (conn.subscribed.has(target)) conn.send({ type: 'settings', target, ...settings })
  }

  updateMessage(target, conn) {
    const v = this.values.get(target)
    const msg = { type: 'update', target, generation: v.generation, conninfo: v.conninfo, reason: v.reason, server: v.server, standby: v.standby }
    if (conn.version >= 2) msg.instance = this.instance
    return msg
  }

  /** The acks received for target, as { generation, instance }. */
  acks(target) {
    return this.received.filter((r) => r.msg.type === 'ack' && r.msg.target === target).map((r) => r.msg)
  }

  nacks(target) {
    return this.received.filter((r) => r.msg.type === 'nack' && r.msg.target === target).map((r) => r.msg)
  }

  /** Resolves with the first message (and its connection) that matches. */
  waitFor(predicate, timeoutMs = 3000) {
    const found = this.received.find((r) => predicate(r.msg, r.conn))
    if (found) return Promise.resolve(found.msg)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off('message', onMessage)
        reject(new Error('the fake agent did not get the message it waited for'))
      }, timeoutMs)
      const onMessage = (msg, conn) => {
        if (!predicate(msg, conn)) return
        clearTimeout(timer)
        this.off('message', onMessage)
        resolve(msg)
      }
      this.on('message', onMessage)
    })
  }

  #hello(conn, msg) {
    if (msg.version > this.maxVersion || msg.version < 1) {
      conn.send(withId({ type: 'error', code: 'version', message: `speaks versions 1 to ${this.maxVersion}` }, msg))
      conn.close()
      return
    }
    conn.version = msg.version
    const reply = { type: 'hello', version: msg.version, name: 'dbswapd 0.1.0', pid: 811 }
    if (this.maxVersion >= 2) reply.instance = this.instance
    conn.send(withId(reply, msg))
  }

  #subscribe(conn, msg) {
    const unknown = msg.targets.filter((t) => !this.values.has(t) && !this.settings.has(t) && !this.generations.has(t))
    if (unknown.length) {
      conn.send(withId({ type: 'error', code: 'unknown-target', message: `no target ${unknown[0]}` }, msg))
      return
    }
    if (this.allowed && msg.targets.some((t) => !this.allowed.has(t))) {
      conn.send(withId({ type: 'error', code: 'forbidden', message: 'not allowed' }, msg))
      return
    }
    for (const t of msg.targets) {
      conn.subscribed.add(t)
      if (this.values.has(t)) conn.send(this.updateMessage(t, conn))
      if (this.settings.has(t)) conn.send({ type: 'settings', target: t, ...this.settings.get(t) })
    }
    conn.send(withId({ type: 'ok' }, msg))
  }
}

export function withId(reply, msg) {
  return msg.id === undefined ? reply : { ...reply, id: msg.id }
}

/** Waits until cond() holds, polling. */
export async function until(cond, timeoutMs = 3000, what = 'a condition') {
  const start = Date.now()
  for (;;) {
    if (await cond()) return
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 5))
  }
}

export function once(emitter, event, timeoutMs = 3000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, on)
      reject(new Error(`no '${event}' event within ${timeoutMs} ms`))
    }, timeoutMs)
    const on = (...args) => {
      clearTimeout(timer)
      resolve(args.length > 1 ? args : args[0])
    }
    emitter.once(event, on)
  })
}
