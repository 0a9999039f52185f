/*
 * The dbswap pool: pg.Pool's API, following a target of the agent.
 *
 * Values: `current` is what checkouts get, one Slot (a pg.Pool on one
 * connection string).  A new value from the agent becomes `next`: its slot
 * opens `min` connections (at least one) without handing them out, each
 * attempt bounded (Slot.warm: the value's connect_timeout, else
 * connectionTimeoutMillis, else WARM_TIMEOUT_MS), then, once one opened
 * and the others settled or hit that bound, the pool switches: `next` becomes `current`, the old slot drains (idle
 * connections close now, busy ones when released, and those still out at
 * the drain deadline are destroyed).  When no connection of an older value
 * is left, the pool acks the generation, so `dbswapctl set --wait` returns
 * only when the old password is out of use.
 *
 * A checkout that needs a new connection of the current value and cannot
 * open one waits, as libdbswap's acquire does: between the ALTER ROLE of a
 * rotation and the switch to its new value, or between a server's crash
 * and the failover, the current value no longer connects, and a moment
 * later a new value comes.  It is served by that new value, by a
 * connection released meanwhile, or by a retry (one checkout tries, with
 * backoff, the others wait for it), and fails with the connection's error
 * only at connectionTimeoutMillis (CONNECT_WAIT_MS when that is 0).
 *
 * A failover (reason failover or unavailable) breaks before it makes: the
 * old server is dead or hung, so the new value is current at once and the
 * old connections are destroyed (a query on one fails once; none after).
 * Its generation is acked only once one of its connections opened; until
 * then one connection at a time tries it, a failure is nacked, and after
 * AUTH_TRIES authentication failures checkouts fail at once.
 * While the agent reports no server (server "none"), checkouts fail at
 * once; the next value is switched to at once.  A reconnect replaces every
 * connection as a rotation does, though the value is the same.
 *
 * A value that does not connect from here is nacked (the error, masked),
 * retried with backoff while the old one keeps serving, and given up
 * after 5 authentication failures so that the role is never locked out.
 * Without an agent the pool uses process.env[target], and says so once;
 * an agent that appears later takes over.
 */
import { EventEmitter } from 'node:events'
import { createRequire } from 'node:module'
import { inspect } from 'node:util'

import { Client, Update, kClaim, kRenumber, kUnclaim } from './client.js'
import { redact } from './conninfo.js'
import { DbswapError } from './errors.js'
import { NACK_MESSAGE_MAX } from './protocol.js'
import { Slot, isAuthError } from './slot.js'

export { WARM_TIMEOUT_MS } from './slot.js'
import { backoff, defaultLog, truncateUtf8, unrefTimer } from './util.js'

/** Busy connections of an old value are destroyed after this. */
export const DRAIN_TIMEOUT_MS = 30000
/** Retry of a value that fails to connect here: 100 ms doubling to 30 s. */
export const RETRY_FIRST_MS = 100
export const RETRY_MAX_MS = 30000
/** Retry of the current value's connections after a failure: 20 ms
 * doubling (a new value after a rotation comes within tens of ms). */
const CONNECT_RETRY_FIRST_MS = 20
/** How long a checkout waits when its new connection of the current value
 * fails, unless connectionTimeoutMillis says otherwise: libdbswap's
 * default acquire timeout.  Long enough for the agent's next value after
 * a rotation or a crash (half a second), short enough that an app whose
 * database is down hears of it. */
export const CONNECT_WAIT_MS = 5000
/** The same protocol violation by the agent is logged once in this. */
const VIOLATION_REPEAT_MS = 60000
/** Authentication failures before a value is given up. */
export const AUTH_TRIES = 5
/** How long to wait for an agent before using the environment's value:
 * long enough for a local agent to answer, short for a developer. */
export const AGENT_GRACE_MS = 200

/** pg.Pool options the agent's settings can set, with their defaults:
 * pg's, except min (one warm connection, as libdbswap). */
const SETTINGS = [
  ['max', 'poolMax', 10],
  ['min', 'poolMin', 1],
  ['connectionTimeoutMillis', 'poolTimeoutMs', 0],
  ['idleTimeoutMillis', 'poolIdleTimeoutMs', 10000],
]
/** Options of this pool, not passed to pg. */
const OWN = ['target', 'socket', 'name', 'client', 'requestTimeout', 'poolFactory', 'Client', 'drainTimeoutMillis', 'log']
/** Connection parameters come from the agent's value, never from options. */
const FROM_VALUE = ['connectionString', 'host', 'port', 'user', 'password', 'database']

const require = createRequire(import.meta.url)

/** pg.Pool when pg is installed, so that code which checks
 * `pool instanceof pg.Pool` takes this pool for one (Prisma's PrismaPg
 * does, and takes anything else for a pool config); else EventEmitter.
 * Every method of pg.Pool's API is this class's own: the state pg.Pool's
 * constructor makes is left unused. */
const Base = (() => {
  try {
    return require('pg').Pool
  } catch {
    return EventEmitter
  }
})()

/**
 * A pool of PostgreSQL connections for one target, with pg.Pool's API.
 * See createPool().
 */
export class Pool extends Base {
  #target
  #client
  #ownsClient
  #log
  #poolFactory
  #Client
  #passthrough
  #explicit = {}
  #settings = null
  #drainMs
  #current = null
  #next = null
  #retiring = new Set()
  #waiting = []
  /** end() was called (a field, as pg.Pool's). */
  ending = false
  /** end() finished. */
  ended = false
  #graceOver = false
  #graceTimer = null
  #retryTimer = null
  #connectRetryTimer = null
  #warnedNoAgent = false
  #warnedSsl = false
  #subscribeError = null
  #subscribing = false
  #listeners = []
  /** The agent's DATABASE_POOL_TIMEOUT is 0: checkouts never wait for a
   * connection to be freed (see #effective). */
  #noWait = false
  #violationLine = null // the last protocol violation logged, and when
  #violationAt = 0

  /** @param {import('../index.js').PoolOptions} [options] */
  constructor(options = {}) {
    super()
    this.#target = options.target ?? 'DATABASE_URL'
    this.#drainMs = options.drainTimeoutMillis ?? DRAIN_TIMEOUT_MS
    this.#log = options.log ?? defaultLog
    this.#poolFactory = options.poolFactory ?? ((config) => new (require('pg').Pool)(config))
    // Without a pool factory of its own, the app gets pg's Pool and Client;
    // with one, the Client class only if it names one.
    this.#Client = options.Client ?? (options.poolFactory ? null : require('pg').Client)
    this.#passthrough = {}
    const ignored = []
    for (const [key, value] of Object.entries(options)) {
      if (OWN.includes(key)) continue
      if (FROM_VALUE.includes(key)) ignored.push(key)
      else if (SETTINGS.some(([opt]) => opt === key)) {
        if (value !== undefined) this.#explicit[key] = value
      } else this.#passthrough[key] = value
    }
    if (options.ssl === true) {
      this.#logLine('warn', `${this.#target}: option ssl: true ignored: whether TLS is used, and how the server is verified, come from the value's sslmode (default prefer)`)
    }
    if (ignored.length) {
      this.#logLine('warn', `${this.#target}: options ${ignored.join(', ')} ignored: the connection parameters come from the agent's value`)
    }
    /** The pg.Pool options in force (the agent's settings applied), as
     * pg.Pool's `options`. */
    this.options = this.#effective()

    this.#ownsClient = !options.client
    this.#client =
      options.client ??
      new Client({
        socket: options.socket,
        name: options.name,
        requestTimeout: options.requestTimeout,
        log: this.#log,
        unref: Boolean(options.allowExitOnIdle),
      })
    this.#client[kClaim](this.#target)
    this.#listen('update', (u) => this.#onUpdate(u))
    this.#listen(kRenumber, (u, sent) => this.#onRenumber(u, sent))
    this.#listen('settings', (s) => this.#onSettings(s))
    this.#listen('error', (err) => this.emit('error', err))
    this.#listen('disconnect', () => {
      // An agent that did not answer subscribe is gone: no longer a reason
      // to fail checkouts (no agent is another case, below).
      if (this.#subscribeError?.code === 'timeout') this.#subscribeError = null
      this.#considerEnv()
    })
    this.#listen('connect', () => this.#onSession())
    this.#subscribe()
    // A shared client may have the target already: its last value and
    // settings are this pool's too (the settings now, so that `options`
    // shows them from the start).
    const settings = this.#client.settings(this.#target)
    if (settings) this.#onSettings(settings)
    const known = this.#client.lastUpdate(this.#target)
    if (known) queueMicrotask(() => this.#onUpdate(known))
    this.#graceTimer = unrefTimer(() => {
      this.#graceOver = true
      this.#considerEnv()
    }, AGENT_GRACE_MS)
  }

  /* ---- pg.Pool's API ---- */

  /** The target followed, e.g. DATABASE_URL. */
  get target() {
    return this.#target
  }

  /** The generation checkouts get now (0 for the environment's value),
   * or null before any value. */
  get generation() {
    return this.#current ? this.#current.generation : null
  }

  /** The dbswap client the pool follows the agent with. */
  get client() {
    return this.#client
  }

  /** Connections open or opening, of every value (during a swap, old and
   * new). */
  get totalCount() {
    let n = 0
    for (const slot of this.#slots()) n += slot.totalCount
    return n
  }

  /** Idle connections of the current value. */
  get idleCount() {
    return this.#current?.idleCount ?? 0
  }

  /** Checkouts waiting: for a connection, or for a first value. */
  get waitingCount() {
    return this.#waiting.length + (this.#current?.waitingCount ?? 0)
  }

  /** Connections of the current value past maxLifetimeSeconds. */
  get expiredCount() {
    return this.#current?.expiredCount ?? 0
  }

  /**
   * Checks out a client on the current value; give it back with
   * client.release() (release(err) or release(true) to destroy it).
   * @param {(err?: Error, client?: any, done?: (release?: any) => void) => void} [callback]
   * @returns {Promise<any> | undefined} the client, without a callback
   */
  connect(callback) {
    const result = new Promise((resolve, reject) => {
      this.#dispatch({ resolve, reject, done: false, slot: null, timer: null, started: performance.now(), lastError: null })
    })
    if (!callback) return result
    result.then(
      (client) => callback(undefined, client, client.release),
      (err) => callback(err, undefined, () => {}),
    )
    return undefined
  }

  /**
   * Runs one query on a client checked out and released for it.
   * @param {string | object} text SQL, or a query config object
   * @param {unknown[] | Function} [values]
   * @param {Function} [callback] (err, result)
   */
  query(text, values, callback) {
    if (typeof text === 'function') {
      const err = new Error('Passing a function as the first parameter to pool.query is not supported')
      setImmediate(() => text(err))
      return undefined
    }
    if (typeof values === 'function') {
      callback = values
      values = undefined
    }
    const result = new Promise((resolve, reject) => {
      // The checkout without connect()'s promise: one promise per query,
      // as pg.Pool's query(), not two and a turn of the microtask queue.
      const onClient = (client) => {
        let released = false
        const onError = (err) => {
          if (released) return
          released = true
          client.release(err)
          reject(err)
        }
        client.once('error', onError)
        try {
          client.query(text, values, (err, res) => {
            client.removeListener('error', onError)
            if (released) return
            released = true
            // Settled before the release: an app's next query (a microtask
            // of this result) then finds the client parked (slot.js).
            if (err) reject(err)
            else resolve(res)
            client.release(err)
          })
        } catch (err) {
          client.removeListener('error', onError)
          released = true
          client.release(err)
          reject(err)
        }
      }
      this.#dispatch({ resolve: onClient, reject, done: false, slot: null, timer: null, started: performance.now(), lastError: null })
    })
    if (!callback) return result
    result.then(
      (res) => callback(undefined, res),
      (err) => callback(err),
    )
    return undefined
  }

  /**
   * Ends the pool: checkouts fail from now on, idle connections close,
   * those in use close when released (end() waits for them, as pg.Pool's),
   * and the dbswap client closes if the pool created it.  Leaves no timer.
   * @param {(err?: Error) => void} [callback]
   */
  end(callback) {
    if (this.ending) {
      const err = new Error('Called end on pool more than once')
      if (callback) return callback(err)
      return Promise.reject(err)
    }
    this.ending = true
    clearTimeout(this.#graceTimer)
    clearTimeout(this.#retryTimer)
    clearTimeout(this.#connectRetryTimer)
    for (const [event, fn] of this.#listeners) this.#client.off(event, fn)
    this.#client[kUnclaim](this.#target)
    const closed = new Error('Cannot use a pool after calling end on the pool')
    this.#failWaiting(closed)
    const slots = [...this.#slots()]
    for (const slot of slots) for (const req of slot.takePending()) this.#fail(req, closed)
    // The app's connections are waited for, as pg.Pool's end() does; a new
    // value's warm-up, and values given up, are the pool's own: destroyed
    // (one may hang on a server that never answers).
    const done = Promise.all(slots.map((slot) => slot.retire(slot === this.#current || (this.#retiring.has(slot) && slot.out.size > 0) ? 'end' : 'destroy', this.#drainMs)))
      .then(() => (this.#ownsClient ? this.#client.close() : undefined))
      .then(() => {
        this.#current = this.#next = null
        this.#retiring.clear()
        this.ended = true
      })
    if (!callback) return done
    done.then(() => callback(), callback)
    return undefined
  }

  /* ---- checkouts ---- */

  /** A client given back (slot.checkout()), made once: not a closure per
   * checkout. */
  #onRelease = (err, client, slot) => {
    if (this.listenerCount('release') > 0) this.emit('release', err, client)
    // A connection back in the current value: one that waits takes it.
    if (!err && slot === this.#current && this.#waiting.length > 0) this.#dispatch(this.#waiting.shift())
  }

  #dispatch(req) {
    if (req.done) return
    if (this.ending) return this.#fail(req, new Error('Cannot use a pool after calling end on the pool'))
    const slot = this.#current
    if (!slot) {
      const err = this.#noValueError()
      if (err) return this.#fail(req, err)
      this.#waiting.push(req)
      const ms = this.options.connectionTimeoutMillis
      if (ms > 0 && !req.timer) {
        req.timer = setTimeout(() => {
          this.#waiting = this.#waiting.filter((r) => r !== req)
          this.#fail(req, new Error('timeout exceeded when trying to connect'))
        }, ms)
      }
      return
    }
    if (slot.unavailable) return this.#fail(req, this.#unavailableError(slot))
    if (slot.givenUp) return this.#fail(req, slot.lastError)
    if (this.#noWait && slot.idleCount === 0 && slot.totalCount >= this.options.max) {
      // Every connection is in use and none may be opened: no wait.
      return this.#fail(req, new Error('timeout exceeded when trying to connect'))
    }
    if (!slot.opened && (slot.warming || slot.trying > 0 || this.#connectRetryTimer)) {
      // A value that has not connected yet (a failover's) is tried by one
      // connection at a time: were it refused, the others would be
      // refused too, and count towards locking the role out.
      return this.#wait(req, slot)
    }
    clearTimeout(req.timer)
    const parked = slot.takeParked()
    if (parked) return this.#handOut(slot, req, parked.client, parked.innerRelease)
    req.slot = slot
    slot.pending.add(req)
    const first = !slot.opened
    if (first) slot.trying++
    slot.connect((err, client) => {
      slot.pending.delete(req)
      if (first) slot.trying--
      if (req.slot !== slot || req.done) {
        // Moved to a newer value meanwhile, or given up: not wanted.
        if (client) client.release()
        return
      }
      if (err) return this.#connectFailed(slot, req, err)
      if (!slot.opened) this.#opened(slot)
      if (slot.connectFailures > 0) {
        // It connects again: what waited for this can go now.
        slot.connectFailures = slot.connectRetries = 0
        clearTimeout(this.#connectRetryTimer)
        this.#connectRetryTimer = null
        if (slot === this.#current) for (const r of this.#waiting.splice(0)) this.#dispatch(r)
      }
      this.#handOut(slot, req, client)
    })
  }

  #handOut(slot, req, client, innerRelease) {
    req.done = true
    req.slot = null
    slot.checkout(client, this.#onRelease, innerRelease)
    if (this.listenerCount('acquire') > 0) this.emit('acquire', client)
    req.resolve(client)
  }

  /**
   * A checkout's connection of slot could not be opened.  For the current
   * value, while the checkout has time left, it waits (see the top of the
   * file): the next value, a released connection, or the retry, which one
   * waiting checkout makes after a backoff.  Anything else fails now.
   */
  #connectFailed(slot, req, err) {
    req.slot = null
    const limit = this.options.connectionTimeoutMillis > 0 ? this.options.connectionTimeoutMillis : CONNECT_WAIT_MS
    const left = this.#noWait ? 0 : req.started + limit - performance.now()
    if (slot === this.#current && !slot.opened && isAuthError(err) && ++slot.authFailures >= AUTH_TRIES) {
      // A value switched to at once (a failover) that never connected
      // here: every checkout would try it again, and lock the role out.
      this.#giveUpCurrent(slot, err)
      return this.#fail(req, err)
    }
    if (slot !== this.#current || slot.error || slot.givenUp || this.ending || left <= 0) return this.#fail(req, err)
    req.lastError = err
    this.#currentFailed(slot, err)
    this.#wait(req, slot)
  }

  /** A connection of the current value failed: one waiting checkout
   * tries again after a backoff. */
  #currentFailed(slot, err) {
    slot.lastError = err
    slot.connectFailures++
    if (slot.connectFailures === 1) {
      const limit = this.options.connectionTimeoutMillis > 0 ? this.options.connectionTimeoutMillis : CONNECT_WAIT_MS
      this.#logLine('warn', `${this.#target}: cannot open a connection with ${this.#describe(slot)}: ${this.#errorLine(slot, err)}; checkouts wait up to ${limit} ms for a new value or a free connection`)
    }
    if (!this.#connectRetryTimer) {
      // Backing off per retry, not per failed checkout: eight checkouts
      // failing together are one failure of the value.
      const delay = backoff(slot.connectRetries++, CONNECT_RETRY_FIRST_MS, RETRY_MAX_MS)
      this.#connectRetryTimer = unrefTimer(() => {
        this.#connectRetryTimer = null
        if (slot === this.#current && !this.ending && this.#waiting.length > 0) this.#dispatch(this.#waiting.shift())
      }, delay)
    }
  }

  /** A checkout waits for the current value (see the top of the file),
   * at most its time left; then fails with the last connection error. */
  #wait(req, slot) {
    const limit = this.options.connectionTimeoutMillis > 0 ? this.options.connectionTimeoutMillis : CONNECT_WAIT_MS
    const left = this.#noWait ? 0 : req.started + limit - performance.now()
    const err = () => req.lastError ?? slot.lastError ?? new Error('timeout exceeded when trying to connect')
    if (left <= 0) return this.#fail(req, err())
    clearTimeout(req.timer)
    this.#waiting.push(req)
    req.timer = setTimeout(() => {
      this.#waiting = this.#waiting.filter((r) => r !== req)
      this.#fail(req, err())
    }, left)
  }

  /** The first connection of slot opened: its generation may be acked,
   * and the checkouts waiting for it go. */
  #opened(slot) {
    slot.opened = true
    if (slot !== this.#current) return
    this.#maybeAck()
    for (const r of this.#waiting.splice(0)) this.#dispatch(r)
  }

  #fail(req, err) {
    if (req.done) return
    req.done = true
    clearTimeout(req.timer)
    req.reject(this.#masked(err))
  }

  /** err, its message, stack and string properties cleaned of every
   * value's secrets: pg's connect errors quote the host (a socket path, an
   * address), which may hold any part of a value.  The same object, so
   * that its class and code stay what the app checks.  Its cause too (a
   * no-value error's is pg's error, which util.inspect() prints). */
  #masked(err, depth = 0) {
    if (!(err instanceof Error) || depth > 4) return err
    for (const slot of this.#slots()) {
      const conninfo = slot.update.conninfo
      for (const key of Object.getOwnPropertyNames(err)) {
        const v = err[key]
        if (typeof v !== 'string') continue
        const clean = redact(v, conninfo)
        if (clean !== v) {
          try { err[key] = clean } catch { /* read-only: left */ }
        }
      }
    }
    if (err.cause !== undefined) this.#masked(err.cause, depth + 1)
    return err
  }

  #failWaiting(err) {
    for (const req of this.#waiting.splice(0)) this.#fail(req, err)
  }

  /** Why a checkout with no current value cannot wait for one, or null
   * when one may come. */
  #noValueError() {
    if (this.#subscribeError) return this.#subscribeError
    const next = this.#next
    if (next?.lastError) {
      const state = next.givenUp ? 'given up' : 'retrying'
      return new DbswapError('no-value', `${this.#target}: ${this.#describe(next)} does not connect from here (${state}): ${this.#errorLine(next, next.lastError)}`, {
        cause: next.lastError,
        target: this.#target,
      })
    }
    if (!next && this.#graceOver && !this.#client.connected && this.#client.lastError && !process.env[this.#target]) {
      const e = this.#client.lastError
      // An agent that answered, but not so as to be used (it refused us,
      // or broke the protocol), is not "no agent".
      const where = e instanceof DbswapError
        ? `the agent at ${this.#client.socketPath} cannot be used (${e.code}: ${e.message})`
        : `no agent at ${this.#client.socketPath} (${e.code ?? e.message})`
      return new DbswapError('no-value', `no value for ${this.#target}: ${where} and $${this.#target} is not set`, { target: this.#target, cause: e })
    }
    return null
  }

  #unavailableError(slot) {
    return new DbswapError(
      'unavailable',
      `${this.#target}: no database server is available (the agent reports the primary and the secondary down, generation ${slot.generation}); failing at once until one is back`,
      { target: this.#target },
    )
  }

  /* ---- the subscription ---- */

  /**
   * Subscribes to the target.  A refusal (unknown-target, forbidden, ...)
   * fails the checkouts waiting for a first value, and those that come
   * later at once, until the agent accepts the target: it is asked again
   * at each new session (the client reconnected, the agent restarted,
   * perhaps with the target now), and the refusal is forgotten once it
   * accepts.
   *
   * Each try waits the client's requestTimeout: an agent that answered
   * hello but not subscribe (hung, or its loop stuck) fails the checkouts
   * waiting for a first value with code 'timeout', as a refusal does, and
   * is asked again at once.  A try that timed out while no agent was
   * connected is only made again (no agent is #considerEnv's).
   */
  #subscribe() {
    if (this.ending || this.#subscribing) return
    this.#subscribing = true
    this.#client.subscribe(this.#target).then(
      () => {
        this.#subscribing = false
        this.#subscribeError = null
      },
      (err) => {
        this.#subscribing = false
        if (this.ending || err.code === 'closed') return
        if (err.code === 'timeout') {
          if (this.#client.connected) this.#subscribeTimedOut(err)
          this.#subscribe()
          return
        }
        this.#subscribeError = err
        this.emit('error', err)
        this.#failWaiting(err)
      },
    )
  }

  #subscribeTimedOut(err) {
    const first = this.#subscribeError?.code !== 'timeout'
    this.#subscribeError = new DbswapError(
      'timeout',
      `${this.#target}: the agent at ${this.#client.socketPath} answered hello but did not answer subscribe in time (${err.message}); asking again`,
      { cause: err, target: this.#target, targets: [this.#target] },
    )
    if (first) this.emit('error', this.#subscribeError)
    this.#failWaiting(this.#subscribeError)
  }

  /** A new session with the agent: a refused target is asked again. */
  #onSession() {
    if (this.#subscribeError) this.#subscribe()
  }

  /* ---- values ---- */

  *#slots() {
    if (this.#current) yield this.#current
    if (this.#next) yield this.#next
    yield* this.#retiring
  }

  #newSlot(update, fromEnv) {
    const slot = new Slot({
      update,
      fromEnv,
      options: this.options,
      poolFactory: this.#poolFactory,
      Client: this.#Client,
      events: this,
      log: (level, message) => this.#logLine(level, message),
    })
    if (slot.sslWarning && !this.#warnedSsl) {
      this.#warnedSsl = true
      this.#logLine('warn', `${this.#target}: ${slot.sslWarning}`)
    }
    return slot
  }

  #describe(slot) {
    return slot.fromEnv ? `$${this.#target} from the environment` : `generation ${slot.generation}`
  }

  /** One line for an error about a value, with no secret of it. */
  #errorLine(slot, err) {
    const text = String(err?.message ?? err).replace(/\s+/g, ' ').trim()
    return redact(text, slot.update.conninfo)
  }

  #onUpdate(update) {
    if (update.target !== this.#target || this.ending) return
    const reconnect = update.reason === 'reconnect'
    const urgent = this.#isUrgent(update)
    const current = this.#current
    // The generation already in use or being opened, sent again (the
    // client subscribed again, or reconnected before it was acked): it was
    // taken already.  A reconnect's must not swap a second time.
    const same = (slot) => slot && !slot.fromEnv && slot.generation === update.generation && slot.update.instance === update.instance
    if (same(current) || same(this.#next)) {
      this.#maybeAck()
      return
    }
    if (!reconnect && current?.is(update)) {
      // The value in use, renumbered (an agent restart): keep the
      // connections, ack the new number of the new instance.
      current.renumber(update)
      if (current.fromEnv) {
        current.fromEnv = false
        this.#logLine('info', `${this.#target}: the agent is here; it has the same value as the environment`)
      }
      if (this.#next) this.#abandonNext()
      this.#maybeAck()
      return
    }
    if (!reconnect && this.#next?.is(update)) {
      // The value being tried, renumbered: its retries go on as they were.
      this.#next.renumber(update)
    } else {
      if (this.#next) this.#abandonNext()
      if (current?.fromEnv) {
        this.#logLine('info', `${this.#target}: the agent is here; switching from the environment's value to generation ${update.generation}`)
      }
      this.#next = this.#newSlot(update, false)
      if (!urgent) this.#warmNext()
    }
    if (urgent) this.#switch(this.#next, 'destroy')
  }

  /**
   * The client acked the value in use under a new number by itself (the
   * agent restarted, or the client reconnected): the pool's update, its
   * generation and what it acks from now on are the new numbering's.
   */
  #onRenumber(update, sent) {
    if (update.target !== this.#target || this.ending) return
    const current = this.#current
    if (!current?.is(update) || current.fromEnv) {
      // Not the value the pool uses (the app acked it on a shared
      // client): a value as any other.
      this.#onUpdate(update)
      return
    }
    current.renumber(update)
    current.acked = true
    if (this.#next) this.#abandonNext()
    this.emit('ack', { target: this.#target, generation: current.generation, instance: update.instance, sent })
  }

  /** Whether to switch at once: the old server is dead or hung (with
   * connections to break), or no server is available before or after. */
  #isUrgent(update) {
    const current = this.#current
    if (update.server === 'none' || current?.unavailable) return true
    return Boolean(current) && (update.reason === 'failover' || update.reason === 'unavailable')
  }

  #abandonNext() {
    const slot = this.#next
    this.#next = null
    clearTimeout(this.#retryTimer)
    this.#retire(slot, 'destroy')
  }

  /** Opens the next value's first connections, then switches to it. */
  async #warmNext() {
    const slot = this.#next
    slot.retrying = false
    try {
      await slot.warm(this.#warmCount())
    } catch (err) {
      if (this.#next === slot && !this.ending) this.#warmFailed(slot, err)
      return
    }
    if (this.#next === slot && !this.ending) this.#switch(slot, 'drain')
  }

  #warmCount() {
    return Math.max(1, Math.min(this.options.min, this.options.max))
  }

  #warmFailed(slot, err) {
    slot.failures++
    slot.lastError = err
    const line = this.#errorLine(slot, err)
    const auth = isAuthError(err)
    if (auth) slot.authFailures++
    const giveUp = slot.error !== null || (auth && slot.authFailures >= AUTH_TRIES)
    if (giveUp) {
      slot.givenUp = true
      this.#logLine(
        'error',
        slot.error
          ? `${this.#target}: ${this.#describe(slot)} cannot be used here: ${line}; staying on the current value`
          : `${this.#target}: ${this.#describe(slot)} refused ${slot.authFailures} times (${line}); not trying it again, so as not to lock the role out; staying on the current value`,
      )
    } else {
      const delay = backoff(slot.failures - 1, RETRY_FIRST_MS, RETRY_MAX_MS)
      this.#logLine('warn', `${this.#target}: ${this.#describe(slot)} does not connect from here: ${line}; staying on the current value, retry in ${delay} ms`)
      slot.retrying = true
      this.#retryTimer = unrefTimer(() => {
        if (this.#next === slot && !this.ending) this.#warmNext()
      }, delay)
      // The password may have changed again since: ask the agent.
      if (auth && !slot.fromEnv) this.#client.subscribe(this.#target, { timeout: 0 }).catch(() => {})
    }
    this.#nack(slot, line, !giveUp)
    if (!this.#current) this.#failWaiting(this.#noValueError())
  }

  /**
   * Makes slot the current value.  mode 'drain': the old one drains
   * (make-before-break); 'destroy': its connections are destroyed now.
   */
  #switch(slot, mode) {
    const old = this.#current
    if (this.#next === slot) {
      this.#next = null
      clearTimeout(this.#retryTimer)
    }
    this.#current = slot
    clearTimeout(this.#connectRetryTimer)
    this.#connectRetryTimer = null
    if (old) this.#retire(old, mode)
    // A failover: the older values still draining were on the dead server
    // too (or the ack would wait for their drain deadline).
    if (mode === 'destroy') for (const slot of this.#retiring) if (slot !== old) slot.retire('destroy', this.#drainMs)
    const busy = old ? old.out.size : 0
    const what = `${this.#describe(slot)}${slot.update.standby ? ' (a read-only standby)' : ''}`
    if (slot.unavailable) {
      this.#logLine('error', `${this.#target}: no database server is available (the agent reports the primary and the secondary down); checkouts fail at once until one is back`)
    } else if (old?.unavailable) {
      this.#logLine('info', `${this.#target}: a database server is back: the ${slot.update.server} (${what}, ${slot.update.reason}); opening connections`)
    } else if (mode === 'destroy' && old) {
      this.#logLine('warn', `${this.#target}: ${slot.update.reason} to the ${slot.update.server} (${what}): ${busy} busy connection(s) on the old server destroyed`)
    } else if (old) {
      this.#logLine('info', `${this.#target}: switched to ${what}; ${busy} busy connection(s) on the old value close when released`)
    }
    this.emit('swap', {
      target: this.#target,
      generation: slot.generation,
      instance: slot.update.instance,
      reason: slot.update.reason,
      server: slot.update.server,
      standby: slot.update.standby,
      previousGeneration: old ? old.generation : null,
      immediate: mode === 'destroy',
      fromEnvironment: slot.fromEnv,
    })
    if (!slot.warmed && !slot.unavailable) {
      // Switched to at once: open connections in the background.
      slot.warming = true
      slot.warm(this.#warmCount()).then(
        () => {
          slot.warming = false
          if (!this.ending) this.#opened(slot)
        },
        (err) => {
          slot.warming = false
          if (this.#current === slot && !this.ending) this.#currentWarmFailed(slot, err)
        },
      )
    }
    for (const req of this.#waiting.splice(0)) this.#dispatch(req)
    this.#maybeAck()
  }

  /**
   * The first connections of a value switched to at once (a failover)
   * failed: the agent hears of it as of any value that does not connect
   * from here (a nack, the same text), and the generation is not acked
   * before one of its connections opens.  Checkouts go on trying it, up
   * to AUTH_TRIES authentication failures (#connectFailed).
   */
  #currentWarmFailed(slot, err) {
    slot.failures++
    slot.lastError = err
    const line = this.#errorLine(slot, err)
    if (isAuthError(err) && !slot.opened && ++slot.authFailures >= AUTH_TRIES) {
      this.#giveUpCurrent(slot, err)
      return
    }
    this.#logLine('warn', `${this.#target}: cannot open a connection with ${this.#describe(slot)}: ${line}`)
    this.#nack(slot, line, !slot.givenUp)
    if (slot.opened) return
    // The checkouts that waited for it: one tries again after a backoff.
    this.#currentFailed(slot, err)
  }

  /** The current value never connected and was refused AUTH_TRIES times:
   * checkouts fail at once with its error until a new value comes. */
  #giveUpCurrent(slot, err) {
    if (slot.givenUp) return
    slot.givenUp = true
    slot.lastError = err
    const line = this.#errorLine(slot, err)
    this.#logLine('error', `${this.#target}: ${this.#describe(slot)} refused ${slot.authFailures} times (${line}); not trying it again, so as not to lock the role out; checkouts fail at once until a new value comes`)
    this.#nack(slot, line, false)
    clearTimeout(this.#connectRetryTimer)
    this.#connectRetryTimer = null
    this.#failWaiting(err)
  }

  /** Nacks slot's generation (for the environment's value, only the
   * event), and emits 'nack'. */
  #nack(slot, line, willRetry) {
    let message = null
    let sent = false
    if (!slot.fromEnv) {
      message = truncateUtf8(`cannot connect with generation ${slot.generation} from pid ${process.pid}: ${line}`, NACK_MESSAGE_MAX)
      sent = this.#client.nack(slot.update, message)
    }
    this.emit('nack', {
      target: this.#target,
      generation: slot.generation,
      instance: slot.update.instance,
      message: message ?? line,
      attempts: slot.failures,
      willRetry,
      // The environment's value has no agent to tell: the event is the
      // app's only news of it.
      fromEnvironment: slot.fromEnv,
      sent,
    })
  }

  #retire(slot, mode) {
    this.#retiring.add(slot)
    // Checkouts waiting on it go to the current value.
    for (const req of slot.takePending()) this.#dispatch(req)
    slot.retire(mode, this.#drainMs).then(() => {
      this.#retiring.delete(slot)
      this.#maybeAck()
    })
  }

  /** Acks the current generation once no connection of an older value is
   * left. */
  #maybeAck() {
    const slot = this.#current
    if (!slot || slot.fromEnv || slot.acked || this.#retiring.size > 0 || this.ending) return
    // Not before one connection of it opened (a failover's value is
    // current before any): a value that does not connect here is nacked.
    if (!slot.opened && !slot.unavailable) return
    slot.acked = true
    let sent = false
    try {
      sent = this.#client.ack(slot.update)
    } catch (err) {
      this.emit('error', err)
    }
    this.emit('ack', { target: this.#target, generation: slot.generation, instance: slot.update.instance, sent })
  }

  /** No agent: the environment's value, once it is clear none is there. */
  #considerEnv() {
    if (!this.#graceOver || this.#current || this.#next || this.ending) return
    if (this.#client.connected || !this.#client.lastError) return
    const value = process.env[this.#target]
    if (!value) {
      this.#failWaiting(this.#noValueError())
      return
    }
    if (!this.#warnedNoAgent) {
      const why = this.#client.lastError.code ?? this.#client.lastError.message
      this.#logLine('info', `no agent at ${this.#client.socketPath} (${why}); using $${this.#target} from the environment`)
      this.#warnedNoAgent = true
    }
    const update = new Update({ target: this.#target, generation: 0, conninfo: value, reason: 'environment' })
    this.#next = this.#newSlot(update, true)
    this.#warmNext()
  }

  #onSettings(settings) {
    if (settings.target !== this.#target || this.ending) return
    this.#settings = settings
    this.options = this.#effective()
    const live = Object.fromEntries(SETTINGS.map(([opt]) => [opt, this.options[opt]]))
    for (const slot of this.#slots()) slot.setOptions(live)
  }

  /** The options in force: the app's, else the agent's settings, else the
   * defaults (as libdbswap: explicit options win). */
  #effective() {
    const o = { ...this.#passthrough }
    for (const [opt, key, def] of SETTINGS) o[opt] = this.#explicit[opt] ?? this.#settings?.[key] ?? def
    o.min = Math.min(o.min, o.max)
    // The agent's 0 is libdbswap's, not pg's "never": DATABASE_POOL_TIMEOUT=0
    // is no wait (pg's connectionTimeoutMillis stays 0, which also leaves
    // new connections unbounded; #dispatch fails a checkout at once when
    // nothing is free), DATABASE_POOL_IDLE_TIMEOUT=0 closes idle
    // connections beyond min at once (1 ms: pg's 0 keeps them).
    this.#noWait = this.#explicit.connectionTimeoutMillis === undefined && this.#settings?.poolTimeoutMs === 0
    if (this.#explicit.idleTimeoutMillis === undefined && this.#settings?.poolIdleTimeoutMs === 0) o.idleTimeoutMillis = 1
    return o
  }

  /* ---- events and logs ---- */

  #listen(event, fn) {
    this.#client.on(event, fn)
    this.#listeners.push([event, fn])
  }

  #logLine(level, message) {
    try {
      this.#log(level, message)
    } catch {
      // a log function that throws must not break the pool
    }
  }

  /** 'error' goes to listeners, or to the log when there is none: the pool
   * has handled it already (an idle client's error from a slot's pg.Pool,
   * an error from the agent), so it must not crash the process. */
  emit(event, ...args) {
    if (event === 'error' && this.listenerCount('error') === 0) {
      // pg's text (an idle client's error comes from a slot's pg.Pool and
      // may quote what was sent): any value's secrets masked.
      let line = `${this.#target}: ${args[0]?.message ?? args[0]}`
      for (const slot of this.#slots()) line = redact(line, slot.update.conninfo)
      if (args[0]?.code === 'protocol') {
        // An agent that breaks the protocol at every session: once a minute.
        const t = performance.now()
        if (line === this.#violationLine && t - this.#violationAt < VIOLATION_REPEAT_MS) return false
        this.#violationLine = line
        this.#violationAt = t
      }
      this.#logLine('error', line)
      return false
    }
    // The app's listener gets pg's error cleaned the same way.
    if (event === 'error') this.#masked(args[0])
    return super.emit(event, ...args)
  }

  [inspect.custom](depth, options, inspectFn = inspect) {
    const info = {
      target: this.#target,
      generation: this.generation,
      totalCount: this.totalCount,
      idleCount: this.idleCount,
      waitingCount: this.waitingCount,
      ending: this.ending,
    }
    return `DbswapPool ${inspectFn(info, options)}`
  }
}

/**
 * Creates a pool for a target (default DATABASE_URL).  Takes pg.Pool's
 * options too (max, min, idleTimeoutMillis, connectionTimeoutMillis, ssl,
 * ...); the connection parameters come from the agent's value.
 * @param {import('../index.js').PoolOptions} [options]
 * @returns {Pool}
 */
export function createPool(options) {
  return new Pool(options)
}
