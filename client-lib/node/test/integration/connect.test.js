// How a value's connections are opened, against the real primary with
// the fake agent of the unit tests publishing (the values are made up
// here, so that no agent's validation stands in the way):
//   - sslmode=prefer (the default) against a server without TLS: the
//     connections a new value opens at once all succeed, each retrying
//     without TLS when the server says it has none, not only the first;
//   - a new value one of whose first connections hangs (a TCP proxy in
//     front of the server passes the first connection and holds the
//     others: accepted, never answered), with connectionTimeoutMillis 0
//     and no connect_timeout: the pool still switches (WARM_TIMEOUT_MS
//     bounds the hung attempt) and acks.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { connectFixture, fixtureSkip, scaled } from './fixture.js';
import { FakeAgent } from '../helpers/fake-agent.js';
import * as dbswap from '../../index.js';
import { eventsOf, now, openPool, waitEvent, waitFor } from './helpers.js';

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

/** A TCP proxy to port: passes the first `pass` connections, holds the
 * others open without a byte either way (a server that accepts and
 * never answers). */
async function startProxy(port, pass) {
  const held = new Set();
  let seen = 0;
  const server = net.createServer((sock) => {
    seen++;
    sock.on('error', () => {});
    if (seen > pass) {
      held.add(sock);
      sock.on('close', () => held.delete(sock));
      return;
    }
    const up = net.connect(port, '127.0.0.1');
    up.on('error', () => sock.destroy());
    sock.on('close', () => up.destroy());
    up.on('close', () => sock.destroy());
    sock.pipe(up);
    up.pipe(sock);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    held: () => held.size,
    /** Lets the held connections go (closed). */
    drop: () => {
      for (const s of held) s.destroy();
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

test('a new value with one first connection that hangs: the pool switches once the hung attempt hits the bound, and acks', { skip: fixtureSkip, timeout: scaled(60000) }, async () => {
  const role = await fx.createRole();
  const primary = await fx.cluster('primary');
  const proxy = await startProxy(primary.port, 1);
  const url = new URL(role.url);
  url.host = `127.0.0.1:${proxy.port}`;
  // One TCP connection per connection (no TLS attempt first, so that the
  // proxy's first is the one that opens).
  url.searchParams.set('sslmode', 'disable');
  const agent = await new FakeAgent().listen();
  agent.define(T, url.href);
  // No bound from the app (connectionTimeoutMillis 0) nor from the value
  // (no connect_timeout): the pool's own, WARM_TIMEOUT_MS.
  const t0 = now();
  const pool = openPool(agent.path, { min: 2, max: 4, connectionTimeoutMillis: 0 });
  try {
    await waitFor(() => proxy.held() >= 1, { ms: 5000, what: 'a connection held by the proxy' });
    const swap = await waitEvent(pool, 'swap', (i) => i.generation === 1, { ms: 25000 });
    const took = swap.t - t0;
    assert.ok(took >= dbswap.WARM_TIMEOUT_MS - 1000, `switched after ${Math.round(took)} ms: before the hung attempt hit the bound?`);
    await agent.waitFor((m) => m.type === 'ack' && m.generation === 1, scaled(5000));
    const { rows } = await pool.query('SELECT current_user AS u');
    assert.equal(rows[0].u, role.role);
    console.log(`a hung first connection: switched after ${Math.round(took)} ms`);
  } finally {
    proxy.drop();
    await pool.end();
    await proxy.close();
    await agent.stop();
    agent.cleanup();
  }
});
