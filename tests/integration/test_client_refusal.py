"""libdbswap against a real agent that refuses it (issue 17): a refusal
right after accept (the client limit) or right after hello (the idle
timeout of a client whose only target is forbidden) costs the agent a
connection every second or two, not one every 20 ms; and a target the
agent refuses leaves the client's other targets followed, and is asked
for again with backoff.

The test subscriber reaches the agent through a relay (RELAY below) that
counts the connections it accepts and the subscribes sent through it: a
count that does not depend on the library's own logging, nor on the
agent's log, which is rate-limited per uid."""

import os
import sys
import tempfile
import time

import harness as h
from common import ClusterTest, JsonLines, main

# A relay from a socket of its own (argv[1]) to the agent's (argv[2]),
# connecting to the agent as uid argv[3] and gid argv[4] when given (so
# that the agent applies that uid's rules).  One JSON line per accepted
# connection ({"accept": n}) and per message from the client ({"type":
# ..., "targets": ...}); each side's end closes the other.
RELAY = r'''
import json, os, socket, struct, sys, threading, msgpack

listen_path, upstream = sys.argv[1], sys.argv[2]
lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
lsock.bind(listen_path)
lsock.listen(64)
if len(sys.argv) > 3:
    os.setgroups([])
    os.setgid(int(sys.argv[4]))
    os.setuid(int(sys.argv[3]))
out = threading.Lock()

def say(**kw):
    with out:
        print(json.dumps(kw), flush=True)

def pipe(src, dst, frames):
    buf = b''
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
            buf += data
            while frames and len(buf) >= 4:
                n = struct.unpack('>I', buf[:4])[0]
                if len(buf) < 4 + n:
                    break
                m = msgpack.unpackb(buf[4:4 + n], raw=False)
                buf = buf[4 + n:]
                say(type=m.get('type'), targets=m.get('targets'))
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

say(listening=listen_path)
n = 0
while True:
    client, _ = lsock.accept()
    n += 1
    say(accept=n)
    agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        agent.connect(upstream)
    except OSError as e:
        say(error=str(e))
        client.close()
        continue
    for args in ((client, agent, True), (agent, client, False)):
        threading.Thread(target=pipe, args=args, daemon=True).start()
'''

# How long the connections are counted, and the most a backed-off client
# makes in that time.  The library's backoff is 20 ms doubling to 2 s,
# with jitter down to half: with every wait at its shortest (10, 20, 40
# ... 640 ms, then 1 s) and each connection lasting nothing, 12
# connections in 6 s.  A client retrying every 20 ms after a 300 ms
# connection makes about 19.
WINDOW_S = 6
MOST_CONNECTIONS = 12


class ClientRefusal(ClusterTest):

    def setUp(self):
        super().setUp()
        self.write_url(self.password)

    def relay(self, agent, user=None):
        """A relay to agent's socket (as user, if given); returns (the
        relay's socket path, its JsonLines)."""
        d = tempfile.mkdtemp(prefix='dbswap-relay-')
        self.addCleanup(os.rmdir, d)
        path = os.path.join(d, 'relay.sock')
        self.addCleanup(lambda: os.path.exists(path) and os.unlink(path))
        argv = [sys.executable, '-c', RELAY, path, agent.sock]
        if user:
            argv += [str(user.uid), str(user.gid)]
        relay = JsonLines(argv, name='relay')
        self.addCleanup(relay.close)
        h.wait_for(lambda: any('listening' in m for _, m in relay.lines),
                   what=f'the relay listening; {relay.describe()}')
        return path, relay

    @staticmethod
    def accepts(relay):
        """The times at which the relay accepted a connection."""
        return [t for t, m in list(relay.lines) if 'accept' in m]

    def count_connections(self, relay):
        """Connections in WINDOW_S from the first one (not scaled for
        slow runs: the client's waits are not, and a slow client only
        connects less often)."""
        first = h.wait_for(lambda: self.accepts(relay),
                           what='a first connection')[0]
        time.sleep(max(0, first + WINDOW_S - time.monotonic()))
        return len([t for t in self.accepts(relay)
                    if t <= first + WINDOW_S])

    @staticmethod
    def hold(agent):
        c = agent.client(hello=False)
        if c.hello().get('type') == 'hello':
            return c
        c.close()
        return None

    def test_client_limit_backs_off(self):
        """At the agent's client limit every connection is refused right
        after accept, before hello: the retries back off."""
        agent = self.start_agent('--max-clients', '1')
        # The one slot, held by root's client (never dropped as idle),
        # once the agent has seen the end of Agent.start's probe.
        holder = h.wait_for(lambda: self.hold(agent),
                            what='the one slot held')
        self.addCleanup(holder.close)
        path, relay = self.relay(agent)
        sub = h.Subscriber(path, 'DATABASE_URL', args=['--no-connect'])
        self.addCleanup(sub.close)
        n = self.count_connections(relay)
        agent.wait_log(r'refused: 1 clients connected, the limit', since=0)
        self.assertLessEqual(n, MOST_CONNECTIONS,
                             f'{n} connections in {WINDOW_S} s')

    def test_dropped_after_hello_backs_off(self):
        """A uid that may not follow its only target: the agent accepts
        its hello, refuses the subscribe (forbidden), and drops it at the
        idle timeout (here 200 ms) as subscribed to nothing.  Each hello
        used to start the backoff over: a connection every 300 ms or so,
        for ever.  Now only a connection that stayed up 2 s does."""
        user = h.LocalUser()
        self.addCleanup(user.close)
        agent = self.start_agent('--socket-mode', '0666',
                                 '--idle-timeout', '200')
        os.chmod(agent.dir, 0o711)
        path, relay = self.relay(agent, user)
        sub = h.Subscriber(path, 'DATABASE_URL', args=['--no-connect'])
        self.addCleanup(sub.close)
        n = self.count_connections(relay)
        agent.wait_log(rf'uid {user.uid} .*may not subscribe to '
                       r'DATABASE_URL', since=0)
        agent.wait_log(r'disconnected: idle', since=0)
        self.assertLessEqual(n, MOST_CONNECTIONS,
                             f'{n} connections in {WINDOW_S} s')
        self.assertEqual(sub.updates(), [])

    def test_unknown_target_leaves_the_others(self):
        """A subscriber of DATABASE_URL and of NOPE, a target the agent
        does not have: it still gets DATABASE_URL's value (the agent's
        subscribe is all or nothing, and one subscribe used to name
        both), and NOPE is asked for again after 0.5-1 s, then 1-2 s, then
        2-4 s: 3 or 4 times in 5 s, each alone."""
        agent = self.start_agent()
        h.wait_for(lambda: h.target_status(agent, 'DATABASE_URL')['valid'],
                   what='a published value')
        path, relay = self.relay(agent)
        sub = h.Subscriber(path, 'NOPE', args=['--no-connect',
                                               'DATABASE_URL'])
        self.addCleanup(sub.close)
        sub.wait_line(r'^update DATABASE_URL 1 ')

        def nopes():
            return [t for t, m in list(relay.lines)
                    if m.get('type') == 'subscribe' and
                    'NOPE' in m['targets']]
        first = h.wait_for(nopes, what=f'NOPE asked for; '
                           f'{relay.describe()}')[0]
        time.sleep(max(0, first + 5 - time.monotonic()))
        n = len([t for t in nopes() if t <= first + 5])
        self.assertGreaterEqual(n, 3, 'NOPE asked for again')
        self.assertLessEqual(n, 4, f'NOPE asked for {n} times in 5 s')
        for _, m in list(relay.lines):
            if m.get('type') == 'subscribe':
                self.assertEqual(len(m['targets']), 1, m)
        self.assertEqual(len(self.accepts(relay)), 1)
        self.assertRegex(sub.stderr(), r'refuses the subscription to NOPE: '
                         r'unknown-target')


if __name__ == '__main__':
    main()
