// Failover under load through createPool(): two real clusters, "primary"
// and "secondary" (independent, the same role and password on both, as
// in tests/integration/test_failover.py), the agent with
// DATABASE_URL_SECONDARY, 8 busy query loops in this process.
//
//   - the primary crashed (pg_ctl stop -m immediate), default failover
//     settings: at most one failed query per loop (the one in flight on
//     the dead server), none once the swap is a second old; the pool
//     moves to the secondary at once (no drain) and acks it;
//   - the primary hung (SIGSTOP of the postmaster and its backends), the
//     short settings test_failover.py uses (checks every 300 ms, 500 ms
//     connection timeout: a switch within about 2 s): the same bounds,
//     no loop stuck on the hung server; then SIGCONT, and the agent fails
//     back: a drain this time, with no failed query;
//   - both servers down (short checks): the agent publishes server
//     "none"; checkouts fail at once with DbswapError 'unavailable' (no
//     wait for a connection timeout); the secondary back: the pool on it
//     at once, queries flowing, none failing after.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connectFixture, fixtureSkip, scaled } from './fixture.js';
import { AUTH_TRIES, DbswapError } from '../../index.js';
import pg from 'pg';
import {
  assertNoSecret, describeLines, eventsOf, now, openPool, poolTexts, startLoops, waitEvent, waitFor,
} from './helpers.js';

const LOOPS = 8;
// tests/integration/test_failover.py's SHORT.
const SHORT = {
  DB_HEALTH_CHECK_INTERVAL: 300,
  DB_CONNECTION_TIMEOUT: 500,
  DB_FAILURE_THRESHOLD: 3,
  DB_PRIMARY_RETRY_INTERVAL: 1500,
};
const CONFIRM_MS = 250; // the agent's confirmation interval after a failure
// Failures are those of queries in flight when the old server's
// connections were destroyed; they are counted within this of the swap.
const SETTLE_MS = 1000;

let fx;
before(async () => {
  if (!fixtureSkip) fx = await connectFixture();
});
after(async () => {
  await fx?.close();
});

/** A role on both clusters, an env file with both URLs (and settings),
 * an agent; returns once both servers are up and failover is possible. */
async function setUp(name, settings = {}) {
  await fx.startCluster('primary'); // a test before may have stopped it
  await fx.resumeCluster('primary');
  const role = await fx.createRole({ clusters: ['primary', 'secondary'] });
  const path = `${name}.env`;
  for (const [k, v] of Object.entries(settings)) assert.ok(/^\d+$/.test(String(v)), k);
  const scaledSettings = Object.fromEntries(Object.entries(settings).map(([k, v]) => [k, k === 'DB_FAILURE_THRESHOLD' ? v : scaled(v)]));
  await fx.writeEnv({
    path,
    vars: { DATABASE_URL: role.urls.primary, DATABASE_URL_SECONDARY: role.urls.secondary, ...scaledSettings },
  });
  const agent = await fx.startAgent({ agent: name, envFiles: [path] });
  const t = await waitFor(async () => {
    const x = await fx.targetStatus('DATABASE_URL', name).catch(() => null);
    return x && x.generation >= 1 && x.failover.current === 'primary' && x.failover.failover_available &&
      x.servers.length === 2 && x.servers.every((srv) => srv.health === 'up') && x;
  }, { ms: 15000, what: 'generation 1 on the primary, both servers up' });
  const ports = { primary: (await fx.cluster('primary')).port, secondary: (await fx.cluster('secondary')).port };
  return { role, agent, name, ports, generation: t.generation };
}

/** Per-loop failures, and those later than SETTLE_MS after t. */
function failureReport(loops, summary, t) {
  return {
    byLoop: summary.failures_by_loop,
    late: loops.failures.filter((f) => f.t > t + scaled(SETTLE_MS)),
    lastAfterSwap: loops.failures.length ? Math.max(...loops.failures.map((f) => f.t)) - t : null,
  };
}

test('the primary crashed under 8 busy loops: at most one failed query per loop, none after the swap, the pool on the secondary', { skip: fixtureSkip, timeout: scaled(90000) }, async () => {
  const s = await setUp('crash');
  const pool = openPool(s.agent.socket, { max: LOOPS });
  const loops = startLoops(pool, { threads: LOOPS });
  try {
    await fx.waitAcked(s.generation, { agent: s.name, subscribers: 1 });
    await loops.waitQueries(100);
    const since = pool.events.length;

    const t0 = now();
    await fx.stopCluster('primary', 'immediate');
    const swap = await waitEvent(pool, 'swap', (i) => i.server === 'secondary', { since, ms: 15000 });
    assert.equal(swap.info.reason, 'failover');
    assert.equal(swap.info.immediate, true, 'a failover breaks before it makes');
    assert.equal(swap.info.generation, s.generation + 1);
    const ack = await waitEvent(pool, 'ack', (i) => i.generation === s.generation + 1, { since });
    const t = await fx.waitAcked(s.generation + 1, { agent: s.name, subscribers: 1 });
    assert.equal(t.failover.current, 'secondary');
    assert.equal(pool.generation, s.generation + 1);

    // Queries flow on the secondary, and keep flowing past the settling time.
    await loops.waitQueries(loops.queries() + 50);
    await waitFor(() => now() > swap.t + scaled(SETTLE_MS) + 200, { ms: scaled(SETTLE_MS) + 5000 });
    await loops.waitQueries(loops.queries() + 50);
    const sum = await loops.stop();
    const f = failureReport(loops, sum, swap.t);
    assert.ok(f.byLoop.every((n) => n <= 1), `failures per loop ${JSON.stringify(f.byLoop)}: more than one in a loop; ${JSON.stringify(loops.failures.slice(0, 5))}`);
    assert.deepEqual(f.late, [], 'failures more than a second after the swap');
    assert.equal(sum.stuck, 0);
    assert.equal(sum.port_at_end, s.ports.secondary);
    assert.equal(sum.current_user_at_end, s.role.role);
    assertNoSecret(poolTexts(pool), [s.role.password]);
    const firstOk = eventsOf(pool, 'connect', since)[0];
    console.log(`primary crashed -> pool swapped to the secondary in ${(swap.t - t0).toFixed(0)} ms, ` +
      `acked in ${(ack.t - t0).toFixed(0)} ms, first connection to the secondary ${firstOk ? (firstOk.t - t0).toFixed(0) : '?'} ms; ` +
      `failed queries ${sum.failures} (per loop ${JSON.stringify(f.byLoop)}), the last ${f.lastAfterSwap?.toFixed(0) ?? '-'} ms after the swap; ${sum.queries} queries`);
  } finally {
    await loops.stop();
    await pool.end();
    await fx.startCluster('primary');
  }
});

test('the primary hung under 8 busy loops (short checks): at most one failed query per loop, none stuck; back to the primary after SIGCONT without a failure', { skip: fixtureSkip, timeout: scaled(90000) }, async () => {
  const s = await setUp('hung', SHORT);
  const pool = openPool(s.agent.socket, { max: LOOPS });
  const loops = startLoops(pool, { threads: LOOPS });
  try {
    await fx.waitAcked(s.generation, { agent: s.name, subscribers: 1 });
    await loops.waitQueries(100);
    const since = pool.events.length;

    const t0 = now();
    await fx.pauseCluster('primary');
    const swap = await waitEvent(pool, 'swap', (i) => i.server === 'secondary', { since, ms: 15000 });
    const tookMs = swap.t - t0;
    // Twice test_failover.py's bound (the next check, two timed out
    // checks, the confirmations, and a second for the rest): not a
    // latency goal, a pool that waits for the hung server's connections
    // (30 s of drain) or misses the failover fails it.
    const bound = 2 * (SHORT.DB_HEALTH_CHECK_INTERVAL + 2 * SHORT.DB_CONNECTION_TIMEOUT +
      (SHORT.DB_FAILURE_THRESHOLD - 1) * CONFIRM_MS + 1000);
    assert.ok(tookMs <= scaled(bound), `hung primary -> swap in ${tookMs.toFixed(0)} ms, over ${scaled(bound)} ms`);
    assert.equal(swap.info.reason, 'failover');
    assert.equal(swap.info.immediate, true);
    const g1 = swap.info.generation;
    await fx.waitAcked(g1, { agent: s.name, subscribers: 1 });
    await loops.waitQueries(loops.queries() + 50);
    await waitFor(() => now() > swap.t + scaled(SETTLE_MS) + 200, { ms: scaled(SETTLE_MS) + 5000 });
    await loops.waitQueries(loops.queries() + 50);
    const settled = loops.failures.length;
    const late = loops.failures.filter((f) => f.t > swap.t + scaled(SETTLE_MS));
    assert.deepEqual(late, [], 'failures more than a second after the swap');
    assert.ok(settled <= LOOPS, `${settled} failures for ${LOOPS} loops`);

    // SIGCONT: the agent fails back once the primary passed its checks;
    // the old (secondary) connections drain, nothing fails.
    const since2 = pool.events.length;
    const t1 = now();
    await fx.resumeCluster('primary');
    const back = await waitEvent(pool, 'swap', (i) => i.server === 'primary', {
      since: since2,
      ms: scaled(SHORT.DB_PRIMARY_RETRY_INTERVAL + SHORT.DB_FAILURE_THRESHOLD * SHORT.DB_HEALTH_CHECK_INTERVAL) + 10000,
    });
    assert.equal(back.info.reason, 'failback');
    assert.equal(back.info.immediate, false, 'a failback drains');
    await fx.waitAcked(back.info.generation, { agent: s.name, subscribers: 1 });
    await loops.waitQueries(loops.queries() + 50);

    const sum = await loops.stop();
    assert.ok(sum.failures_by_loop.every((n) => n <= 1), `failures per loop ${JSON.stringify(sum.failures_by_loop)}; ${JSON.stringify(loops.failures.slice(0, 5))}`);
    assert.equal(sum.failures, settled, `failures during the failback: ${JSON.stringify(loops.failures.slice(settled))}`);
    assert.equal(sum.stuck, 0, 'a loop stuck on the hung server');
    assert.equal(sum.port_at_end, s.ports.primary);
    assertNoSecret(poolTexts(pool), [s.role.password]);
    console.log(`primary hung -> pool swapped to the secondary in ${tookMs.toFixed(0)} ms (bound ${scaled(bound)} ms); ` +
      `failed queries ${settled} (per loop ${JSON.stringify(sum.failures_by_loop)}); ` +
      `SIGCONT -> failback swap in ${(back.t - t1).toFixed(0)} ms, 0 failed; ${sum.queries} queries`);
  } finally {
    await loops.stop();
    await pool.end();
    await fx.resumeCluster('primary');
  }
});

test('both servers down, then the secondary back (short checks): checkouts fail at once with \'unavailable\', then the pool serves from the secondary', { skip: fixtureSkip, timeout: scaled(90000) }, async () => {
  const s = await setUp('both', SHORT);
  const pool = openPool(s.agent.socket, { max: 4 });
  const loops = startLoops(pool, { threads: 4 });
  try {
    await fx.waitAcked(s.generation, { agent: s.name, subscribers: 1 });
    await loops.waitQueries(50);
    let since = pool.events.length;
    await fx.stopCluster('primary', 'immediate');
    await waitEvent(pool, 'swap', (i) => i.server === 'secondary', { since, ms: 15000 });
    since = pool.events.length;
    await fx.stopCluster('secondary', 'immediate');
    const none = await waitEvent(pool, 'swap', (i) => i.server === 'none', { since, ms: 15000 });
    assert.equal(none.info.reason, 'unavailable');
    assert.equal(none.info.immediate, true);
    await fx.waitAcked(none.info.generation, { agent: s.name, subscribers: 1 });

    // Checkouts fail at once, saying why.
    const t0 = now();
    const err = await pool.connect().then((c) => { c.release(); return null; }, (e) => e);
    const took = now() - t0;
    assert.ok(err instanceof DbswapError, String(err));
    assert.equal(err.code, 'unavailable');
    assert.match(err.message, /no database server is available/);
    assert.ok(took < scaled(200), `the checkout took ${took.toFixed(0)} ms to fail`);

    // The secondary back: the first server that answers is used at once.
    since = pool.events.length;
    const t1 = now();
    await fx.startCluster('secondary');
    const back = await waitEvent(pool, 'swap', (i) => i.server === 'secondary', { since, ms: 15000 });
    const t = await fx.waitAcked(back.info.generation, { agent: s.name, subscribers: 1 });
    assert.equal(t.failover.current, 'secondary');
    await loops.waitQueries(loops.queries() + 50);
    const settledAt = back.t + scaled(SETTLE_MS);
    await waitFor(() => now() > settledAt + 200, { ms: scaled(SETTLE_MS) + 5000 });
    await loops.waitQueries(loops.queries() + 50);
    const sum = await loops.stop();
    const late = loops.failures.filter((f) => f.t > settledAt);
    assert.deepEqual(late, [], 'failures a second after the secondary was back');
    assert.ok(sum.unavailable > 0, 'the loops saw \'unavailable\' meanwhile');
    assert.equal(sum.port_at_end, s.ports.secondary);
    assert.equal(sum.stuck, 0);
    assertNoSecret(poolTexts(pool), [s.role.password]);
    console.log(`both down: a checkout failed in ${took.toFixed(1)} ms (unavailable); secondary started -> pool on it in ${(back.t - t1).toFixed(0)} ms; ` +
      `${sum.failures} failed queries while no server was up (${sum.unavailable} unavailable), none after`);
  } finally {
    await loops.stop();
    await pool.end();
    await fx.startCluster('secondary');
    await fx.startCluster('primary');
  }
});

test('a failover to a value that does not connect from here: nacked, not acked, and tried at most AUTH_TRIES times under 10 concurrent checkouts', { skip: fixtureSkip, timeout: scaled(90000) }, async () => {
  const s = await setUp('refused', SHORT);
  // The app's side of the secondary refuses this role's password (as a
  // pg_hba.conf or a password that differs from here): every connection
  // the pool opens to the secondary is a real authentication failure.
  let secondaryTries = 0;
  class Client extends pg.Client {
    constructor(config) {
      if (config.port === s.ports.secondary) config = { ...config, password: 'not-the-password' };
      super(config);
    }

    async connect() {
      try {
        return await super.connect();
      } catch (err) {
        if (err.code === '28P01') secondaryTries++;
        throw err;
      }
    }
  }
  const pool = openPool(s.agent.socket, { max: 10, Client });
  try {
    await pool.query('select 1');
    await fx.waitAcked(s.generation, { agent: s.name, subscribers: 1 });
    const since = pool.events.length;
    await fx.stopCluster('primary', 'immediate');
    const swap = await waitEvent(pool, 'swap', (i) => i.server === 'secondary', { since, ms: 15000 });
    const gen = swap.info.generation;
    const nack = await waitEvent(pool, 'nack', (i) => i.generation === gen, { since });
    assert.equal(nack.info.sent, true);
    assert.match(nack.info.message, new RegExp(`cannot connect with generation ${gen} from pid ${process.pid}: password authentication failed`));
    const t0 = now();
    const failures = [];
    while (now() - t0 < scaled(3000)) {
      const r = await Promise.allSettled(Array.from({ length: 10 }, () => pool.query('select 1')));
      for (const x of r) {
        assert.equal(x.status, 'rejected');
        failures.push(x.reason);
      }
    }
    assert.ok(failures.every((e) => e.code === '28P01'), String(failures.find((e) => e.code !== '28P01')));
    assert.ok(secondaryTries <= AUTH_TRIES, `${secondaryTries} authentication failures at the secondary (AUTH_TRIES ${AUTH_TRIES})`);
    assert.deepEqual(eventsOf(pool, 'ack', since).map((e) => e.info.generation), [], 'a value that never connected is not acked');
    const t = await fx.targetStatus('DATABASE_URL', s.name);
    assert.equal(t.generation, gen);
    assert.equal(t.acked, 0);
    assert.equal(t.lagging[0]?.nacked, gen, JSON.stringify(t.lagging));
    assert.ok(pool.lines.some((l) => l.level === 'error' && /refused 5 times/.test(l.message)), describeLines(pool));
    assertNoSecret(poolTexts(pool), [s.role.password]);
  } finally {
    await pool.end();
    await fx.startCluster('primary');
  }
});

test('a failover while an older value drains: its busy connections are destroyed too, and the failover is acked without waiting for the drain deadline', { skip: fixtureSkip, timeout: scaled(90000) }, async () => {
  const s = await setUp('drainfail', SHORT);
  const pool = openPool(s.agent.socket, { max: 4, drainTimeoutMillis: scaled(30000) });
  let held = null;
  try {
    await fx.waitAcked(s.generation, { agent: s.name, subscribers: 1 });
    held = await pool.connect(); // busy on generation 1, on the primary
    const since = pool.events.length;
    const vars = Object.fromEntries(Object.entries(SHORT).map(([k, v]) => [k, k === 'DB_FAILURE_THRESHOLD' ? v : scaled(v)]));
    await fx.rotate(s.role.role, { path: `${s.name}.env`, secondary: 'secondary', vars });
    const rot = await waitEvent(pool, 'swap', (i) => i.reason === 'rotation', { since, ms: 15000 });
    assert.equal(rot.info.immediate, false, 'generation 1 drains');
    // The primary hangs: generation 1's busy connection with it.
    await fx.pauseCluster('primary');
    const swap = await waitEvent(pool, 'swap', (i) => i.server === 'secondary', { since, ms: 15000 });
    assert.equal(swap.info.immediate, true);
    const t0 = now();
    const err = await held.query('select 1').then(() => null, (e) => e);
    assert.ok(err, 'a query on the old value\'s connection to the hung server rejects');
    assert.ok(now() - t0 < scaled(3000), `it took ${Math.round(now() - t0)} ms`);
    const ack = await waitEvent(pool, 'ack', (i) => i.generation === swap.info.generation, { since, ms: scaled(5000) });
    assert.ok(ack.t - swap.t < scaled(5000), `acked ${Math.round(ack.t - swap.t)} ms after the failover`);
    assert.equal((await pool.query('select 1 as x')).rows[0].x, 1);
  } finally {
    held?.release();
    await fx.resumeCluster('primary');
    await pool.end();
  }
});
