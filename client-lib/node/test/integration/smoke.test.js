// The fixture itself, with plain pg and no dbswap package: a role, an env
// file, an agent, its status, a query with the role's URL, one rotation,
// and the fixture's errors.  Run by tests/integration/test_node.py.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { connectFixture, fixtureSkip, FixtureError, scaled, tmpdir } from './fixture.js';

let fx;

before(async () => {
  if (!fixtureSkip) fx = await connectFixture();
});

after(async () => {
  await fx?.close();
});

async function currentUser(url) {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: scaled(5000) });
  await client.connect();
  try {
    const r = await client.query('SELECT current_user AS u');
    return r.rows[0].u;
  } finally {
    await client.end();
  }
}

test('an agent publishes a role\'s URL, and pg connects with it', { skip: fixtureSkip }, async () => {
  const info = await fx.info();
  assert.equal(info.tmpdir, tmpdir);

  const role = await fx.createRole();
  assert.match(role.role, /^app_/);
  assert.ok(role.url.startsWith('postgresql://'));

  const env = await fx.writeEnv({ vars: { DATABASE_URL: role.url } });
  assert.equal(env.path, `${tmpdir}/app.env`);
  const agent = await fx.startAgent();
  assert.ok(agent.running, JSON.stringify(agent));
  await fx.waitPublished(1);

  const t = await fx.targetStatus('DATABASE_URL');
  assert.equal(t.generation, 1, JSON.stringify(t));
  assert.equal(t.valid, true);
  assert.equal(t.state, 'ok');
  assert.ok(!t.conninfo.includes(role.password), 'status masks the password');
  const st = await fx.status();
  assert.equal(st.agent.pid, agent.pid);

  assert.equal(await currentUser(role.url), role.role);
});

test('a rotation: new password on the server, then the file', { skip: fixtureSkip }, async () => {
  const role = await fx.createRole();
  await fx.writeEnv({ path: 'rot.env', vars: { DATABASE_URL: role.url } });
  await fx.startAgent({ agent: 'rot', envFiles: ['rot.env'] });
  await fx.waitPublished(1, { agent: 'rot' });

  const next = await fx.rotate(role.role, { path: 'rot.env' });
  assert.notEqual(next.password, role.password);
  await fx.waitPublished(2, { agent: 'rot' });
  const t = await fx.targetStatus('DATABASE_URL', 'rot');
  assert.equal(t.generation, 2);

  assert.equal(await currentUser(next.url), role.role);
  await assert.rejects(currentUser(role.url), (err) => err.code === '28P01');

  // A pg.Pool with the new URL, and the sessions the harness sees.
  const pool = new pg.Pool({ connectionString: next.url, max: 2 });
  try {
    const c = await pool.connect();
    try {
      assert.equal(await fx.sessions(role.role), 1);
    } finally {
      c.release();
    }
  } finally {
    await pool.end();
  }
});

test('a C subscriber acks each generation; a pg load runs through a rotation', { skip: fixtureSkip }, async () => {
  const role = await fx.createRole();
  await fx.writeEnv({ path: 'sub.env', vars: { DATABASE_URL: role.url } });
  await fx.startAgent({ agent: 'sub', envFiles: ['sub.env'] });
  await fx.startSubscriber({ agent: 'sub' });
  const t1 = await fx.waitAcked(1, { agent: 'sub', subscribers: 1 });
  assert.equal(t1.acked, 1);

  // load.js on a plain pg.Pool: its connections stay up through a
  // rotation (the server checks passwords at login only).
  await fx.startLoad({ pool: 'pg', url: role.url, args: ['--threads', 2, '--tx', '--pause-ms', 2] });
  const p = await fx.loadProgress('load', { queriesOver: 20 });
  assert.equal(p.failures, 0, JSON.stringify(p));
  await fx.rotate(role.role, { path: 'sub.env' });
  await fx.waitAcked(2, { agent: 'sub', subscribers: 1 });
  await fx.loadProgress('load', { queriesOver: p.queries + 20 });
  const end = await fx.stopLoad();
  assert.equal(end.returncode, 0, end.stderr);
  assert.equal(end.summary.failures, 0);
  assert.equal(end.summary.current_user_at_end, role.role);
  assert.ok(end.summary.latency_us.p50 > 0, JSON.stringify(end.summary));
});

test('the fixture reports its errors', { skip: fixtureSkip }, async () => {
  await assert.rejects(fx.request('no_such_op'), (err) => {
    assert.ok(err instanceof FixtureError);
    assert.match(err.message, /unknown op 'no_such_op'/);
    return true;
  });
  await assert.rejects(fx.request('status', { agent: 'default', bogus: 1 }),
    /unexpected keyword argument 'bogus'/);
  await assert.rejects(fx.stopAgent('nobody'), /no agent 'nobody'/);
  await assert.rejects(fx.writeEnv({ path: '../escape.env', text: 'A=1\n' }),
    /outside the test file's temp dir/);
  await assert.rejects(fx.waitLog('never logged', { timeout: 0.2 }),
    (err) => err.type === 'TimeoutError');
});
