// Types of the dbswap package, written by hand to match index.js and src/.
// The pool's types build on pg's: install @types/pg beside pg.

import { EventEmitter } from 'node:events';
import type { ConnectionOptions } from 'node:tls';
import type * as pg from 'pg';

/* ---- errors ---- */

/** Codes the agent sends in an `error` message (ipc/PROTOCOL.md). */
export type AgentErrorCode =
  | 'protocol'
  | 'version'
  | 'hello-required'
  | 'unknown-type'
  | 'unknown-target'
  | 'not-subscribed'
  | 'limit'
  | 'refused'
  | 'forbidden'
  | 'internal';

/** Codes this package adds. */
export type PackageErrorCode =
  /** A request got no answer in time. */
  | 'timeout'
  /** The connection to the agent was lost before the answer came. */
  | 'disconnected'
  /** The client was closed (or, for a connection destroyed by the pool, its
   * value was replaced or its server declared down). */
  | 'closed'
  /** The agent reports no database server available (server "none"). */
  | 'unavailable'
  /** The pool has no value for its target, and none is coming. */
  | 'no-value'
  /** A connection string that cannot be used (the message never quotes it). */
  | 'conninfo'
  /** A server of the wrong kind for target_session_attrs. */
  | 'session'
  /** A second pool for a target on one Client. */
  | 'busy'
  /** The package used in a way it cannot work: a poolFactory that drops
   * the symbol keys of the config it is given. */
  | 'usage';

export type ErrorCodeString = AgentErrorCode | PackageErrorCode;

/**
 * The one error class of the package: every failure dbswap itself decides.
 * Errors of the database driver (pg) pass through as pg made them.
 * The message never holds a password.
 */
export class DbswapError extends Error {
  constructor(code: string, message: string, extra?: { cause?: unknown; target?: string; targets?: string[] });
  readonly name: 'DbswapError';
  /** One of ErrorCodeString; a newer agent may send codes not listed. */
  code: ErrorCodeString | (string & {});
  /** The target the error is about, when it is about one. */
  target?: string;
  /** The targets of the refused request (subscribe). */
  targets?: string[];
}

/** The agent's error codes by name. */
export const ErrorCode: Readonly<{
  PROTOCOL: 'protocol';
  VERSION: 'version';
  HELLO_REQUIRED: 'hello-required';
  UNKNOWN_TYPE: 'unknown-type';
  UNKNOWN_TARGET: 'unknown-target';
  NOT_SUBSCRIBED: 'not-subscribed';
  LIMIT: 'limit';
  REFUSED: 'refused';
  FORBIDDEN: 'forbidden';
  INTERNAL: 'internal';
}>;

/* ---- constants ---- */

/** The protocol version offered first: 2. */
export const PROTOCOL_VERSION: 2;
/** The oldest version the client falls back to: 1. */
export const PROTOCOL_VERSION_MIN: 1;
/** The socket used when neither an option nor $DBSWAP_SOCKET names one. */
export const DEFAULT_SOCKET: '/run/dbswap/dbswap.sock';
/** Largest frame body, in bytes: 65536. */
export const FRAME_MAX: 65536;
/** First reconnection delay, ms (20); doubles up to RECONNECT_MAX_MS. */
export const RECONNECT_FIRST_MS: 20;
/** Longest reconnection delay, ms (2000). */
export const RECONNECT_MAX_MS: 2000;
/** Default time a request waits for its answer, ms (5000). */
export const REQUEST_TIMEOUT_MS: 5000;
/** Default drain deadline of a pool, ms (30000). */
export const DRAIN_TIMEOUT_MS: 30000;
/** Authentication failures after which a pool gives a value up (5). */
export const AUTH_TRIES: 5;
/** The bound of one attempt at a host of a new value's first connections,
 * ms (10000), when neither the value's connect_timeout nor
 * connectionTimeoutMillis sets one. */
export const WARM_TIMEOUT_MS: 10000;
/** How long a checkout whose new connection of the current value fails
 * waits for a new value, a released connection or a retry, ms (5000),
 * when connectionTimeoutMillis is 0. */
export const CONNECT_WAIT_MS: 5000;

/* ---- the protocol client ---- */

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
/** Where log lines go; no line holds a password. */
export type LogFunction = (level: LogLevel, message: string) => void;

/** Why a value changed (the update's `reason`). */
export type UpdateReason = 'rotation' | 'failover' | 'failback' | 'manual' | 'unavailable' | 'reconnect' | 'promoted' | 'demoted';
/** Which server a value is for; `none`: no server is available. */
export type ServerRole = 'primary' | 'secondary' | 'none';

/** A generation number: a number, or a bigint beyond 2^53 - 1. */
export type Generation = number | bigint;

/**
 * A value the agent published for a target.  `conninfo` is a secret;
 * toString(), toJSON() and util.inspect() show it masked.  Frozen.
 */
export class Update {
  constructor(msg: {
    target: string;
    generation: Generation;
    conninfo: string;
    instance?: string | null;
    reason?: string;
    server?: string;
    standby?: boolean;
  });
  readonly target: string;
  readonly generation: Generation;
  /** The agent run that numbered the generation (null from a version-1 agent). */
  readonly instance: string | null;
  /** Absent on the wire means 'rotation'. */
  readonly reason: UpdateReason | (string & {});
  /** Absent on the wire means 'primary'. */
  readonly server: ServerRole | (string & {});
  /** The server is a read-only standby. */
  readonly standby: boolean;
  /** The libpq connection string (URI or key=value): a secret. */
  readonly conninfo: string;
  /** The connection string with its passwords masked. */
  readonly maskedConninfo: string;
  toJSON(): {
    target: string;
    generation: number | string;
    instance: string | null;
    reason: string;
    server: string;
    standby: boolean;
    conninfo: string;
  };
  toString(): string;
}

/** A target's pool settings from the agent's env files; a field left out
 * is not set. */
export interface Settings {
  readonly target: string;
  /** DATABASE_POOL_MAX */
  readonly poolMax?: number;
  /** DATABASE_POOL_MIN */
  readonly poolMin?: number;
  /** DATABASE_POOL_TIMEOUT, ms */
  readonly poolTimeoutMs?: number;
  /** DATABASE_POOL_IDLE_TIMEOUT, ms */
  readonly poolIdleTimeoutMs?: number;
}

/** The 'connect' event's session: the agent's hello. */
export interface SessionInfo {
  version: number;
  /** null from a version-1 agent */
  instance: string | null;
  /** e.g. "dbswapd 0.1.0" */
  name: string;
  pid: number;
}

export interface ClientOptions {
  /** The agent's socket; default $DBSWAP_SOCKET, else /run/dbswap/dbswap.sock. */
  socket?: string;
  /** Shown in the agent's status; default the script's file name. */
  name?: string;
  /** ms a request waits for its answer by default (5000), and a connection
   * attempt for the agent's hello (an agent that takes the connection and
   * does not answer is a failed attempt, and another follows); 0 waits for
   * ever. */
  requestTimeout?: number;
  /** Where log lines go; default stderr ("dbswap: ..."), debug lines left out. */
  log?: LogFunction;
  /** The socket and timers do not keep the process alive. */
  unref?: boolean;
}

export interface RequestOptions {
  /** ms to wait for the answer; default the client's requestTimeout; 0 waits for ever. */
  timeout?: number;
}

export interface SwitchOptions extends RequestOptions {
  /** Switch even where it would split the brain (a replicated pair: to a
   * server on an older timeline, or to a writable one while the other is
   * writable too); without it such a switch is refused. */
  force?: boolean;
}

/** The reply of failover, failback and reconnect. */
export interface SwitchResult {
  /** The generation the request published; undefined when it published none. */
  generation: Generation | undefined;
}

/** A status reply (ipc/PROTOCOL.md, "status"); nil fields are null.
 * `truncated`: the agent cut the reply to fit a frame (texts shortened,
 * lists cut).  What this client may not see comes as a `redacted` entry:
 * a target it may not follow, and files and keys unless it may follow
 * every target or is an admin. */
export interface StatusReply {
  agent?: StatusAgent;
  targets?: Array<StatusTarget | StatusTargetRedacted>;
  files?: Array<StatusFile | StatusFileRedacted>;
  keys?: Array<StatusKey | StatusKeyRedacted>;
  truncated?: boolean;
}

/** A target this client may not follow: its name and state only. */
export interface StatusTargetRedacted {
  name: string;
  generation: Generation;
  valid: boolean;
  state: StatusTarget['state'];
  redacted: true;
}

/** A file, to a client that may not see its errors and identity. */
export interface StatusFileRedacted {
  path: string;
  state: StatusFile['state'];
  redacted: true;
}

/** A key, to a client that may not see its id and error. */
export interface StatusKeyRedacted {
  path: string;
  redacted: true;
}

export interface StatusAgent {
  version: string;
  instance: string;
  pid: number;
  uptime_ms: number;
  clients: number;
  failover_settings: {
    health_check_interval_ms: number;
    connection_timeout_ms: number;
    failure_threshold: number;
    primary_retry_interval_ms: number;
  };
  failover_settings_error: string | null;
  state_dir: string | null;
  state_error: string | null;
  [field: string]: unknown;
}

export interface StatusTarget {
  redacted?: false;
  name: string;
  generation: Generation;
  valid: boolean;
  /** Masked; null for a target this client may not subscribe to. */
  conninfo: string | null;
  source: 'files' | 'saved' | null;
  state: 'ok' | 'validating' | 'failed' | 'unset';
  error: string | null;
  changed: number | null;
  subscribers: number;
  acked: number;
  stale_acks: number;
  lagging: Array<{
    pid: number;
    uid: number;
    name: string | null;
    acked: Generation;
    nacked: Generation;
    error: string | null;
  }>;
  /** Up to 16 subscribers, acked or not (older agents: absent). */
  subscribed?: Array<{
    pid: number;
    uid: number;
    name: string | null;
    acked: Generation;
  }>;
  attempts: number;
  /** Attempts at a value refused by authentication before gave_up. */
  attempts_max?: number;
  gave_up: boolean;
  value_seq: number;
  published_seq: number;
  settings: {
    pool_max: number | null;
    pool_min: number | null;
    pool_timeout_ms: number | null;
    pool_idle_timeout_ms: number | null;
  };
  settings_error: string | null;
  failover: {
    enabled: boolean;
    hint: string | null;
    current: ServerRole;
    standby: boolean;
    failover_available: boolean;
    held: boolean;
    failure_count: number;
    failovers: number;
    last_failover: string | null;
    /** Unix seconds; last_failover is the same time as RFC 3339 text. */
    last_failover_unix?: number | null;
    seconds_since_failover: number | null;
    last_error: string | null;
    [field: string]: unknown;
  };
  servers: StatusServer[];
  [field: string]: unknown;
}

export interface StatusServer {
  role: 'primary' | 'secondary';
  var: string;
  conninfo: string | null;
  source: 'files' | 'saved' | null;
  state: string;
  error: string | null;
  attempts: number;
  attempts_max?: number;
  gave_up: boolean;
  value_seq: number;
  accepted_seq: number;
  health: 'up' | 'suspect' | 'down' | 'recovering' | 'rejected' | 'unknown' | 'off';
  failures: number;
  checks: number;
  /** How long the last good check took (rtt_us: the same, older name). */
  check_us?: number | null;
  rtt_us: number | null;
  in_recovery: boolean | null;
  last_check: number | null;
  down_since: number | null;
  health_error: string | null;
  flaps: number;
  hold_ms: number;
  [field: string]: unknown;
}

export interface StatusFile {
  redacted?: false;
  path: string;
  state: 'ok' | 'error' | 'missing' | 'writing';
  error: string | null;
  entries: number;
  encryption: 'none' | 'file' | 'values' | null;
  identity: string | null;
  seq: number;
  [field: string]: unknown;
}

export interface StatusKey {
  redacted?: false;
  path: string;
  id: string | null;
  error: string | null;
  [field: string]: unknown;
}

export interface ClientEvents {
  /** A session started (the agent answered hello). */
  connect: [info: SessionInfo];
  /** A connection attempt failed or a session ended; the client reconnects by itself. */
  disconnect: [error: Error];
  /** A new value for a subscribed target. */
  update: [update: Update];
  /** A target's pool settings changed. */
  settings: [settings: Settings];
  /** An error the agent sent that answers no request, or a protocol
   * violation by the agent.  Without a listener it goes to the log (the
   * same violation once a minute at most). */
  error: [error: DbswapError];
  /** close() was called. */
  close: [];
}

/**
 * A connection to dbswapd: subscriptions, updates, acks and requests,
 * reconnecting with backoff.  Connects from the next tick.
 */
export class Client extends EventEmitter {
  constructor(options?: ClientOptions);

  /** The socket path in use. */
  readonly socketPath: string;
  /** True while a session with the agent is up. */
  readonly connected: boolean;
  /** The connected agent's instance (null when not connected, or version 1). */
  readonly instance: string | null;
  /** The session's protocol version, null when not connected. */
  readonly version: number | null;
  /** Why the last connection attempt failed (null once connected). */
  readonly lastError: Error | null;

  /** The last update received for target, or null. */
  lastUpdate(target: string): Update | null;
  /** The pool settings in force for target, or null if none were sent. */
  settings(target: string): Settings | null;

  /**
   * Follows targets: each one's current value comes as an 'update', then
   * the promise resolves.  All or nothing; rejects with a DbswapError
   * (unknown-target, forbidden, limit, timeout, closed) naming the targets.
   * Waits for an agent at most `timeout` (default the client's requestTimeout).
   * A timeout after the subscribe was sent keeps the targets: the agent may
   * still take them (their updates come as events; a late refusal drops
   * them).
   */
  subscribe(targets: string | string[], options?: RequestOptions): Promise<void>;
  /** Tells the agent the app now uses this generation; whether an ack was
   * sent now.  Throws DbswapError 'not-subscribed'. */
  ack(update: { target: string; generation: Generation; instance?: string | null }): boolean;
  /** Tells the agent the app cannot switch to this generation, and why
   * (cut to 1024 bytes; the update's conninfo and passwords in it masked);
   * whether a nack was sent.  Throws DbswapError 'not-subscribed'. */
  nack(update: { target: string; generation: Generation; instance?: string | null; conninfo?: string }, message: string): boolean;

  /** The agent's status. */
  status(options?: RequestOptions): Promise<StatusReply>;
  /** Asks the agent to re-read its env files (admin). */
  reload(options?: RequestOptions): Promise<void>;
  /** Asks the agent to publish the value again so pools replace every
   * connection (admin); all targets without one. */
  reconnect(target?: string, options?: RequestOptions): Promise<SwitchResult>;
  /** Switches target to its secondary now (admin). */
  failover(target: string, options?: SwitchOptions): Promise<SwitchResult>;
  /** Switches target back to its primary now (admin). */
  failback(target: string, options?: SwitchOptions): Promise<SwitchResult>;
  /** Round trip to the agent's loop, in milliseconds. */
  ping(options?: RequestOptions): Promise<number>;

  /**
   * The updates of target (of every subscribed target without one): the
   * value in force if one came already, then each new one.  Subscribes to
   * target if needed; a refusal ends the iteration with its error.  Ends
   * when the client is closed.
   */
  updates(target?: string): AsyncIterableIterator<Update>;

  /** Closes the connection; what waits for the agent rejects ('closed'). */
  close(): Promise<void>;

  on<K extends keyof ClientEvents>(event: K, listener: (...args: ClientEvents[K]) => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
  once<K extends keyof ClientEvents>(event: K, listener: (...args: ClientEvents[K]) => void): this;
  once(event: string | symbol, listener: (...args: any[]) => void): this;
  off<K extends keyof ClientEvents>(event: K, listener: (...args: ClientEvents[K]) => void): this;
  off(event: string | symbol, listener: (...args: any[]) => void): this;
  emit<K extends keyof ClientEvents>(event: K, ...args: ClientEvents[K]): boolean;
  emit(event: string | symbol, ...args: any[]): boolean;
}

/* ---- the pool ---- */

/**
 * createPool()'s options: pg.Pool's, except the connection parameters
 * (they come from the agent's value), and dbswap's own.
 */
export interface PoolOptions extends Omit<pg.PoolConfig,
  'connectionString' | 'host' | 'port' | 'user' | 'password' | 'database' | 'log' | 'Client' | 'ssl'> {
  /** The env variable the agent publishes (default 'DATABASE_URL'). */
  target?: string;
  /** The agent's socket; default $DBSWAP_SOCKET, else /run/dbswap/dbswap.sock. */
  socket?: string;
  /** Shown in the agent's status; default the script's file name. */
  name?: string;
  /** A Client to follow the agent with (not closed by end()); default a new one.
   * If it follows the target already, the pool starts from its last value
   * and settings.  One pool per target per client ('busy' otherwise). */
  client?: Client;
  /** The requestTimeout of the Client the pool makes (not of one given as
   * `client`), ms (5000): bounds the agent's answers to hello and to the
   * pool's subscribe; 0 waits for ever. */
  requestTimeout?: number;
  /** Makes the pg.Pool of each value; default `new pg.Pool(config)`. */
  poolFactory?: (config: pg.PoolConfig) => pg.Pool;
  /** The pg Client class the pool's connections extend; default pg.Client
   * (none with a poolFactory of one's own). */
  Client?: new (config?: pg.ClientConfig) => pg.Client;
  /** Busy connections of an old value are destroyed after this, ms (30000). */
  drainTimeoutMillis?: number;
  /** Where log lines go; default stderr. */
  log?: LogFunction;
  /** TLS options to start from; whether TLS is used, and how it is
   * verified, come from the value's sslmode (default prefer).  `false`: no
   * TLS for a value that sets no sslmode (sslmode=disable); a value's own
   * sslmode wins (a warning once when it asks for TLS).  `true` is
   * ignored, with a warning. */
  ssl?: boolean | ConnectionOptions;
  /** Pool size; default DATABASE_POOL_MAX, else 10. */
  max?: number;
  /** Idle connections kept, and opened before a swap (at least 1);
   * default DATABASE_POOL_MIN, else 1. */
  min?: number;
  /** How long a checkout waits, ms (0: for ever); default
   * DATABASE_POOL_TIMEOUT, else 0.  The agent's DATABASE_POOL_TIMEOUT=0 is
   * libdbswap's no wait: a checkout that finds nothing free fails at once. */
  connectionTimeoutMillis?: number;
  /** Idle connections beyond min closed after this, ms (0: never);
   * default DATABASE_POOL_IDLE_TIMEOUT, else 10000.  The agent's
   * DATABASE_POOL_IDLE_TIMEOUT=0 closes them at once (1 ms here). */
  idleTimeoutMillis?: number;
  /** The pool's socket and timers do not keep the process alive. */
  allowExitOnIdle?: boolean;
}

/** The 'swap' event: checkouts get a new value from now on. */
export interface SwapEvent {
  target: string;
  /** 0 for the environment's value. */
  generation: Generation;
  instance: string | null;
  /** The update's reason, or 'environment' for $TARGET without an agent. */
  reason: UpdateReason | 'environment' | (string & {});
  server: ServerRole | (string & {});
  standby: boolean;
  /** The generation checkouts got before, null for the first value. */
  previousGeneration: Generation | null;
  /** Switched at once, the old connections destroyed (failover,
   * unavailable, or back from unavailable); false: they drain. */
  immediate: boolean;
  /** The value is $TARGET from the environment (no agent). */
  fromEnvironment: boolean;
}

/** The 'ack' event: no connection of an older value is left.  Also
 * emitted when the value in use comes again under a new number (an agent
 * restart) and is acked with it, without a swap. */
export interface AckEvent {
  target: string;
  generation: Generation;
  instance: string | null;
  /** Whether the ack went to the agent now (false while disconnected, or
   * when the agent restarted since). */
  sent: boolean;
}

/** The 'nack' event: a value did not connect from here. */
export interface NackEvent {
  target: string;
  /** 0 for the environment's value (then nothing is sent to the agent). */
  generation: Generation;
  instance: string | null;
  /** What was sent to the agent, masked; for the environment's value the
   * error line. */
  message: string;
  /** Failed attempts with this value so far. */
  attempts: number;
  /** false: given up (5 authentication failures, or a value that cannot
   * be used here at all). */
  willRetry: boolean;
  /** The value is $TARGET from the environment (no agent): the event is
   * all there is, nothing goes to an agent. */
  fromEnvironment: boolean;
  /** Whether the nack went to the agent (false for the environment's
   * value, or while the agent is away). */
  sent: boolean;
}

export interface PoolEvents {
  /** A new connection opened (pg.Pool's event). */
  connect: [client: pg.PoolClient];
  /** A connection was checked out. */
  acquire: [client: pg.PoolClient];
  /** A connection came back; err as given to release(). */
  release: [err: Error | boolean | undefined, client: pg.PoolClient];
  /** A connection was closed and removed. */
  remove: [client: pg.PoolClient];
  /** An idle connection's error (with it), or an error from the agent or
   * the subscription.  Without a listener it goes to the log function. */
  error: [err: Error, client?: pg.PoolClient];
  swap: [event: SwapEvent];
  ack: [event: AckEvent];
  nack: [event: NackEvent];
}

/**
 * A pool of PostgreSQL connections for one target of the agent, with
 * pg.Pool's API (a subclass of pg.Pool when pg is installed), swapping
 * make-before-break on each new value.
 */
export class Pool extends pg.Pool {
  constructor(options?: PoolOptions);

  /** The target followed. */
  readonly target: string;
  /** The generation checkouts get now (0 for the environment's value);
   * null before any value.  After an agent restart that kept the value,
   * the new run's number. */
  readonly generation: Generation | null;
  /** The dbswap client the pool follows the agent with. */
  readonly client: Client;
  /** Connections open or opening, of every value (old and new during a swap). */
  readonly totalCount: number;
  /** Idle connections of the current value. */
  readonly idleCount: number;
  /** Checkouts waiting, for a connection or for a first value. */
  readonly waitingCount: number;
  /** Connections of the current value past maxLifetimeSeconds. */
  readonly expiredCount: number;
  /** end() was called. */
  readonly ending: boolean;
  /** end() finished. */
  readonly ended: boolean;
  /** The pg.Pool options in force: yours, else the agent's settings, else
   * the defaults. */
  options: pg.PoolOptions;

  /** Ends the pool: checkouts fail from now on, idle connections close,
   * those in use when released (end() waits for them), those of a new
   * value still being opened are destroyed; the Client closes if the pool
   * made it. */
  end(): Promise<void>;
  end(callback: (err?: Error) => void): void;

  on<K extends keyof PoolEvents>(event: K, listener: (...args: PoolEvents[K]) => void): this;
  on<K extends 'error' | 'release' | 'connect' | 'acquire' | 'remove'>(
    event: K,
    listener: K extends 'error' | 'release' ? (err: Error, client: pg.PoolClient) => void : (client: pg.PoolClient) => void,
  ): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
  once<K extends keyof PoolEvents>(event: K, listener: (...args: PoolEvents[K]) => void): this;
  once(event: string | symbol, listener: (...args: any[]) => void): this;
  off<K extends keyof PoolEvents>(event: K, listener: (...args: PoolEvents[K]) => void): this;
  off(event: string | symbol, listener: (...args: any[]) => void): this;
}

/** A pool for a target (default DATABASE_URL). */
export function createPool(options?: PoolOptions): Pool;

/* ---- connection strings ---- */

/** The connection string with every password replaced by ****; a string
 * libpq would refuse is **** whole (as the agent masks it).  '(none)' for
 * null or undefined. */
export function maskConninfo(conninfo: string | null | undefined): string;

/** A libpq connection string (URI or key=value) parsed by libpq's rules:
 * keyword -> value.  Throws DbswapError 'conninfo' (quoting no value). */
export function parseConninfo(conninfo: string): Record<string, string>;

export interface HostEntry {
  /** Name or socket directory: libpq's default socket directory (/var/run/postgresql) when the value names none; undefined only with a hostaddr and no host. */
  host: string | undefined;
  /** Numeric address to connect to instead of resolving host. */
  hostaddr: string | undefined;
  port: number;
}

export interface Translation {
  /** In the order to try them. */
  hosts: HostEntry[];
  sslMode: 'disable' | 'allow' | 'prefer' | 'require' | 'verify-ca' | 'verify-full';
  targetSessionAttrs: 'any' | 'read-write' | 'read-only' | 'primary' | 'standby' | 'prefer-standby';
  /** pg client config without host, port and ssl. */
  config: pg.ClientConfig;
  /** TLS options for pg's `ssl`, false for none. */
  tls: ConnectionOptions | false;
}

/**
 * A libpq connection string translated into what pg takes.  Throws
 * DbswapError 'conninfo' for a string that cannot be read or asks for
 * what pg cannot do.
 */
export function translateConninfo(
  conninfo: string,
  options?: {
    /** libpq's environment defaults (PGHOST, PGSSLMODE, ...); default process.env */
    env?: Record<string, string | undefined>;
    /** Reads certificate and key files; default fs.readFileSync. */
    readFile?: (path: string) => Buffer;
    /** For ~/.postgresql; default os.homedir(). */
    home?: string;
    /** TLS options to start from; the connection string's win. */
    tls?: ConnectionOptions;
  },
): Translation;

/** The pg client config for one host of a translation; plain: without TLS. */
export function pgHostConfig(t: Translation, entry: HostEntry, how?: { plain?: boolean }): pg.ClientConfig;
