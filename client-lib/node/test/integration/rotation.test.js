// Password rotations through createPool() against the real agent and a
// real PostgreSQL: 100 rotations under 8 busy query loops, with no failed
// query, every generation acked by the pool, and no session on an old
// password once the last one is acked.
//
// Each rotation is a real one (the new password on the server, then the
// env file rewritten by rename), and each value carries its own
// application_name, so pg_stat_activity tells which value a session was
// opened with: a session of an older value is a session on an old
// password.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connectFixture, fixtureSkip, scaled } from './fixture.js';
import {
  assertNoSecret, eventsOf, now, openPool, poolTexts, sleep, startLoops, waitFor,
} from './helpers.js';

const ROTATIONS = 100;
const LOOPS = 8;

let fx;
before(async () => {
  if (!fixtureSkip) fx = await connectFixture();
});
after(async () => {
  await fx?.close();
});

const appName = (g) => `rot-g${g}`;
const withApp = (url, g) => `${url}?application_name=${appName(g)}`;

test(`${ROTATIONS} rotations under ${LOOPS} busy loops: no failed query, each generation acked, no old session after the last ack`, { skip: fixtureSkip, timeout: scaled(150000) }, async () => {
  const role = await fx.createRole();
  const passwords = [role.password];
  await fx.writeEnv({ vars: { DATABASE_URL: withApp(role.url, 1) } });
  const agent = await fx.startAgent();
  await fx.waitPublished(1);

  const pool = openPool(agent.socket, { max: LOOPS });
  const loops = startLoops(pool, { threads: LOOPS });
  try {
    await fx.waitAcked(1, { subscribers: 1 });
    await loops.waitQueries(100);

    const t0 = now();
    const perRotation = [];
    for (let g = 2; g <= ROTATIONS + 1; g++) {
      const r0 = now();
      const pw = await fx.setPassword(role.role);
      passwords.push(pw.password);
      await fx.writeEnv({ vars: { DATABASE_URL: withApp(pw.url, g) } });
      const t = await fx.waitAcked(g, { subscribers: 1, timeout: 15 });
      assert.equal(t.acked, 1);
      assert.deepEqual(t.lagging, [], JSON.stringify(t.lagging));
      perRotation.push(now() - r0);
    }
    const took = now() - t0;
    const final = ROTATIONS + 1;

    // The pool's own view: one swap and one ack (sent to the agent) for
    // each generation, in order.
    const acks = eventsOf(pool, 'ack').map((e) => e.info);
    assert.deepEqual(acks.map((a) => a.generation), Array.from({ length: final }, (_, i) => i + 1),
      'the pool acked every generation once, in order');
    assert.ok(acks.every((a) => a.sent === true), JSON.stringify(acks.filter((a) => !a.sent)));
    const swaps = eventsOf(pool, 'swap').map((e) => e.info);
    assert.deepEqual(swaps.map((s) => s.generation), Array.from({ length: final }, (_, i) => i + 1));
    assert.ok(swaps.slice(1).every((s) => s.reason === 'rotation' && !s.immediate), 'rotations drain, they do not destroy');
    assert.equal(pool.generation, final);

    // No session of an older value once the last generation is acked: the
    // pool closed them before it acked (a backend leaves pg_stat_activity
    // a moment after its socket closed: 2 s at most).
    const ackedAt = eventsOf(pool, 'ack').at(-1).t;
    let atAck = null;
    const clean = await waitFor(async () => {
      const s = await fx.activity(role.role);
      atAck ??= s.filter((x) => x.application_name !== appName(final)).length;
      return s.every((x) => x.application_name === appName(final)) && s;
    }, { ms: 2000, what: 'no session of an older value', describe: async () => JSON.stringify(await fx.activity(role.role)) });
    const noOldAfter = now() - ackedAt;
    assert.ok(clean.length >= 1 && clean.length <= LOOPS, `${clean.length} session(s) of the last value`);

    await loops.waitQueries(loops.queries());
    const s = await loops.stop();
    assert.equal(s.failures, 0, `failed queries: ${JSON.stringify(loops.failures.slice(0, 5))}`);
    assert.deepEqual(s.failures_by_loop, new Array(LOOPS).fill(0));
    assert.equal(s.stuck, 0);
    assert.equal(s.current_user_at_end, role.role);
    assert.equal(s.generation, final);
    assertNoSecret(poolTexts(pool), passwords);
    perRotation.sort((a, b) => a - b);
    console.log(`${ROTATIONS} rotations in ${(took / 1000).toFixed(1)} s ` +
      `(per rotation, ALTER ROLE to acked: p50 ${perRotation[ROTATIONS >> 1].toFixed(0)} ms, ` +
      `max ${perRotation.at(-1).toFixed(0)} ms), ${s.queries} queries (${s.qps}/s), 0 failed; ` +
      `${atAck} old session(s) seen at the last ack, none ${noOldAfter.toFixed(0)} ms after it`);
  } finally {
    await loops.stop();
    await pool.end();
  }
});
