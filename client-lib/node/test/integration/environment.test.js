// No agent on the socket: createPool() serves from process.env's value,
// and an agent that appears later on that socket takes over (scenario
// 'no-agent-environment' of tests/integration/conformance.py).  Run by
// tests/integration/test_node.py.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connectFixture, fixtureSkip, scaled, tmpdir } from './fixture.js';
import { assertNoSecret, openPool, poolTexts, startLoops, waitFor } from './helpers.js';

let fx;

before(async () => {
  if (!fixtureSkip) fx = await connectFixture();
});

after(async () => {
  await fx?.close();
});

async function currentUser(pool) {
  const r = await pool.query('SELECT current_user AS u');
  return r.rows[0].u;
}

test('no agent: the environment\'s value serves (generation 0); an agent that comes later on the socket takes over, with no failed query', { skip: fixtureSkip, timeout: scaled(60000) }, async () => {
  const envRole = await fx.createRole();
  const agentRole = await fx.createRole();
  const socket = 'late.sock';
  const saved = process.env.DATABASE_URL;
  process.env.DATABASE_URL = envRole.url;
  const pool = openPool(`${tmpdir}/${socket}`, { max: 4 });
  let loops;
  try {
    assert.equal(await currentUser(pool), envRole.role);
    assert.equal(pool.generation, 0);
    assert.ok(pool.lines.some((l) => /environment/.test(l.message)),
      `no line says the environment's value is used: ${JSON.stringify(pool.lines)}`);

    loops = startLoops(pool, { threads: 4 });
    await loops.waitQueries(0);
    await fx.writeEnv({ path: 'late.env', vars: { DATABASE_URL: agentRole.url } });
    await fx.startAgent({ agent: 'late', envFiles: ['late.env'], socket });
    await waitFor(() => pool.generation === 1, { ms: scaled(20000), what: 'the agent\'s generation 1 in use' });
    await fx.waitAcked(1, { agent: 'late' });
    const n = loops.queries();
    await loops.waitQueries(n);
    const { failures } = loops;
    await loops.stop();
    loops = null;
    assert.deepEqual(failures, [], 'failed queries');
    assert.equal(await currentUser(pool), agentRole.role);
    assertNoSecret(poolTexts(pool), [envRole.password, agentRole.password]);
  } finally {
    await loops?.stop();
    await pool.end();
    if (saved === undefined) delete process.env.DATABASE_URL;
    else process.env.DATABASE_URL = saved;
  }
});
