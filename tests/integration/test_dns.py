"""Name resolution never blocks the agent's loop (issue 13).

dbswapd runs in a mount namespace of its own whose /etc/resolv.conf names a
loopback address where a UDP socket takes every query and never answers (a
dead DNS server: the black hole), and whose /etc/hosts maps a few test names
to 127.0.0.1.  While values naming a black-holed host are validated,
retried, health-checked and switched to, status requests must be answered
fast; such a value fails with an error that names the host; a value naming a
host from /etc/hosts validates and is published as written (apps get the
name, not the address); a value whose first host never answers (its
lookup, or its server) validates through the next host within the timeout;
and a value with more hosts than the cap is refused."""

import errno
import os
import random
import socket
import subprocess
import threading
import time
import unittest

import harness as h
from common import ClusterTest, main

HOSTS_NAME = 'db.dbswap-test'        # in the namespace's /etc/hosts
STANDBY_NAME = 'standby.dbswap-test'  # in it until a test takes it out
DEAD_NAME = 'dead.dbswap-test'        # only the black hole is asked
HOSTS_MAX = 16                        # PROBE_HOSTS_MAX, agent/connplan.h

# The bound on a status request while DNS hangs; scaled like every
# timeout for slow runs (valgrind), as are the agent's connection timeout
# and the time sampled (long enough for a few validations of a dead name).
STATUS_P99_S = 0.100 * h.TIMEOUT_SCALE
CONNECT_TIMEOUT_MS = int(1000 * h.TIMEOUT_SCALE)
SAMPLE_S = 3.0 * h.TIMEOUT_SCALE
# For the lists whose first host hangs: long enough that the second host's
# turn (half of it) is ample for a connection on a loaded machine.
TURNS_TIMEOUT_MS = int(4000 * h.TIMEOUT_SCALE)

# The namespace: bind our files over /etc/resolv.conf and /etc/hosts, then
# run the agent (and whatever wraps it, valgrind) inside.
NS_SCRIPT = ('mount --bind "$1" /etc/resolv.conf && '
             'mount --bind "$2" /etc/hosts && shift 2 && exec "$@"')


class BlackHole:
    """A UDP socket on port 53 of a random 127/8 address that reads every
    query and never answers; counts what it got."""

    def __init__(self):
        self.queries = 0
        for _ in range(20):
            addr = '127.%d.%d.%d' % (random.randrange(1, 255),
                                     random.randrange(0, 256),
                                     random.randrange(1, 255))
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind((addr, 53))
                break
            except OSError as e:
                s.close()
                if e.errno != errno.EADDRINUSE:
                    raise
        else:
            raise h.HarnessError('no free loopback address for the black hole')
        self.addr, self.sock = addr, s
        self._stop = False
        s.settimeout(0.1)
        self._thread = threading.Thread(target=self._drain, daemon=True,
                                        name='dns-black-hole')
        self._thread.start()

    def _drain(self):
        while not self._stop:
            try:
                self.sock.recvfrom(4096)
                self.queries += 1
            except socket.timeout:
                continue
            except OSError:
                return

    def close(self):
        self._stop = True
        self._thread.join(2)
        self.sock.close()


class NsAgent(h.Agent):
    """dbswapd in its own mount namespace with our resolv.conf and hosts."""

    def __init__(self, resolv, hosts, **kw):
        self.ns = ['unshare', '--mount', '--propagation', 'private',
                   'sh', '-c', NS_SCRIPT, 'sh', resolv, hosts]
        super().__init__(**kw)

    def argv(self):
        return self.ns + super().argv()


def percentile(samples, q):
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


class Dns(ClusterTest):

    @classmethod
    def setUpClass(cls):
        # A mount namespace and port 53 need root (CAP_SYS_ADMIN,
        # CAP_NET_BIND_SERVICE).
        try:
            r = subprocess.run(['unshare', '--mount', 'true'],
                               capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise unittest.SkipTest(f'no unshare: {e}')
        if r.returncode != 0:
            raise unittest.SkipTest('cannot make a mount namespace: '
                                    f'{r.stderr.decode().strip()}')
        try:
            cls.hole = BlackHole()
        except PermissionError as e:
            raise unittest.SkipTest(f'cannot bind port 53: {e}')
        try:
            super().setUpClass()
        except BaseException:
            cls.hole.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.hole.close()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.resolv = os.path.join(self.tmp, 'resolv.conf')
        self.hosts = os.path.join(self.tmp, 'hosts')
        # glibc's defaults (5 s, 2 attempts) spelled out: today's stall.
        h.write_truncate(self.resolv, f'nameserver {self.hole.addr}\n'
                         'options timeout:5 attempts:2\n', 0o644)
        self.write_hosts(standby=True)

    def write_hosts(self, standby):
        # In place: the bind mount holds this inode, a rename would not
        # reach the namespace.
        text = ('127.0.0.1 localhost\n::1 localhost ip6-localhost\n'
                f'127.0.0.1 {HOSTS_NAME}\n')
        if standby:
            text += f'127.0.0.1 {STANDBY_NAME}\n'
        h.write_inplace(self.hosts, text, 0o644)

    def value(self, host, password=None):
        return (f'postgresql://{self.role}:{password or self.password}@'
                f'{host}:{self.cluster.port}/postgres')

    def start_ns_agent(self, env_text, targets):
        self.write_env(env_text)
        agent = NsAgent(self.resolv, self.hosts, env_files=[self.env_path],
                        targets=targets)
        self.addCleanup(agent.close)
        return agent

    def sample_status(self, agent, seconds=SAMPLE_S):
        """Status round trips on one connection for `seconds`; returns the
        latencies (s).  A stalled loop shows as a long one, or as a
        TimeoutError after 20 s."""
        lat = []
        with agent.client(timeout=20) as c:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                t0 = time.monotonic()
                st = c.status(timeout=20)
                lat.append(time.monotonic() - t0)
                self.assertEqual(st['type'], 'status')
                time.sleep(0.005)
        return lat

    def assert_fast(self, lat, what):
        p50, p99 = percentile(lat, 0.50), percentile(lat, 0.99)
        print(f'\nstatus while {what}: {len(lat)} requests, '
              f'p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, '
              f'max {max(lat) * 1000:.1f} ms')
        self.assertLess(p99, STATUS_P99_S,
                        f'status p99 {p99 * 1000:.0f} ms while {what}')
        self.assertGreaterEqual(len(lat), 100, 'too few status samples')

    def assert_no_secret(self, agent, *texts):
        for t in texts:
            self.assertNotIn(self.password, str(t))
        self.assertNotIn(self.password, agent.log())

    def test_dead_dns_does_not_stall_the_loop(self):
        written = self.value(HOSTS_NAME)
        # Hosts are tried in order, each looked up when its turn comes (as
        # libpq would): a dead name after a good one costs nothing.
        listed = (f'postgresql://{self.role}:{self.password}@{HOSTS_NAME}:'
                  f'{self.cluster.port},{DEAD_NAME}:{self.cluster.port}/'
                  'postgres')
        env = (f'DATABASE_URL={self.value(DEAD_NAME)}\n'
               f'APP_URL={written}\n'
               f'LIST_URL={listed}\n'
               f'DB_CONNECTION_TIMEOUT={CONNECT_TIMEOUT_MS}\n')
        before = self.hole.queries
        agent = self.start_ns_agent(env, ['DATABASE_URL', 'APP_URL',
                                          'LIST_URL'])
        # Sampled once the first connection is made (libpq's and OpenSSL's
        # first-use set-up is slow under valgrind), while the dead name's
        # validations go on: one a second, with short backoffs between.
        h.wait_for(lambda: h.target_status(agent, 'APP_URL', timeout=20)
                   ['state'] == 'ok', timeout=30, what='APP_URL ok')
        lat = self.sample_status(agent)
        self.assert_fast(lat, 'a black-holed name is validated and retried')

        st = h.wait_for(lambda: (s := h.target_status(agent, 'DATABASE_URL'))
                        ['state'] == 'failed' and s, what='DATABASE_URL failed')
        self.assertIn(f'"{DEAD_NAME}"', st['error'])
        self.assertIn(f'no answer within {CONNECT_TIMEOUT_MS} ms while '
                      'resolving host', st['error'])
        self.assertGreater(self.hole.queries, before,
                           'the black hole was never asked')

        # The /etc/hosts name validates, and apps get the value as written.
        with agent.client() as c:
            self.assertEqual(c.subscribe('APP_URL')['type'], 'ok')
            u = c.next_update(target='APP_URL')
        self.assertEqual(u['conninfo'], written)
        app = h.target_status(agent, 'APP_URL')
        self.assertEqual(app['state'], 'ok')
        listed_st = h.target_status(agent, 'LIST_URL')
        self.assertEqual(listed_st['state'], 'ok', listed_st.get('error'))
        self.assert_no_secret(agent, st, app, listed_st)

    def test_first_host_hangs(self):
        # Hosts take turns: the first host's lookup (asked of the black
        # hole) or server (accepts, never answers) is given up after its
        # share of the timeout, and the value validates through the second
        # host, well within the timeout, on its first attempt.
        hung = socket.socket()
        self.addCleanup(hung.close)
        hung.bind(('127.0.0.1', 0))
        hung.listen(16)
        port = self.cluster.port
        dead_first = (f'postgresql://{self.role}:{self.password}@'
                      f'{DEAD_NAME}:{port},127.0.0.1:{port}/postgres')
        hung_first = (f'postgresql://{self.role}:{self.password}@127.0.0.1:'
                      f'{hung.getsockname()[1]},{HOSTS_NAME}:{port}/postgres')
        env = (f'DATABASE_URL={dead_first}\n'
               f'HUNG_URL={hung_first}\n'
               f'APP_URL={self.value(HOSTS_NAME)}\n'
               f'DB_CONNECTION_TIMEOUT={TURNS_TIMEOUT_MS}\n')
        before = self.hole.queries
        agent = self.start_ns_agent(env, ['DATABASE_URL', 'HUNG_URL',
                                          'APP_URL'])
        # As above: sampled once libpq and OpenSSL are set up, while the
        # first hosts have their turns.
        h.wait_for(lambda: h.target_status(agent, 'APP_URL', timeout=20)
                   ['state'] == 'ok', timeout=30, what='APP_URL ok')
        lat = self.sample_status(agent)
        self.assert_fast(lat, 'the first host of a list hangs')

        for name, written in (('DATABASE_URL', dead_first),
                              ('HUNG_URL', hung_first)):
            st = h.wait_for(lambda: (s := h.target_status(agent, name))
                            ['state'] != 'validating' and s, timeout=30,
                            what=f'{name} validated')
            self.assertEqual(st['state'], 'ok', st.get('error'))
            self.assertIsNone(st['error'])
            m = agent.wait_log(rf'^.*{name}: value validated in '
                               r'([0-9.]+) ms', since=0)
            took = float(m.group(1))
            print(f'\n{name} validated in {took:.0f} ms')
            # After the first host's turn (half the timeout), before the
            # timeout.
            self.assertGreater(took, TURNS_TIMEOUT_MS * 0.45)
            self.assertLess(took, TURNS_TIMEOUT_MS)
            self.assertNotRegex(agent.log(), rf'{name}.*(failed|no answer)')
            with agent.client() as c:
                self.assertEqual(c.subscribe(name)['type'], 'ok')
                u = c.next_update(target=name)
            self.assertEqual(u['conninfo'], written)
            self.assert_no_secret(agent, st)
        self.assertGreater(self.hole.queries, before,
                           'the black hole was never asked')

    def test_host_cap(self):
        def kv(n):
            hosts = ','.join(['127.0.0.1'] * n)
            return (f'"host={hosts} port={self.cluster.port} '
                    f'user={self.role} password={self.password} '
                    'dbname=postgres"')
        env = (f'DATABASE_URL={kv(HOSTS_MAX)}\n'
               f'OVER_URL={kv(HOSTS_MAX + 1)}\n')
        agent = self.start_ns_agent(env, ['DATABASE_URL', 'OVER_URL'])
        st = h.wait_for(lambda: (s := h.target_status(agent, 'OVER_URL'))
                        ['state'] == 'failed' and s, what='OVER_URL refused')
        self.assertIn(f'{HOSTS_MAX + 1} hosts', st['error'])
        self.assertIn(f'at most {HOSTS_MAX}', st['error'])
        ok = h.wait_for(lambda: (s := h.target_status(agent, 'DATABASE_URL'))
                        ['state'] == 'ok' and s, what='DATABASE_URL ok')
        self.assert_no_secret(agent, st, ok)

    def test_secondary_name_goes_dark(self):
        # A secondary whose name resolves at first: validated, monitored.
        # Then its name is gone from /etc/hosts (and so asked of the black
        # hole) and its monitor connection is cut: the health checks
        # reconnect, and a manual failover validates it anew, both through
        # the dead DNS server.
        env = (f'DATABASE_URL={self.value(HOSTS_NAME)}\n'
               f'DATABASE_URL_SECONDARY={self.value(STANDBY_NAME)}\n'
               f'DB_CONNECTION_TIMEOUT={CONNECT_TIMEOUT_MS}\n'
               'DB_HEALTH_CHECK_INTERVAL=200\n'
               'DB_FAILURE_THRESHOLD=2\n')
        agent = self.start_ns_agent(env, ['DATABASE_URL'])

        def servers_up():
            t = h.target_status(agent, 'DATABASE_URL')
            return t['state'] == 'ok' and all(
                s.get('health') == 'up' for s in t['servers']) and t
        h.wait_for(servers_up, timeout=10, what='both servers up')

        self.write_hosts(standby=False)
        self.cluster.terminate_sessions(self.role)
        replies = []

        def failover():
            with agent.client(timeout=20) as c:
                replies.append(c.failover('DATABASE_URL', timeout=20))
        switch = threading.Thread(target=failover, daemon=True)
        switch.start()
        lat = self.sample_status(agent)
        switch.join(20)
        self.assert_fast(lat, 'a black-holed secondary is checked and '
                         'switched to')

        self.assertEqual(len(replies), 1, 'no reply to failover')
        self.assertEqual(replies[0]['type'], 'error', replies[0])
        self.assertIn(f'"{STANDBY_NAME}"', replies[0].get('message', '')
                      + str(replies[0]))

        def secondary_down():
            t = h.target_status(agent, 'DATABASE_URL')
            s = [s for s in t['servers'] if s['role'] == 'secondary'][0]
            return s.get('health') == 'down' and s
        sec = h.wait_for(secondary_down, timeout=10, what='secondary down')
        self.assertIn(f'"{STANDBY_NAME}"', sec.get('health_error') or '')
        t = h.target_status(agent, 'DATABASE_URL')
        self.assertEqual(t['state'], 'ok')
        self.assertEqual(t['generation'], 1)
        self.assert_no_secret(agent, t)


if __name__ == '__main__':
    main()
