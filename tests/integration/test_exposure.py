"""What the socket shows and what one peer can cost the others (issue 15):
status for a peer that may not follow a target, clients' text (names,
nack messages) that reaches the log, status and terminals, the log lines
a peer can cause, quotas per uid (connections, queued output), the idle
timeout, and a status reply that always fits in a frame.

The attackers are throwaway local users (h.LocalUser) running small
Python clients: their uid, gid and groups are the kernel's at connect."""

import json
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest

import msgpack

import harness as h
from common import ClusterTest, main

# A client run as a local user: connects to argv[1], sends each message of
# argv[2] (a JSON list; a "name" or "message" may be a list of byte
# values, sent as a msgpack str as it is, valid UTF-8 or not; "generation"
# "latest" is that of the last update received, "instance" "session" the
# agent's from hello), reads one reply per message that has an "id"
# (updates and settings are skipped), prints the
# replies as JSON ("closed" if the agent hung up), then, if argv[3] is
# "hold", keeps the connection until its stdin closes.
CHILD = r'''
import json, socket, struct, sys, msgpack
def raw(v):
    return bytes(v) if isinstance(v, list) else v
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[1])
buf = b''
seen = {'latest': 0, 'session': None}
def recv():
    global buf
    while True:
        if len(buf) >= 4:
            n = struct.unpack('>I', buf[:4])[0]
            if len(buf) >= 4 + n:
                m = msgpack.unpackb(buf[4:4 + n], raw=True)
                buf = buf[4 + n:]
                if m.get(b'type') == b'update':
                    seen['latest'] = m[b'generation']
                if m.get(b'type') == b'hello':
                    seen['session'] = m[b'instance'].decode()
                return m
        try:
            d = s.recv(65536)
        except ConnectionResetError:
            d = b''
        if not d:
            return 'closed'
        buf += d
def text(m):
    # Replies as JSON: bytes shown with their escapes, never decoded.
    if isinstance(m, dict):
        return {text(k): text(v) for k, v in m.items()}
    if isinstance(m, list):
        return [text(v) for v in m]
    if isinstance(m, bytes):
        return m.decode('utf-8', 'backslashreplace')
    return m
out = []
for m in json.loads(sys.argv[2]):
    m = {k: raw(v) if k in ('name', 'message') else v for k, v in m.items()}
    for k in ('generation', 'instance'):
        if m.get(k) in seen:
            m[k] = seen[m[k]]
    b = msgpack.packb(m, use_bin_type=False)
    s.sendall(struct.pack('>I', len(b)) + b)
    if 'id' not in m:
        continue
    while True:
        r = recv()
        if r == 'closed' or r.get(b'id') == m['id']:
            break
    out.append(text(r))
print(json.dumps(out), flush=True)
if len(sys.argv) > 3 and sys.argv[3] == 'hold':
    sys.stdin.read()
'''

# The part the holders share: says hello on a connected socket s and
# returns 'hello', the code of the agent's refusal, or 'closed'.
SAY_HELLO = r'''
import struct, msgpack
def say_hello(s, hello):
    try:
        s.sendall(struct.pack('>I', len(hello)) + hello)
    except OSError:
        pass
    buf = b''
    while True:
        try:
            d = s.recv(65536)
        except OSError:
            d = b''
        if not d:
            return 'closed'
        buf += d
        if len(buf) >= 4 and len(buf) >= 4 + struct.unpack('>I', buf[:4])[0]:
            m = msgpack.unpackb(buf[4:], raw=False)
            return 'hello' if m['type'] == 'hello' else m.get('code')
'''

# Opens argv[2] connections to argv[1], says hello on each, and prints
# how many got the agent's hello and the codes of the refusals, as JSON;
# then holds them until stdin closes.
HOLDER = SAY_HELLO + r'''
import json, socket, struct, sys, msgpack
path, n = sys.argv[1], int(sys.argv[2])
hello = msgpack.packb({'type': 'hello', 'version': 2, 'name': 'holder',
                       'pid': 0, 'id': 1})
socks, ok, refused = [], 0, []
for i in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    answer = say_hello(s, hello)
    if answer == 'hello':
        ok += 1
    else:
        refused.append(answer)
    socks.append(s)
print(json.dumps({'ok': ok, 'refused': refused}), flush=True)
sys.stdin.read()
'''

# Opens argv[2] connections to argv[1]; on each sends hello and argv[3]
# status requests, never reads; prints "ready" and holds them until
# stdin closes.
NONREADER = r'''
import socket, struct, sys, msgpack
path, n, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def frame(m):
    b = msgpack.packb(m)
    return struct.pack('>I', len(b)) + b
data = frame({'type': 'hello', 'version': 2, 'name': 'nonreader',
              'pid': 0}) + frame({'type': 'status'}) * k
socks = []
for i in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(path)
    try:
        s.sendall(data)
    except OSError:
        pass
    socks.append(s)
print('ready', flush=True)
sys.stdin.read()
'''

# Sends argv[2] requests of type argv[3] (which the user may not send),
# pipelined, on as many connections as it takes (the agent closes one
# after its error budget); prints how many were sent.
FLOOD_FORBIDDEN = r'''
import socket, struct, sys, msgpack
path, total, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def frame(m):
    b = msgpack.packb(m)
    return struct.pack('>I', len(b)) + b
sent = 0
while sent < total:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    batch = 64  # more than the error budget: the agent closes
    try:
        s.sendall(frame({'type': 'hello', 'version': 2, 'name': 'flood',
                         'pid': 0}) + frame({'type': kind}) * batch)
    except OSError:
        pass
    sent += batch
    while True:
        try:
            if not s.recv(65536):
                break
        except OSError:
            break
    s.close()
print(sent)
'''


# Clients of one user that never read, driven line by line on stdin:
# "sizes" prints the frame sizes of the replies to hello, ping and a
# refused reload, read on a connection of its own; "open NAME" connects
# and says hello; "send NAME N" sends N pings and a reload (refused, and
# logged: it marks that the agent has handled what came before);
# "inq NAME" prints the bytes waiting unread in the socket and whether
# the agent hung up.  Each command answers one line.
QUEUER = r"""
import fcntl, json, select, socket, struct, sys, termios, msgpack
path = sys.argv[1]
def frame(m):
    b = msgpack.packb(m)
    return struct.pack('>I', len(b)) + b
def hello(name):
    return frame({'type': 'hello', 'version': 2, 'name': name, 'pid': 0,
                  'id': 1})
PING = frame({'type': 'ping', 'id': 1})
MARK = frame({'type': 'reload', 'id': 1})
conns = {}
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == 'sizes':
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(path)
        s.sendall(hello('sizes') + PING + MARK)
        f = s.makefile('rb')
        out = []
        for _ in range(3):
            n = struct.unpack('>I', f.read(4))[0]
            f.read(n)
            out.append(4 + n)
        f.close()
        s.close()
        print(json.dumps(out), flush=True)
    elif cmd[0] == 'open':
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.sendall(hello(cmd[1]))
        conns[cmd[1]] = s
        print('"ok"', flush=True)
    elif cmd[0] == 'send':
        conns[cmd[1]].sendall(PING * int(cmd[2]) + MARK)
        print('"ok"', flush=True)
    elif cmd[0] == 'inq':
        s = conns[cmd[1]]
        n = struct.unpack('i', fcntl.ioctl(s, termios.FIONREAD, b'\0' * 4))[0]
        p = select.poll()
        p.register(s, select.POLLRDHUP)
        ev = p.poll(0)
        hup = bool(ev and ev[0][1] & (select.POLLRDHUP | select.POLLHUP))
        print(json.dumps([n, hup]), flush=True)
"""

# A client that reads, driven on stdin: each line a message (JSON) sent
# to argv[1]; prints {"type", "size" (of the frame), "code"} of the
# reply with the same id (updates and settings skipped), or type
# "closed".
TALKER = r"""
import json, socket, struct, sys, msgpack
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(30)
s.connect(sys.argv[1])
f = s.makefile('rb')
for line in sys.stdin:
    m = json.loads(line)
    b = msgpack.packb(m)
    try:
        s.sendall(struct.pack('>I', len(b)) + b)
    except OSError:
        pass
    while True:
        try:
            h = f.read(4)
        except OSError:
            h = b''
        if len(h) < 4:
            print(json.dumps({'type': 'closed'}), flush=True)
            break
        n = struct.unpack('>I', h)[0]
        r = msgpack.unpackb(f.read(n), raw=False)
        if r.get('id') == m.get('id'):
            print(json.dumps({'type': r['type'], 'size': 4 + n,
                              'code': r.get('code')}), flush=True)
            break
"""


class Driven:
    """A child run as user, driven by ask(line) -> its answer (JSON)."""

    def __init__(self, test, user, script, *args):
        self.proc = user.popen([sys.executable, '-c', script,
                                *map(str, args)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        test.addCleanup(self.close)

    def ask(self, line):
        self.proc.stdin.write(line + '\n')
        self.proc.stdin.flush()
        out = self.proc.stdout.readline()
        if not out:
            raise AssertionError(f'child failed: {self.proc.stderr.read()}')
        return json.loads(out)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()


# Run as a user with the subuid range argv[2]..+65535: makes a user
# namespace whose uids 0..65535 are that range (newuidmap, as podman
# does), then, from inside it, opens a connection to argv[1] as each of
# the uids 1..argv[3] (outside: argv[2]+1...), says hello on each, prints
# how many got the agent's hello and the codes of the refusals, as JSON,
# and holds them until stdin closes.
SUBUIDS = SAY_HELLO + r"""
import ctypes, json, os, socket, struct, subprocess, sys, msgpack
path, start, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
libc = ctypes.CDLL(None, use_errno=True)
ready, go = os.pipe(), os.pipe()
pid = os.fork()
if pid:
    os.read(ready[0], 1)
    subprocess.run(['newuidmap', str(pid), '0', str(start), '65536'],
                   check=True)
    os.write(go[1], b'x')
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
    sys.exit('unshare(CLONE_NEWUSER): ' + os.strerror(ctypes.get_errno()))
os.write(ready[1], b'x')
os.read(go[0], 1)
os.setresuid(0, 0, 0)
hello = msgpack.packb({'type': 'hello', 'version': 2, 'name': 'subuid',
                       'pid': 0, 'id': 1})
socks, ok, refused = [], 0, []
for uid in range(1, n + 1):
    os.seteuid(uid)  # the kernel records the peer's uid at connect
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    os.seteuid(0)
    answer = say_hello(s, hello)
    if answer == 'hello':
        ok += 1
    else:
        refused.append(answer)
    socks.append(s)
print(json.dumps({'ok': ok, 'refused': refused}), flush=True)
sys.stdin.read()
"""


def add_subuids(user):
    """Gives user a range of 65536 subordinate uids in /etc/subuid (gone
    with the user: userdel removes it); returns its first uid."""
    if not shutil.which('newuidmap'):
        raise unittest.SkipTest('no newuidmap (package uidmap; ./dev.sh '
                                'installs it)')
    # Far above the ranges useradd hands out (100000 up), and apart from
    # those of tests running at the same time.
    start = (1 << 30) + secrets.randbelow(1 << 13) * 65536
    subprocess.run(['usermod', '--add-subuids',
                    f'{start}-{start + 65535}', user.name], check=True,
                   capture_output=True, timeout=30)
    return start


def run_as(user, script, *args, timeout=60):
    r = user.run([sys.executable, '-c', script, *map(str, args)],
                 timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f'child failed: {r.stderr}')
    return r.stdout


def peer(user, sock, msgs):
    """Replies to msgs (hello first) from a client run as user."""
    hello = {'type': 'hello', 'version': 2, 'name': 'peer', 'pid': 0,
             'id': 0}
    return json.loads(run_as(user, CHILD, sock, json.dumps([hello] + msgs)))


class Held:
    """A child run as user that keeps its connection(s) until closed."""

    def __init__(self, test, user, script, *args):
        self.proc = user.popen([sys.executable, '-c', script,
                                *map(str, args)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        test.addCleanup(self.close)
        self.first = self.proc.stdout.readline()
        if not self.first:
            raise AssertionError(f'child failed: {self.proc.stderr.read()}')

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()


def vmrss_kib(pid):
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise AssertionError('no VmRSS')


def cpu_ticks(pid):
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return int(fields[11]) + int(fields[12])


def raw_status(sock):
    """(length of the status reply's body, the reply), as root: the
    harness's Client hands out messages, not their sizes."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10 * h.TIMEOUT_SCALE)
    with s:
        s.connect(sock)
        s.sendall(h.encode_frame({'type': 'hello', 'version': 2,
                                  'name': 'raw', 'pid': 0}) +
                  h.encode_frame({'type': 'status', 'id': 7}))
        f = s.makefile('rb')
        while True:
            n = struct.unpack('>I', f.read(4))[0]
            m = msgpack.unpackb(f.read(n), raw=False)
            if m.get('id') == 7:
                return n, m


class Exposure(ClusterTest):

    def setUp(self):
        super().setUp()
        self.write_url(self.password)

    def open_agent(self, *args, targets=()):
        """An agent whose socket any local user can reach: its own
        checks are the only gate."""
        agent = self.start_agent('--socket-mode', '0666', *args,
                                 targets=targets)
        os.chmod(agent.dir, 0o711)
        for t in targets or ['DATABASE_URL']:
            h.wait_for(lambda: h.target_status(agent, t)['valid'],
                       what=f'{t} published')
        return agent

    # -- what status shows

    def test_admin_that_may_not_follow_gets_no_reason_text(self):
        """An admin may ask for a failover of a target it may not follow,
        but the reason of a refusal names the target's servers and quotes
        their errors (user, host, port): it is not for that admin."""
        admin = h.LocalUser()
        self.addCleanup(admin.close)
        follower = h.LocalUser()
        self.addCleanup(follower.close)
        self.write_env(f'DATABASE_URL={self.url()}\n'
                       'DATABASE_URL_SECONDARY='
                       f'{self.url("wrong-" + self.password)}\n')
        agent = self.open_agent('--allow', f'DATABASE_URL=uid:{follower.uid}',
                                '--admin', f'uid:{admin.uid}',
                                '--admin', f'uid:{follower.uid}')
        h.wait_for(lambda: h.target_status(agent, 'DATABASE_URL')['servers']
                   [-1]['state'] == 'failed', what='the secondary failed')
        req = [{'type': 'failover', 'target': 'DATABASE_URL', 'id': 1}]
        full = peer(follower, agent.sock, req)[1]
        self.assertEqual(full['type'], 'error', full)
        self.assertIn(self.role, full['message'])
        brief = peer(admin, agent.sock, req)[1]
        self.assertEqual((brief['type'], brief['code']), ('error', 'refused'))
        for secret in (self.role, str(self.cluster.port), '127.0.0.1'):
            self.assertNotIn(secret, brief['message'])
        self.assertIn('only for clients that may follow it',
                      brief['message'])

    def test_non_follower_sees_no_value_derived_text(self):
        """A peer that may not follow a target sees its name, generation,
        validity and state; no error text (host, port, user), no file
        identity or error, no lagging clients of others.  A follower of
        another uid sees lagging clients of its own uid only."""
        outsider = h.LocalUser()
        self.addCleanup(outsider.close)
        follower = h.LocalUser()
        self.addCleanup(follower.close)
        agent = self.open_agent('--allow',
                                f'DATABASE_URL=uid:{follower.uid}')
        # A root subscriber that never acks: lagging from the next
        # generation on.
        lag = h.Client(agent.sock)
        self.addCleanup(lag.close)
        lag.hello(name='root-app')
        lag.subscribe('DATABASE_URL')
        with h.Client(agent.sock) as c:
            c.hello()
            gen = c.reconnect('DATABASE_URL')['generation']
        # Then a value that fails: an error naming user, host and port.
        self.write_url('wrong-' + self.password)
        h.wait_for(lambda: h.target_status(agent, 'DATABASE_URL')['state']
                   == 'failed', what='the new value failed')
        full = h.target_status(agent, 'DATABASE_URL')
        self.assertIn(self.role, full['error'])
        self.assertEqual([x['name'] for x in full['lagging']], ['root-app'])
        self.assertIsNotNone(h.file_status(agent, self.env_path)['identity'])

        st = peer(outsider, agent.sock, [{'type': 'status', 'id': 1}])[1]
        self.assertEqual(st['type'], 'status')
        (t,) = st['targets']
        # The failed value is retried (100 ms doubling): by now it may be
        # under validation again (ASan in CI was slow enough).
        self.assertIn(t.pop('state'), ('failed', 'validating'))
        self.assertEqual(t, {'name': 'DATABASE_URL', 'generation': gen,
                             'valid': True, 'redacted': True})
        for f in st['files']:
            self.assertEqual(set(f), {'path', 'state', 'redacted'}, f)
        self.assertIsNone(st['agent']['state_error'])
        text = json.dumps(st)
        port = str(self.cluster.port)
        for secret in (self.role, self.password, port, 'root-app'):
            self.assertNotIn(secret, text)

        # The follower sees the target in full, but no other uid's
        # lagging client.
        st = peer(follower, agent.sock, [{'type': 'status', 'id': 1}])[1]
        (t,) = st['targets']
        self.assertFalse(t['redacted'])
        self.assertIn(self.role, t['error'])
        self.assertEqual(t['lagging'], [])
        # Its own lagging client it does see.
        mine = Held(self, follower, CHILD, agent.sock, json.dumps([
            {'type': 'hello', 'version': 2, 'name': 'mine', 'pid': 0},
            {'type': 'subscribe', 'targets': ['DATABASE_URL'], 'id': 1}]),
            'hold')
        self.assertEqual(json.loads(mine.first)[0]['type'], 'ok')
        with h.Client(agent.sock) as c:
            c.hello()
            c.reconnect('DATABASE_URL')
        st = peer(follower, agent.sock, [{'type': 'status', 'id': 1}])[1]
        self.assertEqual([(x['name'], x['uid'])
                          for x in st['targets'][0]['lagging']],
                         [('mine', follower.uid)])
        # dbswapctl status as the outsider says what it cannot see.
        r = outsider.run([os.environ['DBSWAPCTL'], '--socket', agent.sock,
                          'status'])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('shown only to those who may follow', r.stdout)
        self.assertNotIn(self.role, r.stdout)

    # -- clients' text

    def test_set_wait_by_a_peer_who_sees_no_identities_says_so(self):
        """dbswapctl set --wait, run by a user who may not see which
        version of a file the agent read (file identities are redacted
        for it), says so at once instead of waiting for its timeout."""
        user = h.LocalUser()
        self.addCleanup(user.close)
        os.chmod(self.tmp, 0o711)
        own = os.path.join(self.tmp, 'own')
        os.mkdir(own, 0o700)
        os.chown(own, user.uid, user.gid)
        path = os.path.join(own, 'user.env')
        h.write_rename(path, 'OTHER=1\n')
        os.chown(path, user.uid, user.gid)
        agent = self.start_agent('--socket-mode', '0666',
                                 env_files=[self.env_path, path])
        os.chmod(agent.dir, 0o711)
        h.wait_for(lambda: h.file_status(agent, path)['state'] == 'ok',
                   what='the user\'s file read')
        t0 = time.monotonic()
        r = user.run([os.environ['DBSWAPCTL'], '--socket', agent.sock,
                      'set', path, 'OTHER=2', '--wait=20'], timeout=40)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn('only to admins', r.stderr)
        self.assertLess(time.monotonic() - t0, 15, 'it waited for the timeout')
        with open(path) as f:
            self.assertEqual(f.read(), 'OTHER=2\n')

    def test_client_text_is_made_printable(self):
        """A hello name and a nack message with a newline, escape
        sequences, a bidi override and invalid UTF-8: no forged log line,
        status decodes strictly everywhere, and dbswapctl prints no
        control character."""
        app = h.LocalUser()
        self.addCleanup(app.close)
        agent = self.open_agent('--allow', f'DATABASE_URL=uid:{app.uid}')
        name = (b'evil\nFORGED-HELLO dbswapd: info: all acked\x1b]0;pwn\x07'
                b'\xe2\x80\xae\xff\xfe')
        nack = b'bad\r\nFORGED-NACK x\x1b[2J\xc3\x28\xc2\x9b1m'
        held = Held(self, app, CHILD, agent.sock, json.dumps([
            {'type': 'hello', 'version': 2, 'name': list(name), 'pid': 0,
             'id': 0},
            {'type': 'subscribe', 'targets': ['DATABASE_URL'], 'id': 1},
            {'type': 'nack', 'target': 'DATABASE_URL',
             'generation': 'latest', 'instance': 'session',
             'message': list(nack)},
            {'type': 'ping', 'id': 2}]), 'hold')
        self.assertEqual([m['type'] for m in json.loads(held.first)],
                         ['hello', 'ok', 'ok'])
        # The harness decodes strictly (UTF-8, unique keys).
        def lagging():
            return h.target_status(agent, 'DATABASE_URL')['lagging']
        h.wait_for(lambda: any(x['error'] for x in lagging()),
                   what='the nack in status')
        for x in lagging():
            for v in (x['name'], x['error'] or ''):
                self.assertFalse(re.search('[\x00-\x1f\x7f-\x9f\u202e]', v),
                                 repr(v))
        names = [x['name'] for x in lagging()]
        self.assertIn('evil?FORGED-HELLO dbswapd: info: all acked?]0;pwn?'
                      '?\ufffd\ufffd', names)
        for args in (['status'], ['status', '--json']):
            r = subprocess.run([os.environ['DBSWAPCTL'], '--socket',
                                agent.sock, *args], capture_output=True,
                               timeout=10)
            self.assertEqual(r.returncode, 0, r.stderr)
            out = r.stdout.decode('utf-8')  # strict
            self.assertFalse(re.search('[\x00-\x08\x0b-\x1f\x7f-\x9f'
                                       '\u202e]', out), repr(out))
        json.loads(r.stdout)
        self.assertNotRegex(agent.log(), r'(?m)^FORGED')

    def test_dbswapctl_prints_no_control_from_any_agent(self):
        """dbswapctl cleans what it prints itself: a fake agent (an older
        one passed clients' text on as it came) sends escape sequences,
        a newline and invalid UTF-8 in status and in an error."""
        path = os.path.join(self.tmp, 'fake.sock')
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(srv.close)
        srv.bind(path)
        srv.listen(4)
        evil = b'x\x1b]0;pwn\x07\nFORGED\xff\xc2\x9b'

        def serve(reply_to_status):
            conn, _ = srv.accept()
            with conn:
                f = conn.makefile('rb')
                for reply in ({'type': 'hello', 'version': 2,
                               'name': 'fake', 'pid': 1,
                               'instance': '0123456789abcdef'},
                              reply_to_status):
                    n = struct.unpack('>I', f.read(4))[0]
                    req = msgpack.unpackb(f.read(n), raw=False)
                    reply = dict(reply, id=req.get('id'))
                    b = msgpack.packb(reply, use_bin_type=False)
                    conn.sendall(struct.pack('>I', len(b)) + b)

        status = {'type': 'status', 'agent': {'version': evil, 'pid': 1},
                  'targets': [{'name': evil, 'generation': 1, 'valid': True,
                               'state': 'ok', 'conninfo': evil,
                               'error': evil, 'subscribers': 1, 'acked': 0,
                               'lagging': [{'pid': 2, 'name': evil,
                                            'acked': 0, 'error': evil}]}],
                  'files': [{'path': evil, 'state': 'error',
                             'error': evil}], 'keys': []}
        error = {'type': 'error', 'code': 'refused', 'message': evil}
        for args, reply in ((['status'], status),
                            (['status', '--json'], status),
                            (['reload'], error)):
            t = threading.Thread(target=serve, args=(reply,), daemon=True)
            t.start()
            r = subprocess.run([os.environ['DBSWAPCTL'], '--socket', path,
                                *args], capture_output=True, timeout=10)
            t.join(10)
            out = (r.stdout + r.stderr).decode('utf-8')  # strict
            self.assertIn('x', out)
            self.assertFalse(re.search('[\x00-\x08\x0b-\x1f\x7f-\x9f]',
                                       out), repr(out))
            self.assertNotRegex(out, r'(?m)^FORGED')
            if '--json' in args:
                st = json.loads(r.stdout)
                self.assertEqual(st['targets'][0]['name'],
                                 'x\x1b]0;pwn\x07\nFORGED\ufffd\x9b')

    def test_rotate_prints_nothing_of_the_admin_value_the_mask_hides(self):
        """libpq's messages about rotate's admin conninfo are scrubbed by
        the rule mask_conninfo() masks by: a password written where libpq
        reads a port, a hostaddr or an sslmode is quoted by libpq, and
        must not be printed."""
        agent = self.open_agent()
        c = self.cluster
        pw = 'Adm1n' + secrets.token_hex(8)
        admin = os.path.join(self.tmp, 'admin.conninfo')
        for value in (
                # "@host" forgotten: libpq reads the password as a port
                f'postgresql://{c.superuser}:{pw}/postgres',
                f'host={c.sockdir} port={pw} user={c.superuser}',
                f'host=db hostaddr={pw} user={c.superuser}',
                f'host={c.sockdir} port={c.port} sslmode={pw}'):
            fd = os.open(admin, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                         0o600)
            with os.fdopen(fd, 'w') as f:
                f.write(value + '\n')
            r = self.ctl(agent, 'rotate', self.env_path, 'DATABASE_URL',
                         '--admin', admin, check=False, timeout=30)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn('admin connection', r.stderr)
            self.assertNotIn(pw, r.stdout + r.stderr)
        self.assertTrue(h.can_connect(self.url()))  # nothing changed

    # -- the log

    def test_log_lines_a_peer_causes_are_bounded(self):
        """20,000 forbidden requests, on as many connections as the
        error budget takes: a bounded number of log lines, and a line
        saying how many were left out."""
        user = h.LocalUser()
        self.addCleanup(user.close)
        agent = self.open_agent()
        mark = agent.mark()
        t0 = time.monotonic()
        sent = int(run_as(user, FLOOD_FORBIDDEN, agent.sock, 20000, 'reload',
                          timeout=120))
        took = time.monotonic() - t0
        self.assertGreaterEqual(sent, 20000)
        with h.Client(agent.sock) as c:  # the agent is done with them
            c.hello()
            c.status()
        lines = [l for l in agent.log()[mark:].splitlines()
                 if f'uid {user.uid}' in l]
        print(f'{sent} forbidden requests in {took:.1f} s: {len(lines)} log '
              f'lines')
        agent.wait_log(rf'uid {user.uid}: \d+ more line\(s\) about its '
                       r'clients not logged')
        # 20 at once, 5 a second, one summary a second, and the global
        # bucket: far below one per request.
        self.assertLess(len(lines), 60 + 10 * took, lines[-5:])
        # Root's lines are not limited, and the agent still logs.
        with h.Client(agent.sock) as c:
            c.hello()
            c.reload()
        agent.wait_log(r'uid 0 \(pytest\) asked for a reload')

    # -- quotas

    def test_one_uid_cannot_take_every_slot(self):
        """--max-clients 64: one user gets 8 (max-clients / 8); another
        user and root still connect."""
        hog, other = h.LocalUser(), h.LocalUser()
        self.addCleanup(hog.close)
        self.addCleanup(other.close)
        agent = self.open_agent('--max-clients', '64')
        held = Held(self, hog, HOLDER, agent.sock, 80)
        res = json.loads(held.first)
        self.assertEqual(res['ok'], 8, res)
        self.assertEqual(set(res['refused']), {'limit'}, res)
        agent.wait_log(rf'uid {hog.uid} refused: uid {hog.uid} has 8 '
                       r'clients connected, the most one uid may')
        st = peer(other, agent.sock, [{'type': 'status', 'id': 1}])
        self.assertEqual(st[0]['type'], 'hello')
        with h.Client(agent.sock) as c:
            self.assertEqual(c.hello()['type'], 'hello')

    def test_subuids_share_their_owners_quota(self):
        """A user with a subuid range connects from a user namespace as
        12 of its uids: they share the user's one quota (4 clients here),
        the user's own uid too; log lines name the uid and its owner.  A
        range added while the agent runs counts within seconds."""
        user, late = h.LocalUser(), h.LocalUser()
        self.addCleanup(user.close)
        self.addCleanup(late.close)
        start = add_subuids(user)
        agent = self.open_agent('--max-clients-per-uid', '4')
        held = Held(self, user, SUBUIDS, agent.sock, start, 12)
        res = json.loads(held.first)
        self.assertEqual(res['ok'], 4, res)
        self.assertEqual(set(res['refused']), {'limit'}, res)
        agent.wait_log(rf'client pid \d+ uid {start + 5} \(subuid of '
                       rf'{user.name}\) refused: uid {user.uid} has 4 '
                       r'clients connected with its subordinate uids, the '
                       r'most one uid may')
        own = json.loads(Held(self, user, HOLDER, agent.sock, 1).first)
        self.assertEqual(own, {'ok': 0, 'refused': ['limit']})
        # Another user is not charged for them.
        other = json.loads(Held(self, late, HOLDER, agent.sock, 4).first)
        self.assertEqual(other['ok'], 4, other)
        held.close()

        # A range given while the agent runs.
        start2 = add_subuids(late)

        def limited():
            probe = Held(self, late, SUBUIDS, agent.sock, start2, 6)
            try:
                return json.loads(probe.first)['ok'] == 0
            finally:
                probe.close()
        h.wait_for(limited, timeout=10, interval=0.2,
                   what=f'the subuids of {late.name} charged to it')

    def test_reserved_slots_for_root_and_admins(self):
        """The last quarter of a small client limit is kept for root and
        admins: a user who may hold every slot leaves them."""
        hog, admin = h.LocalUser(), h.LocalUser()
        self.addCleanup(hog.close)
        self.addCleanup(admin.close)
        agent = self.open_agent('--max-clients', '40',
                                '--max-clients-per-uid', '40',
                                '--admin', f'uid:{admin.uid}')
        held = Held(self, hog, HOLDER, agent.sock, 40)
        res = json.loads(held.first)
        self.assertEqual(res['ok'], 30, res)
        agent.wait_log(r'the last 10 of 40 slots are kept for root and '
                       r'admins')
        r = peer(admin, agent.sock, [{'type': 'reload', 'id': 1}])
        self.assertEqual([m['type'] for m in r], ['hello', 'ok'])
        with h.Client(agent.sock) as c:
            self.assertEqual(c.hello()['type'], 'hello')

    def test_clients_that_never_read_cost_bounded_memory(self):
        """200 clients of one user ask for status again and again and
        never read: the agent does not hold their replies beyond the
        user's output budget."""
        user = h.LocalUser()
        self.addCleanup(user.close)
        agent = self.open_agent()
        n, st = raw_status(agent.sock)
        before = vmrss_kib(agent.pid)
        # Enough replies to nearly fill each client's 1 MiB queue.
        k = (1 << 20) * 9 // 10 // (n + 4)
        held = Held(self, user, NONREADER, agent.sock, 200, k)
        self.assertEqual(held.first.strip(), 'ready')

        # Done when the agent's CPU time stops moving.
        last = [cpu_ticks(agent.pid), time.monotonic()]

        def settled():
            now = cpu_ticks(agent.pid)
            if now != last[0]:
                last[:] = [now, time.monotonic()]
                return False
            return time.monotonic() - last[1] > 1.0
        h.wait_for(settled, timeout=60, interval=0.1,
                   what='the agent done with the requests')
        after = vmrss_kib(agent.pid)
        print(f'200 non-reading clients, {k} status requests each '
              f'({n} bytes a reply): VmRSS {before} -> {after} KiB')
        # Under a wrapper (valgrind) the RSS is the wrapper's; under ASan
        # freed memory waits in its quarantine (256 MiB).
        if not os.environ.get('DBSWAP_TEST_AGENT_WRAPPER') and \
                'ASAN_OPTIONS' not in os.environ:
            self.assertLess(after - before, 16 * 1024)
        agent.wait_log(rf'uid {user.uid} \(nonreader\) disconnected: not '
                       r'reading its messages \(the output budget of its '
                       r'uid is used\)', since=0)
        with h.Client(agent.sock) as c:
            c.hello()
            self.assertEqual(c.status()['type'], 'status')

    def test_total_output_budget_drops_the_largest_not_the_sender(self):
        """Two users fill the output budget of all clients (2 MiB) with
        clients that never read, each staying within its own (1 MiB);
        a third user's client, which reads, then asks for status: it
        gets its reply and stays, and the client holding the most output
        is dropped instead (the sender was)."""
        per_uid, total = 1 << 20, 2 << 20
        a, b, inn = h.LocalUser(), h.LocalUser(), h.LocalUser()
        for u in (a, b, inn):
            self.addCleanup(u.close)
        agent = self.open_agent('--output-per-uid', '1', '--output-total',
                                '2', '--idle-timeout', '0', '--allow',
                                f'DATABASE_URL=uid:{inn.uid}')
        innocent = Driven(self, inn, TALKER, agent.sock)
        self.assertEqual(innocent.ask(json.dumps(
            {'type': 'hello', 'version': 2, 'name': 'innocent', 'pid': 0,
             'id': 1}))['type'], 'hello')
        self.assertEqual(innocent.ask(json.dumps(
            {'type': 'subscribe', 'targets': ['DATABASE_URL'],
             'id': 2}))['type'], 'ok')
        status_size = innocent.ask(json.dumps({'type': 'status',
                                               'id': 3}))['size']

        # Each user: a big and a small client; their queues add up to
        # just under the user's budget, the four to just under the total
        # (less than the innocent's status reply).  What a client holds
        # queued in the agent is what the agent sent it less what waits
        # in its socket: the replies' sizes are measured, and a refused
        # reload after each batch marks, in the log, that the agent has
        # handled the batch.
        slack = 100
        plan = {a: [('a-big', 600 << 10), ('a-small', None)],
                b: [('b-big', 500 << 10), ('b-small', None)]}
        drivers, queued = {}, {}
        for u, conns in plan.items():
            d = drivers[u] = Driven(self, u, QUEUER, agent.sock)
            hello_size, ping_size, mark_size = d.ask('sizes')
            agent.wait_log(rf'uid {u.uid} \(sizes\) disconnected')
            for i, (name, target) in enumerate(conns):
                if target is None:
                    target = per_uid - slack - conns[0][1]
                d.ask(f'open {name}')
                sent, marks = hello_size, 0
                for _ in range(8):
                    inq, hup = d.ask(f'inq {name}')
                    self.assertFalse(hup, name)
                    q = sent - inq
                    n = (target - q - mark_size) // ping_size
                    if n < 0 or (n == 0 and marks):
                        break
                    d.ask(f'send {name} {n}')
                    sent += n * ping_size + mark_size
                    marks += 1
                    h.wait_for(lambda: len(re.findall(
                        rf'\({name}\) gid \d+ sent reload', agent.log()))
                        == marks, timeout=30,
                        what=f"{name}: batch {marks} handled")
                inq, hup = d.ask(f'inq {name}')
                self.assertFalse(hup, name)
                queued[name] = sent - inq
                self.assertLessEqual(queued[name], target, name)
                self.assertGreater(queued[name],
                                   target - mark_size - ping_size, name)
        room = total - sum(queued.values())
        print(f'queued {queued}, room {room}, status {status_size} bytes')
        self.assertGreaterEqual(room, 0)
        self.assertLess(room, status_size - 64)

        mark = agent.mark()
        r = innocent.ask(json.dumps({'type': 'status', 'id': 4}))
        self.assertEqual(r['type'], 'status', r)
        self.assertEqual(innocent.ask(json.dumps(
            {'type': 'ping', 'id': 5}))['type'], 'ok')
        agent.wait_log(r'\(a-big\) disconnected: not reading its messages '
                       r'\(the output budget of all clients is used\), '
                       r'holding the most: \d+ bytes')
        self.assertTrue(drivers[a].ask('inq a-big')[1])
        for u, name in ((a, 'a-small'), (b, 'b-big'), (b, 'b-small')):
            self.assertFalse(drivers[u].ask(f'inq {name}')[1], name)
        self.assertNotIn('(innocent) disconnected', agent.log()[mark:])

    def test_idle_client_is_dropped(self):
        """A client that subscribes to nothing and says nothing is
        dropped after --idle-timeout; a subscriber and root are not."""
        user = h.LocalUser()
        self.addCleanup(user.close)
        agent = self.open_agent('--idle-timeout', '500',
                                '--allow', f'DATABASE_URL=uid:{user.uid}')
        sub = Held(self, user, CHILD, agent.sock, json.dumps([
            {'type': 'hello', 'version': 2, 'name': 'sub', 'pid': 0},
            {'type': 'subscribe', 'targets': ['DATABASE_URL'], 'id': 1}]),
            'hold')
        self.assertEqual(json.loads(sub.first)[0]['type'], 'ok')
        root = h.Client(agent.sock)
        self.addCleanup(root.close)
        root.hello()
        # A raw idle client of that user: hello, then silence.
        out = run_as(user, r'''
import socket, struct, sys, time, msgpack
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
b = msgpack.packb({'type': 'hello', 'version': 2, 'name': 'idle', 'pid': 0})
s.sendall(struct.pack('>I', len(b)) + b)
t0 = time.monotonic()
s.settimeout(20)
buf = b''
while True:
    d = s.recv(65536)
    if not d:
        break
    buf += d
msgs = []
while buf:
    n = struct.unpack('>I', buf[:4])[0]
    msgs.append(msgpack.unpackb(buf[4:4 + n], raw=False))
    buf = buf[4 + n:]
print(time.monotonic() - t0, msgs[-1]['code'], msgs[-1]['message'])
''', agent.sock)
        took, code, msg = out.split(' ', 2)
        self.assertEqual(code, 'limit')
        self.assertIn('no subscription and no message for 500 ms', msg)
        self.assertGreater(float(took), 0.4)
        self.assertLess(float(took), 5 * h.TIMEOUT_SCALE)
        agent.wait_log(r'\(idle\) disconnected: idle')
        # The subscriber and root stayed.
        self.assertEqual(root.status()['agent']['clients'], 2)
        self.assertEqual(sub.proc.poll(), None)

    def test_limits_in_help(self):
        r = subprocess.run([os.environ['DBSWAPD'], '--help'],
                           capture_output=True, text=True, timeout=10)
        for opt in ('--max-clients-per-uid', '--reserved-clients',
                    '--output-per-uid', '--output-total', '--idle-timeout'):
            self.assertIn(opt, r.stdout)
        self.assertIn('(default 60000)', r.stdout)

    # -- status always fits

    def test_status_at_the_frame_limit_and_past_it(self):
        """Nack messages sized so that the status reply is exactly
        65536 bytes: sent whole; one byte more: sent cut, flagged
        truncated, never refused."""
        targets = ['DATABASE_URL', 'A_URL', 'B_URL', 'C_URL']
        self.write_env(''.join(f'{t}={self.url()}\n' for t in targets))
        agent = self.open_agent(targets=targets)
        clients = []
        for i in range(64):
            c = h.Client(agent.sock)
            self.addCleanup(c.close)
            c.hello(name=f'lag{i:02d}')
            t = targets[i % 4]
            c.subscribe(t)
            u = c.next_update()
            clients.append([c, t, u['generation'], 700])
            c.nack(t, u['generation'], 'x' * 700)
            c.ping()

        def set_len(entry, n):
            c, t, gen, _ = entry
            c.nack(t, gen, 'y' * n)
            c.ping()
            entry[3] = n

        def fill_to(size):
            for _ in range(40):
                n, st = raw_status(agent.sock)
                # A reply over the limit comes cut.  The reply's numbers
                # (uptime, ages) may grow a byte wider between two looks,
                # so an exact fit can overshoot: back off and look again.
                if st['truncated']:
                    n = size + 32
                elif n == size:
                    return st
                delta = size - n
                for e in clients:
                    step = max(256 - e[3], min(1024 - e[3], delta))
                    if step:
                        set_len(e, e[3] + step)
                        delta -= step
                    if not delta:
                        break
            self.fail(f'could not make the reply {size} bytes: {n}')

        st = fill_to(65536)
        self.assertFalse(st['truncated'])
        errs = [x['error'] for t in st['targets'] for x in t['lagging']]
        self.assertEqual(len(errs), 64)
        self.assertEqual(sorted(len(e) for e in errs),
                         sorted(e[3] for e in clients))
        # One byte more.
        e = next(e for e in clients if e[3] < 1024)
        set_len(e, e[3] + 1)
        n, st = raw_status(agent.sock)
        self.assertLessEqual(n, 65536)
        self.assertTrue(st['truncated'])
        errs = [x['error'] for t in st['targets'] for x in t['lagging']]
        self.assertEqual(len(errs), 64)
        self.assertTrue(all(len(e) == 131 and e.endswith('...')
                            for e in errs), errs[:2])

    def test_status_with_too_much_to_show_is_cut_not_refused(self):
        """400 targets with long names, and 64 nacks of 1024 bytes: the
        reply still comes, within the frame, flagged truncated."""
        targets = [f'T{i:03d}_' + 'N' * 200 for i in range(400)]
        agent = self.start_agent(*[a for t in targets
                                   for a in ('--target', t)],
                                 targets=['DATABASE_URL'])
        h.wait_for(lambda: h.target_status(agent, 'DATABASE_URL')['valid'],
                   what='a published value')
        for i in range(64):
            c = h.Client(agent.sock)
            self.addCleanup(c.close)
            c.hello(name=f'lag{i:02d}')
            c.subscribe('DATABASE_URL')
            u = c.next_update()
            c.nack('DATABASE_URL', u['generation'], 'z' * 1024)
            c.ping()
        n, st = raw_status(agent.sock)
        self.assertEqual(st['type'], 'status')
        self.assertLessEqual(n, 65536)
        self.assertTrue(st['truncated'])
        shown = [t['name'] for t in st['targets']]
        self.assertGreater(len(shown), 100)
        self.assertEqual(shown, (['DATABASE_URL'] + targets)[:len(shown)])
        r = self.ctl(agent, 'status')
        self.assertIn('cut to fit', r.stdout)

    def test_value_too_long_to_frame_drops_no_one(self):
        """A value that validates but whose update cannot be framed: its
        subscribers keep their value and their connection (they were
        dropped, reconnected and dropped again every 20 ms), and status
        still answers.  (Where the env layer bounds a value's size, the
        value is refused when read instead: the same holds.)"""
        agent = self.open_agent()
        sub = h.Client(agent.sock)
        self.addCleanup(sub.close)
        sub.hello(name='sub')
        sub.subscribe('DATABASE_URL')
        gen = sub.next_update()['generation']
        url = self.url() + '?passfile=/'
        self.write_env(f'DATABASE_URL={url}{"x" * (65500 - len(url))}\n')

        def settled():
            t = h.target_status(agent, 'DATABASE_URL')
            return t['generation'] > gen or t['state'] == 'failed'
        h.wait_for(settled, timeout=15, what='the long value handled')
        self.assertEqual(sub.ping()['type'], 'ok')
        sub.expect_no_update(within=0.5)
        self.assertNotRegex(agent.log(), r'\(sub\) disconnected')
        n, st = raw_status(agent.sock)
        self.assertLessEqual(n, 65536)
        self.assertEqual(st['targets'][0]['name'], 'DATABASE_URL')
        self.assertEqual(st['agent']['clients'], 2)


if __name__ == '__main__':
    main()
