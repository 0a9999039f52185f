"""The Python package (client-lib/python, `dbswap`) against the real agent
and a real PostgreSQL cluster from the harness.

The package and its dependencies (msgpack, psycopg, psycopg-pool,
SQLAlchemy, at the versions of client-lib/python/requirements-test.txt)
come from the venv ./dev.sh makes: $DBSWAP_PY_VENV, else build/py-venv at
the top of the tree.  It is made from the same /usr/bin/python3 that runs
these tests, so its site-packages are put first on sys.path here and the
package is imported in-process.  No venv is a failure naming the install
step, never a skip.

What each test checks is in its docstring.
"""

import glob
import json
import logging
import os
import subprocess
import sys
import threading
import time
import traceback
import unittest

import harness as h
from common import ClusterTest, main
from test_failover import CONFIRM_S, SHORT, TwoClusters, brief, settings_of

TOP = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(
    __file__)), '..', '..'))
PY_PACKAGE = os.path.join(TOP, 'client-lib', 'python')
VENV = os.environ.get('DBSWAP_PY_VENV') or os.path.join(TOP, 'build',
                                                        'py-venv')
NOBODY = 65534
THREADS = 8
# How many rotations the load test makes (DBSWAP_PY_ROTATIONS=5 for a
# quick look).
ROTATIONS = int(os.environ.get('DBSWAP_PY_ROTATIONS', '100'))


def _site_packages():
    found = glob.glob(os.path.join(VENV, 'lib', 'python3*', 'site-packages'))
    if not found:
        raise h.HarnessError(
            f'no Python venv at {VENV}: ./dev.sh makes it (python3 -m venv '
            f'build/py-venv && build/py-venv/bin/pip install -r '
            f'client-lib/python/requirements-test.txt)')
    return found[0]


SITE = _site_packages()
for p in (SITE, os.path.join(PY_PACKAGE, 'src')):
    if p not in sys.path:
        sys.path.insert(0, p)

import dbswap  # noqa: E402
from dbswap.psycopg import ConnectionPool  # noqa: E402


class PythonUnit(unittest.TestCase):

    def test_pytest(self):
        """The package's own tests (client-lib/python/tests: the protocol,
        the clients and the adapters against a fake agent) with the venv's
        pytest."""
        r = subprocess.run(
            [os.path.join(VENV, 'bin', 'python'), '-m', 'pytest', '-q',
             '-p', 'no:cacheprovider', 'tests'],
            cwd=PY_PACKAGE, capture_output=True, text=True,
            timeout=300 * h.TIMEOUT_SCALE,
            env=dict(os.environ, PYTHONDONTWRITEBYTECODE='1'))
        out = r.stdout + r.stderr
        self.assertEqual(r.returncode, 0, f'pytest:\n{out}')
        self.assertRegex(out, r'\d+ passed')


class Loops:
    """THREADS threads running SELECT 1 through the pool until stopped,
    counting queries and failures, in all and per thread (ok_by_loop,
    failed_by_loop), with the first few errors and the monotonic time of
    each failure (failed_at)."""

    def __init__(self, pool, threads=THREADS, query=None):
        self.pool = pool
        self.query = query or self._psycopg_query
        self.ok = 0
        self.failed = 0
        self.ok_by_loop = [0] * threads
        self.failed_by_loop = [0] * threads
        self.failed_at = []
        self.errors = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,),
                                          daemon=True)
                         for i in range(threads)]
        for t in self._threads:
            t.start()

    def _psycopg_query(self):
        with self.pool.connection(timeout=10) as conn:
            conn.execute('SELECT 1').fetchone()

    def _run(self, n):
        while not self._stop.is_set():
            try:
                self.query()
                with self._lock:
                    self.ok += 1
                    self.ok_by_loop[n] += 1
            except Exception as e:
                with self._lock:
                    self.failed += 1
                    self.failed_by_loop[n] += 1
                    self.failed_at.append(time.monotonic())
                    if len(self.errors) < 5:
                        self.errors.append(repr(e))

    def stop(self, timeout=30):
        """Stops the loops; returns how many are still in a query after
        timeout (stuck)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0, deadline - time.monotonic()))
        return sum(t.is_alive() for t in self._threads)


class PythonPackage(ClusterTest):

    def setUp(self):
        super().setUp()
        self.write_url(self.password)

    def pool(self, agent, **kw):
        client = dbswap.Client(agent.sock, name='test-python')
        self.addCleanup(client.close)
        pool = ConnectionPool('DATABASE_URL', client=client, **kw)
        self.addCleanup(pool.close)
        return pool

    def test_rotations_under_load_fail_no_query_and_are_acked(self):
        """ROTATIONS password rotations while 8 threads run SELECT 1
        through a dbswap.psycopg.ConnectionPool: no query fails, each
        generation is acked by the pool (status acked == 1 at that
        generation), every query ran on the value in force when the loops
        stopped (no second psycopg_pool left open), and the pool served
        queries during every rotation."""
        agent = self.start_agent()
        pool = self.pool(agent, min_size=2, max_size=THREADS)
        pool.wait(timeout=10 * h.TIMEOUT_SCALE)
        h.wait_for(lambda: (s := h.target_status(agent, 'DATABASE_URL'))
                   ['acked'] == 1 and s['generation'] == 1,
                   what='the pool to ack generation 1')
        loops = Loops(pool)
        try:
            for i in range(ROTATIONS):
                before = loops.ok
                self.rotate()
                gen = i + 2
                h.wait_for(lambda: (s := h.target_status(
                    agent, 'DATABASE_URL'))['generation'] == gen
                    and s['acked'] == 1 and s['subscribers'] == 1,
                    timeout=20, what=f'the pool to ack generation {gen}')
                self.assertEqual(pool.generation, gen)
                self.assertGreater(loops.ok, before,
                                   f'no query ran during rotation {i + 1}')
        finally:
            loops.stop()
        self.assertEqual(loops.failed, 0, loops.errors)
        stats = pool.get_stats()
        self.assertEqual(stats['generations_open'], 1, stats)
        self.assertEqual(stats['connections_out'], 0, stats)
        print(f'{ROTATIONS} rotations, {loops.ok} queries, 0 failed')

    def test_agent_killed_and_restarted_under_load(self):
        """The agent SIGKILLed and started again under 8 query loops: no
        query fails (the pool keeps the last value), the client is back
        with the new instance, and the pool acks the restarted agent's
        generation 1 for the value it already uses, without a swap."""
        agent = self.start_agent()
        pool = self.pool(agent, min_size=2, max_size=THREADS)
        pool.wait(timeout=10 * h.TIMEOUT_SCALE)
        h.wait_for(lambda: h.target_status(agent, 'DATABASE_URL')
                   ['acked'] == 1, what='generation 1 acked')
        self.rotate()
        h.wait_for(lambda: (s := h.target_status(agent, 'DATABASE_URL'))
                   ['generation'] == 2 and s['acked'] == 1,
                   timeout=20, what='generation 2 acked')
        first = pool.client.instance
        swaps = []
        pool.on_swap(swaps.append)
        loops = Loops(pool)
        try:
            time.sleep(0.3)
            agent.restart(kill=True)
            st = h.wait_for(lambda: (s := h.target_status(
                agent, 'DATABASE_URL'))['acked'] == 1 and s,
                timeout=10, what='the restarted agent\'s generation acked')
            before = loops.ok
            time.sleep(0.3)
            self.assertGreater(loops.ok, before)
        finally:
            loops.stop()
        self.assertEqual(loops.failed, 0, loops.errors)
        self.assertEqual(st['generation'], 1)
        self.assertNotEqual(pool.client.instance, first)
        self.assertEqual(swaps, [], 'the same value must not swap')

    def test_ack_waits_for_the_last_old_connection(self):
        """Make-before-break and the ack: a connection of generation 1 held
        across a rotation keeps working (its query runs after the switch),
        new checkouts get generation 2 at once, and generation 2 is acked
        only once the held connection is returned (which closes it: the
        role then has no session left on the old password)."""
        agent = self.start_agent()
        pool = self.pool(agent, min_size=1, max_size=4)
        pool.wait(timeout=10 * h.TIMEOUT_SCALE)
        held = pool.getconn()
        old_pid = held.info.backend_pid
        h.wait_for(lambda: h.target_status(agent, 'DATABASE_URL')
                   ['acked'] == 1, what='generation 1 acked')
        self.rotate()
        h.wait_for(lambda: pool.generation == 2, timeout=20,
                   what='the pool to switch to generation 2')
        with pool.connection() as conn:
            self.assertNotEqual(conn.info.backend_pid, old_pid)
        time.sleep(0.5)
        st = h.target_status(agent, 'DATABASE_URL')
        self.assertEqual((st['generation'], st['acked']), (2, 0),
                         'acked while a connection of generation 1 is out')
        self.assertEqual(held.execute('SELECT 1').fetchone(), (1,))
        pool.putconn(held)
        h.wait_for(lambda: h.target_status(agent, 'DATABASE_URL')
                   ['acked'] == 1, what='generation 2 acked')
        self.assertTrue(held.closed)
        pids = self.cluster.sql(
            'SELECT pid FROM pg_stat_activity WHERE usename = '
            f"'{self.role}'").split()
        self.assertNotIn(str(old_pid), pids)

    def test_async_pool_rotations_under_load(self):
        """dbswap.psycopg.AsyncConnectionPool on an AsyncClient, 8 asyncio
        tasks running SELECT 1: ROTATIONS rotations, no query fails, each
        generation acked by the pool."""
        import asyncio
        from dbswap.psycopg import AsyncConnectionPool
        agent = self.start_agent()

        def acked(gen):
            s = h.target_status(agent, 'DATABASE_URL')
            return s['generation'] == gen and s['acked'] == 1

        async def main():
            async with dbswap.AsyncClient(agent.sock, name='test-aio') as c, \
                    AsyncConnectionPool(client=c, min_size=2,
                                        max_size=THREADS) as pool:
                await pool.wait(timeout=10 * h.TIMEOUT_SCALE)
                counts = {'ok': 0, 'failed': 0, 'errors': []}
                stop = asyncio.Event()

                async def loop():
                    while not stop.is_set():
                        try:
                            async with pool.connection(timeout=10) as conn:
                                await (await conn.execute('SELECT 1')
                                       ).fetchone()
                            counts['ok'] += 1
                        except Exception as e:
                            counts['failed'] += 1
                            counts['errors'].append(repr(e))
                tasks = [asyncio.create_task(loop()) for _ in range(THREADS)]
                try:
                    await asyncio.to_thread(h.wait_for, lambda: acked(1),
                                            what='generation 1 acked')
                    for i in range(ROTATIONS):
                        await asyncio.to_thread(self.rotate)
                        await asyncio.to_thread(
                            h.wait_for, lambda: acked(i + 2), timeout=20,
                            what=f'generation {i + 2} acked')
                        self.assertEqual(pool.generation, i + 2)
                finally:
                    stop.set()
                    await asyncio.gather(*tasks)
                return counts
        counts = asyncio.run(main())
        self.assertEqual(counts['failed'], 0, counts['errors'][:5])
        self.assertGreater(counts['ok'], 0)

    def test_sqlalchemy_engine_follows_rotations_under_load(self):
        """dbswap.sqlalchemy.create_engine under 8 threads running SELECT 1
        through engine.connect(): ROTATIONS rotations, no query fails, each
        generation is acked (once no connection of an older value is
        left), and the engine's generation follows."""
        from dbswap.sqlalchemy import create_engine
        from sqlalchemy import text
        agent = self.start_agent()
        client = dbswap.Client(agent.sock, name='test-python-sqla')
        self.addCleanup(client.close)
        engine = create_engine('DATABASE_URL', client=client,
                               pool_size=THREADS, max_overflow=0)
        self.addCleanup(engine.dbswap.close)
        self.addCleanup(engine.dispose)
        with engine.connect() as conn:
            self.assertEqual(conn.execute(text('SELECT 1')).scalar(), 1)
        h.wait_for(lambda: h.target_status(agent, 'DATABASE_URL')
                   ['acked'] == 1, what='the engine to ack generation 1')

        def query():
            with engine.connect() as c:
                c.execute(text('SELECT 1')).scalar()

        loops = Loops(None, query=query)
        try:
            for i in range(ROTATIONS):
                self.rotate()
                gen = i + 2
                h.wait_for(lambda: (s := h.target_status(
                    agent, 'DATABASE_URL'))['generation'] == gen
                    and s['acked'] == 1, timeout=20,
                    what=f'the engine to ack generation {gen}')
                self.assertEqual(engine.dbswap.generation, gen)
        finally:
            loops.stop()
        self.assertEqual(loops.failed, 0, loops.errors)
        self.assertGreater(loops.ok, 0)

    def test_settings_pushed_by_the_agent(self):
        """DATABASE_POOL_MIN/MAX from the env file size the pool, and a
        change is applied live to the psycopg_pool in use (no swap); an
        explicit max_size wins over the agent's."""
        self.write_env(f'DATABASE_URL={self.url()}\nDATABASE_POOL_MAX=3\n'
                       'DATABASE_POOL_MIN=2\n')
        agent = self.start_agent()
        pool = self.pool(agent)
        pool.wait(timeout=10 * h.TIMEOUT_SCALE)
        h.wait_for(lambda: (pool.min_size, pool.max_size) == (2, 3),
                   what='the agent\'s settings')
        gen = pool.generation
        self.write_env(f'DATABASE_URL={self.url()}\nDATABASE_POOL_MAX=5\n'
                       'DATABASE_POOL_MIN=1\n')
        h.wait_for(lambda: (s := pool.get_stats()).get('pool_max') == 5
                   and s.get('pool_min') == 1,
                   what='the psycopg_pool resized')
        self.assertEqual(pool.generation, gen)
        client = dbswap.Client(agent.sock, name='test-python-explicit')
        self.addCleanup(client.close)
        explicit = ConnectionPool('DATABASE_URL', client=client, max_size=7)
        self.addCleanup(explicit.close)
        explicit.wait(timeout=10 * h.TIMEOUT_SCALE)
        self.assertEqual((explicit.min_size, explicit.max_size), (1, 7))

    def test_environment_value_without_an_agent(self):
        """No agent at the socket: after the 200 ms grace the pool connects
        with $DATABASE_URL, and queries work."""
        os.environ['DATABASE_URL'] = self.url()
        self.addCleanup(os.environ.pop, 'DATABASE_URL', None)
        pool = ConnectionPool(socket=os.path.join(self.tmp, 'absent.sock'))
        self.addCleanup(pool.close)
        with pool.connection(timeout=10) as conn:
            self.assertEqual(conn.execute('SELECT current_user').fetchone(),
                             (self.role,))
        self.assertEqual(pool.generation, 0)

    def test_unknown_target_fails_checkouts_at_once(self):
        """A pool on a target the agent does not have: a checkout raises
        dbswap.UnknownTargetError (a LookupError) naming the target within
        a second or two, not at its 30 s timeout."""
        agent = self.start_agent()
        client = dbswap.Client(agent.sock, name='test-python')
        self.addCleanup(client.close)
        pool = ConnectionPool('NOPE_URL', client=client)
        self.addCleanup(pool.close)
        t0 = time.monotonic()
        with self.assertRaises(dbswap.UnknownTargetError) as cm:
            with pool.connection():
                pass
        self.assertLess(time.monotonic() - t0, 3 * h.TIMEOUT_SCALE)
        self.assertIsInstance(cm.exception, LookupError)
        self.assertIn('NOPE_URL', str(cm.exception))
        with self.assertRaises(dbswap.UnknownTargetError):
            client.subscribe('NOPE_URL')

    def test_forbidden_target_is_a_permission_error(self):
        """As nobody (not root, not in the socket's group): a pool's
        checkout and a client's subscribe raise dbswap.ForbiddenError,
        which is a PermissionError, with the agent's reason; the message
        holds no password."""
        if os.geteuid() != 0:
            self.skipTest('running as nobody needs root')
        agent = self.start_agent('--socket-mode', '0666')
        os.chmod(agent.dir, 0o711)
        h.wait_for(lambda: h.target_status(agent, 'DATABASE_URL')['valid'],
                   what='a published value')
        script = (
            'import json, sys\n'
            'import dbswap\n'
            'from dbswap.psycopg import ConnectionPool\n'
            'out = {}\n'
            'pool = ConnectionPool("DATABASE_URL", socket=sys.argv[1],\n'
            '                      name="py-forbidden")\n'
            'try:\n'
            '    with pool.connection(timeout=10):\n'
            '        out["pool"] = "connected"\n'
            'except Exception as e:\n'
            '    out["pool"] = [type(e).__name__,\n'
            '                   isinstance(e, PermissionError), str(e)]\n'
            'pool.close()\n'
            'with dbswap.Client(sys.argv[1]) as c:\n'
            '    try:\n'
            '        c.subscribe("DATABASE_URL")\n'
            '        out["client"] = "subscribed"\n'
            '    except Exception as e:\n'
            '        out["client"] = [type(e).__name__,\n'
            '                         isinstance(e, PermissionError), str(e)]\n'
            'print(json.dumps(out))\n')
        env = {'PATH': '/usr/bin:/bin',
               'PYTHONPATH': os.pathsep.join(
                   [SITE, os.path.join(PY_PACKAGE, 'src')])}
        r = subprocess.run(['/usr/bin/python3', '-c', script, agent.sock],
                           user=NOBODY, group=NOBODY, extra_groups=[],
                           env=env, capture_output=True, text=True,
                           timeout=60 * h.TIMEOUT_SCALE,
                           stdin=subprocess.DEVNULL, cwd='/')
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout.strip().splitlines()[-1])
        for key in ('pool', 'client'):
            name, is_perm, message = out[key]
            self.assertEqual(name, 'ForbiddenError', out)
            self.assertTrue(is_perm, out)
            self.assertIn('forbidden', message)
            self.assertIn('DATABASE_URL', message)
            self.assertNotIn(self.password, message)
        self.assertNotIn(self.password, r.stderr)


class PythonFailover(TwoClusters):

    def test_failover_under_load(self):
        """The primary stopped (immediate) under 4 query loops on a pool of
        4: the pool switches to the secondary at once (break-before-make),
        at most one query fails per pool connection, none after the
        switch, and the failover's generation is acked."""
        self.write_env(settings=SHORT)
        agent = self.start_agent()
        client = dbswap.Client(agent.sock, name='test-python-failover')
        self.addCleanup(client.close)
        pool = ConnectionPool('DATABASE_URL', client=client, min_size=4,
                              max_size=4)
        self.addCleanup(pool.close)
        pool.wait(timeout=10 * h.TIMEOUT_SCALE)
        self.wait_status(agent, lambda t: t['acked'] == 1, 10,
                         'generation 1 acked')
        loops = Loops(pool, threads=4)
        try:
            time.sleep(0.3)
            self.primary.stop('immediate')
            _, st = self.wait_status(
                agent, lambda t: t['failover']['current'] == 'secondary'
                and t['acked'] == 1, 20, 'the failover acked')
            failed_at_switch = loops.failed
            before = loops.ok
            time.sleep(0.5)
        finally:
            loops.stop()
        self.assertGreater(loops.ok, before, 'no query after the failover')
        self.assertLessEqual(failed_at_switch, 4, loops.errors)
        self.assertEqual(loops.failed, failed_at_switch, loops.errors)
        self.assertEqual(pool.generation, st['generation'])
        print(f'failover: {failed_at_switch} failed queries, '
              f'{loops.ok} queries')

    def test_hung_primary_under_load(self):
        """The primary hung (SIGSTOP of the postmaster and its backends)
        under 8 query loops on a pool of 8, test_failover.py's short
        checks: the pool switches to the secondary (acked within twice
        test_failover.py's bound), at most one query fails per loop, none
        from a second after the switch on, and every loop goes on querying
        while the primary is still hung (none stuck on a hung connection:
        psycopg has no read timeout, so only the pool's shutting down of
        the old sockets frees them).  SIGCONT: the agent fails back, the
        pool drains to the primary and acks it, no query failing."""
        cfg = settings_of(SHORT)
        interval = cfg['health_check_interval_ms'] / 1000
        timeout = cfg['connection_timeout_ms'] / 1000
        threshold = cfg['failure_threshold']
        retry = cfg['primary_retry_interval_ms'] / 1000
        self.write_env(settings=SHORT)
        agent = self.start_agent()
        status = self.status_client(agent)
        client = dbswap.Client(agent.sock, name='test-python-hung')
        self.addCleanup(client.close)
        pool = ConnectionPool('DATABASE_URL', client=client,
                              max_size=THREADS)
        self.addCleanup(pool.close)
        swaps = []
        pool.on_swap(swaps.append)
        pool.wait(timeout=10 * h.TIMEOUT_SCALE)
        t = self.wait_ready(agent, subscribers=1)
        g0 = t['generation']
        loops = Loops(pool)
        # On every path out: stopped (threads stuck on the hung server are
        # freed by the SIGCONT of pause()'s cleanup, which runs first).
        self.addCleanup(loops.stop, 1)
        h.wait_for(lambda: loops.ok > 100, what='100 queries')

        t0 = time.monotonic()
        self.pause(self.primary)
        t_switch, t = self.wait_status(
            status, self.switched('secondary', g0, 1), timeout=15,
            what='the secondary acked by the pool after the primary hung')
        took = t_switch - t0
        bound = 2 * (interval + 2 * timeout + (threshold - 1) * CONFIRM_S
                     + 1.0)
        print(f'python: primary hung (SIGSTOP) -> secondary acked by the '
              f'pool in {took * 1000:.0f} ms (bound {bound * 1000:.0f} ms)')
        self.assertLessEqual(took, bound * h.TIMEOUT_SCALE, brief(t))
        g1 = t['generation']
        self.assertEqual(
            [(s['reason'], s['server'], s['immediate']) for s in swaps
             if s['generation'] > g0],
            [('failover', 'secondary', True)], swaps)

        # A second after the switch the failures are in: at most one per
        # loop.  Then every loop must query on while the primary is still
        # hung.
        time.sleep(1.0)
        with loops._lock:
            settled = loops.failed
            by_loop = list(loops.failed_by_loop)
            before = list(loops.ok_by_loop)
        self.assertTrue(all(n <= 1 for n in by_loop),
                        f'failures per loop {by_loop}: {loops.errors}')
        h.wait_for(lambda: all(a > b for a, b in zip(loops.ok_by_loop,
                                                     before)),
                   timeout=5, what='a query of every loop a second after the '
                   f'switch (none stuck on the hung primary): per loop '
                   f'{before} then')
        self.assertEqual(pool.generation, g1)
        self.assertTrue(self.primary.paused, 'resumed too soon')

        # SIGCONT: a failback, which drains (no failure).
        t1 = time.monotonic()
        self.primary.resume()
        t_back, t = self.wait_status(
            status, self.switched('primary', g1, 1),
            timeout=retry + threshold * interval + 10,
            what='failback to the primary acked by the pool after SIGCONT')
        print(f'python: primary resumed (SIGCONT) -> failback acked by the '
              f'pool in {(t_back - t1) * 1000:.0f} ms')
        self.assertEqual((swaps[-1]['reason'], swaps[-1]['immediate']),
                         ('failback', False), swaps)
        before = loops.ok
        h.wait_for(lambda: loops.ok > before + 100,
                   what='queries on the primary')
        with pool.connection(timeout=10) as conn:
            port = conn.execute("SELECT current_setting('port')::int"
                                ).fetchone()[0]
        stuck = loops.stop(timeout=1)
        print(f'python: {settled} failed queries at the hang (per loop '
              f'{loops.failed_by_loop}), none at the failback; {loops.ok} '
              f'queries in all')
        self.assertEqual(stuck, 0, 'loops stuck at the end')
        self.assertEqual(loops.failed, settled,
                         f'failures after the switch: {loops.errors}')
        self.assertEqual(port, self.primary.port)
        stats = pool.get_stats()
        self.assertEqual(stats['generations_open'], 1, stats)


class _Lines(logging.Handler):
    """Every log record, formatted with its traceback."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter('%(name)s %(levelname)s '
                                            '%(message)s'))
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))


class PythonDriverErrorsMasked(ClusterTest):
    """Scenario 'driver-errors-masked' of conformance.py: the value's host
    is a socket directory whose name holds the password (a symlink there
    to the cluster's socket).  The pool connects and serves; then the
    symlink goes, and a second checkout (the first one held) makes
    psycopg_pool open a connection, which libpq fails quoting the socket
    path.  The checkout's error (str, repr, traceback) and every log line
    (psycopg_pool's 'error connecting' among them, which names the
    failure) hold no password."""

    def setUp(self):
        super().setUp()
        d, self.link = self.socket_dir_holding(self.password)
        self.write_env(f"DATABASE_URL=host={d} port={self.cluster.port} "
                       f"user={self.role} password={self.password} "
                       f"dbname=postgres\n")
        self.agent = self.start_agent()
        h.wait_for(lambda: h.target_status(self.agent, 'DATABASE_URL')
                   ['valid'], what='the value validated by the agent')
        self.lines = _Lines()
        root = logging.getLogger()
        self.addCleanup(root.setLevel, root.level)
        root.addHandler(self.lines)
        self.addCleanup(root.removeHandler, self.lines)
        root.setLevel(logging.DEBUG)

    def assert_no_password(self, text, what):
        if self.password in text:  # the message must not say it either
            self.fail(f'the password is in {what}:\n'
                      f'{text.replace(self.password, "<PASSWORD>")}')

    def check(self, err, took):
        texts = {'str': str(err), 'repr': repr(err),
                 'traceback': ''.join(traceback.format_exception(err))}
        for what, text in texts.items():
            self.assert_no_password(text, f'the error\'s {what}')
        self.assertIsInstance(err, dbswap.psycopg.PoolTimeout,
                              texts['traceback'])
        self.assertLess(took, 10 * h.TIMEOUT_SCALE)
        log = '\n'.join(self.lines.lines)
        self.assert_no_password(log, 'the log')
        failed = [ln for ln in self.lines.lines if 'error connecting' in ln]
        self.assertTrue(failed, f'no "error connecting" line in:\n{log}')
        self.assertIn('No such file or directory', failed[0])
        self.assertIn('.s.PGSQL.', failed[0])

    def test_driver_errors_masked(self):
        """dbswap.psycopg.ConnectionPool: see the class."""
        client = dbswap.Client(self.agent.sock, name='test-python-mask')
        self.addCleanup(client.close)
        pool = ConnectionPool('DATABASE_URL', client=client, min_size=1,
                              max_size=2, timeout=3)
        self.addCleanup(pool.close)
        pool.wait(timeout=10 * h.TIMEOUT_SCALE)
        with pool.connection(timeout=10) as held:
            self.assertEqual(held.execute('SELECT current_user').fetchone(),
                             (self.role,))
            os.unlink(self.link)
            t0 = time.monotonic()
            with self.assertRaises(Exception) as cm:
                pool.getconn(timeout=3)
            took = time.monotonic() - t0
        self.check(cm.exception, took)

    def test_driver_errors_masked_async(self):
        """As test_driver_errors_masked, with AsyncConnectionPool."""
        import asyncio
        from dbswap.psycopg import AsyncConnectionPool

        async def main():
            async with dbswap.AsyncClient(self.agent.sock,
                                          name='test-aio-mask') as c, \
                    AsyncConnectionPool(client=c, min_size=1, max_size=2,
                                        timeout=3) as pool:
                await pool.wait(timeout=10 * h.TIMEOUT_SCALE)
                async with pool.connection(timeout=10) as held:
                    cur = await held.execute('SELECT current_user')
                    self.assertEqual(await cur.fetchone(), (self.role,))
                    os.unlink(self.link)
                    t0 = time.monotonic()
                    try:
                        await pool.getconn(timeout=3)
                    except Exception as e:
                        return e, time.monotonic() - t0
                    self.fail('a checkout succeeded with no socket')
        err, took = asyncio.run(main())
        self.check(err, took)

    def test_first_value_not_connecting_is_masked(self):
        """The symlink gone before the pool starts: the agent's value
        never connects here, and a checkout fails (NoValueError, or
        PoolTimeout) with no password in its str, repr or traceback, nor
        in the log, which says why (No such file or directory)."""
        os.unlink(self.link)
        client = dbswap.Client(self.agent.sock, name='test-python-mask')
        self.addCleanup(client.close)
        pool = ConnectionPool('DATABASE_URL', client=client, min_size=1,
                              max_size=2, timeout=3)
        self.addCleanup(pool.close)
        t0 = time.monotonic()
        with self.assertRaises(Exception) as cm:
            pool.getconn(timeout=3)
        took = time.monotonic() - t0
        err = cm.exception
        tb = ''.join(traceback.format_exception(err))
        for what, text in (('str', str(err)), ('repr', repr(err)),
                           ('traceback', tb)):
            self.assert_no_password(text, f'the error\'s {what}')
        self.assertIsInstance(err, (dbswap.NoValueError,
                                    dbswap.psycopg.PoolTimeout), tb)
        self.assertLess(took, 10 * h.TIMEOUT_SCALE)
        log = '\n'.join(self.lines.lines)
        self.assert_no_password(log, 'the log')
        self.assertIn('No such file or directory', str(err) + log)


if __name__ == '__main__':
    main()
