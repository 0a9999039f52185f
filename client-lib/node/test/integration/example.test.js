// examples/http-app.js, the README's example app, as a child process on a
// real agent and two real clusters (primary and secondary): HTTP requests
// from several loops at once, all the time, while the password rotates
// several times (dbswapctl set --wait, as an operator does) and then the
// primary crashes.  No request may fail across the rotations; at the
// failover each loop may lose the request it had on the dead server, and
// none after.  SIGTERM then stops the app cleanly.  Run by
// tests/integration/test_node.py (meson test -C build node).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { connectFixture, fixtureSkip, scaled, tmpdir } from './fixture.js';

const APP = fileURLToPath(new URL('../../examples/http-app.js', import.meta.url));
const README = fileURLToPath(new URL('../../README.md', import.meta.url));
const LOOPS = 4;
const ROTATIONS = 5;

let fx;
before(async () => {
  if (!fixtureSkip) fx = await connectFixture();
});
after(async () => {
  await fx?.close();
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The example app in a process of its own; its output kept by line. */
class App {
  constructor(env) {
    this.lines = [];
    this.waiters = [];
    this.proc = spawn(process.execPath, [APP], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.exited = new Promise((resolve) => this.proc.once('exit', (code, signal) => resolve({ code, signal })));
    let buf = '';
    const onData = (chunk) => {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        this.#line(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    };
    this.proc.stdout.setEncoding('utf8').on('data', onData);
    this.proc.stderr.setEncoding('utf8').on('data', onData);
  }

  #line(line) {
    this.lines.push({ at: performance.now(), line });
    for (const w of [...this.waiters]) {
      const m = w.re.exec(line);
      if (m) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        clearTimeout(w.timer);
        w.resolve(m);
      }
    }
  }

  /** The first line from index `from` on that matches re. */
  waitLine(re, { from = 0, timeout = 10000 } = {}) {
    for (const { line } of this.lines.slice(from)) {
      const m = re.exec(line);
      if (m) return Promise.resolve(m);
    }
    return new Promise((resolve, reject) => {
      const w = { re, resolve, timer: null };
      w.timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`the app did not print ${re} within ${scaled(timeout)} ms; its output:\n${this.output()}`));
      }, scaled(timeout));
      this.waiters.push(w);
    });
  }

  output() {
    return this.lines.map((l) => l.line).join('\n');
  }

  kill() {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

/** GET / on the app, on a keep-alive agent: { ok, status, body, error }. */
function get(port, agent) {
  return new Promise((resolve) => {
    const req = http.get({ port, path: '/', agent, timeout: scaled(20000) }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => {
        let json = null;
        try { json = JSON.parse(body); } catch { /* reported below */ }
        resolve({ ok: res.statusCode === 200, status: res.statusCode, body: json ?? body });
      });
      res.on('error', (err) => resolve({ ok: false, status: 0, body: String(err) }));
    });
    req.on('timeout', () => req.destroy(new Error('no answer in time')));
    req.on('error', (err) => resolve({ ok: false, status: 0, body: String(err) }));
  });
}

/**
 * LOOPS loops of GET / one after another, each on a connection of its
 * own; every answer is kept with the phase it started in.
 */
function startLoops(port) {
  const state = { phase: 'warmup', stop: false, results: Array.from({ length: LOOPS }, () => []) };
  state.done = Promise.all(state.results.map(async (mine) => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      while (!state.stop) {
        const phase = state.phase;
        const t0 = performance.now();
        const r = await get(port, agent);
        mine.push({ ...r, phase, t0, t1: performance.now() });
        if (!r.ok) await sleep(5); // a failure comes back at once: no spinning
      }
    } finally {
      agent.destroy();
    }
  }));
  state.served = (phase) => state.results.map((rs) => rs.filter((r) => r.ok && (!phase || r.phase === phase)).length);
  state.failed = (phase) => state.results.map((rs) => rs.filter((r) => !r.ok && r.phase === phase));
  /** Waits until every loop has had n more good answers. */
  state.progress = async (n) => {
    const base = state.served();
    const deadline = performance.now() + scaled(20000);
    while (state.served().some((k, i) => k < base[i] + n)) {
      if (performance.now() > deadline) throw new Error(`the loops stalled: ${state.served()} served, from ${base}`);
      await sleep(10);
    }
  };
  state.end = async () => {
    state.stop = true;
    await state.done;
  };
  return state;
}

/**
 * Under sslmode=prefer (the default) against a server without TLS, the
 * connections that a new value's pg.Pool opens at once (right after a
 * failover, the checkouts of every loop) each hear "no TLS" and must each
 * go again without it, not only the first (src/slot.js once failed the
 * others).  No request may fail that way.
 */
const isTlsRace = (r) => /The server does not support SSL connections/.test(r.body?.error ?? '');

function assertNoTlsRace(failures) {
  const race = failures.filter(isTlsRace);
  assert.equal(race.length, 0, `${race.length} request(s) failed with pg's "no TLS" error: ${describe(race.slice(0, 3))}`);
}

const describe = (rs) => rs.map((r) => `${r.status} ${JSON.stringify(r.body)}`).join('; ');

test('the README shows examples/http-app.js exactly', () => {
  const readme = readFileSync(README, 'utf8');
  const section = readme.slice(readme.indexOf('## The example app'));
  const block = /```js\n([\s\S]*?)```/.exec(section);
  assert.ok(block, 'README.md has a js block under "The example app"');
  assert.equal(block[1], readFileSync(APP, 'utf8'));
});

/** A role on both clusters, an env file naming both, an agent, and the
 * example app on it, serving. */
async function setUp(t, { agent = 'default', env = `${agent}.env`, vars = {} } = {}) {
  const role = await fx.createRole({ clusters: ['primary', 'secondary'] });
  await fx.writeEnv({ path: env, vars: { DATABASE_URL: role.urls.primary, DATABASE_URL_SECONDARY: role.urls.secondary, ...vars } });
  const a = await fx.startAgent({ agent, envFiles: [env] });
  await fx.waitPublished(1, { agent });
  const app = new App({ DBSWAP_SOCKET: a.socket, PORT: '0' });
  t.after(() => app.kill());
  const [, port] = await app.waitLine(/^listening on port (\d+)/);
  await app.waitLine(/^ack: generation 1,/);
  return { role, app, port: Number(port), envPath: `${tmpdir}/${env}` };
}

/** SIGTERM: the app ends its pool and exits by itself, with status 0. */
async function stopApp(app) {
  app.proc.kill('SIGTERM');
  const exit = await Promise.race([app.exited, sleep(scaled(10000)).then(() => 'timeout')]);
  assert.deepEqual(exit, { code: 0, signal: null }, `the app did not exit cleanly on SIGTERM; its output:\n${app.output()}`);
  await app.waitLine(/^stopped$/);
}

test('the example app: no request fails across rotations (dbswapctl set --wait); a primary crash', { skip: fixtureSkip, timeout: scaled(240000) }, async (t) => {
  const { role, app, port, envPath } = await setUp(t);
  const primary = await fx.cluster('primary');
  const secondary = await fx.cluster('secondary');
  const loops = startLoops(port);
  try {
    await loops.progress(10);
    assert.deepEqual(loops.failed('warmup').flat(), [], 'no failure before anything happened');

    // Rotations as an operator does them: the new password on both
    // servers, then the env file through dbswapctl set --wait, which
    // returns once the app acked (no connection on the old value left).
    loops.phase = 'rotations';
    const waits = [];
    const passwords = [role.password];
    for (let i = 0; i < ROTATIONS; i++) {
      const next = await fx.setPassword(role.role, { clusters: ['primary', 'secondary'] });
      passwords.push(next.password);
      const from = app.lines.length;
      const t0 = performance.now();
      const r = await fx.ctl(['set', envPath, 'DATABASE_URL=-', 'DATABASE_URL_SECONDARY=-', '--wait=30'],
        { agent: 'default', stdin: `${next.urls.primary}\n${next.urls.secondary}\n`, timeout: 60 });
      waits.push(performance.now() - t0);
      assert.equal(r.code, 0, `dbswapctl set --wait: ${r.stdout}${r.stderr}\n${await fx.describeAgent()}`);
      assert.match(r.stdout, /every subscriber uses the new value/);
      await app.waitLine(new RegExp(`^ack: generation ${i + 2},`), { from });
      await loops.progress(5);
    }
    const rotationFailures = loops.failed('rotations').flat();
    assert.equal(rotationFailures.length, 0, `requests failed during the rotations: ${describe(rotationFailures)}`);

    // The primary crashes: the agent publishes the secondary (reason
    // failover), the pool switches at once.
    loops.phase = 'failover';
    const from = app.lines.length;
    const crashAt = performance.now();
    await fx.stopCluster('primary', 'immediate');
    await app.waitLine(/^swap: generation (\d+) \(failover, secondary\), at once/, { from });
    const seenAfter = performance.now() - crashAt;
    loops.phase = 'after';
    await fx.waitAcked(ROTATIONS + 2, { subscribers: 1 });
    await loops.progress(20);
    await sleep(scaled(500));
    await loops.end();

    const atFailover = loops.failed('failover');
    const afterFailover = loops.failed('after').flat();
    const servedAfter = loops.results.flat().filter((r) => r.ok && r.phase === 'after');
    const stats = {
      served: loops.served().reduce((a, b) => a + b, 0),
      servedPerLoop: loops.served(),
      rotationWaitsMs: waits.map((ms) => Math.round(ms)),
      failedPerLoopAtCrash: atFailover.map((rs) => rs.length),
      switchSeenAfterMs: Math.round(seenAfter),
      failedAfterSwitch: afterFailover.length,
      failedAfterSwitchTlsRace: afterFailover.filter(isTlsRace).length,
    };
    t.diagnostic(`crash: ${JSON.stringify(stats)}`);
    console.log(`example app, rotations and a crash: ${JSON.stringify(stats)}`);

    assertNoTlsRace([...atFailover.flat(), ...afterFailover]);
    assert.equal(afterFailover.length, 0, `requests failed after the switch: ${describe(afterFailover)} ` +
      `(started ${afterFailover.map((r) => Math.round(r.t0 - crashAt))} ms after the crash, the switch seen at ${stats.switchSeenAfterMs} ms)`);
    assert.ok(servedAfter.length >= LOOPS * 20);
    assert.ok(servedAfter.every((r) => r.body.port === secondary.port),
      `after the failover every answer comes from the secondary (port ${secondary.port}, primary ${primary.port})`);
    assert.ok(servedAfter.every((r) => r.body.user === role.role));

    await stopApp(app);
    for (const pw of passwords) assert.ok(!app.output().includes(pw), 'no password in the app\'s output');

    // Each loop may lose the request it had on the server, as with
    // libdbswap's pool, and no more: a checkout whose new connection to
    // the dying primary is refused waits for the switch (up to
    // CONNECT_WAIT_MS) instead of failing at once.
    for (const [i, rs] of atFailover.entries()) {
      assert.ok(rs.length <= 1, `loop ${i} lost ${rs.length} requests at the crash: ${describe(rs.slice(0, 3))}${rs.length > 3 ? '; ...' : ''}`);
    }
  } finally {
    await loops.end();
    await fx.startCluster('primary');
  }
});

test('the example app: a hung primary costs each loop at most the request it had there', { skip: fixtureSkip, timeout: scaled(120000) }, async (t) => {
  // Short checks, so that the hang is caught in about a second.
  const { app, port } = await setUp(t, {
    agent: 'hang',
    vars: {
      DB_HEALTH_CHECK_INTERVAL: scaled(300),
      DB_CONNECTION_TIMEOUT: scaled(500),
      DB_FAILURE_THRESHOLD: 3,
      DB_PRIMARY_RETRY_INTERVAL: 600000,
    },
  });
  const secondary = await fx.cluster('secondary');
  const loops = startLoops(port);
  try {
    await loops.progress(10);
    loops.phase = 'failover';
    const from = app.lines.length;
    const hangAt = performance.now();
    await fx.pauseCluster('primary');
    await app.waitLine(/^swap: generation (\d+) \(failover, secondary\), at once/, { from, timeout: 20000 });
    const seenAfter = performance.now() - hangAt;
    loops.phase = 'after';
    await fx.waitAcked(2, { agent: 'hang', subscribers: 1 });
    await loops.progress(20);
    await loops.end();

    const atFailover = loops.failed('failover');
    const afterFailover = loops.failed('after').flat();
    const stats = {
      served: loops.served().reduce((a, b) => a + b, 0),
      failedPerLoopAtHang: atFailover.map((rs) => rs.length),
      errors: [...new Set(atFailover.flat().map((r) => r.body.error ?? r.body))],
      switchSeenAfterMs: Math.round(seenAfter),
      failedAfterSwitch: afterFailover.length,
      tlsRace: [...atFailover.flat(), ...afterFailover].filter(isTlsRace).length,
    };
    t.diagnostic(`hang: ${JSON.stringify(stats)}`);
    console.log(`example app, a hung primary: ${JSON.stringify(stats)}`);
    assertNoTlsRace([...atFailover.flat(), ...afterFailover]);
    for (const [i, rs] of atFailover.entries()) {
      assert.ok(rs.length <= 1, `loop ${i} lost ${rs.length} requests at the hang: ${describe(rs)}`);
    }
    assert.equal(afterFailover.length, 0, `requests failed after the switch: ${describe(afterFailover)}`);
    const servedAfter = loops.results.flat().filter((r) => r.ok && r.phase === 'after');
    assert.ok(servedAfter.every((r) => r.body.port === secondary.port));
    await stopApp(app);
  } finally {
    await loops.end();
    await fx.resumeCluster('primary');
  }
});
