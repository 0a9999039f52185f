// Scenario 'driver-errors-masked' (tests/integration/conformance.py): the
// value's host is a socket directory whose name holds the password (a
// symlink there to the primary's socket), so pg's connect errors quote
// part of the value (`connect ENOENT /tmp/dbswap-<password>-.../.s.PGSQL.N`,
// with `address` the same path).  The pool connects and serves; then the
// symlink goes while every connection is held, and a checkout must open
// a new one: it fails after connectionTimeoutMillis with pg's error,
// which names the failure (ENOENT, the socket's name) and holds no
// password in its message, stack, properties or util.inspect(); nor do
// the pool's log lines and events.  The same through pool.query().  And
// a first value that does not connect from here at all (the symlink gone
// before the pool starts): the checkout's no-value error, its cause (pg's
// error) included, holds no password either.
// Run by tests/integration/test_node.py.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { inspect } from 'node:util';
import { connectFixture, fixtureSkip, scaled } from './fixture.js';
import { assertNoSecret, openPool, poolTexts } from './helpers.js';

let fx;
before(async () => {
  if (!fixtureSkip) fx = await connectFixture();
});
after(async () => {
  await fx?.close();
});

/** Fails naming what held the secret, without saying it. */
function assertHidden(text, secret, what) {
  assert.ok(!text.includes(secret), `the password is in ${what}: ${text.split(secret).join('<PASSWORD>')}`);
}

/** Every string form of err an app might print or log. */
function errorTexts(err) {
  return {
    message: String(err?.message),
    stack: String(err?.stack),
    String: String(err),
    inspect: inspect(err, { depth: 6 }),
    path: String(err?.path),
    address: String(err?.address),
    json: JSON.stringify(err),
  };
}

test('driver-errors-masked: a connect error quoting a socket dir that holds the password reaches the app masked', { skip: fixtureSkip, timeout: scaled(60000) }, async () => {
  const role = await fx.createRole();
  const cluster = await fx.cluster();
  const dir = fs.mkdtempSync(`/tmp/dbswap-${role.password}-`);
  const link = path.join(dir, `.s.PGSQL.${cluster.port}`);
  let pool;
  const held = [];
  try {
    fs.chmodSync(dir, 0o755);
    fs.symlinkSync(path.join(cluster.sockdir, `.s.PGSQL.${cluster.port}`), link);
    await fx.writeEnv({
      vars: { DATABASE_URL: `host=${dir} port=${cluster.port} user=${role.role} password=${role.password} dbname=postgres` },
    });
    const agent = await fx.startAgent();
    await fx.waitPublished(1);

    pool = openPool(agent.socket, { min: 1, max: 4, connectionTimeoutMillis: scaled(3000) });
    const first = await pool.connect();
    held.push(first);
    const r = await first.query('SELECT current_user AS u');
    assert.equal(r.rows[0].u, role.role);
    // Every connection held: the next checkout must open one.
    while (pool.idleCount > 0) held.push(await pool.connect());
    assert.ok(pool.totalCount < 4, `${pool.totalCount} connections: none left to open`);

    fs.unlinkSync(link);
    const t0 = performance.now();
    const err = await pool.connect().then(
      (c) => { held.push(c); return null; },
      (e) => e);
    const took = performance.now() - t0;
    assert.ok(err instanceof Error, 'a checkout with no socket succeeded');
    assert.ok(took < scaled(10000), `the checkout failed after ${took} ms`);
    for (const [what, text] of Object.entries(errorTexts(err))) {
      assertHidden(text, role.password, `the error's ${what}`);
    }
    const message = err.message;
    assert.equal(err.code, 'ENOENT', message);
    assert.match(message, /ENOENT/);
    assert.match(message, /\.s\.PGSQL\./);

    // pool.query() checks out for the app: the same error.
    const qerr = await pool.query('SELECT 1').then(() => null, (e) => e);
    assert.ok(qerr instanceof Error, 'a query with no socket succeeded');
    for (const [what, text] of Object.entries(errorTexts(qerr))) {
      assertHidden(text, role.password, `pool.query()'s error's ${what}`);
    }
    assert.match(qerr.message, /ENOENT/);

    for (const [i, text] of poolTexts(pool).entries()) {
      assertHidden(String(text), role.password, `the pool's log and events (${i})`);
    }
    assertNoSecret(poolTexts(pool), [role.password], "pool's log and events");
  } finally {
    for (const c of held) c.release();
    await pool?.end();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('driver-errors-masked: a first value that does not connect here fails checkouts with no password, its cause included', { skip: fixtureSkip, timeout: scaled(60000) }, async () => {
  const role = await fx.createRole();
  const cluster = await fx.cluster();
  const dir = fs.mkdtempSync(`/tmp/dbswap-${role.password}-`);
  const link = path.join(dir, `.s.PGSQL.${cluster.port}`);
  let pool;
  try {
    fs.chmodSync(dir, 0o755);
    fs.symlinkSync(path.join(cluster.sockdir, `.s.PGSQL.${cluster.port}`), link);
    await fx.writeEnv({
      path: 'first.env',
      vars: { DATABASE_URL: `host=${dir} port=${cluster.port} user=${role.role} password=${role.password} dbname=postgres` },
    });
    const agent = await fx.startAgent({ agent: 'first', envFiles: ['first.env'] });
    await fx.waitPublished(1, { agent: 'first' });
    fs.unlinkSync(link);

    pool = openPool(agent.socket, { min: 1, max: 4, connectionTimeoutMillis: scaled(3000) });
    pool.on('error', () => {});
    const err = await pool.connect().then((c) => { c.release(); return null; }, (e) => e);
    assert.ok(err instanceof Error, 'a checkout with no socket succeeded');
    for (const [what, text] of Object.entries(errorTexts(err))) {
      assertHidden(text, role.password, `the error's ${what}`);
    }
    if (err.cause) {
      for (const [what, text] of Object.entries(errorTexts(err.cause))) {
        assertHidden(text, role.password, `the error's cause's ${what}`);
      }
    }
    assert.match(`${err.message} ${err.cause?.message}`, /ENOENT/);
    for (const [i, text] of poolTexts(pool).entries()) {
      assertHidden(String(text), role.password, `the pool's log and events (${i})`);
    }
  } finally {
    await pool?.end();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
