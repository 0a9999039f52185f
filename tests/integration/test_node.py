"""The Node.js client's integration suites (client-lib/node/test/
integration/*.test.js, node's own test runner) against the real agent and
real PostgreSQL clusters, everything started by this harness.

Each *.test.js file is one test here (test_<name>, so one file runs
alone with `test_node.py NodeSuites.test_smoke`), run as
`node --test --test-reporter=spec FILE` with:

  DBSWAP_FIXTURE        the control socket, below
  DBSWAP_TEST_TMPDIR    a temp dir of the file's own (env files go there)
  DBSWAPD, DBSWAPCTL,   as meson sets them for every integration test
  DBSWAP_TEST_TIMEOUT_SCALE
and no PG* variable, $DBSWAP_SOCKET or $DATABASE_URL from outside.

The control socket takes JSON lines, {"id": 1, "op": "...", ...fields},
and answers each, in order, with {"id": 1, "ok": true, "result": {...}}
or {"id": 1, "ok": false, "error": "what went wrong", "type": "..."}.
Requests are carried out one at a time.  The ops are the methods
Control.op_* below (clusters, roles, env files, agents, status, C
subscribers, load runs); client-lib/node/test/integration/fixture.js is the Node side.
Names of env files are relative to the file's temp dir.

What a file starts (agents, loads) is closed when it ends, whatever way it
ends, and the clusters it stopped or paused are started and resumed for
the next file; roles stay (their names are random).  The two clusters,
"primary" and "secondary", are made on first use and shared by the files.
On a failure the report has node's output, then the log of every agent
and load the file started.

node is $DBSWAP_NODE (set by meson) or the one on PATH; its absence is a
failure (./dev.sh installs it), never a skip.  `pg` comes from the
package's node_modules (npm ci, which ./dev.sh runs); before the package
exists (no client-lib/node/package.json) the suite is skipped (exit 77).
"""

import inspect
import json
import os
import re
import secrets
import signal
import signal as SIGNALS  # op_agent_signal's field is named signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import unittest

import harness as h
from common import NodeLoad, NODE_PACKAGE, fresh_password, node_binary
from test_pool import Psql

TESTS_DIR = os.path.join(NODE_PACKAGE, 'test', 'integration')
# One file's whole run: its own tests should time out well before.
FILE_TIMEOUT = 300
NODE_MIN_MAJOR = 18
CLUSTERS = ('primary', 'secondary')
TARGET = 'DATABASE_URL'
# Ask for a meson SKIP (the exit status meson counts as skipped).
EXIT_SKIP = 77


class OpError(Exception):
    """A request the control channel refuses (bad op, bad field)."""


def _json_default(o):
    if isinstance(o, bytes):
        return o.hex()
    return str(o)


class Scope:
    """What one test file owns: a temp dir, agents, loads, status
    clients.  close() stops them all; report() is their logs."""

    def __init__(self, name):
        self.name = name
        self.dir, self._dir_key = h._mkdtemp(f'dbswap-node-{name}-')
        self.agents = {}
        self.loads = {}
        self.subscribers = {}
        self.clients = {}   # agent name -> a status Client kept open

    def path(self, name):
        """An env file name, relative to the scope's dir, as an absolute
        path there; OpError for one that leads out of it."""
        p = os.path.realpath(os.path.join(self.dir, name))
        if not p.startswith(os.path.realpath(self.dir) + os.sep):
            raise OpError(f'{name!r} is outside the test file\'s temp dir')
        return p

    def report(self):
        out = []
        for name, agent in self.agents.items():
            out.append(f'--- agent {name!r} (socket {agent.sock}), log:\n'
                       f'{h._tail(agent.log(), 60)}')
        for name, load in self.loads.items():
            out.append(f'--- load {name!r}: {load.describe()}')
        for name, sub in self.subscribers.items():
            out.append(f'--- subscriber {name!r}: lines '
                       f'{len(sub.lines())}; stderr:\n'
                       f'{h._tail(sub.stderr(), 20)}')
        return '\n'.join(out)

    def close(self):
        things = [*self.clients.values(), *self.loads.values(),
                  *self.subscribers.values(), *self.agents.values()]
        for thing in things:
            try:
                thing.close()
            except Exception as e:  # the rest must go too
                print(f'test_node: closing {thing!r} failed: {e!r}',
                      file=sys.stderr)
        h._rmtree(self.dir, self._dir_key)


class Control:
    """The control channel's server: a unix socket in a temp dir, a
    thread per connection, the ops run under one lock."""

    def __init__(self):
        self.dir, self._dir_key = h._mkdtemp('dbswap-node-ctl-')
        self.path = os.path.join(self.dir, 'control.sock')
        self.clusters = {}
        self.psql = {}       # cluster name -> Psql: fast ALTER ROLEs
        self.scope = None
        self._lock = threading.Lock()
        self._conns = set()
        self._closing = False
        self._key = h._register(self.close)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self._thread = threading.Thread(target=self._accept, daemon=True,
                                        name='node-control')
        self._thread.start()

    # -- the server

    def _accept(self):
        while not self._closing:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True,
                             name='node-control-conn').start()

    def _serve(self, conn):
        try:
            with conn.makefile('rb') as f:
                for line in f:
                    reply = self._handle(line)
                    conn.sendall(json.dumps(reply, default=_json_default)
                                 .encode() + b'\n')
        except OSError:
            pass
        finally:
            self._conns.discard(conn)
            conn.close()

    def _handle(self, line):
        rid = None
        try:
            req = json.loads(line)
            if not isinstance(req, dict) or not isinstance(req.get('op'),
                                                            str):
                raise OpError('a request is an object with an "op"')
            rid = req.pop('id', None)
            op = req.pop('op')
            fn = getattr(self, 'op_' + op, None)
            if fn is None:
                raise OpError(f'unknown op {op!r}; ops: ' +
                              ', '.join(sorted(n[3:] for n in dir(self)
                                               if n.startswith('op_'))))
            try:
                inspect.signature(fn).bind(**req)
            except TypeError as e:
                raise OpError(f'{op}: {e}') from None
            with self._lock:
                if self.scope is None:
                    raise OpError('no test file is running')
                result = fn(**req)
            return {'id': rid, 'ok': True, 'result': result}
        except Exception as e:  # every failure is an answer
            if not isinstance(e, (OpError, h.HarnessError, TimeoutError,
                                  AssertionError, ValueError, KeyError)):
                traceback.print_exc()
            return {'id': rid, 'ok': False, 'error': str(e),
                    'type': type(e).__name__}

    def begin(self, name):
        with self._lock:
            self.scope = Scope(name)
            return self.scope

    def end(self):
        """Ends the current file's scope: its report, then everything
        closed, the clusters back up."""
        with self._lock:
            scope, self.scope = self.scope, None
        if scope is None:
            return ''
        report = scope.report()
        try:
            scope.close()
        finally:
            for c in self.clusters.values():
                c.resume()
                if not c.running:
                    c.start()
        return report

    def close(self):
        try:
            self._closing = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept()
            except OSError:
                pass
            self.sock.close()
            for c in list(self._conns):
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.end()
            for p in self.psql.values():
                p.close()
            for c in self.clusters.values():
                c.close()
            h._rmtree(self.dir, self._dir_key)
        finally:
            h._unregister(self._key)

    # -- lookups

    def cluster(self, name='primary'):
        if name not in CLUSTERS:
            raise OpError(f'cluster {name!r}: one of {", ".join(CLUSTERS)}')
        if name not in self.clusters:
            self.clusters[name] = h.PgCluster()
        return self.clusters[name]

    def _psql(self, name, fn):
        """fn(Psql) on a psql session kept open to the cluster; a new
        session once if that one is gone (a cluster stopped since)."""
        c = self.cluster(name)
        for attempt in (0, 1):
            p = self.psql.get(name)
            if p is None or p.proc.poll() is not None:
                p = self.psql[name] = Psql(c)
                # Durable, as durable_sql(): an immediate stop is a crash.
                p.query('SET synchronous_commit = on')
            try:
                return fn(p)
            except h.PgError:
                p.close()
                del self.psql[name]
                if attempt:
                    raise

    def agent(self, name):
        try:
            return self.scope.agents[name]
        except KeyError:
            raise OpError(f'no agent {name!r} (started: '
                          f'{sorted(self.scope.agents)})') from None

    def load(self, name):
        try:
            return self.scope.loads[name]
        except KeyError:
            raise OpError(f'no load {name!r}') from None

    def _status_client(self, agent_name):
        c = self.scope.clients.get(agent_name)
        if c is None:
            c = self.scope.clients[agent_name] = \
                self.agent(agent_name).client(name='node-fixture')
        return c

    def _status(self, agent_name):
        """The agent's status reply, on a client kept open; a new one if
        the agent was restarted since."""
        for attempt in (0, 1):
            c = self._status_client(agent_name)
            try:
                return h._status(c, None)
            except (h.ConnectionClosed, OSError, TimeoutError):
                c.close()
                del self.scope.clients[agent_name]
                if attempt:
                    raise
        raise AssertionError('unreachable')

    @staticmethod
    def _clusters_arg(cluster, clusters):
        if clusters is None:
            clusters = [cluster]
        if isinstance(clusters, str):
            clusters = [clusters]
        return list(clusters)

    # -- ops: information

    def op_info(self):
        """The scope's temp dir and the timeout scale."""
        return {'tmpdir': self.scope.dir, 'timeout_scale': h.TIMEOUT_SCALE,
                'clusters': list(CLUSTERS)}

    # -- ops: clusters

    def op_cluster(self, cluster='primary'):
        """Makes the cluster if needed; where it listens."""
        c = self.cluster(cluster)
        return {'name': cluster, 'host': c.host, 'port': c.port,
                'sockdir': c.sockdir, 'running': c.running,
                'paused': c.paused, 'postmaster_pid': c.postmaster_pid}

    def op_cluster_stop(self, cluster='primary', mode='immediate'):
        """pg_ctl stop (immediate: a crash)."""
        self.cluster(cluster).stop(mode)
        return self.op_cluster(cluster)

    def op_cluster_start(self, cluster='primary'):
        self.cluster(cluster).start()
        return self.op_cluster(cluster)

    def op_cluster_pause(self, cluster='primary'):
        """SIGSTOP to the server and every backend: a hung host."""
        self.cluster(cluster).pause()
        return self.op_cluster(cluster)

    def op_cluster_resume(self, cluster='primary'):
        self.cluster(cluster).resume()
        return self.op_cluster(cluster)

    def op_sql(self, query, cluster='primary', dbname='postgres',
               durable=False):
        """Runs SQL as the superuser; psql's unaligned tuples-only
        output."""
        c = self.cluster(cluster)
        run = c.durable_sql if durable else c.sql
        return {'output': run(query, dbname)}

    def op_sessions(self, role, cluster='primary'):
        """Backends logged in as role."""
        return {'count': self._psql(cluster, lambda p: p.sessions(role))}

    def op_activity(self, role, cluster='primary'):
        """The backends logged in as role, from pg_stat_activity on a psql
        session kept open (fast): [{pid, application_name, backend_start
        (Unix seconds, microseconds exact), client_port}], oldest first."""
        def run(p):
            return p.query(
                "SELECT pid, extract(epoch FROM backend_start)::numeric(20,6),"
                " coalesce(client_port, -1), "
                "replace(coalesce(application_name, ''), '|', '?') "
                "FROM pg_stat_activity WHERE usename = "
                f"{h.quote_literal(role)} ORDER BY backend_start, pid")
        rows = []
        for line in self._psql(cluster, run):
            pid, start, port, app = line.split('|', 3)
            rows.append({'pid': int(pid), 'backend_start': float(start),
                         'client_port': int(port), 'application_name': app})
        return {'sessions': rows}

    def op_terminate_sessions(self, role, cluster='primary'):
        return {'count': self.cluster(cluster).terminate_sessions(role)}

    # -- ops: roles and env files

    def _urls(self, role, password, clusters, dbname='postgres'):
        urls = {n: self.cluster(n).url(role, password, dbname)
                for n in clusters}
        kv = {n: self.cluster(n).keyvalue(role, password, dbname)
              for n in clusters}
        return {'role': role, 'password': password, 'urls': urls,
                'keyvalues': kv, 'url': urls[clusters[0]],
                'keyvalue': kv[clusters[0]]}

    def op_create_role(self, role=None, password=None, cluster='primary',
                       clusters=None, login=True):
        """A login role (name and password made up unless given) on each
        cluster, committed durably; its URLs and key=value strings."""
        clusters = self._clusters_arg(cluster, clusters)
        role = role or 'app_' + secrets.token_hex(3)
        password = password or fresh_password()
        for n in clusters:
            self.cluster(n).create_role(role, password, login)
        return self._urls(role, password, clusters)

    def op_set_password(self, role, password=None, cluster='primary',
                        clusters=None):
        """ALTER ROLE ... PASSWORD on each cluster, durably, through a
        psql session kept open (a few ms, not a new psql's login)."""
        clusters = self._clusters_arg(cluster, clusters)
        password = password or fresh_password()
        for n in clusters:
            self._psql(n, lambda p: p.set_password(role, password))
        return self._urls(role, password, clusters)

    def op_url(self, role, password, cluster='primary', dbname='postgres'):
        return self._urls(role, password, [cluster], dbname)

    _WRITERS = {'rename': h.write_rename, 'inplace': h.write_inplace,
                'truncate': h.write_truncate,
                'delete_recreate': h.write_delete_recreate}

    def _write(self, path, text, how):
        if how not in self._WRITERS:
            raise OpError(f'how: one of {", ".join(self._WRITERS)}')
        p = self.scope.path(path)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        self._WRITERS[how](p, text)
        return p

    def op_write_env(self, path='app.env', text=None, vars=None,
                     how='rename'):
        """Writes an env file: text as it is, or vars {NAME: value} one a
        line; by rename unless how says otherwise."""
        if (text is None) == (vars is None):
            raise OpError('write_env: text or vars, one of them')
        if vars is not None:
            text = ''.join(f'{k}={v}\n' for k, v in vars.items())
        return {'path': self._write(path, text, how)}

    def op_rotate(self, role, path='app.env', target=TARGET,
                  cluster='primary', secondary=None, vars=None,
                  password=None, how='rename'):
        """A rotation in the order of a real one: the new password on the
        server(s) first, then the env file rewritten (by rename):
        TARGET=url on cluster, TARGET_SECONDARY=url on secondary if given,
        then vars.  Returns the new password and URLs."""
        clusters = [cluster] + ([secondary] if secondary else [])
        r = self.op_set_password(role, password, clusters=clusters)
        text = f'{target}={r["urls"][cluster]}\n'
        if secondary:
            text += f'{target}_SECONDARY={r["urls"][secondary]}\n'
        text += ''.join(f'{k}={v}\n' for k, v in (vars or {}).items())
        r['path'] = self._write(path, text, how)
        return r

    # -- ops: agents

    def _agent_info(self, name, agent):
        return {'agent': name, 'socket': agent.sock, 'pid': agent.pid,
                'running': agent.running, 'returncode': agent.returncode}

    def op_agent_start(self, agent='default', env_files=('app.env',),
                       targets=(), args=(), env=None, socket=None):
        """Starts dbswapd (--env each file, --target each target, then
        args); returns once it listens.  An agent stopped earlier under
        the same name is started again with the new arguments, on the same
        socket and log."""
        files = [self.scope.path(f) for f in env_files]
        old = self.scope.agents.get(agent)
        if old is not None:
            if old.running:
                raise OpError(f'agent {agent!r} is running')
            old.env_files, old.targets, old.args = \
                files, list(targets), [str(a) for a in args]
            if env:
                old.env.update(env)
            old.mark()
            old.start()
            return self._agent_info(agent, old)
        if socket is not None:
            socket = self.scope.path(socket)
        a = h.Agent(env_files=files, targets=list(targets),
                    args=[str(x) for x in args], env=env, sock=socket)
        self.scope.agents[agent] = a
        return self._agent_info(agent, a)

    def op_agent_stop(self, agent='default', timeout=h.DEFAULT_TIMEOUT):
        """SIGTERM, then SIGKILL after timeout."""
        a = self.agent(agent)
        a.stop(timeout)
        return self._agent_info(agent, a)

    def op_agent_kill(self, agent='default'):
        a = self.agent(agent)
        a.kill()
        return self._agent_info(agent, a)

    def op_agent_restart(self, agent='default', kill=False, env_files=None,
                         targets=None, args=None):
        """Stopped (or killed) and started again, with the same arguments
        unless given."""
        a = self.agent(agent)
        a.kill() if kill else a.stop()
        if env_files is not None:
            a.env_files = [self.scope.path(f) for f in env_files]
        if targets is not None:
            a.targets = list(targets)
        if args is not None:
            a.args = [str(x) for x in args]
        a.mark()
        a.start()
        return self._agent_info(agent, a)

    def op_agent_signal(self, agent='default', signal='HUP'):
        """Sends SIG<signal> (HUP: reload)."""
        sig = getattr(SIGNALS, 'SIG' + signal, None)
        if not isinstance(sig, SIGNALS.Signals):
            raise OpError(f'no signal SIG{signal}')
        self.agent(agent).send_signal(sig)
        return self._agent_info(agent, self.agent(agent))

    def op_agent_log(self, agent='default'):
        """The agent's stderr, all its runs."""
        return {'log': self.agent(agent).log()}

    def op_agent_mark(self, agent='default'):
        """agent_wait_log looks only at what is logged from now on."""
        return {'cursor': self.agent(agent).mark()}

    def op_agent_wait_log(self, regex, agent='default',
                          timeout=h.DEFAULT_TIMEOUT, since=None):
        """Waits for a log line matching regex (Python syntax, multiline)
        past the cursor, which it moves past the match (since=0: the
        whole log, cursor unmoved)."""
        m = self.agent(agent).wait_log(regex, timeout, since)
        return {'match': m.group(0), 'groups': list(m.groups())}

    def op_status(self, agent='default'):
        """The agent's status reply (ipc/PROTOCOL.md)."""
        return self._status(agent)

    def op_wait_acked(self, generation, agent='default', target=TARGET,
                      subscribers=None, timeout=10):
        """Waits until target's generation is `generation` and all its
        subscribers (exactly `subscribers` of them, if given, at least
        one) acked it.  Returns the target's status entry; on timeout the
        last one is in the error."""
        deadline = h._deadline(timeout)
        t = None
        while True:
            try:
                t = h.target_status(self._status(agent), target)
            except KeyError:
                t = None
            if t is not None and t['generation'] == generation and \
                    t['subscribers'] >= 1 and \
                    t['acked'] == t['subscribers'] and \
                    (subscribers is None or t['subscribers'] == subscribers):
                return t
            if h._left(deadline) <= 0:
                raise TimeoutError(
                    f'generation {generation} of {target} not acked by '
                    f'{subscribers or "all"} subscriber(s) within '
                    f'{timeout * h.TIMEOUT_SCALE:g} s; status: '
                    f'{json.dumps(t, default=_json_default)}')
            time.sleep(0.005)

    def op_ctl(self, args, agent='default', stdin=None, timeout=15):
        """dbswapctl --socket SOCK ARGS (stdin: text for its stdin)."""
        r = subprocess.run([os.environ['DBSWAPCTL'], '--socket',
                            self.agent(agent).sock, *map(str, args)],
                           capture_output=True, text=True, input=stdin,
                           stdin=None if stdin is not None
                           else subprocess.DEVNULL,
                           timeout=timeout * h.TIMEOUT_SCALE)
        return {'code': r.returncode, 'stdout': r.stdout,
                'stderr': r.stderr}

    # -- ops: C subscribers (tests/helpers/subscriber.c, libdbswap)

    def op_subscriber_start(self, name='sub', agent='default',
                            target=TARGET, args=()):
        """The libdbswap test subscriber on the agent: it connects with
        each value, then acks it (args: --no-ack, --no-connect, ...)."""
        if name in self.scope.subscribers:
            raise OpError(f'subscriber {name!r} exists')
        sub = h.Subscriber(self.agent(agent).sock, target,
                           args=[str(a) for a in args])
        self.scope.subscribers[name] = sub
        return {'name': name, 'pid': sub.pid}

    def op_subscriber_stop(self, name='sub'):
        try:
            sub = self.scope.subscribers[name]
        except KeyError:
            raise OpError(f'no subscriber {name!r}') from None
        return {'returncode': sub.stop()}

    # -- ops: load runs (client-lib/node/test/integration/load.js)

    def op_load_start(self, name='load', pool='dbswap', agent='default',
                      target=TARGET, url=None, args=(), env=None):
        """Starts load.js: --pool dbswap on the agent's socket, or
        --pool pg on url (given on its stdin).  args: load.js's other
        options.  Returns once it started, not once it queries."""
        if name in self.scope.loads:
            raise OpError(f'load {name!r} exists')
        sock = self.agent(agent).sock if pool == 'dbswap' else None
        load = NodeLoad(pool=pool, sock=sock, url=url, target=target,
                        args=args, env=env, name=name)
        self.scope.loads[name] = load
        return {'name': name, 'pid': load.pid}

    def op_load_progress(self, name='load', queries_over=None, timeout=10):
        """The last progress line; with queries_over, waits for one with
        more queries than that."""
        load = self.load(name)
        if queries_over is None:
            load.check_alive()
            return load.progress()
        return load.wait_progress(lambda p: p['queries'] > queries_over,
                                  timeout, f'more than {queries_over} '
                                  'queries')

    def op_load_stop(self, name='load', timeout=30):
        """SIGTERM, then its summary (the last line), exit status and
        stderr."""
        load = self.load(name)
        rc, summary = load.stop(timeout)
        return {'returncode': rc, 'summary': summary,
                'stderr': load.stderr()}

    def op_load_wait(self, name='load', timeout=30):
        """Waits for it to end by itself (--seconds)."""
        load = self.load(name)
        rc, summary = load.wait_exit(timeout)
        return {'returncode': rc, 'summary': summary,
                'stderr': load.stderr()}


def _node_version(node):
    r = subprocess.run([node, '--version'], capture_output=True, text=True,
                       timeout=30)
    m = re.match(r'v(\d+)\.', r.stdout.strip())
    if r.returncode != 0 or not m:
        raise AssertionError(f'{node} --version: {r.stdout!r} {r.stderr!r}')
    return r.stdout.strip(), int(m.group(1))


def _test_files():
    try:
        names = sorted(n for n in os.listdir(TESTS_DIR)
                       if n.endswith('.test.js'))
    except FileNotFoundError:
        names = []
    return names


class NodeSuites(unittest.TestCase):
    control = None
    node = None

    @classmethod
    def setUpClass(cls):
        cls.node = node_binary()
        version, major = _node_version(cls.node)
        if major < NODE_MIN_MAJOR:
            raise AssertionError(f'{cls.node} is {version}; the package '
                                 f'needs Node {NODE_MIN_MAJOR} or later')
        print(f'node: {cls.node} {version}')
        cls.control = Control()

    @classmethod
    def tearDownClass(cls):
        if cls.control is not None:
            cls.control.close()

    def run_file(self, name):
        scope = self.control.begin(re.sub(r'\W', '_', name[:-8]))
        try:
            proc, timed_out, took, output = self._run_node(name, scope)
        finally:
            report = self.control.end()
        print(f'==== node --test {name}: status {proc.returncode} in '
              f'{took:.1f} s\n{output.rstrip()}', flush=True)
        if timed_out:
            self.fail(f'{name} did not end within '
                      f'{FILE_TIMEOUT * h.TIMEOUT_SCALE:g} s (killed); '
                      f'output:\n{h._tail(output, 80)}\n{report}')
        if proc.returncode != 0:
            self.fail(f'{name}: node --test exited {proc.returncode}; '
                      f'output:\n{h._tail(output, 150)}\n{report}')
        if not re.search(r'^\S* ?tests [1-9]', output, re.M):
            self.fail(f'{name}: node --test ran no test; output:\n'
                      f'{h._tail(output, 40)}')
        skipped = re.search(r'^\S* ?skipped ([1-9]\d*)', output, re.M)
        if skipped:
            print(f'test_node: {name}: {skipped.group(1)} test(s) skipped '
                  f'(reasons above, after "#")')

    def _run_node(self, name, scope):
        """node --test on one file, its output in the scope's dir; killed
        (its whole process group) past FILE_TIMEOUT.  Returns (process,
        timed out, seconds, output)."""
        path = os.path.join(TESTS_DIR, name)
        env = h._pg_clean_env()
        for k in ('DBSWAP_SOCKET', 'DATABASE_URL'):
            env.pop(k, None)
        env.update(DBSWAP_FIXTURE=self.control.path,
                   DBSWAP_TEST_TMPDIR=scope.dir,
                   DBSWAP_TEST_TIMEOUT_SCALE=str(h.TIMEOUT_SCALE))
        out_path = os.path.join(scope.dir, 'node.out')
        t0 = time.monotonic()
        with open(out_path, 'wb') as out:
            proc = subprocess.Popen(
                [self.node, '--test', '--test-reporter=spec', path],
                cwd=NODE_PACKAGE, env=env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        key = h._watch_pid(proc.pid)
        timed_out = False
        try:
            proc.wait(FILE_TIMEOUT * h.TIMEOUT_SCALE)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            # node and whatever its tests left in its process group.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
            h._unwatch(key)
        return (proc, timed_out, time.monotonic() - t0,
                h._read_text(out_path))


def _add_tests():
    for name in _test_files():
        method = 'test_' + re.sub(r'\W', '_', name[:-len('.test.js')])
        setattr(NodeSuites, method,
                lambda self, name=name: self.run_file(name))


def _package_ready():
    """None when the suites can run, else why they are skipped; raises
    when they should run and cannot."""
    if os.path.exists(os.path.join(NODE_PACKAGE, 'node_modules', 'pg',
                                   'package.json')):
        return None
    if not os.path.exists(os.path.join(NODE_PACKAGE, 'package.json')):
        return f'no {NODE_PACKAGE}/package.json yet'
    raise SystemExit(f'test_node: {NODE_PACKAGE}/node_modules has no pg: '
                     f'run npm ci there (./dev.sh test does)')


_add_tests()

if __name__ == '__main__':
    try:
        node_binary()
    except h.HarnessError as e:
        sys.exit(f'test_node: {e}')
    why = _package_ready()
    if why:
        print(f'test_node: skipped: {why}')
        sys.exit(EXIT_SKIP)
    if not _test_files():
        sys.exit(f'test_node: no *.test.js in {TESTS_DIR}')
    unittest.main(verbosity=2)
