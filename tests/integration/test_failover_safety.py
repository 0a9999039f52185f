"""Failover safety (issue 16), against real PostgreSQL clusters:

  - a rejected password is not a dead server: an expired role on the
    primary, or on both servers, publishes no `unavailable` and makes no
    switch; status and the log say "credentials rejected by the
    primary/secondary"; the agent's failed logins per server are bounded
    by TARGET_AUTH_RETRIES (counted in the server's own log), so a
    lockout policy never locks the role out;
  - no split brain: a promoted physical replica and its old primary
    back on its old timeline (same system identifier) are never both
    used: no automatic failback, status and log say why, a manual
    failback needs --force, and an automatic failback is decided on a
    check of the secondary made after the primary's; two independent
    clusters fail back as before, with a warning in status; a role that
    may not read the identity makes the pair unknown (the safe side);
  - the standby flag follows the server in use (reasons promoted,
    demoted).

Built on test_failover.TwoClusters (its helpers, its settings); the
replicated pair comes from harness.PgCluster.replica().
"""

import os
import re
import secrets
import subprocess
import tempfile
import time

import harness as h
from common import fresh_password, main
from test_failover import SHORT, TARGET, TwoClusters, brief, masked, server

# agent/target.h TARGET_AUTH_RETRIES: the most failed logins per server
# and value.
AUTH_RETRIES = 6
AUTH_FAILED = re.compile(r'FATAL:  password authentication failed for user')


def failed_logins(cluster, since):
    """FATAL authentication failures in cluster's log after offset since."""
    return len(AUTH_FAILED.findall(cluster.log()[since:]))


class RejectedCredentials(TwoClusters):
    """An expired role (ALTER ROLE ... VALID UNTIL in the past) logs in no
    more; sessions already open stay, so each test ends them (as a restart
    of the server would): the agent's next logins are refused."""

    def expire(self, *clusters):
        for c in clusters:
            c.durable_sql(f'ALTER ROLE {h.quote_ident(self.role)} '
                          "VALID UNTIL '2000-01-01'")
            c.terminate_sessions(self.role)

    def check_rejected(self, clusters, roles):
        self.write_env(settings=SHORT)
        agent = self.start_agent()
        rec = self.recorder(agent)
        status = self.status_client(agent)
        t = self.wait_ready(agent, subscribers=1)
        g0 = t['generation']
        marks = {c: len(c.log()) for c in clusters}
        mark = rec.mark()
        self.expire(*clusters)

        def said(t):
            return all('credentials rejected by the ' + r in
                       (server(t, r)['health_error'] or '') for r in roles)
        _, t = self.wait_status(status, said, timeout=15,
                                what='status: credentials rejected by the '
                                + ' and '.join(roles))
        # Every login the agent will make: it gives up after the bound,
        # however long it waits.  The backoff reaches the check interval
        # (300 ms) at the third login: 6 fit in about 2 s.
        try:
            h.wait_for(lambda: all(failed_logins(c, marks[c]) >=
                                   AUTH_RETRIES for c in clusters), 15,
                       what=f'{AUTH_RETRIES} failed logins on each server')
        except AssertionError as e:
            self.fail(f'{e}: {[failed_logins(c, marks[c]) for c in clusters]}'
                      f'; agent log:\n{h._tail(agent.log(), 20)}')
        time.sleep(3 * SHORT['DB_PRIMARY_RETRY_INTERVAL'] / 1000)
        t = h.target_status(status, TARGET)
        for c in clusters:
            n = failed_logins(c, marks[c])
            self.assertLessEqual(
                n, AUTH_RETRIES, f'{n} failed logins on port {c.port}: the '
                f'agent hammers a role that a lockout policy would lock; '
                f'status {brief(t)}')
        updates = [masked(u) for u in rec.updates()[mark:]]
        self.assertEqual(updates, [], 'a rejected password published an '
                         'update (unavailable, or a switch)')
        self.assertEqual((t['generation'], t['failover']['current']),
                         (g0, 'primary'), brief(t))
        for r in roles:
            self.assertIn('credentials rejected by the ' + r,
                          server(t, r)['health_error'], brief(t))
            self.assertNotEqual(server(t, r)['health'], 'down', brief(t))
        self.assertIn('credentials rejected by the primary',
                      t['failover']['last_error'] or '', brief(t))
        self.assertNotIn(self.password, agent.log())
        for r in roles:
            self.assertIn('credentials rejected by the ' + r, agent.log())
        return agent, status

    def test_expired_role_on_the_primary(self):
        self.check_rejected([self.primary], ['primary'])

    def test_expired_role_on_both_servers(self):
        self.check_rejected([self.primary, self.secondary],
                            ['primary', 'secondary'])

    def test_logins_start_over_on_reconnect(self):
        """dbswapctl reconnect (like a new value) starts the count over:
        the role valid again, the primary is used as before."""
        agent, status = self.check_rejected([self.primary], ['primary'])
        self.primary.durable_sql(f'ALTER ROLE {h.quote_ident(self.role)} '
                                 "VALID UNTIL 'infinity'")
        self.ctl(agent, 'reconnect', TARGET)
        self.wait_status(
            status, lambda t: server(t, 'primary')['health'] == 'up' and
            t['failover']['current'] == 'primary', timeout=15,
            what='the primary up again after reconnect')


class FreshPair(TwoClusters):
    """Clusters made afresh for each test (the tests promote or demote
    them): a primary and, with `replica`, its streaming replica
    (pg_basebackup -R) as the secondary, else an independent cluster.
    The role is created on the primary and reaches a replica by
    replication."""

    @classmethod
    def setUpClass(cls):
        pass

    @classmethod
    def tearDownClass(cls):
        pass

    replica = True  # the secondary is the primary's replica

    def setUp(self):
        self.primary = h.PgCluster()
        self.addCleanup(self.primary.close)
        self.secondary = (self.primary.replica() if self.replica
                          else h.PgCluster())
        self.addCleanup(self.secondary.close)
        self.tmp = tempfile.mkdtemp(prefix='dbswap-test-')
        self.addCleanup(subprocess.run, ['rm', '-rf', self.tmp])
        self.role = 'app_' + secrets.token_hex(3)
        self.password = fresh_password()
        self.primary.create_role(self.role, self.password)
        if not self.replica:
            self.secondary.create_role(self.role, self.password)
        h.wait_for(lambda: self.secondary.sql(
            'SELECT count(*) FROM pg_roles WHERE rolname = '
            f'{h.quote_literal(self.role)}') == '1',
            what='the role replicated to the standby')
        self.env_path = os.path.join(self.tmp, 'app.env')
        self.agent = None



class ReplicatedPair(FreshPair):
    """A primary and its replica: no split brain after a promotion."""

    def test_old_primary_back_writable_is_not_failed_back_to(self):
        self.write_env(settings=SHORT)
        agent = self.start_agent()
        rec = self.recorder(agent)
        status = self.status_client(agent)
        self.wait_status(
            status, lambda t: t['generation'] >= 1 and
            t['failover']['current'] == 'primary' and
            all(s['health'] == 'up' for s in t['servers']) and
            t['failover']['pair'] == 'replicated' and
            t['subscribers'] == t['acked'] == 1, timeout=15,
            what='on the primary, both up, a replicated pair')
        g0 = h.target_status(status, TARGET)['generation']

        # The primary crashes: failover to the standby (read-only).
        self.primary.stop('immediate')
        self.wait_status(status, self.switched('secondary', g0, 1),
                         timeout=15, what='failover to the standby')
        # The operator promotes it: the apps are told it takes writes now
        # (the same value, standby false).
        g1 = h.target_status(status, TARGET)['generation']
        mark = rec.mark()
        self.secondary.promote()
        self.check_update(rec, mark, g1 + 1, 'promoted', 'secondary',
                          self.url(self.secondary))
        # The old primary comes back on its own, writable, on timeline 1
        # (nothing fenced it).
        self.primary.start()
        self.assertEqual((self.primary.timeline(), self.secondary.timeline()),
                         (1, 2))
        mark = rec.mark()
        why = ('both servers writable; primary on timeline 1, secondary on '
               '2: not failing back')
        _, t = self.wait_status(
            status, lambda t: server(t, 'primary')['health'] == 'up' and
            why in (t['failover']['last_error'] or ''), timeout=20,
            what='status: why the agent does not fail back')
        # Several retry intervals and checks later, still on the
        # secondary: no update at all.
        time.sleep(3 * SHORT['DB_PRIMARY_RETRY_INTERVAL'] / 1000)
        t = h.target_status(status, TARGET)
        self.assertEqual([masked(u) for u in rec.updates()[mark:]], [],
                         f'the agent failed back to the old primary: split '
                         f'brain; status {brief(t)}')
        self.assertEqual(t['failover']['current'], 'secondary', brief(t))
        self.assertIn(why, agent.log())
        self.assertIn(why, t['failover']['last_error'])

        # By hand: refused, unless forced.
        r = self.ctl(agent, 'failback', TARGET, check=False)
        self.assertNotEqual(r.returncode, 0, r)
        self.assertIn(why, r.stderr)
        self.assertIn('--force', r.stderr)
        self.assertEqual([masked(u) for u in rec.updates()[mark:]], [])
        self.ctl(agent, 'failback', TARGET, '--force')
        u = self.check_update(rec, mark, t['generation'] + 1, 'manual',
                              'primary', self.url(self.primary))
        self.assertFalse(u.get('standby', False))


    def test_failback_decided_on_a_fresh_check_of_the_secondary(self):
        """The secondary promoted just after its last check, the old
        primary back before the next (10 s apart; one good check makes it
        up): the agent must not fail back on what the secondary said
        before its promotion.  It checks the secondary again first."""
        settings = dict(SHORT, DB_HEALTH_CHECK_INTERVAL=10000,
                        DB_FAILURE_THRESHOLD=1, DB_PRIMARY_RETRY_INTERVAL=100)
        self.write_env(settings=settings)
        agent = self.start_agent()
        rec = self.recorder(agent)
        status = self.status_client(agent)
        _, t = self.wait_status(
            status, lambda t: t['generation'] >= 1 and
            all(s['health'] == 'up' for s in t['servers']) and
            t['failover']['pair'] == 'replicated' and
            t['subscribers'] == t['acked'] == 1, timeout=15,
            what='on the primary, both up, a replicated pair')
        g0 = t['generation']
        self.primary.stop('immediate')
        self.wait_status(status, self.switched('secondary', g0, 1),
                         timeout=15, what='failover to the standby')
        mark = rec.mark()
        self.secondary.promote()
        self.primary.start()
        why = ('both servers writable; primary on timeline 1, secondary on '
               '2: not failing back')
        _, t = self.wait_status(
            status, lambda t: why in (t['failover']['last_error'] or '') or
            t['failover']['current'] == 'primary', timeout=20,
            what='a decision on the old primary')
        self.assertEqual(t['failover']['current'], 'secondary',
                         f'failed back on a stale check of the secondary: '
                         f'split brain; {brief(t)}')
        self.assertNotIn('failback', [u.get('reason')
                                      for u in rec.updates()[mark:]])


class Demoted(FreshPair):
    """The standby flag follows the server in use: a primary in use
    restarted as a standby (standby.signal) while the secondary is away
    stays in use, and the apps are told it is read-only now."""

    replica = False  # fresh clusters: the primary is made a standby

    def test_primary_in_use_demoted(self):
        # A high threshold: the primary's restart must not make it down.
        self.write_env(settings=dict(SHORT, DB_FAILURE_THRESHOLD=100))
        agent = self.start_agent()
        rec = self.recorder(agent)
        status = self.status_client(agent)
        t = self.wait_ready(agent, subscribers=1)
        g0 = t['generation']
        self.secondary.stop('immediate')
        self.wait_status(status, lambda t: not t['failover'][
            'failover_available'], timeout=10, what='the secondary away')
        mark = rec.mark()
        self.primary.stop('fast')
        signal = os.path.join(self.primary.datadir, 'standby.signal')
        open(signal, 'w').close()
        h._chown_server(signal)
        self.primary.start()
        self.assertTrue(self.primary.in_recovery())
        self.check_update(rec, mark, g0 + 1, 'demoted', 'primary',
                          self.url(self.primary), standby=True)
        _, t = self.wait_status(
            status, lambda t: t['failover']['standby'] and
            t['acked'] == 1 and t['generation'] == g0 + 1, timeout=10,
            what='status: the primary in use is a standby')
        self.assertIn('in recovery now (demoted', agent.log())


class IndependentPair(TwoClusters):
    """Two clusters made apart (different system identifiers): failback as
    documented, with a warning in status."""

    def test_failback_with_a_warning(self):
        self.assertNotEqual(self.primary.system_identifier(),
                            self.secondary.system_identifier())
        self.write_env(settings=SHORT)
        agent = self.start_agent()
        rec = self.recorder(agent)
        status = self.status_client(agent)
        t = self.wait_ready(agent, subscribers=1)
        self.assertEqual(t['failover']['pair'], 'independent', brief(t))
        self.assertIsNone(t['failover']['warning'], brief(t))
        g0 = t['generation']
        self.primary.stop('immediate')
        self.wait_status(status, self.switched('secondary', g0, 1),
                         timeout=15, what='failover')
        self.primary.start()
        mark = rec.mark()
        _, t = self.wait_status(status, self.switched('primary', g0 + 1, 1),
                                timeout=30, what='automatic failback')
        self.check_update(rec, mark, g0 + 2, 'failback', 'primary',
                          self.url(self.primary))
        self.assertIn('writes made on the secondary during a failover stay '
                      'on the secondary', t['failover']['warning'] or '',
                      brief(t))


    def test_role_that_may_not_read_the_identity(self):
        """pg_control_system() revoked from PUBLIC (a hardened server):
        the checks still pass (the plain query instead), the pair is
        unknown, and two writable servers are not failed back to on the
        agent's own: the safe side."""
        fns = ('pg_control_system()', 'pg_control_checkpoint()')

        def grant(c):
            # The clusters serve the whole class: whatever happened.
            c.resume()
            if not c.running:
                c.start()
            for f in fns:
                c.durable_sql(f'GRANT EXECUTE ON FUNCTION {f} TO PUBLIC')
        for c in (self.primary, self.secondary):
            self.addCleanup(grant, c)
            for f in fns:
                c.durable_sql(f'REVOKE EXECUTE ON FUNCTION {f} FROM PUBLIC')
        self.write_env(settings=SHORT)
        agent = self.start_agent()
        rec = self.recorder(agent)
        status = self.status_client(agent)
        t = self.wait_ready(agent, subscribers=1)
        self.assertEqual(t['failover']['pair'], 'unknown', brief(t))
        g0 = t['generation']
        self.primary.stop('immediate')
        self.wait_status(status, self.switched('secondary', g0, 1),
                         timeout=15, what='failover')
        self.primary.start()
        mark = rec.mark()
        self.wait_status(
            status, lambda t: server(t, 'primary')['health'] == 'up' and
            'both servers writable, and whether they are one replicated '
            'database is unknown' in (t['failover']['last_error'] or ''),
            timeout=20, what='status: why the agent does not fail back')
        self.assertEqual([masked(u) for u in rec.updates()[mark:]], [])
        self.ctl(agent, 'failback', TARGET, '--force')
        self.wait_status(status, self.switched('primary', g0 + 1, 1),
                         timeout=10, what='forced failback')


if __name__ == '__main__':
    main()
