// The pool's drain rules against the real agent and server:
//   - a client checked out across a rotation keeps working on its old
//     session, and the new generation is not acked until it is released;
//   - one still held at the drain deadline is destroyed, then the ack
//     comes;
//   - a value the agent validated but that does not connect from the app
//     is nacked with a masked reason (shown in the agent's status), given
//     up after AUTH_TRIES authentication failures, while the old value
//     keeps serving; a value that works is taken at once after it;
//   - `dbswapctl reconnect` (the same value again) replaces every
//     connection as a rotation does: drained, acked, no failed query;
//   - the current value stops connecting for a second with no new value
//     coming (the role's LOGIN revoked, its sessions terminated): the
//     checkouts wait (pg's default connectionTimeoutMillis, 0: the pool's
//     own 5 s bound), retried with backoff, and are served once it
//     connects again; the only failed queries are those the terminated
//     sessions were running.
//
// Values carry an application_name per generation, so that
// pg_stat_activity says which value each session was opened with.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { AUTH_TRIES } from '../../index.js';
import { connectFixture, fixtureSkip, scaled } from './fixture.js';
import {
  assertNoSecret, eventsOf, now, openPool, poolTexts, sleep, startLoops, waitEvent, waitFor,
} from './helpers.js';

let fx;
before(async () => {
  if (!fixtureSkip) fx = await connectFixture();
});
after(async () => {
  await fx?.close();
});

const app = (g) => `drain-g${g}`;
const withApp = (url, g) => `${url}?application_name=${app(g)}`;

/** A role, its env file and an agent of its own, generation 1 published. */
async function setUp(name, { env } = {}) {
  const role = await fx.createRole();
  const path = `${name}.env`;
  await fx.writeEnv({ path, vars: { DATABASE_URL: withApp(role.url, 1) } });
  const agent = await fx.startAgent({ agent: name, envFiles: [path], env });
  await fx.waitPublished(1, { agent: name });
  return { role, path, agent, name };
}

/** A rotation: the new password on the server, then the file. */
async function rotate(s, g) {
  const pw = await fx.setPassword(s.role.role);
  await fx.writeEnv({ path: s.path, vars: { DATABASE_URL: withApp(pw.url, g) } });
  return pw;
}

async function appNames(role) {
  return (await fx.activity(role)).map((x) => x.application_name).sort();
}

test('a client held across a rotation keeps its session; the generation is acked only once it is released', { skip: fixtureSkip, timeout: scaled(60000) }, async () => {
  const s = await setUp('held');
  const pool = openPool(s.agent.socket, { max: 4 });
  try {
    const held = await pool.connect();
    const pid = (await held.query('SELECT pg_backend_pid() AS p')).rows[0].p;
    await fx.waitAcked(1, { agent: s.name, subscribers: 1 });

    const pw = await rotate(s, 2);
    const swap = await waitEvent(pool, 'swap', (i) => i.generation === 2);
    assert.equal(swap.info.immediate, false);
    // New checkouts get the new value; the held client is still on its
    // old session, which works.
    const r = await pool.query("SELECT current_setting('application_name') AS a");
    assert.equal(r.rows[0].a, app(2));
    for (let i = 0; i < 5; i++) {
      const again = await held.query('SELECT pg_backend_pid() AS p');
      assert.equal(again.rows[0].p, pid, 'the held client kept its session');
      await sleep(50);
    }
    // Not acked while it is out, however long that is.
    let t = await fx.targetStatus('DATABASE_URL', s.name);
    assert.deepEqual([t.generation, t.subscribers, t.acked], [2, 1, 0], JSON.stringify(t));
    assert.equal(eventsOf(pool, 'ack').filter((e) => e.info.generation === 2).length, 0);
    assert.ok((await appNames(s.role.role)).includes(app(1)), 'the old session is there');

    const released = now();
    held.release();
    const ack = await waitEvent(pool, 'ack', (i) => i.generation === 2);
    assert.ok(ack.t >= released, 'acked after the release');
    assert.equal(ack.info.sent, true);
    t = await fx.waitAcked(2, { agent: s.name, subscribers: 1 });
    assert.equal(t.acked, 1);
    await waitFor(async () => !(await appNames(s.role.role)).includes(app(1)),
      { ms: 2000, what: 'the old session gone after the ack' });
    assertNoSecret(poolTexts(pool), [s.role.password, pw.password]);
    console.log(`held client released -> generation 2 acked: ${(ack.t - released).toFixed(1)} ms`);
  } finally {
    await pool.end();
  }
});

test('a client still held at the drain deadline is destroyed, then the generation is acked', { skip: fixtureSkip, timeout: scaled(60000) }, async () => {
  const DRAIN = 800;
  const s = await setUp('deadline');
  const pool = openPool(s.agent.socket, { max: 4, drainTimeoutMillis: DRAIN });
  try {
    const held = await pool.connect();
    await held.query('SELECT 1');
    const lost = [];
    held.on('error', (err) => lost.push(err));
    await fx.waitAcked(1, { agent: s.name, subscribers: 1 });
    const loops = startLoops(pool, { threads: 2 });
    await loops.waitQueries(20);

    const pw = await rotate(s, 2);
    const swap = await waitEvent(pool, 'swap', (i) => i.generation === 2);
    const ack = await waitEvent(pool, 'ack', (i) => i.generation === 2, { ms: DRAIN + 5000 });
    const waited = ack.t - swap.t;
    assert.ok(waited >= DRAIN - 20, `acked ${waited.toFixed(0)} ms after the swap, before the ${DRAIN} ms deadline`);
    assert.ok(waited < DRAIN + scaled(3000), `acked ${waited.toFixed(0)} ms after the swap`);
    await fx.waitAcked(2, { agent: s.name, subscribers: 1 });
    assert.ok(pool.lines.some((l) => l.level === 'warn' && /1 connection\(s\) on an old value still in use after the 800 ms drain deadline; destroyed/.test(l.message)),
      pool.lines.map((l) => l.message).join('\n'));

    // The held client is closed: a query on it fails, its release is
    // harmless, and its session is gone.
    await assert.rejects(held.query('SELECT 1'));
    held.release();
    await waitFor(async () => !(await appNames(s.role.role)).includes(app(1)),
      { ms: 2000, what: 'the destroyed session gone' });

    await loops.waitQueries(loops.queries());
    const sum = await loops.stop();
    assert.equal(sum.failures, 0, JSON.stringify(loops.failures));
    assertNoSecret([...poolTexts(pool), ...lost.map((e) => e.message)], [s.role.password, pw.password]);
    console.log(`drain deadline ${DRAIN} ms: acked ${waited.toFixed(0)} ms after the swap`);
  } finally {
    await pool.end();
  }
});

test('a value valid at the agent that does not connect here: nacked (masked), given up after AUTH_TRIES, the old value keeps serving', { skip: fixtureSkip, timeout: scaled(60000) }, async () => {
  // The agent has the password in its environment (PGPASSWORD, which
  // libpq reads); the app has a wrong one there (which pg reads).  A value
  // without a password then validates in the agent and is refused to the
  // app: 28P01, an authentication failure.
  const role = await fx.createRole();
  const wrong = `wrong-${role.password}`;
  const name = 'nack';
  const path = `${name}.env`;
  await fx.writeEnv({ path, vars: { DATABASE_URL: withApp(role.url, 1) } });
  const agent = await fx.startAgent({ agent: name, envFiles: [path], env: { PGPASSWORD: role.password } });
  await fx.waitPublished(1, { agent: name });
  const saved = process.env.PGPASSWORD;
  process.env.PGPASSWORD = wrong;
  const pool = openPool(agent.socket, { max: 4 });
  try {
    const loops = startLoops(pool, { threads: 4 });
    await fx.waitAcked(1, { agent: name, subscribers: 1 });
    await loops.waitQueries(20);

    const noPassword = role.url.replace(`:${encodeURIComponent(role.password)}@`, '@');
    assert.notEqual(noPassword, role.url);
    await fx.writeEnv({ path, vars: { DATABASE_URL: withApp(noPassword, 2) } });
    await fx.waitPublished(2, { agent: name });

    // Nacked on each failure, then given up.
    const gaveUp = await waitFor(() => pool.lines.find((l) => /refused \d+ times/.test(l.message)),
      { ms: 20000, what: 'the pool giving generation 2 up', describe: () => pool.lines.map((l) => l.message).join(' | ') });
    assert.match(gaveUp.message, new RegExp(`generation 2 refused ${AUTH_TRIES} times .*password authentication failed.*not trying it again`));
    const nacks = eventsOf(pool, 'nack').map((e) => e.info);
    assert.equal(nacks.length, AUTH_TRIES, JSON.stringify(nacks));
    assert.ok(nacks.every((n) => n.generation === 2 && /cannot connect with generation 2 from pid \d+: .*28P01|password authentication failed/.test(n.message)), JSON.stringify(nacks));
    assert.deepEqual(nacks.map((n) => n.willRetry), [...new Array(AUTH_TRIES - 1).fill(true), false]);

    // The agent shows the nack; the pool stays on generation 1.
    const t = await waitFor(async () => {
      const x = await fx.targetStatus('DATABASE_URL', name);
      return x.lagging?.[0]?.nacked === 2 && x;
    }, { ms: 5000, what: 'the nack in the agent\'s status' });
    assert.deepEqual([t.generation, t.subscribers, t.acked], [2, 1, 0]);
    assert.match(t.lagging[0].error, /password authentication failed/);
    assert.equal(pool.generation, 1);
    const q = loops.queries();
    await loops.waitQueries(q + 50);
    assert.deepEqual(await appNames(role.role).then((a) => [...new Set(a)]), [app(1)]);
    const nackCount = nacks.length;
    await sleep(500);
    assert.equal(eventsOf(pool, 'nack').length, nackCount, 'no try after giving up');

    // A value that works here is taken at once.
    await fx.writeEnv({ path, vars: { DATABASE_URL: withApp(role.url, 3) } });
    await fx.waitAcked(3, { agent: name, subscribers: 1 });
    assert.equal(pool.generation, 3);
    await loops.waitQueries(loops.queries());
    const sum = await loops.stop();
    assert.equal(sum.failures, 0, JSON.stringify(loops.failures));
    assertNoSecret([...poolTexts(pool), JSON.stringify(t), await fx.agentLog(name)], [role.password, wrong]);
  } finally {
    if (saved === undefined) delete process.env.PGPASSWORD;
    else process.env.PGPASSWORD = saved;
    await pool.end();
  }
});

test('dbswapctl reconnect: every connection replaced (drained), then acked; no failed query', { skip: fixtureSkip, timeout: scaled(60000) }, async () => {
  const s = await setUp('reconnect');
  const pool = openPool(s.agent.socket, { max: 4 });
  const loops = startLoops(pool, { threads: 4 });
  try {
    await fx.waitAcked(1, { agent: s.name, subscribers: 1 });
    await loops.waitQueries(100);
    const before = (await fx.activity(s.role.role)).map((x) => x.pid);
    assert.ok(before.length >= 1);
    const r = await fx.ctl(['reconnect', 'DATABASE_URL', '--wait=20'], { agent: s.name, timeout: 30 });
    assert.equal(r.code, 0, r.stderr);
    const swap = await waitEvent(pool, 'swap', (i) => i.generation === 2);
    assert.equal(swap.info.reason, 'reconnect');
    assert.equal(swap.info.immediate, false);
    await fx.waitAcked(2, { agent: s.name, subscribers: 1 });
    await waitFor(async () => (await fx.activity(s.role.role)).every((x) => !before.includes(x.pid)),
      { ms: 2000, what: 'no connection from before the reconnect' });
    await loops.waitQueries(loops.queries() + 50);
    const sum = await loops.stop();
    assert.equal(sum.failures, 0, JSON.stringify(loops.failures.slice(0, 5)));
    assertNoSecret([...poolTexts(pool), r.stdout, r.stderr], [s.role.password]);
  } finally {
    await loops.stop();
    await pool.end();
  }
});

test('the current value refused for a second (LOGIN revoked, sessions terminated): checkouts wait and are served once it connects again', { skip: fixtureSkip, timeout: scaled(60000) }, async () => {
  const s = await setUp('nologin');
  const pool = openPool(s.agent.socket, { max: 8, connectionTimeoutMillis: 0 });
  const loops = startLoops(pool, { threads: 8 });
  const ident = `"${s.role.role}"`;
  try {
    await fx.waitAcked(1, { agent: s.name, subscribers: 1 });
    await loops.waitQueries(100);
    await fx.sql(`ALTER ROLE ${ident} NOLOGIN`);
    const t0 = now();
    await fx.terminateSessions(s.role.role);
    await waitFor(() => pool.lines.some((l) => /cannot open a connection with generation 1: .*not permitted to log in.*checkouts wait up to 5000 ms/.test(l.message)),
      { ms: 5000, what: 'the pool waiting for connections', describe: () => pool.lines.map((l) => l.message).join(' | ') });
    const stalled = loops.queries();
    await waitFor(() => now() - t0 > 1000, { ms: 5000, every: 20 });
    await fx.sql(`ALTER ROLE ${ident} LOGIN`);
    const t1 = now();
    await loops.waitQueries(stalled + 50, 10000);
    const resumed = now() - t1;
    const sum = await loops.stop();
    assert.ok(sum.failures_by_loop.every((n) => n <= 1), `failures per loop ${JSON.stringify(sum.failures_by_loop)}: ${JSON.stringify(loops.failures.slice(0, 5))}`);
    assert.ok(loops.failures.every((f) => f.code !== '28000'), `a checkout failed with the refusal: ${JSON.stringify(loops.failures.slice(0, 5))}`);
    assert.equal(pool.generation, 1);
    assertNoSecret(poolTexts(pool), [s.role.password]);
    console.log(`LOGIN revoked for ${(t1 - t0).toFixed(0)} ms: ${sum.failures} failed queries (the terminated sessions'), queries flowing again ${resumed.toFixed(0)} ms after LOGIN came back`);
  } finally {
    await loops.stop();
    await pool.end();
  }
});

test('a reconnect generation sent again while its swap drains (a new subscribe, a new session) is not swapped to twice', { skip: fixtureSkip, timeout: scaled(60000) }, async () => {
  const s = await setUp('reswap');
  const pool = openPool(s.agent.socket, { drainTimeoutMillis: scaled(20000) });
  let held = null;
  try {
    await pool.query('select 1');
    await fx.waitAcked(1, { agent: s.name, subscribers: 1 });
    held = await pool.connect(); // generation 1 drains while it is out
    const since = pool.events.length;
    const { generation } = await pool.client.reconnect('DATABASE_URL');
    assert.equal(generation, 2);
    await waitEvent(pool, 'swap', (i) => i.generation === 2, { since });
    // The agent sends generation 2 again (as after a lost connection).
    await pool.client.subscribe('DATABASE_URL');
    await sleep(scaled(300));
    assert.deepEqual(eventsOf(pool, 'swap', since).map((e) => `${e.info.generation}/${e.info.reason}`), ['2/reconnect']);
    held.release();
    held = null;
    await waitEvent(pool, 'ack', (i) => i.generation === 2, { since });
    await fx.waitAcked(2, { agent: s.name, subscribers: 1 });
    assert.deepEqual(eventsOf(pool, 'swap', since).length, 1);
  } finally {
    held?.release();
    await pool.end();
  }
});
