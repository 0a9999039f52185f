/*
 * One value's connections: a pg.Pool on one connection string, as the
 * dbswap pool keeps one per generation while it swaps (pool.js).
 *
 * pg connects to one host; a libpq value may name several.  The slot's
 * pg.Pool is given a Client class (a subclass of pg.Client, or of the app's
 * Client) whose every instance connects to the slot's host in use and
 * checks target_session_attrs; when a connection fails at the host (cannot
 * reach it, no TLS for sslmode=prefer, a session of the wrong kind), the
 * slot moves on to the next host and tries again, in order, as libpq does.
 * A failure the server reports (a wrong password) stops there, as in
 * libpq: other hosts would refuse the same credentials.  Unlike libpq, the
 * next connection starts at the host that took the last one, not at the
 * first, so that a dead first host does not cost its timeout every time.
 */
import { hostConfig, hostLabel, parseConninfo, translate } from './conninfo.js'
import { DbswapError } from './errors.js'
import { unrefTimer } from './util.js'

/** How long one attempt of a new value's first connections (warm()) may
 * take at a host when neither the value (connect_timeout) nor the app
 * (connectionTimeoutMillis) bounds it: a server that accepts and never
 * answers must not hold a swap, and its ack, for ever.  Long enough for a
 * loaded server over a slow link, as libpq users set connect_timeout. */
export const WARM_TIMEOUT_MS = 10000

const kHostFailure = Symbol('dbswap.hostFailure')
/** The slot a client is for, in the config pg.Pool gives its Client. */
const kSlot = Symbol('dbswap.slot')
const kNoTls = Symbol('dbswap.noTls')
const kParkedIn = Symbol('dbswap.parkedIn')
/** The 'error' listener of a parked client (this: the client): one
 * function for all, no closure per park. */
function onParkedError(err) {
  this[kParkedIn]?.unparkOnError(this, err)
}

/** pg's message when the server answers an SSLRequest with 'N'. */
const NO_SSL = 'The server does not support SSL connections'

/** SQLSTATE of authentication failures (28P01 invalid_password, 28000
 * invalid_authorization_specification): counted, so that a refused value
 * is not tried until the role is locked out. */
export function isAuthError(err) {
  return err?.code === '28P01' || err?.code === '28000'
}

/** A failure at the host, after which libpq tries the next one: no
 * answer, a broken connection, TLS refused, a session of the wrong kind,
 * or a server still starting (57P03).  Not an error the server sends for
 * a login it refuses. */
function markHostFailure(err) {
  const isServerError = typeof err?.severity === 'string'
  if (err && typeof err === 'object' && (!isServerError || err.code === '57P03')) {
    err[kHostFailure] = true
    if (err.message === NO_SSL) err[kNoTls] = true
  }
  return err
}

function flag(err, key) {
  return Boolean(err?.[key] || err?.cause?.[key])
}

/**
 * Checks a fresh connection against target_session_attrs; returns null
 * when it suits, else why not.
 * @param {{ query(text: string): Promise<{ rows: any[] }> }} client
 * @param {string} attrs any, read-write, read-only, primary, standby
 */
export async function checkSession(client, attrs) {
  if (attrs === 'read-write' || attrs === 'read-only') {
    const res = await client.query('SHOW transaction_read_only')
    const readOnly = res.rows[0]?.transaction_read_only === 'on'
    if (attrs === 'read-write' && readOnly) return 'the session is read-only'
    if (attrs === 'read-only' && !readOnly) return 'the session is not read-only'
    return null
  }
  if (attrs === 'primary' || attrs === 'standby') {
    const res = await client.query('SELECT pg_is_in_recovery() AS in_recovery')
    const inRecovery = res.rows[0]?.in_recovery === true
    if (attrs === 'primary' && inRecovery) return 'the server is in hot standby mode'
    if (attrs === 'standby' && !inRecovery) return 'the server is not in hot standby mode'
  }
  return null
}

/**
 * The connections of one value.
 */
export class Slot {
  static #classes = new WeakMap() // Base -> its DbswapClient
  #translation = null
  #hostIndex = 0
  #plain = new Set() // hosts that said they have no TLS (sslmode=prefer)
  #attempt = null // the host the next Client is for, set just before connect
  #retired = null
  #drainTimer = null
  #log
  #events

  /**
   * @param {object} o
   * @param {import('./client.js').Update} o.update the value
   * @param {boolean} o.fromEnv it came from the environment, not the agent
   * @param {object} o.options the pg.Pool options in force
   * @param {(config: object) => any} o.poolFactory makes the pg.Pool
   * @param {Function | null} o.Client the pg Client class to extend
   * @param {import('node:events').EventEmitter} o.events gets 'connect', 'remove', 'error'
   * @param {(level: string, message: string) => void} o.log
   */
  constructor({ update, fromEnv, options, poolFactory, Client, events, log }) {
    this.update = update
    this.fromEnv = fromEnv
    this.#log = log
    this.#events = events
    this.unavailable = update.server === 'none'
    this.acked = false
    this.warmed = false
    this.opened = false // a connection of the value opened (its ack waits for one)
    this.warming = false // warm() runs for a value switched to at once
    this.trying = 0 // checkouts opening a connection of it before one opened
    this.error = null // the value cannot be used here at all (translation)
    this.lastError = null // the last failure of a warm-up
    this.failures = 0
    this.connectFailures = 0 // failed connections in a row while current
    this.connectRetries = 0 // and the retries made since the first
    this.authFailures = 0
    this.givenUp = false
    this.retrying = false
    this.pending = new Set() // checkouts waiting on this slot's pg.Pool
    this.out = new Map() // client -> release record, for clients handed out
    this.all = new Set() // every client of this slot, connecting ones too
    this.inner = null
    this.sslWarning = null // the value's sslmode overrides the app's ssl: false
    if (this.unavailable) return
    try {
      this.#translation = translate(update.conninfo, {
        tls: typeof options.ssl === 'object' && options.ssl !== null ? options.ssl : undefined,
        env: options.ssl === false ? this.#noTlsDefault(update.conninfo) : undefined,
      })
    } catch (err) {
      this.error = err
      return
    }
    const { ssl, ...config } = options
    // With a Client class, every connection picks its host; a pool factory
    // that brings its own clients gets the first host's parameters.
    if (Client) {
      config.Client = Slot.#clientClass(Client)
      config[kSlot] = this
    }
    else Object.assign(config, hostConfig(this.#translation, this.#translation.hosts[0]))
    this.inner = poolFactory(config)
    this.inner.on('connect', (client) => events.emit('connect', client))
    this.inner.on('remove', (client) => events.emit('remove', client))
    this.inner.on('error', (err, client) => events.emit('error', err, client))
  }

  /**
   * `ssl: false` in the pool's options, as pg's: no TLS.  It stands for
   * the sslmode of a value that sets none (sslmode=disable, as
   * PGSSLMODE would; libpq's default is prefer); a value that sets its own
   * wins, since the operator chose it, and if that asks for TLS,
   * sslWarning says so.  Returns libpq's environment for translate().
   */
  #noTlsDefault(conninfo) {
    const params = parseConninfo(conninfo) // throws as translate() would
    const own = params.sslmode ?? (params.requiressl === '1' ? 'require' : undefined)
    if (own === undefined) return { ...process.env, PGSSLMODE: 'disable', PGREQUIRESSL: undefined }
    if (own !== 'disable' && own !== 'allow') {
      this.sslWarning = `the value's sslmode=${own} wins over the pool's ssl: false option: TLS is used`
    }
    return undefined
  }

  /** Whether this slot holds that value for that server. */
  is(update) {
    return (
      this.update.conninfo === update.conninfo &&
      this.update.server === update.server &&
      this.update.standby === update.standby
    )
  }

  get generation() {
    return this.update.generation
  }

  get hostCount() {
    return this.#translation ? this.#translation.hosts.length : 0
  }

  /** Takes a new update of the same value (renumbered by the agent). */
  renumber(update) {
    this.update = update
    this.acked = false
  }

  /** How many tries one connection gets: each host once, and for
   * prefer-standby a second round that takes any server. */
  #maxTries() {
    const t = this.#translation
    return t.hosts.length * (t.targetSessionAttrs === 'prefer-standby' ? 2 : 1)
  }

  /** The pg Client class of the slots on Base: each instance connects to
   * the host its slot chose for it and checks the session.  One class per
   * Base, not per slot: pg's code then sees one kind of client however
   * many values a long-lived process has gone through. */
  static #clientClass(Base) {
    let C = Slot.#classes.get(Base)
    if (C) return C
    C = class DbswapClient extends Base {
      #slot
      #label
      #attrs

      constructor({ [kSlot]: slot, ...config }) {
        if (!(slot instanceof Slot)) {
          throw new DbswapError('usage', 'the poolFactory dropped the symbol key of the config it was given: pass the config on whole (spread or Object.assign copy symbol keys), as the connections need it')
        }
        const t = slot.#translation
        const attempt = slot.#attempt ?? { index: slot.#hostIndex, tries: 0 }
        slot.#attempt = null
        const entry = t.hosts[attempt.index]
        const cfg = { ...config, ...hostConfig(t, entry, { plain: slot.#plain.has(attempt.index) }) }
        // A warm-up attempt is bounded at each host (libpq's connect_timeout
        // is per host) even when nothing else bounds it.
        if (attempt.boundMs > 0 && !(cfg.connectionTimeoutMillis > 0)) cfg.connectionTimeoutMillis = attempt.boundMs
        super(cfg)
        this.#slot = slot
        this.#label = hostLabel(entry)
        let attrs = t.targetSessionAttrs
        if (attrs === 'prefer-standby') attrs = attempt.tries < t.hosts.length ? 'standby' : 'any'
        this.#attrs = attrs
        slot.all.add(this)
        this.once('end', () => slot.all.delete(this))
      }

      connect(callback) {
        const done = this.#connectChecked()
        if (callback) {
          done.then(() => callback(), (err) => callback(err))
          return undefined
        }
        return done.then(() => this)
      }

      async #connectChecked() {
        try {
          await super.connect()
        } catch (err) {
          this.#slot.all.delete(this)
          throw markHostFailure(err)
        }
        if (this.#attrs === 'any') return
        let why
        try {
          why = await checkSession(this, this.#attrs)
        } catch (err) {
          await this.end().catch(() => {})
          throw markHostFailure(err)
        }
        if (why) {
          await this.end().catch(() => {})
          const wanted = this.#slot.#translation.targetSessionAttrs
          const err = new DbswapError('session', `${this.#label}: ${why} (target_session_attrs=${wanted})`)
          throw markHostFailure(err)
        }
      }
    }
    Slot.#classes.set(Base, C)
    return C
  }

  /**
   * Gets a connection from this slot's pg.Pool, trying the next host
   * when one fails at the host.
   * @param {(err: Error | null, client?: any) => void} cb
   */
  connect(cb, boundMs = 0) {
    if (this.unavailable) return cb(new DbswapError('unavailable', 'no database server is available'))
    if (this.error) return cb(this.error)
    this.#connectFrom(cb, 0, -1, boundMs)
  }

  /** plainTried: the host this connection already tried again without
   * TLS (-1: none), so that it goes back at most once per host; boundMs:
   * a bound for each host's attempt where none is set (0: none). */
  #connectFrom(cb, tries, plainTried = -1, boundMs = 0) {
    const index = this.#hostIndex
    this.#attempt = { index, tries, boundMs }
    this.inner.connect((err, client) => {
      this.#attempt = null
      if (!err) return cb(null, client)
      // The server said "no TLS" to this attempt, so it asked for TLS:
      // whether the host is marked plain already does not matter.  Many
      // connections opened at once all ask before the first answer marks
      // it (a new value's first connections, a failover's checkouts), and
      // each must go again without TLS, not only the first.
      if (flag(err, kNoTls) && this.#translation.sslMode === 'prefer' && plainTried !== index) {
        this.#plain.add(index)
        return this.#connectFrom(cb, tries, index, boundMs)
      }
      if (flag(err, kHostFailure) && tries + 1 < this.#maxTries()) {
        if (this.#hostIndex === index) this.#hostIndex = (index + 1) % this.#translation.hosts.length
        return this.#connectFrom(cb, tries + 1, -1, boundMs)
      }
      cb(err)
    })
  }

  /**
   * The bound of one warm-up attempt at a host, ms: the value's
   * connect_timeout (libpq's rules: seconds, 2 at least, per host), else
   * the pool's connectionTimeoutMillis, else WARM_TIMEOUT_MS.
   */
  get warmBoundMs() {
    const fromValue = this.#translation?.config.connectionTimeoutMillis
    if (fromValue > 0) return fromValue
    const fromPool = this.inner?.options?.connectionTimeoutMillis
    return fromPool > 0 ? fromPool : WARM_TIMEOUT_MS
  }

  /**
   * Opens n connections at once and gives them back to the slot's
   * pg.Pool, idle: make-before-break.  Each attempt is bounded at each
   * host (warmBoundMs), so that one hung attempt cannot hold the swap.
   * Resolves once at least one opened and the others have settled, or
   * warmBoundMs after the first opened, whichever comes first (a late one
   * still joins the pool's idle connections); rejects with the first
   * error when none opened.
   */
  warm(n) {
    if (this.unavailable) return Promise.resolve()
    const bound = this.warmBoundMs
    // A backstop in case a connection ignores the bound (a pool factory
    // with clients of its own): every host of the value at its bound.
    const backstop = bound * this.#maxTries() + 1000
    return new Promise((resolve, reject) => {
      const opened = []
      let settled = 0
      let firstError = null
      let finished = false
      let capTimer = null
      const finish = () => {
        if (finished) return
        finished = true
        clearTimeout(capTimer)
        for (const c of opened) c.release()
        if (opened.length > 0) {
          this.warmed = this.opened = true
          resolve()
        } else {
          reject(firstError)
        }
      }
      const settle = (err) => {
        if (err && !firstError) firstError = err
        if (++settled === n) finish()
      }
      for (let i = 0; i < n; i++) {
        let over = false
        const timer = unrefTimer(() => {
          over = true
          settle(new DbswapError('timeout', `no connection within ${backstop} ms`))
        }, backstop)
        this.connect((err, client) => {
          clearTimeout(timer)
          if (over || finished) {
            if (client) client.release()
            return
          }
          if (!err) {
            opened.push(client)
            if (opened.length === 1 && settled + 1 < n) capTimer = unrefTimer(finish, bound)
          }
          settle(err)
        }, bound)
      }
    })
  }

  /**
   * Wraps a client being handed out: its release() goes through the slot,
   * so that a client destroyed by the slot can still be released by the
   * app (and the slot knows which are out).
   * @param {any} client
   * @param {(err: unknown, client: any) => void} onRelease
   */
  checkout(client, onRelease, innerRelease = client.release) {
    const record = { innerRelease, destroyed: false, released: false }
    this.out.set(client, record)
    client.release = (err) => {
      if (record.released) throw new Error('Release called on client which has already been released to the pool.')
      record.released = true
      this.out.delete(client)
      if (!record.destroyed) {
        if (!err && this.#mayPark(client)) this.#park(client, record.innerRelease)
        else record.innerRelease(err)
      }
      onRelease(err, client, this)
    }
  }

  /*
   * Parking: a client released in good order is kept here, not given back
   * to the slot's pg.Pool at once, until the microtasks are done.  An
   * app that checks out again right away (the next query of an async
   * loop, which runs in a microtask of the last one's result) takes it
   * without pg.Pool's round (its connect() serves an idle client only
   * after a process.nextTick); then the parked clients go back to the
   * pg.Pool, whose idle timeout, maxUses and lifetime rules apply as
   * usual.  No I/O callback runs before they go back, so none of them can
   * get a socket error while it has no listener.
   */
  #parked = [] // client, its pg.Pool release, client, ...
  #flushQueued = false

  /** A client released in good order may be parked: not while pg.Pool
   * counts its uses or ages (each return must go through it), has
   * checkouts queued, or the slot is retired. */
  #mayPark(client) {
    const o = this.inner?.options
    return (
      !this.#retired &&
      o !== undefined &&
      o.maxUses === Infinity &&
      !o.maxLifetimeSeconds &&
      this.inner.waitingCount === 0 &&
      client._queryable !== false &&
      !client._ending
    )
  }

  #park(client, innerRelease) {
    client[kParkedIn] = this
    client.once('error', onParkedError)
    this.#parked.push(client, innerRelease)
    if (!this.#flushQueued) {
      this.#flushQueued = true
      // After every microtask queued until then and since, whatever
      // the release ran in (an I/O callback, a microtask, a tick): an
      // app's next query is usually some awaits away.
      queueMicrotask(() => process.nextTick(() => this.#flushParked()))
    }
  }

  #flushParked() {
    this.#flushQueued = false
    const parked = this.#parked
    if (parked.length === 0) return
    this.#parked = []
    for (let i = 0; i < parked.length; i += 2) {
      parked[i][kParkedIn] = null
      parked[i].removeListener('error', onParkedError)
      parked[i + 1]()
    }
  }

  /** A parked client got an error: out of the pool, as pg-pool's idle
   * listener does, and the pool's 'error' event. */
  unparkOnError(client, err) {
    client[kParkedIn] = null
    for (let i = 0; i < this.#parked.length; i += 2) {
      if (this.#parked[i] !== client) continue
      const innerRelease = this.#parked[i + 1]
      this.#parked.splice(i, 2)
      err.client = client
      innerRelease(err)
      this.#events.emit('error', err, client)
      return
    }
  }

  /** A parked client and its pg.Pool release function, or null. */
  takeParked() {
    while (this.#parked.length > 0) {
      const innerRelease = this.#parked.pop()
      const client = this.#parked.pop()
      client[kParkedIn] = null
      client.removeListener('error', onParkedError)
      if (client._queryable !== false && !client._ending) return { client, innerRelease }
      innerRelease(new Error('not queryable'))
    }
    return null
  }

  /** Destroys every connection of the slot now: those handed out (their
   * query fails; release() is then a no-op for the pg.Pool), idle and
   * connecting ones.  The socket is destroyed, not ended: the server may
   * be dead or hung. */
  destroyAll(why) {
    this.#flushParked()
    for (const [client, record] of this.out) {
      if (record.destroyed) continue
      record.destroyed = true
      record.innerRelease(new DbswapError('closed', why))
    }
    for (const client of this.all) client.connection?.stream?.destroy?.()
  }

  /** Hands back the checkouts waiting on this slot (to go elsewhere). */
  takePending() {
    const reqs = [...this.pending]
    this.pending.clear()
    for (const req of reqs) req.slot = null
    return reqs
  }

  /**
   * Stops this slot: its pg.Pool ends (idle connections close now, those
   * handed out when released).
   * @param {'drain' | 'destroy' | 'end'} mode drain: destroy what is still
   *   out after drainMs; destroy: destroy everything now; end: wait as
   *   long as it takes (pool.end())
   * @param {number} drainMs
   * @returns {Promise<void>} once no connection of the slot is left
   */
  retire(mode, drainMs) {
    this.#flushParked()
    if (!this.#retired) {
      this.#retired = this.inner ? this.inner.end().catch(() => {}) : Promise.resolve()
      this.#retired.then(() => clearTimeout(this.#drainTimer))
    }
    if (mode === 'destroy') {
      this.destroyAll('the server of this connection is down (failover); it was closed')
    } else if (mode === 'drain' && !this.#drainTimer && this.inner) {
      this.#drainTimer = unrefTimer(() => {
        const n = this.out.size
        if (n > 0) {
          this.#log('warn', `${this.update.target}: ${n} connection(s) on an old value still in use after the ${drainMs} ms drain deadline; destroyed`)
        }
        this.destroyAll(`the connection's value was replaced and the ${drainMs} ms drain deadline passed; it was closed`)
      }, drainMs)
    }
    return this.#retired
  }

  /** Applies new pool settings to the live pg.Pool (pg-pool reads its
   * options on each use). */
  setOptions(options) {
    if (this.inner?.options) Object.assign(this.inner.options, options)
  }

  get totalCount() {
    return this.inner?.totalCount ?? 0
  }

  get idleCount() {
    return (this.inner?.idleCount ?? 0) + this.#parked.length / 2
  }

  get waitingCount() {
    return this.inner?.waitingCount ?? 0
  }

  get expiredCount() {
    return this.inner?.expiredCount ?? 0
  }
}
