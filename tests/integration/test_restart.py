"""Agent restarts with subscribers attached, and many subscribers at once."""

import os
import signal
import stat
import subprocess
import time

import harness as h
from common import ClusterTest, fresh_password, main


class Restart(ClusterTest):

    def test_agent_restart_is_invisible_to_subscribers(self):
        self.write_url(self.password)
        agent = self.start_agent()
        sub = self.start_subscriber(agent)
        threaded = self.start_subscriber(agent, args=['--thread'])
        for s in (sub, threaded):
            s.wait_line(r'^connect 1 ok$')

        for kill in (True, False):
            agent.restart(kill=kill)
            # Both come back, subscribe again and (same value) ack quietly.
            st = h.wait_for(lambda: (s := h.target_status(agent,
                                                          'DATABASE_URL'))
                            ['acked'] == 2 and s,
                            what='both subscribers back and acked')
            self.assertEqual(st['subscribers'], 2)
            self.assertEqual(st['generation'], 1)
            for s in (sub, threaded):
                self.assertEqual(len(s.updates()), 1, s.lines())

        # A rotation after the restarts reaches both.
        new, _ = self.rotate()
        for s in (sub, threaded):
            m = s.wait_line(r'^update DATABASE_URL 2 (.*)$')
            self.assertEqual(m.group(1), self.url(new))
            s.wait_line(r'^connect 2 ok$')

    def test_value_changed_while_agent_was_down(self):
        self.write_url(self.password)
        agent = self.start_agent()
        sub = self.start_subscriber(agent)
        sub.wait_line(r'^connect 1 ok$')
        agent.kill()
        new, _ = self.rotate()
        agent.start()
        m = sub.wait_line(r'^update DATABASE_URL 1 (.*)$', timeout=10)
        self.assertEqual(m.group(1), self.url(new))
        sub.wait_line(r'^connect 1 ok$')
        h.wait_for(lambda: h.target_status(agent, 'DATABASE_URL')
                   ['acked'] == 1, what='ack after restart')

    def test_many_subscribers(self):
        n_c, n_py = 40, 40
        self.write_url(self.password)
        agent = self.start_agent()
        subs = [self.start_subscriber(agent, args=['--no-connect'])
                for _ in range(n_c)]
        clients = []
        for _ in range(n_py):
            c = agent.client()
            self.addCleanup(c.close)
            c.subscribe(['DATABASE_URL'])
            u = c.next_update()
            c.ack('DATABASE_URL', u['generation'])
            clients.append(c)
        h.wait_for(lambda: h.target_status(agent, 'DATABASE_URL')
                   ['acked'] == n_c + n_py, what='all acked generation 1')

        new, t0 = self.rotate()
        for c in clients:
            u = c.next_update(target='DATABASE_URL')
            self.assertEqual((u['generation'], u['conninfo']),
                             (2, self.url(new)))
            c.ack('DATABASE_URL', 2)
        for s in subs:
            s.wait_line(r'^update DATABASE_URL 2 ')
        st = h.wait_for(lambda: (s := h.target_status(agent, 'DATABASE_URL'))
                        ['acked'] == n_c + n_py and s, what='all acked 2')
        print(f'{n_c + n_py} subscribers acked within '
              f'{(time.monotonic() - t0) * 1000:.0f} ms of the rename')
        self.assertEqual(st['subscribers'], n_c + n_py)
        self.assertEqual(st['lagging'], [])



class LastGood(ClusterTest):
    """The last good value survives a restart: kept in the state
    directory, used at start while the files' value fails."""

    def setUp(self):
        super().setUp()
        self.state = os.path.join(self.tmp, 'state')

    def start(self, *args):
        return self.start_agent('--state-dir', self.state, *args)

    def saved_file(self):
        return os.path.join(self.state, 'last-good')

    def test_wrong_password_then_restart(self):
        self.write_url(self.password)
        agent = self.start()
        t = h.wait_for(lambda: (t := h.target_status(agent, 'DATABASE_URL'))
                       ['valid'] and t, what='first value')
        self.assertEqual(t['source'], 'files')
        h.wait_for(lambda: os.path.exists(self.saved_file()),
                   what='state written')
        st = os.stat(self.saved_file())
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        # Without a key the file holds the value as it is (mode 0600).
        with open(self.saved_file(), 'rb') as f:
            self.assertIn(self.password.encode(), f.read())

        bad = fresh_password('wrong')
        self.write_url(bad)
        h.wait_for(lambda: h.target_status(agent, 'DATABASE_URL')['state']
                   == 'failed', what='the wrong value refused')
        for kill in (True, False):
            with self.subTest(kill=kill):
                agent.restart(kill=kill)
                sub = self.start_subscriber(agent)
                m = sub.wait_line(r'^update DATABASE_URL 1 (.*)$',
                                  timeout=10)
                self.assertEqual(m.group(1), self.url())
                sub.wait_line(r'^connect 1 ok$')
                t = h.target_status(agent, 'DATABASE_URL')
                self.assertEqual((t['source'], t['state'], t['valid']),
                                 ('saved', 'failed', True))
                self.assertIn('password authentication failed', t['error'])
                self.assertEqual(t['servers'][0]['source'], 'saved')
                self.assertNotIn(bad, str(t))
                self.assertNotIn(self.password, str(t))
                agent.wait_log(r'using the value validated before the '
                               r'restart, as the files\' value does not '
                               r'validate')
                sub.close()
        # The value in the file becomes right: it takes over.
        self.cluster.set_password(self.role, bad)
        agent.send_signal(signal.SIGHUP)
        t = h.wait_for(lambda: (t := h.target_status(agent, 'DATABASE_URL'))
                       ['generation'] == 2 and t, what='the fixed value')
        self.assertEqual((t['source'], t['state']), ('files', 'ok'))

        def saved():
            with open(self.saved_file(), 'rb') as f:
                return f.read()
        h.wait_for(lambda: bad.encode() in saved(), what='new value saved')
        self.assertNotIn(self.password.encode(), saved())

    def test_file_gone_then_restart(self):
        """No value in the files at all (the file removed, or broken):
        the saved one is used."""
        self.write_url(self.password)
        agent = self.start()
        h.wait_for(lambda: os.path.exists(self.saved_file()),
                   what='state written')
        for broken in ('remove', 'syntax'):
            with self.subTest(broken):
                if broken == 'remove':
                    os.unlink(self.env_path)
                else:
                    self.write_env('DATABASE_URL="unterminated\n')
                agent.restart()
                t = h.wait_for(lambda: (t := h.target_status(
                    agent, 'DATABASE_URL'))['valid'] and t,
                    what='saved value in force')
                self.assertEqual((t['source'], t['generation']),
                                 ('saved', 1))
                self.assertTrue(self.cluster.can_connect(self.url()))

    def test_same_value_revalidated(self):
        """The file still holds the saved value but the server is down at
        start: the value is in force as before the restart, and once the
        server is back and the value validates, nothing new is published
        (source becomes files)."""
        self.write_url(self.password)
        agent = self.start()
        h.wait_for(lambda: os.path.exists(self.saved_file()),
                   what='state written')
        agent.stop()
        # fast: the harness's clusters commit asynchronously, and an
        # immediate stop could lose this test's role.
        self.cluster.stop(mode='fast')
        try:
            agent.start()
            t = h.wait_for(lambda: (t := h.target_status(
                agent, 'DATABASE_URL'))['valid'] and t, timeout=15,
                what='saved value in force')
            self.assertEqual((t['source'], t['generation']), ('saved', 1))
        finally:
            self.cluster.start()
        t = h.wait_for(lambda: (t := h.target_status(agent, 'DATABASE_URL'))
                       ['source'] == 'files' and t, timeout=15,
                       what='validated again')
        self.assertEqual((t['generation'], t['state']), (1, 'ok'))

    def test_sealed_with_the_agent_key(self):
        key = os.path.join(self.tmp, 'agent.key')
        r = subprocess.run([os.environ['DBSWAPCTL'], 'keygen', '--out', key],
                           capture_output=True, check=True)
        self.write_url(self.password)
        agent = self.start('--key', key)
        h.wait_for(lambda: os.path.exists(self.saved_file()),
                   what='state written')
        with open(self.saved_file(), 'rb') as f:
            data = f.read()
        self.assertTrue(data.startswith(b'DBSWAP'))
        self.assertNotIn(self.password.encode(), data)
        self.write_url(fresh_password('wrong'))
        agent.restart()
        t = h.wait_for(lambda: (t := h.target_status(agent, 'DATABASE_URL'))
                       ['valid'] and t, timeout=10, what='saved value')
        self.assertEqual(t['source'], 'saved')
        self.assertIsNone(h._status(agent, 5)['agent']['state_error'])

    def test_untrusted_state_file_is_ignored(self):
        """A state file others could have written is not believed."""
        os.makedirs(self.state)
        self.write_url(self.password)
        agent = self.start()
        h.wait_for(lambda: os.path.exists(self.saved_file()),
                   what='state written')
        agent.stop()
        os.chmod(self.saved_file(), 0o666)
        self.write_url(fresh_password('wrong'))
        agent.start()
        st = h.wait_for(lambda: (s := h._status(agent, 5))['targets'][0]
                        ['state'] == 'failed' and s, what='failed')
        self.assertFalse(st['targets'][0]['valid'])
        self.assertEqual(st['agent']['state_dir'], self.state)
        self.assertRegex(st['agent']['state_error'],
                         r'is ignored: it must be owned by uid \d+ and not '
                         r'accessible by group or others')


if __name__ == '__main__':
    main()
