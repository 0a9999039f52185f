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

import harness as h
from common import ClusterTest, main

TARGET = 'DATABASE_URL'


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
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True) as proc:
            self.addCleanup(proc.kill)
            err = []
            t = threading.Thread(
                target=lambda: err.append(proc.stderr.read()))
            t.start()
            lines = []
            for line in proc.stdout:
                line = line.rstrip('\n')
                lines.append(line)
                if line == 'rotate':
                    self.rotate()
            rc = proc.wait(timeout=60 * h.TIMEOUT_SCALE)
            t.join()
        report = '\n'.join(lines) + '\n-- stderr:\n' + ''.join(err)[-3000:]
        self.assertEqual([l for l in lines if l.startswith('FAIL')], [],
                         report)
        passed = {l[3:] for l in lines if l.startswith('ok ')}
        self.assertLessEqual(set(expect), passed, report)
        self.assertEqual((rc, lines[-1] if lines else None), (0, 'done'),
                         report)

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


if __name__ == '__main__':
    main()
