"""Rotation end to end: a credential written into the env file reaches
subscribers, validated against a real PostgreSQL first."""

import json
import re
import subprocess
import os
import time

import harness as h
from common import ClusterTest, fresh_password, main


class Rotation(ClusterTest):

    def test_rotation_reaches_subscriber_who_can_connect(self):
        self.write_url(self.password)
        agent = self.start_agent()
        sub = self.start_subscriber(agent)
        sub.wait_line(r'^update DATABASE_URL 1 ')
        sub.wait_line(r'^connect 1 ok$')

        new, t0 = self.rotate()
        m = sub.wait_line(r'^update DATABASE_URL 2 (.*)$')
        latency = time.monotonic() - t0
        self.assertEqual(m.group(1), self.url(new))
        sub.wait_line(r'^connect 2 ok$')
        print(f'rename -> subscriber update: {latency * 1000:.1f} ms')

        st = h.wait_for(lambda: (s := h.target_status(agent, 'DATABASE_URL'))
                        ['acked'] == 1 and s, what='the ack')
        self.assertEqual(st['generation'], 2)
        self.assertEqual(st['state'], 'ok')
        self.assertTrue(st['valid'])
        self.assertEqual(st['subscribers'], 1)
        self.assertIsNone(st['error'])
        self.assertNotIn(new, st['conninfo'])
        self.assertIn(':****@', st['conninfo'])

    def test_value_equal_to_current_publishes_nothing(self):
        self.write_url(self.password)
        agent = self.start_agent()
        sub = self.start_subscriber(agent)
        sub.wait_line(r'^connect 1 ok$')
        # Same value, different bytes around it: a comment, a blank line.
        self.write_env(f'# rewritten\n\nDATABASE_URL={self.url()}\n')
        # reload answers after re-reading: the rewrite has been seen.
        self.ctl(agent, 'reload')
        self.assertEqual(h.target_status(agent, 'DATABASE_URL')
                         ['generation'], 1)
        self.assertEqual(len(sub.updates()), 1)

    def test_password_changed_on_server_after_the_file(self):
        """The file may land before the server's ALTER ROLE: the agent
        retries with backoff and publishes once the server agrees."""
        self.write_url(self.password)
        agent = self.start_agent()
        sub = self.start_subscriber(agent)
        sub.wait_line(r'^connect 1 ok$')

        new = fresh_password()
        self.write_url(new)
        h.wait_for(lambda: h.target_status(agent, 'DATABASE_URL')
                   ['state'] == 'failed', what='the first failed attempt')
        self.assertEqual(h.target_status(agent, 'DATABASE_URL')
                         ['generation'], 1)
        self.cluster.set_password(self.role, new)
        m = sub.wait_line(r'^update DATABASE_URL 2 (.*)$', timeout=10)
        self.assertEqual(m.group(1), self.url(new))
        sub.wait_line(r'^connect 2 ok$')

    def test_dbswapctl_watch_status_reload(self):
        self.write_url(self.password)
        agent = self.start_agent()
        watch = subprocess.Popen(
            [os.environ['DBSWAPCTL'], '--socket', agent.sock, 'watch',
             'DATABASE_URL', '--count', '2'],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(watch.kill)
        h.wait_for(lambda: h.target_status(agent, 'DATABASE_URL')
                   ['acked'] == 1, what='watch to ack generation 1')
        new, _ = self.rotate()
        out, err = watch.communicate(timeout=10)
        self.assertEqual(watch.returncode, 0, err)
        lines = out.splitlines()
        self.assertEqual(len(lines), 2, out)
        self.assertRegex(lines[0], r'^DATABASE_URL generation 1 \(rotation\)'
                         r': postgresql://app_\w+:\*\*\*\*@127\.0\.0\.1:\d+/')
        self.assertRegex(lines[1], r'^DATABASE_URL generation 2 ')
        self.assertNotIn(new, out)
        self.assertNotIn(self.password, out)

        # --show-secret prints the real value
        r = self.ctl(agent, 'watch', 'DATABASE_URL', '--count', '1',
                     '--show-secret')
        self.assertIn(self.url(new), r.stdout)

        r = self.ctl(agent, 'status', '--json')
        st = json.loads(r.stdout)
        self.assertEqual(st['type'], 'status')
        t = st['targets'][0]
        self.assertEqual((t['name'], t['generation'], t['state']),
                         ('DATABASE_URL', 2, 'ok'))
        self.assertEqual(st['files'][0]['path'], self.env_path)
        self.assertEqual(st['files'][0]['state'], 'ok')
        self.assertNotIn(new, r.stdout)

        r = self.ctl(agent, 'status')
        self.assertIn('DATABASE_URL', r.stdout)
        self.assertIn('generation:  2', r.stdout)
        self.assertNotIn(new, r.stdout)

        # reload re-reads a file even if inotify never said so
        r = self.ctl(agent, 'reload')
        self.assertIn('reloaded', r.stdout)

        r = self.ctl(agent, 'watch', 'NOPE', check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('no target NOPE', r.stderr)

        r = subprocess.run([os.environ['DBSWAPCTL'], '--socket',
                            os.path.join(self.tmp, 'absent.sock'), 'status'],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 3)
        self.assertIn('absent.sock', r.stderr)

    def test_layers_and_expansion(self):
        """Process environment, then each file in order; ${VAR} reads
        earlier definitions and lower layers."""
        base = os.path.join(self.tmp, 'base.env')
        h.write_rename(base, f'DB_USER={self.role}\n'
                             f'DB_PASS={self.password}\n')
        port = self.cluster.port
        self.write_env('DATABASE_URL=postgresql://${DB_USER}:${DB_PASS}@'
                       '${DB_HOST:-127.0.0.1}:' + f'{port}/postgres\n')
        agent = self.start_agent(env_files=[base, self.env_path],
                                 env={'DB_HOST': '127.0.0.1'})
        sub = self.start_subscriber(agent)
        m = sub.wait_line(r'^update DATABASE_URL 1 (.*)$')
        self.assertEqual(m.group(1), self.url())

        # Changing the lower file changes the expansion in the upper one.
        new = fresh_password()
        self.cluster.set_password(self.role, new)
        h.write_rename(base, f'DB_USER={self.role}\nDB_PASS={new}\n')
        m = sub.wait_line(r'^update DATABASE_URL 2 (.*)$')
        self.assertEqual(m.group(1), self.url(new))
        sub.wait_line(r'^connect 2 ok$')


if __name__ == '__main__':
    main()
