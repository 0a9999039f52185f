"""Automatic failover end to end, against two real PostgreSQL clusters: a
primary crashed (pg_ctl stop -m immediate), hung (SIGSTOP of the
postmaster and all its children), flapping, or down together with the
secondary; manual failover and failback; reconnect; rotation with a
secondary; failover settings changed live in the env file; and failover
off without a secondary.

The two clusters are independent (not replicas): each has the same role
with the same password, so one URL shape fits both, and neither is in
recovery.  Assertions read the agent's status (ipc/PROTOCOL.md "status")
and the updates a subscriber gets (harness.UpdateRecorder, which sees the
update's reason, server and standby fields), not its log.

What the agent must do (the spec these tests hold it to):
  - a crashed server closes the monitor connection; the agent tries a
    fresh connection at once, then every 250 ms (the confirmation
    interval); DB_FAILURE_THRESHOLD failures in a row and it is down.  With
    the default settings a crashed primary is replaced by the secondary,
    acked by every subscriber, within 2 s.
  - a hung server is caught by the periodic check (deadline
    DB_CONNECTION_TIMEOUT), then confirmations as above.
  - back on the primary once it passed DB_FAILURE_THRESHOLD checks in a
    row, DB_HEALTH_CHECK_INTERVAL apart, after one of the retries made
    every DB_PRIMARY_RETRY_INTERVAL.
  - neither server: update reason "unavailable", server "none"; the first
    server back is used at once (reason "failback").

pool-load (tests/helpers/pool-load.c) runs under load where the pool's
behaviour matters: failures at most one per pool connection, none once the
switch is done (+1 s), and the port it ends on.

Timeouts scale with $DBSWAP_TEST_TIMEOUT_SCALE, the measured latencies
too (a valgrind run is not a latency measurement).
"""

import os
import re
import secrets
import subprocess
import tempfile
import threading
import time
import unittest

import harness as h
from common import PoolLoad, fresh_password, main, summary_field

TARGET = 'DATABASE_URL'
SECONDARY_VAR = 'DATABASE_URL_SECONDARY'

# The failover settings' defaults, as status shows them.
DEFAULTS = {'health_check_interval_ms': 30000, 'connection_timeout_ms': 5000,
            'failure_threshold': 3, 'primary_retry_interval_ms': 120000}
# Env file variable -> status field.
SETTING_FIELDS = {'DB_HEALTH_CHECK_INTERVAL': 'health_check_interval_ms',
                  'DB_CONNECTION_TIMEOUT': 'connection_timeout_ms',
                  'DB_FAILURE_THRESHOLD': 'failure_threshold',
                  'DB_PRIMARY_RETRY_INTERVAL': 'primary_retry_interval_ms'}
# Short settings for the tests that wait for checks.  Under a slow
# wrapper (valgrind: DBSWAP_TEST_TIMEOUT_SCALE) the agent's own connection
# timeout must stretch too, or every check of a healthy server times out.
SHORT = {'DB_HEALTH_CHECK_INTERVAL': int(300 * h.TIMEOUT_SCALE),
         'DB_CONNECTION_TIMEOUT': int(500 * h.TIMEOUT_SCALE),
         'DB_FAILURE_THRESHOLD': 3,
         'DB_PRIMARY_RETRY_INTERVAL': int(1500 * h.TIMEOUT_SCALE)}
CONFIRM_S = 0.25     # the agent's confirmation interval after a failure
RECOVER_S = 1.0      # its pace of checks of a server back from down
SWITCH_LIMIT_S = 2.0  # crash -> all acked on the secondary, defaults

# pool-load: 4 threads on a pool of 4, so that "at most one failure per
# pool connection" is "at most 4".  A short pause per iteration, as in
# test_pool.py: on 2 cores back-to-back queries starve new backends.
POOL_MAX = 4
LOAD_ARGS = ('--tx', '--pause-ms', 2)

# PROTOCOL.md, servers' "health".
HEALTH_VALUES = {'up', 'suspect', 'down', 'recovering', 'rejected', 'unknown',
                 'off'}

RFC3339 = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?'
                     r'(Z|[+-]\d\d:\d\d)$')


def server(t, role):
    """The entry of t['servers'] for role (primary, secondary)."""
    for s in t['servers']:
        if s['role'] == role:
            return s
    raise KeyError(f'no {role} in servers: {t["servers"]!r}')


def settings_of(d):
    """{status field: value} for {env variable: value}."""
    return {SETTING_FIELDS[k]: int(v) for k, v in d.items()}


def brief(t):
    """The parts of a target's status entry that matter here."""
    if not isinstance(t, dict):
        return repr(t)
    keep = ('generation', 'state', 'error', 'subscribers', 'acked',
            'lagging', 'failover')
    out = {k: t.get(k) for k in keep}
    out['servers'] = [
        {k: s.get(k) for k in ('role', 'state', 'error', 'health',
                               'failures', 'checks', 'health_error')}
        for s in t.get('servers') or []]
    return repr(out)


def masked(u):
    u = dict(u)
    if 'conninfo' in u:
        u['conninfo'] = '(hidden)'
    return u


class TwoClusters(unittest.TestCase):
    """A primary and a secondary cluster for the whole class, and per
    test a role with the same name and password on both, an env file, and
    whatever the test starts (all closed by cleanups)."""

    primary = secondary = None

    @classmethod
    def setUpClass(cls):
        cls.primary = h.PgCluster()
        cls.secondary = h.PgCluster()  # on failure the harness closes both

    @classmethod
    def tearDownClass(cls):
        for c in (cls.secondary, cls.primary):
            if c is not None:
                c.close()

    def setUp(self):
        # A test that failed half-way may have left a cluster paused or
        # stopped: every test starts with both up.
        for c in (self.primary, self.secondary):
            c.resume()
            if not c.running:
                c.start()
        self.tmp = tempfile.mkdtemp(prefix='dbswap-test-')
        self.addCleanup(subprocess.run, ['rm', '-rf', self.tmp])
        self.role = 'app_' + secrets.token_hex(3)
        self.password = fresh_password()
        for c in (self.primary, self.secondary):
            c.create_role(self.role, self.password)
        self.env_path = os.path.join(self.tmp, 'app.env')
        self.agent = None

    # -- set-up helpers

    def url(self, cluster, password=None):
        return cluster.url(self.role, password or self.password)

    def env_text(self, settings=None, secondary=True, primary_url=None,
                 secondary_url=None):
        text = f'{TARGET}={primary_url or self.url(self.primary)}\n'
        if secondary:
            text += (f'{SECONDARY_VAR}='
                     f'{secondary_url or self.url(self.secondary)}\n')
        for k, v in (settings or {}).items():
            text += f'{k}={v}\n'
        return text

    def write_env(self, **kw):
        h.write_rename(self.env_path, self.env_text(**kw))

    def start_agent(self):
        agent = h.Agent(env_files=[self.env_path])
        self.addCleanup(agent.close)
        self.agent = agent
        return agent

    def status_client(self, agent):
        c = agent.client(name='test-failover-status')
        self.addCleanup(c.close)
        return c

    def recorder(self, agent):
        rec = h.UpdateRecorder(agent.sock, [TARGET])
        self.addCleanup(rec.close)
        return rec

    def start_load(self, agent, *args, threads=POOL_MAX, max_size=POOL_MAX):
        load = PoolLoad(agent.sock, args=('--threads', threads, '--max',
                                          max_size) + LOAD_ARGS + args)
        self.addCleanup(load.close)
        return load

    def ctl(self, agent, *args, check=True, timeout=15):
        r = subprocess.run([os.environ['DBSWAPCTL'], '--socket', agent.sock,
                            *args], capture_output=True, text=True,
                           timeout=timeout * h.TIMEOUT_SCALE)
        if check and r.returncode != 0:
            self.fail(f'dbswapctl {" ".join(args)} exited {r.returncode}: '
                      f'stdout {r.stdout!r}, stderr {r.stderr!r}; agent '
                      f'log:\n{h._tail(agent.log(), 15)}')
        return r

    def pause(self, cluster):
        """SIGSTOP the cluster; SIGCONT on every path out of the test."""
        self.addCleanup(cluster.resume)
        cluster.pause()

    # -- waiting on status

    def wait_status(self, source, predicate, timeout, what, interval=0.005):
        """Polls the target's status until predicate(entry) is true;
        returns (monotonic time it was seen, entry).  A missing field or a
        failed request counts as "not yet" and is shown on timeout."""
        deadline = time.monotonic() + timeout * h.TIMEOUT_SCALE
        last = err = None
        while True:
            try:
                t = h.target_status(source, TARGET)
                last = t
                if predicate(t):
                    return time.monotonic(), t
            except Exception as e:  # KeyError for a field not there yet
                err = e
            if time.monotonic() > deadline:
                log = h._tail(self.agent.log(), 15) if self.agent else ''
                self.fail(f'timed out after {timeout * h.TIMEOUT_SCALE:g} s '
                          f'waiting for {what}; last status: {brief(last)}; '
                          f'last error: {err!r}; agent log:\n{log}')
            time.sleep(interval)

    def wait_ready(self, agent, subscribers):
        """Generation 1 published for the primary, both servers checked
        and up, and every subscriber acked.  Returns the status entry."""
        _, t = self.wait_status(
            agent, lambda t: t['generation'] >= 1 and
            t['failover']['current'] == 'primary' and
            t['failover']['enabled'] and
            all(s['health'] == 'up' for s in t['servers']) and
            len(t['servers']) == 2 and
            t['failover']['failover_available'] and
            t['subscribers'] == t['acked'] == subscribers,
            timeout=15, what='generation 1 on the primary, both servers up '
            f'(checked at start), {subscribers} subscriber(s) acked')
        return t

    def agent_settings(self, source):
        st = h._status(source, None)
        return st['agent']['failover_settings'], \
            st['agent'].get('failover_settings_error')

    def switched(self, to, after_generation, subscribers):
        """A predicate: the target is on server `to` at a generation above
        after_generation, acked by every subscriber."""
        return lambda t: (t['failover']['current'] == to and
                          t['generation'] > after_generation and
                          t['subscribers'] == t['acked'] == subscribers)

    def crash(self, cluster):
        """pg_ctl stop -m immediate in a thread, so that the caller can
        time what follows from the moment it is issued.  Returns (t0,
        join) where join() waits for pg_ctl and re-raises its error."""
        errors = []

        def run():
            try:
                cluster.stop('immediate')
            except Exception as e:
                errors.append(e)
        th = threading.Thread(target=run, name='crash')
        t0 = time.monotonic()
        th.start()

        def join():
            th.join(60)
            if errors:
                raise errors[0]
        self.addCleanup(th.join, 60)
        return t0, join

    # -- checking updates and pool-load

    def check_update(self, rec, since, generation, reason, server_, url,
                     standby=False):
        _, _, u = rec.wait(lambda u: u['generation'] >= generation,
                           since=since, what=f'generation {generation}')
        self.assertEqual(u['generation'], generation, rec.describe())
        self.assertEqual((u.get('reason', 'rotation'),
                          u.get('server', 'primary')), (reason, server_),
                         f'update {masked(u)}')
        self.assertEqual(u.get('standby', False), standby, masked(u))
        self.assertEqual(u['conninfo'], url,
                         f'generation {generation} ({reason}) carries the '
                         f'wrong value')
        return u

    def wait_queries(self, load, more_than=0):
        return load.wait_progress(lambda p: p['queries'] > more_than,
                                  what=f'more than {more_than} queries')

    def settled_failures(self, load, t_switch):
        """pool-load's failures a second after the switch, which must be
        at most one per pool connection (acquires refused while no server
        was available, "unavailable", aside); then it must go on
        querying.  Returns the failures, those included."""
        p = load.wait_progress_after(t_switch + 1.0)
        failed = p['failures'] - summary_field(p, 'unavailable')
        self.assertLessEqual(
            failed, POOL_MAX,
            f'{failed} failures (besides "unavailable") by 1 s after the '
            f'switch on a pool of {POOL_MAX}: more than one per pool '
            f'connection; {load.describe()}')
        self.wait_queries(load, p['queries'])
        return p['failures']

    def check_load_end(self, load, settled, port):
        rc, s = load.stop()
        self.assertEqual(
            s['failures'], settled,
            f'pool-load failed after the switch (+1 s): {settled} failures '
            f'then, {s["failures"]} at the end; {load.describe()}')
        self.assertEqual(s['stats']['old'], 0, s)
        self.assertEqual(summary_field(s, 'port_at_end'), port,
                         f'pool-load ended on the wrong server; {s!r}')
        return rc, s


class Detection(TwoClusters):
    """The agent notices a dead or hung server by itself."""

    def test_crashed_primary_under_load_default_settings(self):
        # Nothing but the two URLs: the default settings.
        self.write_env()
        agent = self.start_agent()
        rec = self.recorder(agent)
        load = self.start_load(agent)
        status = self.status_client(agent)
        t = self.wait_ready(agent, subscribers=2)
        settings, error = self.agent_settings(status)
        self.assertEqual(settings, DEFAULTS, 'not the default settings')
        self.assertIsNone(error)
        self.wait_queries(load)
        g0, mark = t['generation'], rec.mark()

        t0, join = self.crash(self.primary)
        t_switch, t = self.wait_status(
            status, self.switched('secondary', g0, 2), timeout=15,
            what='the secondary in use and acked by pool-load and the '
            'recorder')
        join()
        took = t_switch - t0
        print(f'primary crashed (pg_ctl stop -m immediate) -> secondary '
              f'acked by every subscriber: {took * 1000:.0f} ms '
              f'(limit {SWITCH_LIMIT_S * 1000:.0f} ms)')
        self.assertLessEqual(
            took, SWITCH_LIMIT_S * h.TIMEOUT_SCALE,
            f'failover took {took * 1000:.0f} ms with the default settings; '
            f'status then: {brief(t)}')

        self.check_update(rec, mark, g0 + 1, 'failover', 'secondary',
                          self.url(self.secondary))
        self.assertEqual(t['generation'], g0 + 1, brief(t))
        f = t['failover']
        self.assertEqual(f['failovers'], 1, f)
        self.assertFalse(f['held'], f)
        self.assertRegex(f['last_failover'] or '', RFC3339)
        self.assertEqual(f['failure_count'], 0, f)  # the secondary's
        p = server(t, 'primary')
        self.assertEqual(p['health'], 'down', p)
        # Its connection closed and a new one was refused (or told it
        # shuts down): no doubt left, so no confirming checks.  (The
        # count goes on as the down primary is retried.)
        self.assertRegex(agent.log(), r'primary .*: down after 1 failed '
                         r'check\(s\) in .*no more checks needed')
        self.assertIsInstance(p['down_since'], int, p)
        self.assertIsInstance(p['health_error'], str, p)
        self.assertEqual(server(t, 'secondary')['health'], 'up', t)

        settled = self.settled_failures(load, t_switch)
        self.check_load_end(load, settled, self.secondary.port)

    def test_hung_primary_under_load_default_settings(self):
        """A hang (SIGSTOP) with the default settings: queries flow on the
        secondary within 2 x DB_CONNECTION_TIMEOUT (the heartbeat on the
        monitor connection goes unanswered, the confirming checks start
        while it waits out its timeout).  The old design took up to a
        check interval plus two timeouts: 39 s."""
        self.write_env()
        agent = self.start_agent()
        rec = self.recorder(agent)
        load = self.start_load(agent)
        status = self.status_client(agent)
        t = self.wait_ready(agent, subscribers=2)
        self.assertEqual(self.agent_settings(status), (DEFAULTS, None))
        self.wait_queries(load)
        g0, mark = t['generation'], rec.mark()

        t0 = time.monotonic()
        self.pause(self.primary)
        t_switch, t = self.wait_status(
            status, self.switched('secondary', g0, 2), timeout=60,
            what='the secondary in use after the primary hung', interval=0.05)
        took = t_switch - t0
        bound = 2 * DEFAULTS['connection_timeout_ms'] / 1000
        print(f'primary hung (SIGSTOP), default settings -> secondary '
              f'acked: {took * 1000:.0f} ms (bound {bound * 1000:.0f} ms)')
        self.assertLessEqual(took, bound * h.TIMEOUT_SCALE,
                             f'status then: {brief(t)}')
        self.check_update(rec, mark, g0 + 1, 'failover', 'secondary',
                          self.url(self.secondary))
        self.assertEqual(server(t, 'primary')['health'], 'down', t)
        self.assertRegex(agent.log(), r'primary .*: check failed \(1 of 3\):'
                         r' .*no answer', 'the first failure is not the '
                         'heartbeat\'s timeout')
        settled = self.settled_failures(load, t_switch)
        # Back from its stall, the primary waits out the retry interval
        # (120 s): a retry counted from the last check before the hang
        # was due at once, and failed back within 2 s.
        g1 = t['generation']
        self.primary.resume()
        time.sleep(5)
        t = h.target_status(status, TARGET)
        self.assertEqual((t['generation'], t['failover']['current']),
                         (g1, 'secondary'), f'failed back before the retry '
                         f'interval: {brief(t)}')
        self.check_load_end(load, settled, self.secondary.port)

    def test_failback_within_the_retry_interval_default_checks(self):
        """With the default checks (30 s apart), a primary that is back is
        used again within DB_PRIMARY_RETRY_INTERVAL plus its threshold
        checks, a second apart: seconds, not check intervals (the old
        design waited threshold - 1 check intervals more: a minute)."""
        retry_ms = int(3000 * h.TIMEOUT_SCALE)
        self.write_env(settings={'DB_PRIMARY_RETRY_INTERVAL': retry_ms})
        agent = self.start_agent()
        rec = self.recorder(agent)
        status = self.status_client(agent)
        t = self.wait_ready(agent, subscribers=1)
        g0 = t['generation']
        _, join = self.crash(self.primary)
        _, t = self.wait_status(status, self.switched('secondary', g0, 1),
                                timeout=10, what='failover after the crash')
        join()
        mark = rec.mark()
        self.primary.start()
        t1 = time.monotonic()
        t_back, t = self.wait_status(
            status, self.switched('primary', g0 + 1, 1), timeout=90,
            what='failback to the restarted primary', interval=0.05)
        took = t_back - t1
        threshold = DEFAULTS['failure_threshold']
        bound = retry_ms / 1000 + (threshold - 1) * RECOVER_S + 3.0
        print(f'primary restarted, default checks -> failback acked: '
              f'{took * 1000:.0f} ms (bound {bound * 1000:.0f} ms)')
        self.assertLessEqual(took, bound * h.TIMEOUT_SCALE,
                             f'{brief(t)}; agent log:\n'
                             f'{h._tail(agent.log(), 30)}')
        self.check_update(rec, mark, g0 + 2, 'failback', 'primary',
                          self.url(self.primary))

    def test_crash_looping_primary_is_held_longer_each_time(self):
        """A primary that goes down again soon after it came back (a
        crash loop) must answer longer before each failback: 2 s after
        the first such flap, 4 s after the second (health.h), so that it
        moves the apps a bounded number of times.  The first return is
        not held."""
        self.write_env(settings=SHORT)
        agent = self.start_agent()
        rec = self.recorder(agent)
        status = self.status_client(agent)
        t = self.wait_ready(agent, subscribers=1)
        g = t['generation']
        waited = []
        for flaps in range(3):
            _, join = self.crash(self.primary)
            _, t = self.wait_status(
                status, self.switched('secondary', g, 1), timeout=10,
                what=f'failover after crash {flaps + 1}')
            join()
            g = t['generation']
            self.primary.start()
            t1 = time.monotonic()
            t_back, t = self.wait_status(
                status, self.switched('primary', g, 1), timeout=30,
                what=f'failback after restart {flaps + 1}', interval=0.05)
            g = t['generation']
            waited.append(t_back - t1)
            # A check after the failback: the monitor connection is open
            # again before the next crash (it is what sees it at once).
            c0 = server(t, 'primary')['checks']
            self.wait_status(
                status, lambda t: server(t, 'primary')['checks'] > c0 and
                server(t, 'primary')['health'] == 'up', timeout=5,
                what='a check of the primary after the failback')
        print(f'crash loop: failback {["%.1f s" % w for w in waited]} after '
              f'each restart')
        # Each return as the log tells it: not held, held after 1 flap,
        # after 2.
        backs = re.findall(r'primary .*: answers again; (.*)', agent.log())
        self.assertEqual(len(backs), 3, backs)
        self.assertNotIn('held', backs[0])
        self.assertIn('and 2 s of answering (held: down 1 time(s)', backs[1])
        self.assertIn('and 4 s of answering (held: down 2 time(s)', backs[2])
        retry = settings_of(SHORT)['primary_retry_interval_ms'] / 1000
        self.assertLess(waited[0], (retry + 2.0) * h.TIMEOUT_SCALE,
                        f'the first return took long: {waited}')
        self.assertGreaterEqual(waited[1], 2.0, f'not held after one flap: '
                                f'{waited}')
        self.assertGreaterEqual(waited[2], 4.0, f'not held longer after two '
                                f'flaps: {waited}')
        reasons = [u.get('reason') for u in rec.updates()]
        self.assertEqual(reasons.count('failback'), 3, rec.describe(20))

    def test_manual_failback_after_a_crash_stays(self):
        """The operator's way back: the crashed primary is started again
        and `dbswapctl failback` issued at once, before the slow automatic
        retry (default 120 s).  The target must then stay on the primary:
        the failback validated it with a new connection."""
        self.write_env()
        agent = self.start_agent()
        rec = self.recorder(agent)
        status = self.status_client(agent)
        t = self.wait_ready(agent, subscribers=1)
        g0 = t['generation']
        _, join = self.crash(self.primary)
        _, t = self.wait_status(status, self.switched('secondary', g0, 1),
                                timeout=10, what='failover after the crash')
        join()

        self.primary.start()
        mark = rec.mark()
        self.ctl(agent, 'failback', TARGET)
        self.check_update(rec, mark, g0 + 2, 'manual', 'primary',
                          self.url(self.primary))
        _, t = self.wait_status(status, self.switched('primary', g0 + 1, 1),
                                timeout=5, what='the primary acked')
        time.sleep(1.5)
        self.assertEqual(
            [masked(u) for u in rec.updates()[mark:]][1:], [],
            f'the manual failback to the restarted primary was undone; '
            f'status: {brief(h.target_status(status, TARGET))}')
        t = h.target_status(status, TARGET)
        self.assertEqual((t['generation'], t['failover']['current'],
                          t['failover']['held']), (g0 + 2, 'primary', False),
                         brief(t))

        # Back on the primary, its monitor connection is open again: a
        # second crash is seen at once, not at the next 30 s check.
        t0, join = self.crash(self.primary)
        t1, t = self.wait_status(status, self.switched('secondary', g0 + 2, 1),
                                 timeout=10, what='failover after a 2nd crash')
        elapsed = t1 - t0
        join()
        self.assertLessEqual(elapsed, SWITCH_LIMIT_S * h.TIMEOUT_SCALE,
                             f'the second crash took {elapsed:.2f} s to '
                             f'fail over; status: {brief(t)}')

    def test_threshold_lowered_while_failing(self):
        """A primary failing checks under a high threshold, then the
        threshold lowered below the failures counted: it is down at once
        (no check would ever be started to cross it otherwise)."""
        self.write_env(settings=dict(SHORT, DB_FAILURE_THRESHOLD=100))
        agent = self.start_agent()
        status = self.status_client(agent)
        t = self.wait_ready(agent, subscribers=0)
        g0 = t['generation']
        _, join = self.crash(self.primary)
        join()
        self.wait_status(status, lambda t: t['servers'][0]['failures'] >= 4,
                         timeout=10, what='4 failed checks of the primary')
        self.write_env(settings=dict(SHORT, DB_FAILURE_THRESHOLD=3))
        _, t = self.wait_status(status, self.switched('secondary', g0, 0),
                                timeout=3, what='failover once the '
                                'threshold is below the failures')
        self.assertEqual(t['servers'][0]['health'], 'down', brief(t))

    def test_hung_primary_fails_over_then_back_after_sigcont(self):
        self.write_env(settings=SHORT)
        cfg = settings_of(SHORT)
        interval = cfg['health_check_interval_ms'] / 1000
        timeout = cfg['connection_timeout_ms'] / 1000
        threshold = cfg['failure_threshold']
        retry = cfg['primary_retry_interval_ms'] / 1000
        agent = self.start_agent()
        rec = self.recorder(agent)
        load = self.start_load(agent)
        status = self.status_client(agent)
        t = self.wait_ready(agent, subscribers=2)
        self.assertEqual(self.agent_settings(status), (cfg, None))
        self.wait_queries(load)
        g0, mark = t['generation'], rec.mark()

        # Hung: the periodic check (within interval) times out, then the
        # confirmations, 250 ms apart, each time out too.
        t0 = time.monotonic()
        self.pause(self.primary)
        t_switch, t = self.wait_status(
            status, self.switched('secondary', g0, 2), timeout=15,
            what='the secondary in use after the primary hung')
        took = t_switch - t0
        bound = interval + 2 * timeout + (threshold - 1) * CONFIRM_S + 1.0
        print(f'primary hung (SIGSTOP) -> secondary acked: '
              f'{took * 1000:.0f} ms (bound {bound * 1000:.0f} ms)')
        self.assertLessEqual(took, bound * h.TIMEOUT_SCALE,
                             f'status then: {brief(t)}')
        self.check_update(rec, mark, g0 + 1, 'failover', 'secondary',
                          self.url(self.secondary))
        p = server(t, 'primary')
        self.assertEqual(p['health'], 'down', p)
        self.assertIsInstance(p['health_error'], str, p)
        self.assertEqual(t['failover']['failovers'], 1, t['failover'])

        settled = self.settled_failures(load, t_switch)

        # The primary comes back: one of the retries (every `retry`)
        # passes, then threshold checks in a row `interval` apart.  None
        # can pass while it is stopped: all threshold passed checks are
        # among those that end after SIGCONT.
        g1, mark = t['generation'], rec.mark()
        checks0 = server(h.target_status(status, TARGET), 'primary')['checks']
        t1 = time.monotonic()
        self.primary.resume()
        seen = set()

        def back(t):
            seen.add(server(t, 'primary')['health'])
            return self.switched('primary', g1, 2)(t)
        t_back, t = self.wait_status(
            status, back, timeout=retry + threshold * interval + 10,
            what='failback to the primary after SIGCONT')
        took = t_back - t1
        checked = server(t, 'primary')['checks'] - checks0
        high = retry + (threshold - 1) * interval + 1.5
        print(f'primary resumed (SIGCONT) -> failback acked: '
              f'{took * 1000:.0f} ms (at most {high * 1000:.0f} ms), '
              f'{checked} checks of the primary ended meanwhile; health '
              f'seen: {sorted(seen)}')
        self.assertGreaterEqual(
            checked, threshold, f'failback after {checked} checks of the '
            f'primary since SIGCONT: it cannot have passed {threshold} in a '
            f'row; {brief(t)}')
        self.assertLessEqual(took, high * h.TIMEOUT_SCALE, brief(t))
        self.assertLessEqual(
            seen, HEALTH_VALUES, f'health values outside PROTOCOL.md\'s '
            f'{sorted(HEALTH_VALUES)} while the primary came back')
        self.check_update(rec, mark, g1 + 1, 'failback', 'primary',
                          self.url(self.primary))
        f = t['failover']
        self.assertEqual(f['failovers'], 1, f)
        self.assertRegex(f['last_failover'] or '', RFC3339)
        self.assertIsInstance(f['seconds_since_failover'], int, f)
        self.assertGreaterEqual(f['seconds_since_failover'], 0, f)
        self.assertLessEqual(f['seconds_since_failover'],
                             time.monotonic() - t0 + 2, f)
        self.assertEqual(server(t, 'primary')['health'], 'up', t)

        self.check_load_end(load, settled, self.primary.port)

    def test_flapping_primary_switches_a_bounded_number_of_times(self):
        settings = dict(SHORT, DB_PRIMARY_RETRY_INTERVAL=2000)
        cfg = settings_of(settings)
        interval = cfg['health_check_interval_ms'] / 1000
        threshold = cfg['failure_threshold']
        retry = cfg['primary_retry_interval_ms'] / 1000
        self.write_env(settings=settings)
        agent = self.start_agent()
        rec = self.recorder(agent)
        status = self.status_client(agent)
        t = self.wait_ready(agent, subscribers=1)
        g0, f0, mark = t['generation'], t['failover']['failovers'], \
            rec.mark()

        # Down long enough to be declared down (threshold failures 250 ms
        # apart), up for less than the threshold checks a failback needs.
        flap_for, cycles = 8.0, 0
        t_start = time.monotonic()
        while time.monotonic() - t_start < flap_for:
            self.primary.stop('immediate')
            time.sleep(0.6)
            self.primary.start()
            time.sleep(0.5)
            cycles += 1
        t_end = time.monotonic()
        t = h.target_status(status, TARGET)
        duration = t_end - t_start
        switches = t['generation'] - g0
        failovers = t['failover']['failovers'] - f0
        bound = int(2 * duration / retry + 2)
        reasons = [u.get('reason') for u in rec.updates()[mark:]]
        print(f'{cycles} crash/restart cycles in {duration:.1f} s: '
              f'{switches} switches ({failovers} failovers), bound {bound}; '
              f'reasons {reasons}')
        self.assertGreaterEqual(
            failovers, 1, f'the flapping primary was never declared down; '
            f'{brief(t)}')
        self.assertLessEqual(switches, bound,
                             f'too many switches: {rec.describe(20)}')
        self.assertLessEqual(failovers, bound, brief(t))
        self.assertTrue(set(reasons) <= {'failover', 'failback'}, reasons)

        # Now it stays up: back on it under the usual rule, then stable.
        g1 = t['generation'] if t['failover']['current'] == 'secondary' \
            else t['generation'] - 1
        _, t = self.wait_status(
            status, self.switched('primary', g1, 1),
            timeout=retry + threshold * interval + 10,
            what='failback once the primary stays up')
        mark = rec.mark()
        time.sleep(1.0)
        self.assertEqual(rec.updates()[mark:], [],
                         f'switches after the primary settled: '
                         f'{rec.describe()}')

    def test_both_down_then_secondary_back(self):
        cfg = settings_of(SHORT)
        interval = cfg['health_check_interval_ms'] / 1000
        threshold = cfg['failure_threshold']
        retry = cfg['primary_retry_interval_ms'] / 1000
        self.write_env(settings=SHORT)
        agent = self.start_agent()
        rec = self.recorder(agent)
        load = self.start_load(agent)
        status = self.status_client(agent)
        t = self.wait_ready(agent, subscribers=2)
        self.wait_queries(load)
        g0, mark = t['generation'], rec.mark()

        # The secondary first: nothing to publish, nothing to fail over to.
        self.secondary.stop('immediate')
        _, t = self.wait_status(
            status, lambda t: server(t, 'secondary')['health'] == 'down' and
            not t['failover']['failover_available'], timeout=10,
            what='the secondary down, failover unavailable')
        self.assertEqual((t['generation'], t['failover']['current']),
                         (g0, 'primary'), brief(t))
        self.assertEqual(rec.updates()[mark:], [], rec.describe())

        # Then the primary: no server at all.
        t0, join = self.crash(self.primary)
        t_none, t = self.wait_status(
            status, self.switched('none', g0, 2), timeout=10,
            what='current "none", acked, after both servers went down')
        join()
        print(f'primary crashed with the secondary down -> "unavailable" '
              f'acked: {(t_none - t0) * 1000:.0f} ms')
        self.check_update(rec, mark, g0 + 1, 'unavailable', 'none',
                          self.url(self.primary))
        for s in t['servers']:
            self.assertEqual(s['health'], 'down', t)
        self.assertFalse(t['failover']['failover_available'], t)
        self.assertGreaterEqual(t['failover']['failure_count'], threshold,
                                t['failover'])
        # The pool fails acquires at once (EHOSTDOWN) meanwhile.
        p = load.wait_progress_after(t_none + 1.0)
        self.assertGreater(summary_field(p, 'unavailable'), 0,
                           f'no acquire failed as unavailable a second '
                           f'after "none"; {load.describe()}')

        # The secondary comes back first: used as soon as a retry (250 ms
        # backoff up to the interval) passes.
        g1, mark = t['generation'], rec.mark()
        self.secondary.start()
        t1 = time.monotonic()
        t_sec, t = self.wait_status(
            status, self.switched('secondary', g1, 2), timeout=10,
            what='the secondary in use once it is back')
        took = t_sec - t1
        bound = interval + 1.5
        print(f'secondary accepting connections again -> in use and acked: '
              f'{took * 1000:.0f} ms (bound {bound * 1000:.0f} ms)')
        self.assertLessEqual(took, bound * h.TIMEOUT_SCALE, brief(t))
        self.check_update(rec, mark, g1 + 1, 'failback', 'secondary',
                          self.url(self.secondary))
        settled = self.settled_failures(load, t_sec)

        # Then the primary: back to it under the usual failback rule.
        g2, mark = t['generation'], rec.mark()
        self.primary.start()
        _, t = self.wait_status(
            status, self.switched('primary', g2, 2),
            timeout=retry + threshold * interval + 10,
            what='failback to the primary')
        self.check_update(rec, mark, g2 + 1, 'failback', 'primary',
                          self.url(self.primary))

        rc, s = self.check_load_end(load, settled, self.primary.port)
        self.assertGreater(summary_field(s, 'unavailable'), 0,
                           f'no acquire failed as unavailable while no '
                           f'server was: {s!r}')


class Control(TwoClusters):
    """Status, dbswapctl failover/failback/reconnect, rotation and settings
    with a secondary configured, and without one."""

    def test_status_with_a_secondary(self):
        self.write_env()
        agent = self.start_agent()
        t = self.wait_ready(agent, subscribers=0)
        f = t['failover']
        self.assertEqual(
            {k: f[k] for k in ('enabled', 'hint', 'current', 'standby',
                               'failover_available', 'held', 'failure_count',
                               'failovers', 'last_failover',
                               'seconds_since_failover', 'last_error')},
            {'enabled': True, 'hint': None, 'current': 'primary',
             'standby': False, 'failover_available': True, 'held': False,
             'failure_count': 0, 'failovers': 0, 'last_failover': None,
             'seconds_since_failover': None, 'last_error': None})
        self.assertEqual([(s['role'], s['var']) for s in t['servers']],
                         [('primary', TARGET), ('secondary', SECONDARY_VAR)])
        for s, c in zip(t['servers'], (self.primary, self.secondary)):
            what = f'{s["role"]}: {s!r}'
            self.assertIn(':****@', s['conninfo'], what)
            self.assertIn(f':{c.port}/', s['conninfo'], what)
            self.assertNotIn(self.password, s['conninfo'])
            self.assertEqual((s['state'], s['error'], s['attempts'],
                              s['gave_up']), ('ok', None, 0, False), what)
            self.assertEqual(s['accepted_seq'], s['value_seq'], what)
            self.assertEqual((s['health'], s['failures']), ('up', 0), what)
            self.assertGreaterEqual(s['checks'], 1, what)
            self.assertIsInstance(s['rtt_us'], int, what)
            self.assertGreater(s['rtt_us'], 0, what)
            self.assertIs(s['in_recovery'], False, what)
            self.assertIsInstance(s['last_check'], int, what)
            self.assertLess(abs(s['last_check'] - time.time()), 120, what)
            self.assertIsNone(s['down_since'], what)
            self.assertIsNone(s['health_error'], what)
        settings, error = self.agent_settings(agent)
        self.assertEqual(settings, DEFAULTS)
        self.assertIsNone(error)

    def test_without_a_secondary_failover_is_off(self):
        self.write_env(secondary=False)
        agent = self.start_agent()
        _, t = self.wait_status(agent, lambda t: t['generation'] == 1 and
                                t['state'] == 'ok', timeout=15,
                                what='generation 1')
        self.assertIn('failover', t, brief(t))
        f = t['failover']
        self.assertIs(f['enabled'], False, f)
        self.assertIsInstance(f['hint'], str, f)
        self.assertIn(SECONDARY_VAR, f['hint'])
        self.assertEqual(f['current'], 'primary', f)
        self.assertEqual((f['failovers'], f['held'],
                          f['failover_available']), (0, False, False), f)
        self.assertEqual(len(t['servers']), 1, t['servers'])
        s = t['servers'][0]
        self.assertEqual((s['role'], s['var'], s['health']),
                         ('primary', TARGET, 'off'), s)
        self.assertIn(':****@', s['conninfo'], s)
        self.assertEqual(self.agent_settings(agent), (DEFAULTS, None))

    def test_failover_refused_without_a_secondary(self):
        self.write_env(secondary=False)
        agent = self.start_agent()
        rec = self.recorder(agent)
        status = self.status_client(agent)
        _, t = self.wait_status(
            status, lambda t: t['generation'] == 1 and t['acked'] == 1,
            timeout=15, what='generation 1 acked')
        mark = rec.mark()
        r = self.ctl(agent, 'failover', TARGET, check=False)
        self.assertEqual(r.returncode, 4,
                         f'dbswapctl failover without a secondary: exit '
                         f'{r.returncode} (4: refused); stdout {r.stdout!r}, '
                         f'stderr {r.stderr!r}')
        self.assertTrue(r.stderr.strip(), 'no reason given')
        reply = status.failover(TARGET)
        self.assertEqual((reply['type'], reply.get('code')),
                         ('error', 'refused'), reply)
        time.sleep(0.3)  # time for an update, were one to come
        self.assertEqual(rec.updates()[mark:], [], rec.describe())
        t = h.target_status(status, TARGET)
        self.assertEqual((t['generation'], t['failover']['current'],
                          t['failover']['held']), (1, 'primary', False),
                         brief(t))

    def test_switch_cancelled_when_the_secondary_is_taken_out(self):
        """A switch to the secondary under way (the secondary hangs, so
        it lasts) when DATABASE_URL_SECONDARY is taken out of the files:
        the switch is cancelled, the request says so, and the apps stay
        on the primary even once the secondary answers again."""
        settings = {'DB_CONNECTION_TIMEOUT': int(8000 * h.TIMEOUT_SCALE)}
        self.write_env(settings=settings)
        agent = self.start_agent()
        rec = self.recorder(agent)
        status = self.status_client(agent)
        t = self.wait_ready(agent, subscribers=1)
        g0, mark = t['generation'], rec.mark()
        self.pause(self.secondary)
        c = agent.client(name='test-failover-request')
        self.addCleanup(c.close)
        c.send({'type': 'failover', 'target': TARGET, 'id': 7})
        agent.wait_log(r'manual failover requested')
        start = time.monotonic()
        self.write_env(settings=settings, secondary=False)
        reply = c.recv(timeout=10)
        took = time.monotonic() - start
        self.assertEqual(reply['type'], 'error', reply)
        self.assertIn('cancelled', reply.get('message', ''), reply)
        # Well before the switch's own timeout.
        self.assertLess(took, 6 * h.TIMEOUT_SCALE, reply)
        self.secondary.resume()
        time.sleep(1.0)
        t = h.target_status(status, TARGET)
        self.assertEqual((t['generation'], t['failover']['current']),
                         (g0, 'primary'), brief(t))
        self.assertEqual(rec.updates()[mark:], [], rec.describe())

    def test_manual_failover_holds_until_failback(self):
        # Short settings, so that an automatic failback, were it allowed,
        # would come within retry + interval = 0.7 s.  The connection
        # timeout bounds one SCRAM login, slow under valgrind: scaled.
        settings = {'DB_HEALTH_CHECK_INTERVAL': 200,
                    'DB_CONNECTION_TIMEOUT': int(500 * h.TIMEOUT_SCALE),
                    'DB_FAILURE_THRESHOLD': 2,
                    'DB_PRIMARY_RETRY_INTERVAL': 500}
        self.write_env(settings=settings)
        agent = self.start_agent()
        rec = self.recorder(agent)
        status = self.status_client(agent)
        t = self.wait_ready(agent, subscribers=1)
        g0, mark = t['generation'], rec.mark()

        self.ctl(agent, 'failover', TARGET)
        self.check_update(rec, mark, g0 + 1, 'manual', 'secondary',
                          self.url(self.secondary))
        _, t = self.wait_status(status, self.switched('secondary', g0, 1),
                                timeout=5, what='the secondary acked')
        self.assertIs(t['failover']['held'], True, t['failover'])

        # Again: already there, ok without a new generation.
        reply = status.failover(TARGET)
        self.assertEqual(reply['type'], 'ok', reply)
        self.assertIn(reply.get('generation'), (None, g0 + 1), reply)

        # Held: no failback to the healthy primary by itself.
        mark = rec.mark()
        time.sleep(2.0)
        self.assertEqual(rec.updates()[mark:], [],
                         f'an update while held: {rec.describe()}')
        t = h.target_status(status, TARGET)
        self.assertEqual((t['generation'], t['failover']['current'],
                          t['failover']['held']),
                         (g0 + 1, 'secondary', True), brief(t))

        self.ctl(agent, 'failback', TARGET)
        self.check_update(rec, mark, g0 + 2, 'manual', 'primary',
                          self.url(self.primary))
        _, t = self.wait_status(status, self.switched('primary', g0 + 1, 1),
                                timeout=5, what='the primary acked')
        self.assertIs(t['failover']['held'], False, t['failover'])

    def test_reconnect_replaces_every_connection(self):
        self.write_env()
        agent = self.start_agent()
        rec = self.recorder(agent)
        load = self.start_load(agent, '--min', 2, threads=2, max_size=2)
        status = self.status_client(agent)
        t = self.wait_ready(agent, subscribers=2)
        self.wait_queries(load)
        g0, mark = t['generation'], rec.mark()

        def sessions(cluster):
            return set(cluster.sql(
                'SELECT pid FROM pg_stat_activity WHERE usename = '
                f'{h.quote_literal(self.role)}').split())
        before = sessions(self.primary) | sessions(self.secondary)
        self.assertTrue(before, 'no session of the role before reconnect')

        self.ctl(agent, 'reconnect', TARGET)
        self.check_update(rec, mark, g0 + 1, 'reconnect', 'primary',
                          self.url(self.primary))
        self.wait_status(status, self.switched('primary', g0, 2), timeout=10,
                         what='generation g0+1 (reconnect) acked')
        reply = status.reconnect(TARGET)
        self.assertEqual((reply['type'], reply.get('generation')),
                         ('ok', g0 + 2), reply)
        self.check_update(rec, mark, g0 + 2, 'reconnect', 'primary',
                          self.url(self.primary))
        self.wait_status(status, self.switched('primary', g0 + 1, 2),
                         timeout=10, what='generation g0+2 acked')

        # Every session of before is gone, the pool's and the agent's
        # monitor connections alike.
        h.wait_for(lambda: not (before & (sessions(self.primary) |
                                          sessions(self.secondary))),
                   timeout=5, interval=0.05,
                   what='the sessions from before the reconnects to end')
        rc, s = load.stop()
        self.assertEqual((rc, s['failures']), (0, 0), load.describe())
        self.assertEqual(s['generation'], g0 + 2, s)
        self.assertGreaterEqual(
            s['stats']['opened'], 6,
            f'a pool of 2 (min 2) through 2 reconnects opened '
            f'{s["stats"]["opened"]} connections; {s!r}')
        self.assertEqual(summary_field(s, 'port_at_end'),
                         self.primary.port, s)

    def test_rotation_with_a_secondary(self):
        self.write_env()
        agent = self.start_agent()
        rec = self.recorder(agent)
        status = self.status_client(agent)
        t = self.wait_ready(agent, subscribers=1)
        g0, mark = t['generation'], rec.mark()
        seq0 = server(t, 'secondary')['value_seq']

        # The secondary's password, on its cluster, then in the file
        # (with a visible change to the value, the password being masked).
        sec_pw = fresh_password()
        self.secondary.set_password(self.role, sec_pw)
        sec_url = self.url(self.secondary, sec_pw) + \
            '?application_name=rotated'
        self.write_env(secondary_url=sec_url)
        status.reload()
        _, t = self.wait_status(
            status, lambda t: (s := server(t, 'secondary'))['value_seq'] >
            seq0 and s['accepted_seq'] == s['value_seq'] and
            s['state'] == 'ok' and 'application_name=rotated' in
            (s['conninfo'] or ''), timeout=10,
            what='the new secondary value validated')
        self.assertNotIn(sec_pw, server(t, 'secondary')['conninfo'])
        self.assertEqual((t['generation'], t['failover']['current']),
                         (g0, 'primary'), brief(t))
        time.sleep(0.2)
        self.assertEqual(rec.updates()[mark:], [],
                         f'a secondary rotation published: '
                         f'{rec.describe()}')

        # It is the value a switch publishes.
        self.ctl(agent, 'failover', TARGET)
        self.check_update(rec, mark, g0 + 1, 'manual', 'secondary', sec_url)
        self.ctl(agent, 'failback', TARGET)
        self.check_update(rec, mark, g0 + 2, 'manual', 'primary',
                          self.url(self.primary))

        # The primary rotates as it always did.
        pri_pw = fresh_password()
        self.primary.set_password(self.role, pri_pw)
        self.write_env(primary_url=self.url(self.primary, pri_pw),
                       secondary_url=sec_url)
        self.check_update(rec, mark, g0 + 3, 'rotation', 'primary',
                          self.url(self.primary, pri_pw))
        _, t = self.wait_status(status, self.switched('primary', g0 + 2, 1),
                                timeout=10, what='the rotation acked')
        self.assertEqual(server(t, 'primary')['state'], 'ok', brief(t))

    def test_settings_change_live(self):
        self.write_env(settings={'DB_HEALTH_CHECK_INTERVAL': 60000})
        agent = self.start_agent()
        status = self.status_client(agent)
        t = self.wait_ready(agent, subscribers=0)
        pid = h._status(status, None)['agent']['pid']
        in_force = dict(DEFAULTS, health_check_interval_ms=60000)
        self.assertEqual(self.agent_settings(status), (in_force, None))

        def checks():
            t = h.target_status(status, TARGET)
            return [s['checks'] for s in t['servers']]

        # A minute apart: hardly a check in a second.
        c0 = checks()
        time.sleep(1.0)
        c1 = checks()
        self.assertTrue(all(b - a <= 1 for a, b in zip(c0, c1)),
                        f'checks {c0} -> {c1} in 1 s at a 60 s interval')

        def apply(settings, what):
            self.write_env(settings=settings)
            reply = status.reload()
            self.assertEqual(reply['type'], 'ok', reply)
            return h.wait_for(lambda: (s := self.agent_settings(status))
                              and what(*s) and s, timeout=5,
                              what=f'settings {settings} in status')

        # 60000 -> 200 ms: checks come fast, without a restart.
        apply({'DB_HEALTH_CHECK_INTERVAL': 200},
              lambda s, e: s['health_check_interval_ms'] == 200)
        t_applied, c2 = time.monotonic(), checks()
        _, t = self.wait_status(
            status, lambda t: all(s['checks'] >= c + 5 for s, c in
                                  zip(t['servers'], c2)), timeout=3,
            what='5 checks of each server at the new 200 ms interval')
        print(f'interval 60000 -> 200 ms: 5 checks of each server '
              f'{(time.monotonic() - t_applied) * 1000:.0f} ms after the '
              f'reload')

        in_force = dict(DEFAULTS, health_check_interval_ms=200,
                        failure_threshold=5)
        apply({'DB_HEALTH_CHECK_INTERVAL': 200, 'DB_FAILURE_THRESHOLD': 5},
              lambda s, e: s == in_force and e is None)

        # An invalid value: the whole new set is refused (the valid values
        # next to it too), the error names the variable.
        for var, bad in (('DB_HEALTH_CHECK_INTERVAL', '99'),
                         ('DB_FAILURE_THRESHOLD', '0'),
                         ('DB_CONNECTION_TIMEOUT', '600001'),
                         ('DB_FAILURE_THRESHOLD', '101'),
                         ('DB_PRIMARY_RETRY_INTERVAL', '2m'),
                         ('DB_HEALTH_CHECK_INTERVAL', '86400001')):
            new = {'DB_HEALTH_CHECK_INTERVAL': 1000,
                   'DB_FAILURE_THRESHOLD': 4, var: bad}
            s, e = apply(new, lambda s, e: e and var in e)
            self.assertEqual(s, in_force, f'{var}={bad} was not refused '
                             f'as a whole (error {e!r})')

        # Fixed: the new set replaces the old, the error clears.
        in_force = dict(DEFAULTS, health_check_interval_ms=200)
        apply({'DB_HEALTH_CHECK_INTERVAL': 200, 'DB_FAILURE_THRESHOLD': 3},
              lambda s, e: s == in_force and e is None)
        c3 = checks()
        self.wait_status(status, lambda t: all(
            s['checks'] >= c + 3 for s, c in zip(t['servers'], c3)),
            timeout=3, what='checks still running at 200 ms')

        st = h._status(status, None)
        self.assertEqual(st['agent']['pid'], pid, 'the agent restarted')
        self.assertTrue(agent.running)
        t = h.target_status(st, TARGET)
        self.assertEqual(t['generation'], 1, 'settings published a value')


class HarnessPause(unittest.TestCase):
    """What the tests above rely on in the harness, checkable without an
    agent: pause() hangs a cluster and resume() undoes it; stop and start
    keep the port."""

    def test_pause_hangs_connections_until_resume(self):
        with h.PgCluster() as pg:
            pg.create_role('app', 'pw')
            url = pg.url('app', 'pw')
            pg.pause()
            self.addCleanup(pg.resume)
            procs = pg.processes()
            self.assertGreater(len(procs), 3, procs)  # postmaster + aux
            states = {p: h._proc_state(p) for p in procs}
            self.assertTrue(all(s in ('T', 'Z', None)
                                for s in states.values()), states)
            t0 = time.monotonic()
            self.assertFalse(h.can_connect(url, timeout=2))
            self.assertGreaterEqual(time.monotonic() - t0, 1.5,
                                    h.last_connect_error())
            self.assertIn('timeout', h.last_connect_error())

            pg.resume()
            self.assertFalse(pg.paused)
            self.assertTrue(pg.can_connect(url), h.last_connect_error())
            self.assertNotIn('T', {h._proc_state(p) for p in procs})

            # stop (resuming first) and start again on the same port
            port = pg.port
            pg.pause()
            pg.stop('immediate')
            self.assertFalse(pg.paused)
            self.assertFalse(pg.can_connect(url, timeout=2))
            pg.start()
            self.assertEqual(pg.port, port)
            self.assertTrue(pg.can_connect(url), h.last_connect_error())
            pg.pause()  # close() resumes before it stops
            procs = pg.processes()
        h.wait_for(lambda: all(h._proc_state(p) in (None, 'Z')
                               for p in procs), timeout=10,
                   what=f'processes {procs} to end with close()')


if __name__ == '__main__':
    main()
