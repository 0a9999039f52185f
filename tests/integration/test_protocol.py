"""The wire protocol as ipc/PROTOCOL.md specifies it, spoken by the Python
client against the real agent: limits, violations and error codes, nacks
and pool settings."""

import os
import re

import msgpack

import harness as h
from common import ClusterTest, main


def padded(msg, size):
    """msg with a "pad" string making its msgpack body exactly size bytes."""
    n = size - len(msgpack.packb(dict(msg, pad='')))
    for extra in range(0, 8):  # the str header grows with the length
        body = msgpack.packb(dict(msg, pad='x' * (n - extra)))
        if len(body) == size:
            return body
    raise AssertionError('cannot pad to size')


class Protocol(ClusterTest):

    def setUp(self):
        super().setUp()
        self.write_url(self.password)
        self.agent = self.start_agent()
        h.wait_for(lambda: h.target_status(self.agent, 'DATABASE_URL')
                   ['valid'], what='a published value')

    def raw(self):
        c = h.Client(self.agent.sock)
        self.addCleanup(c.close)
        return c

    def hello(self):
        c = self.raw()
        r = c.hello(name='proto-test')
        self.assertEqual(r['type'], 'hello')
        return c

    def test_requester_dropped_by_its_own_request(self):
        """reconnect publishes to every subscriber, the requester too: one
        that closed at once is dropped while its own request runs, and the
        agent must not touch it afterwards (it replied on freed memory
        once; ASan and valgrind runs of this suite catch a relapse)."""
        for _ in range(5):
            c = self.hello()
            c.subscribe(['DATABASE_URL'])
            gen = c.next_update()['generation']
            c.send({'type': 'reconnect', 'target': 'DATABASE_URL', 'id': 7})
            c.close()
            st = h.wait_for(
                lambda: (s := h.target_status(self.agent, 'DATABASE_URL'))
                ['generation'] > gen and s, what='the reconnect published')
            self.assertTrue(self.agent.running, self.agent.log())
            self.assertTrue(st['valid'])
        self.assertRegex(self.agent.log(), r'asked to reconnect')

    def assert_dropped_with(self, c, code):
        m = c.recv(timeout=5)
        self.assertEqual((m['type'], m['code']), ('error', code), m)
        c.wait_closed(timeout=5)
        # Everyone else is still served.
        self.assertTrue(h.target_status(self.agent, 'DATABASE_URL')['valid'])

    def test_hello_reply(self):
        c = self.raw()
        r = c.hello(name='proto-test')
        self.assertEqual(r['version'], 2)
        self.assertTrue(r['name'].startswith('dbswapd '))
        self.assertEqual(r['pid'], self.agent.pid)
        # The instance: 16 lowercase hex digits, the same in status and
        # in every update of this run of the agent.
        self.assertRegex(r['instance'], r'^[0-9a-f]{16}$')
        self.assertEqual(c.status()['agent']['instance'], r['instance'])
        self.assertEqual(c.subscribe('DATABASE_URL')['type'], 'ok')
        self.assertEqual(c.next_update()['instance'], r['instance'])
        self.agent.wait_log(r'agent instance %s' % r['instance'])

    def test_frame_at_the_limit_is_accepted(self):
        c = self.hello()
        body = padded({'type': 'status', 'id': 7}, h.FRAME_MAX)
        self.assertEqual(len(body), 65536)
        c.send_raw(h.frame_bytes(body))
        r = c.recv(timeout=5)
        self.assertEqual((r['type'], r['id']), ('status', 7))

    def test_frame_one_past_the_limit_drops_the_peer(self):
        c = self.hello()
        body = padded({'type': 'status', 'id': 7}, h.FRAME_MAX + 1)
        c.send_raw(h.frame_bytes(body))
        self.assert_dropped_with(c, 'protocol')

    def test_announced_length_alone_drops_the_peer(self):
        c = self.hello()
        c.send_raw(b'\xff\xff\xff\xff')
        self.assert_dropped_with(c, 'protocol')

    def test_garbage_body(self):
        c = self.hello()
        c.send_raw(h.frame_bytes(b'\xc1\xc1\xc1'))
        self.assert_dropped_with(c, 'protocol')

    def test_body_not_a_map(self):
        c = self.hello()
        c.send_raw(h.frame_bytes(msgpack.packb([1, 2, 3])))
        self.assert_dropped_with(c, 'protocol')

    def test_missing_field(self):
        c = self.hello()
        c.send({'type': 'ack', 'target': 'DATABASE_URL'})
        self.assert_dropped_with(c, 'protocol')

    def test_wrong_field_type(self):
        c = self.hello()
        c.send({'type': 'subscribe', 'targets': 'DATABASE_URL'})
        self.assert_dropped_with(c, 'protocol')

    def test_request_before_hello(self):
        c = self.raw()
        c.send({'type': 'status'})
        self.assert_dropped_with(c, 'hello-required')

    def test_future_version(self):
        for version in (3, 0, 2**64 - 1):
            c = self.raw()
            c.send({'type': 'hello', 'version': version, 'name': 'x',
                    'pid': 1, 'id': 1})
            m = c.recv(timeout=5)
            self.assertEqual((m['type'], m['code'], m['id']),
                             ('error', 'version', 1), m)
            self.assertIn('versions 1 to 2', m['message'])
            c.wait_closed(timeout=5)

    def test_agent_only_message_from_client(self):
        c = self.hello()
        c.send({'type': 'update', 'target': 'DATABASE_URL', 'generation': 1,
                'conninfo': 'x'})
        self.assert_dropped_with(c, 'protocol')

    def test_operational_errors_keep_the_connection(self):
        c = self.hello()
        r = c.request({'type': 'no-such-message'})
        self.assertEqual((r['type'], r['code']), ('error', 'unknown-type'))
        r = c.request({'type': 'subscribe', 'targets': ['NOPE']})
        self.assertEqual((r['type'], r['code']), ('error', 'unknown-target'))
        self.assertIn('NOPE', r['message'])
        c.ack('DATABASE_URL', 1)
        r = c.recv(timeout=5)
        self.assertEqual((r['type'], r['code']), ('error', 'not-subscribed'))
        r = c.subscribe(['DATABASE_URL'])
        self.assertEqual(r['type'], 'ok')
        u = c.next_update()
        c.ack('DATABASE_URL', u['generation'] + 5)
        r = c.recv(timeout=5)
        self.assertEqual((r['type'], r['code']), ('error', 'protocol'))
        # still connected and served
        self.assertEqual(c.status()['type'], 'status')

    # -- agent instances (protocol version 2)

    def test_ack_from_a_previous_agent_instance_is_ignored(self):
        """An app still on the previous run's generation N acks it after
        the agent restarted and reached its own generation N: the ack
        names the previous instance, so it is ignored (no error) and
        counted in stale_acks, not taken for the new generation N.  Before
        instances it counted, and an operator could revoke a password
        still in use."""
        admin = self.hello()
        gen_a = admin.reconnect('DATABASE_URL')['generation']
        old = admin.instance
        self.assertEqual(gen_a, 2)
        admin.close()
        self.agent.restart()
        c, gen = self.subscribed('late-app')
        self.assertNotEqual(c.instance, old)
        self.assertEqual(gen, 1)
        self.assertEqual(c.reconnect('DATABASE_URL')['generation'], gen_a)
        self.assertEqual(c.next_update()['generation'], gen_a)

        def target():
            return h.target_status(c, 'DATABASE_URL')
        t = target()
        self.assertEqual((t['generation'], t['acked'], t['stale_acks']),
                         (gen_a, 0, 0))
        c.ack('DATABASE_URL', gen_a, instance=old)
        c.nack('DATABASE_URL', gen_a, 'from the old run', instance=old)
        t = target()
        self.assertEqual((t['acked'], t['stale_acks']), (0, 2))
        self.assertEqual([(x['acked'], x['nacked'], x['error'])
                          for x in t['lagging']], [(0, 0, None)])
        # The instance is checked first: a generation this run has not
        # reached, or a target this client did not subscribe to, is no
        # error either when the ack is stale.  Only a subscriber's count:
        # anyone could inflate the counter of any target otherwise.
        c.ack('DATABASE_URL', gen_a + 40, instance=old)
        other = self.hello()
        other.ack('DATABASE_URL', 1, instance=old)
        other.nack('DATABASE_URL', 1, 'x', instance=old)
        other.ack('NO_SUCH_TARGET', 1, instance=old)
        self.assertEqual(target()['stale_acks'], 3)
        out = self.ctl(self.agent, 'status').stdout
        self.assertIn(f'instance: {c.instance} ', out)
        self.assertIn('stale acks:  3, for an earlier run of the agent', out)
        self.assertEqual(other.status()['type'], 'status')
        self.assertEqual(c.pending() + other.pending(), [])
        # The same ack with this run's instance counts.
        c.ack('DATABASE_URL', gen_a)
        t = target()
        self.assertEqual((t['acked'], t['stale_acks'], t['lagging']),
                         (1, 3, []))

    def test_ack_without_instance_is_a_violation_in_version_2(self):
        for kind in ('ack', 'nack'):
            c, gen = self.subscribed()
            msg = {'type': kind, 'target': 'DATABASE_URL', 'generation': gen}
            if kind == 'nack':
                msg['message'] = 'x'
            c.send(msg)
            self.assert_dropped_with(c, 'protocol')
        self.agent.wait_log(r'protocol violation: ack or nack without an '
                            r'instance')

    def test_version_1_client_still_works(self):
        """hello version 1: the agent answers version 1 (its instance
        too, which such a client ignores); acks and nacks need no
        instance, and count."""
        c = self.raw()
        r = c.hello(name='old-client', version=1)
        self.assertEqual((r['type'], r['version']), ('hello', 1))
        self.assertEqual(c.subscribe('DATABASE_URL')['type'], 'ok')
        gen = c.next_update()['generation']
        c.nack('DATABASE_URL', gen, 'cannot', instance=None)
        lag = self.lag_of(c)
        self.assertEqual((lag['nacked'], lag['error']), (gen, 'cannot'))
        c.ack('DATABASE_URL', gen, instance=None)
        t = h.target_status(c, 'DATABASE_URL')
        self.assertEqual((t['acked'], t['stale_acks'], t['lagging']),
                         (1, 0, []))
        # It may send one all the same; a wrong one is then stale.
        c.ack('DATABASE_URL', gen, instance='0' * 16)
        self.assertEqual(h.target_status(c, 'DATABASE_URL')['stale_acks'],
                         1)

    def test_ping(self):
        c = self.hello()
        self.assertEqual(c.ping(), {'type': 'ok', 'id': 1})
        c.send({'type': 'ping'})
        self.assertEqual(c.recv(timeout=5), {'type': 'ok'})
        # A request like any other: hello first.
        c = self.raw()
        c.send({'type': 'ping', 'id': 3})
        self.assert_dropped_with(c, 'hello-required')

    # -- what PROTOCOL.md spells out for clients in other languages

    def test_violation_replies_carry_no_id(self):
        c = self.hello()
        c.send({'type': 'ack', 'target': 'DATABASE_URL', 'id': 5,
                'instance': c.instance})  # no generation
        m = c.recv(timeout=5)
        self.assertEqual((m['type'], m['code']), ('error', 'protocol'))
        self.assertNotIn('id', m)
        c.wait_closed(timeout=5)

    def test_error_reply_to_an_ack_echoes_its_id(self):
        c = self.hello()
        c.send({'type': 'ack', 'target': 'DATABASE_URL', 'generation': 1,
                'instance': c.instance, 'id': 9})
        m = c.recv(timeout=5)
        self.assertEqual((m['type'], m['code'], m['id']),
                         ('error', 'not-subscribed', 9))
        # No reply on success, with or without an id.
        self.assertEqual(c.subscribe('DATABASE_URL')['type'], 'ok')
        gen = c.next_update()['generation']
        c.send({'type': 'ack', 'target': 'DATABASE_URL', 'generation': gen,
                'instance': c.instance, 'id': 10})
        self.assertEqual(c.ping()['type'], 'ok')
        self.assertEqual(c.pending(), [])

    def test_subscribe_over_64_targets_is_a_violation(self):
        c = self.hello()
        c.send({'type': 'subscribe', 'id': 1,
                'targets': ['DATABASE_URL'] * 64})
        self.assertEqual(c.recv(timeout=5)['type'], 'update')
        self.assertEqual(c.recv(timeout=5), {'type': 'ok', 'id': 1})
        c.send({'type': 'subscribe', 'id': 2,
                'targets': ['DATABASE_URL'] * 65})
        m = c.recv(timeout=5)
        self.assertEqual((m['type'], m['code']), ('error', 'protocol'))
        self.assertNotIn('id', m)
        self.assertIn('targets', m['message'])
        c.wait_closed(timeout=5)

    def test_reconnect_sends_update_before_ok(self):
        c, gen = self.subscribed()
        c.send({'type': 'reconnect', 'target': 'DATABASE_URL', 'id': 4})
        u = c.recv(timeout=5)
        ok = c.recv(timeout=5)
        self.assertEqual((u['type'], u['generation'], u['reason']),
                         ('update', gen + 1, 'reconnect'))
        self.assertEqual(ok, {'type': 'ok', 'id': 4, 'generation': gen + 1})

    def test_empty_frame_is_a_violation(self):
        for said_hello in (True, False):
            c = self.hello() if said_hello else self.raw()
            c.send_raw(b'\0\0\0\0')
            self.assert_dropped_with(c, 'protocol')

    def test_which_error_wins_before_hello(self):
        """Before hello: a bad frame or body is a protocol violation; a
        well-formed message that is not hello, of a known type or not, is
        hello-required."""
        cases = [
            (h.frame_bytes(b'\xc1'), 'protocol'),
            (b'\xff\xff\xff\xff', 'protocol'),
            (h.frame_bytes(msgpack.packb({'type': 'ack'})), 'protocol'),
            (h.encode_frame({'type': 'no-such-type'}), 'hello-required'),
            (h.encode_frame({'type': 'status'}), 'hello-required'),
            (h.encode_frame({'type': 'hello', 'version': 9, 'name': 'x',
                             'pid': 1}), 'version'),
        ]
        for raw, code in cases:
            c = self.raw()
            c.send_raw(raw)
            self.assert_dropped_with(c, code)

    def test_identity_format(self):
        st = os.stat(self.env_path)
        f = h.file_status(self.agent, self.env_path)
        self.assertEqual(f['identity'],
                         f'{st.st_dev}:{st.st_ino}:{st.st_size}:'
                         f'{st.st_mtime_ns}')

    def test_subscribe_sends_updates_before_ok(self):
        c = self.hello()
        c.send({'type': 'subscribe', 'targets': ['DATABASE_URL'], 'id': 42})
        first = c.recv(timeout=5)
        second = c.recv(timeout=5)
        self.assertEqual(first['type'], 'update')
        self.assertEqual(first['generation'], 1)
        self.assertEqual(first['conninfo'], self.url())
        self.assertEqual(first['reason'], 'rotation')
        self.assertEqual((second['type'], second['id']), ('ok', 42))

    def test_same_target_twice_counts_once(self):
        c = self.hello()
        c.send({'type': 'subscribe', 'id': 5,
                'targets': ['DATABASE_URL', 'DATABASE_URL']})
        self.assertEqual(c.recv(timeout=5)['type'], 'update')
        self.assertEqual(c.recv(timeout=5)['type'], 'ok')
        r = c.subscribe(['DATABASE_URL'])
        self.assertEqual(r['type'], 'ok')
        self.assertEqual(h.target_status(self.agent, 'DATABASE_URL')
                         ['subscribers'], 1)

    def test_status_with_subscribers_before_any_value(self):
        """A target with subscribers but no value yet: nobody lags, and the
        reply is well-formed (its lagging array once announced entries it
        did not hold)."""
        agent = self.start_agent(env_files=[self.env_path],
                                 targets=['OTHER_URL'])
        c = h.Client(agent.sock)
        self.addCleanup(c.close)
        c.hello(name='early')
        self.assertEqual(c.subscribe(['OTHER_URL'])['type'], 'ok')
        t = h.target_status(agent, 'OTHER_URL')
        self.assertEqual((t['generation'], t['subscribers'], t['acked'],
                          t['lagging']), (0, 1, 0, []))

    def test_status_shape(self):
        c = self.hello()
        st = c.status()
        self.assertEqual(set(st['agent']),
                         {'version', 'instance', 'pid', 'uptime_ms',
                          'clients', 'failover_settings',
                          'failover_settings_error', 'state_dir',
                          'state_error'})
        self.assertEqual((st['agent']['state_dir'],
                          st['agent']['state_error']), (None, None))
        self.assertEqual(st['agent']['failover_settings'],
                         {'health_check_interval_ms': 30000,
                          'connection_timeout_ms': 5000,
                          'failure_threshold': 3,
                          'primary_retry_interval_ms': 120000})
        self.assertIsNone(st['agent']['failover_settings_error'])
        t = st['targets'][0]
        self.assertEqual(set(t), {'name', 'generation', 'valid', 'conninfo',
                                  'state', 'error', 'changed', 'subscribers',
                                  'acked', 'stale_acks', 'lagging',
                                  'subscribed', 'attempts', 'gave_up',
                                  'attempts_max',
                                  'value_seq', 'published_seq', 'settings',
                                  'settings_error', 'failover', 'servers',
                                  'source', 'redacted'})
        self.assertFalse(t['redacted'])
        self.assertFalse(st['truncated'])
        self.assertEqual(t['source'], 'files')
        self.assertEqual(t['settings'], NO_SETTINGS)
        self.assertIsNone(t['settings_error'])
        # No secondary: failover off, and status says how to turn it on.
        fo = t['failover']
        self.assertEqual(set(fo), {'enabled', 'hint', 'current', 'standby',
                                   'pair', 'warning',
                                   'failover_available', 'held',
                                   'failure_count', 'failovers',
                                   'last_failover', 'last_failover_unix',
                                   'seconds_since_failover', 'last_error'})
        self.assertEqual((fo['enabled'], fo['current'], fo['failovers']),
                         (False, 'primary', 0))
        self.assertIn('DATABASE_URL_SECONDARY', fo['hint'])
        self.assertEqual(len(t['servers']), 1)
        srv = t['servers'][0]
        self.assertEqual(set(srv), {'role', 'var', 'conninfo', 'state',
                                    'error', 'attempts', 'gave_up',
                                    'attempts_max', 'value_seq',
                                    'accepted_seq', 'health',
                                    'failures', 'checks', 'check_us',
                                    'rtt_us',
                                    'in_recovery', 'last_check', 'down_since',
                                    'health_error', 'source', 'flaps',
                                    'hold_ms'})
        self.assertEqual(srv['source'], 'files')
        self.assertEqual((srv['role'], srv['var'], srv['health'],
                          srv['state']),
                         ('primary', 'DATABASE_URL', 'off', 'ok'))
        self.assertEqual(srv['conninfo'], t['conninfo'])
        self.assertEqual(srv['accepted_seq'], t['published_seq'])
        f = st['files'][0]
        self.assertEqual(set(f), {'path', 'state', 'error', 'entries',
                                  'encryption', 'identity', 'seq',
                                  'redacted'})
        self.assertEqual((f['entries'], f['encryption']), (1, 'none'))
        self.assertEqual(t['published_seq'], f['seq'])
        self.assertEqual(st['keys'], [])

    def test_peer_credentials_in_status(self):
        c = self.hello()
        c.subscribe(['DATABASE_URL'])
        c.next_update()
        lag = h.target_status(self.agent, 'DATABASE_URL')['lagging']
        self.assertEqual(len(lag), 1)
        self.assertEqual(lag[0]['name'], 'proto-test')
        self.assertEqual(lag[0]['pid'], os.getpid())
        self.assertEqual(lag[0]['uid'], os.getuid())
        self.assertEqual(set(lag[0]), {'pid', 'uid', 'name', 'acked',
                                       'nacked', 'error'})
        self.assertEqual((lag[0]['acked'], lag[0]['nacked'], lag[0]['error']),
                         (0, 0, None))

    def test_status_names_every_subscriber(self):
        """Every subscriber is named in "subscribed" (acked or not), so
        that none counted in "subscribers" is a mystery; dbswapctl status
        prints them, says "1 entry", and shows no failover settings while
        no target has failover on."""
        c = self.hello()
        c.subscribe(['DATABASE_URL'])
        u = c.next_update()
        c.ack('DATABASE_URL', u['generation'])
        h.wait_for(lambda: h.target_status(self.agent, 'DATABASE_URL')
                   ['acked'] == 1, what='the ack')
        t = h.target_status(self.agent, 'DATABASE_URL')
        self.assertEqual((t['subscribers'], t['lagging']), (1, []))
        self.assertEqual(t['subscribed'],
                         [{'pid': os.getpid(), 'uid': os.getuid(),
                           'name': 'proto-test',
                           'acked': u['generation']}])
        out = self.ctl(self.agent, 'status').stdout
        self.assertIn(f'subscribers: 1, 1 acked generation {u["generation"]}'
                      f': pid {os.getpid()} (proto-test)', out)
        self.assertRegex(out, rf'generation:  {u["generation"]}, in force '
                              r'since \d{4}-\d\d-\d\dT')
        self.assertIn('(1 entry)', out)
        self.assertNotIn('health_check_interval_ms', out)
        self.assertRegex(out, r'\d+ client\(s\) besides this one')

    def test_failed_value_does_not_contradict_the_generation(self):
        """A refused new value: status says the generation before it
        stays in force, not "(valid)" above "state: failed"."""
        gen = h.target_status(self.agent, 'DATABASE_URL')['generation']
        self.write_url('not-the-password')
        h.wait_for(lambda: h.target_status(self.agent, 'DATABASE_URL')
                   ['state'] == 'failed', what='the refusal')
        out = self.ctl(self.agent, 'status').stdout
        self.assertIn(f'generation:  {gen}, in force', out)
        self.assertIn(f'state:       failed (the newest value was refused; '
                      f'generation {gen} stays in force)', out)
        self.assertNotIn('(valid)', out)
        self.assertNotRegex(self.agent.log(), r'DATABASE_URL: DATABASE_URL:')
        self.assertRegex(self.agent.log(), r'warning: DATABASE_URL: new value '
                                           r'\S+ failed validation')

    def test_status_alone_is_no_info_line(self):
        """A client that only asks for status leaves without a line at
        info (dbswapctl status in a loop would fill the log); one that
        sends anything else still gets its line."""
        mark = self.agent.mark()
        for _ in range(3):
            self.ctl(self.agent, 'status')
        with h.Client(self.agent.sock) as c:
            c.hello(name='pinger')
            c.subscribe(['DATABASE_URL'])
        self.agent.wait_log(r'\(pinger\) disconnected: closed the '
                            r'connection')
        self.assertNotIn('(dbswapctl status) disconnected',
                         self.agent.log()[mark:])

    # -- nack

    def subscribed(self, name='proto-test'):
        """A client subscribed to DATABASE_URL; returns it and the
        generation of the update it got."""
        c = self.raw()
        self.assertEqual(c.hello(name=name)['type'], 'hello')
        self.assertEqual(c.subscribe(['DATABASE_URL'])['type'], 'ok')
        return c, c.next_update()['generation']

    def nack(self, c, generation, message, target='DATABASE_URL'):
        c.nack(target, generation, message)

    @staticmethod
    def lag_of(c):
        """c's own entry in DATABASE_URL's lagging list, or None; asked
        on c, so that everything c sent before is processed."""
        t = h.target_status(c, 'DATABASE_URL')
        mine = [x for x in t['lagging'] if x['pid'] == os.getpid()]
        return mine[0] if mine else None

    def test_ack_counts_follow_clients(self):
        """The agent keeps a target's subscriber and ack counts as clients
        come, ack and go (not by walking every client): each transition
        checked against status, and "acked by all" logged once, when the
        last one that lagged leaves."""
        def counts(c):
            t = h.target_status(c, 'DATABASE_URL')
            return t['subscribers'], t['acked']
        a, gen = self.subscribed('a')
        b, _ = self.subscribed('b')
        self.assertEqual(counts(a), (2, 0))
        a.ack('DATABASE_URL', gen)
        a.ack('DATABASE_URL', gen)  # twice counts once
        self.assertEqual(counts(a), (2, 1))
        self.rotate()
        self.assertEqual(a.next_update()['generation'], gen + 1)
        self.assertEqual(b.next_update()['generation'], gen + 1)
        self.assertEqual(counts(a), (2, 0))  # a new generation: none yet
        b.ack('DATABASE_URL', gen)  # an older generation counts for none
        self.assertEqual(counts(b), (2, 0))
        b.ack('DATABASE_URL', gen + 1)
        self.assertEqual(counts(b), (2, 1))
        b.close()  # an acker leaves (seen when the agent reads its EOF)
        h.wait_for(lambda: counts(a) == (1, 0), what='b gone')
        c, _ = self.subscribed('c')
        self.assertEqual(counts(c), (2, 0))
        a.ack('DATABASE_URL', gen + 1)
        self.assertEqual(counts(a), (2, 1))
        mark = len(self.agent.log())
        c.close()  # the last one lagging leaves: complete
        self.agent.wait_log(r'DATABASE_URL: generation %d acked by all 1 '
                            r'subscriber\(s\)' % (gen + 1), since=mark)
        self.assertEqual(counts(a), (1, 1))

    def test_nack_shows_in_status_until_acked(self):
        c, gen = self.subscribed()
        why = ('connection to server at "10.0.0.5", port 5432 failed: '
               'FATAL: password authentication failed for user "app"')
        self.nack(c, gen, why)
        lag = self.lag_of(c)
        self.assertEqual((lag['acked'], lag['nacked'], lag['error']),
                         (0, gen, why))
        self.agent.wait_log(r'client pid %d uid %d \(proto-test\) cannot '
                            r'switch to DATABASE_URL generation %d: '
                            % (os.getpid(), os.getuid(), gen) +
                            re.escape(why) + '$')

        # A retry of the same generation: the newest message is shown
        # (made printable: a control character is '?'), and the log keeps
        # its one line per generation.
        self.nack(c, gen, 'timeout expired\nsecond line')
        lag = self.lag_of(c)
        self.assertEqual(lag['error'], 'timeout expired?second line')
        self.assertEqual(self.agent.log().count(
            f'cannot switch to DATABASE_URL generation {gen}:'), 1)

        # A new generation: the old nack is history, not the reason.
        self.rotate()
        self.assertEqual(c.next_update()['generation'], gen + 1)
        lag = self.lag_of(c)
        self.assertEqual((lag['acked'], lag['nacked'], lag['error']),
                         (0, gen, None))

        # Its own nack, with a newline: one log line all the same, and
        # status shows the same printable text.
        self.nack(c, gen + 1, 'line one\nline two')
        self.agent.wait_log(r'generation %d: line one\?line two$'
                            % (gen + 1))
        lag = self.lag_of(c)
        self.assertEqual((lag['nacked'], lag['error']),
                         (gen + 1, 'line one?line two'))

        # An ack of that generation clears it; a nack of it afterwards is
        # stale and ignored.
        c.ack('DATABASE_URL', gen + 1)
        self.assertIsNone(self.lag_of(c))
        self.nack(c, gen + 1, 'stale-nack-7f3a')
        self.rotate()
        self.assertEqual(c.next_update()['generation'], gen + 2)
        lag = self.lag_of(c)
        self.assertEqual((lag['acked'], lag['nacked'], lag['error']),
                         (gen + 1, 0, None))
        self.assertNotIn('stale-nack-7f3a', self.agent.log())

    def test_nack_errors(self):
        c = self.hello()
        self.nack(c, 1, 'x')
        r = c.recv(timeout=5)
        self.assertEqual((r['type'], r['code']), ('error', 'not-subscribed'))
        self.assertEqual(c.subscribe(['DATABASE_URL'])['type'], 'ok')
        gen = c.next_update()['generation']
        # A generation the target has not reached, or 0: a protocol error,
        # but the connection stays, as for an ack.
        for bad in (gen + 1, 0):
            self.nack(c, bad, 'x')
            r = c.recv(timeout=5)
            self.assertEqual((r['type'], r['code']), ('error', 'protocol'))
            self.assertIn('DATABASE_URL', r['message'])
        self.assertIsNone(self.lag_of(c)['error'])
        # The message limit: 1024 bytes taken as they are, 1025 a
        # violation.
        self.nack(c, gen, 'm' * 1024)
        self.assertEqual(self.lag_of(c)['error'], 'm' * 1024)
        self.nack(c, gen, 'm' * 1025)
        self.assert_dropped_with(c, 'protocol')

    def test_nack_message_required(self):
        c, gen = self.subscribed()
        c.send({'type': 'nack', 'target': 'DATABASE_URL', 'generation': gen,
                'instance': c.instance})
        self.assert_dropped_with(c, 'protocol')

    def test_settings_from_a_client_is_a_violation(self):
        c = self.hello()
        c.send({'type': 'settings', 'target': 'DATABASE_URL', 'pool_max': 3})
        self.assert_dropped_with(c, 'protocol')

    def test_status_fits_with_many_long_nacks(self):
        """16 clients nacking 4 targets with the longest messages: the
        status reply would pass the frame limit, so the messages in it are
        shortened (on a character boundary) instead of status failing."""
        names = [f'T{i}_URL' for i in range(4)]
        self.write_env(''.join(f'{n}={self.url()}\n' for n in names))
        agent = self.start_agent(targets=names)
        h.wait_for(lambda: all(h.target_status(agent, n)['valid']
                               for n in names), what='four published values')
        why = 'x' + 'é' * 511  # 1023 bytes; a cut at 128 splits an é
        self.assertEqual(len(why.encode()), 1023)
        clients = []
        for i in range(16):
            c = agent.client(name=f'app{i}')
            self.addCleanup(c.close)
            self.assertEqual(c.subscribe(names)['type'], 'ok')
            for n in names:
                self.nack(c, c.next_update(target=n)['generation'], why, n)
            clients.append(c)
        st = clients[-1].status()
        self.assertEqual(st['type'], 'status')
        for t in st['targets']:
            self.assertEqual(len(t['lagging']), 16)
            for lag in t['lagging']:
                self.assertEqual(lag['nacked'], 1)
                self.assertTrue(lag['error'].endswith('...'), lag['error'])
                self.assertTrue(why.startswith(lag['error'][:-3]))
                self.assertLessEqual(len(lag['error'].encode()), 1024)

    # -- pool settings

    def write_settings(self, **pool):
        """The env file with the current URL and DATABASE_POOL_* lines."""
        self.write_env(f'DATABASE_URL={self.url()}\n' + ''.join(
            f'DATABASE_POOL_{k.upper()}={v}\n' for k, v in pool.items()))

    def wait_settings(self, source, settings=None, error=None):
        """Waits until DATABASE_URL's status shows these settings (given
        as a dict of the wire keys set) and settings_error (None, or a
        string it must contain); returns the target's status."""
        want = dict(NO_SETTINGS, **(settings or {}))

        def check():
            t = h.target_status(source, 'DATABASE_URL')
            e = t['settings_error']
            ok = (e is None) if error is None else (e is not None and
                                                    error in e)
            return ok and t['settings'] == want and t
        return h.wait_for(check, what=f'settings {want} error {error!r}')

    def test_settings_sent_on_subscribe_after_update_before_ok(self):
        self.write_settings(max=7, min=2, timeout=5000, idle_timeout=60000)
        self.wait_settings(self.agent, GOOD)
        c = self.hello()
        c.send({'type': 'subscribe', 'targets': ['DATABASE_URL'], 'id': 42})
        got = [c.recv(timeout=5) for _ in range(3)]
        self.assertEqual([m['type'] for m in got],
                         ['update', 'settings', 'ok'])
        self.assertEqual(got[1], dict(GOOD, type='settings',
                                      target='DATABASE_URL'))
        self.assertEqual(got[2]['id'], 42)
        self.assertEqual(h.target_status(c, 'DATABASE_URL')['generation'],
                         got[0]['generation'])

    def test_settings_change_is_pushed_without_a_generation(self):
        self.write_settings(max=7, min=2, timeout=5000, idle_timeout=60000)
        self.wait_settings(self.agent, GOOD)
        c, gen = self.subscribed()  # the ok is read, the settings queued
        c.ack('DATABASE_URL', gen)
        self.assertEqual(c.recv(timeout=5)['type'], 'settings')

        self.write_settings(max=9, min=2, timeout=5000, idle_timeout=60000)
        m = c.recv(timeout=5)
        self.assertEqual(m, dict(GOOD, pool_max=9, type='settings',
                                 target='DATABASE_URL'))
        self.agent.wait_log(r'DATABASE_URL: pool settings now pool_max 9')
        t = h.target_status(c, 'DATABASE_URL')
        self.assertEqual((t['generation'], t['acked'], t['lagging']),
                         (gen, 1, []))
        c.expect_no_update()

        # One setting gone: left out of the message.
        self.write_settings(max=9)
        m = c.recv(timeout=5)
        self.assertEqual(m, {'type': 'settings', 'target': 'DATABASE_URL',
                             'pool_max': 9})
        # None left: the message says so with the target alone.
        self.write_settings()
        m = c.recv(timeout=5)
        self.assertEqual(m, {'type': 'settings', 'target': 'DATABASE_URL'})
        self.wait_settings(c, {})
        # The same file again (a reload) sends nothing.
        self.assertEqual(c.reload()['type'], 'ok')
        self.assertEqual(c.pending(), [])

    def test_invalid_settings_keep_the_last_good(self):
        self.write_settings(max=7, min=2, timeout=5000, idle_timeout=60000)
        self.wait_settings(self.agent, GOOD)
        c, gen = self.subscribed()
        self.assertEqual(c.recv(timeout=5)['type'], 'settings')

        self.write_settings(max='lots', min=2, timeout=5000,
                            idle_timeout=60000)
        t = self.wait_settings(c, GOOD, error='DATABASE_POOL_MAX: not a '
                               'whole number from 1 to 10000')
        self.assertNotIn('lots', t['settings_error'])
        self.agent.wait_log(r'DATABASE_URL: pool settings refused: '
                            r'DATABASE_POOL_MAX: not a whole number from 1 '
                            r'to 10000; the previous settings stay in force')
        # Status was asked on c after the agent read the file: a settings
        # message would have come before the reply.
        self.assertEqual(c.pending(), [])

        self.write_settings(max=8, min=9, timeout=5000, idle_timeout=60000)
        t = self.wait_settings(c, GOOD, error='DATABASE_POOL_MIN: 9 is more '
                               'than DATABASE_POOL_MAX (8)')
        self.assertEqual(c.pending(), [])

        for bad in ('-3', '+3', ' 3', '3 ms', '0x10', '1e3', '86400001'):
            # A different error first, so that each wait sees a new read.
            self.write_settings(max='lots')
            self.wait_settings(c, GOOD, error='DATABASE_POOL_MAX:')
            self.write_env(f'DATABASE_URL={self.url()}\n'
                           f'DATABASE_POOL_TIMEOUT="{bad}"\n')
            t = self.wait_settings(c, GOOD, error='DATABASE_POOL_TIMEOUT: '
                                   'not a whole number of milliseconds from '
                                   '0 to 86400000')
            self.assertNotIn('POOL_MAX', t['settings_error'])
        self.assertEqual(c.pending(), [])

        # Fixed: the error goes, the new set is sent.
        self.write_settings(max=8, min=3)
        m = c.recv(timeout=5)
        self.assertEqual(m, {'type': 'settings', 'target': 'DATABASE_URL',
                             'pool_max': 8, 'pool_min': 3})
        self.wait_settings(c, {'pool_max': 8, 'pool_min': 3})
        self.assertEqual(h.target_status(c, 'DATABASE_URL')['generation'],
                         gen)

    def test_settings_prefix_from_the_target_name(self):
        """REPORTS_URL reads REPORTS_POOL_*; PGCONN, not ending in _URL,
        reads PGCONN_POOL_*."""
        self.write_env(f'REPORTS_URL={self.url()}\nPGCONN={self.url()}\n'
                       'REPORTS_POOL_MAX=4\nREPORTS_URL_POOL_MAX=5\n'
                       'PGCONN_POOL_MIN=0\nPG_POOL_MIN=1\n')
        agent = self.start_agent(targets=['REPORTS_URL', 'PGCONN'])
        reports = h.target_status(agent, 'REPORTS_URL')['settings']
        pgconn = h.target_status(agent, 'PGCONN')['settings']
        self.assertEqual(reports, dict(NO_SETTINGS, pool_max=4))
        self.assertEqual(pgconn, dict(NO_SETTINGS, pool_min=0))


NO_SETTINGS = {'pool_max': None, 'pool_min': None, 'pool_timeout_ms': None,
               'pool_idle_timeout_ms': None}
GOOD = {'pool_max': 7, 'pool_min': 2, 'pool_timeout_ms': 5000,
        'pool_idle_timeout_ms': 60000}


if __name__ == '__main__':
    main()
