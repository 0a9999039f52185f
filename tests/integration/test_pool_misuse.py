"""libdbswap's pool misused (issue 17, "never corrupt, never hand one
connection to two threads"), against a real agent and server: fork() with
pools and clients alive, connections released twice or to the wrong pool,
NULL arguments, a pool freed while threads wait in acquire, and the
shutdown(2) of a busy old connection at the drain deadline.

The app is pool-misuse ($DBSWAP_POOL_MISUSE, tests/helpers/pool-misuse.c):
it prints "ok NAME" or "FAIL NAME: why" per check and "rotate" when the
value must change; the sanitizer stage runs it under ASan.
"""

import os
import subprocess
import threading
import time

import harness as h
from common import ClusterTest, main

TARGET = 'DATABASE_URL'


def _pause(test):
    test.addCleanup(test.cluster.resume)
    test.cluster.pause()
    # A pool that waits for the server for ever would wait for the test:
    # the server comes back on its own, and the wait shows as a failure.
    timer = threading.Timer(20 * h.TIMEOUT_SCALE, test.cluster.resume)
    timer.start()
    test.addCleanup(timer.cancel)


def _stop(test):
    test.addCleanup(lambda: test.cluster.running or test.cluster.start())
    test.cluster.stop('fast')


# What pool-misuse may ask the test to do to the server.
SERVER_ACTIONS = {
    'pause': _pause,
    'resume': lambda test: test.cluster.resume(),
    'stop': _stop,
    'start': lambda test: test.cluster.start(),
}


class PoolMisuse(ClusterTest):

    def run_case(self, case, expect):
        """Runs pool-misuse CASE against a fresh agent, rotating the
        password whenever it asks; asserts that every check in expect
        passed and none failed."""
        self.write_url(self.password)
        agent = self.start_agent()
        agent.wait_log(rf'{TARGET}: generation 1 published', timeout=10)
        with subprocess.Popen(
                [os.environ['DBSWAP_POOL_MISUSE'], case, agent.sock, TARGET],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True) as proc:
            self.addCleanup(proc.kill)
            err = []
            t = threading.Thread(
                target=lambda: err.append(proc.stderr.read()))
            t.start()
            lines = []
            generation = 1
            for line in proc.stdout:
                line = line.rstrip('\n')
                lines.append(line)
                if line == 'rotate':
                    self.rotate()
                    generation += 1
                elif line.split()[0] in ('wait-ack', 'wait-unacked'):
                    word, _, name = line.partition(' ')
                    check = self.wait_acked if word == 'wait-ack' \
                        else self.check_unacked
                    lines.append(check(agent, generation, name or 'leak'))
                    proc.stdin.write('\n')
                    proc.stdin.flush()
                elif line in SERVER_ACTIONS:
                    SERVER_ACTIONS[line](self)
                    proc.stdin.write('\n')
                    proc.stdin.flush()
            rc = proc.wait(timeout=60 * h.TIMEOUT_SCALE)
            t.join()
        report = '\n'.join(lines) + '\n-- stderr:\n' + ''.join(err)[-3000:]
        self.assertEqual([l for l in lines if l.startswith('FAIL')], [],
                         report)
        passed = {l[3:] for l in lines if l.startswith('ok ')}
        self.assertLessEqual(set(expect), passed, report)
        self.assertEqual((rc, lines[-1] if lines else None), (0, 'done'),
                         report)

    def wait_acked(self, agent, generation, name):
        """'ok NAME-acked' once the agent shows generation acked by every
        subscriber, else 'FAIL NAME-acked: ...' after 10 s."""
        with agent.client(name='test-status') as status:
            try:
                h.wait_for(lambda: (lambda t: t['generation'] == generation
                                    and t['subscribers'] == t['acked'] > 0)
                           (h.target_status(status, TARGET)),
                           timeout=10, interval=0.02,
                           what=f'generation {generation} acked')
                return f'ok {name}-acked'
            except Exception as e:
                return f'FAIL {name}-acked: {e}'

    def check_unacked(self, agent, generation, name):
        """'ok NAME-not-acked' when the agent, which published generation
        to the one subscriber, still shows it not acked half a second
        later (the pool had it: it switched)."""
        with agent.client(name='test-status') as status:
            t = h.target_status(status, TARGET)
            if (t['generation'], t['subscribers']) != (generation, 1):
                return f'FAIL {name}-not-acked: status {t}'
            time.sleep(0.5)
            t = h.target_status(status, TARGET)
            if (t['generation'], t['acked']) != (generation, 0):
                return (f'FAIL {name}-not-acked: generation {generation} '
                        f'acked while a connection of the old value is '
                        f'held: {t}')
            return f'ok {name}-not-acked'

    def test_fork(self):
        """In a child, the parent's pool and client refuse every call
        with ECHILD (no hang on a lock the parent held at the fork), and
        freeing them ends no session of the parent's and stops none of
        its threads."""
        self.run_case('fork', ['fork-child-never-hangs',
                               'fork-child-calls-fail-with-ECHILD',
                               'fork-parent-session-intact',
                               'fork-parent-follows-rotation',
                               'fork-parent-queries'])

    def test_misuse(self):
        self.run_case('misuse', [
            'double-release-refused', 'double-release-not-lent-twice',
            'double-release-repeated', 'double-release-across-threads',
            'double-release-across-threads-not-lent-twice',
            'wrong-pool-refused', 'wrong-pool-connection-intact',
            'foreign-connection-refused', 'null-acquire', 'null-release',
            'null-set-name', 'null-fd', 'null-dispatch', 'null-start',
            'null-subscribe', 'null-ack', 'null-ack-instance',
            'null-update', 'null-mask', 'null-pool-new',
            'free-while-waiting-cancels'])

    def test_shutdown_uses_its_own_descriptor(self):
        self.run_case('shutdown', ['shutdown-switch',
                                   'shutdown-at-drain-deadline',
                                   'shutdown-of-its-own-descriptor',
                                   'shutdown-fails-the-query'])


    def test_leaked_connection_does_not_hold_the_ack(self):
        """Issue 17: one connection never released kept the pool from
        acking (and `dbswapctl set --wait` from returning) even after its
        socket was shut down at the drain deadline."""
        self.run_case('leak', ['leak-switch', 'leak-acked', 'leak-shut-down'])

    def test_ack_waits_for_the_held_connection(self):
        """A connection of the old value held across a rotation keeps its
        session, new acquires get new backends, and the generation is
        acked only once it is released."""
        self.run_case('held', ['held-switch', 'held-not-acked',
                               'held-keeps-session', 'held-new-backend',
                               'held-acked'])

    def test_each_switch_keeps_its_own_drain_deadline(self):
        self.run_case('drain-each', ['drain-each-switches',
                                     'drain-each-own-deadline'])


    def test_hung_server_holds_no_thread(self):
        """Issue 17: a release (its ROLLBACK) blocked 13.5 s on a hung
        server, and check_on_borrow as long: both are bounded by the
        connect timeout now."""
        self.run_case('hung', ['hung-release-bounded',
                               'hung-check-on-borrow-bounded'])

    def test_outage(self):
        """Issue 17: after an outage a server back at 29 s was used at
        34 s (the backoff had grown to 30 s), the log had a line per
        failed acquire, and acquire's error did not tell a missing
        server from an exhausted pool."""
        self.run_case('outage', ['outage-exhausted-is-ETIMEDOUT',
                                 'outage-no-server-is-ENOTCONN',
                                 'outage-logs-once',
                                 'outage-back-within-a-second'])


    def test_connections_as_plain_libpq_gives_them(self):
        """Issue 17: the pool's connections had VERBOSE errors (SQLSTATE
        and LOCATION lines in the app's error messages)."""
        self.run_case('plain', ['plain-error-verbosity',
                                'plain-error-message',
                                'plain-notice-processor'])

    def test_abi_grows_and_old_binaries_work(self):
        """Issue 17: the config and stats had no size field (a new field
        broke existing binaries) and 0 always meant "default" (no
        min_size 0, no zero timeout).  A program built against version
        0.1 binds dbswap_pool_new@DBSWAP_0.1 and still works."""
        self.run_case('abi', ['abi-v01-new', 'abi-v01-stats',
                              'abi-size-zero-refused',
                              'abi-unknown-fields-refused',
                              'abi-bigger-struct', 'abi-config-get',
                              'abi-zero-acquire-timeout',
                              'abi-zero-min-size', 'abi-stats-short-struct'])

    def test_session_reset_and_hooks(self):
        """Issue 17: a SET, a prepared statement or an advisory lock
        leaked to the next borrower; no init query, no hooks, no way to
        discard a bad connection."""
        self.run_case('reset', [
            'reset-init-query-and-after-connect', 'hook-userdata',
            'reset-after-set', 'reset-after-prepare',
            'reset-after-advisory-lock', 'reset-not-after-reads',
            'hook-after-release-closes', 'hook-before-acquire-closes',
            'discard-returns-0', 'discard-twice-einval', 'discard-closes',
            'reset-query-empty-keeps-state', 'reset-always'])

    def test_idle_connections_checked_and_kept_alive(self):
        """Issue 17: an idle connection the server had ended was handed
        out (the app's first query failed); no TCP keepalives."""
        self.run_case('idle-check', ['keepalives-on',
                                     'idle-check-terminated',
                                     'idle-check-replaces-dead'])

    def test_lifetime_jitter(self):
        """Issue 17: connections opened together expired together."""
        self.run_case('jitter', ['lifetime-jitter-spreads'])

    def test_graceful_close_and_wait_metrics(self):
        self.run_case('close', ['stats-acquire-wait', 'close-waits-for-busy',
                                'close-cancels-waiters',
                                'close-refuses-acquires', 'close-closes-all',
                                'close-timeout-shuts-down',
                                'close-release-after'])

    def test_close_and_free_during_a_slow_hook(self):
        """Found by review: dbswap_pool_free() freed the pool under a
        fast-path acquire still in its before_acquire hook (ASan: use
        after free), and dbswap_pool_close() missed the wake-up of a
        connection closed by a failed handout (it returned at its
        timeout, or never with -1)."""
        self.run_case('close-races', ['free-during-hook-cancels',
                                      'close-wakes-on-refused-handout',
                                      'close-during-hook-cancels'])

    def test_refused_target_fails_at_once(self):
        """Issue 17: an agent's refusal of the target did not reach the
        pool: 5 s timeouts for ever, ENOENT."""
        self.run_case('refused', ['refused-unknown-target-enxio',
                                  'refused-in-stats'])


if __name__ == '__main__':
    main()
