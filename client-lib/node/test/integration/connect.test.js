// How a value's connections are opened, against the real primary with
// the fake agent of the unit tests publishing (the values are made up
// here, so that no agent's validation stands in the way):
//   - sslmode=prefer (the default) against a server without TLS: the
//     connections a new value opens at once all succeed, each retrying
//     without TLS when the server says it has none, not only the first.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connectFixture, fixtureSkip, scaled } from './fixture.js';
import { FakeAgent } from '../helpers/fake-agent.js';
import { eventsOf, openPool, waitEvent } from './helpers.js';

const T = 'DATABASE_URL';

let fx;
before(async () => {
  if (!fixtureSkip) fx = await connectFixture();
});
after(async () => {
  await fx?.close();
});

test('sslmode=prefer, a server without TLS: 8 connections of a new value opened at once all succeed', { skip: fixtureSkip, timeout: scaled(60000) }, async () => {
  const role = await fx.createRole();
  assert.doesNotMatch(role.url, /sslmode/, 'the default sslmode, prefer');
  const agent = await new FakeAgent().listen();
  agent.define(T, role.url);
  // min 8: the pool opens 8 connections of the value at once before it
  // switches to it.
  const pool = openPool(agent.path, { min: 8, max: 8, idleTimeoutMillis: 60000 });
  try {
    await waitEvent(pool, 'ack', (i) => i.generation === 1);
    const opened = eventsOf(pool, 'connect').length;
    assert.equal(opened, 8, `connections opened: ${opened} of 8; log: ${pool.lines.map((l) => l.message).join(' | ')}`);
    assert.equal(pool.idleCount, 8);
    // And checkouts of a new value at once (the pool's own, after a
    // switch with nothing warm: a failover).
    const clients = await Promise.all(Array.from({ length: 8 }, () => pool.connect()));
    for (const c of clients) c.release();
  } finally {
    await pool.end();
    await agent.stop();
    agent.cleanup();
  }
});
