// What the pool's integration suites here share (not a test file: the
// harness runs *.test.js only): a pool with its log lines and events
// recorded, busy query loops on it (load.js's runLoad, in this process),
// waits with bounds, and the check that no secret was said.
//
// The loops run in the test's own process on purpose: the test sees the
// pool's 'swap', 'ack' and 'nack' events and its counts as they happen,
// on the same clock as the failures, with nothing between them.

import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { createPool } from '../../index.js';
import { runLoad } from './load.js';
import { scaled } from './fixture.js';

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
export const now = () => performance.now();

/**
 * Waits until cond() (sync or async) is truthy; returns its value.
 * Fails naming what it waited for, and describe()'s text, after ms
 * (scaled).
 */
export async function waitFor(cond, { ms = 10000, what = 'a condition', every = 10, describe } = {}) {
  const deadline = now() + scaled(ms);
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (now() > deadline) {
      const more = describe ? `; ${await describe()}` : '';
      throw new assert.AssertionError({ message: `timed out after ${scaled(ms)} ms waiting for ${what}${more}` });
    }
    await sleep(every);
  }
}

/**
 * A pool on the agent's socket that records what it says: pool.lines
 * (its log lines), pool.events ([{ t, event, info }] for swap, ack,
 * nack, error, connect, remove).
 */
export function openPool(socket, options = {}) {
  const lines = [];
  const events = [];
  const pool = createPool({
    socket,
    name: options.name ?? 'node-it',
    max: 8,
    connectionTimeoutMillis: 10000,
    log: (level, message) => lines.push({ t: now(), level, message }),
    ...options,
  });
  for (const event of ['swap', 'ack', 'nack', 'error', 'connect', 'remove']) {
    pool.on(event, (info) => events.push({ t: now(), event, info }));
  }
  pool.lines = lines;
  pool.events = events;
  return pool;
}

/** The pool's events of one kind, optionally since an index of events. */
export function eventsOf(pool, event, since = 0) {
  return pool.events.slice(since).filter((e) => e.event === event);
}

/**
 * Resolves with the first of pool's recorded events of that kind (from
 * index `since`) for which pred(info) holds, waiting for it.
 */
export function waitEvent(pool, event, pred = () => true, { since = 0, ms = 10000 } = {}) {
  return waitFor(() => eventsOf(pool, event, since).find((e) => pred(e.info)), {
    ms, what: `the pool's '${event}' event`,
    describe: () => `events: ${describeEvents(pool, since)}; log: ${describeLines(pool)}`,
  });
}

export function describeEvents(pool, since = 0) {
  return JSON.stringify(pool.events.slice(since).slice(-30).map((e) => ({
    t: Math.round(e.t), event: e.event,
    info: e.event === 'error' ? String(e.info?.message ?? e.info)
      : e.event === 'connect' || e.event === 'remove' ? undefined : e.info,
  })));
}

export function describeLines(pool) {
  return pool.lines.slice(-20).map((l) => `${l.level}: ${l.message}`).join(' | ');
}

/**
 * Starts `threads` busy loops on pool (runLoad: SELECT 1, and with tx
 * every other iteration a transaction on a checked-out client), a 2 ms
 * pause per iteration as the C pool's tests (on 2 cores, back-to-back
 * queries starve the backends the swaps open).  Returns
 *   failures  [{ t, loop, code, error, since }] as they come (the first
 *             20); t on now()'s clock, since: seconds since the loops began
 *   progress  the last progress line
 *   queries() queries done so far
 *   waitQueries(n) waits until more than n are done
 *   stop()    stops the loops; resolves with runLoad's summary
 */
export function startLoops(pool, { threads = 8, tx = true, pauseMs = 2, holdMs = 0 } = {}) {
  const ac = new AbortController();
  const failures = [];
  const loops = { failures, progress: null };
  const done = runLoad(pool, {
    threads, tx, pauseMs, holdMs, progressMs: 100, signal: ac.signal,
    log: () => {},
    onLine: (line) => {
      if (line.failure) failures.push({ ...line.failure, since: line.failure.t, t: now() });
      else if ('t' in line) loops.progress = line;
    },
  });
  loops.queries = () => loops.progress?.queries ?? 0;
  loops.waitQueries = (n = loops.queries(), ms = 10000) => waitFor(
    () => loops.queries() > n,
    { ms, what: `more than ${n} queries`, describe: () => `progress ${JSON.stringify(loops.progress)}; failures ${JSON.stringify(failures)}` });
  loops.stop = async () => {
    ac.abort();
    return done;
  };
  return loops;
}

/** Fails if any of the texts holds any of the secrets. */
export function assertNoSecret(texts, secrets, what = 'logs and errors') {
  const all = texts.map((x) => (typeof x === 'string' ? x : inspect(x, { depth: 6 }))).join('\n');
  for (const s of secrets) {
    if (!s) continue;
    assert.ok(!all.includes(s), `a secret appears in the ${what}`);
  }
}

/** The pool's log lines and the messages of its recorded errors. */
export function poolTexts(pool) {
  return [
    ...pool.lines.map((l) => l.message),
    ...pool.events.filter((e) => e.event === 'error' || e.event === 'nack')
      .map((e) => (e.event === 'error' ? `${e.info?.message} ${e.info?.stack}` : JSON.stringify(e.info))),
    inspect(pool, { depth: 6 }),
  ];
}
