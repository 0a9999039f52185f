// An agent that breaks the protocol, seen by the pool: a fake agent
// (test/helpers/fake-agent.js) publishing a real role's URL, and
// createPool() serving real queries through it.  test/client.test.js
// covers what the Client does with each violation; here, what the pool
// does: it says so (an 'error' event with the client's DbswapError), never
// crashes, never hangs a checkout, and keeps serving the value it has
// with the connections it has, through the Client's reconnection.
//
//   - an oversized frame, garbage msgpack, a message only clients send,
//     a second hello, an update numbered by another agent instance, and
//     a hello answered with another version when the client reconnects;
//   - replies to ids never sent: an "ok" is ignored (as libdbswap does),
//     an "error" is reported; the connection stays;
//   - a new pool (no value yet) whose agent breaks the protocol before
//     any value: its checkouts fail at once with a DbswapError naming the
//     violation, even with connectionTimeoutMillis 0 (pg's "wait for
//     ever"); one whose agent accepts the connection and never answers
//     (a stopped agent's socket still accepts): within the client's
//     request timeout (REQUEST_TIMEOUT_MS), and the pool follows the
//     agent once it answers.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { DbswapError, REQUEST_TIMEOUT_MS } from '../../index.js';
import { FakeAgent, withId } from '../helpers/fake-agent.js';
import { connectFixture, fixtureSkip, scaled } from './fixture.js';
import {
  assertNoSecret, eventsOf, now, openPool, poolTexts, startLoops, waitFor,
} from './helpers.js';

const T = 'DATABASE_URL';

let fx;
const cleanups = [];
before(async () => {
  if (!fixtureSkip) fx = await connectFixture();
});
after(async () => {
  for (const fn of cleanups.reverse()) await fn();
  await fx?.close();
});

async function fakeAgent(o) {
  const agent = await new FakeAgent(o).listen();
  cleanups.push(async () => {
    await agent.stop();
    agent.cleanup();
  });
  return agent;
}

/** A fake agent with a real role's URL, a pool on it with 4 busy loops,
 * generation 1 acked. */
async function servingPool() {
  const role = await fx.createRole();
  const agent = await fakeAgent();
  agent.define(T, role.url);
  const pool = openPool(agent.path, { max: 4 });
  cleanups.push(() => pool.end().catch(() => {}));
  const loops = startLoops(pool, { threads: 4 });
  cleanups.push(() => loops.stop());
  await agent.waitFor((m) => m.type === 'ack' && m.generation === 1, scaled(10000));
  await loops.waitQueries(50);
  return { role, agent, pool, loops };
}

/** The latest connection of the fake agent (the client's). */
const connOf = (agent) => [...agent.conns].at(-1);

test('an established pool through violations by its agent: an error each time, a new connection, the same value and connections, no failed query', { skip: fixtureSkip, timeout: scaled(60000) }, async () => {
  const { role, agent, pool, loops } = await servingPool();
  const connects = eventsOf(pool, 'connect').length;
  const cases = [
    ['an oversized frame', (c) => c.sendRaw(Buffer.from([0x00, 0x01, 0x00, 0x01])), /frame of 65537 bytes announced/],
    ['garbage msgpack', (c) => c.sendRaw(Buffer.from([0, 0, 0, 4, 0x81, 0xa1, 0x61, 0xc1])), /reserved/],
    ['a truncated frame body', (c) => c.sendRaw(Buffer.from([0, 0, 0, 3, 0x81, 0xa4, 0x74])), /./],
    ['a message only clients send', (c) => c.sendUnchecked({ type: 'ack', target: T, generation: 1, instance: agent.instance }), /only clients send/],
    ['a second hello', (c) => c.send({ type: 'hello', version: 2, name: 'x', pid: 1, instance: agent.instance }), /second hello/],
    ['an update numbered by another instance', (c) => c.send({ type: 'update', target: T, generation: 7, conninfo: 'postgresql://evil:pw@127.0.0.1:1/x', instance: 'ffffffffffffffff' }), /another agent instance/],
  ];
  for (const [what, send, pattern] of cases) {
    const since = pool.events.length;
    const before = agent.connections;
    const acks = agent.acks(T).length;
    const q = loops.queries();
    send(connOf(agent));
    const err = await waitFor(() => eventsOf(pool, 'error', since).find((e) => e.info?.code === 'protocol'),
      { ms: 3000, what: `the pool's error for ${what}` });
    assert.ok(err.info instanceof DbswapError, what);
    assert.match(err.info.message, pattern, what);
    assert.match(err.info.message, /bad message from the agent at .*; reconnecting/, what);
    // A new connection, subscribed again, the same value acked again
    // (quietly: no swap).
    await waitFor(() => agent.connections > before && pool.client.connected && agent.acks(T).length > acks,
      { ms: 5000, what: `the re-subscription and ack after ${what}` });
    await loops.waitQueries(q + 20);
    assert.deepEqual(eventsOf(pool, 'swap', since), [], `no swap after ${what}`);
    assert.equal(pool.generation, 1);
  }

  // A hello answered with another version, as the client reconnects: an
  // error each attempt, the pool serving meanwhile; then a good hello.
  {
    const since = pool.events.length;
    const q = loops.queries();
    const good = agent.handle.hello;
    agent.handle.hello = (c, m) => c.send(withId({ type: 'hello', version: 3, name: 'dbswapd 9', pid: 1, instance: agent.instance }, m));
    connOf(agent).destroy();
    await waitFor(() => eventsOf(pool, 'error', since).filter((e) => /answered hello with version 3, not 2/.test(e.info?.message)).length >= 2,
      { ms: 5000, what: 'errors for the version of two hellos' });
    await loops.waitQueries(q + 20);
    const acks = agent.acks(T).length;
    agent.handle.hello = good;
    await waitFor(() => pool.client.connected && agent.acks(T).length > acks, { ms: 5000, what: 'back with a good hello' });
    assert.deepEqual(eventsOf(pool, 'swap', since), []);
  }

  await loops.waitQueries(loops.queries() + 20);
  const sum = await loops.stop();
  assert.equal(sum.failures, 0, JSON.stringify(loops.failures.slice(0, 5)));
  assert.equal(eventsOf(pool, 'connect').length, connects, 'no new database connection');
  assert.equal(sum.current_user_at_end, role.role);
  assert.ok(agent.acks(T).every((a) => a.generation === 1 && a.instance === agent.instance));
  assertNoSecret(poolTexts(pool), [role.password, 'evil:pw']);
});

test('replies to ids never sent: an "ok" is ignored, an "error" reported; the connection stays and requests are answered', { skip: fixtureSkip, timeout: scaled(30000) }, async () => {
  const { agent, pool, loops } = await servingPool();
  const since = pool.events.length;
  const before = agent.connections;
  connOf(agent).send({ type: 'ok', id: 987654 });
  connOf(agent).send({ type: 'error', id: 987655, code: 'internal', message: 'out of memory' });
  const err = await waitFor(() => eventsOf(pool, 'error', since).find((e) => e.info?.code === 'internal'),
    { ms: 3000, what: 'the pool\'s error for the stray error reply' });
  assert.match(err.info.message, /internal: out of memory/);
  assert.ok(typeof (await pool.client.ping({ timeout: scaled(3000) })) === 'number');
  assert.equal(agent.connections, before, 'the same connection');
  assert.equal(eventsOf(pool, 'error', since).length, 1, 'the "ok" said nothing');
  const sum = await loops.stop();
  assert.equal(sum.failures, 0);
});

test('a new pool whose agent breaks the protocol before any value: checkouts fail at once with a DbswapError naming it, never hang', { skip: fixtureSkip, timeout: scaled(60000) }, async () => {
  const cases = [
    ['a hello of another version', (a) => { a.handle.hello = (c, m) => c.send(withId({ type: 'hello', version: 3, name: 'x', pid: 1, instance: a.instance }, m)); }, /protocol: .*answered hello with version 3, not 2/],
    ['garbage for a hello', (a) => { a.handle.hello = (c) => c.sendRaw(Buffer.from([0, 0, 0, 4, 0x81, 0xa1, 0x61, 0xc1])); }, /protocol: .*reserved/],
    ['an oversized frame for a hello', (a) => { a.handle.hello = (c) => c.sendRaw(Buffer.from([0, 1, 0, 1])); }, /protocol: .*65537 bytes/],
    ['both versions refused', (a) => { a.handle.hello = (c, m) => { c.send(withId({ type: 'error', code: 'version', message: 'speaks version 7 only' }, m)); c.close(); }; }, /version: .*speaks version 7 only/],
  ];
  for (const [what, setUp, pattern] of cases) {
    const agent = await fakeAgent();
    agent.define(T, 'postgresql://app:never-used-pw@127.0.0.1:1/x');
    setUp(agent);
    const pool = openPool(agent.path, { connectionTimeoutMillis: 0 });
    cleanups.push(() => pool.end().catch(() => {}));
    const t0 = now();
    const outcome = await Promise.race([
      pool.connect().then((c) => { c.release(); return 'connected'; }, (e) => e),
      new Promise((resolve) => setTimeout(() => resolve('no answer'), scaled(3000))),
    ]);
    const took = now() - t0;
    assert.ok(outcome instanceof DbswapError, `${what}: the checkout ${outcome instanceof Error ? `failed with ${outcome}` : `gave ${outcome}`} after ${took.toFixed(0)} ms`);
    assert.equal(outcome.code, 'no-value', what);
    assert.match(outcome.message, pattern, what);
    assert.ok(outcome.cause instanceof DbswapError, what);
    // A later checkout fails at once too.
    const t1 = now();
    await assert.rejects(pool.query('SELECT 1'), (e) => e.code === 'no-value');
    assert.ok(now() - t1 < scaled(500), `${what}: a later checkout took ${(now() - t1).toFixed(0)} ms`);
    assert.ok(eventsOf(pool, 'error').length >= 1, `${what}: an error event`);
    assertNoSecret(poolTexts(pool), ['never-used-pw']);
    await pool.end();
  }
});

test('a new pool whose agent never answers hello: checkouts fail after the request timeout, never hang; the pool follows the agent once it answers', { skip: fixtureSkip, timeout: scaled(60000) }, async () => {
  const role = await fx.createRole();
  const agent = await fakeAgent();
  agent.define(T, role.url);
  const answer = agent.handle.hello;
  agent.handle.hello = () => {}; // read, never answered
  const pool = openPool(agent.path, { connectionTimeoutMillis: 0 });
  cleanups.push(() => pool.end().catch(() => {}));
  const t0 = now();
  const outcome = await Promise.race([
    pool.connect().then((c) => { c.release(); return 'connected'; }, (e) => e),
    new Promise((resolve) => setTimeout(() => resolve('no answer'), REQUEST_TIMEOUT_MS + scaled(3000))),
  ]);
  const took = now() - t0;
  assert.ok(outcome instanceof DbswapError, `the checkout ${outcome instanceof Error ? `failed with ${outcome}` : `gave ${outcome}`} after ${took.toFixed(0)} ms`);
  assert.equal(outcome.code, 'no-value');
  assert.match(outcome.message, /timeout: the agent at .* did not answer hello within 5000 ms/);
  assert.ok(took >= REQUEST_TIMEOUT_MS - 50, `failed after ${took.toFixed(0)} ms, before the request timeout`);
  assert.ok(pool.lines.some((l) => /did not answer hello within/.test(l.message)), JSON.stringify(pool.lines));

  // The agent answers from now on: the pool gets its value and serves.
  agent.handle.hello = answer;
  await waitFor(() => pool.generation === 1, { ms: 10000, what: 'the value once the agent answers' });
  const r = await pool.query('SELECT current_user AS u');
  assert.equal(r.rows[0].u, role.role);
  assertNoSecret(poolTexts(pool), [role.password]);
});
