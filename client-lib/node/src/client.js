/*
 * The connection to dbswapd: handshake (version 2, falling back to 1),
 * subscriptions, updates and settings, acks and nacks, requests with ids
 * and timeouts, and reconnection with backoff.  The same behaviour as
 * libdbswap's client.c, in Node's shape: an EventEmitter with promises.
 *
 * Agent instances: each run of the agent has an id, and its generation
 * numbers mean something only with it.  The client keeps the instance of
 * the connected agent (from its hello) and of each update; an ack or nack
 * goes out only when the connected agent is the update's instance, so an
 * ack meant for an earlier run is never counted for the same number of
 * this one.  A value the app already acked that comes again (the agent
 * restarted, or the client reconnected) is acked quietly, without an
 * update event.
 *
 * Nothing here blocks; the socket and the retry timer are the only things
 * that keep the process alive (neither with the `unref` option), and
 * close() ends both.
 */
import { EventEmitter } from 'node:events'
import net from 'node:net'
import { basename } from 'node:path'
import { inspect } from 'node:util'

import { maskConninfo, redact } from './conninfo.js'
import { DbswapError } from './errors.js'
import {
  DEFAULT_SOCKET,
  ErrorCode,
  FrameReader,
  MESSAGES,
  NACK_MESSAGE_MAX,
  NAME_MAX,
  PROTOCOL_VERSION,
  PROTOCOL_VERSION_MIN,
  SUBSCRIBE_MAX,
  decodeMessage,
  encodeMessage,
} from './protocol.js'
import { backoff, defaultLog, truncateUtf8 } from './util.js'

/** Reconnection backoff: the first retry comes quickly (an agent restarted
 * by systemd is back within milliseconds), then it doubles, up to 2 s so
 * that a client is back within 2 s of the agent's return. */
export const RECONNECT_FIRST_MS = 20
export const RECONNECT_MAX_MS = 2000
/** A session that lasted this long, or that got an answer or an update
 * before it ended (other than by a violation of the agent's), starts the
 * backoff over: one that breaks right after hello does not make a loop. */
export const SESSION_STABLE_MS = 1000
/** The same protocol violation by the agent is logged at most once in
 * this (with no 'error' listener; every one is an event). */
const VIOLATION_REPEAT_MS = 60000
/** Default time a request waits for its answer. */
export const REQUEST_TIMEOUT_MS = 5000

/** Hooks for the pool, not part of the public API. */
export const kClaim = Symbol('dbswap.claim')
export const kUnclaim = Symbol('dbswap.unclaim')
/** Emitted (update, sent) when the client acks a value quietly under a
 * new number (see #onUpdate), so that a pool keeping the update learns
 * the numbering the agent now uses. */
export const kRenumber = Symbol('dbswap.renumber')

const TARGET_RE = /^[A-Za-z_][A-Za-z0-9_]*$/

function checkTarget(target) {
  if (typeof target !== 'string' || !TARGET_RE.test(target) || target.length > NAME_MAX) {
    throw new TypeError(`not a target name: ${inspect(target)} (letters, digits and _, not starting with a digit)`)
  }
}

/**
 * A value the agent published for a target.  The connection string is a
 * secret: `conninfo` gives it, every string form (toString, util.inspect,
 * JSON.stringify) shows it masked.
 */
export class Update {
  #conninfo

  /** @param {object} msg a checked update message */
  constructor(msg) {
    /** @type {string} */
    this.target = msg.target
    /** @type {number | bigint} */
    this.generation = msg.generation
    /** @type {string | null} the agent run that numbered the generation */
    this.instance = msg.instance ?? null
    /** @type {string} rotation, failover, failback, manual, unavailable, reconnect */
    this.reason = msg.reason ?? 'rotation'
    /** @type {string} primary, secondary, or none (no server available) */
    this.server = msg.server ?? 'primary'
    /** @type {boolean} the server is a read-only standby */
    this.standby = msg.standby ?? false
    this.#conninfo = msg.conninfo
    Object.freeze(this)
  }

  /** The libpq connection string: a secret. */
  get conninfo() {
    return this.#conninfo
  }

  /** The connection string with its passwords masked. */
  get maskedConninfo() {
    return maskConninfo(this.#conninfo)
  }

  toJSON() {
    return {
      target: this.target,
      generation: typeof this.generation === 'bigint' ? String(this.generation) : this.generation,
      instance: this.instance,
      reason: this.reason,
      server: this.server,
      standby: this.standby,
      conninfo: this.maskedConninfo,
    }
  }

  toString() {
    const standby = this.standby ? ', standby' : ''
    return `${this.target} generation ${this.generation} (${this.reason}, ${this.server}${standby}): ${this.maskedConninfo}`
  }

  [inspect.custom](depth, options, inspectFn = inspect) {
    return `Update ${inspectFn(this.toJSON(), options)}`
  }
}

/** A target's pool settings, as the 'settings' event gives them (each
 * undefined when the agent does not set it).
 * @typedef {import('../index.js').Settings} Settings */

/** What the client keeps per subscribed target. */
class Subscription {
  constructor(target) {
    this.target = target
    this.active = false // the agent accepted it
    this.conninfo = null // last value delivered (secret)
    this.server = null
    this.standby = false
    this.delivered = 0 // its generation
    this.instance = null // and the agent run that numbered it
    this.acked = false // the app acked the delivered value
    this.last = null // the last Update, for iterators and pools
    this.settings = null
  }
}

/**
 * A connection to dbswapd.
 *
 * Events:
 * - 'connect' (info: { version, instance, name, pid }): a session started
 *   (hello answered); the agent's name and pid
 * - 'disconnect' (error): a connection attempt failed or a session ended;
 *   the client reconnects by itself
 * - 'update' (update: Update): a new value for a subscribed target
 * - 'settings' (settings: Settings): a target's pool settings changed
 * - 'error' (error: DbswapError): an error the agent sent that answers no
 *   request, or a protocol violation by the agent.  Emitted only when a
 *   listener is attached; otherwise it goes to the log function.
 * - 'close': close() was called
 */
export class Client extends EventEmitter {
  #path
  #name
  #timeout
  #log
  #unref
  #socket = null
  #reader = null
  #state = 'idle' // idle, connecting, hello, ready, closed
  #offer = PROTOCOL_VERSION // the version hello offers
  #session = null // { version, instance, name, pid } once ready
  #attempts = 0
  #retryTimer = null
  #helloTimer = null
  #warnedDown = false
  #lastError = null
  #nextId = 0
  #helloId = 0
  #pending = new Set() // requests not settled, in order: { msg, id, sent, resolve, reject, timer, retry }
  #sent = new Map() // id -> request, for those sent in this session
  #subs = new Map()
  #iterators = new Set()
  #claims = new Set()
  #closing = null
  #sessionStart = 0
  #sessionGood = false // an answer or an update came in this session
  #violationSaid = -Infinity // when a violation was last said
  #violationLast = null // and its text
  #violationsQuiet = 0 // and those not said since

  /**
   * @param {object} [options]
   * @param {string} [options.socket] the agent's socket; default
   *   $DBSWAP_SOCKET, else /run/dbswap/dbswap.sock
   * @param {string} [options.name] shown in the agent's status; default the
   *   script's file name
   * @param {number} [options.requestTimeout] ms a request waits for its
   *   answer by default (5000), and a connection attempt for the agent's
   *   hello (a stopped agent's socket still accepts connections: the
   *   attempt then fails, and another follows); 0 waits for ever
   * @param {(level: 'debug'|'info'|'warn'|'error', message: string) => void} [options.log]
   *   where log lines go (never with a password); default stderr
   * @param {boolean} [options.unref] the socket and timers do not keep the
   *   process alive
   */
  constructor(options = {}) {
    super()
    this.#path = options.socket || process.env.DBSWAP_SOCKET || DEFAULT_SOCKET
    if (typeof this.#path !== 'string') {
      throw new TypeError(`dbswap: the socket option must be a path (a string), not ${typeof this.#path}`)
    }
    const name = options.name ?? basename(process.argv[1] ?? process.argv0 ?? 'node')
    this.#name = truncateUtf8(String(name).replace(/\0/g, '?') || 'node', NAME_MAX)
    this.#timeout = options.requestTimeout ?? REQUEST_TIMEOUT_MS
    this.#log = options.log ?? defaultLog
    this.#unref = Boolean(options.unref)
    // A pool listens to a handful of events, and a client may carry a pool
    // per target (64): that is no leak.  Room for the app's own listeners
    // beyond them, so that a real leak is still reported.
    this.setMaxListeners(SUBSCRIBE_MAX + 10)
    // From the next tick: the app may still attach listeners and subscribe.
    this.#retryTimer = setImmediate(() => {
      this.#retryTimer = null
      this.#connect()
    })
    if (this.#unref) this.#retryTimer.unref()
  }

  /** The socket path in use. */
  get socketPath() {
    return this.#path
  }

  /** True while a session with the agent is up (hello answered). */
  get connected() {
    return this.#state === 'ready'
  }

  /** The connected agent's instance (null when not connected, or from a
   * version-1 agent). */
  get instance() {
    return this.#state === 'ready' ? this.#session.instance : null
  }

  /** The session's protocol version, null when not connected. */
  get version() {
    return this.#state === 'ready' ? this.#session.version : null
  }

  /** Why the last connection attempt failed (null once connected). */
  get lastError() {
    return this.#lastError
  }

  /** The last update received for target, or null. */
  lastUpdate(target) {
    return this.#subs.get(target)?.last ?? null
  }

  /** The pool settings in force for target, or null if none were sent. */
  settings(target) {
    return this.#subs.get(target)?.settings ?? null
  }

  /* ---- connection ---- */

  #logLine(level, message) {
    try {
      this.#log(level, message)
    } catch {
      // a log function that throws must not break the client
    }
  }

  #emitError(err) {
    if (this.listenerCount('error') > 0) this.emit('error', err)
    else this.#logLine('error', err.message)
  }

  #connect() {
    if (this.#state === 'closed') return
    this.#state = 'connecting'
    this.#reader = new FrameReader()
    const sock = net.createConnection({ path: this.#path })
    this.#socket = sock
    if (this.#unref) sock.unref()
    let failure = null
    sock.on('connect', () => {
      if (sock !== this.#socket) return
      this.#state = 'hello'
      this.#helloId = ++this.#nextId
      this.#write({ type: 'hello', id: this.#helloId, version: this.#offer, name: this.#name, pid: process.pid })
      if (this.#timeout > 0) {
        this.#helloTimer = setTimeout(() => this.#helloTimedOut(sock), this.#timeout)
        if (this.#unref) this.#helloTimer.unref()
      }
    })
    sock.on('data', (chunk) => this.#onData(sock, chunk))
    sock.on('error', (err) => {
      failure = err
    })
    sock.on('close', () => {
      if (sock === this.#socket) this.#onClose(failure)
    })
  }

  #write(msg) {
    this.#socket.write(encodeMessage(msg))
  }

  /** The agent took the connection and did not answer hello in time (a
   * stopped or stuck agent): the attempt failed, as if it had refused. */
  #helloTimedOut(sock) {
    this.#helloTimer = null
    if (sock !== this.#socket || this.#state !== 'hello') return
    const err = new DbswapError('timeout', `the agent at ${this.#path} did not answer hello within ${this.#timeout} ms`)
    this.#lastError = err
    if (!this.#warnedDown) {
      this.#logLine('warn', `cannot reach the agent at ${this.#path}: it did not answer hello within ${this.#timeout} ms; retrying`)
      this.#warnedDown = true
    }
    this.#lost(err, false)
  }

  /** The socket closed by itself (EOF, ECONNRESET, or never connected). */
  #onClose(err) {
    this.#socket = null
    if (this.#state !== 'ready') {
      // Refused, or closed before hello was answered (an agent at its
      // client limit): said once until a session starts again.
      this.#lastError = err ?? new DbswapError('disconnected', 'the agent closed the connection before answering hello')
      if (!this.#warnedDown) {
        this.#logLine('warn', `cannot reach the agent at ${this.#path}: ${this.#lastError.code ?? this.#lastError.message}; retrying`)
        this.#warnedDown = true
      }
      this.#lost(this.#lastError, false)
      return
    }
    // ECONNRESET is end-of-file here: the agent closed with our messages
    // still unread in its socket (PROTOCOL.md).
    const why = !err || err.code === 'ECONNRESET' ? 'connection closed' : err.code ?? err.message
    this.#logLine('warn', `lost the agent at ${this.#path} (${why}); keeping the last values and reconnecting`)
    this.#warnedDown = true
    this.#lost(new DbswapError('disconnected', `lost the agent at ${this.#path} (${why})`, { cause: err }), false)
  }

  /**
   * Ends the connection (or what is left of it) and plans the next one: at
   * once after a version fallback, else after the backoff.  The backoff
   * starts over only after a session that lasted (SESSION_STABLE_MS, or
   * an answer or update and no violation), so that an agent that refuses
   * right after accept (its client limit), or breaks the protocol right
   * after hello, is not hammered.
   */
  #lost(err, fallback, violation = false) {
    if (this.#state === 'closed') return
    clearTimeout(this.#helloTimer)
    this.#helloTimer = null
    const sock = this.#socket
    this.#socket = null
    if (sock) sock.destroy()
    this.#state = 'idle'
    if (!fallback) this.#offer = PROTOCOL_VERSION // the agent may come back newer
    if (this.#session && (performance.now() - this.#sessionStart >= SESSION_STABLE_MS || (this.#sessionGood && !violation))) {
      this.#attempts = 0
    }
    this.#session = null
    const sent = [...this.#sent.values()]
    this.#sent.clear()
    for (const req of sent) {
      // A subscribe is sent again in the next session; anything else may
      // have been done, or not: the caller decides.
      req.sent = false
      if (!req.retry) {
        this.#settle(req, new DbswapError('disconnected', `lost the connection to the agent at ${this.#path} before it answered`))
      }
    }
    this.emit('disconnect', err)
    const delay = fallback ? 0 : backoff(this.#attempts++, RECONNECT_FIRST_MS, RECONNECT_MAX_MS)
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null
      this.#connect()
    }, delay)
    if (this.#unref) this.#retryTimer.unref()
  }

  /** The agent broke the protocol: a clear error, and a new connection. */
  #violation(err) {
    const e = new DbswapError(ErrorCode.PROTOCOL, `bad message from the agent at ${this.#path}: ${err.message}; reconnecting`)
    // Before the hello is answered, the connection attempt failed: as for
    // a refusal, lastError says why (the pool's checkouts without a value
    // fail with it rather than wait).
    if (this.#state !== 'ready') this.#lastError = e
    if (this.listenerCount('error') > 0) this.emit('error', e)
    else {
      // An agent that does the same at every session: its log line once a
      // minute.
      const t = performance.now()
      if (err.message !== this.#violationLast || t - this.#violationSaid >= VIOLATION_REPEAT_MS) {
        const more = this.#violationsQuiet > 0 ? ` (${this.#violationsQuiet} more times since it was last said)` : ''
        this.#violationLast = err.message
        this.#violationSaid = t
        this.#violationsQuiet = 0
        this.#logLine('error', e.message + more)
      } else {
        this.#violationsQuiet++
      }
    }
    this.#lost(e, false, true)
  }

  #onData(sock, chunk) {
    if (sock !== this.#socket) return
    let bodies
    try {
      bodies = this.#reader.push(chunk)
    } catch (err) {
      this.#violation(err)
      return
    }
    for (const body of bodies) {
      let msg
      try {
        msg = decodeMessage(body)
      } catch (err) {
        this.#violation(err)
        return
      } finally {
        body.fill(0) // it may have held a conninfo
      }
      this.#handle(msg)
      if (sock !== this.#socket) return // the message ended the session
    }
  }

  #handle(msg) {
    const spec = MESSAGES[msg.type]
    if (this.#state === 'hello') {
      if (msg.type === 'hello') return this.#onHello(msg)
      if (msg.type === 'error') return this.#onRefused(msg)
      return this.#violation(new Error(`a ${msg.type} message came before the agent's hello`))
    }
    if (!spec) return // a type newer than this client
    if (spec.from === 'client') return this.#violation(new Error(`a ${msg.type} message, which only clients send`))
    switch (msg.type) {
      case 'hello':
        return this.#violation(new Error('a second hello'))
      case 'update':
        this.#sessionGood = true
        return this.#onUpdate(msg)
      case 'settings':
        return this.#onSettings(msg)
      default: {
        // ok, status, error: a reply, or an error that answers nothing
        const req = msg.id === undefined ? null : this.#sent.get(msg.id)
        if (req) this.#sessionGood = true
        if (req?.late) {
          this.#sent.delete(msg.id)
          return req.late(msg.type === 'error' ? msg : null)
        }
        if (req) return this.#onReply(req, msg)
        if (msg.type === 'error') {
          this.#emitError(new DbswapError(msg.code, `the agent at ${this.#path} says: ${msg.code}: ${msg.message}`))
        }
      }
    }
  }

  #onHello(msg) {
    if (msg.id !== this.#helloId) return this.#violation(new Error('the agent\'s hello does not answer ours'))
    if (msg.version !== this.#offer) {
      return this.#violation(new Error(`the agent answered hello with version ${msg.version}, not ${this.#offer}`))
    }
    if (msg.version >= 2 && msg.instance === undefined) return this.#violation(new Error('the agent\'s hello has no instance'))
    clearTimeout(this.#helloTimer)
    this.#helloTimer = null
    this.#session = { version: msg.version, instance: msg.instance ?? null, name: msg.name, pid: msg.pid }
    this.#state = 'ready'
    this.#sessionStart = performance.now()
    this.#sessionGood = false
    this.#lastError = null
    if (this.#warnedDown) this.#logLine('info', `connected to the agent at ${this.#path}`)
    this.#warnedDown = false
    this.emit('connect', { ...this.#session })
    if (this.#state !== 'ready') return // a listener closed the client
    for (const sub of this.#subs.values()) {
      if (!sub.active) continue
      // One subscribe per target: a target the agent no longer has fails
      // alone.  Not retried: the next session subscribes again anyway.
      this.#request({ type: 'subscribe', targets: [sub.target] }, { timeout: 0, retry: false }).catch((err) => {
        if (err.code !== 'disconnected' && err.code !== 'closed') {
          this.#emitError(new DbswapError(err.code, err.message, { target: sub.target, targets: [sub.target] }))
        }
      })
    }
    for (const req of this.#pending) if (!req.sent) this.#send(req)
  }

  /** An error answered our hello: a version to fall back from, or a
   * refusal (client limit, hello deadline). */
  #onRefused(msg) {
    if (msg.id === this.#helloId && msg.code === ErrorCode.VERSION && this.#offer > PROTOCOL_VERSION_MIN) {
      this.#logLine(
        'info',
        `the agent at ${this.#path} does not speak protocol version ${this.#offer}; using version ${this.#offer - 1} ` +
          '(its acks cannot be told from those for an earlier run of the agent)',
      )
      this.#offer--
      this.#lost(new DbswapError(msg.code, msg.message), true)
      return
    }
    const err = new DbswapError(msg.code, `the agent at ${this.#path} refused the connection: ${msg.code}: ${msg.message}`)
    this.#lastError = err
    this.#emitError(err)
    this.#lost(err, false)
  }

  #onUpdate(msg) {
    const session = this.#session
    if (session.version >= 2 && msg.instance === undefined) return this.#violation(new Error('an update without instance'))
    if (session.instance && msg.instance !== undefined && msg.instance !== session.instance) {
      return this.#violation(new Error('an update numbered by another agent instance'))
    }
    const sub = this.#subs.get(msg.target)
    if (!sub) return
    const instance = msg.instance ?? null
    const server = msg.server ?? 'primary'
    const standby = msg.standby ?? false
    // A reconnect repeats the value on purpose: the app must replace its
    // connections.  Only a new one does: the agent sends the current
    // generation again whenever the client subscribes again.
    const renew = msg.reason === 'reconnect' && !(msg.generation === sub.delivered && instance === sub.instance)
    const update = new Update(msg)
    if (
      sub.conninfo !== null &&
      sub.acked &&
      sub.conninfo === msg.conninfo &&
      sub.server === server &&
      sub.standby === standby &&
      !renew
    ) {
      // The value in use again: the agent restarted with new numbering,
      // or sent it again after a reconnection.  Ack it quietly, with the
      // new numbering.
      sub.delivered = msg.generation
      sub.instance = instance
      sub.last = update
      const sent = this.#sendAck(sub.target, msg.generation, instance)
      this.emit(kRenumber, update, sent)
      return
    }
    Object.assign(sub, { conninfo: msg.conninfo, server, standby, delivered: msg.generation, instance, acked: false, last: update })
    this.emit('update', update)
    for (const it of this.#iterators) it.push(update)
  }

  #onSettings(msg) {
    const sub = this.#subs.get(msg.target)
    if (!sub) return
    /** @type {Settings} */
    const settings = Object.freeze({
      target: msg.target,
      poolMax: msg.pool_max,
      poolMin: msg.pool_min,
      poolTimeoutMs: msg.pool_timeout_ms,
      poolIdleTimeoutMs: msg.pool_idle_timeout_ms,
    })
    sub.settings = settings
    this.emit('settings', settings)
  }

  /* ---- requests ---- */

  /** late: for a request that timed out after it was sent, called with
   * the agent's late answer (null for ok, else the error message), so
   * that what the agent did is known (a subscribe it accepted). */
  #request(msg, { timeout = this.#timeout, retry = false, late = null, info = null } = {}) {
    if (this.#state === 'closed') return Promise.reject(new DbswapError('closed', 'the client is closed'))
    return new Promise((resolve, reject) => {
      const req = { msg, id: 0, sent: false, resolve, reject, timer: null, retry, started: 0 }
      if (info) info.req = req
      if (timeout > 0) {
        req.timer = setTimeout(() => {
          const wasSent = req.sent
          this.#settle(req, new DbswapError('timeout', `the agent at ${this.#path} did not answer ${msg.type} within ${timeout} ms`))
          if (wasSent && late) this.#sent.set(req.id, { late, msg })
        }, timeout)
        if (this.#unref) req.timer.unref()
      }
      this.#pending.add(req)
      if (this.#state === 'ready') this.#send(req)
    })
  }

  #send(req) {
    req.id = ++this.#nextId
    req.sent = true
    this.#sent.set(req.id, req)
    req.started = performance.now()
    this.#write({ ...req.msg, id: req.id })
  }

  #settle(req, err, value) {
    if (!this.#pending.delete(req)) return
    if (req.sent) this.#sent.delete(req.id)
    clearTimeout(req.timer)
    if (err) req.reject(err)
    else req.resolve(value)
  }

  #onReply(req, msg) {
    if (msg.type === 'error') {
      // A version-1 agent has no ping: its unknown-type shows it alive.
      if (req.msg.type === 'ping' && msg.code === ErrorCode.UNKNOWN_TYPE) {
        return this.#settle(req, null, performance.now() - req.started)
      }
      const targets = req.msg.targets ?? (req.msg.target ? [req.msg.target] : undefined)
      return this.#settle(req, new DbswapError(msg.code, `the agent at ${this.#path} says: ${msg.code}: ${msg.message}`, { targets }))
    }
    const { type, id, ...reply } = msg
    if (req.msg.type === 'ping') return this.#settle(req, null, performance.now() - req.started)
    if (req.msg.type === 'status' && type !== 'status') {
      return this.#settle(req, new DbswapError(ErrorCode.PROTOCOL, `the agent at ${this.#path} answered status with ${type}`))
    }
    this.#settle(req, null, reply)
  }

  /**
   * Follows targets: the agent sends each one's current value (an 'update'
   * event), its settings, then the promise resolves.  All or nothing, as
   * the agent does: if any target is refused (unknown-target, forbidden,
   * limit) none is followed and the promise rejects with a DbswapError
   * whose `targets` names them.  Accepted targets are followed across
   * reconnections.  Before the agent is reachable the request waits (at
   * most `timeout`; a rejection means nothing was subscribed, except a
   * timeout after the subscribe was sent: the agent may still take it, so
   * the targets stay, accepted by a late ok, dropped by a late refusal).
   * @param {string | string[]} targets
   * @param {{ timeout?: number }} [options] 0 waits for ever
   * @returns {Promise<void>}
   */
  async subscribe(targets, options = {}) {
    const list = Array.isArray(targets) ? [...new Set(targets)] : [targets]
    list.forEach(checkTarget)
    if (list.length === 0) return
    const added = list.filter((t) => !this.#subs.has(t))
    if (this.#subs.size + added.length > SUBSCRIBE_MAX) {
      throw new DbswapError(ErrorCode.LIMIT, `a client may follow at most ${SUBSCRIBE_MAX} targets`, { targets: list })
    }
    for (const t of added) this.#subs.set(t, new Subscription(t))
    const drop = () => {
      for (const t of added) if (!this.#subs.get(t)?.active) this.#subs.delete(t)
    }
    // Timed out once sent: the agent may still subscribe the targets (a
    // slow agent), and would then wait for acks of their updates.  So they
    // stay (updates come as events), accepted by a late ok, dropped by a
    // late refusal.
    const late = (error) => {
      if (error) return drop()
      for (const t of list) {
        const sub = this.#subs.get(t)
        if (sub) sub.active = true
      }
    }
    const info = {}
    try {
      await this.#request({ type: 'subscribe', targets: list }, { timeout: options.timeout ?? this.#timeout, retry: true, late, info })
    } catch (err) {
      if (!(err.code === 'timeout' && info.req?.sent)) drop()
      throw err
    }
    for (const t of list) {
      const sub = this.#subs.get(t)
      if (sub) sub.active = true
    }
  }

  /**
   * Tells the agent the app now uses an update's generation.  Sent only if
   * the connected agent is the instance that numbered it and gave this
   * client that generation (or a newer one); otherwise nothing is sent:
   * the agent restarted since, and if its value is the one acked here, the
   * client acks it by itself when it comes.  While disconnected the ack is
   * remembered that way.
   * @param {{ target: string, generation: number | bigint, instance?: string | null }} update
   * @returns {boolean} whether an ack was sent now
   */
  ack(update) {
    const { target, generation } = update
    const instance = update.instance ?? null
    const sub = this.#subs.get(target)
    if (!sub) throw new DbswapError(ErrorCode.NOT_SUBSCRIBED, `not subscribed to ${target}`, { target })
    if (!generation || instance !== sub.instance || generation > sub.delivered) return false
    if (generation === sub.delivered) sub.acked = true
    if (!this.#agentIs(instance)) return false
    return this.#sendAck(target, generation, instance)
  }

  /**
   * Tells the agent the app cannot switch to an update's generation, and
   * why (shown in `dbswapctl status`).  The message is cut to 1024 bytes;
   * the update's connection string and password, if the message holds
   * them, are masked.  Sent only to the instance that numbered it.
   * @param {{ target: string, generation: number | bigint, instance?: string | null, conninfo?: string }} update
   * @param {string} message for people; never a password
   * @returns {boolean} whether a nack was sent
   */
  nack(update, message) {
    const { target, generation } = update
    const instance = update.instance ?? null
    if (!this.#subs.has(target)) throw new DbswapError(ErrorCode.NOT_SUBSCRIBED, `not subscribed to ${target}`, { target })
    if (!generation || !this.#agentIs(instance)) return false
    let text = String(message).replace(/\0/g, '?')
    if (update.conninfo) text = redact(text, update.conninfo)
    const msg = { type: 'nack', target, generation, message: truncateUtf8(text, NACK_MESSAGE_MAX) }
    if (instance) msg.instance = instance
    this.#write(msg)
    return true
  }

  #agentIs(instance) {
    return this.#state === 'ready' && this.#session.instance === instance
  }

  #sendAck(target, generation, instance) {
    if (this.#state !== 'ready') return false
    const msg = { type: 'ack', target, generation }
    if (instance) msg.instance = instance
    this.#write(msg)
    return true
  }

  /**
   * The agent's status (PROTOCOL.md, "status"): agent, targets, files,
   * keys.  Connection strings in it come masked by the agent.
   * @param {{ timeout?: number }} [options]
   */
  status(options = {}) {
    return this.#request({ type: 'status' }, options)
  }

  /** Asks the agent to re-read its env files (needs admin rights). */
  async reload(options = {}) {
    await this.#request({ type: 'reload' }, options)
  }

  /**
   * Asks the agent to publish target's value again (all targets without
   * one), so pools replace every connection.  Resolves with the new
   * generation for a single target, when one was published.
   * @param {string} [target]
   */
  async reconnect(target, options = {}) {
    const msg = { type: 'reconnect' }
    if (target !== undefined) {
      checkTarget(target)
      msg.target = target
    }
    const reply = await this.#request(msg, options)
    return { generation: reply.generation }
  }

  /** Switches target to its secondary now (a drill): { generation }.
   * options.force: even where it would split the brain (PROTOCOL.md). */
  async failover(target, options = {}) {
    return this.#switch('failover', target, options)
  }

  /** Switches target back to its primary now: { generation }.
   * options.force: even where it would split the brain (PROTOCOL.md). */
  async failback(target, options = {}) {
    return this.#switch('failback', target, options)
  }

  async #switch(type, target, options) {
    checkTarget(target)
    const msg = { type, target }
    if (options.force !== undefined) {
      if (typeof options.force !== 'boolean') throw new TypeError('options.force must be a boolean')
      if (options.force) msg.force = true
    }
    const reply = await this.#request(msg, options)
    return { generation: reply.generation }
  }

  /** Checks that the agent's loop answers; resolves with the round trip in
   * milliseconds. */
  ping(options = {}) {
    return this.#request({ type: 'ping' }, options)
  }

  /**
   * The updates of target (of every subscribed target without one) as an
   * async iterator: first the value in force, if one came already, then
   * each new one.  Subscribes to target if needed (a refusal ends the
   * iteration with its error).  Ends when the client is closed.
   * @param {string} [target]
   * @returns {AsyncIterableIterator<Update>}
   */
  updates(target) {
    if (target !== undefined) checkTarget(target)
    const it = new UpdateIterator(target, () => this.#iterators.delete(it))
    for (const sub of this.#subs.values()) if (sub.last && (target === undefined || sub.target === target)) it.push(sub.last)
    if (this.#state === 'closed') {
      it.end()
      return it
    }
    this.#iterators.add(it)
    if (target !== undefined && !this.#subs.has(target)) this.subscribe(target, { timeout: 0 }).catch((err) => it.fail(err))
    return it
  }

  /**
   * Closes the connection, rejects what waits for the agent (code
   * 'closed'), ends the iterators, and stops every timer.
   * @returns {Promise<void>} once the socket is closed
   */
  close() {
    if (this.#closing) return this.#closing
    this.#state = 'closed'
    clearTimeout(this.#retryTimer)
    clearImmediate(this.#retryTimer)
    this.#retryTimer = null
    clearTimeout(this.#helloTimer)
    this.#helloTimer = null
    for (const req of this.#pending) this.#settle(req, new DbswapError('closed', 'the client was closed'))
    for (const it of this.#iterators) it.end()
    this.#iterators.clear()
    const sock = this.#socket
    this.#socket = null
    this.#closing = new Promise((resolve) => {
      if (!sock || sock.destroyed) return resolve()
      sock.once('close', () => resolve())
      sock.destroy()
    })
    this.emit('close')
    return this.#closing
  }

  /** The pool's claim on a target: one pool per target per client, as
   * libdbswap (two would ack for each other). */
  [kClaim](target) {
    if (this.#claims.has(target)) throw new DbswapError('busy', `a pool already follows ${target} on this client`)
    this.#claims.add(target)
  }

  [kUnclaim](target) {
    this.#claims.delete(target)
  }

  [inspect.custom](depth, options, inspectFn = inspect) {
    const info = { socket: this.#path, name: this.#name, connected: this.connected, instance: this.instance, targets: [...this.#subs.keys()] }
    return `Client ${inspectFn(info, options)}`
  }
}

/** The async iterator behind Client.updates(). */
class UpdateIterator {
  #target
  #detach
  #queue = []
  #waiters = []
  #done = false
  #error = null

  constructor(target, detach) {
    this.#target = target
    this.#detach = detach
  }

  push(update) {
    if (this.#done || (this.#target !== undefined && update.target !== this.#target)) return
    const w = this.#waiters.shift()
    if (w) w.resolve({ value: update, done: false })
    else this.#queue.push(update)
  }

  end() {
    this.#finish(null)
  }

  fail(err) {
    this.#finish(err)
  }

  #finish(err) {
    if (this.#done) return
    this.#done = true
    this.#error = err
    this.#detach()
    for (const w of this.#waiters.splice(0)) {
      if (err && this.#error) {
        this.#error = null
        w.reject(err)
      } else {
        w.resolve({ value: undefined, done: true })
      }
    }
  }

  next() {
    if (this.#queue.length) return Promise.resolve({ value: this.#queue.shift(), done: false })
    if (this.#done) {
      const err = this.#error
      this.#error = null
      return err ? Promise.reject(err) : Promise.resolve({ value: undefined, done: true })
    }
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }))
  }

  return() {
    this.#queue = []
    this.end()
    return Promise.resolve({ value: undefined, done: true })
  }

  [Symbol.asyncIterator]() {
    return this
  }
}
