"""Shared set-up of the integration tests: one PostgreSQL cluster per test
file, a role whose password the tests rotate, and an env file to write;
PoolLoad, which runs the pool-load helper (test_pool.py, test_failover.py,
the benchmarks), and NodeLoad, the same for the Node.js package's load
generator (test_node.py, the benchmarks)."""

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

import harness as h


def fresh_password(tag='pw'):
    # Distinctive enough to grep for, never a substring of anything else.
    return f'{tag}-{secrets.token_hex(6)}'


class ClusterTest(unittest.TestCase):
    """A cluster for the whole class, a role 'app' with a known password,
    and a temp dir for env files."""

    cluster = None

    @classmethod
    def setUpClass(cls):
        cls.cluster = h.PgCluster()
        cls.cluster.__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.close()

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='dbswap-test-')
        self.addCleanup(subprocess.run, ['rm', '-rf', self.tmp])
        self.role = 'app_' + secrets.token_hex(3)
        self.password = fresh_password()
        self.cluster.create_role(self.role, self.password)
        self.env_path = os.path.join(self.tmp, 'app.env')

    def url(self, password=None, role=None):
        return self.cluster.url(role or self.role, password or self.password)

    def socket_dir_holding(self, secret):
        """A directory under /tmp whose name holds secret, with a symlink
        .s.PGSQL.<port> to the cluster's real socket: a host that
        connects, and that a driver quotes in its errors.  Returns (dir,
        symlink)."""
        d = tempfile.mkdtemp(prefix=f'dbswap-{secret}-', dir='/tmp')
        self.addCleanup(subprocess.run, ['rm', '-rf', d])
        os.chmod(d, 0o755)
        name = f'.s.PGSQL.{self.cluster.port}'
        link = os.path.join(d, name)
        os.symlink(os.path.join(self.cluster.sockdir, name), link)
        return d, link

    def write_env(self, text, how=h.write_rename):
        how(self.env_path, text)

    def write_url(self, password, how=h.write_rename, name='DATABASE_URL'):
        self.write_env(f'{name}={self.url(password)}\n', how)

    def rotate(self, how=h.write_rename):
        """Changes the role's password on the server, then in the file;
        returns (new password, time the file write finished)."""
        new = fresh_password()
        self.cluster.set_password(self.role, new)
        self.write_url(new, how)
        return new, time.monotonic()

    def start_agent(self, *args, targets=(), env_files=None, env=None):
        agent = h.Agent(env_files=env_files or [self.env_path],
                        targets=targets, args=args, env=env)
        self.addCleanup(agent.close)
        return agent

    def start_subscriber(self, agent, target='DATABASE_URL', args=()):
        sub = h.Subscriber(agent.sock, target, args=args)
        self.addCleanup(sub.close)
        return sub

    def ctl(self, agent, *args, check=True, timeout=10, stdin=None):
        """dbswapctl --socket SOCK ARGS; stdin: text for its stdin (a
        value to set with NAME=-), else /dev/null."""
        r = subprocess.run([os.environ['DBSWAPCTL'], '--socket', agent.sock,
                            *args], capture_output=True, text=True,
                           timeout=timeout, input=stdin,
                           stdin=None if stdin is not None
                           else subprocess.DEVNULL)
        if check and r.returncode != 0:
            self.fail(f'dbswapctl {" ".join(args)} exited {r.returncode}: '
                      f'{r.stderr}')
        return r


class JsonLines:
    """A helper process that prints JSON lines (pool-load, and the
    benchmarks' libpq-load and fanout): argv run with stdin_text on its
    stdin (None: /dev/null; a conninfo goes there, never in argv), env
    added to ours, its lines collected by a thread with the monotonic time
    each arrived (self.lines: [(time, dict)]; a line that is not JSON is
    {'unparsed': text}), its stderr in a file of a temp dir.  Stopped on
    every path out (close(), also by the harness's cleanup)."""

    STOP_TIMEOUT = 5  # close(): SIGTERM, then SIGKILL after this long

    def __init__(self, argv, stdin_text=None, name='helper', env=None):
        self.name = name
        self.lines = []
        self._cond = threading.Condition()
        self._eof = False
        self.proc = self._pid_key = self.dir = self._dir_key = None
        self._key = h._register(self.close)
        try:
            self.dir, self._dir_key = h._mkdtemp(f'dbswap-{name}-')
            self.stderr_path = os.path.join(self.dir, 'stderr')
            full_env = dict(os.environ)
            full_env.update(env or {})
            with open(self.stderr_path, 'ab') as err:
                self.proc = subprocess.Popen(
                    argv, stdout=subprocess.PIPE, stderr=err, env=full_env,
                    stdin=subprocess.DEVNULL if stdin_text is None
                    else subprocess.PIPE)
            self._pid_key = h._watch_pid(self.proc.pid)
            if stdin_text is not None:
                try:
                    self.proc.stdin.write(stdin_text.encode())
                    self.proc.stdin.close()
                except BrokenPipeError:
                    pass
            self._thread = threading.Thread(target=self._reader, daemon=True,
                                            name=name)
            self._thread.start()
        except BaseException:  # nothing left behind when it cannot start
            self.close()
            raise

    @property
    def pid(self):
        return self.proc.pid

    def _reader(self):
        for raw in iter(self.proc.stdout.readline, b''):
            try:
                msg = json.loads(raw)
            except ValueError:
                msg = {'unparsed': raw.decode('utf-8', 'replace').strip()}
            with self._cond:
                self.lines.append((time.monotonic(), msg))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def stderr(self):
        """Its stderr so far, as text."""
        return h._read_text(self.stderr_path)

    def describe(self):
        return (f'{self.name} pid {self.pid}: last lines '
                f'{[m for _, m in self.lines[-3:]]!r}; stderr:\n'
                f'{h._tail(self.stderr())}')

    def close(self):
        try:
            if self.proc is not None:
                if self.proc.poll() is None:
                    h._stop_process(self.proc, self.STOP_TIMEOUT)
                self.proc.wait()
                self.proc.stdout.close()
            h._unwatch(self._pid_key)
            self._pid_key = None
            h._rmtree(self.dir, self._dir_key)
            self._dir_key = None
        finally:
            h._unregister(self._key)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class PoolLoad(JsonLines):
    """pool-load --socket SOCK --target TARGET ARGS... (tests/helpers/
    pool-load.c; read its header) as JsonLines.  Its failures are the
    tests' (AssertionError).  Used by test_pool.py, test_failover.py and
    the benchmarks."""

    STOP_TIMEOUT = 10

    def __init__(self, sock, args=(), env=None, name='pool-load',
                 target='DATABASE_URL'):
        argv = h._wrapper() + h._binary(None, 'DBSWAP_POOL_LOAD') + \
            ['--socket', sock, '--target', target, '--name', name] + \
            [str(a) for a in args]
        super().__init__(argv, None, name, env)

    def check_alive(self):
        if self.proc.poll() is not None:
            raise AssertionError(f'{self.name} exited with status '
                                 f'{self.proc.returncode}; {self.describe()}')

    def progress(self):
        """The last progress line, or None before the first."""
        with self._cond:
            for _, msg in reversed(self.lines):
                if 't' in msg:
                    return msg
        return None

    def wait_progress(self, predicate, timeout=10, what='progress'):
        """Waits for a progress line for which predicate(line) is true."""
        deadline = time.monotonic() + timeout * h.TIMEOUT_SCALE
        with self._cond:
            while True:
                for _, msg in reversed(self.lines):
                    if 't' in msg and predicate(msg):
                        return msg
                if self._eof:
                    raise AssertionError(f'{self.name} ended before {what}; '
                                         f'{self.describe()}')
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f'no {what} from {self.name} within '
                                         f'{timeout} s; {self.describe()}')
                self._cond.wait(left)

    def wait_progress_after(self, t, timeout=10):
        """The first progress line that arrived at monotonic time t or
        later (waiting for it)."""
        deadline = time.monotonic() + timeout * h.TIMEOUT_SCALE
        with self._cond:
            i = 0
            while True:
                while i < len(self.lines):
                    arrived, msg = self.lines[i]
                    if arrived >= t and 't' in msg:
                        return msg
                    i += 1
                if self._eof:
                    raise AssertionError(f'{self.name} ended before a progress'
                                         f' line after t={t:.3f}; '
                                         f'{self.describe()}')
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f'no progress line from {self.name} '
                                         f'within {timeout} s; '
                                         f'{self.describe()}')
                self._cond.wait(left)

    def timeline(self):
        """[(arrival time, progress line)] so far."""
        with self._cond:
            return [(t, m) for t, m in self.lines if 't' in m]

    def wait_exit(self, timeout=30):
        """Waits for pool-load to end by itself; returns (status, summary).
        A pool-load that does not end in time is killed and fails."""
        try:
            self.proc.wait(timeout * h.TIMEOUT_SCALE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f'{self.name} did not end within {timeout} s;'
                                 f' {self.describe()}') from None
        return self._finish()

    def stop(self, timeout=30):
        """SIGTERM, then as wait_exit().  Threads may be waiting out an
        acquire (10 s), hence the long timeout."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def _finish(self):
        rc = self.proc.wait()
        h._unwatch(self._pid_key)
        self._pid_key = None
        self._thread.join(10)
        with self._cond:
            final = [m for _, m in self.lines if 'stats' in m]
        if not final:
            raise AssertionError(f'{self.name} (status {rc}) printed no '
                                 f'summary; {self.describe()}')
        return rc, final[-1]


# The npm package, and its load generator (read its header).
NODE_PACKAGE = os.environ.get('DBSWAP_NODE_PACKAGE') or os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                 'client-lib', 'node'))
NODE_LOAD = os.path.join(NODE_PACKAGE, 'test', 'integration', 'load.js')


def node_binary():
    """$DBSWAP_NODE (meson sets it), else node on PATH.  HarnessError
    naming the install step when there is none: a missing toolchain fails
    the Node tests, it never skips them."""
    node = os.environ.get('DBSWAP_NODE') or shutil.which('node')
    if not node:
        raise h.HarnessError('no node ($DBSWAP_NODE unset, none on PATH): '
                             './dev.sh test installs Debian\'s nodejs')
    return node


class NodeLoad(PoolLoad):
    """client-lib/node/test/integration/load.js as PoolLoad (the same
    lines: progress, summary; read load.js's header):
      pool='dbswap': createPool() on the agent socket sock and target;
      pool='pg':     a plain pg.Pool on url, given on its stdin.
    args: its other options (--threads 8 --tx ...)."""

    def __init__(self, pool='dbswap', sock=None, url=None, args=(),
                 env=None, name='node-load', target='DATABASE_URL'):
        argv = [node_binary(), NODE_LOAD, '--pool', pool, '--name', name]
        if pool == 'dbswap':
            argv += ['--target', target]
            if sock:
                argv += ['--socket', sock]
        elif url is None:
            raise ValueError('NodeLoad: --pool pg needs url')
        argv += [str(a) for a in args]
        JsonLines.__init__(self, argv, None if url is None else url + '\n',
                           name, env)


def summary_field(summary, name):
    """A field of pool-load's summary line, at its top level or in its
    "stats"; KeyError naming what there is when it is in neither."""
    if name in summary:
        return summary[name]
    if name in summary.get('stats', {}):
        return summary['stats'][name]
    raise KeyError(f'pool-load summary has no {name!r}: {summary!r}')


def main():
    unittest.main(verbosity=2)
