// The pool and the agent's life, against the real dbswapd:
//   - the agent SIGKILLed and started again under 8 busy loops: no failed
//     query; the pool keeps its connections (the same backends) and acks
//     the new run's generation 1 of the same value; killed again while
//     the password changes: the new run's generation 1 is a new value,
//     swapped to (drained) and acked, still with no failed query;
//   - a target the agent's --allow rules keep from the app's uid: a pool
//     on it fails its checkouts at once with DbswapError 'forbidden' (and
//     says so as an 'error' event), subscribe() rejects the same way, a
//     pool on a target the uid may follow works.  The app runs as nobody
//     (a child process: the agent takes the uid from the socket at
//     connect), so this needs root, as test_hostile.py does.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { connectFixture, fixtureSkip, scaled, tmpdir } from './fixture.js';
import {
  assertNoSecret, eventsOf, now, openPool, poolTexts, startLoops, waitFor,
} from './helpers.js';

const LOOPS = 8;
const NOBODY = 65534;
const PACKAGE_INDEX = new URL('../../index.js', import.meta.url).href;
const PACKAGE_DIR = fileURLToPath(new URL('../../', import.meta.url));

let fx;
before(async () => {
  if (!fixtureSkip) fx = await connectFixture();
});
after(async () => {
  await fx?.close();
});

async function sessionPids(role) {
  return (await fx.activity(role)).map((x) => x.pid).sort((a, b) => a - b);
}

test('the agent killed and restarted under 8 busy loops: no failed query, the same connections, the new run acked', { skip: fixtureSkip, timeout: scaled(90000) }, async () => {
  const role = await fx.createRole();
  const name = 'restart';
  const path = `${name}.env`;
  await fx.writeEnv({ path, vars: { DATABASE_URL: role.url } });
  const agent = await fx.startAgent({ agent: name, envFiles: [path] });
  await fx.waitPublished(1, { agent: name });
  // Idle connections are kept (60 s): the busy loops use them all anyway,
  // but "the same backends" must not depend on that.
  const pool = openPool(agent.socket, { max: LOOPS, idleTimeoutMillis: 60000 });
  const loops = startLoops(pool, { threads: LOOPS });
  try {
    await fx.waitAcked(1, { agent: name, subscribers: 1 });
    await loops.waitQueries(200);
    // A rotation first, so that the restarted agent's generation 1 is
    // another number than the one the pool acked (2).
    const pw1 = await fx.setPassword(role.role);
    await fx.writeEnv({ path, vars: { DATABASE_URL: pw1.url } });
    await fx.waitAcked(2, { agent: name, subscribers: 1 });
    const instance1 = pool.client.instance;
    assert.match(instance1, /^[0-9a-f]{16}$/);
    // Once the pool has stopped opening connections (none for 500 ms).
    let opened = -1;
    await waitFor(async () => {
      const n = eventsOf(pool, 'connect').length;
      const still = n === opened;
      opened = n;
      return still;
    }, { ms: 10000, every: 500, what: 'the pool to stop opening connections' });
    const since = pool.events.length;
    const pids = await sessionPids(role.role);
    assert.ok(pids.length >= 1 && pids.length <= LOOPS, JSON.stringify(pids));
    assert.equal(pool.totalCount, pids.length);

    // Killed: the pool serves on without it.
    await fx.killAgent(name);
    await waitFor(() => !pool.client.connected, { ms: 5000, what: 'the client to see the agent gone' });
    await loops.waitQueries(loops.queries() + 200);
    const t0 = now();
    await fx.startAgent({ agent: name, envFiles: [path] });
    await fx.waitPublished(1, { agent: name });
    const t = await fx.waitAcked(1, { agent: name, subscribers: 1, timeout: 10 });
    const reacked = now() - t0;
    const st = await fx.status(name);
    assert.notEqual(st.agent.instance, instance1, 'a new run, a new instance');
    assert.equal(pool.client.instance, st.agent.instance);
    assert.deepEqual([t.generation, t.subscribers, t.acked, t.stale_acks], [1, 1, 1, 0], JSON.stringify(t));
    // Same value: no swap, no new connection, the same backends.
    assert.deepEqual(eventsOf(pool, 'swap', since), [], 'the same value must not swap');
    assert.equal(eventsOf(pool, 'connect', since).length, 0, 'no new connection for the same value');
    assert.deepEqual(await sessionPids(role.role), pids, 'the same backends');
    await loops.waitQueries(loops.queries() + 100);

    // Killed, and the password changed while it is away: the new run's
    // generation 1 is another value, swapped to.
    await fx.killAgent(name);
    const pw = await fx.setPassword(role.role);
    await fx.writeEnv({ path, vars: { DATABASE_URL: pw.url } });
    await loops.waitQueries(loops.queries() + 100);
    const since2 = pool.events.length;
    await fx.startAgent({ agent: name, envFiles: [path] });
    await fx.waitPublished(1, { agent: name });
    await fx.waitAcked(1, { agent: name, subscribers: 1 });
    const swaps = eventsOf(pool, 'swap', since2).map((e) => e.info);
    assert.equal(swaps.length, 1, JSON.stringify(swaps));
    assert.equal(swaps[0].generation, 1);
    assert.equal(swaps[0].immediate, false);
    await waitFor(async () => (await sessionPids(role.role)).every((p) => !pids.includes(p)),
      { ms: 2000, what: 'no session of the old password after the ack' });
    await loops.waitQueries(loops.queries() + 100);

    const sum = await loops.stop();
    assert.equal(sum.failures, 0, JSON.stringify(loops.failures.slice(0, 5)));
    assert.equal(sum.current_user_at_end, role.role);
    assertNoSecret(poolTexts(pool), [role.password, pw1.password, pw.password]);
    console.log(`agent SIGKILLed and restarted: the same value acked ${reacked.toFixed(0)} ms after the restart began, ` +
      `${pids.length} connection(s) kept; then a new value while it was down, swapped; ${sum.queries} queries, 0 failed`);
  } finally {
    await loops.stop();
    await pool.end();
  }
});

// The app, as nobody: a pool on a forbidden target, a subscribe to it,
// and a pool on a target it may follow.  Prints one JSON line.
const CHILD = `
import { createPool, Client } from ${JSON.stringify(PACKAGE_INDEX)};
const socket = process.argv[1];
const out = { uid: process.getuid() };
const lines = [];
const log = (level, m) => lines.push(level + ': ' + m);
const time = async (fn) => { const t0 = performance.now(); try { return { value: await fn() }; } catch (err) { return { err: { name: err.name, code: err.code, message: err.message } }; } finally { out.ms = Math.round(performance.now() - t0); } };

const pool = createPool({ socket, name: 'forbidden-app', log });
const errors = [];
pool.on('error', (e) => errors.push({ code: e.code, message: e.message }));
const first = pool.connect();
out.connect = await time(() => first.then((c) => { c.release(); return 'connected'; }));
out.connectMs = out.ms;
out.query = await time(() => pool.query('SELECT 1'));
out.queryMs = out.ms;
out.poolErrors = errors;
await pool.end();

const client = new Client({ socket, name: 'forbidden-client', log });
out.subscribe = await time(() => client.subscribe('DATABASE_URL'));
out.subscribeMs = out.ms;
await client.close();

const other = createPool({ socket, target: 'OTHER_URL', name: 'allowed-app', log });
out.other = await time(async () => (await other.query('SELECT current_user AS u')).rows[0].u);
await other.end();
out.lines = lines;
process.stdout.write(JSON.stringify(out) + '\\n');
`;

function runAsNobody(socket) {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--input-type=module', '-e', CHILD, socket], {
      uid: NOBODY, gid: NOBODY, cwd: PACKAGE_DIR, timeout: scaled(30000),
      env: { PATH: process.env.PATH, HOME: '/nonexistent' },
    }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`the child as nobody failed: ${err.message}; stderr: ${stderr}`));
      try {
        resolve({ out: JSON.parse(stdout), stderr });
      } catch {
        reject(new Error(`the child printed ${stdout}; stderr: ${stderr}`));
      }
    });
  });
}

const rootSkip = fixtureSkip || (process.getuid?.() !== 0 && 'running as another uid needs root (the app runs as nobody)');

test('a target the app\'s uid may not follow: checkouts and subscribe fail at once with \'forbidden\'; an allowed target works', { skip: rootSkip, timeout: scaled(60000) }, async () => {
  const role = await fx.createRole();
  const name = 'acl';
  const path = `${name}.env`;
  await fx.writeEnv({ path, vars: { DATABASE_URL: role.url, OTHER_URL: role.url } });
  // The socket where nobody reaches it: mode 0666 in a dir it may enter.
  chmodSync(tmpdir, 0o711);
  mkdirSync(`${tmpdir}/pub`, { mode: 0o711 });
  const agent = await fx.startAgent({
    agent: name, envFiles: [path], targets: ['DATABASE_URL', 'OTHER_URL'], socket: 'pub/acl.sock',
    args: ['--socket-mode', '0666', '--allow', `OTHER_URL=uid:${NOBODY}`],
  });
  await waitFor(async () => (await fx.status(name)).targets.every((t) => t.generation === 1 && t.valid),
    { ms: 10000, what: 'both targets published' });

  const { out, stderr } = await runAsNobody(agent.socket);
  const detail = JSON.stringify(out);
  assert.equal(out.uid, NOBODY);
  assert.equal(out.connect.err?.code, 'forbidden', detail);
  assert.equal(out.connect.err?.name, 'DbswapError', detail);
  assert.match(out.connect.err.message, /forbidden/);
  assert.ok(out.connectMs < scaled(5000), `the checkout took ${out.connectMs} ms to fail`);
  assert.equal(out.query.err?.code, 'forbidden', detail);
  assert.ok(out.queryMs < scaled(1000), `a later checkout took ${out.queryMs} ms to fail`);
  assert.ok(out.poolErrors.some((e) => e.code === 'forbidden'), detail);
  assert.equal(out.subscribe.err?.code, 'forbidden', detail);
  assert.ok(out.subscribeMs < scaled(5000), detail);
  assert.equal(out.other.value, role.role, `the allowed target: ${detail}`);

  // The agent said why, and the target has no subscriber.
  await fx.waitLog(`client pid \\d+ uid ${NOBODY} .*may not subscribe to DATABASE_URL`, { agent: name, since: 0 });
  const t = await fx.targetStatus('DATABASE_URL', name);
  assert.equal(t.subscribers, 0);
  assertNoSecret([detail, stderr], [role.password]);
  console.log(`forbidden target as uid ${NOBODY}: the first checkout failed in ${out.connectMs} ms, a later one in ${out.queryMs} ms: ${out.connect.err.message}`);
});
