// The package as an app uses it, checked by tsc (npm run typecheck; npm
// test runs it after the unit tests).  Nothing here runs.  The lines after
// `@ts-expect-error` must not compile: they keep the types strict.
import pg from 'pg';
import {
  AUTH_TRIES,
  WARM_TIMEOUT_MS,
  CONNECT_WAIT_MS,
  Client,
  DbswapError,
  DEFAULT_SOCKET,
  DRAIN_TIMEOUT_MS,
  ErrorCode,
  FRAME_MAX,
  PROTOCOL_VERSION,
  PROTOCOL_VERSION_MIN,
  Pool,
  RECONNECT_FIRST_MS,
  RECONNECT_MAX_MS,
  REQUEST_TIMEOUT_MS,
  Update,
  createPool,
  maskConninfo,
  parseConninfo,
  pgHostConfig,
  translateConninfo,
} from 'dbswap';
import type { AckEvent, NackEvent, PoolOptions, Settings, StatusReply, SwapEvent } from 'dbswap';

// createPool() is a pg.Pool wherever one is taken.
function takesPgPool(p: pg.Pool): pg.Pool {
  return p;
}

export async function app(): Promise<void> {
  const options: PoolOptions = {
    target: 'DATABASE_URL',
    socket: DEFAULT_SOCKET,
    name: 'billing-api',
    max: 20,
    min: 2,
    idleTimeoutMillis: 30000,
    connectionTimeoutMillis: 5000,
    drainTimeoutMillis: DRAIN_TIMEOUT_MS,
    requestTimeout: 2000,
    statement_timeout: 10000,
    application_name: 'billing-api',
    ssl: { servername: 'db.internal' },
    log: (level, message) => console.log(level, message),
  };
  const pool = createPool(options);
  const same: pg.Pool = takesPgPool(pool);
  const isPool: boolean = same instanceof Pool;

  // pg.Pool's API, typed as pg types it.
  const r = await pool.query<{ now: Date }>('SELECT now()');
  const now: Date = r.rows[0].now;
  const client: pg.PoolClient = await pool.connect();
  try {
    await client.query('SELECT $1::int', [1]);
  } finally {
    client.release();
  }
  pool.connect((err, c, done) => {
    if (err || !c) return;
    done();
  });
  pool.query('SELECT 1', (err: Error, res: pg.QueryResult) => void [err, res]);
  const counts: number = pool.totalCount + pool.idleCount + pool.waitingCount + pool.expiredCount;
  const max: number | undefined = pool.options.max;

  // dbswap's own.
  const target: string = pool.target;
  const generation = pool.generation;
  if (generation !== null) {
    const n: number | bigint = generation;
    void n;
  }
  const agentClient: Client = pool.client;

  pool.on('swap', (s: SwapEvent) => {
    const immediate: boolean = s.immediate;
    const prev = s.previousGeneration;
    console.log(s.reason, s.server, s.standby, s.fromEnvironment, immediate, prev);
  });
  pool.on('ack', (a: AckEvent) => console.log(a.generation, a.instance, a.sent));
  pool.on('nack', (n: NackEvent) => console.log(n.message, n.attempts, n.willRetry, n.fromEnvironment, n.sent));
  pool.on('error', (err, c) => console.log(err.message, c !== undefined));
  pool.on('connect', (c) => c.query('SET search_path TO app'));
  pool.on('release', (err, c) => void [err, c]);
  pool.once('swap', (s) => s.generation);

  await pool.end();
  pool.end((err) => void err);

  // The protocol client: events, the iterator, requests.
  const c = new Client({ socket: '/run/dbswap/dbswap.sock', name: 'worker', requestTimeout: REQUEST_TIMEOUT_MS, unref: true });
  c.on('connect', (info) => console.log(info.name, info.pid, info.instance, info.version));
  c.on('disconnect', (err: Error) => console.log(err.message));
  c.on('settings', (s: Settings) => console.log(s.poolMax, s.poolMin, s.poolTimeoutMs, s.poolIdleTimeoutMs));
  c.on('update', (u: Update) => {
    console.log(u.maskedConninfo, String(u), u.toJSON().conninfo);
    const sent: boolean = c.ack(u);
    void sent;
  });
  await c.subscribe(['DATABASE_URL', 'REPORTS_URL'], { timeout: 0 });
  for await (const u of c.updates('DATABASE_URL')) {
    const conninfo: string = u.conninfo;
    const reason = u.reason;
    if (reason === 'failover' && u.server === 'secondary') c.nack(u, 'cannot reach it from here');
    void conninfo;
    break;
  }
  const st: StatusReply = await c.status();
  for (const t of st.targets ?? []) {
    console.log(t.name, t.generation, t.state);
    // @ts-expect-error: a redacted target has no failover field: narrow first
    console.log(t.failover.current);
    if (!t.redacted) console.log(t.failover.current, t.servers[0]?.health);
  }
  const cut: boolean | undefined = st.truncated;
  const rtt: number = await c.ping({ timeout: 1000 });
  const { generation: g } = await c.failover('DATABASE_URL');
  await c.failback('DATABASE_URL');
  await c.reconnect();
  await c.reconnect('DATABASE_URL', { timeout: 0 });
  await c.reload();
  const last: Update | null = c.lastUpdate('DATABASE_URL');
  const settings: Settings | null = c.settings('DATABASE_URL');
  const up: boolean = c.connected;
  await c.close();

  // Errors and their codes.
  try {
    await c.subscribe('NOPE');
  } catch (err) {
    if (err instanceof DbswapError) {
      if (err.code === ErrorCode.UNKNOWN_TARGET || err.code === 'forbidden' || err.code === 'no-value') {
        console.log(err.targets, err.target, err.cause);
      }
    }
  }

  // Connection strings.
  const masked: string = maskConninfo('postgresql://app:secret@db/app');
  const params: Record<string, string> = parseConninfo('host=db user=app');
  const tr = translateConninfo('postgresql://app@a,b/app?target_session_attrs=read-write');
  const cfg: pg.ClientConfig = pgHostConfig(tr, tr.hosts[0]);
  const consts: number = PROTOCOL_VERSION + PROTOCOL_VERSION_MIN + FRAME_MAX + RECONNECT_FIRST_MS + RECONNECT_MAX_MS + AUTH_TRIES + WARM_TIMEOUT_MS + CONNECT_WAIT_MS;

  void [same, isPool, now, counts, max, target, agentClient, rtt, g, last, settings, up, masked, params, cfg, consts];
}

export function mistakes(pool: Pool, c: Client): void {
  // @ts-expect-error the connection parameters come from the agent, never from options
  createPool({ connectionString: 'postgresql://app:secret@db/app' });
  // @ts-expect-error nor a password
  createPool({ password: 'secret' });
  // @ts-expect-error the log function takes a level and a message
  createPool({ log: (a: number) => a });
  // @ts-expect-error a swap event has no such field
  pool.on('swap', (s) => s.conninfo);
  // @ts-expect-error generation may be null before any value
  const n: number = pool.generation;
  // @ts-expect-error the update's conninfo is read-only
  c.on('update', (u) => { u.conninfo = 'x'; });
  // @ts-expect-error subscribe takes names, not numbers
  void c.subscribe(42);
  // @ts-expect-error failover needs a target
  void c.failover();
  void n;
}
