// The Node side of the integration fixture: a promise API over the
// control socket of tests/integration/test_node.py, which runs each
// *.test.js file here with `node --test` after starting what it needs
// through the project's harness (tests/integration/harness.py): throwaway
// PostgreSQL clusters ("primary", "secondary"), dbswapd, load runs.
//
//   import { test, before, after } from 'node:test';
//   import { connectFixture, fixtureSkip } from './fixture.js';
//
//   test('rotation', { skip: fixtureSkip }, async () => {
//     const fx = await connectFixture();
//     try {
//       const role = await fx.createRole();
//       await fx.writeEnv({ vars: { DATABASE_URL: role.url } });
//       const agent = await fx.startAgent();      // --env app.env
//       ...
//     } finally {
//       await fx.close();
//     }
//   });
//
// Each method sends one op (the Control.op_* methods of test_node.py say
// what each does) and resolves with its result, or rejects with a
// FixtureError carrying the harness's message.  The harness carries out
// requests one at a time, in the order they come: a waitAcked() holds up
// a rotate() sent after it, so await one before sending the other.  Env file names are
// relative to the file's temp dir ($DBSWAP_TEST_TMPDIR).  What a file
// starts is stopped by the harness when the file ends, whatever way it
// ends: a test need not clean up after itself, only close the fixture
// (an open one does not keep the process alive: the socket is unref'd
// while no request is pending).
//
// Run outside the harness ($DBSWAP_FIXTURE unset), fixtureSkip is a
// reason string that node:test prints as the skip reason.  So a bare
// `node --test` in the package skips these files; the package's `npm test`
// should still name its unit tests' directory, as this one is run by
// `meson test -C build node` (./dev.sh test does both).
//
// Node 18 and later, no dependency.

import net from 'node:net';

/** The harness's timeout scale ($DBSWAP_TEST_TIMEOUT_SCALE, default 1). */
export const timeoutScale = (() => {
  const v = Number(process.env.DBSWAP_TEST_TIMEOUT_SCALE || 1);
  return Number.isFinite(v) && v > 0 ? v : 1;
})();

/** ms scaled by $DBSWAP_TEST_TIMEOUT_SCALE, for timeouts and deadlines. */
export function scaled(ms) {
  return Math.ceil(ms * timeoutScale);
}

/** False under the harness, else why the integration tests are skipped. */
export const fixtureSkip = process.env.DBSWAP_FIXTURE
  ? false
  : 'needs the harness: meson test -C build node ' +
    '(tests/integration/test_node.py)';

/** The file's temp dir, where env files are written. */
export const tmpdir = process.env.DBSWAP_TEST_TMPDIR;

// A request that takes longer than this (beyond its own timeout field)
// means the harness is stuck: fail rather than hang the test.
const REQUEST_MARGIN_MS = 60000;

export class FixtureError extends Error {
  constructor(op, message, type) {
    super(`fixture ${op}: ${message}`);
    this.name = 'FixtureError';
    this.op = op;
    this.type = type; // the harness's exception class: TimeoutError, ...
  }
}

export class Fixture {
  #sock;
  #buf = '';
  #nextId = 1;
  #pending = new Map(); // id -> { resolve, reject, op, timer }
  #closed = null; // the error pending and later requests get

  constructor(sock) {
    this.#sock = sock;
    sock.setEncoding('utf8');
    sock.on('data', (chunk) => this.#onData(chunk));
    sock.on('error', (err) => this.#fail(err));
    sock.on('close', () => this.#fail(new Error('control socket closed')));
    sock.unref();
  }

  #onData(chunk) {
    this.#buf += chunk;
    let nl;
    while ((nl = this.#buf.indexOf('\n')) >= 0) {
      const line = this.#buf.slice(0, nl);
      this.#buf = this.#buf.slice(nl + 1);
      let msg;
      try {
        msg = JSON.parse(line);
      } catch {
        this.#fail(new Error(`bad line from the harness: ${line.slice(0, 200)}`));
        return;
      }
      const p = this.#pending.get(msg.id);
      if (!p) continue;
      this.#settle(msg.id);
      if (msg.ok) p.resolve(msg.result);
      else p.reject(new FixtureError(p.op, msg.error, msg.type));
    }
  }

  #settle(id) {
    const p = this.#pending.get(id);
    clearTimeout(p.timer);
    this.#pending.delete(id);
    if (this.#pending.size === 0) this.#sock.unref();
  }

  #fail(err) {
    this.#closed ??= err;
    for (const [id, p] of this.#pending) {
      this.#settle(id);
      p.reject(new FixtureError(p.op, err.message, 'ConnectionClosed'));
    }
  }

  /**
   * Sends op with fields; resolves with its result.  Fields named
   * timeout are in seconds, scaled by the harness; the request itself
   * fails after that plus a minute.
   */
  request(op, fields = {}) {
    if (this.#closed) {
      return Promise.reject(new FixtureError(op, this.#closed.message, 'ConnectionClosed'));
    }
    const id = this.#nextId++;
    const body = JSON.stringify({ ...fields, id, op }) + '\n';
    return new Promise((resolve, reject) => {
      const limit = scaled((fields.timeout ?? 30) * 1000) + REQUEST_MARGIN_MS;
      const timer = setTimeout(() => {
        this.#settle(id);
        reject(new FixtureError(op, `no answer from the harness within ${limit} ms`, 'TimeoutError'));
      }, limit);
      this.#pending.set(id, { resolve, reject, op, timer });
      this.#sock.ref();
      this.#sock.write(body);
    });
  }

  /** Closes the control connection (the harness keeps what was started). */
  async close() {
    this.#closed ??= new Error('fixture closed');
    if (!this.#sock.destroyed) {
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, 1000);
        this.#sock.end(() => { clearTimeout(timer); resolve(); });
      });
    }
    this.#sock.destroy();
  }

  // -- information
  /** { tmpdir, timeout_scale, clusters } */
  info() { return this.request('info'); }

  // -- clusters: 'primary' (the default) or 'secondary', made on first use
  /** { name, host, port, sockdir, running, paused, postmaster_pid } */
  cluster(cluster = 'primary') { return this.request('cluster', { cluster }); }
  /** pg_ctl stop; mode 'immediate' (a crash, the default), 'fast', 'smart'. */
  stopCluster(cluster = 'primary', mode = 'immediate') {
    return this.request('cluster_stop', { cluster, mode });
  }
  startCluster(cluster = 'primary') { return this.request('cluster_start', { cluster }); }
  /** SIGSTOP to the server and all its backends: a hung host. */
  pauseCluster(cluster = 'primary') { return this.request('cluster_pause', { cluster }); }
  resumeCluster(cluster = 'primary') { return this.request('cluster_resume', { cluster }); }
  /** SQL as the superuser: { output } in psql's unaligned tuples-only form. */
  sql(query, { cluster = 'primary', dbname, durable = false } = {}) {
    return this.request('sql', { query, cluster, durable, ...(dbname && { dbname }) });
  }
  /** How many backends are logged in as role. */
  async sessions(role, cluster = 'primary') {
    return (await this.request('sessions', { role, cluster })).count;
  }
  /**
   * The backends logged in as role, oldest first: [{ pid,
   * application_name, backend_start (Unix seconds), client_port }].
   */
  async activity(role, cluster = 'primary') {
    return (await this.request('activity', { role, cluster })).sessions;
  }
  async terminateSessions(role, cluster = 'primary') {
    return (await this.request('terminate_sessions', { role, cluster })).count;
  }

  // -- roles and env files
  /**
   * A login role on the clusters (default ['primary']), name and password
   * made up unless given: { role, password, url, keyvalue, urls, keyvalues }
   * (urls and keyvalues by cluster; url and keyvalue for the first).
   */
  createRole({ role, password, clusters = ['primary'], login = true } = {}) {
    return this.request('create_role', { role, password, clusters, login });
  }
  /** ALTER ROLE ... PASSWORD, durably (new password made up unless given). */
  setPassword(role, { password, clusters = ['primary'] } = {}) {
    return this.request('set_password', { role, password, clusters });
  }
  /** Writes an env file: { text } or { vars: { NAME: value } }, by rename. */
  writeEnv({ path = 'app.env', text, vars, how = 'rename' } = {}) {
    return this.request('write_env', { path, text, vars, how });
  }
  /**
   * A rotation as a real one goes: the new password on the server(s),
   * then the env file rewritten by rename with TARGET (and
   * TARGET_SECONDARY when secondary names a cluster) and vars.
   * Resolves { role, password, url, urls, path }.
   */
  rotate(role, { path = 'app.env', target = 'DATABASE_URL', cluster = 'primary',
    secondary, vars, password, how = 'rename' } = {}) {
    return this.request('rotate', { role, path, target, cluster, secondary, vars, password, how });
  }

  // -- agents, by name ('default' unless given)
  /**
   * Starts dbswapd --socket S --env FILE... --target T... ARGS...; resolves
   * once it listens: { agent, socket, pid, running, returncode }.  A stopped
   * agent of that name starts again (same socket and log) with these.
   */
  startAgent({ agent = 'default', envFiles = ['app.env'], targets = [], args = [], env, socket } = {}) {
    return this.request('agent_start', { agent, env_files: envFiles, targets, args, env, socket });
  }
  stopAgent(agent = 'default', { timeout = 5 } = {}) {
    return this.request('agent_stop', { agent, timeout });
  }
  killAgent(agent = 'default') { return this.request('agent_kill', { agent }); }
  /** Stops (kill: SIGKILL) and starts again, with new files/args if given. */
  restartAgent(agent = 'default', { kill = false, envFiles, targets, args } = {}) {
    return this.request('agent_restart', { agent, kill, env_files: envFiles, targets, args });
  }
  signalAgent(signal = 'HUP', agent = 'default') {
    return this.request('agent_signal', { agent, signal });
  }
  /** The agent's whole log (stderr, all runs). */
  async agentLog(agent = 'default') {
    return (await this.request('agent_log', { agent })).log;
  }
  /** Later waitLog() calls look only at what is logged from now on. */
  markLog(agent = 'default') { return this.request('agent_mark', { agent }); }
  /**
   * Waits for a log line matching regex (a RegExp's source, or a string in
   * Python's syntax) past the cursor, and moves the cursor past it;
   * timeout in seconds (scaled).  Resolves { match, groups }.
   */
  waitLog(regex, { agent = 'default', timeout = 5, since } = {}) {
    const source = regex instanceof RegExp ? regex.source : regex;
    return this.request('agent_wait_log', { agent, regex: source, timeout, since });
  }
  /** Waits for "TARGET: generation N published" in the log. */
  waitPublished(generation, { agent = 'default', target = 'DATABASE_URL', timeout = 10 } = {}) {
    return this.waitLog(`${target}: generation ${generation} published`, { agent, timeout });
  }
  /** The agent's status reply (ipc/PROTOCOL.md). */
  status(agent = 'default') { return this.request('status', { agent }); }
  /** The status entry of one target. */
  async targetStatus(target = 'DATABASE_URL', agent = 'default') {
    const st = await this.status(agent);
    const t = st.targets.find((x) => x.name === target);
    if (!t) throw new FixtureError('status', `no target ${target} in status`);
    return t;
  }
  /**
   * Waits until the target's generation is `generation` and every
   * subscriber (exactly `subscribers`, if given) acked it; resolves the
   * target's status entry.
   */
  waitAcked(generation, { agent = 'default', target = 'DATABASE_URL', subscribers, timeout = 10 } = {}) {
    return this.request('wait_acked', { generation, agent, target, subscribers, timeout });
  }
  /** dbswapctl --socket S ARGS: { code, stdout, stderr }. */
  ctl(args, { agent = 'default', stdin, timeout = 15 } = {}) {
    return this.request('ctl', { args, agent, stdin, timeout });
  }

  // -- C subscribers: tests/helpers/subscriber.c (libdbswap), which
  // connects with each value and acks it: another app on the same agent
  startSubscriber({ name = 'sub', agent = 'default', target = 'DATABASE_URL', args = [] } = {}) {
    return this.request('subscriber_start', { name, agent, target, args });
  }
  stopSubscriber(name = 'sub') { return this.request('subscriber_stop', { name }); }

  // -- load runs: load.js in a process of its own, stopped by the harness
  /**
   * Starts load.js --pool dbswap on the agent (or --pool pg on url);
   * args: its other options, e.g. ['--threads', 8, '--tx'].
   */
  startLoad({ name = 'load', pool = 'dbswap', agent = 'default', target = 'DATABASE_URL', url, args = [], env } = {}) {
    return this.request('load_start', { name, pool, agent, target, url, args, env });
  }
  /** The last progress line; with queriesOver, waits for more queries. */
  loadProgress(name = 'load', { queriesOver, timeout = 10 } = {}) {
    return this.request('load_progress', { name, queries_over: queriesOver, timeout });
  }
  /** SIGTERM; resolves { returncode, summary, stderr }. */
  stopLoad(name = 'load', { timeout = 30 } = {}) {
    return this.request('load_stop', { name, timeout });
  }
  /** Waits for it to end (--seconds); resolves as stopLoad(). */
  waitLoad(name = 'load', { timeout = 30 } = {}) {
    return this.request('load_wait', { name, timeout });
  }

  /** The log tail of an agent, for assertion messages. */
  async describeAgent(agent = 'default', lines = 30) {
    try {
      const log = await this.agentLog(agent);
      return `agent ${agent} log:\n` + log.split('\n').slice(-lines).join('\n');
    } catch (err) {
      return `agent ${agent} log: (${err.message})`;
    }
  }
}

/** Connects to the harness's control socket ($DBSWAP_FIXTURE). */
export function connectFixture(path = process.env.DBSWAP_FIXTURE) {
  if (!path) {
    return Promise.reject(new Error('$DBSWAP_FIXTURE is not set: ' + fixtureSkip));
  }
  return new Promise((resolve, reject) => {
    const sock = net.createConnection(path);
    sock.once('error', reject);
    sock.once('connect', () => {
      sock.off('error', reject);
      resolve(new Fixture(sock));
    });
  });
}
