"""The Go module (client-lib/go, dbswap.dev/dbswap) against the real agent
and a real PostgreSQL cluster, everything started by this harness.

  GoUnit    go vet and go test on the module: the protocol, the client and
            the pool against a fake agent (no server needed)
  GoPool    the pgxswap pool driven by client-lib/go/internal/cmd/pgxload
            (read its header): password rotations under 8 query loops with
            no failed query and every generation acked; a connection
            held across a rotation (pgxload hold) holds the ack until it
            is released; a target the app's
            uid may not follow, and one the agent does not have, give a
            clear error at once
  GoFailover a primary and a secondary cluster (test_failover.py's
            TwoClusters): the primary crashed, or hung (SIGSTOP), under
            load: the pool on the secondary at once, at most one failed
            query per busy connection, none after
  GoDriverErrorsMasked
            pgconn's connect error, which quotes a socket dir whose name
            holds the password, reaches the app masked

The go command is $DBSWAP_GO (./dev.sh sets it), else go on PATH, else
/usr/local/go's, else Debian's golang-1.23 (/usr/lib/go-1.23/bin/go, from
bookworm-backports), the first that is Go 1.23 or newer; its absence
is a failure, never a skip. It runs with GOFLAGS=-mod=readonly
and GOTOOLCHAIN=local: the module's go.sum is the whole truth, and the
dependencies come from the module cache that `go mod download` (the
README's install step) filled.  pgxload is built once per run into a temp
dir that other users may read (the forbidden case runs it as nobody).
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import harness as h
from common import ClusterTest, JsonLines, PoolLoad, fresh_password, main
from test_failover import CONFIRM_S, SHORT, TwoClusters, settings_of
from test_pool import PoolTest

GO_MODULE = os.environ.get('DBSWAP_GO_MODULE') or os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                 'client-lib', 'go'))
TARGET = 'DATABASE_URL'
ROTATIONS = 100
NOBODY = 65534
# go test of the whole module; the first build of pgx takes a while.
UNIT_TIMEOUT = 600
BUILD_TIMEOUT = 600


GO_MIN = (1, 23)  # go.mod's go directive


def _go_version(go):
    """(major, minor) of a go command, or None if it does not run."""
    try:
        r = subprocess.run([go, 'env', 'GOVERSION'], capture_output=True,
                           text=True, timeout=30,
                           env=dict(os.environ, GOTOOLCHAIN='local'))
        major, minor = r.stdout.strip().removeprefix('go').split('.')[:2]
        return int(major), int(minor)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def go_binary():
    """$DBSWAP_GO, else go on PATH, /usr/local/go's or Debian's
    golang-1.23, the first
    that is Go 1.23 or newer (bookworm's own golang-go is 1.19).  A
    missing toolchain fails the Go tests, never skips them."""
    if 'go' in _built:
        return _built['go']
    seen = []
    for go in (os.environ.get('DBSWAP_GO'), shutil.which('go'),
               '/usr/local/go/bin/go', '/usr/lib/go-1.23/bin/go'):
        if not go or not os.access(go, os.X_OK):
            continue
        v = _go_version(go)
        seen.append(f'{go} ({"go%d.%d" % v if v else "does not run"})')
        if v and v >= GO_MIN:
            _built['go'] = go
            return go
    raise h.HarnessError(
        f'no Go {GO_MIN[0]}.{GO_MIN[1]} or newer (tried: '
        f'{", ".join(seen) or "none found"}): ./dev.sh installs Debian\'s '
        'golang-1.23-go from bookworm-backports')


def go_env():
    env = dict(os.environ)
    # -buildvcs=false: a build from a tarball or an odd checkout must not
    # fail for want of git.
    env.update(GOFLAGS='-mod=readonly -buildvcs=false', GOTOOLCHAIN='local')
    for k in ('DBSWAP_SOCKET', TARGET):  # nothing from outside
        env.pop(k, None)
    return env


_built = {}


def pgxload():
    """The path of the pgxload binary, built on first use."""
    if 'path' in _built:
        return _built['path']
    d, key = h._mkdtemp('dbswap-go-')
    h._register(lambda: h._rmtree(d, key))
    os.chmod(d, 0o755)
    path = os.path.join(d, 'pgxload')
    # DBSWAP_GO_RACE=1: pgxload under the race detector (slower).
    race = ['-race'] if os.environ.get('DBSWAP_GO_RACE') == '1' else []
    r = subprocess.run([go_binary(), 'build', *race, '-o', path,
                        './internal/cmd/pgxload'], cwd=GO_MODULE,
                       env=go_env(), capture_output=True, text=True,
                       timeout=BUILD_TIMEOUT * h.TIMEOUT_SCALE)
    if r.returncode != 0:
        raise h.HarnessError(f'go build pgxload: {r.stdout}{r.stderr}')
    _built['path'] = path
    return path


class GoLoad(PoolLoad):
    """pgxload load as PoolLoad (its lines are pool-load's, fewer
    fields)."""

    def __init__(self, sock, args=(), name='go-load', target=TARGET,
                 env=None):
        argv = [pgxload(), 'load', '--socket', sock, '--target', target,
                '--name', name] + [str(a) for a in args]
        full = go_env()
        full.update(env or {})
        JsonLines.__init__(self, argv, None, name, full)


class GoHold(PoolLoad):
    """pgxload hold: one connection held until SIGUSR1 (read its
    header)."""

    def __init__(self, sock, name='go-hold', target=TARGET):
        argv = [pgxload(), 'hold', '--socket', sock, '--target', target,
                '--name', name]
        JsonLines.__init__(self, argv, None, name, go_env())

    def wait_line(self, key, timeout=10):
        """The first line with key (not a progress line)."""
        deadline = time.monotonic() + timeout * h.TIMEOUT_SCALE
        with self._cond:
            while True:
                for _, msg in self.lines:
                    if key in msg:
                        return msg
                if self._eof:
                    raise AssertionError(f'{self.name} ended before a line '
                                         f'with {key!r}; {self.describe()}')
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f'no line with {key!r} from '
                                         f'{self.name} within {timeout} s; '
                                         f'{self.describe()}')
                self._cond.wait(left)

    def release(self):
        """SIGUSR1: a query on the held connection, then its release;
        returns that query's line."""
        self.proc.send_signal(signal.SIGUSR1)
        self.wait_line('released')
        return [m for _, m in self.lines if 'held_query_pid' in m or
                'held_query_error' in m][-1]


class GoUnit(unittest.TestCase):

    def run_go(self, *args):
        r = subprocess.run([go_binary(), *args], cwd=GO_MODULE, env=go_env(),
                           capture_output=True, text=True,
                           timeout=UNIT_TIMEOUT * h.TIMEOUT_SCALE)
        out = r.stdout + r.stderr
        self.assertEqual(r.returncode, 0, f'go {" ".join(args)}:\n{out}')
        return out

    def test_vet(self):
        self.run_go('vet', './...')

    def test_unit(self):
        out = self.run_go('test', '-count=1', './...')
        print(out.strip())
        self.assertNotIn('FAIL', out)
        # Every package with tests ran them.
        for pkg in ('dbswap.dev/dbswap\t', 'dbswap.dev/dbswap/protocol',
                    'dbswap.dev/dbswap/pgxswap'):
            self.assertRegex(out, rf'ok\s+{pkg}', out)


class GoPool(PoolTest):

    @classmethod
    def setUpClass(cls):
        pgxload()  # built before any test's time budget starts
        super().setUpClass()

    def rotate_password(self):
        """ALTER ROLE, then the env file: the order of a real rotation."""
        new = fresh_password()
        self.psql.set_password(self.role, new)
        self.write_env(f'{TARGET}={self.cluster.url(self.role, new)}\n')
        return new

    def test_rotations_under_load(self):
        """100 rotations under 8 query loops (every other iteration a
        transaction): no query fails, every generation is acked by the
        pool once no connection of the old password is left, and the
        pool ends on the last password."""
        self.budget(150)
        self.write_url(self.password)
        agent = self.start_agent()
        agent.wait_log(rf'{TARGET}: generation 1 published', timeout=10)
        load = GoLoad(agent.sock, ['--loops', 8, '--tx', '--pause-ms', 2])
        self.addCleanup(load.close)
        status = agent.client(name='test-go-status')
        self.addCleanup(status.close)
        self.wait_acked(status, 1, [load])
        before = load.wait_progress(lambda p: p['queries'] > 0)['queries']

        passwords = [self.password]
        t0 = time.monotonic()
        for i in range(ROTATIONS):
            passwords.append(self.rotate_password())
            t = self.wait_acked(status, 2 + i, [load])
            self.assertEqual(t['lagging'], [])
        took = time.monotonic() - t0
        load.wait_progress(lambda p: p['queries'] > before)

        rc, s = load.stop()
        print(f'go: {ROTATIONS} rotations under 8 loops in {took:.1f} s, '
              f'{s["queries"]} queries, {s["failures"]} failed; {s["stats"]}')
        self.assertEqual(s['failures'], 0, load.describe())
        self.assertEqual(rc, 0, load.describe())
        self.assertEqual(s['generation'], 1 + ROTATIONS, s)
        self.assertEqual(s['stats']['acked'], 1 + ROTATIONS, s)
        self.assertEqual(s['stats']['old'], 0, s)
        self.assertGreaterEqual(s['stats']['switches'], ROTATIONS, s)
        self.assertEqual(s['current_user_at_end'], self.role)
        text = load.stderr() + json.dumps(load.lines, default=str)
        for pw in passwords:
            self.assertNotIn(pw, text)
        # Closed with the pool: no session of the role is left.
        h.wait_for(lambda: self.psql.sessions(self.role) == 0, timeout=5,
                   interval=0.05, what='no session of the role left')

    def test_agent_killed_and_restarted_under_load(self):
        """SIGKILL the agent under 8 loops: the pool keeps serving, and
        acks the new run's generation 1 of the same value without a swap;
        killed again while the password changes: the new run's generation
        1 is a new value, swapped to and acked.  No query fails."""
        self.budget(60)
        self.write_url(self.password)
        agent = self.start_agent()
        agent.wait_log(rf'{TARGET}: generation 1 published', timeout=10)
        load = GoLoad(agent.sock, ['--loops', 8, '--tx', '--pause-ms', 2])
        self.addCleanup(load.close)
        self.wait_acked(agent, 1, [load])
        self.rotate_password()
        self.wait_acked(agent, 2, [load])
        switches = load.wait_progress(lambda p: p['acked'] == 2)['switches']

        agent.kill()
        q = load.wait_progress(lambda p: p['queries'] > 0)['queries']
        load.wait_progress(lambda p: p['queries'] > q + 100,
                           what='queries with no agent')
        agent.mark()
        agent.start()
        agent.wait_log(rf'{TARGET}: generation 1 published', timeout=10)
        self.wait_acked(agent, 1, [load])
        p = load.wait_progress(lambda p: p['acked'] == 1)
        self.assertEqual(p['switches'], switches, 'the same value swapped')

        agent.kill()
        self.rotate_password()
        agent.mark()
        agent.start()
        agent.wait_log(rf'{TARGET}: generation 1 published', timeout=10)
        self.wait_acked(agent, 1, [load])
        load.wait_progress(lambda p: p['switches'] > switches and
                           p['old'] == 0, what='the new value swapped to')
        rc, s = load.stop()
        self.assertEqual((rc, s['failures']), (0, 0), load.describe())
        self.assertEqual(s['current_user_at_end'], self.role)

    def test_agent_pool_settings_honoured(self):
        """DATABASE_POOL_MAX and _MIN from the agent's env file size the
        pool; a change of them rebuilds it (make before break, no new
        generation) under load with no failed query."""
        self.budget(60)
        url = self.url()
        self.write_env(f'{TARGET}={url}\nDATABASE_POOL_MAX=3\n'
                       'DATABASE_POOL_MIN=2\n')
        agent = self.start_agent()
        agent.wait_log(rf'{TARGET}: generation 1 published', timeout=10)
        load = GoLoad(agent.sock, ['--loops', 8, '--pause-ms', 2])
        self.addCleanup(load.close)
        p = load.wait_progress(lambda p: p.get('max_conns') == 3 and
                               p['queries'] > 0, what='max_conns 3')
        self.assertEqual(p['min_conns'], 2, p)
        h.wait_for(lambda: 2 <= self.psql.sessions(self.role) <= 3,
                   timeout=5, what='2 or 3 sessions of the role')

        self.write_env(f'{TARGET}={url}\nDATABASE_POOL_MAX=5\n'
                       'DATABASE_POOL_MIN=4\n')
        p = load.wait_progress(lambda p: p.get('max_conns') == 5 and
                               p['old'] == 0, what='max_conns 5')
        self.assertEqual(p['min_conns'], 4, p)
        self.assertEqual(p['generation'], 1, p)
        self.assertGreaterEqual(p['switches'], 1, p)
        h.wait_for(lambda: 4 <= self.psql.sessions(self.role) <= 5,
                   timeout=5, what='4 or 5 sessions of the role')
        rc, s = load.stop()
        self.assertEqual((rc, s['failures']), (0, 0), load.describe())
        self.assertEqual(s['stats']['acked'], 1, s)

    def test_ack_waits_for_the_held_connection(self):
        """Make before break and the ack: a connection of generation 1
        held (acquired, not released) across a rotation keeps working, new
        calls get generation 2 at once, and generation 2 is acked only once
        the held connection is released (which closes it: its session is
        gone from the server)."""
        self.budget(60)
        self.write_url(self.password)
        agent = self.start_agent()
        agent.wait_log(rf'{TARGET}: generation 1 published', timeout=10)
        hold = GoHold(agent.sock)
        self.addCleanup(hold.close)
        old_pid = hold.wait_line('held_pid')['held_pid']
        self.wait_acked(agent, 1, [hold])

        self.rotate_password()
        p = hold.wait_progress(lambda p: p['generation'] == 2 and
                               'pool_pid' in p, what='calls on generation 2')
        self.assertNotEqual(p['pool_pid'], old_pid, p)
        h.wait_for(lambda: h.target_status(agent, TARGET)['generation'] == 2,
                   timeout=5, what='generation 2 published')
        time.sleep(0.5)
        t = h.target_status(agent, TARGET)
        self.assertEqual((t['generation'], t['subscribers'], t['acked']),
                         (2, 1, 0), f'acked while a connection of generation '
                         f'1 is held: {t!r}')
        p = hold.progress()
        self.assertEqual((p['generation'], p['acked'], p['old']), (2, 1, 1),
                         p)
        self.assertIn(old_pid, self.psql_pids())

        res = hold.release()
        self.assertEqual(res.get('held_query_pid'), old_pid,
                         f'the held connection after the switch: {res!r}')
        self.wait_acked(agent, 2, [hold])
        h.wait_for(lambda: old_pid not in self.psql_pids(), timeout=5,
                   interval=0.05, what='the held session closed')
        p = hold.wait_progress(lambda p: p['acked'] == 2 and p['old'] == 0,
                               what='the pool acked generation 2')
        rc, s = hold.stop()
        self.assertEqual((rc, s['failures']), (0, 0), hold.describe())
        self.assertGreater(s['queries'], 0, s)

    def psql_pids(self):
        """The backend pids of the role's sessions."""
        out = self.psql.query('SELECT pid FROM pg_stat_activity WHERE '
                              f'usename = {h.quote_literal(self.role)}')
        return [int(x) for x in out if x.strip()]

    def test_without_an_agent_the_environment_is_used(self):
        """No agent on the socket: the pool uses $DATABASE_URL (generation
        0); an agent started later on that socket takes over with its own
        value (another password), swapped to and acked, no query failed."""
        self.budget(60)
        pub = tempfile.mkdtemp(prefix='dbswap-go-env-')
        self.addCleanup(shutil.rmtree, pub, True)
        sock = os.path.join(pub, 'later.sock')
        load = GoLoad(sock, ['--loops', 4, '--pause-ms', 2],
                      env={TARGET: self.url()})
        self.addCleanup(load.close)
        p = load.wait_progress(lambda p: p['queries'] > 0)
        self.assertTrue(p['from_environment'], p)
        self.assertEqual(p['generation'], 0, p)

        new = self.rotate_password()  # the environment's value stops working
        agent = h.Agent(env_files=[self.env_path], sock=sock)
        self.addCleanup(agent.close)
        agent.wait_log(rf'{TARGET}: generation 1 published', timeout=10)
        status = agent.client(name='test-go-status')
        self.addCleanup(status.close)
        self.wait_acked(status, 1, [load])
        p = load.wait_progress(lambda p: not p['from_environment'] and
                               p['generation'] == 1 and p['old'] == 0)
        rc, s = load.stop()
        self.assertEqual((rc, s['failures']), (0, 0), load.describe())
        self.assertEqual(s['current_user_at_end'], self.role)
        self.assertNotIn(new, load.stderr())

    def probe(self, agent, target, other=None, as_nobody=False):
        argv = [pgxload(), 'probe', '--socket', agent.sock, '--target',
                target]
        if other:
            argv += ['--other', other]
        kw = {}
        env = go_env()
        if as_nobody:
            kw = dict(user=NOBODY, group=NOBODY, extra_groups=[])
            env = {'PATH': os.environ.get('PATH', '/usr/bin:/bin'),
                   'HOME': '/nonexistent'}
        r = subprocess.run(argv, capture_output=True, text=True, env=env,
                           timeout=30 * h.TIMEOUT_SCALE,
                           stdin=subprocess.DEVNULL, **kw)
        self.assertEqual(r.returncode, 0, f'pgxload probe: {r.stderr}')
        return json.loads(r.stdout), r.stderr

    def test_forbidden_target_gives_a_clear_error(self):
        """The agent's --allow keeps DATABASE_URL from nobody: the pool's
        calls fail at once with dbswap.ErrForbidden (errors.Is) and a
        message naming the target; a plain subscription's Wait too; a pool
        on a target nobody may follow works."""
        if os.geteuid() != 0:
            self.skipTest('running the app as nobody needs root')
        self.write_env(f'{TARGET}={self.url()}\nOTHER_URL={self.url()}\n')
        pub = tempfile.mkdtemp(prefix='dbswap-go-pub-')
        self.addCleanup(shutil.rmtree, pub, True)
        os.chmod(pub, 0o711)
        agent = h.Agent(env_files=[self.env_path],
                        targets=[TARGET, 'OTHER_URL'],
                        args=['--socket-mode', '0666', '--allow',
                              f'OTHER_URL=uid:{NOBODY}'],
                        sock=os.path.join(pub, 'go.sock'))
        self.addCleanup(agent.close)
        for t in (TARGET, 'OTHER_URL'):
            agent.wait_log(rf'{t}: generation 1 published', timeout=10,
                           since=0)

        out, stderr = self.probe(agent, TARGET, 'OTHER_URL', as_nobody=True)
        detail = json.dumps(out)
        self.assertEqual(out['uid'], NOBODY)
        for call in ('acquire', 'exec', 'subscribe'):
            res = out[call]
            self.assertEqual(res.get('code'), 'forbidden', f'{call}: {detail}')
            self.assertTrue(res['is_forbidden'], detail)
            self.assertIn(TARGET, res['message'], detail)
            self.assertIn('forbidden', res['message'], detail)
            self.assertLess(res['ms'], 5000 * h.TIMEOUT_SCALE, detail)
        self.assertEqual(out['other'].get('value'), self.role, detail)
        self.assertNotIn(self.password, detail + stderr)
        agent.wait_log(rf'uid {NOBODY} .*may not subscribe to {TARGET}',
                       since=0)
        print(f'go, forbidden target as uid {NOBODY}: Acquire failed in '
              f'{out["acquire"]["ms"]} ms: {out["acquire"]["message"]}')

    def test_unknown_target_gives_a_clear_error(self):
        self.write_url(self.password)
        agent = self.start_agent()
        agent.wait_log(rf'{TARGET}: generation 1 published', timeout=10)
        out, _ = self.probe(agent, 'NO_SUCH_URL', TARGET)
        detail = json.dumps(out)
        for call in ('acquire', 'exec', 'subscribe'):
            res = out[call]
            self.assertEqual(res.get('code'), 'unknown-target',
                             f'{call}: {detail}')
            self.assertTrue(res['is_unknown_target'], detail)
            self.assertIn('NO_SUCH_URL', res['message'], detail)
            self.assertLess(res['ms'], 5000 * h.TIMEOUT_SCALE, detail)
        self.assertEqual(out['other'].get('value'), self.role, detail)


class GoFailover(TwoClusters):
    """A primary and a secondary cluster (independent, the same role and
    password on both): test_failover.py's TwoClusters."""

    LOOPS = 4  # on a pool of 4: "one failure per busy connection" is 4

    @classmethod
    def setUpClass(cls):
        pgxload()
        super().setUpClass()

    def test_crashed_primary_under_load(self):
        """The primary crashes under 4 loops on a pool of 4: the agent
        publishes the secondary (reason failover), the pool switches at
        once and acks it; at most one query fails per busy connection,
        none from a second after the switch on, and the pool ends on the
        secondary."""
        h.write_rename(self.env_path,
                       f'{TARGET}={self.primary.url(self.role, self.password)}\n'
                       f'{TARGET}_SECONDARY='
                       f'{self.secondary.url(self.role, self.password)}\n')
        agent = h.Agent(env_files=[self.env_path])
        self.addCleanup(agent.close)
        agent.wait_log(rf'{TARGET}: generation 1 published', timeout=10)
        load = GoLoad(agent.sock, ['--loops', self.LOOPS, '--max', 4,
                                   '--tx', '--pause-ms', 2])
        self.addCleanup(load.close)
        status = agent.client(name='test-go-failover')
        self.addCleanup(status.close)

        def acked(gen):
            t = h.target_status(status, TARGET)
            return t if (t['generation'], t['subscribers'], t['acked']) == \
                (gen, 1, 1) else None
        h.wait_for(lambda: acked(1), timeout=10, what='generation 1 acked')
        load.wait_progress(lambda p: p['queries'] > 100)

        t0 = time.monotonic()
        self.primary.stop('immediate')
        t = h.wait_for(lambda: acked(2), timeout=15,
                       what='the secondary published and acked')
        t_switch = time.monotonic()
        self.assertEqual(t['failover']['current'], 'secondary', t)
        print(f'go: primary crashed -> secondary acked by the pool in '
              f'{(t_switch - t0) * 1000:.0f} ms')
        p = load.wait_progress_after(t_switch + 1.0)
        settled = p['failures']
        self.assertLessEqual(settled, 4, f'{settled} failures on a pool of '
                             f'4; {load.describe()}')
        self.assertEqual(p['generation'], 2, p)
        load.wait_progress(lambda q: q['queries'] > p['queries'] + 100,
                           what='queries on the secondary')
        rc, s = load.stop()
        print(f'go: {settled} failed queries at the crash (at most one per '
              f'busy connection), {s["queries"]} queries in all')
        self.assertEqual(s['failures'], settled,
                         f'failures after the switch; {load.describe()}')
        self.assertEqual(s['stats']['old'], 0, s)
        self.assertEqual(s['stats']['acked'], 2, s)
        self.assertEqual(s['port_at_end'], self.secondary.port, s)

    def test_hung_primary_under_load(self):
        """The primary hung (SIGSTOP of the postmaster and its backends)
        under 8 busy loops on a pool of 8, test_failover.py's short
        checks: the pool switches to the secondary (acked within twice
        test_failover.py's bound), at most one query fails per loop, none
        from a second after the switch on, and every loop goes on querying
        while the primary is still hung (none stuck on a hung connection:
        the loops' own bound, 30 s, is far beyond the test's window).
        SIGCONT: the agent fails back, the pool drains to the primary and
        acks it, and no query fails meanwhile."""
        loops = 8
        cfg = settings_of(SHORT)
        interval = cfg['health_check_interval_ms'] / 1000
        timeout = cfg['connection_timeout_ms'] / 1000
        threshold = cfg['failure_threshold']
        retry = cfg['primary_retry_interval_ms'] / 1000
        self.write_env(settings=SHORT)
        agent = self.start_agent()
        load = GoLoad(agent.sock, ['--loops', loops, '--max', loops, '--tx',
                                   '--pause-ms', 2, '--progress-ms', 100,
                                   '--query-timeout-ms', 30000])
        self.addCleanup(load.close)
        status = self.status_client(agent)
        t = self.wait_ready(agent, subscribers=1)
        g0 = t['generation']
        load.wait_progress(lambda p: p['queries'] > 100 and p['acked'] == g0)

        t0 = time.monotonic()
        self.pause(self.primary)
        t_switch, t = self.wait_status(
            status, self.switched('secondary', g0, 1), timeout=15,
            what='the secondary acked by the pool after the primary hung')
        took = t_switch - t0
        bound = 2 * (interval + 2 * timeout + (threshold - 1) * CONFIRM_S
                     + 1.0)
        print(f'go: primary hung (SIGSTOP) -> secondary acked by the pool '
              f'in {took * 1000:.0f} ms (bound {bound * 1000:.0f} ms)')
        self.assertLessEqual(took, bound * h.TIMEOUT_SCALE,
                             f'status then: {t!r}; {load.describe()}')
        g1 = t['generation']

        # A second after the switch the failures are in: at most one per
        # loop.  Then every loop must query on while the primary is still
        # hung.
        p = load.wait_progress_after(t_switch + 1.0)
        settled = p['failures']
        self.assertTrue(all(n <= 1 for n in p['failures_by_loop']),
                        f'failures per loop {p["failures_by_loop"]}; '
                        f'{load.describe()}')
        before = p['queries_by_loop']
        q = load.wait_progress(
            lambda q: all(a > b for a, b in zip(q['queries_by_loop'],
                                                 before)),
            timeout=5, what='a query of every loop a second after the switch '
            '(none stuck on the hung primary)')
        self.assertEqual(q['generation'], g1, q)
        self.assertTrue(self.primary.paused, 'resumed too soon')

        # SIGCONT: a failback, which drains (no failure).
        t1 = time.monotonic()
        self.primary.resume()
        t_back, t = self.wait_status(
            status, self.switched('primary', g1, 1),
            timeout=retry + threshold * interval + 10,
            what='failback to the primary acked by the pool after SIGCONT')
        print(f'go: primary resumed (SIGCONT) -> failback acked by the pool '
              f'in {(t_back - t1) * 1000:.0f} ms')
        p = load.wait_progress(lambda p: p['generation'] == t['generation']
                               and p['old'] == 0, what='the old pool gone')
        load.wait_progress(lambda q: q['queries'] > p['queries'] + 100,
                           what='queries on the primary')
        rc, s = load.stop()
        print(f'go: {settled} failed queries at the hang (per loop '
              f'{s["failures_by_loop"]}), none at the failback; '
              f'{s["queries"]} queries in all')
        self.assertEqual(s['failures'], settled,
                         f'failures after the switch; {load.describe()}')
        self.assertEqual(s['stuck'], 0, load.describe())
        self.assertTrue(all(n <= 1 for n in s['failures_by_loop']), s)
        self.assertEqual(s['stats']['old'], 0, s)
        self.assertEqual(s['port_at_end'], self.primary.port, s)
        self.assertNotIn(self.password, load.stderr())


class GoDriverErrorsMasked(ClusterTest):
    """Scenario 'driver-errors-masked' of conformance.py."""

    def hide(self, text):
        return text.replace(self.password, '<PASSWORD>')

    def assert_no_password(self, text, what):
        if self.password in text:  # the message must not say it either
            self.fail(f'the password is in {what}:\n{self.hide(text)}')

    def test_driver_errors_masked(self):
        """The value's host is a socket directory whose name holds the
        password (a symlink there to the cluster's socket).  pgxload
        connfail acquires and holds a connection (it serves); then the
        symlink goes, and its second Acquire makes pgxpool dial, which
        pgconn fails quoting the socket path and the directory.  The
        error Acquire returns (Error() and %+v) holds no password yet
        names the failure, errors.As still finds a *pgconn.ConnectError,
        and pgxload's log (stderr) holds no password either."""
        import signal
        d, link = self.socket_dir_holding(self.password)
        self.write_env(f"{TARGET}=host={d} port={self.cluster.port} "
                       f"user={self.role} password={self.password} "
                       f"dbname=postgres\n")
        agent = self.start_agent()
        h.wait_for(lambda: h.target_status(agent, TARGET)['valid'],
                   what='the value validated by the agent')
        run = JsonLines([pgxload(), 'connfail', '--socket', agent.sock,
                         '--target', TARGET], None, 'go-connfail', go_env())
        self.addCleanup(run.close)

        def line(key):
            for _, m in run.lines:
                if key in m:
                    return m
            if run.proc.poll() is not None:
                self.fail(f'pgxload connfail ended; {self.hide(run.describe())}')
            return None
        ready = h.wait_for(lambda: line('ready'), timeout=15,
                           what='pgxload connfail ready')
        self.assertEqual(ready['user'], self.role)
        os.unlink(link)
        run.proc.send_signal(signal.SIGUSR1)
        res = h.wait_for(lambda: line('acquire'), timeout=30,
                         what='the failed Acquire')
        self.assertEqual(run.proc.wait(10 * h.TIMEOUT_SCALE), 0,
                         self.hide(run.describe()))
        message = res['acquire'].get('message', '')
        self.assert_no_password(message, 'Error()')
        self.assert_no_password(res.get('verbose', ''), '%+v')
        self.assert_no_password(run.stderr(), "pgxload's stderr")
        self.assertIn('no such file or directory', message)
        self.assertIn('.s.PGSQL.', message)
        self.assertTrue(res['connect_error'], self.hide(json.dumps(res)))


if __name__ == '__main__':
    main()
