/*
 * A fake PostgreSQL for the pool's tests: servers by "host:port", each
 * with a password, up or down, read-only or not, with or without TLS, and
 * a pg-like Client class that "connects" to them.  The pool under test
 * runs it inside the real pg.Pool (pg-pool), so the swap logic meets
 * pg-pool's own rules.
 *
 * Queries: 'SLEEP' runs until db.wake() or until the connection is
 * destroyed; 'SHOW transaction_read_only' and
 * 'SELECT pg_is_in_recovery() AS in_recovery' answer from the server's
 * state; anything else returns one row and the server's label.
 */
import { EventEmitter } from 'node:events'

export class FakeDb {
  constructor() {
    this.servers = new Map()
    this.clients = new Set() // connected and not ended
    this.attempts = [] // { label, password, ok }
    this.sleepers = new Set()
    const db = this
    this.Client = class FakeClient extends FakeClientBase {
      constructor(config) {
        super(db, config)
      }
    }
  }

  /** Defines or changes a server. */
  server(label, opts = {}) {
    const s = this.servers.get(label) ?? { password: 'pw', tls: false, readOnly: false, inRecovery: false, down: false, hang: false, delay: 1 }
    this.servers.set(label, Object.assign(s, opts))
    return s
  }

  /** Live connections, optionally only those matching. */
  live(match = () => true) {
    return [...this.clients].filter(match)
  }

  /** Ends every SLEEP query normally. */
  wake() {
    for (const fn of [...this.sleepers]) fn()
  }
}

function pgError(message, fields = {}) {
  return Object.assign(new Error(message), fields)
}

class FakeClientBase extends EventEmitter {
  #db
  #active = null // { fail(err) } of the running query
  #connectCb = null

  constructor(db, config) {
    super()
    this.#db = db
    this.config = config
    this.host = config.host ?? 'localhost'
    this.port = config.port ?? 5432
    this.label = `${this.host}:${this.port}`
    this.user = config.user
    Object.defineProperty(this, 'password', { value: config.password, enumerable: false })
    this.ssl = config.ssl
    this._connecting = false
    this._connected = false
    this._ending = false
    this._ended = false
    this._queryable = true
    this.connection = { stream: { destroy: () => this.#terminate() } }
  }

  connect(cb) {
    const done = new Promise((resolve, reject) => {
      if (this._connecting || this._connected) return reject(new Error('Client has already been connected. You cannot reuse a client.'))
      this._connecting = true
      const server = this.#db.servers.get(this.label)
      const finish = (err) => {
        this.#connectCb = null
        this._connecting = false
        this.#db.attempts.push({ label: this.label, password: this.password, ok: !err })
        if (err) {
          this._queryable = false
          this._ended = true
          return reject(err)
        }
        this._connected = true
        this.#db.clients.add(this)
        resolve(this)
      }
      this.#connectCb = finish
      if (server?.hang) return // until destroyed
      setTimeout(() => {
        if (!this.#connectCb) return // destroyed meanwhile
        if (!server || server.down) return finish(pgError(`connect ECONNREFUSED ${this.label}`, { code: 'ECONNREFUSED' }))
        if (this.ssl && !server.tls) return finish(new Error('The server does not support SSL connections'))
        if (this.password !== server.password) {
          return finish(pgError(`password authentication failed for user "${this.user}"`, { code: '28P01', severity: 'FATAL' }))
        }
        finish(null)
      }, server?.delay ?? 1)
    })
    if (!cb) return done
    done.then(() => cb(), (err) => cb(err))
    return undefined
  }

  query(text, values, cb) {
    if (typeof text === 'object' && text !== null) text = text.text
    if (typeof values === 'function') {
      cb = values
      values = undefined
    }
    const done = new Promise((resolve, reject) => {
      if (!this._queryable || this._ending || !this._connected) {
        return process.nextTick(() => reject(new Error('Client was closed and is not queryable')))
      }
      const server = this.#db.servers.get(this.label)
      const finish = (err, res) => {
        this.#active = null
        this.#db.sleepers.delete(wake)
        if (err) reject(err)
        else resolve(res)
      }
      const wake = () => finish(null, { rows: [{ slept: true }], rowCount: 1, server: this.label })
      this.#active = { fail: (err) => finish(err) }
      if (text === 'SLEEP') {
        this.#db.sleepers.add(wake)
        return
      }
      setImmediate(() => {
        if (!this.#active) return
        if (text === 'SHOW transaction_read_only') return finish(null, { rows: [{ transaction_read_only: server.readOnly ? 'on' : 'off' }] })
        if (text.startsWith('SELECT pg_is_in_recovery()')) return finish(null, { rows: [{ in_recovery: server.inRecovery }] })
        if (text === 'FAIL') return finish(pgError('syntax error', { code: '42601', severity: 'ERROR' }))
        finish(null, { rows: [{ n: 1 }], rowCount: 1, server: this.label, password: this.password })
      })
    })
    if (!cb) return done
    done.then((res) => cb(null, res), (err) => cb(err))
    return undefined
  }

  /** The socket goes away (destroyed, or the server died). */
  #terminate() {
    if (this._ended) return
    const wasConnecting = this.#connectCb
    this._queryable = false
    this._ended = true
    this.#db.clients.delete(this)
    if (wasConnecting) {
      wasConnecting(new Error('Connection terminated unexpectedly'))
    } else if (this.#active) {
      this.#active.fail(new Error(this._ending ? 'Connection terminated' : 'Connection terminated unexpectedly'))
    } else if (!this._ending) {
      this.emit('error', new Error('Connection terminated unexpectedly'))
    }
    process.nextTick(() => this.emit('end'))
  }

  end(cb) {
    this._ending = true
    const done = new Promise((resolve) => {
      if (this._ended || !this._connected) {
        this._ended = true
        this.#db.clients.delete(this)
        return process.nextTick(resolve)
      }
      this.once('end', resolve)
      if (this.#active) this.#terminate()
      else setImmediate(() => this.#terminate())
    })
    if (!cb) return done
    done.then(() => cb())
    return undefined
  }

  ref() {}
  unref() {}
}
