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
    failback needs --force; two independent clusters fail back as before,
    with a warning in status.

Built on test_failover.TwoClusters (its helpers, its settings); the
replicated pair comes from harness.PgCluster.replica().
"""

import re
import time

import harness as h
from common import main
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


if __name__ == '__main__':
    main()
