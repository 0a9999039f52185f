"""Agent restarts with subscribers attached, and many subscribers at once;
the pool's acks across a restart, against a scripted agent."""

import os
import signal
import socket
import stat
import struct
import subprocess
import time

import msgpack

import harness as h
from common import ClusterTest, PoolLoad, fresh_password, main


class ScriptedAgent:
    """The agent's end of the protocol, played by the test step by step:
    a listening socket, one connection at a time, blocking calls with
    timeouts.  For cases the real agent cannot be made to reach on cue."""

    def __init__(self, path):
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(4)
        self.sock = None
        self.buf = b''

    def accept(self, timeout=5):
        self.listener.settimeout(timeout * h.TIMEOUT_SCALE)
        self.sock, _ = self.listener.accept()
        self.buf = b''

    def drop(self):
        """The agent "restarts": the connection goes."""
        self.sock.close()
        self.sock = None

    def send(self, msg):
        body = msgpack.packb(msg)
        self.sock.sendall(struct.pack('>I', len(body)) + body)

    def recv(self, timeout):
        """The next message, or None when nothing came within timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack('>I', self.buf[:4])
                if len(self.buf) >= 4 + n:
                    m = msgpack.unpackb(self.buf[4:4 + n], raw=False)
                    self.buf = self.buf[4 + n:]
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not d:
                raise h.ConnectionClosed('the client closed')
            self.buf += d

    def hello(self, instance):
        m = self.recv(5 * h.TIMEOUT_SCALE)
        assert m and m['type'] == 'hello', m
        self.send({'type': 'hello', 'id': m['id'], 'version': m['version'],
                   'name': 'scripted', 'pid': os.getpid(),
                   'instance': instance})
        return m

    def close(self):
        if self.sock:
            self.sock.close()
        self.listener.close()


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

    def test_pool_never_acks_a_previous_agents_generation(self):
        """A pool switched to generation 2 of agent A and still drains a
        busy connection of generation 1 when A restarts as B, whose own
        generation 2 is another value (that fails to connect here, so the
        pool stays on A's).  When the drain ends the pool is done with
        A's generation 2: that ack names A and is not sent to B, which
        would count it for its own generation 2.  Before instances the
        pool sent "ack generation 2" to B."""
        one, two = 'app_one_' + self.role[-6:], 'app_two_' + self.role[-6:]
        pw = fresh_password()
        self.cluster.create_role(one, pw)
        self.cluster.create_role(two, pw)
        v1, v2 = self.url(pw, one), self.url(pw, two)
        bad = self.url('wrong-' + pw, one)
        sock = os.path.join(self.tmp, 'scripted.sock')
        agent = ScriptedAgent(sock)
        self.addCleanup(agent.close)
        inst_a, inst_b = 'a' * 16, 'b' * 16
        load = PoolLoad(sock, ['--threads', 1, '--hold', 2500, '--max', 2,
                               '--min', 1, '--pause-ms', 0])
        self.addCleanup(load.close)

        agent.accept()
        self.assertEqual(agent.hello(inst_a)['version'], 2)
        sub = agent.recv(5)
        agent.send({'type': 'update', 'target': 'DATABASE_URL',
                    'generation': 1, 'conninfo': v1, 'instance': inst_a})
        agent.send({'type': 'ok', 'id': sub['id']})
        m = agent.recv(10 * h.TIMEOUT_SCALE)
        self.assertEqual((m['type'], m['generation'], m.get('instance')),
                         ('ack', 1, inst_a))
        # The thread holds a connection on value one (2.5 s each).
        load.wait_progress(lambda p: p['queries'] >= 0 and p['size'] >= 1,
                           what='a connection')
        time.sleep(0.3)
        agent.send({'type': 'update', 'target': 'DATABASE_URL',
                    'generation': 2, 'conninfo': v2, 'instance': inst_a})
        load.wait_progress(lambda p: p['generation'] == 2 and p['old'] >= 1,
                           what='the switch, one connection draining')

        agent.drop()
        agent.accept()
        agent.hello(inst_b)
        got = []
        drained = None
        deadline = time.monotonic() + 8 * h.TIMEOUT_SCALE
        while time.monotonic() < deadline:
            m = agent.recv(0.1)
            if m is None:
                p = load.progress()
                if drained is None and p and p['old'] == 0:
                    drained = time.monotonic()
                if drained and time.monotonic() - drained > 0.5:
                    break
                continue
            got.append(m)
            if m['type'] == 'subscribe':
                # B's generation 2: a value the pool cannot connect with.
                agent.send({'type': 'update', 'target': 'DATABASE_URL',
                            'generation': 2, 'conninfo': bad,
                            'instance': inst_b})
                agent.send({'type': 'ok', 'id': m['id']})
        self.assertIsNotNone(drained, 'the old connection never drained; '
                             f'{load.describe()}')
        acks = [m for m in got if m['type'] == 'ack']
        nacks = [m for m in got if m['type'] == 'nack']
        self.assertEqual(acks, [], 'an ack reached the restarted agent')
        # The pool told B about B's generation 2, with B's instance.
        self.assertTrue(nacks, got)
        self.assertEqual({(m['generation'], m['instance']) for m in nacks},
                         {(2, inst_b)})
        rc, summary = load.stop()
        self.assertEqual(summary['generation'], 2)

    def test_set_wait_follows_a_restarted_agent(self):
        """dbswapctl set --wait, waiting for an app that has not acked,
        when the agent restarts: it reconnects, sees the new instance and
        follows the new run (whose generation 1 is the value it wrote)
        until every subscriber of that run acked.  Before, it exited with
        "lost the connection" (status 3)."""
        self.write_url(self.password)
        agent = self.start_agent()
        sub = self.start_subscriber(agent)
        sub.wait_line(r'^connect 1 ok$')
        lagger = agent.client(name='lagger')
        self.addCleanup(lagger.close)
        self.assertEqual(lagger.subscribe('DATABASE_URL')['type'], 'ok')
        lagger.next_update()  # and never acks
        new = fresh_password()
        self.cluster.set_password(self.role, new)
        ctl = subprocess.Popen(
            [os.environ['DBSWAPCTL'], '--socket', agent.sock, 'set',
             self.env_path, 'DATABASE_URL=-', '--wait=30'],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: ctl.poll() is None and ctl.kill())
        ctl.stdin.write(self.url(new) + '\n')
        ctl.stdin.close()
        ctl.stdin = None  # for communicate()
        h.wait_for(lambda: (t := h.target_status(agent, 'DATABASE_URL'))
                   ['generation'] == 2 and t['acked'] == 1,
                   what='generation 2 acked by the subscriber alone')
        old = h.Client(agent.sock)
        old.hello()
        old_instance = old.instance
        old.close()
        agent.restart()
        out, err = ctl.communicate(timeout=40 * h.TIMEOUT_SCALE)
        self.assertEqual(ctl.returncode, 0, out + err)
        self.assertRegex(out, r'the agent restarted \(instance [0-9a-f]{16}, '
                         r'was %s\)' % old_instance)
        self.assertIn('DATABASE_URL: 1 of 1 subscriber(s) acked generation 1',
                      out)
        self.assertIn('done: every subscriber uses the new value', out)
        sub.wait_line(r'^connect 2 ok$')

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
                self.assertEqual((t['source'], t['valid']),
                                 ('saved', True))
                # failed, or validating again (retried with backoff)
                self.assertIn(t['state'], ('failed', 'validating'))
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

    def test_saved_value_kept_while_its_check_runs(self):
        """Two targets; after a restart one's value hangs in its first
        validation while the other's passes and is saved: the save must
        keep the first one's saved value, or a second restart loses it."""
        hang = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(hang.close)
        hang.bind(('127.0.0.1', 0))
        hang.listen(16)  # never accepted: connects, then no answer
        port = hang.getsockname()[1]
        other = fresh_password('other')
        self.cluster.create_role(self.role + '_o', other)
        other_url = self.cluster.url(self.role + '_o', other)
        settings = 'DB_CONNECTION_TIMEOUT=1500\n'
        self.write_env(settings + f'DATABASE_URL={self.url()}\n'
                       f'OTHER_URL={other_url}\n')
        agent = self.start('--target', 'DATABASE_URL', '--target',
                           'OTHER_URL')
        h.wait_for(lambda: os.path.exists(self.saved_file()) and
                   self.password.encode() in open(self.saved_file(),
                                                  'rb').read() and
                   other.encode() in open(self.saved_file(), 'rb').read(),
                   what='both values saved')
        hung = (f'postgresql://{self.role}:{fresh_password("hung")}'
                f'@127.0.0.1:{port}/postgres')
        self.write_env(settings + f'DATABASE_URL={hung}\n'
                       f'OTHER_URL={other_url}\n')
        for _ in range(2):
            agent.restart()
            # OTHER_URL validates (and is saved) while DATABASE_URL's
            # first check hangs; then DATABASE_URL falls back.
            t = h.wait_for(lambda: (t := h.target_status(
                agent, 'DATABASE_URL'))['valid'] and t, timeout=10,
                what='the saved value in force')
            self.assertEqual((t['source'], t['generation']), ('saved', 1))
            self.assertIn('no answer within 1500 ms', t['error'])
            with open(self.saved_file(), 'rb') as f:
                self.assertIn(self.password.encode(), f.read())

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
