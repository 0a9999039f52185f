"""The wire protocol as ipc/PROTOCOL.md specifies it, spoken by the Python
client against the real agent: limits, violations and error codes."""

import os

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

    def assert_dropped_with(self, c, code):
        m = c.recv(timeout=5)
        self.assertEqual((m['type'], m['code']), ('error', code), m)
        c.wait_closed(timeout=5)
        # Everyone else is still served.
        self.assertTrue(h.target_status(self.agent, 'DATABASE_URL')['valid'])

    def test_hello_reply(self):
        c = self.raw()
        r = c.hello(name='proto-test')
        self.assertEqual(r['version'], 1)
        self.assertTrue(r['name'].startswith('dbswapd '))
        self.assertEqual(r['pid'], self.agent.pid)

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
        c = self.raw()
        c.send({'type': 'hello', 'version': 2, 'name': 'x', 'pid': 1,
                'id': 1})
        self.assert_dropped_with(c, 'version')

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

    def test_status_shape(self):
        c = self.hello()
        st = c.status()
        self.assertEqual(set(st['agent']),
                         {'version', 'pid', 'uptime_ms', 'clients'})
        t = st['targets'][0]
        self.assertEqual(set(t), {'name', 'generation', 'valid', 'conninfo',
                                  'state', 'error', 'changed', 'subscribers',
                                  'acked', 'lagging', 'attempts', 'gave_up',
                                  'value_seq', 'published_seq'})
        f = st['files'][0]
        self.assertEqual(set(f), {'path', 'state', 'error', 'entries',
                                  'encryption', 'identity', 'seq'})
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


if __name__ == '__main__':
    main()
