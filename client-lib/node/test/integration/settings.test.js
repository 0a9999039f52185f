// Pool settings pushed by the agent from its env files
// (DATABASE_POOL_MAX and the rest, ipc/PROTOCOL.md "Pool settings in the
// env files"), against a real server: under 8 busy loops the pool holds
// at most DATABASE_POOL_MAX sessions, a raised limit takes effect live
// (no new generation, no swap), and an option the app gives wins over the
// agent's setting.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connectFixture, fixtureSkip, scaled } from './fixture.js';
import { eventsOf, openPool, sleep, startLoops, waitFor } from './helpers.js';

let fx;
before(async () => {
  if (!fixtureSkip) fx = await connectFixture();
});
after(async () => {
  await fx?.close();
});

const sessions = async (role) => (await fx.activity(role)).length;

test('DATABASE_POOL_MAX caps the pool under 8 busy loops and changes live; an explicit max wins', { skip: fixtureSkip, timeout: scaled(60000) }, async () => {
  const role = await fx.createRole();
  await fx.writeEnv({ vars: { DATABASE_URL: role.url, DATABASE_POOL_MAX: 3 } });
  const agent = await fx.startAgent();
  await fx.waitPublished(1);
  // No max of its own: the agent's applies.
  const pool = openPool(agent.socket, { max: undefined });
  const loops = startLoops(pool, { threads: 8 });
  try {
    await fx.waitAcked(1, { subscribers: 1 });
    await waitFor(() => pool.options.max === 3, { ms: 5000, what: 'max 3 from the agent' });
    await loops.waitQueries(200);
    let most = 0;
    for (let i = 0; i < 10; i++) {
      most = Math.max(most, await sessions(role.role), pool.totalCount);
      await sleep(50);
    }
    assert.ok(most <= 3, `${most} sessions with DATABASE_POOL_MAX=3`);

    // Raised live: the pool grows to it (8 loops want more), with no new
    // generation.
    await fx.writeEnv({ vars: { DATABASE_URL: role.url, DATABASE_POOL_MAX: 5 } });
    await waitFor(() => pool.options.max === 5, { ms: 5000, what: 'max 5 from the agent' });
    await waitFor(async () => (await sessions(role.role)) === 5, { ms: 10000, what: '5 sessions' });
    const t = await fx.targetStatus();
    assert.equal(t.generation, 1, 'settings publish no generation');
    assert.equal(t.settings.pool_max, 5);
    assert.deepEqual(eventsOf(pool, 'swap').map((e) => e.info.generation), [1]);
    const sum = await loops.stop();
    assert.equal(sum.failures, 0, JSON.stringify(loops.failures.slice(0, 5)));
  } finally {
    await loops.stop();
    await pool.end();
  }

  // The app's own max wins over the agent's.
  await waitFor(async () => (await sessions(role.role)) === 0, { ms: 2000, what: 'the first pool\'s sessions gone' });
  const own = openPool(agent.socket, { max: 2 });
  const loops2 = startLoops(own, { threads: 6 });
  try {
    await loops2.waitQueries(100);
    assert.equal(own.options.max, 2);
    let most = 0;
    for (let i = 0; i < 10; i++) {
      most = Math.max(most, await sessions(role.role), own.totalCount);
      await sleep(50);
    }
    assert.ok(most <= 2, `${most} sessions with max: 2 given by the app`);
    const sum = await loops2.stop();
    assert.equal(sum.failures, 0, JSON.stringify(loops2.failures.slice(0, 5)));
  } finally {
    await loops2.stop();
    await own.end();
  }
});

test('the agent\'s 0 is libdbswap\'s: DATABASE_POOL_TIMEOUT=0 fails a checkout at once when nothing is free, DATABASE_POOL_IDLE_TIMEOUT=0 closes idle connections at once; the app\'s own 0 is pg\'s (for ever)', { skip: fixtureSkip, timeout: scaled(60000) }, async () => {
  const role = await fx.createRole();
  await fx.writeEnv({
    path: 'zero.env',
    vars: { DATABASE_URL: role.url, DATABASE_POOL_MAX: 1, DATABASE_POOL_MIN: 0, DATABASE_POOL_TIMEOUT: 0, DATABASE_POOL_IDLE_TIMEOUT: 0 },
  });
  const agent = await fx.startAgent({ agent: 'zero', envFiles: ['zero.env'] });
  await fx.waitPublished(1, { agent: 'zero' });
  const pool = openPool(agent.socket, { max: undefined, connectionTimeoutMillis: undefined });
  try {
    const c = await pool.connect();
    await waitFor(() => pool.options.max === 1, { ms: 5000, what: 'the agent\'s settings' });
    const t0 = performance.now();
    const err = await pool.connect().then((x) => { x.release(); return null; }, (e) => e);
    const took = performance.now() - t0;
    assert.match(String(err?.message), /timeout exceeded when trying to connect/, 'a second checkout with max 1 and DATABASE_POOL_TIMEOUT=0');
    assert.ok(took < scaled(500), `failed after ${Math.round(took)} ms, not at once`);
    // And a query on the one connection still works.
    assert.equal((await c.query('select 1 as x')).rows[0].x, 1);
    c.release();
    await waitFor(async () => pool.idleCount === 0 && (await sessions(role.role)) === 0,
      { ms: 2000, what: 'the idle connection closed at once (DATABASE_POOL_IDLE_TIMEOUT=0, min 0)' });
  } finally {
    await pool.end();
  }

  // The app's own 0 keeps pg's meaning: wait for ever, keep idle ones.
  const own = openPool(agent.socket, { max: undefined, connectionTimeoutMillis: 0, idleTimeoutMillis: 0 });
  try {
    const c = await own.connect();
    await waitFor(() => own.options.max === 1, { ms: 5000, what: 'the agent\'s settings' });
    let got = null;
    const second = own.connect().then((x) => { got = x; });
    await sleep(scaled(500));
    assert.equal(got, null, 'connectionTimeoutMillis: 0 given by the app waits');
    c.release();
    await second;
    got.release();
    await sleep(scaled(300));
    assert.equal(own.idleCount, 1, 'idleTimeoutMillis: 0 given by the app keeps idle connections');
  } finally {
    await own.end();
  }
});
