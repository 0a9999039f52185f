#!/usr/bin/python3
"""
Self-test of the integration harness.  It needs PostgreSQL and nothing
built: the agent and the subscriber are played by fakes written here (a
thread, or this file run as a program), so the harness is known to work
before the real binaries exist.

  /usr/bin/python3 tests/integration/test_harness_self.py [-v]

Run as this file with "fake-dbswapd ARGS" or "fake-subscriber ARGS" it is
one of the fakes.
"""

import os
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness as h  # noqa: E402
import msgpack  # noqa: E402

FAKE_DBSWAPD = [sys.executable, os.path.abspath(__file__), 'fake-dbswapd']
FAKE_SUBSCRIBER = [sys.executable, os.path.abspath(__file__),
                   'fake-subscriber']


# --------------------------------------------------------------------------
# A fake agent.  Its framing is written separately from the harness's on
# purpose: the harness must agree with a second reading of the spec.

def _mask(conninfo):
    return re.sub(r'(://[^:/@]*:)[^@]*@', r'\1****@', conninfo)


class _Conn:
    def __init__(self, sock):
        self.sock = sock
        self.lock = threading.Lock()
        self.targets = set()
        self.acked = {}

    def send(self, obj):
        self.send_body(msgpack.packb(obj, use_bin_type=True))

    def send_body(self, body, length=None):
        n = len(body) if length is None else length
        with self.lock:
            self.sock.sendall(struct.pack('>I', n) + body)


class FakeAgent:
    """Serves hello (protocol versions 1 and 2, with an instance id),
    status, subscribe, ack and reload, plus test hooks:
    test-frame {size} sends a body of exactly size bytes, test-header
    {length} sends a bare header, test-close closes."""

    def __init__(self, path, targets=None, env_files=(), log=None):
        self.path = path
        self.targets = dict(targets or {})
        self.env_files = list(env_files)
        self.log = log or (lambda msg: None)
        self.generation = {t: 1 for t in self.targets}
        self.instance = os.urandom(8).hex()
        self.update_before_reply = False
        self.started = time.monotonic()
        self.conns = []
        self.lock = threading.Lock()
        self.stopping = False
        if self.env_files:
            self.read_env_files()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(16)
        self.listener.settimeout(0.05)
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()
        self.log(f'listening on {path}')

    def close(self):
        self.stopping = True
        for t in list(self.threads):
            t.join(5)
        self.listener.close()
        for c in self.conns:
            c.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def read_env_files(self):
        """NAME=VALUE lines; returns the targets whose value changed."""
        changed = []
        for path in self.env_files:
            with open(path) as f:
                for line in f:
                    name, eq, value = line.strip().partition('=')
                    if not eq or (self.wanted and name not in self.wanted):
                        continue
                    if self.targets.get(name) != value:
                        if name in self.targets:
                            self.generation[name] += 1
                            changed.append(name)
                        else:
                            self.generation[name] = 1
                        self.targets[name] = value
        return changed

    wanted = ()

    def reload(self):
        changed = self.read_env_files()
        for name in changed:
            self.log(f'target {name}: generation {self.generation[name]}')
            for c in list(self.conns):
                if name in c.targets:
                    try:
                        c.send(self.update(name, 'file changed'))
                    except OSError:
                        pass
        return changed

    def update(self, name, reason):
        return {'type': 'update', 'target': name,
                'generation': self.generation[name],
                'conninfo': self.targets[name], 'reason': reason,
                'instance': self.instance}

    def status(self, rid):
        targets = []
        for name, value in sorted(self.targets.items()):
            subs = [c for c in self.conns if name in c.targets]
            g = self.generation[name]
            targets.append({
                'name': name, 'generation': g, 'valid': True,
                'conninfo': _mask(value), 'state': 'ok', 'error': None,
                'changed': None, 'subscribers': len(subs),
                'acked': sum(c.acked.get(name) == g for c in subs),
                'lagging': []})
        files = [{'path': p, 'state': 'ok', 'error': None, 'entries': 1}
                 for p in self.env_files]
        return {'type': 'status', 'id': rid,
                'agent': {'version': '0.1.0', 'pid': os.getpid(),
                          'uptime_ms': int((time.monotonic() - self.started)
                                           * 1000),
                          'clients': len(self.conns)},
                'targets': targets, 'files': files}

    def _accept(self):
        while not self.stopping:
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            c = _Conn(sock)
            with self.lock:
                self.conns.append(c)
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            self.threads.append(t)
            t.start()

    def _recv(self, c, n):
        buf = b''
        while len(buf) < n:
            try:
                chunk = c.sock.recv(n - len(buf))
            except socket.timeout:
                if self.stopping:
                    return None
                continue
            if not chunk:
                return None
            buf += chunk
        return buf

    def _serve(self, c):
        c.sock.settimeout(0.05)
        self.log('client connected')
        try:
            while True:
                head = self._recv(c, 4)
                if head is None:
                    break
                (n,) = struct.unpack('>I', head)
                if n > 65536:
                    break
                body = self._recv(c, n)
                if body is None or not self._handle(c, msgpack.unpackb(body)):
                    break
        except OSError:
            pass
        finally:
            with self.lock:
                self.conns.remove(c)
            c.sock.close()
            self.log('client gone')

    def _handle(self, c, m):
        t, rid = m.get('type'), m.get('id')
        if t == 'hello':
            if m.get('version') not in (1, 2):
                c.send({'type': 'error', 'code': 'version',
                        'message': 'unsupported protocol version'})
                return False
            c.send({'type': 'hello', 'version': m['version'],
                    'name': 'dbswapd 0.1.0', 'pid': os.getpid(),
                    'instance': self.instance})
        elif t == 'status':
            if self.update_before_reply and self.targets:
                c.send(self.update(sorted(self.targets)[0], 'test'))
            c.send(self.status(rid))
        elif t == 'subscribe':
            unknown = [n for n in m['targets'] if n not in self.targets]
            if unknown:
                c.send({'type': 'error', 'id': rid, 'code': 'unknown-target',
                        'message': f'no target {unknown[0]}'})
                return True
            for name in m['targets']:
                c.targets.add(name)
                c.send(self.update(name, 'subscribed'))
            c.send({'type': 'ok', 'id': rid})
        elif t == 'ack':
            if m.get('instance', self.instance) == self.instance:
                c.acked[m['target']] = m['generation']
        elif t == 'reload':
            self.reload()
            c.send({'type': 'ok', 'id': rid})
        elif t == 'test-frame':
            size = m['size']
            pad = size - 17
            while len(msgpack.packb({'type': 'big', 'pad': 'x' * pad})) \
                    != size:
                pad += size - len(msgpack.packb({'type': 'big',
                                                 'pad': 'x' * pad}))
            c.send({'type': 'big', 'pad': 'x' * pad})
        elif t == 'test-header':
            c.send_body(b'', length=m['length'])
        elif t == 'test-close':
            return False
        else:
            c.send({'type': 'error', 'id': rid, 'code': 'unknown-type',
                    'message': f'unknown type {t}'})
        return True


def fake_dbswapd_main(argv):
    """dbswapd --socket SOCK --env FILE... [--target NAME...]; SIGHUP
    reloads, SIGTERM exits 0."""
    sock, envs, wanted = None, [], []
    it = iter(argv)
    for a in it:
        if a == '--socket':
            sock = next(it)
        elif a == '--env':
            envs.append(next(it))
        elif a == '--target':
            wanted.append(next(it))
        else:
            print(f'fake-dbswapd: unknown argument {a}', file=sys.stderr)
            return 2

    def log(msg):
        print(f'fake-dbswapd: {msg}', file=sys.stderr, flush=True)

    stop = threading.Event()
    hup = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGHUP, lambda *a: hup.set())
    FakeAgent.wanted = tuple(wanted)
    if os.path.exists(sock):
        os.unlink(sock)
    agent = FakeAgent(sock, env_files=envs, log=log)
    while not stop.wait(0.05):
        if hup.is_set():
            hup.clear()
            agent.reload()
            log('reloaded')
    log('terminating')
    agent.close()
    return 0


def fake_subscriber_main(argv):
    """subscriber --socket SOCK TARGET, printing what the real one prints;
    the connect check is psql's."""
    sock, target = argv[1], argv[2]
    c = h.Client(sock)
    if c.hello(name='fake-subscriber')['type'] != 'hello':
        return 1
    reply = c.subscribe([target])
    if reply['type'] != 'ok':
        print(f'subscribe failed: {reply}', file=sys.stderr)
        return 1
    while True:
        try:
            u = c.next_update(timeout=1)
        except TimeoutError:
            continue
        except h.ConnectionClosed:
            print('closed', flush=True)
            return 1
        g = u['generation']
        print(f'update {u["target"]} {g} {u["conninfo"]}', flush=True)
        if h.can_connect(u['conninfo']):
            print(f'connect {g} ok', flush=True)
        else:
            err = (h.last_connect_error() or '').splitlines()[:1]
            print(f'connect {g} fail {"".join(err)}', flush=True)
        c.ack(target, g)


# --------------------------------------------------------------------------

def cluster_processes(pg_dir, postmaster_pid):
    """Pids of the postmaster (found by its data dir) and its children."""
    found = []
    for p in os.listdir('/proc'):
        if not p.isdigit():
            continue
        try:
            with open(f'/proc/{p}/cmdline', 'rb') as f:
                cmd = f.read()
            with open(f'/proc/{p}/status') as f:
                ppid = int(re.search(r'^PPid:\s+(\d+)', f.read(), re.M)[1])
        except (OSError, TypeError):
            continue
        if pg_dir.encode() in cmd or (postmaster_pid and
                                      ppid == postmaster_pid):
            found.append(int(p))
    return found


def port_open(port):
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(('127.0.0.1', port)) == 0


def cluster_gone(pg_dir, port, pid):
    return (not os.path.exists(pg_dir) and not port_open(port) and
            not cluster_processes(pg_dir, pid))


class TestPgCluster(unittest.TestCase):

    def test_roles_passwords_and_cleanup(self):
        t0 = time.monotonic()
        with h.PgCluster() as pg:
            started = time.monotonic() - t0
            pg_dir, port, pid = pg.dir, pg.port, pg.postmaster_pid
            self.assertTrue(os.path.isdir(pg.datadir))
            self.assertTrue(cluster_processes(pg_dir, pid))
            self.assertTrue(port_open(port))
            self.assertEqual(pg.sql('select 1 + 1'), '2')

            pw = "p@ss:w/rd%'\\ x"
            pg.create_role('app', pw)
            self.assertTrue(pg.can_connect(pg.url('app', pw)),
                            h.last_connect_error())
            self.assertTrue(pg.can_connect(pg.keyvalue('app', pw)),
                            h.last_connect_error())
            self.assertFalse(pg.can_connect(pg.url('app', 'wrong')))
            self.assertIn('password authentication failed',
                          h.last_connect_error())

            pg.set_password('app', 'second')
            self.assertFalse(pg.can_connect(pg.url('app', pw)))
            self.assertTrue(pg.can_connect(pg.url('app', 'second')))
            self.assertEqual(pg.sessions('app'), 0)

            with self.assertRaises(h.PgError) as cm:
                pg.sql('select * from no_such_table')
            self.assertIn('no_such_table', str(cm.exception))

            pg.stop()
            self.assertFalse(port_open(port))
            self.assertFalse(pg.can_connect(pg.url('app', 'second')))
            pg.start()
            self.assertEqual(pg.port, port)
            self.assertTrue(pg.can_connect(pg.url('app', 'second')))
            pid = pg.postmaster_pid
        self.assertTrue(cluster_gone(pg_dir, port, pid))
        self.assertLess(started, 5, 'cluster startup is slow')

    def test_cleanup_when_the_test_raises(self):
        with self.assertRaises(ZeroDivisionError):
            with h.PgCluster(template=False) as pg:  # initdb, no copy
                self.assertNotEqual(pg.superuser_password,
                                    h._pg_template()[1])
                self.assertEqual(pg.sql('select current_user'), 'postgres')
                pg_dir, port, pid = pg.dir, pg.port, pg.postmaster_pid
                1 / 0
        self.assertTrue(cluster_gone(pg_dir, port, pid))

    def test_cleanup_when_the_process_is_killed(self):
        # SIGTERM: the handler cleans up.  SIGKILL: the watchdog does.
        child = ('import sys, time\n'
                 f'sys.path.insert(0, {HERE!r})\n'
                 'import harness\n'
                 'pg = harness.PgCluster()\n'
                 'print(pg.dir, pg.port, pg.postmaster_pid,\n'
                 '      harness._template[0], flush=True)\n'
                 'time.sleep(60)\n')
        procs = {sig: subprocess.Popen([sys.executable, '-c', child],
                                       stdout=subprocess.PIPE, text=True)
                 for sig in (signal.SIGTERM, signal.SIGKILL)}
        try:
            for sig, p in procs.items():
                line = p.stdout.readline().split()
                self.assertEqual(len(line), 4, 'child failed to start')
                pg_dir, port, pid, tpl = line[0], int(line[1]), int(line[2]), \
                    line[3]
                self.assertTrue(cluster_processes(pg_dir, pid))
                p.send_signal(sig)
                self.assertEqual(p.wait(10), -sig)
                h.wait_for(lambda: cluster_gone(pg_dir, port, pid) and
                           not os.path.exists(tpl), 15,
                           what=f'cleanup after {signal.Signals(sig).name}')
        finally:
            for p in procs.values():
                p.kill()
                p.wait()
                p.stdout.close()


class TestReplica(unittest.TestCase):
    """PgCluster.replica(), promote() and the identity helpers (issue 16:
    the agent tells a replicated pair from an independent one by them)."""

    def test_clusters_made_apart_are_independent(self):
        # Template copies included: each gets its own system identifier.
        with h.PgCluster() as a, h.PgCluster() as b, \
                h.PgCluster(template=False) as c:
            ids = {a.system_identifier(), b.system_identifier(),
                   c.system_identifier()}
            self.assertEqual(len(ids), 3, ids)
            for pg in (a, b, c):
                self.assertFalse(pg.in_recovery())
                self.assertEqual(pg.timeline(), 1)
                self.assertEqual(pg.checkpoint_timeline(), 1)
                pg.stop('immediate')  # a crash, and back: WAL is sane
                pg.start()
                self.assertEqual(pg.sql('select 1'), '1')

    def test_replica_promote_and_the_old_primary_back(self):
        with h.PgCluster() as primary, primary.replica() as standby:
            self.assertEqual(standby.system_identifier(),
                             primary.system_identifier())
            self.assertTrue(standby.in_recovery())
            self.assertEqual(standby.timeline(), 1)
            primary.durable_sql('CREATE TABLE t (x int); '
                                'INSERT INTO t VALUES (42)')
            h.wait_for(lambda: standby.sql('SELECT x FROM t') == '42',
                       what='the row streamed to the replica')
            with self.assertRaises(h.PgError):
                standby.sql('INSERT INTO t VALUES (1)')  # read-only

            primary.stop('immediate')
            standby.promote()
            self.assertFalse(standby.in_recovery())
            standby.sql('INSERT INTO t VALUES (2)')
            # The live timeline moves at once; the checkpoint's only with
            # the end-of-recovery checkpoint (spread: may take minutes).
            self.assertEqual(standby.timeline(), 2)
            self.assertIn(standby.checkpoint_timeline(), (1, 2))

            # The old primary, restarted, is writable on its old
            # timeline: the split brain the agent must not fail back to.
            primary.start()
            self.assertFalse(primary.in_recovery())
            self.assertEqual(primary.timeline(), 1)
            primary.sql('INSERT INTO t VALUES (3)')
            self.assertEqual(primary.system_identifier(),
                             standby.system_identifier())


class TestConninfo(unittest.TestCase):

    def test_parse(self):
        self.assertEqual(
            h.parse_conninfo('postgresql://a%40b:p%3As%2F@127.0.0.1:5433/d%20b'
                             '?sslmode=disable'),
            {'user': 'a@b', 'password': 'p:s/', 'host': '127.0.0.1',
             'port': '5433', 'dbname': 'd b', 'sslmode': 'disable'})
        self.assertEqual(
            h.parse_conninfo("host=h port = 5 password='a \\'b\\\\' user=u"),
            {'host': 'h', 'port': '5', 'password': "a 'b\\", 'user': 'u'})
        self.assertEqual(h.parse_conninfo('postgres://[::1]:7/x'),
                         {'host': '::1', 'port': '7', 'dbname': 'x'})


class TestClient(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='dbswap-selftest-')
        self.addCleanup(shutil.rmtree, self.dir)
        self.sock = os.path.join(self.dir, 'agent.sock')
        self.agent = FakeAgent(self.sock, {'DB': 'postgresql://u:s3cret@h/d',
                                           'OTHER': 'host=x password=p'})
        self.addCleanup(self.agent.close)
        self.c = h.Client(self.sock, timeout=2)
        self.addCleanup(self.c.close)

    def test_hello_and_status(self):
        r = self.c.hello()
        self.assertEqual(r, {'type': 'hello', 'version': 2,
                             'name': 'dbswapd 0.1.0', 'pid': os.getpid(),
                             'instance': self.agent.instance})
        self.assertEqual((self.c.version, self.c.instance),
                         (2, self.agent.instance))
        st = self.c.status()
        self.assertEqual(st['type'], 'status')
        self.assertEqual(st['id'], 1)
        self.assertEqual(self.c.status()['id'], 2)
        t = h.target_status(self.c, 'DB')
        self.assertEqual(t['conninfo'], 'postgresql://u:****@h/d')
        self.assertEqual((t['generation'], t['state']), (1, 'ok'))
        with self.assertRaises(KeyError):
            h.target_status(st, 'NOPE')

    def test_version_mismatch(self):
        r = self.c.hello(version=3)
        self.assertEqual((r['type'], r['code']), ('error', 'version'))
        self.assertEqual(self.c.wait_closed(2), [])
        with self.assertRaises(h.ConnectionClosed):
            self.c.status()

    def test_updates_queued_during_a_request(self):
        self.c.hello()
        self.agent.update_before_reply = True
        st = self.c.status()
        self.assertEqual(st['type'], 'status')
        self.assertEqual([m['type'] for m in self.c.pending()], ['update'])
        u = self.c.next_update()
        self.assertEqual((u['target'], u['generation']), ('DB', 1))
        self.c.expect_no_update(0.1)

    def test_subscribe_ack(self):
        self.c.hello()
        r = self.c.subscribe(['DB', 'OTHER'])
        self.assertEqual(r, {'type': 'ok', 'id': 1})
        got = [self.c.next_update(), self.c.next_update()]
        self.assertEqual([(u['target'], u['generation'], u['conninfo'])
                          for u in got],
                         [('DB', 1, 'postgresql://u:s3cret@h/d'),
                          ('OTHER', 1, 'host=x password=p')])
        self.c.ack('DB', 1)
        h.wait_for(lambda: h.target_status(self.c, 'DB')['acked'] == 1,
                   what='the ack to count')
        self.assertEqual(h.target_status(self.c, 'OTHER')['acked'], 0)
        r = self.c.subscribe('NOPE')
        self.assertEqual((r['type'], r['code']), ('error', 'unknown-target'))

    def test_timeouts(self):
        self.c.hello()
        t0 = time.monotonic()
        with self.assertRaises(TimeoutError):
            self.c.next_update(timeout=0.2)
        self.assertLess(time.monotonic() - t0, 1.5)
        # A frame cut short times out too, and the part read is kept.
        body = msgpack.packb({'type': 'split'})
        self.agent.conns[0].send_body(body[:3], length=len(body))
        with self.assertRaises(TimeoutError):
            self.c.recv(timeout=0.1)
        self.agent.conns[0].sock.sendall(body[3:])
        self.assertEqual(self.c.recv(), {'type': 'split'})

    def test_strict_decoding(self):
        self.c.hello()
        conn = self.agent.conns[0]
        # {"type": "ok", "type": "ok"}: a duplicate key is a violation.
        conn.send_body(b'\x82' + b'\xa4type\xa2ok' * 2)
        with self.assertRaisesRegex(h.ProtocolError, 'duplicate'):
            self.c.recv()

    def test_frame_at_the_limit(self):
        self.c.hello()
        self.c.send({'type': 'test-frame', 'size': h.FRAME_MAX})
        m = self.c.recv()
        self.assertEqual(m['type'], 'big')
        self.assertEqual(len(msgpack.packb(m)), h.FRAME_MAX)

    def test_frame_over_the_limit_is_refused_on_its_header(self):
        self.c.hello()
        self.c.send({'type': 'test-header', 'length': h.FRAME_MAX + 1})
        t0 = time.monotonic()
        with self.assertRaises(h.ProtocolError) as cm:
            self.c.recv(timeout=3)
        self.assertLess(time.monotonic() - t0, 1, 'it waited for the body')
        self.assertIn('65537', str(cm.exception))
        with self.assertRaises(h.ProtocolError):
            self.c.recv()

    def test_send_over_the_limit_is_refused(self):
        with self.assertRaises(h.ProtocolError):
            self.c.send({'type': 'status', 'pad': 'x' * h.FRAME_MAX})
        big = h.frame_bytes(b'\x80' * (h.FRAME_MAX + 1))
        self.assertEqual(struct.unpack('>I', big[:4])[0], h.FRAME_MAX + 1)

    def test_peer_close(self):
        self.c.hello()
        self.c.send({'type': 'test-close'})
        self.assertEqual(self.c.wait_closed(2), [])
        with self.assertRaises(h.ConnectionClosed):
            self.c.status()

    def test_unknown_type_gets_an_error_reply(self):
        self.c.hello()
        r = self.c.request({'type': 'frobnicate'})
        self.assertEqual((r['type'], r['code'], r['id']),
                         ('error', 'unknown-type', 1))

    def test_wait_for(self):
        n = []
        self.assertEqual(h.wait_for(lambda: n.append(1) or len(n) >= 3), True)
        with self.assertRaisesRegex(AssertionError, 'the impossible'):
            h.wait_for(lambda: 1 / 0, timeout=0.1, what='the impossible')


class TestWriters(unittest.TestCase):

    WRITERS = [h.write_inplace, h.write_truncate, h.write_rename,
               h.write_delete_recreate, h.write_slow]

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='dbswap-selftest-')
        self.addCleanup(shutil.rmtree, self.dir)

    def read(self, path):
        with open(path) as f:
            return f.read()

    def test_final_content(self):
        for w in self.WRITERS:
            for old, new in [('A=1\n', 'A=a much longer value\n'),
                             ('A=a much longer old value\n', 'B=2\n'),
                             ('A=1\n', '')]:
                with self.subTest(writer=w.__name__, old=old, new=new):
                    path = os.path.join(self.dir, w.__name__)
                    w(path, old)
                    self.assertEqual(self.read(path), old)
                    self.assertEqual(stat.S_IMODE(os.stat(path).st_mode),
                                     0o600)
                    ino = os.stat(path).st_ino
                    w(path, new)
                    self.assertEqual(self.read(path), new)
                    # write_delete_recreate may get the freed inode number
                    # back, so only these two are known.
                    if w is h.write_rename:
                        self.assertNotEqual(os.stat(path).st_ino, ino)
                    elif w is not h.write_delete_recreate:
                        self.assertEqual(os.stat(path).st_ino, ino)
                    os.unlink(path)
        self.assertEqual(os.listdir(self.dir), [])  # no temp files left

    def test_slow_writer_shows_half_a_file(self):
        path = os.path.join(self.dir, 'env')
        h.write_truncate(path, 'old\n')
        t = threading.Thread(target=h.write_slow,
                             args=(path, 'A=0123456789\n'),
                             kwargs={'delay': 0.5})
        t.start()
        try:
            h.wait_for(lambda: self.read(path) == 'A=0123', 0.4,
                       interval=0.001, what='the half-written file')
        finally:
            t.join()
        self.assertEqual(self.read(path), 'A=0123456789\n')

    def test_k8s_layout(self):
        d = os.path.join(self.dir, 'secret')
        ts1 = h.k8s_setup(d, {'db.env': 'A=1\n', 'old.env': 'O=1\n'})
        self.assertRegex(os.path.basename(ts1),
                         r'^\.\.20\d\d_\d\d_\d\d_\d\d_\d\d_\d\d\.\d+$')
        self.assertEqual(os.readlink(os.path.join(d, '..data')),
                         os.path.basename(ts1))
        self.assertEqual(os.readlink(os.path.join(d, 'db.env')),
                         '..data/db.env')
        self.assertEqual(self.read(os.path.join(d, 'db.env')), 'A=1\n')
        self.assertEqual(os.path.realpath(os.path.join(d, 'db.env')),
                         os.path.join(os.path.realpath(ts1), 'db.env'))

        ts2 = h.k8s_update(d, {'db.env': 'A=2\n', 'new.env': 'N=1\n'})
        self.assertNotEqual(ts1, ts2)
        self.assertEqual(self.read(os.path.join(d, 'db.env')), 'A=2\n')
        self.assertEqual(self.read(os.path.join(d, 'new.env')), 'N=1\n')
        self.assertEqual(sorted(os.listdir(d)),
                         sorted(['..data', os.path.basename(ts2), 'db.env',
                                 'new.env']))
        with self.assertRaises(h.HarnessError):
            h.k8s_setup(d, {})


class TestProcessWrappers(unittest.TestCase):
    """Agent and Subscriber around fakes, against a real cluster."""

    def test_end_to_end(self):
        with h.PgCluster() as pg, \
                tempfile.TemporaryDirectory(prefix='dbswap-selftest-') as d:
            pg.create_role('app', 'one')
            env = os.path.join(d, 'app.env')
            url1, url2 = pg.url('app', 'one'), pg.url('app', 'two')
            h.write_rename(env, f'DB={url1}\nIGNORED=x\n')
            with h.Agent(env, targets=['DB'], binary=FAKE_DBSWAPD) as agent:
                agent.wait_log(r'listening on')
                self.assertEqual(os.stat(agent.sock).st_mode & 0o170000,
                                 stat.S_IFSOCK)
                self.assertEqual([t['name'] for t in
                                  h._status(agent, None)['targets']], ['DB'])
                self.assertEqual(h.file_status(agent, env)['state'], 'ok')
                with h.Subscriber(agent.sock, 'DB',
                                  binary=FAKE_SUBSCRIBER) as sub:
                    sub.wait_line(r'^connect 1 ok$')
                    h.wait_for(lambda: h.target_status(agent, 'DB')['acked']
                               == 1, what='the ack of generation 1')

                    pg.set_password('app', 'two')
                    h.write_inplace(env, f'DB={url2}\n')
                    with agent.client() as c:
                        self.assertEqual(c.reload()['type'], 'ok')
                    m = sub.wait_line(r'^update DB 2 (.*)$')
                    self.assertEqual(m.group(1), url2)
                    sub.wait_line(r'^connect 2 ok$')
                    self.assertEqual(sub.updates(), [(1, url1), (2, url2)])
                    self.assertEqual(sub.connects(), [(1, True, ''),
                                                      (2, True, '')])

                    # A stale conninfo fails to connect, and says why.
                    pg.set_password('app', 'three')
                    h.write_truncate(env, f'DB={url1}\n')
                    agent.send_signal(signal.SIGHUP)
                    agent.wait_log(r'reloaded')
                    m = sub.wait_line(r'^connect 3 fail (.*)$')
                    self.assertIn('password authentication failed',
                                  m.group(1))

                    agent.restart()
                    agent.wait_log(r'terminating')
                    agent.wait_log(r'listening on')  # the second start
                    sub.wait_line(r'^closed$')
                    self.assertEqual(sub.stop(), 1)
                self.assertEqual(h.target_status(agent, 'DB')['generation'],
                                 1)
                self.assertEqual(agent.stop(), 0)
                self.assertEqual(len(re.findall('listening on',
                                                 agent.log())), 2)
                with self.assertRaises(h.ProcessError):
                    agent.wait_log(r'never logged')
            self.assertFalse(os.path.exists(agent.dir))
            self.assertFalse(os.path.exists(sub.dir))

    def test_agent_that_exits_early(self):
        code = 'import sys; print("bad --env: no such file", ' \
               'file=sys.stderr); sys.exit(3)'
        with self.assertRaises(h.ProcessError) as cm:
            h.Agent('/nonexistent', binary=[sys.executable, '-c', code])
        self.assertIn('status 3', str(cm.exception))
        self.assertIn('no such file', str(cm.exception))

    def test_agent_that_never_listens(self):
        code = 'import time; time.sleep(60)'
        t0 = time.monotonic()
        with self.assertRaisesRegex(h.ProcessError, 'did not listen'):
            h.Agent((), binary=[sys.executable, '-c', code], timeout=0.3)
        self.assertLess(time.monotonic() - t0, 3)

    def test_nothing_left_registered(self):
        # Runs after the cluster and client tests (unittest sorts by
        # name): each closed what it opened.
        self.assertEqual(h._live, {})


if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] == 'fake-dbswapd':
        sys.exit(fake_dbswapd_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == 'fake-subscriber':
        sys.exit(fake_subscriber_main(sys.argv[2:]))
    unittest.main()
